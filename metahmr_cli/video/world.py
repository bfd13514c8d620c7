"""The world of a static camera's video: ground plane and gravity from the people's foot contacts.

Every result of ``process`` is in the camera's axes, so a pitched camera makes people walk up- or downhill and lean
in the animation exports. For a camera that does not move, the floor is one plane for the whole clip, and the
people's feet touch it: at every moment of a walk (or a stand) at least one foot is on the floor. So, per tracked
person and frame, the lowest point of their soles is a *contact candidate*, and a plane fitted to the candidates of
the whole clip is the floor:

1. start from the people's own "up" (the mean vertical axis of their bodies) as the direction of gravity;
2. per person and frame, take the lowest sole vertex along the current up as the contact;
3. fit a plane to the contacts, robustly (Tukey weights, scale from the median absolute residual), with a weak
   prior that keeps the normal near the people's up when the contacts cannot decide (a single person walking a
   straight line leaves the tilt about that line open); repeat from 2. with the new up.

A single image cannot tell a person's size from their distance, so each person's depth is off by a factor of
their own, and their contacts end up above or below the common floor. One plane through everyone's contacts is
the floor (fitting one plane per person was tried: with a few seconds of a few people it let each person's depth
error tilt the floor); :func:`onto_floor` then moves each person, frame by frame, along the camera's rays (where
they are in the image stays) until their lowest sole point is on that floor, and the median factor is recorded
(``depth_scale``).

The fit says how sure it is (:attr:`WorldFrame.quality`): the number of contacts, their spread, the RMS distance
of the contacts to the plane, and the standard deviation of the tilt of the normal (degrees) from the fit's own
covariance; ``level`` summarises it ("high": tilt within 1 degree and contacts within 3 cm, "medium": within 3
degrees, else "low").

The world frame then has **z up** along the floor's normal (gravity along -z, AMASS's convention), the floor at
z = 0, its origin on the floor below the camera, x along the camera's x axis projected onto the floor and y away
from the camera; the glTF/BVH exports use the same frame with y up (``(x, y, z)_gltf = (x, z, -y)_world``). The
camera's pose in that frame (``camera_from_world``, the camera at height ``camera_height``) is part of the outputs,
so an overlay can be reproduced. Without people the frame is the camera's own axes turned z-up (``source`` =
"camera").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from metahmr_cli.constants import NUM_BETAS
from metahmr_cli.geometry.rotation import axis_angle_to_rotmat

__all__ = ["ZUP_TO_YUP", "WorldFrame", "camera_world", "estimate_world", "foot_soles", "onto_floor", "sole_contacts"]

ZUP_TO_YUP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
"""z-up world (AMASS) -> y-up world (glTF, BVH, Blender's glTF import): ``(x, y, z) -> (x, z, -y)``."""

CAMERA_ZUP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
"""Camera frame (OpenCV: x right, y down, z forward) -> z-up axes (x right, y forward, z up), no estimate."""

PRIOR_DEG = 10.0
"""Standard deviation (degrees) of the prior on the floor's normal around the people's mean up direction."""
SOLE_BAND = 0.025
"""Vertices within this height (m) of a foot's lowest point in the rest pose form its sole."""


@dataclass
class WorldFrame:
    """A rigid world frame for a video: ``x_world = rotation @ x_camera + translation`` (z up, floor at z = 0).

    Attributes:
        rotation: (3, 3) world_from_camera.
        translation: (3,) the camera centre in the world (``[0, 0, camera_height]`` for an estimated floor).
        source: "ground" (estimated from foot contacts) or "camera" (the camera's axes, turned z-up).
        quality: how sure the estimate is (see the module docstring).
    """

    rotation: np.ndarray
    translation: np.ndarray
    source: str
    quality: dict[str, Any] = field(default_factory=dict)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) camera-frame points in the world."""
        return np.asarray(points, np.float64) @ self.rotation.T + self.translation

    @property
    def camera_height(self) -> float:
        """Height of the camera above the floor (m); 0 for the camera frame."""
        return float(self.translation[2])

    @property
    def up_in_camera(self) -> np.ndarray:
        """(3,) the world's up (against gravity) in camera coordinates."""
        return self.rotation[2].copy()

    def matrix(self) -> np.ndarray:
        """(4, 4) world_from_camera."""
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = self.rotation, self.translation
        return m

    def yup(self) -> WorldFrame:
        """The same frame in y-up axes (glTF, BVH)."""
        return WorldFrame(ZUP_TO_YUP @ self.rotation, ZUP_TO_YUP @ self.translation, self.source, self.quality)


def camera_world() -> WorldFrame:
    """The camera's own axes turned z-up (what the exports used before the floor was estimated)."""
    return WorldFrame(CAMERA_ZUP.copy(), np.zeros(3), "camera", {"level": "none"})


