"""The step loop of test-time optimisation: the G units of one chunk through every phase of the schedule.

This module owns what happens at each step: the forward and gradients of all units at once (:func:`_step_vmap`)
or one unit after another (:func:`_step_loop`), the optimiser update of the units that are still running, the
batched early-stop test (the one host sync of a step), the per-step records, and the final forward with the
fallback of units whose outputs are not finite. A chunk is described by a
:class:`~metahmr_cli.tto.chunks.ChunkContext`; :func:`_optimise_chunk` runs all its units step by step,
:func:`_optimise_unit_by_unit` each unit through its whole schedule (every phase loops).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from metahmr_cli.predictions import Decoded
from metahmr_cli.tto.chunks import ChunkContext, _Chunk, _ChunkOut, _merge_outs
from metahmr_cli.tto.forward import (
    UnitFn,
    _cat_units,
    _encode,
    _flatten_decoded,
    _functional_vmap_step,
    _map_units,
    _take,
    _unit_fn,
    _Units,
    scope_names,
)
from metahmr_cli.tto.optim import UnitwiseOptimizer, make_optimizer, masked_select_update
from metahmr_cli.tto.schedules import LossKind, Phase
from metahmr_cli.tto.strategies import REGRESSION_BATCH, Strategy, compiled_or_eager

log = logging.getLogger(__name__)


def _step_vmap(fn: UnitFn, live: dict[str, Tensor], names: list[str], units: _Units,
               compiled: tuple[Callable[..., Any], dict[str, Tensor]] | None,
               ) -> tuple[Tensor, Tensor, Decoded, dict[str, Tensor | None]]:
    """Losses, predictions and stacked gradients (name -> (G, ...)) of all units at once (``compiled``: the
    compiled functional step and its shared weights)."""
    wanted = set(names)
    if compiled is not None:
        step, frozen = compiled
        p_grad = {k: live[k].detach() for k in names}
        p_rest = {k: v.detach() for k, v in live.items() if k not in wanted}
        grads, total, stop, dec = step(frozen, p_grad, p_rest, *units.args())
        return total.detach(), stop.detach(), _flatten_decoded(dec).detach(), dict(grads)
    leaves = {k: v.detach().requires_grad_(k in wanted) for k, v in live.items()}
    with torch.enable_grad():
        total, stop, dec = _map_units(fn, units.num_units, "error", False, leaves, *units.args())
        grads = torch.autograd.grad(total.sum(), [leaves[k] for k in names], allow_unused=True)
    return total.detach(), stop.detach(), _flatten_decoded(dec).detach(), dict(zip(names, grads, strict=True))


def _step_loop(
    fn: UnitFn,
    live: dict[str, Tensor],
    names: list[str],
    units: _Units,
    run_unit: list[bool],
    grad_unit: list[bool],
    current: list[dict[str, Tensor]] | None,
    update: UnitwiseOptimizer | None,
) -> tuple[Tensor, Tensor, list[dict[str, Tensor]], dict[str, Tensor | None] | None, Tensor | None]:
    """The units one after another, each with its own forward and ``autograd.grad``.

    Units with ``run_unit`` False are not run (their rows of ``current`` are kept); units with ``grad_unit`` False
    only refresh their predictions (no gradient, no update). With ``update`` every unit is updated right after its
    backward (its gradient is then freed); otherwise gradients are stacked for a stacked optimiser.

    Returns:
        (total (G,), stop (G,), per-unit decoded dicts, stacked gradients or None, ok (G,) of the in-place updates
        or None). Entries of units without a gradient are NaN / False.
    """
    g = units.num_units
    wanted = set(names)
    dtype, device = units.keypoints2d.dtype, units.keypoints2d.device
    nan = torch.full((), float("nan"), dtype=dtype, device=device)
    totals, stops, oks = [nan] * g, [nan] * g, [torch.zeros((), dtype=torch.bool, device=device)] * g
    decs = list(current) if current is not None else [None] * g
    stacked: dict[str, list[Tensor]] | None = None if update is not None else {k: [] for k in names}
    for u in range(g):
        if grad_unit[u]:
            leaves = {k: v[u].detach().requires_grad_(k in wanted) for k, v in live.items()}
            with torch.enable_grad():
                total, stop, dec = fn(leaves, *units.unit(u))
                grads = torch.autograd.grad(total, [leaves[k] for k in names], allow_unused=True)
            totals[u], stops[u] = total.detach(), stop.detach()
            decs[u] = {k: v.detach() for k, v in dec.items()}
            if update is not None:
                oks[u] = update.update_unit({k: live[k] for k in names}, u, dict(zip(names, grads, strict=True)),
                                            torch.isfinite(totals[u]))
        else:
            grads = (None,) * len(names)
            if run_unit[u]:
                with torch.no_grad():
                    _, _, dec = fn({k: v[u] for k, v in live.items()}, *units.unit(u))
                decs[u] = dec
        if stacked is not None:
            for k, gr in zip(names, grads, strict=True):
                stacked[k].append(torch.zeros_like(live[k][u]) if gr is None else gr)
    grads_out = None if stacked is None else {k: torch.stack(v) for k, v in stacked.items()}
    ok = torch.stack(oks) if update is not None else None
    return torch.stack(totals), torch.stack(stops), decs, grads_out, ok  # type: ignore[arg-type]


class _Inputs:
    """The units' inputs of one chunk: images (or features) as given, and backbone features for head-only phases
    (computed once, without grad, when first needed)."""

    def __init__(self, ctx: ChunkContext) -> None:
        chunk, g = ctx.chunk, ctx.chunk.num_units
        self.ctx = ctx
        self.full = _Units.of(chunk.x, chunk.crop, chunk.keypoints2d, chunk.targets, g)
        self.feature_units = self.full if ctx.features_given else None
        if ctx.features is not None and not ctx.features_given:
            self.feature_units = _Units.of(ctx.features, chunk.crop, chunk.keypoints2d, chunk.targets, g)

    def of(self, head_only: bool) -> _Units:
        """The units' inputs: backbone features (computed once, without grad) for a head-only phase."""
        if not head_only:
            return self.full
        if self.feature_units is None:
            chunk = self.ctx.chunk
            feats = _encode(self.ctx.main, chunk.x, REGRESSION_BATCH)
            self.feature_units = _Units.of(feats, chunk.crop, chunk.keypoints2d, chunk.targets, chunk.num_units)
        return self.feature_units


