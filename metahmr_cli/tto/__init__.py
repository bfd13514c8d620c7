"""Test-time optimisation: one functional, batched engine for ``process``, training and ``eval``."""

from metahmr_cli.tto.config import InnerLoop, TTOConfig, TTOInputs, TTOResult
from metahmr_cli.tto.eft import eft_loss
from metahmr_cli.tto.engine import (
    batched_forward,
    inner_update,
    reprojection_error,
    run_tto,
    unit_objective,
    usable_keypoints,
)
from metahmr_cli.tto.optim import BatchedAdam, BatchedSGD
from metahmr_cli.tto.schedules import Phase, ResolvedSchedule, inner_phase, resolve_schedule

__all__ = [
    "BatchedAdam",
    "BatchedSGD",
    "InnerLoop",
    "Phase",
    "ResolvedSchedule",
    "TTOConfig",
    "TTOInputs",
    "TTOResult",
    "batched_forward",
    "eft_loss",
    "inner_phase",
    "inner_update",
    "reprojection_error",
    "resolve_schedule",
    "run_tto",
    "unit_objective",
    "usable_keypoints",
]
