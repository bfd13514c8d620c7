"""The one test-time optimisation engine (used by ``process``, the training inner loop and ``eval``).

Design:
- The adapted weights are held as stacked tensors, one slice per *unit* (a person, or a group of consecutive
  people sharing one copy): name -> (G, *shape). The network runs with ``torch.func.functional_call`` on these
  weights; the module itself is never copied or changed.
- How the units run is a strategy per phase (:mod:`metahmr_cli.tto.strategies`, chosen automatically per device
  and scope, or set with ``TTOConfig.strategy``): "vmap" runs all units of a chunk at once under
  ``torch.func.vmap`` with one ``torch.autograd.grad`` of the sum of the unit losses (a unit's loss depends only
  on its own slice, so the gradient slice of a unit is exactly the gradient of its own loss); "loop" runs them
  one after another, each with its own ``autograd.grad``. When every phase loops, each unit runs its whole
  schedule before the next starts. Results do not depend on the strategy beyond float32 rounding.
- Optimisers (:mod:`metahmr_cli.tto.optim`) update the stacked tensors with ``torch.optim``'s formulas, all units
  at once (GPU) or in place one unit at a time (CPU); a unit that stopped (converged, failed) keeps its values
  bit for bit. Each step makes one host sync: the batched early-stop test.
- The network runs in eval mode (BatchNorm running statistics, no dropout); the training flags are restored.
  A phase that adapts only the head while the backbone keeps its weights (a head-only scope, or the released
  step-0 update) runs the head alone on backbone features computed once.
- People are processed in chunks whose size follows a memory budget (``TTOConfig.memory_budget``, capped by
  ``chunk_size``), so memory stays bounded.
- Warm starts (video tracks): a person may start from given weights (``run_tto(start=...)``) instead of the
  network's; those weights are live from the first iteration, and ``keep_weights`` returns each person's final
  weights for their next frame (grouping "person" only).
- Inputs on the host are copied to the network's device through pinned memory; TF32 and a bf16 backbone are
  opt-in settings; ``torch.compile`` of the head-only step is optional, with an eager fallback.

Where each part lives: this module holds the public entry points (:func:`run_tto`, :func:`inner_update`, the
keypoint checks) and the assembly of a run's result from its chunks; :mod:`metahmr_cli.tto.forward` the
functional per-unit forward and loss; :mod:`metahmr_cli.tto.chunks` the chunk records and the planning made before
the steps (strategies, head-only phases, units per chunk); :mod:`metahmr_cli.tto.steps` the step loop of a chunk.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from metahmr_cli.body.smpl import BodyModel
from metahmr_cli.errors import ConfigError, InputError
from metahmr_cli.geometry.camera import CropInfo
from metahmr_cli.geometry.crop import apply_affine, denormalize_crop_keypoints
from metahmr_cli.losses import LossTargets, LossWeights, pseudo_targets
from metahmr_cli.models import Regressor
from metahmr_cli.predictions import Decoded
from metahmr_cli.tto.chunks import (
    ChunkContext,
    _Chunk,
    _chunk_plan,
    _ChunkOut,
    _Execution,
    _head_only_phases,
    _start_weights,
    _unitwise,
    resolve_strategies,
)
from metahmr_cli.tto.config import TTOConfig, TTOInputs, TTOResult
from metahmr_cli.tto.forward import (
    _encode,
    _eval_mode,
    _regress,
    _take,
    batched_forward,
    scope_names,
    unit_buckets,
    unit_objective,
)
from metahmr_cli.tto.optim import make_optimizer
from metahmr_cli.tto.schedules import ResolvedSchedule, resolve_schedule
from metahmr_cli.tto.steps import _optimise_chunk, _optimise_unit_by_unit
from metahmr_cli.tto.strategies import (
    REGRESSION_BATCH,
    ChunkPlan,
    backbone_autocast,
    default_memory_budget,
    tf32_mode,
)

__all__ = [
    "StepCallback",
    "batched_forward",
    "inner_update",
    "reprojection_error",
    "resolve_strategies",
    "run_tto",
    "scope_names",
    "unit_buckets",
    "unit_objective",
    "usable_keypoints",
]

log = logging.getLogger(__name__)

StepCallback = Callable[[int, Decoded, Tensor], Any]


# ----------------------------------------------------------------------------------------------------------
# public API


def _keypoint_slot_mask(weights: LossWeights, device: torch.device) -> Tensor:
    """(49,) bool: slots the 2D loss uses (weight > 0)."""
    mask = torch.zeros(49, dtype=torch.bool, device=device)
    if weights.openpose_2d > 0:
        mask[:25] = True
    if weights.gt_2d > 0:
        mask[25:] = True
    return mask


def usable_keypoints(keypoints2d: Tensor, weights: LossWeights) -> Tensor:
    """(P,) int64: each person's keypoints the 2D loss can use, those with a confidence above 0 in the slots it
    reads (weight > 0: the ground-truth slots 25..48 by default). TTO keeps the plain regression of a person (or
    group) with fewer than ``TTOConfig.min_keypoints`` of them, and ``process`` gives such a person no mesh.

    Args:
        keypoints2d: (P, 49, 3) keypoints (any units) + confidence; weights: the loss weights of the schedule.
    """
    slots = _keypoint_slot_mask(weights, keypoints2d.device)
    return ((keypoints2d[..., 2] > 0) & slots[None]).sum(dim=1)


def reprojection_error(keypoints_full: Tensor, keypoints2d: Tensor, crop: CropInfo, slots: Tensor) -> Tensor:
    """Mean 2D distance in full-image pixels over visible keypoints in the given slots.

    Args:
        keypoints_full: (P, 49, 2) predicted keypoints in full-image pixels.
        keypoints2d: (P, 49, 3) targets in normalised crop coordinates + conf.
        crop: the crops (maps crop pixels back to the image); slots: (49,) bool.
    Returns:
        (P,) mean error (NaN where no keypoint is visible).
    """
    full = apply_affine(denormalize_crop_keypoints(keypoints2d), crop.inv_trans())
    vis = (keypoints2d[..., 2] > 0) & slots[None, :]
    dist = (keypoints_full - full).norm(dim=-1)
    dist = torch.where(vis, dist, torch.zeros_like(dist))
    count = vis.sum(dim=1)
    return torch.where(count > 0, dist.sum(dim=1) / count.clamp_min(1), torch.full_like(dist[:, 0], float("nan")))


def run_tto(
    main: Regressor,
    aux: Regressor | None,
    body: BodyModel,
    inputs: TTOInputs,
    config: TTOConfig,
    *,
    step_callback: StepCallback | None = None,
    start: Sequence[dict[str, Tensor] | None] | None = None,
    keep_weights: bool = False,
    schedule: ResolvedSchedule | None = None,
) -> TTOResult:
    """Test-time optimisation of P people (see :mod:`metahmr_cli.tto.schedules` for the schedules).

    Args:
        main: the regressor whose weights are adapted (never modified; run in eval mode).
        aux: the auxiliary regressor giving the pseudo mesh (frozen, eval mode, run once without grad);
            required by "metahmr" and "reference".
        body: body model used to decode predictions (dtype/device of the inputs).
        inputs: P people.
        config: the settings; ``None`` fields take the schedule's defaults.
        step_callback: called as ``step_callback(step, decoded, active)`` for step = 0, 1, ... with the decoded
            predictions of all P people after ``min(step, steps_i)`` updates and ``active`` (P,) bool =
            ``step <= steps_i`` (the person had really taken ``step`` updates). The calls are made in step order
            once every chunk has finished; their return values are collected in ``metrics_per_step``.
        start: per person, the weights to start from instead of the network's (name -> tensor of the parameter's
            shape, e.g. the ``adapted`` weights this person ended the previous video frame with), or None (the
            network's weights). Grouping "person" only. Weights it names are used from the first iteration,
            whichever phase adapts them; the prediction "before" TTO is the one at these weights.
        keep_weights: return every adapted person's final weights in :attr:`TTOResult.adapted` (grouping
            "person" only; one copy of the adapted weights per person).
    Returns:
        :class:`TTOResult`. ``losses[:, k]`` holds the loss at the parameters after k updates: the loss of
        the phase that drives update k + 1 (for "reference": the pseudo loss at k = 0, then the unweighted
        L_2D; for "eft": the whole EFT loss) and, at k = steps, the loss of the final parameters.
    """
    sched = schedule or resolve_schedule(config)
    inputs = inputs.validated()
    p_total = len(inputs)
    if p_total == 0:
        raise InputError("run_tto got no people (P = 0); skip the image instead of calling TTO.")
    if sched.needs_aux and aux is None:
        raise ConfigError(
            f"TTO schedule {sched.name!r} needs the auxiliary network (pseudo mesh); load a Meta-HMR checkpoint "
            "that has 'model_aux', or use schedule 'eft' or 'none'."
        )
    if (start is not None or keep_weights) and sched.phases and sched.grouping != "person":
        raise ConfigError("warm-started TTO (start weights per person) needs grouping 'person'; schedule "
                          f"{sched.name!r} adapts one copy per group of {sched.group_size}.")
    if start is not None:
        if len(start) != p_total:
            raise InputError(f"run_tto got {len(start)} start states for {p_total} people.")
        start = list(start) if any(w is not None for w in start) else None
    net_device = next((p.device for p in main.parameters()), None)
    if net_device is not None and inputs.images.device != net_device:
        inputs = inputs.to(net_device)  # pinned, non-blocking host -> device copies
    device = inputs.images.device
    with tf32_mode(config.tf32, device), backbone_autocast(main, config.backbone_bf16, device), \
            backbone_autocast(aux, config.backbone_bf16, device):
        return _run_tto(main, aux, body, inputs, config, sched, step_callback, start, keep_weights)


def _run_tto(
    main: Regressor,
    aux: Regressor | None,
    body: BodyModel,
    inputs: TTOInputs,
    config: TTOConfig,
    sched: ResolvedSchedule,
    step_callback: StepCallback | None,
    warm_start: list[dict[str, Tensor] | None] | None = None,
    keep_weights: bool = False,
) -> TTOResult:
    p_total = len(inputs)
    device = inputs.images.device
    camera = config.camera
    reg_batch = config.chunk_size or REGRESSION_BATCH
    slots = _keypoint_slot_mask(sched.weights, device)
    width = sched.max_iterations if config.record_losses else None

    n_group = sched.group_size if sched.grouping == "batch" else 1
    with _eval_mode(main, aux):
        fell_back, eligible = _eligible_people(inputs, config, sched, n_group)
        head_only = bool(sched.phases) and all(ph.scope == "head" for ph in sched.phases)
        num_units = sum(g for _, g, _ in unit_buckets(int(eligible.numel()), n_group))
        warm_backbone = warm_start is not None and any(
            w is not None and any(n.startswith("backbone.") for n in w) for w in warm_start)
        if warm_backbone:  # a warm start's own backbone weights: no features of the network's backbone
            head_only = False
        execution = _Execution(
            strategies=resolve_strategies(main, config, device, num_units),
            head_only=(False,) * len(sched.phases) if warm_backbone else _head_only_phases(main, sched),
            unitwise=_unitwise(device),
            compile=config.compile,
        )
        features = _encode(main, inputs.images, reg_batch) if head_only else None
        # plain regression of the people TTO will not touch (people under TTO get it from iteration 0)
        rest = torch.nonzero(~torch.isin(torch.arange(p_total, device=device), eligible)).flatten()
        rest_dec = None
        if rest.numel():
            rest_dec = _regress(main, body, inputs[rest], camera, reg_batch,
                                None if features is None else features[rest])

        targets_all = None
        if sched.needs_aux and eligible.numel():
            assert aux is not None
            aux_dec = _regress(aux, body, inputs[eligible], camera, reg_batch)
            targets_all = pseudo_targets(
                aux_dec, inputs.keypoints2d[eligible], inputs.has_smpl[eligible], inputs.has_pose_3d[eligible]
            )

        people = _Eligible(main, inputs, eligible, features, targets_all, warm_start)

        def context(chunk: _Chunk) -> ChunkContext:
            return ChunkContext(main=main, body=body, sched=sched, execution=execution, camera=camera,
                                features_given=head_only, record_width=width,
                                keep_iterations=step_callback is not None, keep_weights=keep_weights, chunk=chunk)

        outs, plans = _optimise_people(people, context, config, n_group)

    regression, final, steps, converged, reverted, losses = _collect(inputs, rest, rest_dec, outs, width)
    metrics = None
    if step_callback is not None:
        metrics = _step_metrics(step_callback, regression, outs, steps)
    adapted = _adapted_weights(outs, reverted, p_total) if keep_weights else None

    reproj_before = reprojection_error(regression.keypoints2d_full, inputs.keypoints2d, inputs.crop, slots)
    reproj_after = reprojection_error(final.keypoints2d_full, inputs.keypoints2d, inputs.crop, slots)
    return TTOResult(
        rotmat=final.rotmat,
        betas=final.betas,
        cam_crop=final.cam_crop,
        transl=final.transl,
        vertices=final.vertices,
        joints=final.joints,
        steps=steps,
        losses=losses,
        reproj_before=reproj_before,
        reproj_after=reproj_after,
        converged=converged,
        fell_back=fell_back,
        reverted=reverted,
        metrics_per_step=metrics,
        adapted=adapted,
        execution={
            "strategies": list(execution.strategies) if sched.phases else [],
            "unitwise": execution.unitwise,
            "chunks": [pl.units for pl in plans],
            "plans": [dataclasses.asdict(pl) for pl in plans],
        },
    )


def _eligible_people(inputs: TTOInputs, config: TTOConfig, sched: ResolvedSchedule,
                     n_group: int) -> tuple[Tensor, Tensor]:
    """(fell_back (P,) bool, eligible: indices of the people TTO adapts) from the usable keypoints per unit."""
    p_total = len(inputs)
    device = inputs.images.device
    visible = usable_keypoints(inputs.keypoints2d, sched.weights)
    # The fallback test is made per unit (a person, or a group of ``n_group`` consecutive people sharing one
    # copy): dropping single people from a group would change which people share a copy, and the released
    # evaluation adapts every person of its batch, whatever their keypoints.
    unit_of = torch.arange(p_total, device=device) // n_group
    unit_visible = torch.zeros(int(unit_of[-1]) + 1, dtype=visible.dtype, device=device)
    unit_visible.index_add_(0, unit_of, visible)
    enough = unit_visible[unit_of] >= config.min_keypoints
    fell_back = ~enough if sched.phases else torch.zeros(p_total, dtype=torch.bool, device=device)
    eligible = torch.nonzero(enough).flatten() if sched.phases else enough.new_zeros(0, dtype=torch.int64)
    if sched.phases and bool(fell_back.any()):
        log.info("TTO: %d of %d people have fewer than %d visible keypoints; kept their regression",
                 int(fell_back.sum()), p_total, config.min_keypoints)
    return fell_back, eligible


@dataclass
class _Eligible:
    """The people TTO adapts (``eligible``, in unit order) and what their chunks are cut from."""

    main: Regressor
    inputs: TTOInputs
    eligible: Tensor
    features: Tensor | None  # backbone features of all P people (every phase head-only), or None
    targets: LossTargets | None  # pseudo targets of the eligible people
    warm_start: list[dict[str, Tensor] | None] | None

    def chunk(self, first: int, num_units: int, n: int) -> _Chunk:
        """The chunk of ``num_units`` units of ``n`` people from eligible position ``first`` on."""
        inputs, eligible, features = self.inputs, self.eligible, self.features
        pos = torch.arange(first, first + num_units * n, device=inputs.images.device)
        people = eligible[pos]
        x = features[people] if features is not None else inputs.images[people]
        warm, warm_mask = (None, None) if self.warm_start is None else _start_weights(self.main, self.warm_start,
                                                                                      people.tolist())
        return _Chunk(
            people=people,
            num_units=num_units,
            x=x,
            crop=inputs.crop[people],
            keypoints2d=inputs.keypoints2d[people],
            targets=None if self.targets is None else _take(self.targets, pos),
            start=warm,
            start_mask=warm_mask,
        )


def _optimise_people(people: _Eligible, context: Callable[[_Chunk], ChunkContext], config: TTOConfig,
                     n_group: int) -> tuple[list[tuple[Tensor, int, _ChunkOut]], list[ChunkPlan]]:
    """Every eligible person, bucket by bucket of equal-size units, in chunks sized by the memory budget.

    Returns:
        per chunk (person indices, people per unit, result), and the plan of every bucket.
    """
    device = people.inputs.images.device
    budget = config.memory_budget if config.memory_budget is not None else default_memory_budget(device)
    outs: list[tuple[Tensor, int, _ChunkOut]] = []
    plans: list[ChunkPlan] = []
    for start, g_total, n in unit_buckets(int(people.eligible.numel()), n_group):
        first = context(people.chunk(start, 1, n))
        plan = _chunk_plan(first, g_total, n, budget, config.chunk_size, config.backbone_bf16)
        plans.append(plan)
        log.debug("TTO: strategies %s, %d unit(s) of %d per chunk (budget %.0f MiB, %.1f MiB per unit, "
                  "%.1f MiB fixed)", first.execution.strategies, plan.units, n, plan.budget / 2**20,
                  plan.per_unit_bytes / 2**20, plan.fixed_bytes / 2**20)
        for u0 in range(0, g_total, plan.units):
            g = min(plan.units, g_total - u0)
            ctx = context(people.chunk(start + u0 * n, g, n))
            out = _optimise_unit_by_unit(ctx) if ctx.execution.unit_major else _optimise_chunk(ctx)
            outs.append((ctx.chunk.people, n, out))
    return outs, plans


def _collect(inputs: TTOInputs, rest: Tensor, rest_dec: Decoded | None, outs: list[tuple[Tensor, int, _ChunkOut]],
             width: int | None) -> tuple[Decoded, Decoded, Tensor, Tensor, Tensor, Tensor | None]:
    """(regression, final, steps, converged, reverted, losses) of all P people from the chunks' results."""
    p_total = len(inputs)
    device = inputs.images.device
    regression = _assemble(
        p_total, ([(rest, rest_dec)] if rest_dec is not None else []) + [(pp, o.initial) for pp, _, o in outs]
    )
    final = regression
    steps = torch.zeros(p_total, dtype=torch.int64, device=device)
    converged = torch.zeros(p_total, dtype=torch.bool, device=device)
    reverted = torch.zeros(p_total, dtype=torch.bool, device=device)
    losses = None
    if width is not None:
        losses = torch.full((p_total, width), float("nan"), dtype=inputs.keypoints2d.dtype, device=device)
    if outs:
        final = _scatter(regression, [(people, out.final) for people, _, out in outs])
        for people, n, out in outs:
            steps[people] = out.steps.repeat_interleave(n)
            converged[people] = out.converged.repeat_interleave(n)
            reverted[people] = out.reverted.repeat_interleave(n)
            if losses is not None and out.losses is not None:
                losses[people] = out.losses.repeat_interleave(n, dim=0)
    return regression, final, steps, converged, reverted, losses


