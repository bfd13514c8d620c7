"""Mixing several training datasets at fixed ratios (the released ``MixedDataset`` logic).

For item ``i`` one dataset is chosen by a uniform draw against the cumulative ratios; the sample is
``dataset[i % len(dataset)]``. The epoch length is the largest dataset's length. The draw comes from a generator
seeded with (seed, epoch, i), so it is reproducible across workers and resumed runs.

Ratios are written as ``{"h36m": 0.5, "coco+mpii": 0.3, "mpi-inf-3dhp": 0.2}``: a group "a+b" shares its
weight between its members in proportion to their sizes (the released in-the-wild split).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ..errors import ConfigError
from .augment import item_rng

__all__ = ["MIX_PRESETS", "MixedDataset", "parse_mix", "resolve_partition"]

MIX_PRESETS: dict[str, dict[str, float]] = {
    "wo3dpw": {"h36m": 0.5, "coco+mpii": 0.3, "mpi-inf-3dhp": 0.2},
    "w3dpw": {"h36m": 0.4, "coco+mpii": 0.3, "mpi-inf-3dhp": 0.1, "3dpw": 0.2},
}
"""Released ratios: ``wo3dpw`` (Meta-HMR's default, MixedDataset_wo3dpw) and ``w3dpw`` (MixedDataset)."""

_MIX_STREAM = 7


def parse_mix(text: str | Mapping[str, float]) -> dict[str, float]:
    """Parse a mix: a preset name ("wo3dpw", "w3dpw"), "h36m=0.5,coco+mpii=0.3,..." or a mapping.

    Raises:
        ConfigError: bad syntax, negative or all-zero weights.
    """
    if isinstance(text, Mapping):
        mix = {str(k): float(v) for k, v in text.items()}
    elif text in MIX_PRESETS:
        mix = dict(MIX_PRESETS[text])
    else:
        mix = {}
        for part in str(text).split(","):
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                raise ConfigError(
                    f"mix entry '{part}' must be NAME=WEIGHT (e.g. 'h36m=0.5,coco+mpii=0.3,mpi-inf-3dhp=0.2') "
                    f"or a preset: {', '.join(MIX_PRESETS)}."
                )
            k, v = part.split("=", 1)
            try:
                mix[k.strip()] = float(v)
            except ValueError as exc:
                raise ConfigError(f"mix weight of '{k.strip()}' is not a number: '{v}'.") from exc
    if not mix or any(v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
        raise ConfigError(f"mix {mix} needs non-negative weights with a positive sum.")
    return mix


def resolve_partition(mix: Mapping[str, float], lengths: Mapping[str, int]) -> dict[str, float]:
    """Per-dataset probabilities from group weights and dataset sizes (normalised to sum 1).

    Args:
        mix: group -> weight; a group "a+b" splits its weight by the sizes of a and b.
        lengths: dataset name -> number of samples.
    Returns:
        dataset name -> probability, in the order of first appearance.
    """
    probs: dict[str, float] = {}
    for group, weight in mix.items():
        members = [m.strip() for m in group.split("+") if m.strip()]
        missing = [m for m in members if m not in lengths]
        if missing:
            raise ConfigError(f"mix group '{group}' names dataset(s) {missing} that are not loaded.")
        total = sum(lengths[m] for m in members)
        for m in members:
            share = weight * (lengths[m] / total if total > 0 else 1.0 / len(members))
            probs[m] = probs.get(m, 0.0) + share
    s = sum(probs.values())
    return {k: v / s for k, v in probs.items()}


class MixedDataset(Dataset):
    """Datasets drawn per item at fixed ratios.

    Args:
        datasets: name -> dataset (any map-style dataset; HMRDataset in training).
        mix: group weights (see :func:`parse_mix`), a preset name, or None for proportional-to-size.
        seed: base seed of the per-item draw.
        length: epoch length; default = the largest dataset's length.
    """

    def __init__(
        self,
        datasets: Mapping[str, Dataset] | Sequence[tuple[str, Dataset]],
        mix: str | Mapping[str, float] | None = "wo3dpw",
        *,
        seed: int = 0,
        length: int | None = None,
    ) -> None:
        items = list(datasets.items()) if isinstance(datasets, Mapping) else list(datasets)
        if not items:
            raise ConfigError("MixedDataset needs at least one dataset.")
        self.names = [n for n, _ in items]
        self.datasets = [d for _, d in items]
        lengths = {n: len(d) for n, d in items}
        empty = [n for n, ln in lengths.items() if ln == 0]
        if empty:
            raise ConfigError(f"dataset(s) {empty} are empty and cannot be mixed.")
        mix_d = {n: float(ln) for n, ln in lengths.items()} if mix is None else parse_mix(mix)
        probs = resolve_partition(mix_d, lengths)
        unused = [n for n in self.names if n not in probs]
        if unused:
            raise ConfigError(f"dataset(s) {unused} are loaded but have no weight in the mix {mix_d}.")
        self.probs = np.array([probs[n] for n in self.names], dtype=np.float64)
        self.partition = np.cumsum(self.probs)
        self.partition[-1] = 1.0
        self.seed = int(seed)
        self.epoch = 0
        self.length = int(length) if length is not None else max(lengths.values())

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Select the draws of ``epoch`` and forward it to the member datasets."""
        self.epoch = int(epoch)
        for d in self.datasets:
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)

    def choose(self, index: int) -> tuple[int, int]:
        """(dataset number, sample index) of mixed item ``index``."""
        p = item_rng(self.seed, self.epoch, int(index), stream=_MIX_STREAM).random()
        k = int(np.searchsorted(self.partition, p, side="left"))
        k = min(k, len(self.datasets) - 1)
        return k, int(index) % len(self.datasets[k])

    def __getitem__(self, index: int) -> Any:
        if not 0 <= int(index) < self.length:
            raise IndexError(f"index {index} out of range for a mixed dataset of length {self.length}")
        k, j = self.choose(index)
        return self.datasets[k][j]
