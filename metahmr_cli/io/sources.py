"""Input sources of ``metahmr process``: expand paths into items, read images and video frames.

Expansion (:func:`expand_inputs`) accepts, mixed in one call, image files, video files, folders (optionally
recursive) and glob patterns. The result is sorted (natural order, so ``img2`` comes before ``img10``) and
de-duplicated by resolved path. Every item gets an output ``stem`` that is a valid file name, stable across
runs with the same arguments, and unique within the call even when two folders hold files of the same name:
the stem is the path relative to the folder (or glob base) it was found in, without extension and with
separators replaced by ``"__"``; clashing stems get the file extension appended when that tells them apart
(``x_jpg``, ``x_png``), else parent folder names prepended (``a__img1``, ``b__img1``).

Image decoding (:func:`read_image`) always returns ``(H, W, 3) uint8 RGB``:

- EXIF orientation is applied (the array is what a photo viewer shows);
- grayscale, palette and CMYK images are converted to RGB;
- images with an alpha channel (RGBA, LA, palette with transparency) are composited over a solid
  background, black by default (``background=``), so transparent pixels never show stale colour values;
- 16-bit (and 32-bit integer / float) images are scaled to 8 bits (``value * 255 / 65535`` for 16 bits);
- zero-byte, truncated and non-image files, images smaller than ``min_side`` pixels on a side and images
  with more than ``max_pixels`` pixels raise :class:`~metahmr_cli.errors.InputError`. The pixel count is
  checked from the file header before any pixel is decoded (decompression-bomb safe).

Videos are decoded with the ffmpeg binary bundled with ``imageio-ffmpeg`` (:func:`iter_video_frames`,
:func:`video_info`).

:func:`input_identity` says what an input file is (size, modification time, a content hash), so that a re-run can
tell a replaced file from the one it already processed (:func:`input_changed`).
"""

from __future__ import annotations

import glob as _glob
import hashlib
import logging
import math
import os
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from metahmr_cli.errors import InputError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm"}
)
"""File extensions (lower case) treated as images when scanning folders and globs."""
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
)
"""File extensions (lower case) treated as videos."""
MIN_IMAGE_SIDE: int = 32
"""Default smallest accepted image side in pixels."""
DEFAULT_MAX_PIXELS: int = 100_000_000
"""Default largest accepted image (100 megapixels)."""
STEM_SEPARATOR = "__"

_GLOB_CHARS = re.compile(r"[*?\[]")
_UNSAFE_STEM_CHARS = re.compile(r"[^A-Za-z0-9._+-]+")


@dataclass(frozen=True)
class InputItem:
    """One input of a run.

    Attributes:
        path: the file (absolute, resolved).
        kind: ``"image"`` or ``"video"``.
        stem: output stem, unique within one :func:`expand_inputs` call (``sub__IMG_0001``).
        source: the command-line argument the item was found through.
        problem: why a folder entry cannot be read (with ``report_problems``), else None.
    """

    path: Path
    kind: Literal["image", "video"]
    stem: str
    source: str
    problem: str | None = None
    """Set for an entry a folder scan could not use (dangling symlink, symlink loop, unreadable folder): the
    runner records it as failed with this reason instead of skipping it silently."""


IDENTITY_SAMPLE_BYTES = 1 << 20
"""Videos larger than twice this are identified by the hash of their first and last MiB (and size and mtime);
images and smaller files by the hash of all their bytes."""


def input_identity(path: str | os.PathLike[str], kind: str = "image") -> dict[str, object]:
    """What an input file is: ``{"size", "mtime_ns", "sha256", "hashed"}``, where ``sha256`` covers every byte
    (images, small files: ``hashed`` = "all") or the first and last MiB (videos: "first and last MiB").

    Raises:
        OSError: the file cannot be read.
    """
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        partial = kind == "video" and st.st_size > 2 * IDENTITY_SAMPLE_BYTES
        if partial:
            digest.update(fh.read(IDENTITY_SAMPLE_BYTES))
            fh.seek(st.st_size - IDENTITY_SAMPLE_BYTES)
            digest.update(fh.read(IDENTITY_SAMPLE_BYTES))
        else:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns), "sha256": digest.hexdigest(),
            "hashed": "first and last MiB" if partial else "all"}


