"""Optimisers acting on stacked per-unit parameters (leading dimension G = people or groups).

Each unit behaves exactly like its own ``torch.optim`` optimiser on its own copy of the weights: the update
formulas (including Adam's bias correction) are those of ``torch.optim.SGD`` (no momentum, no weight decay)
and ``torch.optim.Adam`` (single-tensor implementation). Updates are functional (new tensors) and masked: a
unit whose ``mask`` entry is False keeps its parameters and optimiser state bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from metahmr_cli.errors import ConfigError


def _bmask(mask: Tensor, like: Tensor) -> Tensor:
    """(G,) bool -> broadcastable to ``like`` (G, ...)."""
    return mask.reshape(mask.shape[0], *([1] * (like.ndim - 1)))


def masked_select_update(mask: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """(G, ...) ``new`` where mask (G,) else ``old``."""
    return torch.where(_bmask(mask, new), new, old)


@dataclass
class BatchedSGD:
    """Plain gradient descent θ ← θ − lr·g per unit (``torch.optim.SGD`` with default settings)."""

    lr: float

    def step(
        self, params: dict[str, Tensor], grads: dict[str, Tensor | None], mask: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Propose updated parameters for every unit.

        Args:
            params: name -> (G, ...) current values; grads: name -> (G, ...) or None (no gradient: unchanged).
            mask: (G,) bool, units allowed to move (used only to keep the state of the others).
        Returns:
            (proposed params, proposed state); commit with :meth:`commit` once the proposal is accepted.
        """
        out = {}
        for name, p in params.items():
            g = grads.get(name)
            out[name] = p if g is None else p.add(g, alpha=-self.lr)
        return out, {}

    def commit(self, state: dict[str, Tensor], mask: Tensor, everyone: bool | None = None) -> None:
        """SGD keeps no state."""


