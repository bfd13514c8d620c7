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
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from metahmr_cli.body.smpl import BodyModel
from metahmr_cli.errors import ConfigError, InputError
from metahmr_cli.geometry.camera import CropInfo
from metahmr_cli.geometry.crop import apply_affine, denormalize_crop_keypoints
from metahmr_cli.losses import LossTargets, LossWeights, combined_loss, keypoint_2d_loss, pseudo_targets
from metahmr_cli.models import Regressor
from metahmr_cli.predictions import Decoded, decode
from metahmr_cli.tto.config import TTOConfig, TTOInputs, TTOResult
from metahmr_cli.tto.eft import eft_loss
from metahmr_cli.tto.optim import UnitwiseOptimizer, make_optimizer, masked_select_update
from metahmr_cli.tto.schedules import LossKind, ResolvedSchedule, resolve_schedule
from metahmr_cli.tto.strategies import (
    REGRESSION_BATCH,
    ChunkPlan,
    Strategy,
    backbone_autocast,
    choose_strategy,
    compiled_or_eager,
    default_memory_budget,
    plan_chunk,
    probe_activation_bytes,
    tf32_mode,
)

log = logging.getLogger(__name__)

StepCallback = Callable[[int, Decoded, Tensor], Any]


# ----------------------------------------------------------------------------------------------------------
# small helpers


@contextmanager
def _eval_mode(*modules: nn.Module | None) -> Iterator[None]:
    """Put modules in eval mode and restore each one's training flags afterwards."""
    saved = []
    for m in modules:
        if m is not None:
            saved.append((m, [(sub, sub.training) for sub in m.modules()]))
            m.eval()
    try:
        yield
    finally:
        for _, flags in saved:
            for sub, flag in flags:
                sub.training = flag


def _take(obj: Any, idx: Tensor | slice) -> Any:
    """Index every tensor field of a dataclass along its leading axis."""
    changes = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, Tensor) and value.ndim > 0:
            changes[f.name] = value[idx]
    return dataclasses.replace(obj, **changes)


def _updates_bn_stats(net: nn.Module) -> bool:
    """True when a forward of ``net`` updates BatchNorm running statistics in place (train mode).

    Such a forward cannot run under ``vmap`` over units (the shared buffers would be written with batched
    values), so the units then run one after another, each with its own batch statistics.
    """
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
        for m in net.modules()
    )


def _unit_slice(tree: Any, u: int) -> Any:
    """Unit ``u`` of a (nested dict of) (G, ...) tensors."""
    if isinstance(tree, dict):
        return {k: _unit_slice(v, u) for k, v in tree.items()}
    return tree if tree is None else tree[u]


def _map_units(fn: Callable[..., Any], num_units: int, randomness: str, loop: bool, *args: Any) -> Any:
    """``vmap(fn)(*args)`` over the leading unit axis, or the same result from a Python loop over units."""
    if not loop:
        return vmap(fn, randomness=randomness)(*args)
    outs = [fn(*(_unit_slice(a, u) for a in args)) for u in range(num_units)]
    first = outs[0]
    if isinstance(first, dict):
        return {k: torch.stack([o[k] for o in outs]) for k in first}
    if isinstance(first, tuple):
        return tuple(
            {k: torch.stack([o[i][k] for o in outs]) for k in first[i]} if isinstance(first[i], dict)
            else torch.stack([o[i] for o in outs])
            for i in range(len(first))
        )
    return torch.stack(outs)


def _bbox_info(net: Regressor, crop: CropInfo) -> Tensor | None:
    return crop.bbox_info() if getattr(net, "uses_bbox_info", True) else None


def _call(main: Regressor, weights: dict[str, Tensor], x: Tensor, bbox_info: Tensor | None,
          head_only: bool) -> dict[str, Tensor]:
    """``main`` with ``weights`` on images ``x`` (or backbone features ``x`` when ``head_only``)."""
    if head_only:
        return functional_call(main, weights, (), {"features": x, "bbox_info": bbox_info})
    return functional_call(main, weights, (x, bbox_info))