def input_changed(before: object, now: object) -> str | None:
    """Why the input identified ``now`` is not the one identified ``before`` (None: the same file content).

    A whole-file hash decides alone (a file copied back with a new time is the same input); a partial hash also
    needs the same size and modification time. A missing earlier identity (a run that did not record it) counts
    as a change."""
    if not isinstance(before, dict) or not isinstance(now, dict):
        return "the earlier run did not record which file it read"
    if before.get("size") != now.get("size"):
        return f"its size changed ({before.get('size')} -> {now.get('size')} bytes)"
    if before.get("sha256") != now.get("sha256") or before.get("hashed") != now.get("hashed"):
        return "its content changed"
    if now.get("hashed") != "all" and before.get("mtime_ns") != now.get("mtime_ns"):
        return "it was modified since"
    return None


def _natural_key(text: str) -> list[object]:
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", text)]


def _kind_of(path: Path) -> Literal["image", "video"] | None:
    ext = path.suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    return None


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _sanitize(stem: str) -> str:
    cleaned = _UNSAFE_STEM_CHARS.sub("_", stem).strip("._")
    return cleaned or "input"


def _glob_base(pattern: str) -> Path:
    parts = Path(pattern).parts
    base: list[str] = []
    for part in parts:
        if _GLOB_CHARS.search(part):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


def _scan(folder: Path, recursive: bool, problems: list[tuple[Path, Path, str]]) -> Iterator[tuple[Path, Path]]:
    """(path, path relative to ``folder``) of the visible files under ``folder``; entries that cannot be read are
    appended to ``problems`` as (path, relative path, reason)."""

    def unreadable(err: OSError) -> None:
        p = Path(err.filename) if err.filename else folder
        with_rel = p.relative_to(folder) if p != folder and p.is_relative_to(folder) else Path(p.name)
        if not _hidden(with_rel):
            problems.append((p, with_rel, f"folder cannot be read ({err.strerror or err})"))

    visited = {os.path.realpath(folder)}
    for root, dirs, files in os.walk(folder, onerror=unreadable, followlinks=True):
        root_path = Path(root)
        keep = []
        for d in sorted(dirs) if recursive else []:
            if d.startswith("."):
                continue
            real = os.path.realpath(root_path / d)
            if real in visited:  # a linked folder already scanned, or a loop back to a parent
                if (root_path / d).is_symlink() and os.path.commonpath([real, os.path.realpath(root_path)]) == real:
                    rel = (root_path / d).relative_to(folder)
                    problems.append((root_path / d, rel, "symlink loop: the link points back to a parent folder"))
                continue
            visited.add(real)
            keep.append(d)
        dirs[:] = keep
        for name in sorted(files):
            path = root_path / name
            rel = path.relative_to(folder)
            if _hidden(rel):
                continue
            if path.is_symlink():
                try:
                    os.stat(path)
                except OSError as exc:
                    why = "symlink loop" if exc.errno == 40 else "dangling symlink: its target does not exist"
                    problems.append((path, rel, why))
                    continue
            if path.is_file():
                yield path, rel


