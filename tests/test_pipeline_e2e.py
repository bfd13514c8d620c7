"""The process pipeline with injected stages: videos, bad inputs, error isolation, renderer fallback."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from PIL import Image
from test_pipeline_support import (  # noqa: F401  (fixtures)
    EXAMPLES,
    FixedDetector,
    TemplateKeypoints,
    assert_outputs_clean,
    manifest_status,
    png_with_header_size,
    tiny_checkpoint_fixture,
    write_synthetic_video,
)

from metahmr_cli.files import temp_path_for
from metahmr_cli.io.writers import MANIFEST_NAME, load_result_npz, read_manifest
from metahmr_cli.pipeline import Pipeline
from metahmr_cli.process_config import ProcessConfig
from metahmr_cli.render import RendererUnavailable
from metahmr_cli.render.video import count_video_frames
from metahmr_cli.tto import TTOConfig


def _config(inputs, out, standin_dir, checkpoint, **kw) -> ProcessConfig:
    return ProcessConfig(inputs=[str(i) for i in inputs], out=out, body=str(standin_dir), checkpoint=checkpoint,
                         device="cpu", keypoints="mediapipe", tto=TTOConfig(max_steps=2), **kw)


def _pipeline(cfg: ProcessConfig, **stages) -> Pipeline:
    stages.setdefault("detector", FixedDetector())
    stages.setdefault("keypoints", TemplateKeypoints())
    return Pipeline(cfg, progress=False, **stages)


def test_video_gives_frames_and_mp4(tmp_path, standin_dir, tiny_checkpoint):
    video = write_synthetic_video(tmp_path / "clip.mp4", n_frames=6)
    out = tmp_path / "out"
    cfg = _config([video], out, standin_dir, tiny_checkpoint, side_view=True, batch_size=4)
    report = _pipeline(cfg).run()
    assert report.exit_code == 0
    rec = read_manifest(out / MANIFEST_NAME)["clip"]
    assert (rec.status, rec.kind, rec.frames, rec.people) == ("ok", "video", 6, 6)
    assert count_video_frames(out / "clip.mp4") == 6
    assert count_video_frames(out / "clip_side.mp4") == 6
    for i in range(6):
        d = load_result_npz(out / "clip" / f"frame_{i:06d}.npz")
        assert int(d["frame_index"]) == i and d["image_size"].tolist() == [96, 128]
        assert d["transl"].shape == (1, 3) and (d["keypoints2d"][0, 25:, 2] == 1).all()
    assert_outputs_clean(out)
    # one person throughout: one track, in every frame file, in the sequence file and its AMASS export
    assert all(load_result_npz(out / "clip" / f"frame_{i:06d}.npz")["track_id"].tolist() == [1] for i in range(6))
    with np.load(out / "clip_tracks.npz") as z:
        assert z["track_ids"].tolist() == [1] and z["track_1/frames"].tolist() == list(range(6))
    with np.load(out / "clip_tracks" / "track_001.npz") as z:
        assert z["poses"].shape == (6, 156) and float(z["mocap_framerate"]) > 0  # AMASS (SMPL+H) layout
    assert {"clip_tracks.npz", "clip_tracks/track_001.npz"} <= set(rec.outputs)
    # the overlay video shows the mesh: frames differ from the input frames
    from metahmr_cli.io.sources import iter_video_frames

    src = [f for _, f in iter_video_frames(video)]
    ovl = [f for _, f in iter_video_frames(out / "clip.mp4")]
    assert np.abs(ovl[0].astype(int) - src[0].astype(int)).max() > 60


def _bad_folder(d):
    d.mkdir()
    good = Image.open(EXAMPLES / "messi5.jpg").convert("RGB").resize((137, 86))
    (d / "zero_bytes.jpg").write_bytes(b"")
    full = (EXAMPLES / "messi5.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(full[: len(full) // 3])
    (d / "text.png").write_text("this is not an image\n")
    Image.new("RGB", (1, 1)).save(d / "tiny_1x1.png")
    arr16 = (np.asarray(good.convert("L"), np.uint16) * 257).astype(np.uint16)
    Image.fromarray(arr16).save(d / "gray16.png")
    assert Image.open(d / "gray16.png").mode.startswith("I")
    rgba = good.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(d / "rgba.png")
    good.convert("CMYK").save(d / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    good.save(d / "exif_rotated.jpg", exif=exif)
    png_with_header_size(d / "huge.png", 20000, 20000)
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    "color=c=black:s=64x48:r=5", "-frames:v", "0", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    str(d / "zero_frames.mp4")], check=True)
    return d


def test_bad_inputs_get_clear_statuses(tmp_path, standin_dir, tiny_checkpoint):
    folder = _bad_folder(tmp_path / "bad")
    out = tmp_path / "out"
    out.mkdir()
    stale = temp_path_for(out / "old.npz")  # left by an interrupted run
    stale.write_bytes(b"partial")
    report = _pipeline(_config([folder], out, standin_dir, tiny_checkpoint)).run()
    assert report.exit_code == 1
    assert not stale.exists()
    recs = read_manifest(out / MANIFEST_NAME)
    expected_failed = {
        "zero_bytes": "empty",
        "truncated": "truncated",
        "text": "not a readable image",
        "tiny_1x1": "1x1",
        "huge": "20000x20000",
        "zero_frames": "no frames",
    }
    for key, needle in expected_failed.items():
        assert recs[key].status == "failed", (key, recs[key])
        assert needle in recs[key].reason, (key, recs[key].reason)
        assert recs[key].outputs == []
        assert not list(out.glob(f"{key}*")), key
    for key in ("gray16", "rgba", "cmyk", "exif_rotated"):
        assert recs[key].status == "ok", (key, recs[key].reason)
        assert recs[key].people == 1
    assert report.counts == {"ok": 4, "no_person": 0, "no_keypoints": 0, "failed": 6, "skipped": 0}
    # the EXIF orientation is applied: the stored image is portrait
    assert load_result_npz(out / "exif_rotated.npz")["image_size"].tolist() == [137, 86]
    assert load_result_npz(out / "cmyk.npz")["image_size"].tolist() == [86, 137]
    assert_outputs_clean(out)

    # a re-run redoes only the failed ones
    report = _pipeline(_config([folder], out, standin_dir, tiny_checkpoint)).run()
    statuses = manifest_status(out)
    assert {k for k, v in statuses.items() if v == "skipped"} == {"gray16", "rgba", "cmyk", "exif_rotated"}
    assert report.counts["failed"] == 6


class _FailingOn(TemplateKeypoints):
    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, image, boxes, *, path, frame):
        if path.name == self.name:
            raise RuntimeError("keypoint backend crashed")
        return super().__call__(image, boxes, path=path, frame=frame)


def test_one_failure_does_not_stop_the_run(tmp_path, standin_dir, tiny_checkpoint):
    out = tmp_path / "out"
    photos = [EXAMPLES / "messi5.jpg", EXAMPLES / "basketball1.png"]
    report = _pipeline(_config(photos, out, standin_dir, tiny_checkpoint, render=False),
                       keypoints=_FailingOn("messi5.jpg")).run()
    assert report.exit_code == 1
    recs = read_manifest(out / MANIFEST_NAME)
    assert recs["messi5"].status == "failed" and "keypoint backend crashed" in recs["messi5"].reason
    assert recs["basketball1"].status == "ok"
    assert not (out / "messi5.npz").exists()


class _NoGL:
    calls = 0

    def render_overlay(self, *a, **k):
        type(self).calls += 1
        raise RendererUnavailable("no EGL display")

    render_side_view = render_overlay


def test_renderer_unavailable_disables_renders_not_the_run(tmp_path, standin_dir, tiny_checkpoint, caplog):
    out = tmp_path / "out"
    video = write_synthetic_video(tmp_path / "clip.mp4", n_frames=3)
    inputs = [EXAMPLES / "messi5.jpg", EXAMPLES / "basketball1.png", video]
    with caplog.at_level("WARNING"):
        report = _pipeline(_config(inputs, out, standin_dir, tiny_checkpoint), renderer=_NoGL()).run()
    assert report.exit_code == 0
    assert _NoGL.calls == 1
    assert sum("renders disabled" in r.message for r in caplog.records) == 1
    assert set(manifest_status(out).values()) == {"ok"}
    assert not list(out.glob("*.png")) and not list(out.glob("*.mp4"))
    assert "no EGL display" in report.summary["renders_disabled"]
    assert_outputs_clean(out)


@pytest.mark.slow
def test_release_layout_checkpoint_runs(tmp_path, standin_dir):
    """A random checkpoint in the released Meta-HMR ResNet form (ResNet-50 main + aux) goes through."""
    from metahmr_cli.body.smpl import load_mean_params
    from metahmr_cli.models import write_random_checkpoint

    ckpt = write_random_checkpoint(tmp_path / "hmr_release.pt", "metahmr_cliff_resnet",
                                   mean_params=load_mean_params(standin_dir))
    out = tmp_path / "out"
    cfg = _config([EXAMPLES / "messi5.jpg"], out, standin_dir, ckpt, render=False)
    cfg.tto = TTOConfig(schedule="metahmr", max_steps=1)
    report = _pipeline(cfg).run()
    assert report.exit_code == 0
    d = load_result_npz(out / "messi5.npz")
    assert str(d["checkpoint"]).startswith("hmr_release.pt") and d["transl"].shape == (1, 3)


def test_people_are_batched_across_images_without_changing_results(tmp_path, standin_dir, tiny_checkpoint,
                                                                   monkeypatch):
    import metahmr_cli.tto as tto

    sizes: list[int] = []
    real = tto.run_tto

    def counting(main, aux, body, inputs, config, **kw):
        sizes.append(len(inputs))
        return real(main, aux, body, inputs, config, **kw)

    monkeypatch.setattr(tto, "run_tto", counting)
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (photos / name).write_bytes((EXAMPLES / "messi5.jpg").read_bytes())
    det = FixedDetector()
    results = {}
    for bs in (2, 32):
        out = tmp_path / f"out{bs}"
        _pipeline(_config([photos], out, standin_dir, tiny_checkpoint, render=False, batch_size=bs),
                  detector=det).run()
        results[bs] = {k: load_result_npz(out / f"{k}.npz") for k in "abc"}
    assert sizes == [2, 1, 3]  # batch 2: a+b, then c; batch 32: all three at once
    for k in "abc":
        for key in ("global_orient", "body_pose", "betas", "transl", "vertices", "reproj_error_after"):
            np.testing.assert_allclose(results[2][k][key], results[32][k][key], rtol=1e-4, atol=1e-5)


class _FailingOnFrame(TemplateKeypoints):
    def __init__(self, frame: int) -> None:
        self.frame = frame

    def __call__(self, image, boxes, *, path, frame):
        if frame == self.frame:
            raise RuntimeError("keypoint backend crashed")
        return super().__call__(image, boxes, path=path, frame=frame)


def test_video_rerun_and_failure_leave_only_this_runs_frames(tmp_path, standin_dir, tiny_checkpoint):
    video = write_synthetic_video(tmp_path / "clip.mp4", n_frames=6)
    out = tmp_path / "out"
    cfg = _config([video], out, standin_dir, tiny_checkpoint, render=False, batch_size=2)
    assert _pipeline(cfg).run().exit_code == 0
    assert sorted(p.name for p in (out / "clip").iterdir()) == [f"frame_{i:06d}.npz" for i in range(6)]
    # a redo with another stride: frames 1, 3, 5 of the first run must not stay beside the new ones
    cfg = _config([video], out, standin_dir, tiny_checkpoint, render=False, batch_size=2, video_stride=2,
                  overwrite=True)
    assert _pipeline(cfg).run().exit_code == 0
    names = sorted(p.name for p in (out / "clip").iterdir())
    assert names == ["frame_000000.npz", "frame_000002.npz", "frame_000004.npz"]
    outputs = read_manifest(out / MANIFEST_NAME)["clip"].outputs
    assert [o for o in outputs if o.startswith("clip/")] == [f"clip/{n}" for n in names]
    with np.load(out / "clip_tracks.npz") as z:
        assert z["track_1/frames"].tolist() == [0, 2, 4]
    # a failure half-way keeps no frame of the video
    cfg = _config([video], out, standin_dir, tiny_checkpoint, render=False, batch_size=2, overwrite=True)
    assert _pipeline(cfg, keypoints=_FailingOnFrame(3)).run().exit_code == 1
    rec = read_manifest(out / MANIFEST_NAME)["clip"]
    assert rec.status == "failed" and "keypoint backend crashed" in rec.reason
    assert not (out / "clip").exists()
    assert not (out / "clip_tracks.npz").exists() and not (out / "clip_tracks").exists()