def scope_names(main: Regressor, scope: str, freeze_norm: bool = False) -> list[str]:
    """Names (as in ``named_parameters``) of the weights a scope adapts.

    ``freeze_norm`` leaves out the affine parameters of BatchNorm layers (EFT's exemplar mode).
    """
    names = list(main.scope_parameter_names(scope))
    known = dict(main.named_parameters())
    missing = [n for n in names if n not in known]
    if missing:
        raise ConfigError(f"scope {scope!r} names parameters the network does not have: {missing[:3]}")
    if freeze_norm:
        norm = {
            f"{mod_name}.{p_name}" if mod_name else p_name
            for mod_name, mod in main.named_modules()
            if isinstance(mod, nn.modules.batchnorm._BatchNorm)
            for p_name, _ in mod.named_parameters(recurse=False)
        }
        names = [n for n in names if n not in norm]
    return names


def unit_buckets(num_people: int, group_size: int) -> list[tuple[int, int, int]]:
    """Split P consecutive people into units of ``group_size`` people (the last one may be smaller).

    Returns:
        buckets (first person, number of units G, people per unit n) of equal-size units.
    """
    buckets = []
    full = num_people // group_size
    if full:
        buckets.append((0, full, group_size))
    rest = num_people - full * group_size
    if rest:
        buckets.append((full * group_size, 1, rest))
    return buckets


# ----------------------------------------------------------------------------------------------------------
# functional forward and losses


def _vmapped_forward(
    main: Regressor,
    frozen: dict[str, Tensor],
    params: dict[str, Tensor],
    x: Tensor,
    bbox_info: Tensor | None,
    head_only: bool,
    num_units: int,
) -> dict[str, Tensor]:
    """Run the network of every unit on that unit's people (all units of equal size).

    Args:
        frozen: name -> tensor shared by all units; params: name -> (G, ...) per-unit weights.
        x: (G·n, 3, H, W) images or (G·n, F) features (head-only), in unit order.
        bbox_info: (G·n, 3) or None.
    Returns:
        the network outputs flattened back to (G·n, ...).
    """
    g = num_units
    n = x.shape[0] // g
    xs = x.reshape(g, n, *x.shape[1:])
    randomness = "different" if main.training else "error"

    def run(p: dict[str, Tensor], xi: Tensor, bi: Tensor | None) -> dict[str, Tensor]:
        return _call(main, {**frozen, **p}, xi, bi, head_only)

    if not params:  # nothing adapted: a plain batched call
        flat = run({}, x, bbox_info)
        return dict(flat)
    loop = not head_only and _updates_bn_stats(main)
    if bbox_info is None:
        out = _map_units(lambda p, xi: run(p, xi, None), g, randomness, loop, params, xs)
    else:
        out = _map_units(run, g, randomness, loop, params, xs, bbox_info.reshape(g, n, -1))
    return {k: v.reshape(g * n, *v.shape[2:]) for k, v in out.items()}


def batched_forward(
    main: Regressor,
    params: dict[str, Tensor],
    images: Tensor | None = None,
    bbox_info: Tensor | None = None,
    *,
    features: Tensor | None = None,
    group_size: int = 1,
) -> dict[str, Tensor]:
    """Forward P people, each through its own unit's weights (e.g. the output of :func:`inner_update`).

    Args:
        params: name -> (G, ...) per-unit weights (other weights come from ``main``); G = ceil(P / group_size).
        images: (P, 3, H, W), or ``features`` (P, F) to run only the head.
        bbox_info: (P, 3) or None (HMR).
        group_size: people per unit (1 = per person); the last unit may be smaller.
    Returns:
        {"pose6d": (P, 144), "rotmat": (P, 24, 3, 3), "betas": (P, 10), "cam": (P, 3)}; differentiable w.r.t.
        ``params``, ``features`` and the parameters of ``main`` that are not in ``params``.
    """
    x = features if features is not None else images
    if x is None:
        raise InputError("batched_forward needs images (P, 3, H, W) or features (P, F).")
    frozen = {n: p for n, p in main.named_parameters() if n not in params}
    outs = []
    unit0 = 0
    for start, g, n in unit_buckets(x.shape[0], group_size):
        sl = slice(start, start + g * n)
        p = {k: v[unit0 : unit0 + g] for k, v in params.items()}
        unit0 += g
        bb = None if bbox_info is None else bbox_info[sl]
        outs.append(_vmapped_forward(main, frozen, p, x[sl], bb, features is not None, g))
    return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}


