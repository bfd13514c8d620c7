"""SPIN/CLIFF-format datasets, augmentation, mixing, checks and the synthetic dataset writer."""

from __future__ import annotations

from ..files import save_npz_atomic
from .augment import AugmentConfig, AugParams, item_rng, sample_augmentation
from .builders import DataConfig, build_eval_dataset, build_train_dataset
from .check import CheckReport, Issue, check_dataset, check_npz
from .datasets import Annotations, HMRDataset, read_rgb
from .mixing import MIX_PRESETS, MixedDataset, parse_mix, resolve_partition
from .npzio import load_npz
from .registry import (
    DEFAULT_DATASETS,
    DatasetEntry,
    DatasetsConfig,
    DatasetSpec,
    load_datasets_config,
    resolve_dataset,
)
from .synth import SynthConfig, SynthResult, write_synth_dataset

__all__ = [
    "DEFAULT_DATASETS",
    "MIX_PRESETS",
    "Annotations",
    "AugParams",
    "AugmentConfig",
    "CheckReport",
    "DataConfig",
    "DatasetEntry",
    "DatasetSpec",
    "DatasetsConfig",
    "HMRDataset",
    "Issue",
    "MixedDataset",
    "SynthConfig",
    "SynthResult",
    "build_eval_dataset",
    "build_train_dataset",
    "check_dataset",
    "check_npz",
    "item_rng",
    "load_datasets_config",
    "load_npz",
    "parse_mix",
    "read_rgb",
    "resolve_dataset",
    "resolve_partition",
    "sample_augmentation",
    "save_npz_atomic",
    "write_synth_dataset",
]