def expand_inputs(
    inputs: Sequence[str | os.PathLike[str]],
    *,
    recursive: bool = False,
    include_videos: bool = True,
    report_problems: bool = False,
) -> list[InputItem]:
    """Expand files, folders and glob patterns into a sorted, de-duplicated list of input items.

    Args:
        inputs: paths of images, videos or folders, or glob patterns (``"shots/**/*.jpg"``; ``**`` always
            recurses). Files named explicitly are kept whatever their extension (an unknown extension is
            treated as an image, so a bad file becomes a per-input failure instead of vanishing).
        recursive: also scan sub-folders of folder arguments. Hidden files and folders (``.name``) are skipped.
        include_videos: keep video files found in folders and globs.
        report_problems: also return folder entries that cannot be read (dangling symlinks, symlink loops,
            unreadable sub-folders) as items with ``problem`` set; otherwise they are logged as warnings.

    Returns:
        Items sorted in natural order of their paths.

    Raises:
        InputError: an argument does not exist, a glob matches nothing, or nothing at all was found.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found: dict[Path, tuple[Path, Literal["image", "video"], Path, str]] = {}

    def add(path: Path, kind: Literal["image", "video"], rel: Path, source: str) -> None:
        resolved = path.resolve()
        if resolved not in found:
            found[resolved] = (resolved, kind, rel, source)

    def wanted_kind(path: Path) -> Literal["image", "video"] | None:
        kind = _kind_of(path)
        return None if kind == "video" and not include_videos else kind

    problems: dict[Path, tuple[Path, Path, str, str]] = {}

    def scan_folder(folder: Path, source: str) -> int:
        n = 0
        bad: list[tuple[Path, Path, str]] = []
        for path, rel in _scan(folder, recursive, bad):
            kind = wanted_kind(path)
            if kind is None:
                continue
            add(path, kind, rel, source)
            n += 1
        for path, rel, why in bad:
            if wanted_kind(path) is None and why in ("symlink loop", "dangling symlink: its target does not exist"):
                continue  # a broken link named like something that is not an image or video: not an input
            logger.warning("%s: %s", path, why)
            problems.setdefault(path, (path, rel, source, why))
        return n + len(bad)

    for raw in inputs:
        source = os.fspath(raw)
        path = Path(source).expanduser()
        if path.is_file():
            add(path, _kind_of(path) or "image", Path(path.name), source)
        elif path.is_dir():
            if scan_folder(path, source) == 0:
                hint = "" if recursive else " (use --recursive to include sub-folders)"
                logger.warning("no images or videos found in folder %s%s", path, hint)
        elif _GLOB_CHARS.search(source):
            base = _glob_base(os.path.expanduser(source))
            matches = sorted(_glob.glob(os.path.expanduser(source), recursive=True))
            n = 0
            for match in matches:
                mpath = Path(match)
                if not mpath.is_file():
                    continue
                kind = wanted_kind(mpath)
                if kind is None:
                    continue
                try:
                    rel = mpath.relative_to(base)
                except ValueError:
                    rel = Path(mpath.name)
                add(mpath, kind, rel, source)
                n += 1
            if n == 0:
                raise InputError(
                    f"The pattern {source!r} matches no image or video file. Check the pattern (quote it so "
                    "the shell does not expand it) or pass the folder instead."
                )
        else:
            raise InputError(f"Input {source!r} does not exist. Pass an existing image, video, folder or glob.")

    if not found and not (report_problems and problems):
        raise InputError(
            "No images or videos found in " + ", ".join(repr(os.fspath(x)) for x in inputs)
            + f". Supported images: {', '.join(sorted(IMAGE_EXTENSIONS))}; "
            f"videos: {', '.join(sorted(VIDEO_EXTENSIONS))}. Use --recursive for nested folders."
        )
    entries = [(*e, None) for e in found.values()]
    if report_problems:
        entries += [(p, "image", rel, source, why) for p, rel, source, why in problems.values()]
    entries.sort(key=lambda e: _natural_key(e[0].as_posix()))
    stems = _unique_stems([(e[0], e[2]) for e in entries])
    return [InputItem(path=e[0], kind=e[1], stem=s, source=e[3], problem=e[4])
            for e, s in zip(entries, stems, strict=True)]


def _unique_stems(entries: list[tuple[Path, Path]]) -> list[str]:
    """Stems from relative paths; clashes get the extension, then more parent folders, then an index."""
    stems = [_sanitize(STEM_SEPARATOR.join(rel.with_suffix("").parts)) for _, rel in entries]

    def groups(values: list[str]) -> list[list[int]]:
        seen: dict[str, list[int]] = {}
        for i, s in enumerate(values):
            seen.setdefault(s.lower(), []).append(i)  # case-insensitive file systems
        return [idx for idx in seen.values() if len(idx) > 1]

    def clashes(values: list[str]) -> set[int]:
        return {i for idx in groups(values) for i in idx}

    for group in groups(stems):
        exts = [entries[i][1].suffix.lstrip(".").lower() for i in group]
        if len(set(exts)) > 1:  # the extension tells them apart
            for i, ext in zip(group, exts, strict=True):
                stems[i] = f"{stems[i]}_{ext}" if ext else stems[i]
    depth = 1
    bad = clashes(stems)
    while bad and depth < 64:
        progressed = False
        for i in bad:
            path, rel = entries[i]
            parents = path.parent.parts[1:]  # without the root
            extra = len(rel.parts) - 1 + depth
            if extra <= len(parents):
                prefix = parents[len(parents) - extra]
                stems[i] = _sanitize(prefix + STEM_SEPARATOR + stems[i])
                progressed = True
        if not progressed:
            break
        depth += 1
        bad = clashes(stems)
    for n, i in enumerate(sorted(clashes(stems))):
        stems[i] = f"{stems[i]}_{n}"
    return stems


# ----------------------------------------------------------------------------------------------------- images

_PIL_LIMIT_LOCK = threading.Lock()


def image_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """8-bit pixels from a decoded image array of PIL ``mode`` ("I;16": 16 bits, scaled by 255 / 65535)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.nan_to_num(arr.astype(np.float64))
        peak = 1.0 if arr.max(initial=0.0) <= 1.0 else 255.0 if arr.max() <= 255.0 else float(arr.max())
        return np.clip(np.rint(arr * (255.0 / peak)), 0, 255).astype(np.uint8)
    arr = arr.astype(np.int64)
    if mode.startswith("I;16") or arr.max(initial=0) <= 65535:
        peak = 65535 if arr.max(initial=0) > 255 or mode.startswith("I;16") else 255
    else:
        peak = int(arr.max())
    return np.clip(np.rint(np.clip(arr, 0, None) * (255.0 / peak)), 0, 255).astype(np.uint8)


