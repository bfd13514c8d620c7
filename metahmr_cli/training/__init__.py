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
from .probe import InnerLoopProbe, probe_inner_loop
from .recipes import BUILTIN_RECIPES, find_recipe, load_recipe, recipe_config
from .run_log import CSV_COLUMNS, RunLogger, read_log
from .trainer import (
    Trainer,
    TrainResult,
    build_networks,
    config_for_resume,
    initialise_networks,
    meta_step,
    network_layouts,
    train,
    training_body,
    training_dataset,
)

__all__ = [
    "BUILTIN_RECIPES",
    "CHECKPOINT_FORMAT",
    "CSV_COLUMNS",
    "DistInfo",
    "GlobalBatchSampler",
    "InnerLoopProbe",
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
    "meta_step",
    "network_layouts",
    "prepare_batch",
    "probe_inner_loop",
    "read_log",
    "recipe_config",
    "resolve_resume_path",
    "restore_rng_state",
    "save_training_checkpoint",
    "train",
    "training_body",
    "training_dataset",
    "unique_run_dir",
]
