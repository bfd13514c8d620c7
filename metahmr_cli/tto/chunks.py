"""Chunk planning of test-time optimisation: what one chunk of units is, and how many units a chunk holds.

This module owns the records that tie the optimisation of a chunk together: :class:`_Chunk` (the people of G
units and their inputs), :class:`_Execution` (the strategy and settings of each phase of a run),
:class:`ChunkContext` (everything the step loop of one chunk reads, instead of a long parameter list) and
:class:`_ChunkOut` (what a chunk returns, merged with :func:`_merge_outs`). It also owns the decisions made before
the steps run: the strategy of every phase (:func:`resolve_strategies`), which phases run the head alone on
backbone features (:func:`_head_only_phases`), the warm-start weights of a chunk (:func:`_start_weights`) and the
number of units per chunk under the memory budget (:func:`_chunk_plan`, from a probe forward per phase).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metahmr_cli.body.smpl import BodyModel
from metahmr_cli.errors import InputError
from metahmr_cli.geometry.camera import CropInfo
from metahmr_cli.losses import LossTargets
from metahmr_cli.models import Regressor
from metahmr_cli.predictions import Decoded
from metahmr_cli.tto.config import TTOConfig
from metahmr_cli.tto.forward import _encode, _unit_fn, _Units, scope_names
from metahmr_cli.tto.schedules import ResolvedSchedule, resolve_schedule
from metahmr_cli.tto.strategies import (
    REGRESSION_BATCH,
    ChunkPlan,
    Strategy,
    choose_strategy,
    plan_chunk,
    probe_activation_bytes,
)


@dataclass
class _Chunk:
    people: Tensor  # (G·n,) person indices in unit order
    num_units: int
    x: Tensor  # images or features (G·n, ...)
    crop: CropInfo
    keypoints2d: Tensor
    targets: LossTargets | None
    start: dict[str, Tensor] | None = None  # name -> (G, ...) weights to start from (warm start)
    start_mask: Tensor | None = None  # (G,) bool: units that start from ``start`` (the others: the network's)


@dataclass
class _ChunkOut:
    final: Decoded
    steps: Tensor  # (G,)
    converged: Tensor
    reverted: Tensor
    losses: Tensor | None  # (G, width)
    per_iteration: list[Decoded]
    initial: Decoded  # predictions with the start weights (iteration 0)
    weights: dict[str, Tensor] | None = None  # name -> (G, ...) final weights (adapted or warm), when kept


@dataclass(frozen=True)
class _Execution:
    """How one run executes (see :mod:`metahmr_cli.tto.strategies`)."""

    strategies: tuple[Strategy, ...]  # one per phase
    head_only: tuple[bool, ...]  # per phase: only the head runs, on backbone features computed once
    unitwise: bool  # in-place optimiser updates one unit at a time (CPU) instead of stacked ones
    compile: bool  # torch.compile the head-only vmap step

    @property
    def unit_major(self) -> bool:
        """Every phase loops: each unit runs its whole schedule before the next one starts, so only one unit's
        weights and optimiser state exist at a time (as in the deep-copy loop)."""
        return bool(self.strategies) and all(s == "loop" for s in self.strategies)


@dataclass(frozen=True)
class ChunkContext:
    """Everything the optimisation of one chunk reads: the networks, the schedule, how the run executes, what it
    records, and the chunk itself (one context per chunk; a unit-by-unit run makes one per unit)."""

    main: Regressor
    body: BodyModel
    sched: ResolvedSchedule
    execution: _Execution
    camera: str
    features_given: bool  # ``chunk.x`` holds backbone features (every phase runs the head alone), not images
    record_width: int | None  # columns of the per-step loss record (None: losses are not recorded)
    keep_iterations: bool  # keep the predictions of every step (a step callback reads them)
    keep_weights: bool  # return every unit's final live weights
    chunk: _Chunk
    features: Tensor | None = None  # backbone features of the chunk's people computed by the caller


def _unitwise(device: torch.device) -> bool:
    """In-place per-unit optimiser updates (CPU) instead of stacked ones."""
    return device.type == "cpu"


def resolve_strategies(main: Regressor, config: TTOConfig, device: torch.device | str,
                       num_units: int | None = None) -> tuple[Strategy, ...]:
    """The strategy of every phase of ``config``'s schedule on ``device`` for ``num_units`` units (None: many).

    See :func:`metahmr_cli.tto.strategies.choose_strategy`; ``config.strategy`` "vmap" or "loop" forces one.
    With "auto", a single unit (one person, or one group) loops: vmap over one unit only adds overhead.
    """
    sched = resolve_schedule(config)
    if config.strategy == "auto" and num_units is not None and num_units <= 1:
        return ("loop",) * len(sched.phases)
    return tuple(
        choose_strategy(config.strategy, torch.device(device), main, scope_names(main, ph.scope, ph.freeze_norm))
        for ph in sched.phases
    )


def _head_only_phases(main: Regressor, sched: ResolvedSchedule) -> tuple[bool, ...]:
    """Per phase: it adapts head weights only and no earlier phase adapted the backbone, so the backbone has its
    original weights and its features can be computed once (released procedure: the step-0 head update)."""
    out = []
    backbone_adapted = False
    for ph in sched.phases:
        touches_backbone = any(n.startswith("backbone.") for n in scope_names(main, ph.scope, ph.freeze_norm))
        out.append(not touches_backbone and not backbone_adapted)
        backbone_adapted |= touches_backbone
    return tuple(out)


def _start_weights(main: Regressor, start: list[dict[str, Tensor] | None],
                   people: list[int]) -> tuple[dict[str, Tensor] | None, Tensor | None]:
    """Stacked start weights (name -> (G, ...)) and mask (G,) of the given people (None: none of them is warm)."""
    states = [start[p] for p in people]
    given = [w for w in states if w is not None]
    if not given:
        return None, None
    named = dict(main.named_parameters())
    names = sorted(given[0])
    for w in given:
        if sorted(w) != names:
            raise InputError("run_tto: the start states name different weights; give every warm person the weights "
                             "of the same TTO settings.")
    for n in names:
        if n not in named or tuple(given[0][n].shape) != tuple(named[n].shape):
            raise InputError(f"run_tto: start weight {n!r} does not fit the network (a state from another model?).")
    device = named[names[0]].device
    mask = torch.tensor([w is not None for w in states], dtype=torch.bool, device=device)
    stacked = {
        n: torch.stack([(w[n] if w is not None else named[n]).detach().to(device, named[n].dtype) for w in states])
        for n in names
    }
    return stacked, mask


def _chunk_plan(ctx: ChunkContext, num_units: int, people_per_unit: int, budget: int, cap: int | None,
                bf16: bool) -> ChunkPlan:
    """Units per chunk for one bucket of equal-size units (``ctx.chunk``: a chunk holding its first unit)."""
    main, body, sched, execution, first = ctx.main, ctx.body, ctx.sched, ctx.execution, ctx.chunk
    features_given, camera = ctx.features_given, ctx.camera
    named = dict(main.named_parameters())
    adapted: list[str] = []
    for ph in sched.phases:
        adapted += [n for n in scope_names(main, ph.scope, ph.freeze_norm) if n not in adapted]
    weight_bytes = sum(named[n].numel() * named[n].element_size() for n in adapted)
    adam = any(ph.optimizer == "adam" for ph in sched.phases)
    item = first.keypoints2d.element_size()
    # inputs of one unit, and the predictions kept for it (iteration 0, current, final)
    decoded = people_per_unit * (body.num_vertices * 3 + 49 * 3 + 49 * 4 + 24 * 9 + 16) * item
    io_bytes = first.x.numel() * first.x.element_size() + 3 * decoded
    common = dict(num_units=num_units, people_per_unit=people_per_unit, weight_bytes=weight_bytes,
                  unitwise=execution.unitwise, adam=adam, budget=budget, cap_people=cap,
                  unit_major=execution.unit_major, io_bytes=io_bytes)
    plan = plan_chunk(phases=[(s, 0) for s in execution.strategies], **common)  # type: ignore[arg-type]
    if plan.units <= 1:
        return plan
    # activations of one unit, from a probe forward per phase (cached per network and shapes)
    full = _Units.of(first.x, first.crop, first.keypoints2d, first.targets, 1)
    feats = full if features_given else None
    base = {k: v.detach() for k, v in named.items()}
    phases: list[tuple[Strategy, int]] = []
    so_far: set[str] = set()
    for ph, strategy, head_only in zip(sched.phases, execution.strategies, execution.head_only, strict=True):
        names = set(scope_names(main, ph.scope, ph.freeze_norm))
        so_far |= names
        if head_only and feats is None:
            feats = _Units.of(_encode(main, first.x, REGRESSION_BATCH), first.crop, first.keypoints2d,
                              first.targets, 1)
        units = feats if head_only else full
        assert units is not None
        frozen = {k: v for k, v in base.items() if k not in so_far}
        fn = _unit_fn(main, body, frozen, kind=ph.loss, weights=sched.weights, head_only=head_only, camera=camera)
        params = {k: base[k].detach().requires_grad_(k in names) for k in so_far}
        key = (ph.scope, ph.freeze_norm, ph.loss, head_only, camera, tuple(units.x.shape[1:]), units.x.dtype,
               str(units.x.device), id(body), bf16)
        act = probe_activation_bytes(main, key, lambda fn=fn, params=params, units=units: fn(params, *units.unit(0)),
                                     list(base.values()))
        phases.append((strategy, act))
    return plan_chunk(phases=phases, **common)  # type: ignore[arg-type]


def _merge_outs(outs: list[_ChunkOut]) -> _ChunkOut:
    """One chunk result from consecutive ones (per-step records padded with each part's final predictions, as
    :func:`run_tto` does for its chunks)."""
    if len(outs) == 1:
        return outs[0]
    length = max(len(o.per_iteration) for o in outs)
    per_iteration = [
        Decoded.cat([o.per_iteration[k] if k < len(o.per_iteration) else o.final for o in outs])
        for k in range(length)
    ]
    losses = None if outs[0].losses is None else torch.cat([o.losses for o in outs])  # type: ignore[misc]
    return _ChunkOut(
        final=Decoded.cat([o.final for o in outs]),
        steps=torch.cat([o.steps for o in outs]),
        converged=torch.cat([o.converged for o in outs]),
        reverted=torch.cat([o.reverted for o in outs]),
        losses=losses,
        per_iteration=per_iteration,
        initial=Decoded.cat([o.initial for o in outs]),
        weights=None if outs[0].weights is None else {
            k: torch.cat([o.weights[k] for o in outs]) for k in outs[0].weights  # type: ignore[index]
        },
    )
