"""Input expansion, image decoding (EXIF, modes, bad files) and video reading."""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metahmr_cli.errors import InputError
from metahmr_cli.io.sources import (
    InputItem,
    expand_inputs,
    iter_video_frames,
    read_exif_focal,
    read_image,
    video_info,
)

# ----------------------------------------------------------------------------------------------- expansion


def _touch_image(path: Path, size: tuple[int, int] = (40, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 130, 140)).save(path)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    a = tmp_path / "a"
    for rel in ["img1.jpg", "img10.jpg", "img2.png", "sub/img1.jpg", "sub/deep/x.bmp"]:
        _touch_image(a / rel)
    _touch_image(tmp_path / "b" / "img1.jpg")
    _touch_image(a / ".hidden.jpg")
    (a / "notes.txt").write_text("not an image")
    (a / "clip.mp4").write_bytes(b"\x00" * 16)  # only the extension matters for expansion
    return tmp_path


def _names(items: list[InputItem]) -> list[str]:
    return [it.path.name for it in items]


def test_folder_sorted_naturally_skips_hidden_and_unknown(tree: Path) -> None:
    items = expand_inputs([tree / "a"])
    assert _names(items) == ["clip.mp4", "img1.jpg", "img2.png", "img10.jpg"]
    assert [it.kind for it in items] == ["video", "image", "image", "image"]
    assert [it.stem for it in items] == ["clip", "img1", "img2", "img10"]
    assert all(it.path.is_absolute() for it in items)


def test_folder_recursive_stems_keep_relative_path(tree: Path) -> None:
    items = expand_inputs([tree / "a"], recursive=True)
    stems = {it.path.relative_to(tree / "a").as_posix(): it.stem for it in items}
    assert stems == {
        "clip.mp4": "clip", "img1.jpg": "img1", "img2.png": "img2", "img10.jpg": "img10",
        "sub/img1.jpg": "sub__img1", "sub/deep/x.bmp": "sub__deep__x",
    }


def test_exclude_videos(tree: Path) -> None:
    assert "clip.mp4" not in _names(expand_inputs([tree / "a"], include_videos=False))


def test_mixed_inputs_deduplicated_and_unique_stems(tree: Path) -> None:
    a, b = tree / "a", tree / "b"
    items = expand_inputs([a, b / "img1.jpg", str(a / "*.png"), a / "img1.jpg", str(a / "img1.jpg")])
    paths = [it.path for it in items]
    assert len(paths) == len(set(paths)) == 5  # clip, img1, img2, img10 of a + img1 of b
    stems = [it.stem for it in items]
    assert len(set(stems)) == len(stems)
    by_path = {it.path: it.stem for it in items}
    # the two img1.jpg get their parent folder in the stem
    assert by_path[(a / "img1.jpg").resolve()] == "a__img1"
    assert by_path[(b / "img1.jpg").resolve()] == "b__img1"


def test_same_stem_other_extension(tmp_path: Path) -> None:
    _touch_image(tmp_path / "x.jpg")
    _touch_image(tmp_path / "x.png")
    items = expand_inputs([tmp_path])
    assert sorted(it.stem for it in items) == ["x_jpg", "x_png"]


def test_recursive_glob(tree: Path) -> None:
    items = expand_inputs([str(tree / "a" / "**" / "*.jpg")])
    rel = sorted(it.path.relative_to(tree / "a").as_posix() for it in items)
    assert rel == ["img1.jpg", "img10.jpg", "sub/img1.jpg"]
    assert {it.stem for it in items} == {"img1", "img10", "sub__img1"}