@dataclass
class _State:
    """What changes while a chunk is optimised (per unit: (G,) tensors, host lists of G flags)."""

    base: dict[str, Tensor]  # name -> the network's own weights (detached)
    live: dict[str, Tensor]  # name -> (G, ...) weights that are (or were) adapted
    active: Tensor
    host_active: list[bool]  # host copy of ``active``, refreshed by the one sync of each step
    host_stale: list[bool]  # stopped units whose predictions predate their last update (loop strategy)
    steps: Tensor
    converged: Tensor
    reverted: Tensor
    loss_prev: Tensor
    losses: Tensor | None
    per_iteration: list[Decoded] = field(default_factory=list)
    initial: Decoded | None = None
    last: Decoded | None = None
    current: list[dict[str, Tensor]] | None = None  # loop strategy: per-unit predictions at the current weights
    it: int = 0


def _start_state(ctx: ChunkContext) -> _State:
    """The state before the first step: units in ``chunk.start_mask`` start from ``chunk.start``."""
    chunk, record_width = ctx.chunk, ctx.record_width
    g = chunk.num_units
    device = chunk.x.device
    base = {n: p.detach() for n, p in ctx.main.named_parameters()}
    live: dict[str, Tensor] = {}  # name -> (G, ...) weights that are (or were) adapted
    if chunk.start is not None and chunk.start_mask is not None:
        for n, w in chunk.start.items():
            keep = chunk.start_mask.view(g, *[1] * base[n].ndim)
            live[n] = torch.where(keep, w.to(base[n].dtype), base[n].unsqueeze(0))  # own storage
    active = torch.ones(g, dtype=torch.bool, device=device)
    steps = torch.zeros(g, dtype=torch.int64, device=device)
    converged = torch.zeros(g, dtype=torch.bool, device=device)
    reverted = torch.zeros(g, dtype=torch.bool, device=device)
    loss_prev = torch.full((g,), float("nan"), dtype=chunk.keypoints2d.dtype, device=device)
    losses = None
    if record_width is not None:
        losses = torch.full((g, record_width), float("nan"), dtype=chunk.keypoints2d.dtype, device=device)
    return _State(base, live, active, [True] * g, [False] * g, steps, converged, reverted, loss_prev, losses)


