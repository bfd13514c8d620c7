"""The TTO engine on a CUDA device gives the CPU results (skipped without CUDA).

Tolerances: CUDA vs CPU in full float32 (TF32 off, the engine's default): 1e-4, different kernels (cuBLAS/cuDNN
vs MKL/oneDNN) reassociate sums; a few float32 ulps per operation, amplified by the TTO steps as on the CPU
(see test_tto_strategies.py), stay far below it. TF32 on vs off: TF32 rounds the inputs of every matmul and
convolution to 10 mantissa bits (unit roundoff 2^-11 = 4.9e-4); outputs of a network move by about 1e-3
relative to their size, so the test allows 1e-2 relative to the spread of the outputs across people.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from fixtures.models import make_tiny_regressor
from test_tto_support import make_inputs

from metahmr_cli.tto import TTOConfig, run_tto

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

DEV = torch.device("cuda")


def _nets():
    return make_tiny_regressor("cliff", seed=0), make_tiny_regressor("cliff", seed=1)


def _on_gpu(main, aux, body, inputs):
    moved = type(inputs)(images=inputs.images.to(DEV), crop=inputs.crop.to(DEV), keypoints2d=inputs.keypoints2d.to(DEV))
    return copy.deepcopy(main).to(DEV), copy.deepcopy(aux).to(DEV), copy.deepcopy(body).to(DEV), moved


@pytest.mark.parametrize("strategy", ["auto", "vmap", "loop"])
@pytest.mark.parametrize("schedule,scope", [("paper", "head"), ("metahmr", None), ("reference", None), ("eft", "all")])
def test_cuda_matches_cpu(standin_body, schedule, scope, strategy):
    main, aux = _nets()
    inputs = make_inputs(4, seed=3)
    cfg = TTOConfig(schedule=schedule, scope=scope, max_steps=3, lr=1e-4 if schedule != "reference" else None,
                    strategy=strategy)
    cpu = run_tto(main, aux, standin_body, inputs, cfg)
    gpu = run_tto(*_on_gpu(main, aux, standin_body, inputs), cfg)
    assert not gpu.execution["unitwise"]
    if strategy == "auto":  # vmap on GPUs, except for a single unit (reference: the 4 people share one copy)
        assert set(gpu.execution["strategies"]) == ({"loop"} if schedule == "reference" else {"vmap"})
    assert torch.equal(cpu.steps, gpu.steps.cpu())
    for name in ("rotmat", "betas", "cam_crop", "transl"):
        torch.testing.assert_close(getattr(gpu, name).cpu(), getattr(cpu, name), atol=1e-4, rtol=1e-4)


def test_inputs_on_the_host_move_to_the_network_device(standin_body):
    main, aux = _nets()
    inputs = make_inputs(3, seed=4)
    cfg = TTOConfig(max_steps=2, lr=1e-4)
    g_main, g_aux, g_body, g_inputs = _on_gpu(main, aux, standin_body, inputs)
    on_device = run_tto(g_main, g_aux, g_body, g_inputs, cfg)
    from_host = run_tto(g_main, g_aux, g_body, inputs, cfg)  # pinned, non-blocking copies inside
    assert from_host.vertices.device.type == "cuda"
    torch.testing.assert_close(from_host.vertices, on_device.vertices, atol=0, rtol=0)


def test_tf32_setting(standin_body):
    main, aux = _nets()
    inputs = make_inputs(4, seed=5)
    g = _on_gpu(main, aux, standin_body, inputs)
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    cfg = dict(schedule="metahmr", scope="all", max_steps=3, lr=1e-4, early_stop=False)
    full = run_tto(*g, TTOConfig(**cfg))
    fast = run_tto(*g, TTOConfig(**cfg, tf32=True))
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == flags  # restored
    for name in ("vertices", "joints", "betas", "cam_crop", "rotmat"):
        a, b = getattr(fast, name), getattr(full, name)
        spread = (b - b.mean(dim=0)).abs().amax().clamp_min(1e-3)
        assert (a - b).abs().amax() <= 1e-2 * spread + 1e-5, name


def test_bf16_backbone_and_memory_budget_on_cuda(standin_body):
    main, aux = _nets()
    inputs = make_inputs(4, seed=6)
    g = _on_gpu(main, aux, standin_body, inputs)
    cfg = dict(schedule="metahmr", scope="all", max_steps=2, lr=1e-4, early_stop=False)
    ref = run_tto(*g, TTOConfig(**cfg))
    assert ref.execution["plans"][0]["budget"] > 0
    one = run_tto(*g, TTOConfig(**cfg, memory_budget=1))
    assert set(one.execution["chunks"]) == {1}
    torch.testing.assert_close(one.vertices, ref.vertices, atol=1e-5, rtol=0)
    low = run_tto(*g, TTOConfig(**cfg, backbone_bf16=True))
    assert torch.isfinite(low.vertices).all()
    spread = (ref.vertices - ref.vertices.mean(dim=0)).abs().amax()
    assert (low.vertices - ref.vertices).abs().amax() <= 2e-2 * spread + 1e-5


def _count_syncs(fn) -> int:
    """Host syncs made by ``fn()`` (CUDA's sync debug mode warns at each one)."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def test_one_host_sync_per_step(standin_body):
    """Each extra step costs one sync of the engine (the batched early-stop test) plus those of the body model's
    own forward (smplx indexes its kinematic tree with tensor elements)."""
    main, aux = _nets()
    inputs = make_inputs(4, seed=7)
    g_main, g_aux, g_body, g_inputs = _on_gpu(main, aux, standin_body, inputs)
    rot, betas = g_body.rest_pose(4)
    body_syncs = _count_syncs(lambda: g_body(rot, betas))

    def run(steps: int) -> int:
        cfg = TTOConfig(schedule="paper", scope="head", max_steps=steps, lr=1e-4, early_stop=False, strategy="vmap")
        return _count_syncs(lambda: run_tto(g_main, g_aux, g_body, g_inputs, cfg))

    run(2)  # warm-up (lazy initialisation)
    extra = run(6) - run(2)
    assert extra <= 4 * (1 + body_syncs), (extra, body_syncs)
