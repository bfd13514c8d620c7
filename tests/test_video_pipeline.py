"""``metahmr process`` on a video as motion: tracked people through a crossing, smoothed outputs that stay
consistent with the body model, the sequence files and animation exports, and resume.

The clip is the project's synthetic walk (two people of the open body crossing), rendered small; the person
boxes are imported (ground truth, listed in a shuffled order per frame) and the 2D keypoints are the ground-truth
joints projected into the image, so that the test checks the video machinery, not a detector.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from metahmr_cli.body.layout import BUNDLED_DIR
from metahmr_cli.body.smpl import load_body_model
from metahmr_cli.geometry.rotation import axis_angle_to_rotmat
from metahmr_cli.io.writers import MANIFEST_NAME, load_result_npz, read_manifest
from metahmr_cli.pipeline import Pipeline
from metahmr_cli.process_config import ProcessConfig
from metahmr_cli.tto.config import TTOConfig
from metahmr_cli.video.motion import VideoSettings
from metahmr_cli.video.synthetic import make_walking_scene, render_walking_video, scene_ground_truth

FRAMES = 10


@pytest.fixture(scope="module")
def body():
    return load_body_model(BUNDLED_DIR, "neutral", with_h36m=False)


@pytest.fixture(scope="module")
def clip(tmp_path_factory, body):
    """The rendered clip, its ground truth and a boxes JSON listing the two people in a shuffled order."""
    folder = tmp_path_factory.mktemp("walk")
    scene = make_walking_scene(body, frames=FRAMES, fps=30.0, size=(480, 270), seed=1)
    gt = scene_ground_truth(scene, body)
    video = render_walking_video(scene, body, folder / "walk.mp4")
    rng = np.random.default_rng(0)
    order = {t: rng.permutation(2).tolist() for t in range(FRAMES)}
    boxes = {f"walk.mp4:{t}": [gt["boxes"][p, t].tolist() + [0.9] for p in order[t]] for t in range(FRAMES)}
    (folder / "boxes.json").write_text(json.dumps(boxes))
    uv = gt["joints"] @ scene.K.T
    uv = uv[..., :2] / uv[..., 2:]
    return {"video": video, "boxes": folder / "boxes.json", "gt": gt, "uv": uv, "order": order, "scene": scene}


class GroundTruthKeypoints:
    """The 49 ground-truth joints of the person in each box, projected (the box tells who it is)."""

    def __init__(self, clip) -> None:
        self.clip = clip

    def __call__(self, image, boxes, *, path, frame):
        gt_boxes = self.clip["gt"]["boxes"][:, frame]
        out = np.zeros((len(boxes), 49, 3), np.float32)
        for i, b in enumerate(np.asarray(boxes)):
            p = int(np.argmin(np.abs(gt_boxes - b).sum(axis=1)))
            out[i, :, :2] = self.clip["uv"][p, frame]
            out[i, :, 2] = 1.0
        return out


class NoBlazePose:
    """The open model's image evidence with BlazePose finding nobody (a case the model is trained for). BlazePose
    reads renders of the open body worse than photos (benchmarks/results/blazepose_errors.md: its frame off by 12 deg
    median, 5 % of the people turned around), while the keypoints here are the truth itself; this clip checks
    tracking, smoothing and exports against that truth, not BlazePose."""

    def __call__(self, image, boxes, keypoints):
        from metahmr_cli.keypoints.evidence import PersonEvidence

        return PersonEvidence.empty(len(boxes))


def _run(clip, out, **video) -> Pipeline:
    video.setdefault("export", ("amass", "glb", "bvh"))
    cfg = ProcessConfig(inputs=[str(clip["video"])], out=out, model="open", device="cpu", render=False,
                        boxes_json=clip["boxes"], tto=TTOConfig(max_steps=3), video=VideoSettings(**video))
    pipe = Pipeline(cfg, keypoints=GroundTruthKeypoints(clip), evidence=NoBlazePose(), progress=False)
    assert pipe.run().exit_code == 0
    return pipe


def _frames(out):
    return [load_result_npz(out / "walk" / f"frame_{t:06d}.npz") for t in range(FRAMES)]


def test_tracks_sequences_and_exports(tmp_path, clip, body):
    import pygltflib
    from bvh import Bvh

    out = tmp_path / "out"
    _run(clip, out)
    frames = _frames(out)
    # identities: each ground-truth person keeps one id through the crossing, whatever the order of the boxes
    ids = []
    for t, a in enumerate(frames):
        who = {clip["order"][t][i]: int(a["track_id"][i]) for i in range(2)}
        ids.append((who[0], who[1]))
    assert len(set(ids)) == 1 and ids[0][0] != ids[0][1]
    # warm-started TTO: from the second frame on, each tracked person starts from the weights their previous
    # frame's TTO ended with
    assert frames[0]["tto_warm_start"].tolist() == [False, False]
    assert all(a["tto_warm_start"].tolist() == [True, True] for a in frames[1:])
    # smoothed outputs are still a body: the stored vertices are the body posed with the stored parameters
    for a in frames[::3]:
        rot = axis_angle_to_rotmat(torch.as_tensor(np.concatenate([a["global_orient"], a["body_pose"]], 1)
                                                   .reshape(-1, 24, 3)))
        with torch.no_grad():
            v = body(rot, torch.as_tensor(a["betas"]), torch.as_tensor(a["transl"])).vertices.numpy()
        np.testing.assert_allclose(a["vertices"], v, atol=2e-4)
    # the shape is held per track: it changes little from frame to frame
    for k in range(2):
        b = np.stack([a["betas"][list(a["track_id"]).index(ids[0][k])] for a in frames])
        assert np.abs(np.diff(b, axis=0)).max() < np.abs(b).max() * 0.5 + 1e-3

    # the sequence file: both tracks, every frame, the parameters of the frame files
    with np.load(out / "walk_tracks.npz") as z:
        assert sorted(z["track_ids"].tolist()) == sorted(ids[0])
        for tid in ids[0]:
            assert z[f"track_{tid}/frames"].tolist() == list(range(FRAMES))
            poses = z[f"track_{tid}/poses"]
            for t in (0, FRAMES - 1):
                i = list(frames[t]["track_id"]).index(tid)
                np.testing.assert_allclose(poses[t, :3], frames[t]["global_orient"][i], atol=1e-6)
                np.testing.assert_allclose(poses[t, 3:], frames[t]["body_pose"][i], atol=1e-6)
            # the fit is close to the truth: root-relative joint error of the sequence (LSP joints, mid-hip root)
            rot = axis_angle_to_rotmat(torch.as_tensor(poses.reshape(-1, 24, 3)))
            with torch.no_grad():
                j = body(rot, torch.as_tensor(np.tile(z[f"track_{tid}/betas"], (FRAMES, 1))),
                         torch.as_tensor(z[f"track_{tid}/trans"])).joints.numpy()
            person = [clip["order"][0][i] for i in range(2)][list(frames[0]["track_id"]).index(tid)]
            rel = j[:, 25:39] - j[:, 27:29].mean(axis=1, keepdims=True)
            ref = clip["gt"]["joints"][person, :, 25:39] - clip["gt"]["joints"][person, :, 27:29].mean(1, keepdims=True)
            err = np.linalg.norm(rel - ref, axis=-1).mean()
            assert err < 0.15, err
    # one export per track and format, each readable
    for tid in ids[0]:
        amass = np.load(out / "walk_tracks" / f"track_{tid:03d}.npz")
        assert amass["poses"].shape == (FRAMES, 156) and amass["poses_smpl"].shape == (FRAMES, 72)
        gltf = pygltflib.GLTF2().load(str(out / "walk_tracks" / f"track_{tid:03d}.glb"))
        assert gltf.accessors[gltf.animations[0].samplers[0].input].count == FRAMES
        doc = Bvh((out / "walk_tracks" / f"track_{tid:03d}.bvh").read_text())
        assert doc.nframes == FRAMES and abs(doc.frame_time - 1 / 30) < 1e-6
    rec = read_manifest(out / MANIFEST_NAME)["walk"]
    exports = sorted(o for o in rec.outputs if o.startswith("walk_tracks/"))
    assert "walk_tracks.npz" in rec.outputs and len(exports) == 7 and "walk_tracks/scene.glb" in exports

    # a re-run with another export set keeps the frames and every earlier export, untouched
    before = {t: (out / "walk" / f"frame_{t:06d}.npz").stat().st_mtime_ns for t in range(FRAMES)}
    files = {p.name: p.stat().st_mtime_ns for p in (out / "walk_tracks").iterdir()}
    _run(clip, out, export=("bvh",))
    assert {t: (out / "walk" / f"frame_{t:06d}.npz").stat().st_mtime_ns for t in range(FRAMES)} == before
    assert {p.name: p.stat().st_mtime_ns for p in (out / "walk_tracks").iterdir()} == files
    rec = read_manifest(out / MANIFEST_NAME)["walk"]
    assert rec.status == "skipped" and sorted(o for o in rec.outputs if o.startswith("walk_tracks/")) == exports
    # and a formats' file that went missing is made again from the frames, the others kept
    (out / "walk_tracks" / f"track_{ids[0][0]:03d}.glb").unlink()
    _run(clip, out, export=("bvh",))
    assert (out / "walk_tracks" / f"track_{ids[0][0]:03d}.glb").is_file()
    assert {p.name: p.stat().st_mtime_ns for p in (out / "walk_tracks").iterdir()
            if p.name != f"track_{ids[0][0]:03d}.glb"} == {k: v for k, v in files.items()
                                                           if k != f"track_{ids[0][0]:03d}.glb"}

    # resume: the last frames and the sequence files are lost; the next run redoes only those frames and the
    # tracks keep their ids
    for t in range(6, FRAMES):
        (out / "walk" / f"frame_{t:06d}.npz").unlink()
    (out / "walk_tracks.npz").unlink()
    _run(clip, out, export=("bvh",))
    assert {t: (out / "walk" / f"frame_{t:06d}.npz").stat().st_mtime_ns for t in range(6)} == \
        {t: before[t] for t in range(6)}
    # the earlier formats are remade for the new frames, not dropped
    assert sorted(p.suffix for p in (out / "walk_tracks").iterdir()) == [".bvh"] * 2 + [".glb"] * 3 + [".npz"] * 2
    again = _frames(out)
    for t in range(FRAMES):
        assert again[t]["track_id"].tolist() == frames[t]["track_id"].tolist()
    with np.load(out / "walk_tracks.npz") as z:
        assert all(z[f"track_{tid}/frames"].tolist() == list(range(FRAMES)) for tid in ids[0])


def test_tracking_off_gives_untracked_people_and_no_sequences(tmp_path, clip):
    out = tmp_path / "out"
    _run(clip, out, tracker="none")
    for a in _frames(out):
        assert a["track_id"].tolist() == [-1, -1]
        assert "tto_warm_start" not in a  # no tracks, no warm starts
    assert not (out / "walk_tracks.npz").exists() and not (out / "walk_tracks").exists()


# ---------------------------------------------------------------------------------------------- exact resume


class _Interrupt(GroundTruthKeypoints):
    """Ground-truth keypoints that raise KeyboardInterrupt (Ctrl-C) at the n-th call: frame n-1 of the clip."""

    def __init__(self, clip, n: int) -> None:
        super().__init__(clip)
        self.n, self.calls = n, 0

    def __call__(self, image, boxes, *, path, frame):
        self.calls += 1
        if self.calls >= self.n:
            raise KeyboardInterrupt
        return super().__call__(image, boxes, path=path, frame=frame)


def _process(clip, out, keypoints, **kw):
    video = dict(export=("amass", "glb", "bvh"), smooth_keypoints=True)
    video.update(kw.pop("video", {}))
    cfg = ProcessConfig(inputs=[str(clip["video"])], out=out, model="open", device="cpu", render=False,
                        boxes_json=clip["boxes"], tto=TTOConfig(max_steps=3), video=VideoSettings(**video), **kw)
    return Pipeline(cfg, keypoints=keypoints, progress=False).run()


_REFERENCES: dict[str, object] = {}


def _reference(clip, tmp_path_factory, key, **kw):
    """The uninterrupted run of a setting (made once per module)."""
    if key not in _REFERENCES:
        out = tmp_path_factory.mktemp(f"ref_{key}") / "out"
        assert _process(clip, out, GroundTruthKeypoints(clip), **kw).exit_code == 0
        _REFERENCES[key] = out
    return _REFERENCES[key]


@pytest.mark.parametrize("how", ["ctrl_c", "killed_before_its_state", "sparse_states", "batched_cold_starts"])
def test_a_resumed_video_equals_the_uninterrupted_run(tmp_path, tmp_path_factory, clip, monkeypatch, how):
    """Interrupted after frame 5 of 10 and run again, a video gives the frames and exports of a run that was never
    interrupted: the tracks' warm-start weights and filter states (rotations, translations, held shapes, keypoints)
    continue from where they were, not from the stored results."""
    import metahmr_cli.pipeline.video as pipeline

    kw = {"video": {"warm_start": False}, "batch_size": 4} if how == "batched_cold_starts" else {}
    ref = _reference(clip, tmp_path_factory, "cold" if kw else "warm", **kw)
    out = tmp_path / "out"
    stop_at = 7  # keypoints of frame 6 raise: frames 0-5 are finished
    if how == "killed_before_its_state":
        # the process dies after writing frame 5 and before its resume state: the state says frame 4
        real = pipeline.VideoRunner._save_state

        def dies_at_frame_5(self, item, out, book, frames, keypoints):
            if frames[-1] == 5:
                raise KeyboardInterrupt
            return real(self, item, out, book, frames, keypoints)

        monkeypatch.setattr(pipeline.VideoRunner, "_save_state", dies_at_frame_5)
    if how == "sparse_states":
        # states too large to write after every frame: only frame 0's is on disk, frames 1-5 are recomputed
        monkeypatch.setattr(pipeline, "STATE_EVERY_FRAME_BYTES", 1000)
    with pytest.raises(KeyboardInterrupt):
        _process(clip, out, _Interrupt(clip, stop_at), **kw)
    monkeypatch.undo()
    assert (out / "walk" / "frame_000005.npz").is_file() and not (out / "walk" / "frame_000006.npz").exists()
    state_frame = json.loads(str(np.load(out / "walk" / "resume.npz")["meta"]))["frame"]
    assert state_frame == {"killed_before_its_state": 4, "sparse_states": 0}.get(how, 5)
    second = _Interrupt(clip, FRAMES + 1)  # counts its calls, never interrupts
    assert _process(clip, out, second, **kw).exit_code == 0
    assert second.calls == FRAMES - 1 - state_frame  # only the frames after the state went through the models
    assert not (out / "walk" / "resume.npz").exists()  # the finished video needs no state

    for t in range(FRAMES):
        a = load_result_npz(out / "walk" / f"frame_{t:06d}.npz")
        b = load_result_npz(ref / "walk" / f"frame_{t:06d}.npz")
        for key in ("track_id", "tto_steps", "tto_warm_start"):
            if key in b:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"frame {t} {key}")
        for key in ("global_orient", "body_pose", "betas", "transl", "vertices", "joints3d", "keypoints2d",
                    "reproj_error_after"):
            np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-5, err_msg=f"frame {t} {key}")
    for name in sorted(p.relative_to(ref).as_posix() for p in (ref / "walk_tracks").iterdir()):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    with np.load(out / "walk_tracks.npz") as a, np.load(ref / "walk_tracks.npz") as b:
        assert a.files == b.files
        for key in a.files:
            if a[key].dtype.kind == "f":
                np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-5, err_msg=key)
            else:
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_every_second_frame_tracks_exports_and_redoes_with_another_stride(tmp_path, clip):
    """--video-stride 2: frames 0, 2, 4, 6, 8 are processed; consecutive processed frames keep their warm starts
    (even with max_gap 0: no frame of the stride is missed); the exports run at 15 fps (BVH frame time 2/30, AMASS
    frame rate 15); a later run with stride 1 redoes the video instead of taking its frames."""
    from bvh import Bvh

    out = tmp_path / "out"
    kw = dict(max_gap=0, export=("amass", "bvh"))
    cfg = ProcessConfig(inputs=[str(clip["video"])], out=out, model="open", device="cpu", render=False,
                        boxes_json=clip["boxes"], tto=TTOConfig(max_steps=3), video=VideoSettings(**kw),
                        video_stride=2)
    assert Pipeline(cfg, keypoints=GroundTruthKeypoints(clip), progress=False).run().exit_code == 0
    frames = sorted(p.name for p in (out / "walk").glob("frame_*.npz"))
    assert frames == [f"frame_{t:06d}.npz" for t in range(0, FRAMES, 2)]
    warm = [load_result_npz(out / "walk" / f)["tto_warm_start"].tolist() for f in frames]
    assert warm == [[False, False]] + [[True, True]] * (len(frames) - 1)
    tids = [int(t) for t in np.load(out / "walk_tracks.npz")["track_ids"]]
    for tid in tids:
        doc = Bvh((out / "walk_tracks" / f"track_{tid:03d}.bvh").read_text())
        assert doc.nframes == 5 and abs(doc.frame_time - 2 / 30) < 1e-7
        amass = np.load(out / "walk_tracks" / f"track_{tid:03d}.npz")
        assert float(amass["mocap_framerate"]) == 15.0 and amass["frames"].tolist() == [0, 2, 4, 6, 8]
    first = (out / "walk" / "frame_000000.npz").stat().st_ino
    _run(clip, out, **kw)  # stride 1: other frames, so another settings fingerprint
    assert (out / "walk" / "frame_000000.npz").stat().st_ino != first  # redone, not taken from the stride-2 run
    assert len(list((out / "walk").glob("frame_*.npz"))) == FRAMES
    doc = Bvh((out / "walk_tracks" / f"track_{tids[0]:03d}.bvh").read_text())
    assert doc.nframes == FRAMES and abs(doc.frame_time - 1 / 30) < 1e-7
