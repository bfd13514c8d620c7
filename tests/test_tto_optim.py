"""Batched per-unit optimisers against torch.optim on separate copies."""

from __future__ import annotations

import pytest
import torch

from metahmr_cli.tto.optim import BatchedAdam, BatchedSGD


def _loss(w: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # a non-quadratic loss so that Adam's moments vary from step to step
    return ((w - target) ** 2).sum() + torch.sin(3 * w).sum()


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_batched_optimizer_equals_torch_optim_per_copy(kind):
    gen = torch.Generator().manual_seed(0)
    g, shape = 4, (3, 5)
    start = torch.randn(g, *shape, generator=gen)
    targets = torch.randn(g, *shape, generator=gen)
    lr = 0.05
    steps = 6
    stop_at = {1: 2}  # unit 1 stops after 2 updates

    # torch.optim, one copy per unit
    expected = []
    for u in range(g):
        w = start[u].clone().requires_grad_()
        opt = torch.optim.SGD([w], lr=lr) if kind == "sgd" else torch.optim.Adam([w], lr=lr)
        for _ in range(stop_at.get(u, steps)):
            opt.zero_grad()
            _loss(w, targets[u]).backward()
            opt.step()
        expected.append(w.detach())

    # batched
    opt_b = BatchedSGD(lr) if kind == "sgd" else BatchedAdam(lr)
    params = {"w": start.clone()}
    active = torch.ones(g, dtype=torch.bool)
    for step in range(steps):
        leaf = params["w"].detach().requires_grad_()
        total = sum(_loss(leaf[u], targets[u]) for u in range(g))
        (grad,) = torch.autograd.grad(total, [leaf])
        proposal, state = opt_b.step(params, {"w": grad}, active)
        params = {"w": torch.where(active[:, None, None], proposal["w"], params["w"])}
        opt_b.commit(state, active)
        for u, n in stop_at.items():
            if step + 1 == n:
                active[u] = False
    torch.testing.assert_close(params["w"], torch.stack(expected), atol=1e-6, rtol=0)


def test_adam_treats_missing_gradient_as_no_move():
    opt = BatchedAdam(0.1)
    p = {"a": torch.ones(2, 3)}
    new, state = opt.step(p, {"a": None}, torch.ones(2, dtype=torch.bool))
    assert torch.equal(new["a"], p["a"])