def _step_metrics(step_callback: StepCallback, regression: Decoded, outs: list[tuple[Tensor, int, _ChunkOut]],
                  steps: Tensor) -> list[Any]:
    """The step callback's results for step = 0, 1, ... (each person's predictions after min(step, steps_i))."""
    metrics = []
    last = max((len(out.per_iteration) for _, _, out in outs), default=0)
    for step in range(last + 1):
        parts = [
            (people, out.per_iteration[step] if step < len(out.per_iteration) else out.final)
            for people, _, out in outs
        ]
        dec = _scatter(regression, parts) if parts else regression
        metrics.append(step_callback(step, dec, steps >= step))
    return metrics


def _adapted_weights(outs: list[tuple[Tensor, int, _ChunkOut]], reverted: Tensor,
                     p_total: int) -> list[dict[str, Tensor] | None]:
    """Every adapted (not reverted) person's final weights, None for the others."""
    adapted: list[dict[str, Tensor] | None] = [None] * p_total
    for people, _, out in outs:
        assert out.weights is not None
        for u, person in enumerate(people.tolist()):
            if not bool(reverted[person]):
                adapted[person] = {k: v[u].clone() for k, v in out.weights.items()}
    return adapted


def _assemble(num_people: int, parts: list[tuple[Tensor, Decoded]]) -> Decoded:
    """A Decoded of P people from parts (person indices, decoded rows) that cover everyone."""
    first = parts[0][1]
    changes = {}
    for f in dataclasses.fields(first):
        value = getattr(first, f.name)
        if isinstance(value, Tensor) and value.ndim > 0:
            out = value.new_empty((num_people, *value.shape[1:]))
            for people, dec in parts:
                out[people] = getattr(dec, f.name)
            changes[f.name] = out
    return dataclasses.replace(first, **changes)


