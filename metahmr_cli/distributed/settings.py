"""Settings of ``metahmr process --backend ray`` (part of :class:`~metahmr_cli.process_config.ProcessConfig`, so a
``--config`` file may set them as ``backend = "ray"`` and a ``[ray]`` table). Importing this module imports no Ray."""

from __future__ import annotations

import re
from dataclasses import dataclass

from metahmr_cli.errors import ConfigError

__all__ = ["BACKENDS", "RaySettings"]

BACKENDS: tuple[str, ...] = ("local", "ray")
"""``--backend`` values: one process on this machine (default), or Ray Data workers on a Ray cluster."""

_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:]+\]|[^\s:/\[\]]+):(\d{1,5})$")


@dataclass
class RaySettings:
    """How ``--backend ray`` spreads the inputs over Ray workers (:mod:`metahmr_cli.distributed.ray_backend`).

    Attributes:
        address: None: start a local Ray instance sized to this machine (every CPU and GPU); ``"auto"``: the
            cluster this machine joined with ``ray start``; ``"HOST:PORT"``: the cluster whose head is there.
        workers: Ray actors, each loading the models once (None: as many as the cluster's GPUs allow with
            ``gpus_per_worker``, else its CPUs with ``cpus_per_worker``).
        gpus_per_worker: GPUs per worker (None: 1 when the cluster has GPUs and ``device`` is not cpu, else 0;
            a fraction lets workers share a GPU).
        cpus_per_worker: CPUs reserved per worker.
        max_retries: how often a unit of work is retried after its worker died (killed, out of memory, crashed),
            each time on a restarted worker; its inputs are then recorded as failed.
        images_per_unit: images per unit of work (None: the network batch size, fewer when there are too few
            images to give every worker some). A video is always one unit.
    """

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: float = 1.0
    max_retries: int = 3
    images_per_unit: int | None = None

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the bad setting and what is allowed."""
        if self.address is not None and self.address != "auto" and not _HOST_PORT.match(self.address):
            raise ConfigError(f"--ray-address {self.address!r}: give auto or HOST:PORT of the Ray head "
                              "(e.g. 10.0.0.1:6379), or leave it out to start Ray on this machine.")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.workers}.")
        if self.gpus_per_worker is not None and not self.gpus_per_worker >= 0:
            raise ConfigError(f"--gpus-per-worker must be >= 0, got {self.gpus_per_worker}.")
        if not self.cpus_per_worker > 0:
            raise ConfigError(f"--cpus-per-worker must be > 0, got {self.cpus_per_worker}.")
        if self.max_retries < 0:
            raise ConfigError(f"ray.max_retries must be >= 0, got {self.max_retries}.")
        if self.images_per_unit is not None and self.images_per_unit < 1:
            raise ConfigError(f"ray.images_per_unit must be >= 1, got {self.images_per_unit}.")