def check_image(image: Any, what: str = "image") -> np.ndarray:
    """An (H, W, 3) uint8 RGB array from an array-like image (numpy, torch, PIL); a clear InputError otherwise.

    The one check of images handed over as pixels (the estimator, the keypoint models, the people finder).

    Accepts (H, W) grayscale, (H, W, 4) RGBA (alpha dropped), uint16 images (scaled by 255 / 65535), other
    integer images with values in 0..255, and float images in [0, 1] (or 0..255)."""
    if isinstance(image, str | Path):
        raise InputError(f"{what} is a path ({image}); the estimator takes pixels: read it with "
                         "metahmr_cli.io.sources.read_image(path), or run files with `metahmr process` / Pipeline.")
    if hasattr(image, "detach"):  # a torch tensor
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] < 2 or arr.shape[1] < 2:
        raise InputError(f"{what} must be an (H, W, 3) RGB array, got shape {arr.shape} "
                         "(channels last; use image.transpose(1, 2, 0) for a (3, H, W) tensor).")
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating):
            if not np.isfinite(arr).all():
                raise InputError(f"{what} holds NaN or infinite values.")
            scale = 255.0 if arr.max() <= 1.0 else 1.0
            arr = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
        elif arr.dtype == np.uint16:
            arr = image_to_uint8(arr, "I;16")  # a 16-bit image: its full range, not values clipped at 255
        elif np.issubdtype(arr.dtype, np.integer):
            lo, hi = int(arr.min()), int(arr.max())
            if lo < 0 or hi > 255:
                raise InputError(f"{what} has dtype {arr.dtype} with values {lo}..{hi}, outside 0..255; give uint8 "
                                 "RGB, a uint16 image, or floats in [0, 1].")
            arr = arr.astype(np.uint8)
        else:
            raise InputError(f"{what} has dtype {arr.dtype}; give uint8 RGB (or floats in [0, 1]).")
    return np.ascontiguousarray(arr)


