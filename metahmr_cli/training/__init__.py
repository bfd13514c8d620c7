"""Meta-HMR training: the first-order meta step, the trainer, checkpoints, multi-process runs and recipes."""

from __future__ import annotations

from .checkpointing import (
    CHECKPOINT_FORMAT,
    capture_rng_state,
    load_training_checkpoint,
    resolve_resume_path,
    restore_rng_state,
    save_training_checkpoint,
    unique_run_dir,
)
from .config import TrainConfig
from .distributed import DistInfo, GlobalBatchSampler, epoch_permutation, launch
from .meta_step import MetaStep, MetaStepConfig, TrainBatch, adapt, prepare_batch
from .recipes import BUILTIN_RECIPES, find_recipe, load_recipe, recipe_config
from .run_log import CSV_COLUMNS, RunLogger, read_log
from .trainer import (
    Trainer,
    TrainResult,
    build_networks,
    config_for_resume,
    initialise_networks,
    network_layouts,
    train,
)

__all__ = [
    "BUILTIN_RECIPES",
    "CHECKPOINT_FORMAT",
    "CSV_COLUMNS",
    "DistInfo",
    "GlobalBatchSampler",
    "MetaStep",
    "MetaStepConfig",
    "RunLogger",
    "TrainBatch",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "adapt",
    "build_networks",
    "capture_rng_state",
    "config_for_resume",
    "epoch_permutation",
    "find_recipe",
    "initialise_networks",
    "launch",
    "load_recipe",
    "load_training_checkpoint",
    "network_layouts",
    "prepare_batch",
    "read_log",
    "recipe_config",
    "resolve_resume_path",
    "restore_rng_state",
    "save_training_checkpoint",
    "train",
    "unique_run_dir",
]