def test_stems_are_stable_and_safe(tmp_path: Path) -> None:
    _touch_image(tmp_path / "my photo (1).jpg")
    first = expand_inputs([tmp_path])
    again = expand_inputs([tmp_path])
    assert [i.stem for i in first] == [i.stem for i in again]
    assert all(c.isalnum() or c in "._+-" for c in first[0].stem)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        expand_inputs([tmp_path / "missing.jpg"])
    with pytest.raises(InputError, match="matches no image"):
        expand_inputs([str(tmp_path / "*.jpg")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="No images or videos"):
        expand_inputs([tmp_path / "empty"])


def test_explicit_file_with_unknown_extension_is_kept(tmp_path: Path) -> None:
    p = tmp_path / "photo.weird"
    p.write_text("x")
    (item,) = expand_inputs([p])
    assert item.kind == "image" and item.stem == "photo"


# ----------------------------------------------------------------------------------------------- images


def test_rgb_roundtrip_png(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    out = read_image(tmp_path / "x.png")
    assert out.dtype == np.uint8 and out.shape == (40, 50, 3)
    np.testing.assert_array_equal(out, arr)


def test_exif_orientation_applied(tmp_path: Path) -> None:
    # stored 64 wide x 48 high, red block in the stored top-left corner
    stored = np.full((48, 64, 3), 128, np.uint8)
    stored[:16, :16] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rot.jpg"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=95)
    out = read_image(path)
    assert out.shape == (64, 48, 3)  # displayed portrait
    # rotating 90 degrees clockwise moves the stored top-left corner to the top-right
    top_right = out[2:12, -12:-2].reshape(-1, 3).mean(axis=0)
    top_left = out[2:12, 2:12].reshape(-1, 3).mean(axis=0)
    assert top_right[0] > 200 and top_right[1] < 60 and top_right[2] < 60
    assert abs(top_left[0] - 128) < 20
    # JPEG blurs colour edges; on average the image matches the clockwise rotation of the stored one
    assert np.abs(out.astype(float) - np.rot90(stored, k=-1).astype(float)).mean() < 4.0


def test_exif_focal_from_35mm_equivalent(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 28
    path = tmp_path / "f.jpg"
    Image.new("RGB", (64, 48)).save(path, exif=exif.tobytes())
    expected = 28 * math.hypot(64, 48) / math.hypot(36, 24)  # = 28 * 80 / 43.267
    assert read_exif_focal(path, 64, 48) == pytest.approx(expected, rel=1e-9)
    assert read_exif_focal(path, 48, 64) == pytest.approx(expected, rel=1e-9)
    Image.new("RGB", (64, 48)).save(tmp_path / "plain.jpg")
    assert read_exif_focal(tmp_path / "plain.jpg", 64, 48) is None


def test_grayscale_8_and_16_bit(tmp_path: Path) -> None:
    g8 = np.tile(np.arange(0, 200, 5, dtype=np.uint8), (40, 1))
    Image.fromarray(g8).save(tmp_path / "g8.png")
    out = read_image(tmp_path / "g8.png")
    np.testing.assert_array_equal(out, np.repeat(g8[:, :, None], 3, axis=2))

    g16 = np.zeros((40, 40), np.uint16)
    g16[:, :20] = 65535
    g16[:, 20:] = 32896  # 32896 * 255 / 65535 = 128 exactly
    Image.fromarray(g16).save(tmp_path / "g16.png")
    out = read_image(tmp_path / "g16.png")
    assert out.shape == (40, 40, 3) and out.dtype == np.uint8
    assert (out[:, :20] == 255).all() and (out[:, 20:] == 128).all()


def test_rgb_16_bit(tmp_path: Path) -> None:
    import cv2

    bgr16 = np.zeros((40, 40, 3), np.uint16)
    bgr16[..., 2] = 65535  # red
    bgr16[..., 0] = 32896  # blue, half
    cv2.imwrite(str(tmp_path / "rgb16.png"), bgr16)
    out = read_image(tmp_path / "rgb16.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[5, 5], [255, 0, 128])


def test_rgba_composited_on_black(tmp_path: Path) -> None:
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[:, :10] = (255, 0, 0, 0)  # fully transparent red -> background
    rgba[:, 10:20] = (0, 255, 0, 255)  # opaque green
    rgba[:, 20:] = (200, 100, 50, 128)  # half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png").astype(int)
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(out[0, 15], [0, 255, 0])
    np.testing.assert_allclose(out[0, 30], [200 * 128 / 255, 100 * 128 / 255, 50 * 128 / 255], atol=1.5)
    white = read_image(tmp_path / "a.png", background=(255, 255, 255))
    np.testing.assert_array_equal(white[0, 0], [255, 255, 255])


def test_palette_image(tmp_path: Path) -> None:
    im = Image.new("P", (40, 40), 0)
    im.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    im.paste(1, (0, 0, 20, 40))
    im.save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(out[0, 0], [10, 200, 30])
    np.testing.assert_array_equal(out[0, 30], [0, 0, 0])
    im.save(tmp_path / "p.gif", transparency=0)
    out = read_image(tmp_path / "p.gif", background=(9, 9, 9))
    np.testing.assert_array_equal(out[0, 30], [9, 9, 9])


def test_cmyk_jpeg(tmp_path: Path) -> None:
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[:, :20] = (255, 0, 0)
    rgb[:, 20:] = (0, 0, 255)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    out = read_image(tmp_path / "c.jpg").astype(int)
    assert out.shape == (40, 40, 3)
    np.testing.assert_allclose(out[20, 5], [255, 0, 0], atol=30)
    np.testing.assert_allclose(out[20, 35], [0, 0, 255], atol=30)


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "z.jpg").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_image(tmp_path / "z.jpg")


def test_truncated_jpeg(tmp_path: Path) -> None:
    arr = np.random.default_rng(1).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.jpg.*(truncated|damaged)"):
        read_image(tmp_path / "cut.jpg")


def test_text_file_named_png(tmp_path: Path) -> None:
    (tmp_path / "fake.png").write_text("this is not a picture\n")
    with pytest.raises(InputError, match="not a readable image"):
        read_image(tmp_path / "fake.png")


def test_tiny_images(tmp_path: Path) -> None:
    Image.new("RGB", (1, 1)).save(tmp_path / "one.png")
    with pytest.raises(InputError, match="1x1"):
        read_image(tmp_path / "one.png")
    Image.new("RGB", (100, 20)).save(tmp_path / "thin.png")
    with pytest.raises(InputError, match="at least 32"):
        read_image(tmp_path / "thin.png")
    assert read_image(tmp_path / "thin.png", min_side=10).shape == (20, 100, 3)


def _png_with_header_size(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose IHDR claims width x height (the pixel data is never reached)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def test_huge_images_rejected_before_decoding(tmp_path: Path) -> None:
    _png_with_header_size(tmp_path / "bomb.png", 30000, 30000)  # 900 MP
    with pytest.raises(InputError, match="(MP|too large)"):
        read_image(tmp_path / "bomb.png")
    _png_with_header_size(tmp_path / "big.png", 12000, 10000)  # 120 MP > default 100 MP
    with pytest.raises(InputError, match="120.0 MP"):
        read_image(tmp_path / "big.png")
    Image.new("RGB", (100, 100)).save(tmp_path / "small.png")
    with pytest.raises(InputError, match="limit"):
        read_image(tmp_path / "small.png", max_pixels=5000)


def test_missing_image(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_image(tmp_path / "nope.jpg")


# ----------------------------------------------------------------------------------------------- videos


def _write_video(path: Path, n: int, fps: float, size: tuple[int, int] = (64, 48)) -> None:
    import imageio_ffmpeg

    w, h = size
    writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=fps, macro_block_size=16, quality=9)
    writer.send(None)
    for i in range(n):
        writer.send(np.full((h, w, 3), 20 + 30 * i, np.uint8))
    writer.close()


def test_video_frames_and_info(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    _write_video(path, 7, 12.0)
    fps, n, size = video_info(path)
    assert fps == pytest.approx(12.0)
    assert n == 7
    assert size == (64, 48)
    frames = list(iter_video_frames(path))
    assert [i for i, _ in frames] == list(range(7))
    for i, frame in frames:
        assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
        assert abs(float(frame.mean()) - (20 + 30 * i)) < 4  # the grey level written
    assert [i for i, _ in iter_video_frames(path, stride=3)] == [0, 3, 6]
    assert [i for i, _ in iter_video_frames(path, max_frames=2)] == [0, 1]
    (item,) = expand_inputs([path])
    assert item.kind == "video"


def test_video_without_frames(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    _write_video(path, 0, 10.0)
    with pytest.raises(InputError, match="no frames"):
        video_info(path)
    with pytest.raises(InputError, match="no frames"):
        list(iter_video_frames(path))
    (tmp_path / "junk.mp4").write_bytes(b"definitely not a video" * 10)
    with pytest.raises(InputError, match="junk.mp4"):
        list(iter_video_frames(tmp_path / "junk.mp4"))
    (tmp_path / "zero.mp4").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        video_info(tmp_path / "zero.mp4")