def _loss(
    kind: LossKind,
    dec: Decoded,
    keypoints2d: Tensor,
    targets: LossTargets | None,
    weights: LossWeights,
    reduction: Literal["batch", "sample"],
) -> tuple[Tensor, Tensor]:
    """(total, value of the stop test) of one loss kind."""
    if kind == "expl":
        if targets is None:
            raise ConfigError("the L_expl loss needs pseudo targets from the auxiliary network.")
        total, _ = combined_loss(dec, targets, weights, reduction=reduction)
        return total, total
    if kind == "2d":
        total = keypoint_2d_loss(
            dec.keypoints2d, keypoints2d, weights.openpose_2d, weights.gt_2d, reduction=reduction
        )
        return total, total
    total, terms = eft_loss(dec.joints, dec.cam_crop, dec.betas, keypoints2d, weights, reduction=reduction,
                            with_hips=kind == "eft_hips")
    return total, terms["keypoint_2d"]


_CROP_FIELDS = ("center", "scale", "img_hw", "focal", "crop_trans")
_TARGET_FIELDS = ("keypoints2d", "joints3d", "vertices", "rotmat", "betas", "has_smpl", "has_pose_3d")


UnitFn = Callable[..., tuple[Tensor, Tensor, dict[str, Tensor]]]