def read_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = MIN_IMAGE_SIDE,
    background: tuple[int, int, int] = (0, 0, 0),
) -> np.ndarray:
    """Read an image as it is displayed: EXIF orientation applied, RGB, 8 bits.

    Args:
        path: image file.
        max_pixels: largest accepted width*height (checked on the header, before decoding).
        min_side: smallest accepted width and height.
        background: RGB colour transparent pixels are composited onto.

    Returns:
        (H, W, 3) uint8 RGB array.

    Raises:
        InputError: the file is missing, empty, truncated, not an image, too small or too large.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"Image {path} does not exist or is not a file.")
    if path.stat().st_size == 0:
        raise InputError(f"Image {path} is an empty (zero-byte) file. Re-copy or re-export it.")
    try:
        with _PIL_LIMIT_LOCK:
            old_limit = Image.MAX_IMAGE_PIXELS
            # Image.open only parses the header; the size check below (before any decoding) replaces PIL's
            # decompression-bomb guard so that the limit is ours and the message names the file.
            Image.MAX_IMAGE_PIXELS = None
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    im = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = old_limit
    except Image.DecompressionBombError as exc:
        raise InputError(
            f"Image {path} is too large to decode safely ({exc}). Downscale it or raise --max-pixels."
        ) from exc
    except (UnidentifiedImageError, ImportError) as exc:
        # ImportError: once ultralytics is imported it wraps Image.open and, for an unidentified file, tries
        # to load a HEIF plugin that is usually not installed; the file is still not a readable image.
        raise InputError(
            f"{path} is not a readable image (unknown or damaged format). Convert it to JPEG or PNG."
        ) from exc
    except OSError as exc:
        raise InputError(f"Cannot open image {path}: {exc}") from exc

    with im:
        width, height = im.size
        if width * height > max_pixels:
            raise InputError(
                f"Image {path} has {width}x{height} = {width * height / 1e6:.1f} MP, more than the limit of "
                f"{max_pixels / 1e6:.1f} MP. Downscale it, or raise the limit (--max-pixels, or max_pixels in "
                "--config) if it is genuine."
            )
        if min(width, height) < min_side:
            raise InputError(
                f"Image {path} is only {width}x{height} pixels; at least {min_side} pixels per side are "
                "needed to find a person."
            )
        try:
            im.load()
            im = ImageOps.exif_transpose(im) or im
            rgb = _pil_to_rgb(im, background)
        except (OSError, SyntaxError, ValueError) as exc:
            reason = "truncated or damaged" if "truncated" in str(exc).lower() else "damaged"
            raise InputError(f"Image {path} is {reason} and cannot be decoded ({exc}). Re-copy or re-export it.") \
                from exc
    return rgb


def _pil_to_rgb(im, background: tuple[int, int, int]) -> np.ndarray:
    """PIL image of any mode -> (H, W, 3) uint8 RGB, compositing transparency over ``background``."""
    from PIL import Image

    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (*background, 255))
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"), dtype=np.uint8).copy()
    if mode in ("RGB",):
        return np.asarray(im, dtype=np.uint8).copy()
    if mode in ("L", "1"):
        gray = np.asarray(im.convert("L"), dtype=np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(im)
        gray = image_to_uint8(arr, mode)
        if gray.ndim == 2:
            gray = np.repeat(gray[:, :, None], 3, axis=2)
        return np.ascontiguousarray(gray[:, :, :3])
    # CMYK, YCbCr, LAB, HSV, ...: PIL knows the conversion
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


_DIAG_35MM = math.hypot(36.0, 24.0)


def read_exif_focal(path: str | os.PathLike[str], width: int, height: int) -> float | None:
    """Focal length in pixels from EXIF ``FocalLengthIn35mmFilm``, or None when absent or unreadable.

    The 35 mm equivalent focal is defined on the diagonal of a 36x24 mm frame, so
    ``f_px = f35 * hypot(W, H) / hypot(36, 24)``; this is independent of the image orientation.

    Args:
        path: image file.
        width: width of the (oriented) image in pixels.
        height: height of the (oriented) image in pixels.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            exif = im.getexif()
            value = exif.get_ifd(0x8769).get(0xA405)
            if value is None:
                value = exif.get(0xA405)
    except Exception:  # noqa: BLE001 - EXIF is optional metadata; any failure means "unknown"
        return None
    try:
        f35 = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(f35) or f35 <= 0:
        return None
    return f35 * math.hypot(width, height) / _DIAG_35MM