def _chunk_unit_fn(ctx: ChunkContext, state: _State, kind: LossKind, head_only: bool) -> UnitFn:
    """The unit computation of the chunk; weights not (yet) adapted come from the network."""
    frozen = {k: v for k, v in state.base.items() if k not in state.live}
    return _unit_fn(ctx.main, ctx.body, frozen, kind=kind, weights=ctx.sched.weights, head_only=head_only,
                    camera=ctx.camera)


def _run_phase(ctx: ChunkContext, state: _State, inputs: _Inputs, p_index: int, phase: Phase) -> None:
    """The steps of one phase (until every unit has stopped)."""
    main, execution, g = ctx.main, ctx.execution, ctx.chunk.num_units
    base, live = state.base, state.live
    strategy = execution.strategies[p_index]
    head_only = execution.head_only[p_index]
    units = inputs.of(head_only)
    names = scope_names(main, phase.scope, phase.freeze_norm)
    for n in names:
        if n not in live:
            w = base[n].unsqueeze(0)
            # the in-place optimiser writes into the stacked weights: they need their own storage
            live[n] = w.repeat(g, *[1] * base[n].ndim) if execution.unitwise else w.expand(g, *base[n].shape)
    fn = _chunk_unit_fn(ctx, state, phase.loss, head_only)
    opt = UnitwiseOptimizer(phase.optimizer, phase.lr) if execution.unitwise else make_optimizer(
        phase.optimizer, phase.lr)
    compiled = None
    if strategy == "vmap" and execution.compile and head_only:  # many small kernels: compiling pays off
        functional_step = _functional_vmap_step(main, ctx.body, kind=phase.loss, weights=ctx.sched.weights,
                                                head_only=True, camera=ctx.camera)
        frozen = {k: v for k, v in base.items() if k not in live}
        key = ("tto-head-step", type(main.backbone).__name__)
        compiled = (compiled_or_eager(key, functional_step, True), frozen)
    for _ in range(phase.steps):
        if not any(state.host_active):
            break
        total, stop_value, grads, ok = _forward_step(ctx, state, strategy, fn, names, units, compiled, opt)
        _update_step(ctx, state, phase, names, opt, total, stop_value, grads, ok)
        state.it += 1


def _forward_step(
    ctx: ChunkContext,
    state: _State,
    strategy: Strategy,
    fn: UnitFn,
    names: list[str],
    units: _Units,
    compiled: tuple[Callable[..., Any], dict[str, Tensor]] | None,
    opt: Any,
) -> tuple[Tensor, Tensor, dict[str, Tensor | None] | None, Tensor | None]:
    """Forward and gradients of one step (in-place updates already made by a unit-wise optimiser: ``ok``).

    Records the step's predictions in ``state`` and returns (total (G,), stop-test value (G,), stacked gradients
    or None, ok (G,) of the in-place updates or None).
    """
    g, device, live = ctx.chunk.num_units, ctx.chunk.x.device, state.live
    ok: Tensor | None = None
    grads: dict[str, Tensor | None] | None
    if strategy == "vmap":
        total, stop_value, dec, grads = _step_vmap(fn, live, names, units, compiled)
        state.current = None
        state.host_stale = [False] * g  # every unit was just run
        if ctx.execution.unitwise:
            oks = []
            for u in range(g):
                if state.host_active[u]:
                    unit_grads = {k: None if v is None else v[u] for k, v in grads.items()}
                    oks.append(opt.update_unit({k: live[k] for k in names}, u, unit_grads,
                                               torch.isfinite(total[u])))
                else:
                    oks.append(torch.zeros((), dtype=torch.bool, device=device))
            ok = torch.stack(oks)
            grads = None
    else:
        last = state.last
        if state.current is None and last is not None:  # after a vmap phase: its last predictions, per unit
            n_per = units.x.shape[1]
            state.current = [{f.name: getattr(last, f.name)[u * n_per : (u + 1) * n_per]
                              for f in dataclasses.fields(last)} for u in range(g)]
        # stopped units are not run again; with a step callback a stopped unit is run once more (no grad)
        # when its last update came after its last forward, so its record shows its final weights
        run_unit = [a or (ctx.keep_iterations and s) for a, s in zip(state.host_active, state.host_stale, strict=True)]
        total, stop_value, decs, grads, ok = _step_loop(
            fn, live, names, units, run_unit, state.host_active, state.current,
            opt if ctx.execution.unitwise else None)
        state.host_stale = [s and not r for s, r in zip(state.host_stale, run_unit, strict=True)]
        state.current = decs
        dec = _cat_units(decs)
    state.last = dec
    if state.initial is None:
        state.initial = dec
    if ctx.keep_iterations:
        state.per_iteration.append(dec)
    return total, stop_value, grads, ok


