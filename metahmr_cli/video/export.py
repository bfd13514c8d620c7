"""Animation exports of tracks: an animated, skinned glTF binary (GLB) per track, one scene GLB holding every track
and the camera, and a BVH motion file per track.

All are in the video's y-up world (:mod:`metahmr_cli.video.world`: the floor at y = 0 and gravity along -y when it
was estimated from the people's foot contacts; else the camera's axes, x right, y up, z towards the camera), in
metres, one keyframe per processed frame (gaps interpolated, see :func:`metahmr_cli.video.sequences.contiguous`),
**timed as in the video**: a keyframe's time is its frame's time in the source video (``frame / fps``), so tracks
that start later start later, and importing every track plays them in sync.

- **GLB** (built with pygltflib): the track's mesh in its rest pose (its own betas, T-pose) skinned to SMPL's
  24-joint skeleton (node names as in SMPL: ``pelvis``, ``left_hip``, ...), with an animation of one rotation
  channel per joint and the root translation, its first keyframe at the track's first frame's time. SMPL's
  pose-dependent corrective shapes are not part of glTF skinning and are left out.
- **scene GLB**: every track of the video as above in one file and one animation, each track's node scaled to 0
  before its first and after its last frame (step keys), and the video's camera (a perspective camera with the
  video's field of view, at its estimated pose), so that the scene seen through it overlays the video.
- **BVH**: the same skeleton with rest offsets from the track's shape, the root with 6 channels (position and
  ZXY Euler angles in degrees), every other joint with 3 (ZXY), end sites after the head, hands and feet. BVH has
  no start time: the motion starts at the video's first processed frame and holds the track's first pose until the
  track starts (frame k of the file is processed frame k of the video).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pygltflib as g
import torch
from scipy.spatial.transform import Rotation

from metahmr_cli.files import write_bytes_atomic, write_text_atomic
from metahmr_cli.io.meshes import MESH_GREY
from metahmr_cli.video.sequences import TrackSequence, contiguous, to_world
from metahmr_cli.video.world import WorldFrame, camera_world

__all__ = ["SMPL_JOINT_NAMES", "rest_skeleton", "write_bvh", "write_glb_animation", "write_scene_glb"]

SMPL_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle", "right_ankle",
    "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)

OPENCV_TO_GL_CAMERA = np.diag([1.0, -1.0, -1.0])
"""An OpenCV camera's axes (y down, looking along +z) -> a glTF camera's (y up, looking along -z)."""


def rest_skeleton(body: Any, betas: np.ndarray) -> dict[str, np.ndarray]:
    """Rest-pose (T-pose) vertices (V, 3), joints (24, 3), skinning weights (V, 24), parents (24,) and faces of
    the body shaped by ``betas`` (the body's own frame: y up, z forward)."""
    with torch.no_grad():
        rot, _ = body.rest_pose(1)
        b = torch.as_tensor(np.asarray(betas, np.float64)[None], dtype=body.dtype, device=body.device)
        out = body(rot, b)
    parents = body.parents.cpu().numpy().astype(np.int64).copy()
    parents[0] = -1
    return {"vertices": out.vertices[0].cpu().double().numpy(), "joints": out.smpl_joints[0].cpu().double().numpy(),
            "weights": body.smpl.lbs_weights.cpu().double().numpy(), "parents": parents,
            "faces": np.asarray(body.faces, np.int64)}


def _animation(seq: TrackSequence, stride: int, skel: dict[str, np.ndarray], world: WorldFrame | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames (N,), local rotations (N, 24, 3, 3) with the root in the y-up world, root position (N, 3))."""
    frames, rot, trans, _ = contiguous(seq, stride)
    w = (world if world is not None else camera_world()).yup()
    j0 = skel["joints"][0]
    root, trans_w = to_world(rot[:, 0], trans, j0, w.rotation, w.translation)
    rot = rot.copy()
    rot[:, 0] = root
    return frames, rot, trans_w + j0  # the root joint's position: J0 + trans'


# ------------------------------------------------------------------------------------------------------- glTF
def _vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    n = np.zeros_like(v)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return n / np.where(norm > 0, norm, 1.0)


def _top_influences(weights: np.ndarray, sets: int) -> tuple[np.ndarray, np.ndarray]:
    """The 4 * ``sets`` largest skinning weights per vertex (renormalised) and their joints."""
    k = 4 * sets
    idx = np.argsort(-weights, axis=1)[:, :k]
    w = np.take_along_axis(weights, idx, axis=1)
    w = np.where(w > 1e-6, w, 0.0)
    w /= w.sum(axis=1, keepdims=True)
    idx = np.where(w > 0, idx, 0)
    return idx.astype(np.uint16), w.astype(np.float32)


class _GlbBuilder:
    """Accessors, nodes and animation channels of a glTF binary, filled track by track."""

    def __init__(self) -> None:
        self.g = g
        self.blobs: list[bytes] = []
        self.views: list[Any] = []
        self.accessors: list[Any] = []
        self.nodes: list[Any] = []
        self.meshes: list[Any] = []
        self.skins: list[Any] = []
        self.samplers: list[Any] = []
        self.channels: list[Any] = []
        self.cameras: list[Any] = []
        self.roots: list[int] = []
        self.offset = 0

    def add(self, arr: np.ndarray, ctype: int, atype: str, target: int | None = None, minmax: bool = False) -> int:
        data = np.ascontiguousarray(arr).tobytes()
        pad = (-len(data)) % 4
        self.views.append(self.g.BufferView(buffer=0, byteOffset=self.offset, byteLength=len(data), target=target))
        self.blobs.append(data + b"\x00" * pad)
        self.offset += len(data) + pad
        count = arr.shape[0]
        acc = self.g.Accessor(bufferView=len(self.views) - 1, componentType=ctype, count=count, type=atype)
        if minmax:
            flat = arr.reshape(count, -1)
            acc.min = [float(x) for x in flat.min(axis=0)]
            acc.max = [float(x) for x in flat.max(axis=0)]
        self.accessors.append(acc)
        return len(self.accessors) - 1

    def channel(self, times: int, values: np.ndarray, node: int, path: str, atype: str,
                interpolation: str = "LINEAR") -> None:
        g = self.g
        self.samplers.append(g.AnimationSampler(input=times, output=self.add(values.astype(np.float32), g.FLOAT,
                                                                             atype), interpolation=interpolation))
        self.channels.append(g.AnimationChannel(sampler=len(self.samplers) - 1,
                                                target=g.AnimationChannelTarget(node=node, path=path)))

    def add_track(self, seq: TrackSequence, body: Any, *, fps: float, stride: int, world: WorldFrame | None,
                  visibility: bool = False, end_time: float | None = None) -> None:
        """The skinned mesh and the animation of one track; ``visibility``: scale the track's node to 0 outside
        its frames (step keys at 0 s, its first frame's time and just after its last frame)."""
        g = self.g
        skel = rest_skeleton(body, seq.betas)
        frames, rot, root_pos = _animation(seq, stride, skel, world)
        V, J, parents = skel["vertices"].astype(np.float32), skel["joints"], skel["parents"]
        normals = _vertex_normals(skel["vertices"], skel["faces"]).astype(np.float32)
        sets = 2 if int((skel["weights"] > 1e-6).sum(axis=1).max()) > 4 else 1
        joints_idx, weights = _top_influences(skel["weights"], sets)
        times = (frames / float(fps)).astype(np.float32)  # the frames' times in the video
        quats = Rotation.from_matrix(rot.reshape(-1, 3, 3)).as_quat().reshape(len(frames), 24, 4).astype(np.float32)
        # keep consecutive quaternions in the same hemisphere so that linear interpolation takes the short way
        for t in range(1, len(frames)):
            flip = (quats[t] * quats[t - 1]).sum(axis=1) < 0
            quats[t, flip] *= -1
        inv_bind = np.tile(np.eye(4, dtype=np.float32), (24, 1, 1))
        inv_bind[:, :3, 3] = -J
        inv_bind_cols = np.ascontiguousarray(inv_bind.transpose(0, 2, 1))  # glTF matrices are column-major

        attrs = g.Attributes(
            POSITION=self.add(V, g.FLOAT, g.VEC3, g.ARRAY_BUFFER, minmax=True),
            NORMAL=self.add(normals, g.FLOAT, g.VEC3, g.ARRAY_BUFFER),
            JOINTS_0=self.add(joints_idx[:, :4], g.UNSIGNED_SHORT, g.VEC4, g.ARRAY_BUFFER),
            WEIGHTS_0=self.add(weights[:, :4], g.FLOAT, g.VEC4, g.ARRAY_BUFFER),
        )
        if sets == 2:
            attrs.JOINTS_1 = self.add(joints_idx[:, 4:], g.UNSIGNED_SHORT, g.VEC4, g.ARRAY_BUFFER)
            attrs.WEIGHTS_1 = self.add(weights[:, 4:], g.FLOAT, g.VEC4, g.ARRAY_BUFFER)
        indices = self.add(skel["faces"].astype(np.uint32).reshape(-1), g.UNSIGNED_INT, g.SCALAR,
                           g.ELEMENT_ARRAY_BUFFER)
        ibm = self.add(inv_bind_cols.reshape(24, 16), g.FLOAT, g.MAT4)
        t_acc = self.add(times, g.FLOAT, g.SCALAR, minmax=True)

        # the track's nodes: its 24 joints, its mesh and a root node holding both
        base = len(self.nodes)
        for j in range(24):
            local = J[j] - (J[parents[j]] if parents[j] >= 0 else 0.0)
            self.nodes.append(g.Node(name=SMPL_JOINT_NAMES[j], translation=[float(x) for x in local],
                                     rotation=[float(x) for x in quats[0, j]],
                                     children=[base + int(c) for c in np.flatnonzero(parents == j)]))
        self.nodes[base].translation = [float(x) for x in root_pos[0]]
        self.meshes.append(g.Mesh(name=f"track_{seq.track_id}_body", primitives=[
            g.Primitive(attributes=attrs, indices=indices, mode=g.TRIANGLES, material=0)]))
        self.skins.append(g.Skin(name=f"track_{seq.track_id}_skeleton", joints=list(range(base, base + 24)),
                                 skeleton=base, inverseBindMatrices=ibm))
        self.nodes.append(g.Node(name=f"track_{seq.track_id}_mesh", mesh=len(self.meshes) - 1,
                                 skin=len(self.skins) - 1))
        self.nodes.append(g.Node(name=f"track_{seq.track_id}", children=[base, base + 24]))
        self.roots.append(base + 25)
        for j in range(24):
            self.channel(t_acc, quats[:, j], base + j, "rotation", g.VEC4)
        self.channel(t_acc, root_pos, base, "translation", g.VEC3)
        if visibility:
            dt = stride / float(fps)
            keys = [(0.0, 0.0)] if times[0] > 0 else []
            keys += [(float(times[0]), 1.0), (float(times[-1]) + dt, 0.0)]
            if end_time is not None and end_time > keys[-1][0]:
                keys.append((float(end_time), 0.0))
            k_times = self.add(np.array([k[0] for k in keys], np.float32), g.FLOAT, g.SCALAR, minmax=True)
            scale = np.repeat(np.array([k[1] for k in keys], np.float32)[:, None], 3, axis=1)
            # (the node's rest scale stays 1: importers build the skeleton from it, and Blender's divides by it)
            self.channel(k_times, scale, base + 25, "scale", g.VEC3, interpolation="STEP")

    def add_camera(self, K: np.ndarray, image_size: tuple[int, int], world: WorldFrame | None) -> None:
        """The video's camera: a glTF perspective camera (vertical field of view from ``K``, the image's aspect)
        at the camera's pose in the y-up world."""
        g = self.g
        H, W = int(image_size[0]), int(image_size[1])
        w = (world if world is not None else camera_world()).yup()
        yfov = 2.0 * np.arctan(H / 2.0 / float(K[1, 1]))
        self.cameras.append(g.Camera(name="video_camera", type="perspective", perspective=g.Perspective(
            aspectRatio=W / H, yfov=float(yfov), znear=0.01)))
        q = Rotation.from_matrix(w.rotation @ OPENCV_TO_GL_CAMERA).as_quat()
        self.nodes.append(g.Node(name="video_camera", camera=0, rotation=[float(x) for x in q],
                                 translation=[float(x) for x in w.translation]))
        self.roots.append(len(self.nodes) - 1)

    def save(self, path: str | Path, name: str) -> Path:
        g = self.g
        blob = b"".join(self.blobs)
        gltf = g.GLTF2(
            asset=g.Asset(version="2.0", generator="metahmr"),
            scene=0, scenes=[g.Scene(nodes=self.roots)], nodes=self.nodes, meshes=self.meshes,
            materials=[g.Material(name="body", pbrMetallicRoughness=g.PbrMetallicRoughness(
                baseColorFactor=[*MESH_GREY, 1.0], metallicFactor=0.1, roughnessFactor=0.7))],
            skins=self.skins, cameras=self.cameras or None,
            animations=[g.Animation(name=name, samplers=self.samplers, channels=self.channels)],
            accessors=self.accessors, bufferViews=self.views, buffers=[g.Buffer(byteLength=len(blob))],
        )
        gltf.set_binary_blob(blob)
        return write_bytes_atomic(path, b"".join(gltf.save_to_bytes()))


def write_glb_animation(path: str | Path, seq: TrackSequence, body: Any, *, fps: float, stride: int = 1,
                        world: WorldFrame | None = None) -> Path:
    """An animated skinned GLB of one track (see the module docstring): ``fps`` is the source video's frame rate
    (keyframes at ``frame / fps``), ``world`` the video's world frame (None: the camera's axes). Written
    atomically."""
    builder = _GlbBuilder()
    builder.add_track(seq, body, fps=fps, stride=stride, world=world)
    return builder.save(path, f"track_{seq.track_id}")


def write_scene_glb(path: str | Path, tracks: list[TrackSequence], body: Any, *, fps: float, stride: int,
                    K: np.ndarray, image_size: tuple[int, int], world: WorldFrame | None = None) -> Path:
    """Every track of a video and its camera in one animated GLB (see the module docstring). Written atomically."""
    builder = _GlbBuilder()
    end = max((float(t.frames[-1]) / fps for t in tracks), default=0.0) + stride / float(fps)
    for t in tracks:
        builder.add_track(t, body, fps=fps, stride=stride, world=world, visibility=True, end_time=end)
    builder.add_camera(K, image_size, world)
    return builder.save(path, "video")


# -------------------------------------------------------------------------------------------------------- BVH
def write_bvh(path: str | Path, seq: TrackSequence, body: Any, *, fps: float, stride: int = 1,
              world: WorldFrame | None = None) -> Path:
    """A BVH file of one track (see the module docstring): frame k is processed frame k of the video (source frame
    ``k * stride``), the track's first pose held before it starts. Written atomically."""
    skel = rest_skeleton(body, seq.betas)
    frames, rot, root_pos = _animation(seq, stride, skel, world)
    lead = int(frames[0]) // max(int(stride), 1)  # processed frames of the video before the track starts
    if lead:
        rot = np.concatenate([np.repeat(rot[:1], lead, axis=0), rot])
        root_pos = np.concatenate([np.repeat(root_pos[:1], lead, axis=0), root_pos])
        frames = np.concatenate([np.arange(lead) * max(int(stride), 1), frames])
    J, parents = skel["joints"], skel["parents"]
    children = {j: [int(c) for c in np.flatnonzero(parents == j)] for j in range(24)}
    lines = ["HIERARCHY"]
    order: list[int] = []

    def emit(j: int, depth: int) -> None:
        ind = "  " * depth
        off = J[j] - J[parents[j]] if parents[j] >= 0 else np.zeros(3)
        if parents[j] < 0:
            lines.append(f"{ind}ROOT {SMPL_JOINT_NAMES[j]}")
        else:
            lines.append(f"{ind}JOINT {SMPL_JOINT_NAMES[j]}")
        lines.append(f"{ind}{{")
        lines.append(f"{ind}  OFFSET {off[0]:.6f} {off[1]:.6f} {off[2]:.6f}")
        if parents[j] < 0:
            lines.append(f"{ind}  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation")
        else:
            lines.append(f"{ind}  CHANNELS 3 Zrotation Xrotation Yrotation")
        order.append(j)
        if children[j]:
            for c in children[j]:
                emit(c, depth + 1)
        else:  # an end site continuing the bone (or 10 cm up for a root without children)
            bone = J[j] - J[parents[j]] if parents[j] >= 0 else np.array([0.0, 0.1, 0.0])
            end = bone / max(np.linalg.norm(bone), 1e-9) * min(0.1, 0.5 * np.linalg.norm(bone) + 0.02)
            lines.extend([f"{ind}  End Site", f"{ind}  {{",
                          f"{ind}    OFFSET {end[0]:.6f} {end[1]:.6f} {end[2]:.6f}", f"{ind}  }}"])
        lines.append(f"{ind}}}")

    emit(0, 0)
    n = len(frames)
    # intrinsic Z, then X, then Y: R = Rz(a) Rx(b) Ry(c), the order the channels are listed in
    euler = Rotation.from_matrix(rot.reshape(-1, 3, 3)).as_euler("ZXY", degrees=True).reshape(n, 24, 3)
    lines.extend(["MOTION", f"Frames: {n}", f"Frame Time: {max(int(stride), 1) / float(fps):.8f}"])
    for t in range(n):
        vals = [f"{x:.6f}" for x in root_pos[t]]
        for j in order:
            vals += [f"{x:.4f}" for x in euler[t, j]]
        lines.append(" ".join(vals))
    return write_text_atomic(path, "\n".join(lines) + "\n")
