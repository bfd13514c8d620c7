"""Settings, inputs and results of test-time optimisation (TTO).

Every choice in which the paper and the released code differ is a named setting here; ``None`` means
"the schedule's default" (see :mod:`metahmr_cli.tto.schedules` for the defaults and the reasons for them).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

import torch
from torch import Tensor

from metahmr_cli.config import check_types
from metahmr_cli.errors import ConfigError, InputError
from metahmr_cli.geometry.camera import CropInfo
from metahmr_cli.inner_loop import (  # noqa: F401 (part of the TTO settings' names)
    INNER_LOSSES,
    OPTIMIZERS,
    PAPER_TTO_LR,
    SCOPES,
    InnerLoop,
)
from metahmr_cli.losses import LossWeights
from metahmr_cli.tto.strategies import to_device

ScheduleName = Literal["metahmr", "reference", "paper", "eft", "none"]
ScopeName = Literal["head", "last_stage", "all"]
GroupingName = Literal["person", "batch"]
OptimizerName = Literal["sgd", "adam"]
StrategyName = Literal["auto", "vmap", "loop"]

SCHEDULES: tuple[str, ...] = ("metahmr", "reference", "paper", "eft", "none")
GROUPINGS: tuple[str, ...] = ("person", "batch")
CAMERAS: tuple[str, ...] = ("cliff", "hmr")
STRATEGIES: tuple[str, ...] = ("auto", "vmap", "loop")



@dataclass
class TTOConfig:
    """How to run test-time optimisation.

    Attributes:
        schedule: "metahmr" (the default: the released refinement, one weight copy per person), "reference"
            (the released evaluation exactly: the same with one copy per batch of 20), "paper" (the literal
            Eq. 7/9: L_expl, SGD 1e-5 on the head), "eft" (2D-only exemplar fine-tuning, the baseline) or
            "none" (plain regression). See :mod:`metahmr_cli.tto.schedules`.
        scope: which weights are adapted: "head" (fc1, fc2, decpose, decshape, deccam), "last_stage"
            (last backbone stage + head) or "all". For "metahmr"/"reference" this is the scope of the Adam
            phase (the step-0 SGD update always acts on the head, as in the released code). None = default.
        grouping: "person" (one weight copy per person, the paper) or "batch" (one copy shared by each run
            of ``group_size`` consecutive people with a batch-reduced loss, the released code).
            None = schedule default ("batch" for "reference", else "person").
        group_size: people per shared copy when ``grouping == "batch"`` (released eval: 20).
        optimizer: "sgd" or "adam" (for "metahmr"/"reference": the optimiser of the phase after step 0).
            None = schedule default.
        lr: learning rate of that optimiser. None = schedule default.
        max_steps: the most updates (for "metahmr"/"reference": the most Adam updates after the step-0 SGD
            update). None = schedule default (14 for metahmr/reference/paper, 20 for eft, 0 for none).
        early_stop: stop a person (or group) when the schedule's convergence test passes.
        early_stop_tol: tolerance of that test: |L_prev - L| < tol for metahmr/reference/paper (default 2e-5),
            L_2D < tol for eft (default 2e-4, EFT's test-time option). None = schedule default.
        loss_weights: weights of the loss terms. None = schedule default (:class:`LossWeights` defaults).
        min_keypoints: people with fewer visible keypoints (conf > 0) in the loss slots keep the
            plain regression (``fell_back``). With grouping "batch" the test is made per group (the group's
            total), so a group always holds the same consecutive people, as in the released evaluation.
        strategy: how the units (people or groups) of a chunk run, see :mod:`metahmr_cli.tto.strategies`:
            "vmap" (all at once under ``torch.func.vmap``), "loop" (one after another) or "auto" (per phase: vmap
            on GPUs and when only the head is adapted; loop on CPUs when backbone weights are adapted). Results do
            not depend on it beyond float32 rounding.
        memory_budget: bytes one chunk may use (adapted weights, optimiser state and activations of its units);
            the chunk size follows from it (:func:`metahmr_cli.tto.strategies.plan_chunk`). None = the device
            default (GPU: 60 % of the free memory; CPU: 25 % of the available memory).
        chunk_size: most people optimised at once, a cap on top of the memory budget (None = no cap); also the
            batch of the no-grad regression passes (None = 64). Chunks run one after another.
        tf32: allow TF32 in CUDA matmuls and convolutions during TTO (faster on Ampere and later; results move
            by about 1e-3 relative, see ``tests/test_tto_cuda.py``). Off = full float32 (cuDNN's TF32 is turned
            off too). No effect on CPUs.
        backbone_bf16: run the backbones under bf16 autocast (head, body model and losses stay float32; results
            move by about 1e-2 relative, see ``tests/test_tto_strategies.py``).
        compile: ``torch.compile`` the inner step where it pays off: the head-only step (many small kernels),
            vmap strategy. A compile or run failure falls back to eager execution with a warning. Off by default
            (compiling costs tens of seconds per new shape; on CPUs it does not pay off).
        record_losses: keep the loss of every iteration in :attr:`TTOResult.losses`.
        camera: "cliff" (full-image perspective camera) or "hmr" (crop camera); must fit the network.
        eft_with_hips: schedule "eft" only: keep the GT hip and pelvis keypoints in L_2D (EFT
            ``--eft_withHip2D``); by default they are removed, as in EFT.
        inner_loop: the :class:`InnerLoop` the network was meta-trained with: the first updates of "metahmr" and
            "reference" and every update of "paper" (``optimizer``, ``lr`` and ``scope`` above still override the
            latter). None = the released one; ``process`` and ``eval`` fill it from the checkpoint's record.
    """

    schedule: ScheduleName = "metahmr"
    scope: ScopeName | None = None
    grouping: GroupingName | None = None
    group_size: int = 20
    optimizer: OptimizerName | None = None
    lr: float | None = None
    max_steps: int | None = None
    early_stop: bool = True
    early_stop_tol: float | None = None
    loss_weights: LossWeights | None = None
    min_keypoints: int = 4
    record_losses: bool = False
    camera: Literal["cliff", "hmr"] = "cliff"
    eft_with_hips: bool = False
    strategy: StrategyName = "auto"
    memory_budget: int | None = None
    chunk_size: int | None = None
    tf32: bool = False
    backbone_bf16: bool = False
    compile: bool = False
    inner_loop: InnerLoop | None = None

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the bad field and its valid values."""
        check_types(self, prefix="tto.")
        checks: list[tuple[str, Any, tuple[str, ...], bool]] = [
            ("schedule", self.schedule, SCHEDULES, False),
            ("scope", self.scope, SCOPES, True),
            ("grouping", self.grouping, GROUPINGS, True),
            ("optimizer", self.optimizer, OPTIMIZERS, True),
            ("camera", self.camera, CAMERAS, False),
            ("strategy", self.strategy, STRATEGIES, False),
        ]
        for name, value, valid, nullable in checks:
            if (value is None and not nullable) or (value is not None and value not in valid):
                raise ConfigError(f"tto.{name} = {value!r} is not valid; choose one of {', '.join(valid)}.")
        if self.group_size < 1:
            raise ConfigError(f"tto.group_size must be >= 1, got {self.group_size}.")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ConfigError(f"tto.chunk_size must be >= 1 (or unset), got {self.chunk_size}.")
        if self.memory_budget is not None and self.memory_budget < 1:
            raise ConfigError(f"tto.memory_budget must be a positive number of bytes (or unset), got "
                              f"{self.memory_budget}.")
        if self.max_steps is not None and self.max_steps < 0:
            raise ConfigError(f"tto.max_steps must be >= 0, got {self.max_steps}.")
        if self.lr is not None and not self.lr >= 0:
            raise ConfigError(f"tto.lr must be a non-negative number, got {self.lr}.")
        if self.early_stop_tol is not None and not self.early_stop_tol >= 0:
            raise ConfigError(f"tto.early_stop_tol must be >= 0, got {self.early_stop_tol}.")
        if self.min_keypoints < 0:
            raise ConfigError(f"tto.min_keypoints must be >= 0, got {self.min_keypoints}.")
        if self.inner_loop is not None:
            if not isinstance(self.inner_loop, InnerLoop):
                raise ConfigError("tto.inner_loop must be an InnerLoop (or unset), got "
                                  f"{type(self.inner_loop).__name__}.")
            self.inner_loop.validate("tto.inner_loop")


@dataclass
class TTOInputs:
    """What the engine needs about P people.

    Attributes:
        images: (P, 3, 256, 192) normalised crops, or (P, 49, 3) normalised crop keypoints for a network whose
            backbone reads keypoints (the open model).
        crop: where each crop sits in its full image (P entries).
        keypoints2d: (P, 49, 3) 2D keypoints in normalised crop coordinates + confidence.
        has_smpl: (P,) gates of the pseudo pose/shape/vertex terms (ones when None).
        has_pose_3d: (P,) gates of the pseudo 3D-joint term (ones when None).
    """

    images: Tensor
    crop: CropInfo
    keypoints2d: Tensor
    has_smpl: Tensor | None = None
    has_pose_3d: Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def validated(self) -> TTOInputs:
        """Check shapes and fill the default gates; returns a new :class:`TTOInputs`."""
        imgs, kp = self.images, self.keypoints2d
        if not isinstance(imgs, Tensor) or imgs.ndim < 2:
            raise InputError(
                "TTOInputs.images must be a (P, 3, H, W) tensor of crops (or (P, 49, 3) keypoints for a keypoint "
                f"network), got {getattr(imgs, 'shape', type(imgs))}."
            )
        p = imgs.shape[0]
        if not isinstance(kp, Tensor) or tuple(kp.shape) != (p, 49, 3):
            raise InputError(
                f"TTOInputs.keypoints2d must be a ({p}, 49, 3) tensor (normalised crop coords + conf), "
                f"got {getattr(kp, 'shape', type(kp))}."
            )
        if len(self.crop) != p:
            raise InputError(f"TTOInputs.crop holds {len(self.crop)} people but images hold {p}.")
        gates = {}
        for name in ("has_smpl", "has_pose_3d"):
            g = getattr(self, name)
            if g is None:
                g = torch.ones(p, device=imgs.device, dtype=imgs.dtype)
            elif not isinstance(g, Tensor) or tuple(g.shape) != (p,):
                raise InputError(f"TTOInputs.{name} must be a ({p},) tensor or None, got {getattr(g, 'shape', g)}.")
            gates[name] = g
        return TTOInputs(images=imgs, crop=self.crop, keypoints2d=kp, **gates)

    def to(self, device: torch.device | str) -> TTOInputs:
        """The inputs on ``device``; CPU -> CUDA copies go through pinned memory and do not block the host."""
        device = torch.device(device)

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else to_device(t, device)

        crop = type(self.crop)(**{f.name: move(getattr(self.crop, f.name)) for f in fields(self.crop)})
        return TTOInputs(images=move(self.images), crop=crop, keypoints2d=move(self.keypoints2d),  # type: ignore[arg-type]
                         has_smpl=move(self.has_smpl), has_pose_3d=move(self.has_pose_3d))

    def __getitem__(self, idx: Tensor | slice | list[int]) -> TTOInputs:
        """Select people along P."""
        return TTOInputs(
            images=self.images[idx],
            crop=self.crop[idx],
            keypoints2d=self.keypoints2d[idx],
            has_smpl=None if self.has_smpl is None else self.has_smpl[idx],
            has_pose_3d=None if self.has_pose_3d is None else self.has_pose_3d[idx],
        )


@dataclass
class TTOResult:
    """Per-person outcome of :func:`metahmr_cli.tto.run_tto` (leading axis P, input order).

    Attributes:
        rotmat: (P, 24, 3, 3); betas: (P, 10); cam_crop: (P, 3) weak-perspective crop camera [s, tx, ty].
        transl: (P, 3) full-image camera translation (metres, ``cam_crop_to_full``).
        vertices: (P, V, 3) and joints: (P, 49, 3) in the model frame (no translation).
        steps: (P,) int64 number of parameter updates applied (0 for fallbacks and "none").
        losses: (P, max_steps + 1) float, NaN-padded, or None unless ``record_losses``. Entry k is the
            loss at the parameters after k updates (the loss that drives update k + 1); see
            :func:`metahmr_cli.tto.run_tto` for which loss each schedule records.
        reproj_before / reproj_after: (P,) mean 2D error in full-image pixels over the keypoints with
            conf > 0 in the slots the 2D loss uses (NaN when there are none), before and after TTO ("before":
            at the weights TTO started from, the network's or a warm start's).
        converged: (P,) bool, the early-stopping test passed.
        fell_back: (P,) bool, too few keypoints: plain regression returned.
        reverted: (P,) bool, a non-finite loss or update was met: the last finite state is returned.
        metrics_per_step: the values returned by ``step_callback`` in step order (None without a callback).
        adapted: with ``keep_weights``: per person, the final weights of every adapted tensor (name -> tensor),
            the start of that person's next warm-started run; None for people TTO did not adapt (too few
            keypoints, reverted).
        execution: how the run executed: "strategies" (one per phase), "unitwise" (in-place per-unit optimiser
            updates), "chunks" (units per chunk, per bucket of equal-size units) and "plans" (the memory plans
            behind them, :class:`metahmr_cli.tto.strategies.ChunkPlan` as dicts).
    """

    rotmat: Tensor
    betas: Tensor
    cam_crop: Tensor
    transl: Tensor
    vertices: Tensor
    joints: Tensor
    steps: Tensor
    losses: Tensor | None
    reproj_before: Tensor
    reproj_after: Tensor
    converged: Tensor
    fell_back: Tensor
    reverted: Tensor
    metrics_per_step: list[Any] | None = field(default=None)
    execution: dict[str, Any] | None = field(default=None)
    adapted: list[dict[str, Tensor] | None] | None = field(default=None)

    def __len__(self) -> int:
        return int(self.rotmat.shape[0])
