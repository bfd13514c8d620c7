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

from metahmr_cli.body.open_body import BUNDLED_DIR
from metahmr_cli.body.smpl import load_body_model
from metahmr_cli.geometry.rotation import axis_angle_to_rotmat
from metahmr_cli.io.writers import MANIFEST_NAME, load_result_npz, read_manifest
from metahmr_cli.pipeline import Pipeline, ProcessConfig
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


def _run(clip, out, **video) -> Pipeline:
    video.setdefault("export", ("amass", "glb", "bvh"))
    cfg = ProcessConfig(inputs=[str(clip["video"])], out=out, model="open", device="cpu", render=False,
                        boxes_json=clip["boxes"], tto=TTOConfig(max_steps=3), video=VideoSettings(**video))
    pipe = Pipeline(cfg, keypoints=GroundTruthKeypoints(clip), progress=False)
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