# ----------------------------------------------------------------------------------------------------- videos

@dataclass(frozen=True)
class VideoInfo:
    """fps (0.0 when unknown), number of frames (None when unknown) and frame size (width, height)."""

    fps: float
    n_frames: int | None
    size: tuple[int, int]

    def __iter__(self):  # allows ``fps, n, size = video_info(p)``
        return iter((self.fps, self.n_frames, self.size))


def _open_video(path: Path):
    import imageio_ffmpeg

    if not path.is_file():
        raise InputError(f"Video {path} does not exist or is not a file.")
    if path.stat().st_size == 0:
        raise InputError(f"Video {path} is an empty (zero-byte) file.")
    error: BaseException | None = None
    for attempt in range(3):
        gen = imageio_ffmpeg.read_frames(str(path))
        try:
            meta = next(gen)
        except (OSError, RuntimeError, StopIteration) as exc:
            gen.close()
            error = exc
            # imageio-ffmpeg gives ffmpeg 10 s to print the stream header; on a machine busy with other work that is
            # not always enough for a readable file: ask again before calling the file unreadable
            if "Could not load meta information" in str(exc) and attempt < 2:
                logger.info("ffmpeg was slow to open %s; trying again", path)
                continue
            break
        error = None
        break
    if error is not None:
        text = str(error)
        if "does not contain any stream" in text or "Stream #" not in text:
            raise InputError(
                f"Video {path} contains no frames (no decodable video stream). Re-export or re-copy it."
            ) from error
        last = [ln.strip() for ln in text.splitlines() if ln.strip()][-1:]
        raise InputError(f"Cannot read video {path}: ffmpeg could not decode it ({' '.join(last)}).") from error
    size = meta.get("size")
    if not size or min(size) <= 0:
        gen.close()
        raise InputError(f"Video {path} has no video stream.")
    return gen, meta


def video_info(path: str | os.PathLike[str], *, count_frames: bool = True) -> VideoInfo:
    """Frame rate, frame count and frame size of a video.

    Args:
        path: video file.
        count_frames: count frames exactly (ffmpeg scans the stream); otherwise ``n_frames`` is estimated
            from duration*fps, or None.

    Returns:
        :class:`VideoInfo` (unpacks as ``fps, n_frames, (width, height)``).

    Raises:
        InputError: unreadable file or no video stream.
    """
    import imageio_ffmpeg

    path = Path(path)
    gen, meta = _open_video(path)
    gen.close()
    fps = float(meta.get("fps") or 0.0)
    size = (int(meta["size"][0]), int(meta["size"][1]))
    n_frames: int | None = None
    if count_frames:
        try:
            n_frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
        except RuntimeError as exc:
            logger.warning("could not count frames of %s: %s", path, str(exc)[-200:])
    elif fps > 0 and meta.get("duration"):
        n_frames = int(round(float(meta["duration"]) * fps))
    return VideoInfo(fps=fps, n_frames=n_frames, size=size)


def iter_video_frames(
    path: str | os.PathLike[str], *, stride: int = 1, max_frames: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Decode a video frame by frame.

    Args:
        path: video file.
        stride: keep every ``stride``-th frame (indices stay those of the full video).
        max_frames: stop after yielding this many frames.

    Yields:
        ``(index, frame)`` with frame (H, W, 3) uint8 RGB.

    Raises:
        InputError: unreadable file, no video stream, or a video without any frame.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    path = Path(path)
    gen, meta = _open_video(path)
    width, height = int(meta["size"][0]), int(meta["size"][1])
    yielded = 0
    index = -1
    try:
        for index, raw in enumerate(gen):
            if max_frames is not None and yielded >= max_frames:
                break
            if index % stride:
                continue
            frame = np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3).copy()
            yielded += 1
            yield index, frame
    except RuntimeError as exc:
        raise InputError(f"Video {path} is damaged after frame {index}: {exc}") from exc
    finally:
        gen.close()
    if index < 0:
        raise InputError(f"Video {path} contains no frames.")
