"""metahmr: 3D human mesh recovery with Meta-HMR (dual-network test-time optimisation).

The public API (also importable as ``import metahmr``); names load on first use, so ``import metahmr_cli`` stays
fast for the command line:

- :class:`Estimator` — images in memory (RGB numpy arrays) -> :class:`People` (boxes, keypoints, body parameters,
  vertices, joints, camera, TTO report; :class:`Dropped`: the people found who got no mesh, and why), models
  loaded once;
- :class:`Pipeline` with :class:`ProcessConfig` — the batch runner behind ``metahmr process`` (files, folders,
  videos, resume, manifest, renders);
- :class:`RayRunner` with :class:`RaySettings` — the same runner spread over the workers of a Ray cluster
  (``metahmr process --backend ray``; needs ``metahmr[ray]``);
- :class:`TTOConfig`, :func:`run_tto` — test-time optimisation; :func:`load_body_model`, :func:`load_networks`;
- :func:`read_image`, :func:`load_result_npz` — reading inputs and result files;
- the errors metahmr raises: :class:`MetaHMRError` and its kinds :class:`InputError` (an input that cannot be used:
  image, boxes, keypoints, focal length, a file), :class:`ConfigError` (a setting), :class:`AssetNotFoundError`,
  :class:`CheckpointError`, :class:`BodyModelError`, :class:`DatasetError`.

See ``docs/api.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "Estimator": "metahmr_cli.estimator",
    "People": "metahmr_cli.estimator",
    "Dropped": "metahmr_cli.estimator",
    "Pipeline": "metahmr_cli.pipeline",
    "RayRunner": "metahmr_cli.distributed.ray_backend",
    "RaySettings": "metahmr_cli.distributed.settings",
    "ProcessConfig": "metahmr_cli.process_config",
    "TTOConfig": "metahmr_cli.tto",
    "run_tto": "metahmr_cli.tto",
    "load_body_model": "metahmr_cli.body.smpl",
    "load_networks": "metahmr_cli.models",
    "read_image": "metahmr_cli.io.sources",
    "load_result_npz": "metahmr_cli.io.writers",
    "MetaHMRError": "metahmr_cli.errors",
    "InputError": "metahmr_cli.errors",
    "ConfigError": "metahmr_cli.errors",
    "AssetNotFoundError": "metahmr_cli.errors",
    "CheckpointError": "metahmr_cli.errors",
    "BodyModelError": "metahmr_cli.errors",
    "DatasetError": "metahmr_cli.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'metahmr_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
