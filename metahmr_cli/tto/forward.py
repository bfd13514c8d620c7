"""The functional forward of test-time optimisation: the network of every unit with its own weights.

This module owns how a *unit* (a person, or a group of consecutive people sharing one copy of the adapted
weights) is computed: the weights are stacked per unit (name -> (G, ...)) and the network runs with
``torch.func.functional_call``, either under ``torch.func.vmap`` over units or in a Python loop with the same
result (:func:`_map_units`). On top of that: the per-unit computation of forward, decode and loss
(:func:`_unit_fn`, :func:`unit_objective`), the plain batched forward of adapted weights (:func:`batched_forward`),
the ``vmap(grad)`` step ``torch.compile`` can trace, and the no-grad regression / backbone encoding in chunks.
The step loop that uses these is :mod:`metahmr_cli.tto.steps`.
"""

from __future__ import annotations

import dataclasses
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
from metahmr_cli.losses import LossTargets, LossWeights, combined_loss, keypoint_2d_loss
from metahmr_cli.models import Regressor
from metahmr_cli.predictions import Decoded, decode
from metahmr_cli.tto.config import TTOInputs
from metahmr_cli.tto.eft import eft_loss
from metahmr_cli.tto.schedules import LossKind


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


def _cat_units(parts: list[dict[str, Tensor]]) -> Decoded:
    """Per-unit decoded dicts (n, ...) -> Decoded of the G·n people in unit order."""
    return Decoded(**{k: torch.cat([p[k] for p in parts]) for k in parts[0]})


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
