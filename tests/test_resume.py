"""Resume: unchanged settings skip finished inputs, changed settings redo them, a video resumes per frame."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_pipeline_support import (  # noqa: F401  (fixtures)
    EXAMPLES,
    FixedDetector,
    TemplateKeypoints,
    tiny_checkpoint_fixture,
    write_synthetic_video,
)

from metahmr_cli.io.writers import MANIFEST_NAME, load_result_npz, read_manifest
from metahmr_cli.pipeline import Pipeline
from metahmr_cli.process_config import ProcessConfig
from metahmr_cli.tto import TTOConfig


def _run(inputs, out, standin_dir, checkpoint, *, keypoints=None, **kw):
    kw.setdefault("render", False)
    cfg = ProcessConfig(inputs=[str(i) for i in inputs], out=out, body=str(standin_dir), checkpoint=checkpoint,
                        device="cpu", **kw)
    pipe = Pipeline(cfg, progress=False, detector=FixedDetector(), keypoints=keypoints or TemplateKeypoints())
    report = pipe.run()
    return report, read_manifest(out / MANIFEST_NAME)


def test_changed_settings_redo_an_input_and_unchanged_ones_skip_it(tmp_path, standin_dir, tiny_checkpoint):
    photo = tmp_path / "messi5.jpg"
    shutil.copy(EXAMPLES / "messi5.jpg", photo)
    out = tmp_path / "out"
    _, m = _run([photo], out, standin_dir, tiny_checkpoint, tto=TTOConfig(schedule="none"))
    assert m["messi5"].status == "ok" and m["messi5"].settings
    _, m = _run([photo], out, standin_dir, tiny_checkpoint, tto=TTOConfig(schedule="none"))
    assert m["messi5"].status == "skipped"  # same settings
    _, m = _run([photo], out, standin_dir, tiny_checkpoint, tto=TTOConfig(schedule="eft", max_steps=1))
    assert m["messi5"].status == "ok"  # another TTO schedule: redone
    assert str(load_result_npz(out / "messi5.npz")["tto_schedule"]) == "eft"
    _, m = _run([photo], out, standin_dir, tiny_checkpoint, tto=TTOConfig(schedule="eft", max_steps=1), fov=60.0)
    assert m["messi5"].status == "ok"  # another focal rule: redone
    assert str(load_result_npz(out / "messi5.npz")["focal_rule"]) == "fov"
    other = tmp_path / "other.pt"
    shutil.copy(tiny_checkpoint, other)
    with open(other, "ab") as fh:  # same networks, another file content: another checkpoint identity
        fh.write(b"\0")
    _, m = _run([photo], out, standin_dir, other, tto=TTOConfig(schedule="eft", max_steps=1), fov=60.0)
    assert m["messi5"].status == "ok"
    assert str(load_result_npz(out / "messi5.npz")["checkpoint"]).startswith("other.pt")
    _, m = _run([photo], out, standin_dir, other, tto=TTOConfig(schedule="eft", max_steps=1), fov=60.0)
    assert m["messi5"].status == "skipped"


def test_a_replaced_input_is_redone_and_the_log_says_why(tmp_path, standin_dir, tiny_checkpoint, caplog):
    """Resume matches inputs by content, not by name: another photo under the same name is processed again (even
    with the same size and modification time), the same photo with a new time is not."""
    import logging
    import os

    from PIL import Image

    image = np.asarray(Image.open(EXAMPLES / "messi5.jpg").convert("RGB"))
    photo = tmp_path / "in" / "photo.bmp"  # uncompressed: two pictures of one size give files of one size
    photo.parent.mkdir()
    Image.fromarray(image).save(photo)
    out = tmp_path / "out"
    kw = dict(tto=TTOConfig(schedule="none"))
    _, m = _run([photo], out, standin_dir, tiny_checkpoint, **kw)
    assert m["photo"].status == "ok" and m["photo"].identity["hashed"] == "all"

    # another picture, smaller: a new image size in the results
    Image.fromarray(image[:300, :400]).save(photo)
    with caplog.at_level(logging.WARNING, logger="metahmr_cli.pipeline"):
        _, m = _run([photo], out, standin_dir, tiny_checkpoint, **kw)
    assert m["photo"].status == "ok"
    assert load_result_npz(out / "photo.npz")["image_size"].tolist() == [300, 400]
    assert any("photo.bmp: the input file changed since the earlier run (its size changed" in r.getMessage()
               for r in caplog.records)

    # same size, same modification time, other pixels: the content hash tells them apart
    Image.fromarray(image[:300, :400]).save(photo)
    _, m = _run([photo], out, standin_dir, tiny_checkpoint, **kw)
    assert m["photo"].status == "skipped"
    st = photo.stat()
    Image.fromarray(np.ascontiguousarray(image[:300, 400:0:-1])).save(photo)
    os.utime(photo, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert photo.stat().st_size == st.st_size and photo.stat().st_mtime_ns == st.st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="metahmr_cli.pipeline"):
        _, m = _run([photo], out, standin_dir, tiny_checkpoint, **kw)
    assert m["photo"].status == "ok"  # redone (the stand-in stages see only the image size, so do not compare)
    assert any("its content changed" in r.getMessage() for r in caplog.records)

    # the same file with a new modification time only (copied back, touched): nothing to redo
    os.utime(photo)
    _, m = _run([photo], out, standin_dir, tiny_checkpoint, **kw)
    assert m["photo"].status == "skipped"


class _StopAfter(TemplateKeypoints):
    """Keypoints that raise KeyboardInterrupt at the n-th image (an interrupt in the middle of a video)."""

    def __init__(self, n: int | None) -> None:
        self.n = n
        self.calls = 0

    def __call__(self, image, boxes, *, path, frame):
        self.calls += 1
        if self.n is not None and self.calls > self.n:
            raise KeyboardInterrupt
        return super().__call__(image, boxes, path=path, frame=frame)


def test_an_interrupted_video_resumes_from_its_last_finished_frame(tmp_path, standin_dir, tiny_checkpoint):
    video = write_synthetic_video(tmp_path / "clip.mp4", n_frames=10)
    out = tmp_path / "out"
    first = _StopAfter(6)
    with pytest.raises(KeyboardInterrupt):
        _run([video], out, standin_dir, tiny_checkpoint, keypoints=first, batch_size=1,
             tto=TTOConfig(schedule="none"))
    kept = sorted((out / "clip").glob("frame_*.npz"))
    assert [p.name for p in kept] == [f"frame_{i:06d}.npz" for i in range(6)]  # finished frames stay
    before = {p.name: load_result_npz(p)["vertices"] for p in kept}

    second = _StopAfter(None)
    report, m = _run([video], out, standin_dir, tiny_checkpoint, keypoints=second, batch_size=1,
                     tto=TTOConfig(schedule="none"), render=True)
    assert report.exit_code == 0 and m["clip"].status == "ok" and m["clip"].frames == 10
    assert second.calls == 4  # only the 4 unfinished frames went through the models
    frames = sorted((out / "clip").glob("frame_*.npz"))
    assert len(frames) == 10
    for name, verts in before.items():
        np.testing.assert_array_equal(load_result_npz(out / "clip" / name)["vertices"], verts)
    assert (out / "clip.mp4").is_file()  # the overlay video holds every frame, resumed ones included
    from metahmr_cli.render.video import count_video_frames

    assert count_video_frames(out / "clip.mp4") == 10


def test_video_frames_get_meshes_and_joint_names(tmp_path, standin_dir, tiny_checkpoint):
    video = write_synthetic_video(tmp_path / "clip.mp4", n_frames=3)
    out = tmp_path / "out"
    report, m = _run([video], out, standin_dir, tiny_checkpoint, save_mesh="glb", tto=TTOConfig(schedule="none"))
    assert report.exit_code == 0
    meshes = sorted(p.name for p in (out / "clip").glob("*.glb"))
    assert meshes == [f"frame_{i:06d}_person00.glb" for i in range(3)]
    assert all(f"clip/{n}" in m["clip"].outputs for n in meshes)
    d = load_result_npz(out / "clip" / "frame_000000.npz")
    from metahmr_cli.body.joints import JOINT_NAMES

    assert d["joint_names"].tolist() == JOINT_NAMES
    cfg = __import__("json").loads(str(d["tto_config"]))
    assert "resolved" in cfg and isinstance(cfg["resolved"]["phases"], list)


def test_another_mesh_format_is_written_from_the_results_without_the_networks(tmp_path, standin_dir, tiny_checkpoint,
                                                                               monkeypatch):
    """--save-mesh on a finished folder: the meshes come from the stored results. Counted: the networks are loaded
    once per run (to identify the settings), never called, and no TTO runs; the results stay untouched; earlier
    meshes stay; the new meshes are the stored vertices (images) and the body posed with the stored parameters
    (video frames kept without vertices)."""
    import trimesh

    import metahmr_cli.models as models
    import metahmr_cli.tto as tto

    loads, forwards, ttos = [], [], []
    real_load, real_tto = models.load_networks, tto.run_tto

    def counting_load(*a, **k):
        nets = real_load(*a, **k)
        loads.append(1)
        for net in (nets.main, nets.aux):
            net.register_forward_hook(lambda *_: forwards.append(1))
        return nets

    monkeypatch.setattr(models, "load_networks", counting_load)
    monkeypatch.setattr(tto, "run_tto", lambda *a, **k: (ttos.append(1), real_tto(*a, **k))[1])
    photo = tmp_path / "messi5.jpg"
    shutil.copy(EXAMPLES / "messi5.jpg", photo)
    video = write_synthetic_video(tmp_path / "clip.mp4", n_frames=3)
    out = tmp_path / "out"
    steps = TTOConfig(max_steps=1)
    _, m = _run([photo, video], out, standin_dir, tiny_checkpoint, tto=steps, save_mesh="ply", save_vertices=False)
    assert m["messi5"].status == m["clip"].status == "ok"
    assert len(loads) == 1 and forwards and ttos
    results = {p: p.stat().st_mtime_ns for p in [out / "messi5.npz", *sorted((out / "clip").glob("*.npz"))]}
    plys = {p: p.stat().st_mtime_ns for p in out.rglob("*.ply")}
    assert len(plys) == 1 + 3
    loads.clear(), forwards.clear(), ttos.clear()

    _, m = _run([photo, video], out, standin_dir, tiny_checkpoint, tto=steps, save_mesh="glb,obj",
                save_vertices=False)
    assert m["messi5"].status == m["clip"].status == "skipped"
    assert len(loads) == 1 and not forwards and not ttos  # no network call, no test-time optimisation
    assert {p: p.stat().st_mtime_ns for p in results} == results
    assert {p: p.stat().st_mtime_ns for p in plys} == plys  # the earlier format stays
    for fmt in ("glb", "obj"):
        assert (out / f"messi5_person00.{fmt}").is_file() and f"messi5_person00.{fmt}" in m["messi5"].outputs
        for t in range(3):
            assert f"clip/frame_{t:06d}_person00.{fmt}" in m["clip"].outputs
    # the new mesh is the body of the stored parameters (no vertices stored): the same as the first run's .ply
    ply = trimesh.load(out / "clip" / "frame_000001_person00.ply", process=False)
    obj = trimesh.load(out / "clip" / "frame_000001_person00.obj", process=False)
    np.testing.assert_allclose(obj.vertices, ply.vertices, atol=1e-5)


def test_another_detector_threshold_redoes_an_image(tmp_path, standin_dir, tiny_checkpoint):
    """The detector's score threshold changes which people are found: it is part of the settings an image is
    skipped by."""
    photo = tmp_path / "messi5.jpg"
    shutil.copy(EXAMPLES / "messi5.jpg", photo)
    out = tmp_path / "out"
    kw = dict(tto=TTOConfig(schedule="none"))
    _, m = _run([photo], out, standin_dir, tiny_checkpoint, det_conf=0.5, **kw)
    assert m["messi5"].status == "ok"
    _, m = _run([photo], out, standin_dir, tiny_checkpoint, det_conf=0.5, **kw)
    assert m["messi5"].status == "skipped"
    _, m = _run([photo], out, standin_dir, tiny_checkpoint, det_conf=0.6, **kw)
    assert m["messi5"].status == "ok"


def test_a_schedule_sharing_weights_per_batch_runs_videos_without_warm_starts(tmp_path, standin_dir,
                                                                             tiny_checkpoint):
    """The released schedule adapts one weight copy per batch of people, so a tracked person has no weights of their
    own to carry to the next frame: the video runs cold (no tto_warm_start), whatever --warm-start says."""
    from metahmr_cli.video.motion import VideoSettings

    video = write_synthetic_video(tmp_path / "clip.mp4", n_frames=4)
    out = tmp_path / "out"
    report, m = _run([video], out, standin_dir, tiny_checkpoint, tto=TTOConfig(schedule="reference", max_steps=1),
                     video=VideoSettings(tracker="iou", warm_start=True))
    assert report.exit_code == 0 and m["clip"].status == "ok", m["clip"].reason
    for t in range(4):
        d = load_result_npz(out / "clip" / f"frame_{t:06d}.npz")
        assert d["track_id"].tolist() == [1] and "tto_warm_start" not in d
    # the per-person schedule of the same run carries the weights
    _, m = _run([video], tmp_path / "out2", standin_dir, tiny_checkpoint, tto=TTOConfig(schedule="metahmr",
                max_steps=1), video=VideoSettings(tracker="iou", warm_start=True))
    assert load_result_npz(tmp_path / "out2" / "clip" / "frame_000003.npz")["tto_warm_start"].tolist() == [True]
