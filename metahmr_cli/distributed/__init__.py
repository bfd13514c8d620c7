"""``metahmr process`` beyond one process: the same outputs, manifest and resume, with the inputs spread over the
workers of a Ray cluster (:mod:`metahmr_cli.distributed.ray_backend`, needs ``pip install 'metahmr[ray]'``).

Importing this package imports no Ray; :class:`RayRunner` loads it on first use.
"""

from __future__ import annotations

from typing import Any

from metahmr_cli.distributed.settings import BACKENDS, RaySettings

__all__ = ["BACKENDS", "RayRunner", "RaySettings"]


def __getattr__(name: str) -> Any:
    if name == "RayRunner":  # on first use: it imports the pipeline (torch), which imports these settings
        from metahmr_cli.distributed.ray_backend import RayRunner

        return RayRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
