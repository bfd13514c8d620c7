"""Multi-process training: process launch, process-group set-up and the global-order batch sampler.

``metahmr train --nproc-per-node N`` starts N worker processes on this machine (like ``torchrun``: each gets
RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT in its environment). Runs started by ``torchrun``
itself are recognised from those variables. CUDA workers use NCCL (one GPU each), CPU workers gloo.

Data order: one global permutation per epoch, a function of (seed, epoch) only. Global batch k is
``perm[k·W·b : (k+1)·W·b]`` and rank r takes its r-th slice of b samples, so the W ranks see disjoint shards
of the same global order and W processes × batch b train on exactly the samples of 1 process × batch W·b.
The sampler starts at any batch position, so a resumed run continues without replaying the data.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import Sampler

from ..errors import ConfigError

__all__ = ["DistInfo", "GlobalBatchSampler", "dist_info_from_env", "init_process_group", "launch", "free_port"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: rank in [0, world_size), local_rank on this machine."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_info_from_env() -> DistInfo:
    """Read RANK / LOCAL_RANK / WORLD_SIZE (set by ``launch`` or torchrun); single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return DistInfo(rank=rank, local_rank=local, world_size=world)


def init_process_group(info: DistInfo, device: torch.device) -> None:
    """Join the default process group (NCCL on CUDA, gloo on CPU) when there are several processes."""
    if not info.enabled or (dist.is_available() and dist.is_initialized()):
        return
    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed; run with --nproc-per-node 1.")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    log.info("process group: %s, rank %d of %d", backend, info.rank, info.world_size)


def free_port() -> int:
    """A free TCP port on localhost for the rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(local_rank: int, nproc: int, port: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    os.environ.update({"RANK": str(local_rank), "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(nproc),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    try:
        fn(*args)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def launch(fn: Callable[..., Any], nproc: int, args: tuple[Any, ...] = ()) -> None:
    """Run ``fn(*args)`` in ``nproc`` fresh processes on this machine (spawned, torchrun-style environment).

    Raises:
        ConfigError: nproc < 1. Errors of a worker are re-raised here (with the worker's traceback).
    """
    if nproc < 1:
        raise ConfigError(f"--nproc-per-node must be >= 1, got {nproc}.")
    mp.spawn(_worker, args=(nproc, free_port(), fn, args), nprocs=nproc, join=True)


def epoch_permutation(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The global sample order of an epoch: a permutation of range(n) that depends only on (seed, epoch)."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), 0x5A3D])
    return rng.permutation(n).astype(np.int64)


class GlobalBatchSampler(Sampler[list[int]]):
    """Batches of this rank's shard of one global order (drop_last), starting at a batch position.

    Args:
        n: dataset length. batch_size: samples per rank per step. seed: base seed of the order.
        rank, world_size: this process and the number of processes. shuffle: permute (training) or not.
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True) -> None:
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"bad sampler settings: batch_size={batch_size}, rank={rank}, world={world_size}.")
        self.n = int(n)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.shuffle = bool(shuffle)
        self.epoch = 0
        self.start = 0

    @property
    def batches_per_epoch(self) -> int:
        """Full global batches per epoch (the remainder is dropped)."""
        return self.n // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's order and the first batch position to yield."""
        self.epoch = int(epoch)
        self.start = int(start)

    def global_batch(self, epoch: int, position: int) -> np.ndarray:
        """All W·b sample indices of global batch ``position`` of ``epoch``."""
        g = self.batch_size * self.world_size
        perm = epoch_permutation(self.n, self.seed, epoch, self.shuffle)
        return perm[position * g:(position + 1) * g]

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        g = self.batch_size * self.world_size
        perm = epoch_permutation(self.n, self.seed, self.epoch, self.shuffle)
        for k in range(self.start, self.batches_per_epoch):
            chunk = perm[k * g:(k + 1) * g]
            yield chunk[self.rank * self.batch_size:(self.rank + 1) * self.batch_size].tolist()


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over the processes (identity for one process)."""
    if not info.enabled:
        return values
    out = values.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / info.world_size


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op for one process)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()