def _unit_fn(
    main: Regressor,
    body: BodyModel,
    frozen: dict[str, Tensor],
    *,
    kind: LossKind,
    weights: LossWeights,
    head_only: bool,
    camera: str,
) -> UnitFn:
    """The computation of ONE unit: ``fn(params, x, crop, keypoints2d, targets) -> (total, stop, decoded)``.

    ``params``: name -> tensor of this unit (the other weights come from ``frozen``); ``x``: (n, ...) images or
    features; ``crop``: CropInfo fields of the n people as a dict; ``keypoints2d``: (n, 49, 3); ``targets``: the
    LossTargets fields as a dict (empty without targets). ``total`` and ``stop`` are () tensors (the loss
    reduced over the unit's people, "batch"), ``decoded`` a dict of the Decoded fields (n, ...). The same
    function runs under ``vmap`` (strategy "vmap") and unit by unit (strategy "loop").
    """
    uses_bbox = getattr(main, "uses_bbox_info", True)

    def per_unit(p: dict[str, Tensor], xu: Tensor, crop_u: dict[str, Tensor], kp_u: Tensor,
                 tgt_u: dict[str, Tensor]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        cu = CropInfo(**crop_u)
        bbox = cu.bbox_info() if uses_bbox else None
        dec = decode(_call(main, {**frozen, **p}, xu, bbox, head_only), body, cu, camera=camera)
        tu = LossTargets(**tgt_u) if tgt_u else None
        total, stop = _loss(kind, dec, kp_u, tu, weights, "batch")
        return total, stop, {f.name: getattr(dec, f.name) for f in dataclasses.fields(dec)}

    return per_unit


@dataclass
class _Units:
    """The data of G units of n people, with a leading unit axis: x (G, n, ...), crop / targets fields (G, n, ...)."""

    x: Tensor
    crop: dict[str, Tensor]
    keypoints2d: Tensor
    targets: dict[str, Tensor]

    @staticmethod
    def of(x: Tensor, crop: CropInfo, keypoints2d: Tensor, targets: LossTargets | None, num_units: int) -> _Units:
        g = num_units
        n = x.shape[0] // g

        def units(t: Tensor) -> Tensor:
            return t.reshape(g, n, *t.shape[1:])

        tgt: dict[str, Tensor] = {}
        if targets is not None:
            tgt = {f: units(getattr(targets, f)) for f in _TARGET_FIELDS if getattr(targets, f) is not None}
        return _Units(units(x), {f: units(getattr(crop, f)) for f in _CROP_FIELDS}, units(keypoints2d), tgt)

    @property
    def num_units(self) -> int:
        return int(self.x.shape[0])

    def args(self) -> tuple[Tensor, dict[str, Tensor], Tensor, dict[str, Tensor]]:
        """All units (for ``vmap``)."""
        return self.x, self.crop, self.keypoints2d, self.targets

    def unit(self, u: int) -> tuple[Tensor, dict[str, Tensor], Tensor, dict[str, Tensor]]:
        """Unit ``u`` (n people)."""
        return (self.x[u], {k: v[u] for k, v in self.crop.items()}, self.keypoints2d[u],
                {k: v[u] for k, v in self.targets.items()})


def _flatten_decoded(dec: dict[str, Tensor]) -> Decoded:
    """(G, n, ...) decoded fields -> Decoded of the G·n people in unit order."""
    return Decoded(**{k: v.reshape(v.shape[0] * v.shape[1], *v.shape[2:]) for k, v in dec.items()})


def unit_objective(
    main: Regressor,
    body: BodyModel,
    params: dict[str, Tensor],
    x: Tensor,
    crop: CropInfo,
    keypoints2d: Tensor,
    targets: LossTargets | None,
    *,
    kind: LossKind,
    weights: LossWeights,
    num_units: int,
    head_only: bool = False,
    camera: str = "cliff",
) -> tuple[Tensor, Tensor, Decoded]:
    """Forward, decode and loss of every unit with its own weights, all units at once.

    The whole per-unit computation (network, body model, projection, loss) runs under ``torch.func.vmap``
    over units, so a unit's numbers do not depend on which other units are in the batch. A unit of n people
    gets the "batch"-reduced loss over its people (for n = 1 this is the per-person loss).

    Args:
        params: name -> (G, ...) adapted weights (the others come from ``main``, detached).
        x: (G·n, 3, H, W) crops, or (G·n, F) backbone features when ``head_only``; people in unit order.
        crop: CropInfo of the G·n people; keypoints2d: (G·n, 49, 3).
        targets: pseudo targets of the G·n people (needed for ``kind == "expl"``).
        kind: "expl" (L_expl = combined loss against the pseudo targets), "2d" (unweighted L_2D), "eft"
            ("eft_hips": EFT with the GT hips kept).
        num_units: G.
    Returns:
        (total (G,), stop-test value (G,), decoded predictions of the G·n people).
    """
    frozen = {k: v.detach() for k, v in main.named_parameters() if k not in params}
    fn = _unit_fn(main, body, frozen, kind=kind, weights=weights, head_only=head_only, camera=camera)
    randomness = "different" if main.training else "error"
    loop = not head_only and _updates_bn_stats(main)
    units = _Units.of(x, crop, keypoints2d, targets, num_units)
    total, stop, dec = _map_units(fn, num_units, randomness, loop, params, *units.args())
    return total, stop, _flatten_decoded(dec)


# ----------------------------------------------------------------------------------------------------------
# the optimisation of one chunk of units


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


def _cat_units(parts: list[dict[str, Tensor]]) -> Decoded:
    """Per-unit decoded dicts (n, ...) -> Decoded of the G·n people in unit order."""
    return Decoded(**{k: torch.cat([p[k] for p in parts]) for k in parts[0]})


def _functional_vmap_step(main: Regressor, body: BodyModel, *, kind: LossKind, weights: LossWeights,
                          head_only: bool, camera: str) -> Callable[..., Any]:
    """All units' gradients with ``vmap(grad)``: the form ``torch.compile`` can trace as one graph.

    ``step(frozen, p_grad, p_rest, x, crop, keypoints2d, targets) -> (grads, total, stop, decoded)``; ``frozen``
    are the shared weights, every other argument and result has a leading unit axis; ``p_grad`` are the weights
    differentiated, ``p_rest`` other per-unit weights. Tensors are arguments, not closure constants, so one
    compiled graph serves every chunk of the same shapes.
    """

    def unit(frozen, p_grad, p_rest, xu, cu, ku, tu):
        fn = _unit_fn(main, body, frozen, kind=kind, weights=weights, head_only=head_only, camera=camera)

        def loss(pg):
            total, stop, dec = fn({**p_rest, **pg}, xu, cu, ku, tu)
            return total, (total, stop, dec)

        grads, (total, stop, dec) = torch.func.grad(loss, has_aux=True)(p_grad)
        return grads, total, stop, dec

    return vmap(unit, in_dims=(None, 0, 0, 0, 0, 0, 0))


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


def _optimise_chunk(
    main: Regressor,
    body: BodyModel,
    sched: ResolvedSchedule,
    chunk: _Chunk,
    features_given: bool,
    camera: str,
    record_width: int | None,
    keep_iterations: bool,
    execution: _Execution,
    features: Tensor | None = None,
    keep_weights: bool = False,
) -> _ChunkOut:
    """Optimise the G units of one chunk, step by step (``chunk.x``: images, or features when
    ``features_given``; ``features``: backbone features of the chunk's people computed by the caller).

    Units in ``chunk.start_mask`` start from ``chunk.start`` (those weights are live from the first iteration,
    whichever phase adapts them); ``keep_weights`` returns every unit's final live weights."""
    g = chunk.num_units
    device = chunk.x.device
    full = _Units.of(chunk.x, chunk.crop, chunk.keypoints2d, chunk.targets, g)
    feature_units = full if features_given else None
    if features is not None and not features_given:
        feature_units = _Units.of(features, chunk.crop, chunk.keypoints2d, chunk.targets, g)

    def inputs_of(head_only: bool) -> _Units:
        """The units' inputs: backbone features (computed once, without grad) for a head-only phase."""
        nonlocal feature_units
        if not head_only:
            return full
        if feature_units is None:
            feats = _encode(main, chunk.x, REGRESSION_BATCH)
            feature_units = _Units.of(feats, chunk.crop, chunk.keypoints2d, chunk.targets, g)
        return feature_units

    base = {n: p.detach() for n, p in main.named_parameters()}
    live: dict[str, Tensor] = {}  # name -> (G, ...) weights that are (or were) adapted
    if chunk.start is not None and chunk.start_mask is not None:
        for n, w in chunk.start.items():
            keep = chunk.start_mask.view(g, *[1] * base[n].ndim)
            live[n] = torch.where(keep, w.to(base[n].dtype), base[n].unsqueeze(0))  # own storage
    active = torch.ones(g, dtype=torch.bool, device=device)
    host_active = [True] * g  # host copy of ``active``, refreshed by the one sync of each step
    host_stale = [False] * g  # stopped units whose predictions predate their last update (loop strategy)
    steps = torch.zeros(g, dtype=torch.int64, device=device)
    converged = torch.zeros(g, dtype=torch.bool, device=device)
    reverted = torch.zeros(g, dtype=torch.bool, device=device)
    loss_prev = torch.full((g,), float("nan"), dtype=chunk.keypoints2d.dtype, device=device)
    losses = None
    if record_width is not None:
        losses = torch.full((g, record_width), float("nan"), dtype=chunk.keypoints2d.dtype, device=device)
    per_iteration: list[Decoded] = []
    initial: Decoded | None = None
    last: Decoded | None = None
    current: list[dict[str, Tensor]] | None = None  # loop strategy: per-unit predictions at the current weights

    def unit_fn(kind: LossKind, head_only: bool) -> UnitFn:
        frozen = {k: v for k, v in base.items() if k not in live}
        return _unit_fn(main, body, frozen, kind=kind, weights=sched.weights, head_only=head_only, camera=camera)

    it = 0
    for p_index, phase in enumerate(sched.phases):
        strategy = execution.strategies[p_index]
        head_only = execution.head_only[p_index]
        units = inputs_of(head_only)
        names = scope_names(main, phase.scope, phase.freeze_norm)
        for n in names:
            if n not in live:
                w = base[n].unsqueeze(0)
                # the in-place optimiser writes into the stacked weights: they need their own storage
                live[n] = w.repeat(g, *[1] * base[n].ndim) if execution.unitwise else w.expand(g, *base[n].shape)
        fn = unit_fn(phase.loss, head_only)
        opt = UnitwiseOptimizer(phase.optimizer, phase.lr) if execution.unitwise else make_optimizer(
            phase.optimizer, phase.lr)
        compiled = None
        if strategy == "vmap" and execution.compile and head_only:  # many small kernels: compiling pays off
            functional_step = _functional_vmap_step(main, body, kind=phase.loss, weights=sched.weights,
                                                    head_only=True, camera=camera)
            frozen = {k: v for k, v in base.items() if k not in live}
            key = ("tto-head-step", type(main.backbone).__name__)
            compiled = (compiled_or_eager(key, functional_step, True), frozen)
        for _ in range(phase.steps):
            if not any(host_active):
                break
            ok: Tensor | None = None
            grads: dict[str, Tensor | None] | None
            if strategy == "vmap":
                total, stop_value, dec, grads = _step_vmap(fn, live, names, units, compiled)
                current = None
                host_stale = [False] * g  # every unit was just run
                if execution.unitwise:
                    oks = []
                    for u in range(g):
                        if host_active[u]:
                            unit_grads = {k: None if v is None else v[u] for k, v in grads.items()}
                            oks.append(opt.update_unit({k: live[k] for k in names}, u, unit_grads,
                                                       torch.isfinite(total[u])))
                        else:
                            oks.append(torch.zeros((), dtype=torch.bool, device=device))
                    ok = torch.stack(oks)
                    grads = None
            else:
                if current is None and last is not None:  # after a vmap phase: its last predictions, per unit
                    n_per = units.x.shape[1]
                    current = [{f.name: getattr(last, f.name)[u * n_per : (u + 1) * n_per]
                                for f in dataclasses.fields(last)} for u in range(g)]
                # stopped units are not run again; with a step callback a stopped unit is run once more (no grad)
                # when its last update came after its last forward, so its record shows its final weights
                run_unit = [a or (keep_iterations and s) for a, s in zip(host_active, host_stale, strict=True)]
                total, stop_value, decs, grads, ok = _step_loop(
                    fn, live, names, units, run_unit, host_active, current,
                    opt if execution.unitwise else None)  # type: ignore[arg-type]
                host_stale = [s and not r for s, r in zip(host_stale, run_unit, strict=True)]
                current = decs
                dec = _cat_units(decs)
            last = dec
            if initial is None:
                initial = dec
            if keep_iterations:
                per_iteration.append(dec)
            with torch.no_grad():
                if losses is not None:
                    losses[:, it] = torch.where(active, total, losses[:, it])
                proposal: dict[str, Tensor] = {}
                state: dict[str, Tensor] = {}
                if ok is None:  # stacked optimiser: propose for every unit, keep the proposals of the good ones
                    assert grads is not None and not isinstance(opt, UnitwiseOptimizer)
                    current_w = {n: live[n] for n in names}
                    proposal, state = opt.step(current_w, grads, active)
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
                host_active = [bool(f) for f in flags[2 : 2 + g]]
                host_stale = [s or bool(f) for s, f in zip(host_stale, flags[2 + g :], strict=True)]
                if isinstance(opt, UnitwiseOptimizer):
                    opt.end_step()
                else:
                    for n in names:
                        live[n] = proposal[n] if everyone else masked_select_update(upd, proposal[n], live[n])
                    opt.commit(state, upd, everyone)
                steps += upd.to(torch.int64)
                if any_bad:
                    log.warning("TTO: non-finite loss or update for %d unit(s); kept their last finite state",
                                int(bad.sum()))
                reverted |= bad
                converged |= conv
                active = still
                loss_prev = torch.where(upd, total, loss_prev)
            it += 1

    with torch.no_grad():
        kind = sched.phases[-1].loss if it > 0 or not sched.phases else sched.phases[0].loss
        head_only = execution.head_only[-1] if sched.phases else features_given
        units = inputs_of(head_only)
        fn = unit_fn(kind, head_only)
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
    start = initial or final
    final, steps, reverted = _keep_finite_outputs(final, start, steps, reverted, g)
    kept = {k: v.detach() for k, v in live.items()} if keep_weights else None
    return _ChunkOut(final, steps, converged, reverted, losses, per_iteration, start, kept)


def _optimise_unit_by_unit(
    main: Regressor,
    body: BodyModel,
    sched: ResolvedSchedule,
    chunk: _Chunk,
    features_given: bool,
    camera: str,
    record_width: int | None,
    keep_iterations: bool,
    execution: _Execution,
    keep_weights: bool = False,
) -> _ChunkOut:
    """The units of a chunk one after another, each through its whole schedule (every phase loops).

    The backbone features of head-only phases are computed once for the chunk, as one batch.
    """
    g = chunk.num_units
    n = chunk.x.shape[0] // g
    features = None
    if not features_given and any(execution.head_only):
        features = _encode(main, chunk.x, REGRESSION_BATCH)
    outs = []
    for u in range(g):
        sl = slice(u * n, (u + 1) * n)
        targets = None if chunk.targets is None else _take(chunk.targets, sl)
        start = None if chunk.start is None else {k: v[u : u + 1] for k, v in chunk.start.items()}
        mask = None if chunk.start_mask is None else chunk.start_mask[u : u + 1]
        unit = _Chunk(people=chunk.people[sl], num_units=1, x=chunk.x[sl], crop=chunk.crop[sl],
                      keypoints2d=chunk.keypoints2d[sl], targets=targets, start=start, start_mask=mask)
        outs.append(_optimise_chunk(main, body, sched, unit, features_given, camera, record_width, keep_iterations,
                                    execution, None if features is None else features[sl], keep_weights))
    return _merge_outs(outs)


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


def _regress(
    net: Regressor, body: BodyModel, inputs: TTOInputs, camera: str, chunk_size: int, features: Tensor | None = None
) -> Decoded:
    """Plain no-grad regression of all people, chunked (from ``features`` (P, F) when given)."""
    decs = []
    with torch.no_grad():
        for s in range(0, len(inputs), chunk_size):
            sl = slice(s, s + chunk_size)
            crop = inputs.crop[sl]
            if features is not None:
                out = net(features=features[sl], bbox_info=_bbox_info(net, crop))
            else:
                out = net(inputs.images[sl], _bbox_info(net, crop))
            decs.append(decode(out, body, crop, camera=camera))
    return Decoded.cat(decs)


def _encode(net: Regressor, images: Tensor, chunk_size: int) -> Tensor:
    """(P, 3, H, W) -> (P, F) backbone features without grad, chunked."""
    with torch.no_grad():
        return torch.cat([net.encode(images[s : s + chunk_size]) for s in range(0, images.shape[0], chunk_size)])


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


def _chunk_plan(main: Regressor, body: BodyModel, sched: ResolvedSchedule, execution: _Execution, first: _Chunk,
                num_units: int, people_per_unit: int, budget: int, cap: int | None, features_given: bool,
                camera: str, bf16: bool) -> ChunkPlan:
    """Units per chunk for one bucket of equal-size units (``first``: a chunk holding its first unit)."""
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

        def make_chunk(first_unit: int, num_units: int, n: int) -> _Chunk:
            pos = torch.arange(first_unit, first_unit + num_units * n, device=device)
            people = eligible[pos]
            x = features[people] if features is not None else inputs.images[people]
            warm, warm_mask = (None, None) if warm_start is None else _start_weights(main, warm_start,
                                                                                     people.tolist())
            return _Chunk(
                people=people,
                num_units=num_units,
                x=x,
                crop=inputs.crop[people],
                keypoints2d=inputs.keypoints2d[people],
                targets=None if targets_all is None else _take(targets_all, pos),
                start=warm,
                start_mask=warm_mask,
            )

        budget = config.memory_budget if config.memory_budget is not None else default_memory_budget(device)
        outs: list[tuple[Tensor, int, _ChunkOut]] = []
        plans: list[ChunkPlan] = []
        for start, g_total, n in unit_buckets(int(eligible.numel()), n_group):
            plan = _chunk_plan(main, body, sched, execution, make_chunk(start, 1, n), g_total, n, budget,
                               config.chunk_size, head_only, camera, config.backbone_bf16)
            plans.append(plan)
            log.debug("TTO: strategies %s, %d unit(s) of %d per chunk (budget %.0f MiB, %.1f MiB per unit, "
                      "%.1f MiB fixed)", execution.strategies, plan.units, n, plan.budget / 2**20,
                      plan.per_unit_bytes / 2**20, plan.fixed_bytes / 2**20)
            for u0 in range(0, g_total, plan.units):
                g = min(plan.units, g_total - u0)
                chunk = make_chunk(start + u0 * n, g, n)
                if execution.unit_major:
                    out = _optimise_unit_by_unit(main, body, sched, chunk, head_only, camera, width,
                                                 step_callback is not None, execution, keep_weights)
                else:
                    out = _optimise_chunk(main, body, sched, chunk, head_only, camera, width,
                                          step_callback is not None, execution, None, keep_weights)
                outs.append((chunk.people, n, out))

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

    metrics = None
    if step_callback is not None:
        metrics = []
        last = max((len(out.per_iteration) for _, _, out in outs), default=0)
        for step in range(last + 1):
            parts = [
                (people, out.per_iteration[step] if step < len(out.per_iteration) else out.final)
                for people, _, out in outs
            ]
            dec = _scatter(regression, parts) if parts else regression
            metrics.append(step_callback(step, dec, steps >= step))

    adapted: list[dict[str, Tensor] | None] | None = None
    if keep_weights:
        adapted = [None] * p_total
        for people, _, out in outs:
            assert out.weights is not None
            for u, person in enumerate(people.tolist()):
                if not bool(reverted[person]):
                    adapted[person] = {k: v[u].clone() for k, v in out.weights.items()}

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
