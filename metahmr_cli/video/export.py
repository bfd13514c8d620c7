"""Animation exports of a track: an animated, skinned glTF binary (GLB) and a BVH motion file.

Both are in a y-up world derived from the video's camera (x right, y up, z towards the camera; the camera at the
origin looking along -z), in metres, one keyframe per processed frame (gaps interpolated, see
:func:`metahmr_cli.video.sequences.contiguous`).

- **GLB** (built with pygltflib): the track's mesh in its rest pose (its own betas, T-pose) skinned to SMPL's
  24-joint skeleton (node names as in SMPL: ``pelvis``, ``left_hip``, ...), with an animation of one rotation
  channel per joint and the root translation. SMPL's pose-dependent corrective shapes are not part of glTF
  skinning and are left out. Opens in Blender, three.js, Unity and any glTF viewer.
- **BVH**: the same skeleton with rest offsets from the track's shape, the root with 6 channels (position and
  ZXY Euler angles in degrees), every other joint with 3 (ZXY), end sites after the head, hands and feet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from metahmr_cli.video.sequences import Y_UP, TrackSequence, contiguous, to_world

__all__ = ["SMPL_JOINT_NAMES", "rest_skeleton", "write_bvh", "write_glb_animation"]

SMPL_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle", "right_ankle",
    "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)


def rest_skeleton(body: Any, betas: np.ndarray) -> dict[str, np.ndarray]:
    """Rest-pose (T-pose) vertices (V, 3), joints (24, 3), skinning weights (V, 24), parents (24,) and faces of
    the body shaped by ``betas`` (the body's own frame: y up, z forward)."""
    import torch

    with torch.no_grad():
        rot, _ = body.rest_pose(1)
        b = torch.as_tensor(np.asarray(betas, np.float64)[None], dtype=body.dtype, device=body.device)
        out = body(rot, b)
    parents = body.parents.cpu().numpy().astype(np.int64).copy()
    parents[0] = -1
    return {"vertices": out.vertices[0].cpu().double().numpy(), "joints": out.smpl_joints[0].cpu().double().numpy(),
            "weights": body.smpl.lbs_weights.cpu().double().numpy(), "parents": parents,
            "faces": np.asarray(body.faces, np.int64)}


def _animation(seq: TrackSequence, body: Any, stride: int, skel: dict[str, np.ndarray]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames (N,), local rotations (N, 24, 3, 3) with the root in the y-up world, root position (N, 3))."""
    frames, rot, trans, _ = contiguous(seq, stride)
    j0 = skel["joints"][0]
    root, trans_w = to_world(rot[:, 0], trans, j0, Y_UP)
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


def write_glb_animation(path: str | Path, seq: TrackSequence, body: Any, *, fps: float, stride: int = 1) -> Path:
    """An animated skinned GLB of one track (see the module docstring). Written atomically."""
    import pygltflib as g
    from scipy.spatial.transform import Rotation

    from metahmr_cli.io.writers import write_bytes_atomic

    skel = rest_skeleton(body, seq.betas)
    frames, rot, root_pos = _animation(seq, body, stride, skel)
    V, J, parents = skel["vertices"].astype(np.float32), skel["joints"], skel["parents"]
    faces = skel["faces"].astype(np.uint32)
    normals = _vertex_normals(skel["vertices"], skel["faces"]).astype(np.float32)
    sets = 2 if int((skel["weights"] > 1e-6).sum(axis=1).max()) > 4 else 1
    joints_idx, weights = _top_influences(skel["weights"], sets)
    times = ((frames - frames[0]) / float(fps)).astype(np.float32)
    quats = Rotation.from_matrix(rot.reshape(-1, 3, 3)).as_quat().reshape(len(frames), 24, 4).astype(np.float32)
    # keep consecutive quaternions in the same hemisphere so that linear interpolation takes the short way
    for t in range(1, len(frames)):
        flip = (quats[t] * quats[t - 1]).sum(axis=1) < 0
        quats[t, flip] *= -1
    inv_bind = np.tile(np.eye(4, dtype=np.float32), (24, 1, 1))
    inv_bind[:, :3, 3] = -J
    inv_bind_cols = np.ascontiguousarray(inv_bind.transpose(0, 2, 1))  # glTF matrices are column-major

    blobs: list[bytes] = []
    views: list[g.BufferView] = []
    accessors: list[g.Accessor] = []
    offset = 0

    def add(arr: np.ndarray, ctype: int, atype: str, target: int | None = None, minmax: bool = False) -> int:
        nonlocal offset
        data = np.ascontiguousarray(arr).tobytes()
        pad = (-len(data)) % 4
        views.append(g.BufferView(buffer=0, byteOffset=offset, byteLength=len(data), target=target))
        blobs.append(data + b"\x00" * pad)
        offset += len(data) + pad
        count = arr.shape[0]
        acc = g.Accessor(bufferView=len(views) - 1, componentType=ctype, count=count, type=atype)
        if minmax:
            flat = arr.reshape(count, -1)
            acc.min = [float(x) for x in flat.min(axis=0)]
            acc.max = [float(x) for x in flat.max(axis=0)]
        accessors.append(acc)
        return len(accessors) - 1

    attrs = g.Attributes(
        POSITION=add(V, g.FLOAT, g.VEC3, g.ARRAY_BUFFER, minmax=True),
        NORMAL=add(normals, g.FLOAT, g.VEC3, g.ARRAY_BUFFER),
        JOINTS_0=add(joints_idx[:, :4], g.UNSIGNED_SHORT, g.VEC4, g.ARRAY_BUFFER),
        WEIGHTS_0=add(weights[:, :4], g.FLOAT, g.VEC4, g.ARRAY_BUFFER),
    )
    if sets == 2:
        attrs.JOINTS_1 = add(joints_idx[:, 4:], g.UNSIGNED_SHORT, g.VEC4, g.ARRAY_BUFFER)
        attrs.WEIGHTS_1 = add(weights[:, 4:], g.FLOAT, g.VEC4, g.ARRAY_BUFFER)
    indices = add(faces.reshape(-1), g.UNSIGNED_INT, g.SCALAR, g.ELEMENT_ARRAY_BUFFER)
    ibm = add(inv_bind_cols.reshape(24, 16), g.FLOAT, g.MAT4)
    t_acc = add(times, g.FLOAT, g.SCALAR, minmax=True)

    # nodes 0..23: the joints; 24: the mesh; 25: the scene root holding both
    nodes = []
    for j in range(24):
        local = J[j] - (J[parents[j]] if parents[j] >= 0 else 0.0)
        nodes.append(g.Node(name=SMPL_JOINT_NAMES[j], translation=[float(x) for x in local],
                            rotation=[float(x) for x in quats[0, j]],
                            children=[int(c) for c in np.flatnonzero(parents == j)]))
    nodes[0].translation = [float(x) for x in root_pos[0]]
    nodes.append(g.Node(name=f"track_{seq.track_id}_mesh", mesh=0, skin=0))
    nodes.append(g.Node(name=f"track_{seq.track_id}", children=[0, 24]))

    samplers, channels = [], []
    for j in range(24):
        samplers.append(g.AnimationSampler(input=t_acc, output=add(quats[:, j], g.FLOAT, g.VEC4),
                                           interpolation="LINEAR"))
        channels.append(g.AnimationChannel(sampler=len(samplers) - 1,
                                           target=g.AnimationChannelTarget(node=j, path="rotation")))
    samplers.append(g.AnimationSampler(input=t_acc, output=add(root_pos.astype(np.float32), g.FLOAT, g.VEC3),
                                       interpolation="LINEAR"))
    channels.append(g.AnimationChannel(sampler=len(samplers) - 1,
                                       target=g.AnimationChannelTarget(node=0, path="translation")))

    blob = b"".join(blobs)
    gltf = g.GLTF2(
        asset=g.Asset(version="2.0", generator="metahmr"),
        scene=0, scenes=[g.Scene(nodes=[25])], nodes=nodes,
        meshes=[g.Mesh(name="body", primitives=[g.Primitive(attributes=attrs, indices=indices, mode=g.TRIANGLES,
                                                            material=0)])],
        materials=[g.Material(name="body", pbrMetallicRoughness=g.PbrMetallicRoughness(
            baseColorFactor=[0.75, 0.75, 0.8, 1.0], metallicFactor=0.1, roughnessFactor=0.7))],
        skins=[g.Skin(name="smpl_skeleton", joints=list(range(24)), skeleton=0, inverseBindMatrices=ibm)],
        animations=[g.Animation(name=f"track_{seq.track_id}", samplers=samplers, channels=channels)],
        accessors=accessors, bufferViews=views, buffers=[g.Buffer(byteLength=len(blob))],
    )
    gltf.set_binary_blob(blob)
    return write_bytes_atomic(path, b"".join(gltf.save_to_bytes()))


# -------------------------------------------------------------------------------------------------------- BVH
def write_bvh(path: str | Path, seq: TrackSequence, body: Any, *, fps: float, stride: int = 1) -> Path:
    """A BVH file of one track (see the module docstring). Written atomically."""
    from scipy.spatial.transform import Rotation

    from metahmr_cli.io.writers import write_text_atomic

    skel = rest_skeleton(body, seq.betas)
    frames, rot, root_pos = _animation(seq, body, stride, skel)
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