def _update_step(ctx: ChunkContext, state: _State, phase: Phase, names: list[str], opt: Any, total: Tensor,
                 stop_value: Tensor, grads: dict[str, Tensor | None] | None, ok: Tensor | None) -> None:
    """Record the step's losses, update the units that are still running (a stacked optimiser; a unit-wise one
    has updated them already), and make the batched early-stop test (the one host sync of a step)."""
    sched, g, live, it = ctx.sched, ctx.chunk.num_units, state.live, state.it
    active, losses, loss_prev = state.active, state.losses, state.loss_prev
    with torch.no_grad():
        if losses is not None:
            losses[:, it] = torch.where(active, total, losses[:, it])
        proposal: dict[str, Tensor] = {}
        opt_state: dict[str, Tensor] = {}
        if ok is None:  # stacked optimiser: propose for every unit, keep the proposals of the good ones
            assert grads is not None and not isinstance(opt, UnitwiseOptimizer)
            current_w = {n: live[n] for n in names}
            proposal, opt_state = opt.step(current_w, grads, active)
            ok = torch.isfinite(total)
            for n in names:
                # a NaN/inf anywhere makes the unit's sum non-finite (one reduction instead of two passes)
                ok &= torch.isfinite(proposal[n].reshape(g, -1).sum(dim=1))
        upd = active & ok
        bad = active & ~ok
        if not phase.stop_test:
            conv = torch.zeros_like(upd)
        elif sched.stop_rule == "delta":
            conv = upd & ((loss_prev - total).abs() < sched.tol)
        elif sched.stop_rule == "threshold":
            conv = upd & (stop_value < sched.tol)
        else:
            conv = torch.zeros_like(upd)
        still = active & ~bad & ~conv
        # the one host sync of a step: the batched early-stop test (and what the host needs with it)
        flags = torch.cat([upd.all().reshape(1), bad.any().reshape(1), still, upd & ~still]).tolist()
        everyone, any_bad = bool(flags[0]), bool(flags[1])
        state.host_active = [bool(f) for f in flags[2 : 2 + g]]
        state.host_stale = [s or bool(f) for s, f in zip(state.host_stale, flags[2 + g :], strict=True)]
        if isinstance(opt, UnitwiseOptimizer):
            opt.end_step()
        else:
            for n in names:
                live[n] = proposal[n] if everyone else masked_select_update(upd, proposal[n], live[n])
            opt.commit(opt_state, upd, everyone)
        state.steps += upd.to(torch.int64)
        if any_bad:
            log.warning("TTO: non-finite loss or update for %d unit(s); kept their last finite state",
                        int(bad.sum()))
        state.reverted |= bad
        state.converged |= conv
        state.active = still
        state.loss_prev = torch.where(upd, total, loss_prev)


def _finish(ctx: ChunkContext, state: _State, inputs: _Inputs) -> _ChunkOut:
    """The final forward at the live weights (and its loss in the record), with non-finite units reverted."""
    sched, execution, g = ctx.sched, ctx.execution, ctx.chunk.num_units
    live, losses, steps, record_width = state.live, state.losses, state.steps, ctx.record_width
    with torch.no_grad():
        kind = sched.phases[-1].loss if state.it > 0 or not sched.phases else sched.phases[0].loss
        head_only = execution.head_only[-1] if sched.phases else ctx.features_given
        units = inputs.of(head_only)
        fn = _chunk_unit_fn(ctx, state, kind, head_only)
        if sched.phases and execution.strategies[-1] == "loop":
            outs = [fn({k: v[u] for k, v in live.items()}, *units.unit(u)) for u in range(g)]
            total = torch.stack([o[0] for o in outs])
            final = _cat_units([o[2] for o in outs])
        else:
            total, _, dec_units = _map_units(fn, g, "error", False, live, *units.args())
            final = _flatten_decoded(dec_units)
        if losses is not None and sched.phases:
            fits = steps < record_width
            rows = torch.nonzero(fits).flatten()
            losses[rows, steps[rows]] = total[rows]
    final = final.detach()
    start = state.initial or final
    final, steps, reverted = _keep_finite_outputs(final, start, steps, state.reverted, g)
    kept = {k: v.detach() for k, v in live.items()} if ctx.keep_weights else None
    return _ChunkOut(final, steps, state.converged, reverted, losses, state.per_iteration, start, kept)


