"""``metahmr process`` beyond one process: the same outputs, manifest and resume, with the inputs spread over the
workers of a Ray cluster (:mod:`metahmr_cli.distributed.ray_backend`, needs ``pip install 'metahmr[ray]'``).

Importing this package imports no Ray (nor the runner): the Ray runner is
:class:`metahmr_cli.distributed.ray_backend.RayRunner` (also ``metahmr_cli.RayRunner``).
"""

from __future__ import annotations

from metahmr_cli.distributed.settings import BACKENDS, RaySettings

__all__ = ["BACKENDS", "RaySettings"]

