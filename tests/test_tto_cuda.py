"""The TTO engine on a CUDA device gives the CPU results (skipped without CUDA)."""

from __future__ import annotations

import copy

import pytest
import torch
from fixtures.models import make_tiny_regressor
from test_tto_support import make_inputs

from metahmr_cli.tto import TTOConfig, run_tto

pytestmark = pytest.mark.cuda


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("schedule,scope", [("paper", "head"), ("metahmr", None), ("reference", None), ("eft", "all")])
def test_cuda_matches_cpu(standin_body, schedule, scope):
    main, aux = make_tiny_regressor("cliff", seed=0), make_tiny_regressor("cliff", seed=1)
    inputs = make_inputs(4, seed=3)
    cfg = TTOConfig(schedule=schedule, scope=scope, max_steps=3, lr=1e-4 if schedule != "reference" else None)
    cpu = run_tto(main, aux, standin_body, inputs, cfg)
    dev = torch.device("cuda")
    inputs_gpu = type(inputs)(images=inputs.images.to(dev), crop=inputs.crop.to(dev),
                              keypoints2d=inputs.keypoints2d.to(dev))
    gpu = run_tto(copy.deepcopy(main).to(dev), copy.deepcopy(aux).to(dev), copy.deepcopy(standin_body).to(dev),
                  inputs_gpu, cfg)
    assert torch.equal(cpu.steps, gpu.steps.cpu())
    for name in ("rotmat", "betas", "cam_crop", "transl"):
        torch.testing.assert_close(getattr(gpu, name).cpu(), getattr(cpu, name), atol=1e-4, rtol=1e-4)