def foot_soles(body: Any) -> tuple[np.ndarray, np.ndarray]:
    """Vertex indices of the left and right soles: the vertices skinned mostly to the ankle or foot joints (SMPL
    7/10 left, 8/11 right) that lie within :data:`SOLE_BAND` of that foot's lowest point in the rest pose."""
    weights = body.smpl.lbs_weights.detach().cpu().numpy()
    owner = weights.argmax(axis=1)
    with torch.no_grad():
        rot, _ = body.rest_pose(1)
        rest = body(rot, torch.zeros(1, NUM_BETAS, dtype=body.dtype, device=body.device))
    height = rest.vertices[0, :, 1].cpu().double().numpy()  # the body's own frame: y up
    soles = []
    for joints in ((7, 10), (8, 11)):
        foot = np.flatnonzero(np.isin(owner, joints))
        soles.append(foot[height[foot] <= height[foot].min() + SOLE_BAND])
    return soles[0], soles[1]


def sole_contacts(body: Any, poses: np.ndarray, betas: np.ndarray, trans: np.ndarray,
                  soles: tuple[np.ndarray, np.ndarray] | None = None,
                  batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Sole vertices and body up axes of posed bodies, camera frame.

    Args:
        poses: (N, 72) axis-angle; betas: (N, 10) or (10,); trans: (N, 3).
    Returns:
        soles (N, S, 3) (the left then the right sole's vertices), up (N, 3): the rest pose's vertical axis
        turned by the root rotation.
    """
    left, right = soles if soles is not None else foot_soles(body)
    idx = torch.as_tensor(np.concatenate([left, right]), device=body.device)
    n = len(poses)
    betas = np.array(np.broadcast_to(np.asarray(betas, np.float64), (n, np.shape(betas)[-1])))
    out = []
    up = []
    with torch.no_grad():
        for s in range(0, n, batch):
            rot = axis_angle_to_rotmat(torch.as_tensor(np.asarray(poses[s:s + batch]).reshape(-1, 24, 3),
                                                       dtype=body.dtype, device=body.device))
            res = body(rot, torch.as_tensor(betas[s:s + batch], dtype=body.dtype, device=body.device),
                       torch.as_tensor(trans[s:s + batch], dtype=body.dtype, device=body.device))
            out.append(res.vertices[:, idx].cpu().double().numpy())
            up.append(rot[:, 0, :, 1].cpu().double().numpy())  # the body's +y (up) in the camera frame
    return np.concatenate(out), np.concatenate(up)


def _tukey(r: np.ndarray, c: float) -> np.ndarray:
    u = np.clip(np.abs(r) / c, 0.0, 1.0)
    return (1.0 - u**2) ** 2


def estimate_world(soles: np.ndarray, body_up: np.ndarray, groups: np.ndarray | None = None, *,
                   iterations: int = 6, prior_deg: float = PRIOR_DEG) -> WorldFrame:
    """The floor and gravity from the sole vertices of every tracked person and frame (see the module docstring).

    A monocular estimate gets each person's distance from the camera wrong by a factor of its own (their size
    against the focal length), which puts each person's contacts above or below the common floor: ``quality``
    reports each group's (track's) median height (``track_height_m``), and :func:`onto_floor` moves each track
    along the camera's rays onto the floor.

    Args:
        soles: (N, S, 3) sole vertices of N person-frames, camera frame (metres).
        body_up: (N, 3) the people's vertical axes in the camera frame (the prior on gravity).
        groups: (N,) the track of each person-frame (None: one group).
    Returns:
        the :class:`WorldFrame` (``source`` "ground"), or :func:`camera_world` when N = 0.
    """
    soles = np.asarray(soles, np.float64)
    if soles.ndim != 3 or len(soles) == 0:
        return camera_world()
    groups = np.zeros(len(soles), np.int64) if groups is None else np.asarray(groups).reshape(-1)
    keys, inverse = np.unique(groups, return_inverse=True)
    n0 = np.asarray(body_up, np.float64).mean(axis=0)
    n0 /= np.linalg.norm(n0)
    prior = np.eye(3) - np.outer(n0, n0)
    n = n0.copy()
    w = np.ones(len(soles))
    sigma = 0.03
    offsets = np.zeros(len(keys))
    for _ in range(iterations):
        heights = soles @ n                                            # (N, S)
        contact = soles[np.arange(len(soles)), heights.argmin(axis=1)]  # the lowest sole point of each person-frame
        mean = (w[:, None] * contact).sum(0) / w.sum()
        dev = contact - mean
        scatter = (w[:, None, None] * dev[:, :, None] * dev[:, None, :]).sum(0)
        lam = sigma**2 / np.deg2rad(prior_deg) ** 2  # the prior in the units of the scatter (m^2)
        vals, vecs = np.linalg.eigh(scatter + lam * prior)
        n = vecs[:, 0] * (1.0 if vecs[:, 0] @ n0 >= 0 else -1.0)
        d = -float(n @ mean)
        r = contact @ n + d
        mad = float(np.median(np.abs(r - np.median(r))))
        sigma = max(1.4826 * mad, 0.005)
        w = _tukey(r, 4.685 * sigma)
        if w.sum() < 1e-9:
            w = np.ones(len(soles))
    # each track's own floor, relative to the common one (what a monocular depth error of its own does)
    offsets = np.array([float(np.median(r[inverse == k])) for k in range(len(keys))])
    # how sure: the posterior spread of the normal's tilt, the contacts' fit and spread
    t1 = np.cross(n, [1.0, 0.0, 0.0] if abs(n[0]) < 0.9 else [0.0, 0.0, 1.0])
    t1 /= np.linalg.norm(t1)
    t2 = np.cross(n, t1)
    tangent = np.stack([t1, t2], axis=1)
    info = tangent.T @ (scatter + lam * prior) @ tangent
    tilt_std = float(np.rad2deg(np.sqrt(np.linalg.eigvalsh(np.linalg.inv(info)).max()) * sigma))
    inliers = w > 0.5
    rms = float(np.sqrt((w * r**2).sum() / w.sum()))
    spread = np.sqrt(np.clip(np.linalg.eigvalsh(scatter / w.sum()), 0.0, None))[::-1]
    level = "high" if tilt_std <= 1.0 and rms <= 0.03 else "medium" if tilt_std <= 3.0 else "low"
    quality = {"level": level, "contacts": int(inliers.sum()), "person_frames": int(len(soles)),
               "rms_m": rms, "tilt_std_deg": tilt_std, "extent_m": [float(spread[0]), float(spread[1])],
               "prior_angle_deg": float(np.rad2deg(np.arccos(np.clip(n @ n0, -1.0, 1.0)))),
               "track_height_m": {str(int(k)): float(o) for k, o in zip(keys, offsets, strict=True)}}
    # axes: z = up, x = the camera's x on the floor, y = z x x (away from the camera); the origin below the camera
    x = np.array([1.0, 0.0, 0.0]) - n[0] * n
    if np.linalg.norm(x) < 1e-6:  # a camera looking straight down or up
        x = np.array([0.0, 0.0, 1.0]) - n[2] * n
    x /= np.linalg.norm(x)
    y = np.cross(n, x)
    return WorldFrame(np.stack([x, y, n]), np.array([0.0, 0.0, d]), "ground", quality)


def rest_root(body: Any, betas: np.ndarray) -> np.ndarray:
    """(3,) rest position of the root joint for ``betas``."""
    with torch.no_grad():
        rot, _ = body.rest_pose(1)
        b = torch.as_tensor(np.asarray(betas, np.float64)[None], dtype=body.dtype, device=body.device)
        return body(rot, b).smpl_joints[0, 0].cpu().double().numpy()


def onto_floor(track: Any, world: WorldFrame, body: Any) -> tuple[Any, float]:
    """A :class:`~metahmr_cli.video.sequences.TrackSequence` moved along the camera's rays onto the floor.

    Each frame's pelvis ``p`` goes to ``s_t * p`` (the same place in the image; the body's size stays), with the
    scale that puts that frame's lowest sole point on the floor: the contact ``c`` lands at height
    ``s (n . p) + n . (c - p) + d``, zero for ``s_t = -(n . (c - p) + d) / (n . p)`` (limited to [0.5, 2]). This
    takes out the frame-to-frame depth noise of a monocular estimate, and assumes what the floor estimate assumes:
    a foot on the floor in every frame (walking, standing; a jump is flattened onto the floor).

    Returns (the moved track, the median ``s_t``); the track itself and 1 for the camera frame.
    """

    if world.source != "ground" or track.num_frames == 0:
        return track, 1.0
    soles, _ = sole_contacts(body, track.poses, track.betas, track.trans)
    n, d = world.up_in_camera, world.camera_height
    contact = soles[np.arange(len(soles)), (soles @ n).argmin(axis=1)]
    j0 = rest_root(body, track.betas)
    pelvis = track.trans + j0
    along = pelvis @ n
    scale = np.ones(len(pelvis))
    ok = np.abs(along) > 1e-6
    scale[ok] = np.clip(-((contact - pelvis) @ n + d)[ok] / along[ok], 0.5, 2.0)
    return dataclasses.replace(track, trans=scale[:, None] * pelvis - j0), float(np.median(scale))
