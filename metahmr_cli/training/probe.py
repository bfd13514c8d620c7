"""What the inner loop of a meta step does: weight change, outer-loss change and gradient direction.

A meta step is only meta-learning when its inner loop moves the weights enough to change the outer loss: with a
learning rate far below the scale of the weights, w' = w and the outer gradient at w' is the plain gradient, so
the "meta" phase is plain training with another loss. :func:`probe_inner_loop` measures this on one batch with
the step's own settings (its :class:`metahmr_cli.tto.InnerLoop`, grouping and networks):

- ``rel_weight_change[k-1]``: ‖w_k − w‖ / ‖w‖ over the adapted tensors after k inner updates, the mean over units;
- ``outer[k]``: the ×60 outer loss L_train at the adapted weights after k updates (``outer[0]``: at w, plain);
- ``rel_outer_change[k-1]``: (outer[k] − outer[0]) / outer[0];
- ``grad_cosine``: cosine between the plain gradient ∇_w L_train(w) and the first-order meta gradient
  (1/B) Σ_i ∇ L_train at w'_{g(i)} over all main-net weights (``grad_cosine_scope``: over the adapted ones).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from .meta_step import MetaStep, TrainBatch, _features, adapt

__all__ = ["InnerLoopProbe", "probe_inner_loop"]


@dataclass
class InnerLoopProbe:
    """Measurements of the inner loop on one batch (see the module docstring); lists are per inner update k."""

    rel_weight_change: list[float]
    outer: list[float]
    rel_outer_change: list[float]
    grad_cosine: float
    grad_cosine_scope: float

    def as_dict(self) -> dict[str, float | list[float]]:
        """Plain values (JSON)."""
        return dataclasses.asdict(self)


def _cosine(a: list[Tensor], b: list[Tensor]) -> float:
    va = torch.cat([t.reshape(-1).double() for t in a])
    vb = torch.cat([t.reshape(-1).double() for t in b])
    return float(va @ vb / (va.norm() * vb.norm()).clamp_min(1e-300))


def _outer_and_grads(step: MetaStep, batch: TrainBatch, names: list[str], seed: int) -> tuple[float, list[Tensor]]:
    """The ×60 outer loss of the step's current settings and its gradient w.r.t. the main net's ``names``."""
    params = dict(step.main.named_parameters())
    torch.manual_seed(seed)  # the same dropout masks in every pass
    loss, stats = step(batch)
    # the aux net's loss (paper mode) does not depend on the main net: these are the outer loss's gradients
    grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
    return float(stats["outer"]), [torch.zeros_like(params[n]) if g is None else g for n, g in zip(names, grads,
                                                                                                 strict=True)]


def probe_inner_loop(step: MetaStep, batch: TrainBatch, *, seed: int = 0) -> InnerLoopProbe:
    """Measure the inner loop of ``step`` (its ``cfg.inner``) on ``batch``; the networks are not changed.

    The passes run in the networks' current modes with the same seed (dropout masks), so train-mode randomness
    does not enter the differences.

    Args:
        step: a meta step (its ``cfg.meta`` is ignored: the plain and the meta pass are both made).
        batch: B samples.
    Returns:
        :class:`InnerLoopProbe` with K = ``step.cfg.inner.steps`` entries per list (``outer``: K + 1).
    """
    cfg0 = step.cfg
    main = step.main
    names = [n for n, p in main.named_parameters() if p.requires_grad]
    scope = set(main.scope_parameter_names(cfg0.inner.scope))
    own = dict(main.named_parameters())
    inner_steps = int(cfg0.inner.steps)
    outer: list[float] = []
    rel_change: list[float] = []
    try:
        step.cfg = dataclasses.replace(cfg0, meta=False)
        outer0, g_plain = _outer_and_grads(step, batch, names, seed)
        outer.append(outer0)
        g_meta: list[Tensor] = []
        for k in range(1, inner_steps + 1):
            step.cfg = dataclasses.replace(cfg0, meta=True, inner=dataclasses.replace(cfg0.inner, steps=k))
            if k == inner_steps:
                outer_k, g_meta = _outer_and_grads(step, batch, names, seed)
            else:
                with torch.no_grad():
                    torch.manual_seed(seed)
                    outer_k = float(step(batch)[1]["outer"])
            outer.append(outer_k)
            with torch.no_grad():
                torch.manual_seed(seed)
                feats = _features(main, batch.images, step.cfg.amp_dtype) if step.cfg.scope == "head" else None
                targets, _ = step.inner_targets(batch)
                torch.manual_seed(seed)
                adapted, _ = adapt(main, step.body, batch, targets, step.cfg, feats)
                w = torch.cat([own[n].detach().reshape(-1) for n in sorted(adapted)])
                diff = torch.cat([(adapted[n].detach() - own[n].detach()).flatten(1) for n in sorted(adapted)], 1)
                rel_change.append(float((diff.norm(dim=1) / w.norm().clamp_min(1e-30)).mean()))
    finally:
        step.cfg = cfg0
    in_scope = [i for i, n in enumerate(names) if n in scope]
    return InnerLoopProbe(
        rel_weight_change=rel_change,
        outer=outer,
        rel_outer_change=[(o - outer[0]) / outer[0] for o in outer[1:]],
        grad_cosine=_cosine(g_plain, g_meta),
        grad_cosine_scope=_cosine([g_plain[i] for i in in_scope], [g_meta[i] for i in in_scope]),
    )