def _scatter(base: Decoded, parts: list[tuple[Tensor, Decoded]]) -> Decoded:
    """Copy of ``base`` with the rows ``people`` replaced by each part."""
    changes = {}
    for f in dataclasses.fields(base):
        value = getattr(base, f.name)
        if isinstance(value, Tensor) and value.ndim > 0:
            value = value.clone()
            for people, dec in parts:
                value[people] = getattr(dec, f.name).to(value.dtype)
            changes[f.name] = value
    return dataclasses.replace(base, **changes)


def inner_update(
    main: Regressor,
    params: dict[str, Tensor],
    inputs: TTOInputs,
    targets: LossTargets,
    lr: float,
    scope: Literal["head", "last_stage", "all"] = "head",
    grouping: Literal["person", "batch"] = "person",
    *,
    body: BodyModel,
    weights: LossWeights | None = None,
    camera: Literal["cliff", "hmr"] = "cliff",
    group_size: int | None = None,
    features: Tensor | None = None,
    optimizer: Literal["sgd", "adam"] = "sgd",
    steps: int = 1,
    loss: Literal["expl", "2d"] = "expl",
) -> dict[str, Tensor]:
    """The first-order inner loop of meta-training: ``steps`` updates of θ per unit u, then θ'_u = θ − Δ_u with
    Δ_u detached (FOMAML: the outer gradient at θ'_u reaches θ unchanged).

    With one SGD step (the released inner step) θ'_u = θ − lr·∇_θ L(unit u). Several steps or Adam run the same
    per-unit optimiser formulas as test-time optimisation (:mod:`metahmr_cli.tto.optim`, a fresh state per unit),
    so the inner loop of training is the start of the test-time schedule (:class:`metahmr_cli.tto.InnerLoop`).

    The network runs in its current mode (the released trainer uses train mode: dropout is sampled
    independently per unit and per step). Pass ``features`` (P, F) for ``scope="head"`` to avoid running the
    backbone again (a second backbone pass in train mode would update BatchNorm statistics twice).

    Args:
        params: name -> θ for at least the scope's names (may require grad; others come from ``main``).
        inputs: P people (images, crop, keypoints2d; gates are in ``targets``).
        targets: the pseudo targets (e.g. :func:`metahmr_cli.losses.pseudo_targets` of the aux net) of the P people
            (only ``keypoints2d`` is read with ``loss="2d"``).
        lr: inner learning rate α.
        scope: which weights adapt; grouping: "person" (G = P, the paper) or "batch" (consecutive groups of
            ``group_size`` people, None = the whole batch as one group, the released trainer).
        body, weights (default :class:`LossWeights`), camera: as in :func:`run_tto`.
        optimizer: "sgd" or "adam"; steps: updates per unit (>= 1); loss: "expl" (L_expl against ``targets``)
            or "2d" (the unweighted L_2D of test-time optimisation).
    Returns:
        name -> (G, ...) adapted weights θ' for the scope's names, differentiable w.r.t. ``params`` (the
        inner gradients are detached: FOMAML). Feed them to :func:`batched_forward` with the same group size.
    """
    if steps < 1:
        raise ConfigError(f"inner_update: steps must be >= 1, got {steps}.")
    weights = weights or LossWeights()
    p_total = inputs.images.shape[0] if features is None else features.shape[0]
    n = 1 if grouping == "person" else (group_size or p_total)
    names = scope_names(main, scope)
    own = dict(main.named_parameters())
    theta = {k: (params[k] if k in params else own[k]) for k in names}
    head_only = scope == "head"
    if head_only:
        if features is None:
            with torch.no_grad():
                features = main.encode(inputs.images)
        x = features.detach()
    else:
        x = inputs.images
    adapted: dict[str, list[Tensor]] = {k: [] for k in names}
    for start, g, size in unit_buckets(p_total, n):
        sl = slice(start, start + g * size)
        crop, kp, tgt = inputs.crop[sl], inputs.keypoints2d[sl], _take(targets, sl)
        current = {k: v.detach().unsqueeze(0).expand(g, *v.shape) for k, v in theta.items()}
        opt = make_optimizer(optimizer, lr)
        everyone = torch.ones(g, dtype=torch.bool, device=x.device)
        delta: dict[str, Tensor] | None = None
        for _ in range(steps):
            leaves = {k: v.detach().requires_grad_() for k, v in current.items()}
            with torch.enable_grad():
                total, _, _ = unit_objective(
                    main, body, leaves, x[sl], crop, kp, tgt,
                    kind=loss, weights=weights, num_units=g, head_only=head_only, camera=camera,
                )
                grads = torch.autograd.grad(total.sum(), [leaves[k] for k in names], allow_unused=True)
            grad_of = {k: (torch.zeros_like(leaves[k]) if gr is None else gr.detach())
                       for k, gr in zip(names, grads, strict=True)}
            if optimizer == "sgd" and steps == 1:
                # the released inner step, θ − lr·g, to the last bit
                delta = {k: lr * grad_of[k] for k in names}
                break
            proposal, state = opt.step(current, grad_of, everyone)
            opt.commit(state, everyone, everyone=True)
            current = proposal
        if delta is None:
            delta = {k: (theta[k].detach().unsqueeze(0) - current[k]) for k in names}
        for k in names:
            adapted[k].append(theta[k].unsqueeze(0) - delta[k])
    return {k: torch.cat(v) for k, v in adapted.items()}