@dataclass
class BatchedAdam:
    """Adam per unit with ``torch.optim.Adam``'s formulas (amsgrad off, no weight decay).

    All units that are still moving have taken the same number of steps (a unit that stops never restarts),
    so the bias corrections use one Python step counter, as ``torch.optim.Adam`` does per copy.
    """

    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    step_count: int = 0
    exp_avg: dict[str, Tensor] = field(default_factory=dict)
    exp_avg_sq: dict[str, Tensor] = field(default_factory=dict)

    def step(
        self, params: dict[str, Tensor], grads: dict[str, Tensor | None], mask: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Propose updated parameters and optimiser state (see :meth:`BatchedSGD.step`)."""
        beta1, beta2 = self.betas
        step = self.step_count + 1
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = self.lr / bias_correction1
        bias_correction2_sqrt = math.sqrt(bias_correction2)
        out: dict[str, Tensor] = {}
        state: dict[str, Tensor] = {}
        for name, p in params.items():
            g = grads.get(name)
            if g is None:
                # torch.optim skips parameters without a gradient; a zero gradient from the start gives the
                # same (zero) update, so treating "no gradient" as zero keeps the two identical.
                g = torch.zeros_like(p)
            m = self.exp_avg.get(name)
            v = self.exp_avg_sq.get(name)
            m = torch.zeros_like(p) if m is None else m
            v = torch.zeros_like(p) if v is None else v
            m_new = m.lerp(g, 1 - beta1)
            v_new = v.mul(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v_new.sqrt() / bias_correction2_sqrt).add_(self.eps)
            out[name] = p.addcdiv(m_new, denom, value=-step_size)
            state["m." + name] = m_new
            state["v." + name] = v_new
        return out, state

    def commit(self, state: dict[str, Tensor], mask: Tensor, everyone: bool | None = None) -> None:
        """Keep the proposed state of the units in ``mask`` (G,) and the old state of the others.

        ``everyone``: the caller knows whether ``mask`` is all True (None: test it here, a host sync on GPUs).
        """
        self.step_count += 1
        if everyone is None:
            everyone = bool(mask.all())
        for key, new in state.items():
            kind, name = key.split(".", 1)
            store = self.exp_avg if kind == "m" else self.exp_avg_sq
            old = store.get(name)
            if everyone:
                store[name] = new
            else:
                store[name] = masked_select_update(mask, new, torch.zeros_like(new) if old is None else old)


def make_optimizer(name: str, lr: float) -> BatchedSGD | BatchedAdam:
    """Build a batched optimiser by name ("sgd" | "adam")."""
    if name == "sgd":
        return BatchedSGD(lr=lr)
    if name == "adam":
        return BatchedAdam(lr=lr)
    raise ConfigError(f"unknown TTO optimizer {name!r}; choose 'sgd' or 'adam'.")


# ----------------------------------------------------------------------------------------------------------
# in-place, one unit at a time (CPU)


@dataclass
class UnitwiseOptimizer:
    """SGD or Adam on stacked per-unit parameters, updated in place one unit and one tensor at a time.

    Same formulas, in the same order, as :class:`BatchedSGD` / :class:`BatchedAdam` (so the same bits for every
    accepted update), without (G, ...) temporaries: on a CPU this keeps the working set in cache and allocates
    nothing large per step. A unit moves only when its loss and every gradient are finite (checked before the
    update, so nothing needs to be undone); otherwise its parameters and moments stay as they are. With finite
    gradients ``torch.optim``'s updates stay finite unless a weight is already within a step of float overflow;
    a unit whose weights became non-finite even so is reported as not ok (and stops), and the engine then
    returns its predictions before TTO.

    Usage per step: ``update_unit`` for every unit that moves (any order), then ``end_step``.
    """

    kind: str  # "sgd" | "adam"
    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    step_count: int = 0
    exp_avg: dict[str, Tensor] = field(default_factory=dict)
    exp_avg_sq: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("sgd", "adam"):
            raise ConfigError(f"unknown TTO optimizer {self.kind!r}; choose 'sgd' or 'adam'.")

    def update_unit(self, params: dict[str, Tensor], unit: int, grads: dict[str, Tensor | None], ok: Tensor) -> Tensor:
        """Update unit ``unit`` of ``params`` (name -> (G, ...), with their own storage) in place.

        Args:
            grads: name -> gradient of this unit (shape of ``params[name][unit]``) or None (no gradient).
            ok: () bool, the unit may move (e.g. its loss is finite).
        Returns:
            () bool: the update was applied and the new weights are finite.
        """
        ok = ok.clone()
        for g in grads.values():
            if g is not None:
                ok &= torch.isfinite(g.sum())
        on_host = ok.device.type == "cpu"
        if on_host and not bool(ok):  # on a CPU reading the flag costs nothing: skip the work
            return ok
        adam = self.kind == "adam"
        step = self.step_count + 1
        beta1, beta2 = self.betas
        step_size = self.lr / (1 - beta1**step)
        bias_correction2_sqrt = math.sqrt(1 - beta2**step)
        finite = torch.ones_like(ok)
        for name, p_all in params.items():
            p = p_all[unit]
            g = grads.get(name)
            if not adam:
                if g is not None and on_host:
                    p.add_(g, alpha=-self.lr)
                elif g is not None:
                    _apply(p, p.add(g, alpha=-self.lr), ok, False)
                finite &= torch.isfinite(p.sum())
                continue
            if name not in self.exp_avg:
                self.exp_avg[name] = torch.zeros_like(p_all)
                self.exp_avg_sq[name] = torch.zeros_like(p_all)
            m, v = self.exp_avg[name][unit], self.exp_avg_sq[name][unit]
            if g is None:  # torch.optim skips it; a zero gradient from the start gives the same (zero) update
                g = torch.zeros_like(p)
            if on_host:
                m.lerp_(g, 1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = (v.sqrt() / bias_correction2_sqrt).add_(self.eps)
                p.addcdiv_(m, denom, value=-step_size)
            else:  # no host sync: select on the device
                m_new = m.lerp(g, 1 - beta1)
                v_new = v.mul(beta2).addcmul_(g, g, value=1 - beta2)
                denom = (v_new.sqrt() / bias_correction2_sqrt).add_(self.eps)
                _apply(p, p.addcdiv(m_new, denom, value=-step_size), ok, False)
                _apply(m, m_new, ok, False)
                _apply(v, v_new, ok, False)
            finite &= torch.isfinite(p.sum())
        return ok & finite

    def end_step(self) -> None:
        """Close a step (Adam's step counter is shared by all units still moving)."""
        self.step_count += 1


def _apply(dst: Tensor, new: Tensor, ok: Tensor, on_host: bool) -> None:
    """``dst <- new`` where ``ok`` (() bool); on the host the caller has already checked ``ok``."""
    dst.copy_(new if on_host else torch.where(ok, new, dst))
