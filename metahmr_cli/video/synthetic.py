"""A synthetic video with ground truth: two people walking and turning along smooth paths that cross in front of a
fixed camera, rendered by the project's mesh renderer over a textured floor and wall.

Used by ``benchmarks/video.py`` (identity switches, MPJPE and acceleration error of cold-start TTO, warm-start TTO
and warm-start + smoothing) and by the video tests. Everything is a function of the arguments: the same call gives
the same frames.

Ground truth per person and frame: axis-angle ``poses`` (24, 3) with the global orientation in the OpenCV camera
frame, ``betas`` (10,), ``transl`` (3,) (SMPL's translation: vertices = body(poses, betas) + transl), the 49 joints
and the box around the projected vertices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from metahmr_cli.data.poses import CameraView, camera_orientation, gait_params, params_to_axis_angle
from metahmr_cli.geometry.camera import camera_for
from metahmr_cli.geometry.rotation import axis_angle_to_rotmat
from metahmr_cli.render import MeshRenderer, VideoWriter
from metahmr_cli.video.sequences import to_world

__all__ = ["WalkingScene", "make_walking_scene", "render_walking_video", "scene_ground_truth"]

CAMERA_HEIGHT = 1.1
"""Height of the camera above the floor (m) by default; the camera looks horizontally unless pitched."""


@dataclass
class WalkingScene:
    """Ground truth of the synthetic video (P people, T frames)."""

    poses: np.ndarray       # (P, T, 24, 3) axis-angle, global orientation in the camera frame
    betas: np.ndarray       # (P, 10)
    transl: np.ndarray      # (P, T, 3)
    K: np.ndarray           # (3, 3)
    size: tuple[int, int]   # (W, H)
    fps: float
    floor: np.ndarray = field(default_factory=lambda: np.array([0.0, -1.0, 0.0, CAMERA_HEIGHT]))
    """(4,) the floor in the camera frame: unit normal ``n`` (up, against gravity) and ``d``, ``n . x + d = 0`` on
    the floor (``d`` = the camera's height above it)."""
    pitch: float = 0.0
    """Downward pitch of the camera (degrees)."""

    @property
    def num_people(self) -> int:
        return int(self.poses.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.poses.shape[1])


def _path(t: np.ndarray, start: tuple[float, float], heading0: float, turn: float, speed: float,
          duration: float) -> tuple[np.ndarray, np.ndarray]:
    """Ground positions (T, 2) as (x, z) in the camera frame and headings (T,) of a walk whose heading turns
    smoothly from ``heading0`` by ``turn`` (radians) over ``duration`` seconds. Heading 0 walks along +x."""
    heading = heading0 + turn * (0.5 - 0.5 * np.cos(np.pi * np.clip(t / duration, 0, 1)))
    dt = np.diff(t, prepend=t[0])
    step = speed * dt
    xz = np.stack([np.cumsum(step * np.cos(heading)), np.cumsum(step * np.sin(heading))], axis=1)
    return xz + np.asarray(start), heading


def make_walking_scene(body: Any, *, frames: int = 60, fps: float = 30.0, size: tuple[int, int] = (960, 540),
                       seed: int = 0, camera_height: float = CAMERA_HEIGHT, pitch: float = 0.0,
                       feet_on_floor: bool = False) -> WalkingScene:
    """Two people walking across the view in opposite directions, both turning, their paths crossing mid-clip (the
    nearer one occludes the other when they cross).

    Args:
        body: a :class:`~metahmr_cli.body.smpl.BodyModel` (for the leg length, so that the feet touch the floor).
        frames, fps, size: length, frame rate and (W, H) of the video.
        seed: varies the shapes, the walking phases and the paths slightly.
        camera_height: the camera's height above the floor (m).
        pitch: the camera looks down by this many degrees (0: horizontally); the people walk on the floor, whose
            plane in the camera frame is ``WalkingScene.floor``.
        feet_on_floor: lift or lower each person in every frame so that their lowest vertex touches the floor
            exactly (otherwise the pelvis follows a fixed height with a small bob, and the feet of the swinging
            gait dip into the floor or float by a few centimetres).
    """
    rng = np.random.default_rng(seed)
    W, H = size
    K, _ = camera_for(W, H)  # the diagonal rule, as metahmr process assumes for a video
    t = np.arange(frames) / fps
    duration = frames / fps
    speed = 1.3
    betas = np.zeros((2, 10))
    betas[0, :3] = [0.8, 0.3, -0.2]
    betas[1, :3] = [-0.6, -0.4, 0.3]
    betas[:, :3] += rng.normal(0, 0.1, (2, 3))
    # A walks to the right and turns away from the camera; B walks to the left and turns towards it
    half = speed * duration / 2
    starts = [(-half * 0.95, 6.0 + rng.uniform(-0.1, 0.1)), (half * 0.95, 7.4 + rng.uniform(-0.1, 0.1))]
    heading0 = [np.deg2rad(-10.0), np.pi + np.deg2rad(-10.0)]
    turns = [np.deg2rad(35.0), np.deg2rad(-30.0)]
    cadence = 1.8  # steps per second -> 0.9 gait cycles per second
    poses = np.zeros((2, frames, 24, 3))
    transl = np.zeros((2, frames, 3))
    with torch.no_grad():
        rot0, _ = body.rest_pose(2)
        rest = body(rot0, torch.as_tensor(betas, dtype=body.dtype, device=body.device))
        verts = rest.vertices.cpu().double().numpy()
        root = rest.smpl_joints[:, 0].cpu().double().numpy()
    leg = root[:, 1] - verts[:, :, 1].min(axis=1)        # pelvis height above the soles at rest
    for p in range(2):
        xz, heading = _path(t, starts[p], heading0[p], turns[p], speed, duration)
        phase0 = rng.uniform(0, 2 * np.pi)
        for i in range(frames):
            phase = phase0 + 2 * np.pi * cadence / 2 * t[i]
            q = params_to_axis_angle(gait_params(phase, amp_hip=24.0, elbow=(20.0, 22.0), trunk_flex=2.0))
            # walking direction (cos h, sin h) in (x, z) -> body yaw: the body faces +z of its own frame
            yaw = np.rad2deg(np.arctan2(np.cos(heading[i]), -np.sin(heading[i])))
            q[0] = camera_orientation(CameraView(yaw=float(yaw), elevation=0.0, roll=0.0))
            poses[p, i] = q
            bob = 0.02 * np.cos(2 * phase)
            pelvis = np.array([xz[i, 0], camera_height - 0.97 * leg[p] + bob, xz[i, 1]])
            transl[p, i] = pelvis - root[p]
    if feet_on_floor:
        with torch.no_grad():
            rot = axis_angle_to_rotmat(torch.as_tensor(poses.reshape(-1, 24, 3), dtype=body.dtype, device=body.device))
            b = torch.as_tensor(np.repeat(betas, frames, axis=0), dtype=body.dtype, device=body.device)
            v = body(rot, b, torch.as_tensor(transl.reshape(-1, 3), dtype=body.dtype, device=body.device)).vertices
        lowest = v[..., 1].max(dim=1).values.cpu().double().numpy().reshape(2, frames)  # y points down
        transl[..., 1] += camera_height - lowest
    # the scene was laid out for a level camera; a pitched camera sees it turned about its x axis
    R = _pitch_rotation(pitch)
    if pitch:
        for p in range(2):
            rot = Rotation.from_rotvec(poses[p, :, 0]).as_matrix()
            root_rot, transl[p] = to_world(rot, transl[p], root[p], R)
            poses[p, :, 0] = Rotation.from_matrix(root_rot).as_rotvec()
    floor = np.array([*(R @ [0.0, -1.0, 0.0]), camera_height])
    return WalkingScene(poses=poses, betas=betas, transl=transl, K=K, size=(W, H), fps=fps, floor=floor,
                        pitch=float(pitch))


def _pitch_rotation(pitch: float) -> np.ndarray:
    """camera_from_level (3, 3) of a camera looking ``pitch`` degrees down (OpenCV axes: y down, z forward)."""
    a = np.deg2rad(pitch)
    return np.array([[1.0, 0.0, 0.0], [0.0, np.cos(a), -np.sin(a)], [0.0, np.sin(a), np.cos(a)]])


def scene_ground_truth(scene: WalkingScene, body: Any) -> dict[str, np.ndarray]:
    """Vertices (P, T, V, 3), 49 joints (P, T, 49, 3) and boxes (P, T, 4) of the scene (camera frame, metres)."""

    P, T = scene.num_people, scene.num_frames
    with torch.no_grad():
        aa = torch.as_tensor(scene.poses.reshape(P * T, 24, 3), dtype=body.dtype, device=body.device)
        betas = torch.as_tensor(np.repeat(scene.betas, T, axis=0), dtype=body.dtype, device=body.device)
        tr = torch.as_tensor(scene.transl.reshape(P * T, 3), dtype=body.dtype, device=body.device)
        out = body(axis_angle_to_rotmat(aa), betas, tr)
    verts = out.vertices.cpu().double().numpy().reshape(P, T, -1, 3)
    joints = out.joints.cpu().double().numpy().reshape(P, T, -1, 3)
    uv = verts @ scene.K.T
    uv = uv[..., :2] / uv[..., 2:]
    boxes = np.concatenate([uv.min(axis=2), uv.max(axis=2)], axis=-1)
    return {"vertices": verts, "joints": joints, "boxes": boxes}


def _background(scene: WalkingScene) -> np.ndarray:
    """A wall and a tiled floor seen by the scene's camera (uint8 RGB)."""
    W, H = scene.size
    K = scene.K
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    # rays in the level frame of the layout (the camera's rays turned back by its pitch)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)
    rays = rays @ _pitch_rotation(scene.pitch)  # level = R^T cam, row vectors
    ray_x, ray_y = rays[..., 0] / rays[..., 2], rays[..., 1] / rays[..., 2]
    img = np.empty((H, W, 3), np.float64)
    wall = np.array([196, 188, 170.0]) * (0.85 + 0.15 * (v / H))[..., None]
    img[:] = wall
    floor = (ray_y > 1e-3) & (rays[..., 2] > 0)
    depth = float(scene.floor[3]) / np.where(floor, ray_y, 1.0)
    fx, fz = ray_x * depth, depth
    wall_hit = fz > 12.0  # the wall stands 12 m away
    tiles = ((np.floor(fx / 0.8) + np.floor(fz / 0.8)) % 2).astype(np.float64)
    floor_col = np.where(tiles[..., None] > 0, np.array([120, 110, 100.0]), np.array([150, 142, 130.0]))
    mask = floor & ~wall_hit
    img[mask] = floor_col[mask]
    rng = np.random.default_rng(1)
    img += rng.normal(0, 3.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


PERSON_RGB = [(0.25, 0.35, 0.75), (0.75, 0.3, 0.25)]
"""Colours of the two people (RGB in [0, 1])."""


def render_walking_video(scene: WalkingScene, body: Any, path: str | Path) -> Path:
    """Render the scene to an MP4 at ``path`` (written atomically by the project's video writer)."""
    gt = scene_ground_truth(scene, body)
    bg = _background(scene)
    path = Path(path)
    writer = VideoWriter(path, scene.fps)
    try:
        with MeshRenderer(max_side=max(scene.size)) as renderer:
            for i in range(scene.num_frames):
                frame = renderer.render_overlay(bg, gt["vertices"][:, i], body.faces, scene.K, colors=PERSON_RGB)
                writer.write(frame)
    except BaseException:
        writer.abort()
        raise
    out = writer.close()
    return out if out is not None else path