def _optimise_chunk(ctx: ChunkContext) -> _ChunkOut:
    """Optimise the G units of one chunk, step by step (``ctx.chunk.x``: images, or features when
    ``ctx.features_given``; ``ctx.features``: backbone features of the chunk's people computed by the caller).

    Units in ``chunk.start_mask`` start from ``chunk.start`` (those weights are live from the first iteration,
    whichever phase adapts them); ``ctx.keep_weights`` returns every unit's final live weights."""
    inputs = _Inputs(ctx)
    state = _start_state(ctx)
    for p_index, phase in enumerate(ctx.sched.phases):
        _run_phase(ctx, state, inputs, p_index, phase)
    return _finish(ctx, state, inputs)


def _optimise_unit_by_unit(ctx: ChunkContext) -> _ChunkOut:
    """The units of a chunk one after another, each through its whole schedule (every phase loops).

    The backbone features of head-only phases are computed once for the chunk, as one batch.
    """
    chunk = ctx.chunk
    g = chunk.num_units
    n = chunk.x.shape[0] // g
    features = None
    if not ctx.features_given and any(ctx.execution.head_only):
        features = _encode(ctx.main, chunk.x, REGRESSION_BATCH)
    outs = []
    for u in range(g):
        sl = slice(u * n, (u + 1) * n)
        targets = None if chunk.targets is None else _take(chunk.targets, sl)
        start = None if chunk.start is None else {k: v[u : u + 1] for k, v in chunk.start.items()}
        mask = None if chunk.start_mask is None else chunk.start_mask[u : u + 1]
        unit = _Chunk(people=chunk.people[sl], num_units=1, x=chunk.x[sl], crop=chunk.crop[sl],
                      keypoints2d=chunk.keypoints2d[sl], targets=targets, start=start, start_mask=mask)
        outs.append(_optimise_chunk(dataclasses.replace(ctx, chunk=unit,
                                                        features=None if features is None else features[sl])))
    return _merge_outs(outs)


def _keep_finite_outputs(final: Decoded, start: Decoded, steps: Tensor, reverted: Tensor,
                         g: int) -> tuple[Decoded, Tensor, Tensor]:
    """Units whose adapted weights give non-finite outputs get the unadapted predictions back.

    Every accepted update has finite weights, but the next forward can still overflow (a diverging fit);
    such a unit is reverted to its predictions before TTO (flagged, 0 steps) so no NaN/inf reaches the caller.

    Args:
        final, start: (G·n,) people in unit order after and before TTO. steps, reverted: (G,).
    """
    p = len(final)
    ok_person = torch.ones(p, dtype=torch.bool, device=steps.device)
    for t in (final.rotmat, final.betas, final.cam_crop, final.transl, final.vertices):
        ok_person &= torch.isfinite(t.reshape(p, -1)).all(dim=1)
    ok_unit = ok_person.reshape(g, -1).all(dim=1)
    if bool(ok_unit.all()):
        return final, steps, reverted
    log.warning("TTO: %d unit(s) diverged to non-finite outputs; kept their predictions before TTO",
                int((~ok_unit).sum()))
    keep = ok_unit.repeat_interleave(p // g)
    merged = {}
    for f in dataclasses.fields(final):
        a, b = getattr(final, f.name), getattr(start, f.name)
        merged[f.name] = torch.where(keep.view(-1, *([1] * (a.dim() - 1))), a, b)
    return Decoded(**merged), torch.where(ok_unit, steps, torch.zeros_like(steps)), reverted | ~ok_unit
