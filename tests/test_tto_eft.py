"""The EFT baseline loss and scope against hand computations (EFT ``run_eft_step``, notes 7.1)."""

from __future__ import annotations

import math

import torch
from fixtures.models import make_tiny_regressor

from metahmr_cli.losses import LossWeights
from metahmr_cli.tto import TTOConfig
from metahmr_cli.tto.eft import eft_keypoints, eft_loss, leg_orientation_loss
from metahmr_cli.tto.engine import scope_names
from metahmr_cli.tto.schedules import resolve_schedule

# 49-slot indices: GT set starts at 25 (R ankle 25, R knee 26, R hip 27, L hip 28, L knee 29, L ankle 30, pelvis 39)
R_ANK, R_KNEE, R_HIP, L_HIP, L_KNEE, L_ANK, PELVIS = 25, 26, 27, 28, 29, 30, 39


def _legs() -> tuple[torch.Tensor, torch.Tensor]:
    pred = torch.zeros(2, 49, 2)
    gt = torch.zeros(2, 49, 3)
    gt[..., 2] = 1.0
    # person 0 -- right leg: GT knee->ankle (0, 0.5), predicted (0.5, 0): 1 - cos = 1, confidences 1 * 0.5
    gt[0, R_ANK, :2] = torch.tensor([0.0, 0.5])
    gt[0, R_ANK, 2] = 0.5
    pred[0, R_ANK] = torch.tensor([0.5, 0.0])
    # person 0 -- left leg: GT (0.3, 0.4), predicted the opposite direction: 1 - cos = 2, confidences 1 * 1
    gt[0, L_ANK, :2] = torch.tensor([0.3, 0.4])
    pred[0, L_ANK] = torch.tensor([-0.3, -0.4])
    # person 1 -- right leg as person 0's (0.5); left leg shorter than 0.0089: ignored
    gt[1, R_ANK, :2] = torch.tensor([0.0, 0.5])
    gt[1, R_ANK, 2] = 0.5
    pred[1, R_ANK] = torch.tensor([0.5, 0.0])
    gt[1, L_ANK, :2] = torch.tensor([0.003, 0.004])
    pred[1, L_ANK] = torch.tensor([-0.3, -0.4])
    return pred, gt


def test_leg_orientation_sums_the_two_legs():
    """EFT: loss_legOri = leftValidity * (1 - cos_left) + rightValidity * (1 - cos_right) (a sum, batch size 1)."""
    pred, gt = _legs()
    per_person = leg_orientation_loss(pred, gt, reduction="sample")
    torch.testing.assert_close(per_person, torch.tensor([0.5 * 1.0 + 1.0 * 2.0, 0.5 * 1.0]))
    torch.testing.assert_close(leg_orientation_loss(pred, gt, reduction="batch"), torch.tensor((2.5 + 0.5) / 2))


def test_eft_masks_gt_hips_and_ankles_only():
    kp = torch.rand(1, 49, 3) + 0.1
    out = eft_keypoints(kp)
    zeroed = {R_ANK, L_ANK, R_HIP, L_HIP, PELVIS}
    for j in range(49):
        expected = 0.0 if j in zeroed else float(kp[0, j, 2])
        assert float(out[0, j, 2]) == expected, j  # OpenPose slots (0..24) keep their confidences
    with_hips = eft_keypoints(kp, with_hips=True)
    for j in range(49):
        expected = 0.0 if j in (R_ANK, L_ANK) else float(kp[0, j, 2])
        assert float(with_hips[0, j, 2]) == expected, j
    torch.testing.assert_close(out[..., :2], kp[..., :2])


def test_eft_loss_by_hand():
    gen = torch.Generator().manual_seed(0)
    joints = 0.3 * torch.randn(1, 49, 3, generator=gen)
    cam = torch.tensor([[0.9, 0.05, -0.1]])
    betas = torch.randn(1, 10, generator=gen)
    kp = torch.cat([torch.rand(1, 49, 2, generator=gen) * 1.6 - 0.8, torch.ones(1, 49, 1)], dim=-1)
    weights = LossWeights()
    total, terms = eft_loss(joints, cam, betas, kp, weights)

    s, tx, ty = 0.9, 0.05, -0.1
    used = [j for j in range(25, 49) if j not in (R_ANK, L_ANK, R_HIP, L_HIP, PELVIS)]
    sq = 0.0
    proj = {}
    for j in range(49):
        x = s * (float(joints[0, j, 0]) + tx) * (256 / 192)
        y = s * (float(joints[0, j, 1]) + ty)
        proj[j] = (x, y)
        if j in used:
            sq += (x - float(kp[0, j, 0])) ** 2 + (y - float(kp[0, j, 1])) ** 2
    l2d = sq / (49 * 2)
    leg = 0.0
    for knee, ankle in ((R_KNEE, R_ANK), (L_KNEE, L_ANK)):
        dp = (proj[ankle][0] - proj[knee][0], proj[ankle][1] - proj[knee][1])
        dg = (float(kp[0, ankle, 0] - kp[0, knee, 0]), float(kp[0, ankle, 1] - kp[0, knee, 1]))
        cos = (dp[0] * dg[0] + dp[1] * dg[1]) / (math.hypot(*dp) * math.hypot(*dg))
        leg += 1.0 - cos
    beta_prior = float((betas**2).mean())
    cam_term = math.exp(-10 * s) ** 2
    expected = 60.0 * (5.0 * l2d + 0.001 * beta_prior + cam_term + 0.005 * leg)
    assert math.isclose(float(terms["keypoint_2d"]), l2d, rel_tol=1e-5)
    assert math.isclose(float(terms["leg_orientation"]), leg, rel_tol=1e-5)
    assert math.isclose(float(total), expected, rel_tol=1e-5)


def test_eft_scope_leaves_batchnorm_affine_out():
    """EFT's exemplar mode sets requires_grad=False on every BatchNorm's weight and bias."""
    net = make_tiny_regressor("cliff")
    phase = resolve_schedule(TTOConfig(schedule="eft")).phases[0]
    assert phase.freeze_norm
    bn = {
        f"{mod_name}.{p}"
        for mod_name, mod in net.named_modules()
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)
        for p in ("weight", "bias")
    }
    assert bn, "the test network has no BatchNorm; the test would be vacuous"
    names = scope_names(net, "all", freeze_norm=True)
    assert not bn & set(names)
    assert set(names) == {n for n, _ in net.named_parameters()} - bn
    # the other schedules adapt them with scope "all"
    assert bn <= set(scope_names(net, "all"))
    assert not resolve_schedule(TTOConfig(schedule="reference")).phases[1].freeze_norm


def test_process_gives_eft_20_steps_and_prints_them(tmp_path):
    import io

    from rich.console import Console

    from metahmr_cli.pipeline import Pipeline
    from metahmr_cli.process_config import ProcessConfig
    from metahmr_cli.tto import resolve_schedule

    cfg = ProcessConfig(inputs=["x.jpg"], out=tmp_path, tto=TTOConfig(schedule="eft"))
    assert resolve_schedule(cfg.tto).max_steps == 20
    buf = io.StringIO()
    pipe = Pipeline(cfg, detector=object(), keypoints=lambda *a, **k: None, networks=object(), body=object(),
                    console=Console(file=buf, width=40))
    pipe._say_schedule()
    assert "eft: up to 20 adam steps" in " ".join(buf.getvalue().split())
