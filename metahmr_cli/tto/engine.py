"""The one test-time optimisation engine (used by ``process``, the training inner loop and ``eval``).

Design:
- The adapted weights are held as stacked tensors, one slice per *unit* (a person, or a group of consecutive
  people sharing one copy): name -> (G, *shape). The network runs on all units at once with
  ``torch.func.functional_call`` under ``torch.func.vmap``; the module itself is never copied or changed.
- Gradients come from one ``torch.autograd.grad`` of the sum of the unit losses. A unit's loss depends only on
  its own slice, so the gradient slice of a unit is exactly the gradient of its own loss.
- Optimisers (:mod:`metahmr_cli.tto.optim`) update the stacked tensors with ``torch.optim``'s formulas; a
  unit that stopped (converged, failed) keeps its values bit for bit.
- The network runs in eval mode (BatchNorm running statistics, no dropout); the training flags are restored.
  With a head-only scope the backbone features are computed once and only the head runs per iteration.
- People are processed in chunks of at most ``chunk_size`` so memory stays bounded.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
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
from metahmr_cli.tto.optim import make_optimizer, masked_select_update
from metahmr_cli.tto.schedules import LossKind, ResolvedSchedule, resolve_schedule

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
    g = num_units
    n = x.shape[0] // g
    frozen = {k: v.detach() for k, v in main.named_parameters() if k not in params}
    uses_bbox = getattr(main, "uses_bbox_info", True)
    randomness = "different" if main.training else "error"

    def per_unit(p, xu, crop_u, kp_u, tgt_u):
        cu = CropInfo(**crop_u)
        bbox = cu.bbox_info() if uses_bbox else None
        dec = decode(_call(main, {**frozen, **p}, xu, bbox, head_only), body, cu, camera=camera)
        tu = LossTargets(**tgt_u) if tgt_u else None
        total, stop = _loss(kind, dec, kp_u, tu, weights, "batch")
        return total, stop, {f.name: getattr(dec, f.name) for f in dataclasses.fields(dec)}

    def units(t: Tensor) -> Tensor:
        return t.reshape(g, n, *t.shape[1:])

    crop_u = {f: units(getattr(crop, f)) for f in _CROP_FIELDS}
    tgt_u: dict[str, Tensor] = {}
    if targets is not None:
        tgt_u = {f: units(getattr(targets, f)) for f in _TARGET_FIELDS if getattr(targets, f) is not None}
    loop = not head_only and _updates_bn_stats(main)
    total, stop, dec = _map_units(per_unit, g, randomness, loop, params, units(x), crop_u, units(keypoints2d), tgt_u)
    flat = {k: v.reshape(g * n, *v.shape[2:]) for k, v in dec.items()}
    return total, stop, Decoded(**flat)


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


@dataclass
class _ChunkOut:
    final: Decoded
    steps: Tensor  # (G,)
    converged: Tensor
    reverted: Tensor
    losses: Tensor | None  # (G, width)
    per_iteration: list[Decoded]
    initial: Decoded  # predictions with the unadapted weights (iteration 0)


def _optimise_chunk(
    main: Regressor,
    body: BodyModel,
    sched: ResolvedSchedule,
    chunk: _Chunk,
    head_only: bool,
    camera: str,
    record_width: int | None,
    keep_iterations: bool,
) -> _ChunkOut:
    g = chunk.num_units
    device = chunk.x.device
    base = {n: p.detach() for n, p in main.named_parameters()}
    live: dict[str, Tensor] = {}  # name -> (G, ...) weights that are (or were) adapted
    active = torch.ones(g, dtype=torch.bool, device=device)
    steps = torch.zeros(g, dtype=torch.int64, device=device)
    converged = torch.zeros(g, dtype=torch.bool, device=device)
    reverted = torch.zeros(g, dtype=torch.bool, device=device)
    loss_prev = torch.full((g,), float("nan"), dtype=chunk.keypoints2d.dtype, device=device)
    losses = None
    if record_width is not None:
        losses = torch.full((g, record_width), float("nan"), dtype=chunk.keypoints2d.dtype, device=device)
    per_iteration: list[Decoded] = []
    initial: Decoded | None = None

    def objective(params: dict[str, Tensor], kind: LossKind) -> tuple[Tensor, Tensor, Decoded]:
        return unit_objective(
            main, body, params, chunk.x, chunk.crop, chunk.keypoints2d, chunk.targets,
            kind=kind, weights=sched.weights, num_units=g, head_only=head_only, camera=camera,
        )

    it = 0
    for phase in sched.phases:
        names = scope_names(main, phase.scope, phase.freeze_norm)
        for n in names:
            if n not in live:
                live[n] = base[n].unsqueeze(0).expand(g, *base[n].shape)
        opt = make_optimizer(phase.optimizer, phase.lr)
        for _ in range(phase.steps):
            if not bool(active.any()):
                break
            leaves = {n: v.detach().requires_grad_(n in names) for n, v in live.items()}
            with torch.enable_grad():
                total, stop_value, dec = objective(leaves, phase.loss)
                grads = torch.autograd.grad(total.sum(), [leaves[n] for n in names], allow_unused=True)
            if initial is None:
                initial = dec.detach()
            if keep_iterations:
                per_iteration.append(dec.detach())
            with torch.no_grad():
                total = total.detach()
                stop_value = stop_value.detach()
                if losses is not None:
                    losses[:, it] = torch.where(active, total, losses[:, it])
                current = {n: live[n] for n in names}
                proposal, state = opt.step(current, dict(zip(names, grads, strict=True)), active)
                ok = torch.isfinite(total)
                for n in names:
                    # a NaN/inf anywhere makes the unit's sum non-finite (one reduction instead of two passes)
                    ok &= torch.isfinite(proposal[n].reshape(g, -1).sum(dim=1))
                upd = active & ok
                bad = active & ~ok
                everyone = bool(upd.all())
                for n in names:
                    live[n] = proposal[n] if everyone else masked_select_update(upd, proposal[n], live[n])
                opt.commit(state, upd)
                steps += upd.to(torch.int64)
                if bool(bad.any()):
                    log.warning("TTO: non-finite loss or update for %d unit(s); kept their last finite state",
                                int(bad.sum()))
                reverted |= bad
                active &= ~bad
                if sched.stop_rule == "delta":
                    conv = upd & ((loss_prev - total).abs() < sched.tol)
                elif sched.stop_rule == "threshold":
                    conv = upd & (stop_value < sched.tol)
                else:
                    conv = torch.zeros_like(upd)
                converged |= conv
                active &= ~conv
                loss_prev = torch.where(upd, total, loss_prev)
            it += 1

    with torch.no_grad():
        kind = sched.phases[-1].loss if it > 0 or not sched.phases else sched.phases[0].loss
        total, _, final = objective(live, kind)
        if losses is not None and sched.phases:
            fits = steps < record_width
            rows = torch.nonzero(fits).flatten()
            losses[rows, steps[rows]] = total[rows]
    final = final.detach()
    start = initial or final
    final, steps, reverted = _keep_finite_outputs(final, start, steps, reverted, g)
    return _ChunkOut(final, steps, converged, reverted, losses, per_iteration, start)


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
    Returns:
        :class:`TTOResult`. ``losses[:, k]`` holds the loss at the parameters after k updates: the loss of
        the phase that drives update k + 1 (for "reference": the pseudo loss at k = 0, then the unweighted
        L_2D; for "eft": the whole EFT loss) and, at k = steps, the loss of the final parameters.
    """
    sched = resolve_schedule(config)
    inputs = inputs.validated()
    p_total = len(inputs)
    if p_total == 0:
        raise InputError("run_tto got no people (P = 0); skip the image instead of calling TTO.")
    device = inputs.images.device
    if sched.needs_aux and aux is None:
        raise ConfigError(
            f"TTO schedule {sched.name!r} needs the auxiliary network (pseudo mesh); load a Meta-HMR checkpoint "
            "that has 'model_aux', or use schedule 'eft' or 'none'."
        )
    camera = config.camera
    slots = _keypoint_slot_mask(sched.weights, device)
    width = sched.max_iterations if config.record_losses else None

    n_group = sched.group_size if sched.grouping == "batch" else 1
    with _eval_mode(main, aux):
        visible = ((inputs.keypoints2d[..., 2] > 0) & slots[None]).sum(dim=1)
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
        features = _encode(main, inputs.images, config.chunk_size) if head_only else None
        # plain regression of the people TTO will not touch (people under TTO get it from iteration 0)
        rest = torch.nonzero(~torch.isin(torch.arange(p_total, device=device), eligible)).flatten()
        rest_dec = None
        if rest.numel():
            rest_dec = _regress(main, body, inputs[rest], camera, config.chunk_size,
                                None if features is None else features[rest])

        targets_all = None
        if sched.needs_aux and eligible.numel():
            assert aux is not None
            aux_dec = _regress(aux, body, inputs[eligible], camera, config.chunk_size)
            targets_all = pseudo_targets(
                aux_dec, inputs.keypoints2d[eligible], inputs.has_smpl[eligible], inputs.has_pose_3d[eligible]
            )

        outs: list[tuple[Tensor, int, _ChunkOut]] = []
        for start, g_total, n in unit_buckets(int(eligible.numel()), n_group):
            units_per_chunk = max(1, config.chunk_size // n)
            for u0 in range(0, g_total, units_per_chunk):
                g = min(units_per_chunk, g_total - u0)
                pos = torch.arange(start + u0 * n, start + (u0 + g) * n, device=device)
                people = eligible[pos]
                x = features[people] if features is not None else inputs.images[people]
                chunk = _Chunk(
                    people=people,
                    num_units=g,
                    x=x,
                    crop=inputs.crop[people],
                    keypoints2d=inputs.keypoints2d[people],
                    targets=None if targets_all is None else _take(targets_all, pos),
                )
                out = _optimise_chunk(
                    main, body, sched, chunk, head_only, camera, width, step_callback is not None
                )
                outs.append((people, n, out))

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
) -> dict[str, Tensor]:
    """One first-order inner step of meta-training: θ'_u = θ − lr·∇_θ L_expl(unit u) (gradient detached).

    The network runs in its current mode (the released trainer uses train mode: dropout is sampled
    independently per unit). Pass ``features`` (P, F) for ``scope="head"`` to avoid running the backbone
    again (a second backbone pass in train mode would update BatchNorm statistics twice).

    Args:
        params: name -> θ for at least the scope's names (may require grad; others come from ``main``).
        inputs: P people (images, crop, keypoints2d; gates are in ``targets``).
        targets: the pseudo targets (e.g. :func:`metahmr_cli.losses.pseudo_targets` of the aux net) of the P people.
        lr: inner learning rate α.
        scope: which weights adapt; grouping: "person" (G = P, the paper) or "batch" (consecutive groups of
            ``group_size`` people, None = the whole batch as one group, the released trainer).
        body, weights (default :class:`LossWeights`), camera: as in :func:`run_tto`.
    Returns:
        name -> (G, ...) adapted weights θ' for the scope's names, differentiable w.r.t. ``params`` (the
        inner gradient is detached: FOMAML). Feed them to :func:`batched_forward` with the same group size.
    """
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
        leaves = {k: v.detach().unsqueeze(0).expand(g, *v.shape).requires_grad_() for k, v in theta.items()}
        with torch.enable_grad():
            total, _, _ = unit_objective(
                main, body, leaves, x[sl], inputs.crop[sl], inputs.keypoints2d[sl], _take(targets, sl),
                kind="expl", weights=weights, num_units=g, head_only=head_only, camera=camera,
            )
            grads = torch.autograd.grad(total.sum(), [leaves[k] for k in names], allow_unused=True)
        for k, gr in zip(names, grads, strict=True):
            step = torch.zeros_like(leaves[k]) if gr is None else gr.detach()
            adapted[k].append(theta[k].unsqueeze(0) - lr * step)
    return {k: torch.cat(v) for k, v in adapted.items()}
