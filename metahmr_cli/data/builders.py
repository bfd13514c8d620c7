"""Data configuration and the builders used by training and evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch.utils.data import Dataset

from .augment import AugmentConfig
from .datasets import HMRDataset
from .mixing import MIX_PRESETS, MixedDataset, parse_mix
from .registry import DatasetsConfig, load_datasets_config

__all__ = ["DataConfig", "build_eval_dataset", "build_train_dataset"]


@dataclass
class DataConfig:
    """Which data to train/evaluate on and how to augment it.

    Attributes:
        datasets_config: datasets TOML/JSON (names -> files); None = $METAHMR_DATASETS_CONFIG,
            $METAHMR_DATA/datasets.toml or the built-in file map with root $METAHMR_DATA.
        train: a mix preset ("wo3dpw" = released default, "w3dpw"), a custom mix
            "h36m=0.5,coco+mpii=0.3,mpi-inf-3dhp=0.2" (a group "a+b" splits its weight by size), or one dataset
            name / npz path.
        augment: augmentation settings (training only).
        seed: base seed of augmentation and mixing draws.
    """

    datasets_config: str | None = None
    train: str = "wo3dpw"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0


def _is_mix(text: str) -> bool:
    return text in MIX_PRESETS or "=" in text


def build_train_dataset(cfg: DataConfig, registry: DatasetsConfig | None = None) -> Dataset:
    """The training dataset: a :class:`MixedDataset` for a mix, else one :class:`HMRDataset` (is_train=True)."""
    reg = registry if registry is not None else load_datasets_config(cfg.datasets_config)
    if not _is_mix(cfg.train):
        return HMRDataset.from_config(cfg.train, reg, is_train=True, augment=cfg.augment, seed=cfg.seed)
    mix = parse_mix(cfg.train)
    names: list[str] = []
    for group in mix:
        names += [m.strip() for m in group.split("+") if m.strip() and m.strip() not in names]
    sets = {n: HMRDataset.from_config(n, reg, is_train=True, augment=cfg.augment, seed=cfg.seed) for n in names}
    return MixedDataset(sets, mix, seed=cfg.seed)


def build_eval_dataset(name_or_path: str, cfg: DataConfig | None = None,
                       registry: DatasetsConfig | None = None) -> HMRDataset:
    """A test-time dataset (no augmentation) by name or npz path."""
    cfg = cfg if cfg is not None else DataConfig()
    reg = registry if registry is not None else load_datasets_config(cfg.datasets_config)
    return HMRDataset.from_config(name_or_path, reg, is_train=False, seed=cfg.seed)
