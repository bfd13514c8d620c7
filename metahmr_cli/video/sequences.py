"""Per-person sequences of a video: gathered from the frame results, written as ``<stem>_tracks.npz`` (all tracks)
and as one AMASS-layout file per track (``<stem>_tracks/track_NNN.npz``, read by the SMPL Blender add-ons and the
AMASS tools). See ``docs/output-schema.md`` for every key.

Frames: a track's own frame indices (source video frames) may have gaps where the person was not detected.
``<stem>_tracks.npz`` keeps exactly the frames that were estimated; the AMASS files and the animations
(:mod:`metahmr_cli.video.export`) need one pose per frame, so gaps are filled by interpolation (slerp of the joint
rotations, linear translation) and marked in ``interpolated``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.spatial.transform import Rotation, Slerp

from metahmr_cli.files import save_npz_atomic
from metahmr_cli.video.world import WorldFrame, camera_world, rest_root

__all__ = ["AMASS_NUM_BETAS", "AMASS_NUM_DMPLS", "AMASS_POSE_SIZE", "TrackSequence", "collect_tracks", "contiguous",
           "to_world", "write_amass", "write_tracks_npz", "Y_UP", "Z_UP"]

Y_UP = np.diag([1.0, -1.0, -1.0])
"""Camera frame (OpenCV: x right, y down, z forward) -> y-up world (glTF, BVH, Blender's glTF import): x right,
y up, z towards the camera."""

Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
"""Camera frame -> z-up world (AMASS): x right, y forward (away from the camera), z up."""

_REPORT_KEYS = ("tto_steps", "reproj_error_before", "reproj_error_after", "tto_converged", "fell_back")


@dataclass
class TrackSequence:
    """One person across a video (T frames where they were estimated), in the camera frame of the video."""

    track_id: int
    frames: np.ndarray          # (T,) source frame indices, increasing
    poses: np.ndarray           # (T, 72) axis-angle: global orientation (camera frame) + 23 body joints
    trans: np.ndarray           # (T, 3) SMPL translation for ``betas`` (vertices = body(poses, betas) + trans)
    betas: np.ndarray           # (10,) one shape for the whole track
    bbox: np.ndarray            # (T, 4)
    det_score: np.ndarray       # (T,)
    keypoints2d: np.ndarray     # (T, 49, 3)
    report: dict[str, np.ndarray]  # per-frame TTO report: tto_steps, reproj_error_before/after, ...

    @property
    def num_frames(self) -> int:
        return int(len(self.frames))


def collect_tracks(frames: list[dict[str, np.ndarray]], body: Any, *, min_frames: int = 1) -> list[TrackSequence]:
    """Group the people of the frame results (``load_result_npz`` dicts in any order) by ``track_id``.

    The track's shape is the mean of its per-frame betas; each frame's translation is moved so that the pelvis
    stays where that frame put it with its own betas. People without a track id (-1) are left out, and so are
    tracks shorter than ``min_frames``.
    """
    rows: dict[int, list[tuple[int, dict[str, np.ndarray], int]]] = {}
    for a in frames:
        if "track_id" not in a:
            continue
        for i, tid in enumerate(np.asarray(a["track_id"]).reshape(-1)):
            if tid >= 0:
                rows.setdefault(int(tid), []).append((int(a["frame_index"]), a, i))
    out = []
    for tid in sorted(rows):
        items = sorted(rows[tid], key=lambda r: r[0])
        if len(items) < min_frames:
            continue

        def col(key: str, items: list = items) -> np.ndarray:
            return np.stack([np.asarray(a[key])[i] for _, a, i in items])

        betas_t = col("betas").astype(np.float64)
        betas = betas_t.mean(axis=0)
        with torch.no_grad():
            rot, _ = body.rest_pose(len(items) + 1)
            b = torch.as_tensor(np.concatenate([betas_t, betas[None]]), dtype=body.dtype, device=body.device)
            root = body(rot, b).smpl_joints[:, 0].cpu().double().numpy()
        trans = col("transl").astype(np.float64) + root[:-1] - root[-1]
        poses = np.concatenate([col("global_orient"), col("body_pose")], axis=1).astype(np.float64)
        out.append(TrackSequence(
            track_id=tid, frames=np.array([f for f, _, _ in items], np.int64), poses=poses, trans=trans,
            betas=betas, bbox=col("bbox"), det_score=col("det_score"), keypoints2d=col("keypoints2d"),
            report={k: col(k) for k in _REPORT_KEYS},
        ))
    return out


def contiguous(seq: TrackSequence, stride: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One pose per processed frame from the track's first to its last frame.

    Returns (frames (N,), rotmats (N, 24, 3, 3), trans (N, 3), interpolated (N,) bool); missing frames are
    interpolated between their neighbours (slerp per joint, linear translation).
    """
    stride = max(int(stride), 1)
    frames = np.arange(int(seq.frames[0]), int(seq.frames[-1]) + 1, stride, dtype=np.int64)
    known = np.isin(frames, seq.frames)
    rot = Rotation.from_rotvec(seq.poses.reshape(-1, 3)).as_matrix().reshape(-1, 24, 3, 3)
    if known.all() and len(frames) == seq.num_frames:
        return frames, rot, seq.trans.copy(), ~known
    out_rot = np.empty((len(frames), 24, 3, 3))
    for j in range(24):
        if seq.num_frames == 1:
            out_rot[:, j] = rot[0, j]
            continue
        slerp = Slerp(seq.frames.astype(np.float64), Rotation.from_matrix(rot[:, j]))
        out_rot[:, j] = slerp(np.clip(frames, seq.frames[0], seq.frames[-1]).astype(np.float64)).as_matrix()
    trans = np.stack([np.interp(frames, seq.frames, seq.trans[:, c]) for c in range(3)], axis=1)
    return frames, out_rot, trans, ~known


def to_world(rot_root: np.ndarray, trans: np.ndarray, root_joint: np.ndarray,
             world_from_camera: np.ndarray, offset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Express a SMPL root rotation (N, 3, 3) and translation (N, 3) in another frame: ``x' = R x + offset``
    (``world_from_camera`` = R (3, 3), ``offset`` (3,), default 0).

    SMPL turns the body about its root joint ``J0`` (the rest pelvis of the track's betas) and then adds ``trans``,
    so the pelvis lands at ``J0 + trans``; in the new frame it must land at ``R (J0 + trans) + offset``:
    ``rot' = R rot``, ``trans' = R (J0 + trans) + offset - J0``.
    """
    R = np.asarray(world_from_camera, np.float64)
    j0 = np.asarray(root_joint, np.float64).reshape(3)
    t = np.zeros(3) if offset is None else np.asarray(offset, np.float64).reshape(3)
    return R @ np.asarray(rot_root, np.float64), (np.asarray(trans, np.float64) + j0) @ R.T + t - j0


def write_tracks_npz(path: str | Path, tracks: list[TrackSequence], *, fps: float, stride: int, K: np.ndarray,
                     image_size: tuple[int, int], meta: dict[str, Any], world: WorldFrame | None = None,
                     depth_scale: dict[int, float] | None = None) -> Path:
    """All tracks of a video in one file: ``track_ids`` and, per track id N, keys ``track_N/<name>`` (camera frame),
    plus the world frame of the exports (``world_from_camera``, the floor and how sure its estimate is) and each
    track's ``depth_scale`` (the factor along the camera's rays that put it on the floor in the exports)."""
    arrays: dict[str, Any] = {
        "track_ids": np.array([t.track_id for t in tracks], np.int64),
        "fps": np.float64(fps), "stride": np.int64(stride), "K": np.asarray(K, np.float64),
        "image_size": np.asarray(image_size, np.int64), "frame": np.array("camera_opencv"),
    }
    if world is not None:
        arrays.update({"world_from_camera": world.matrix(), "world_source": np.array(world.source),
                       "camera_height": np.float64(world.camera_height),
                       "floor_in_camera": np.array([*world.up_in_camera, world.camera_height]),
                       "world_quality": np.array(json.dumps(world.quality, sort_keys=True))})
    for k, v in meta.items():
        arrays[k] = np.asarray(v)
    for t in tracks:
        p = f"track_{t.track_id}/"
        arrays.update({p + "frames": t.frames, p + "poses": t.poses.astype(np.float32),
                       p + "trans": t.trans.astype(np.float32), p + "betas": t.betas.astype(np.float32),
                       p + "bbox": t.bbox, p + "det_score": t.det_score, p + "keypoints2d": t.keypoints2d})
        arrays.update({p + k: v for k, v in t.report.items()})
        if depth_scale is not None:
            arrays[p + "depth_scale"] = np.float64(depth_scale.get(t.track_id, 1.0))
    return save_npz_atomic(path, arrays)


AMASS_NUM_BETAS = 16
"""AMASS's shape vector length (SMPL+H); metahmr's bodies have 10, the rest are zeros."""
AMASS_NUM_DMPLS = 8
"""AMASS's soft-tissue (DMPL) coefficients per frame; unknown here, so zeros."""
AMASS_POSE_SIZE = 156
"""AMASS's pose vector (SMPL+H): root + 21 body joints + 2 x 15 finger joints, axis-angle."""


def write_amass(path: str | Path, seq: TrackSequence, body: Any, *, fps: float, stride: int, gender: str,
                world: WorldFrame | None = None, body_model: str | None = None) -> Path:
    """One track in AMASS's layout, in the world frame (z up, gravity along -z, the floor at z = 0 when the world
    was estimated; :func:`metahmr_cli.video.world.camera_world` otherwise), one pose per processed frame.

    Keys as AMASS's SMPL+H files and its loading code expect: ``poses`` (F, 156) (root, 21 body joints, then 30
    finger joints: zeros), ``trans`` (F, 3), ``betas`` (16,) (the body's 10, then zeros), ``dmpls`` (F, 8) zeros,
    ``gender``, ``mocap_framerate`` (and ``mocap_frame_rate``, ``mocap_time_length``); ``surface_model_type`` and
    ``body_model`` name the body the numbers belong to (``smpl``, ``open-anny-v1``, ...), ``num_betas`` = 10 the
    meaningful shape values. Beside them: ``poses_smpl`` (F, 72) the full SMPL pose (with SMPL's hand joints 22 and
    23, which SMPL+H's layout has no place for), ``frames`` / ``interpolated`` / ``start_time`` (the first frame's
    time in the video, s), ``track_id`` and ``world_from_camera`` (4, 4).
    """
    world = world if world is not None else camera_world()
    frames, rot, trans, interp = contiguous(seq, stride)
    root, trans_w = to_world(rot[:, 0], trans, rest_root(body, seq.betas), world.rotation, world.translation)
    rot = rot.copy()
    rot[:, 0] = root
    n = len(frames)
    smpl = Rotation.from_matrix(rot.reshape(-1, 3, 3)).as_rotvec().reshape(n, 72)
    poses = np.zeros((n, AMASS_POSE_SIZE))
    poses[:, :66] = smpl[:, :66]  # root + SMPL joints 1..21 = SMPL+H's body joints; 22, 23 (hands) have no slot
    betas = np.zeros(AMASS_NUM_BETAS)
    betas[: len(seq.betas)] = seq.betas
    rate = float(fps) / max(int(stride), 1)
    name = body_model or str(getattr(body, "name", "smpl"))
    arrays = {"poses": poses, "trans": trans_w.astype(np.float64), "betas": betas,
              "dmpls": np.zeros((n, AMASS_NUM_DMPLS)), "gender": np.array(gender),
              "mocap_framerate": np.float64(rate), "mocap_frame_rate": np.float64(rate),
              "mocap_time_length": np.float64(n / rate), "surface_model_type": np.array(name),
              "body_model": np.array(name), "num_betas": np.int64(len(seq.betas)), "poses_smpl": smpl,
              "frames": frames, "interpolated": interp, "start_time": np.float64(frames[0] / float(fps)),
              "track_id": np.int64(seq.track_id), "world_from_camera": world.matrix(),
              "world_source": np.array(world.source)}
    return save_npz_atomic(path, arrays)
