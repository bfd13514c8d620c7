"""What the body builders share: the SMPL-format arrays of a generated body, landmark and pose helpers, file writes.

The stand-in (:mod:`.standin`) and the open body (:mod:`.open_body`) are written in the same layout
(:mod:`metahmr_cli.body.layout`): :func:`model_arrays` makes the arrays of their model files, :data:`EXTRA_TAGS`
and :data:`H36M_TAGS` name the rows of their extra and H36M regressors, :func:`nearest` and
:func:`ordered_vertex_ids` pick and order their landmark vertices, :func:`rot6d` writes their mean pose in the
networks' 6D layout, and :func:`write_atomic` writes every file through the project's atomic writer
(:func:`metahmr_cli.files.atomic_path`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from metahmr_cli.body.joints import SMPL_PARENTS, VERTEX_ID_NAMES
from metahmr_cli.body.layout import NUM_POSE_BASIS
from metahmr_cli.constants import NUM_SMPL_JOINTS
from metahmr_cli.files import atomic_path

EXTRA_TAGS = [
    "extra:rhip",
    "extra:lhip",
    "extra:neck",
    "extra:headtop",
    "extra:pelvis",
    "extra:thorax",
    "extra:spine",
    "extra:jaw",
    "extra:head",
]
"""Landmarks regressed into the 9 rows of ``J_regressor_extra`` (order of ``joints.EXTRA_JOINT_NAMES``)."""

H36M_TAGS = [
    "h36m:pelvis",
    "joint:1",
    "joint:4",
    "joint:7",
    "joint:2",
    "joint:5",
    "joint:8",
    "extra:spine",
    "h36m:thorax",
    "extra:jaw",
    "h36m:head",
    "joint:16",
    "joint:18",
    "joint:20",
    "joint:17",
    "joint:19",
    "joint:21",
]
"""Landmarks regressed into the 17 rows of ``J_regressor_h36m`` (rows 1-3 left leg, 4-6 right leg, so that
``joints.H36M_TO_J17`` fills the "Right ..." slots with the right side)."""


def model_arrays(
    *,
    v_template: np.ndarray,
    shapedirs: np.ndarray,
    J_regressor: np.ndarray,
    weights: np.ndarray,
    faces: np.ndarray,
    body_name: str,
    vertex_ids: Mapping[str, int],
    **extra: np.ndarray,
) -> dict[str, np.ndarray]:
    """Arrays of a generated body's model file: SMPL's keys (float32, zero ``posedirs``: no pose correctives, SMPL's
    kinematic tree), the body name, the vertex ids as names and values, then ``extra`` arrays as given."""
    v = v_template.shape[0]
    names = list(vertex_ids)
    return {
        "v_template": v_template.astype(np.float32),
        "shapedirs": shapedirs.astype(np.float32),
        "posedirs": np.zeros((v, 3, NUM_POSE_BASIS), dtype=np.float32),
        "J_regressor": J_regressor.astype(np.float32),
        "weights": weights.astype(np.float32),
        "kintree_table": np.stack(
            [np.asarray(SMPL_PARENTS, dtype=np.int64), np.arange(NUM_SMPL_JOINTS, dtype=np.int64)]
        ),
        "f": faces.astype(np.int32),
        "body_name": np.asarray(body_name),
        "vertex_id_names": np.asarray(names),
        "vertex_id_values": np.asarray([vertex_ids[n] for n in names], dtype=np.int64),
        **extra,
    }


def nearest(points: np.ndarray, target: np.ndarray) -> int:
    """Index of the point (row of ``points``) nearest to ``target``."""
    return int(np.argmin(np.linalg.norm(points - target, axis=1)))


def ordered_vertex_ids(ids: Mapping[str, int]) -> dict[str, int]:
    """The landmark vertices in the order of :data:`metahmr_cli.body.joints.VERTEX_ID_NAMES` (every one needed)."""
    return {name: ids[name] for name in VERTEX_ID_NAMES}


def rot6d(rotmats: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 6): the first two columns as a row-major 3x2 matrix (the networks' layout)."""
    return rotmats[..., :, :2].reshape(*rotmats.shape[:-2], 6)


def write_atomic(path: Path, writer: Callable[[Any], None], *, mode: int | None = None) -> Path:
    """Call ``writer`` on a binary file handle of a temporary file that replaces ``path`` when it returns (then set
    the file's permission bits to ``mode`` when given)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        writer(fh)
    if mode is not None:
        os.chmod(path, mode)
    return path
