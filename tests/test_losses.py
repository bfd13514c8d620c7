"""Losses: hand-computed examples, 'sample' vs 'batch' consistency and finite-difference gradients."""

from __future__ import annotations

import math

import pytest
import torch

from metahmr_cli.errors import InputError
from metahmr_cli.losses import (
    LossTargets,
    LossWeights,
    camera_loss,
    combined_loss,
    keypoint_2d_loss,
    keypoint_3d_loss,
    pseudo_targets,
    smpl_loss,
    vertex_loss,
)
from metahmr_cli.predictions import Decoded

F64 = torch.float64


def test_keypoint_2d_hand_computed():
    pred = torch.zeros(1, 49, 2, dtype=F64)
    gt = torch.zeros(1, 49, 3, dtype=F64)
    gt[0, 0] = torch.tensor([1.0, 0.0, 1.0])  # OpenPose slot: error 1^2 + 0^2, conf 1
    gt[0, 30] = torch.tensor([0.5, -0.5, 0.5])  # GT slot: 0.5 * (0.25 + 0.25)
    assert math.isclose(keypoint_2d_loss(pred, gt).item(), 0.25 / 98)
    assert math.isclose(keypoint_2d_loss(pred, gt, 1.0, 0.0).item(), 1.0 / 98)
    assert math.isclose(keypoint_2d_loss(pred, gt, 1.0, 1.0).item(), 1.25 / 98)
    # the input confidences are not modified
    assert gt[0, 0, 2].item() == 1.0 and gt[0, 30, 2].item() == 0.5


def _gt24() -> torch.Tensor:
    gt = torch.zeros(24, 4, dtype=F64)
    gt[2, :3] = torch.tensor([1.0, 0.0, 0.0])
    gt[3, :3] = torch.tensor([-1.0, 0.0, 0.0])
    gt[10, :3] = torch.tensor([0.0, 1.0, 0.0])
    gt[:, 3] = 1.0
    gt[10, 3] = 0.5
    return gt


def test_keypoint_3d_hand_computed():
    gt = torch.stack([_gt24(), _gt24()])
    pred = torch.zeros(2, 49, 3, dtype=F64)
    pred[:, 25:] = gt[:, :, :3] + torch.tensor([5.0, -3.0, 2.0], dtype=F64)  # pelvis centring removes the shift
    pred[:, 25 + 10, 2] += 0.3  # one entry off by 0.3 with confidence 0.5
    expected = 0.5 * 0.09 / 72
    both = torch.tensor([1, 1])
    assert math.isclose(keypoint_3d_loss(pred, gt, both).item(), expected, rel_tol=1e-12)
    # a (B, 24, 3) prediction is used as is
    assert math.isclose(keypoint_3d_loss(pred[:, 25:], gt, both).item(), expected, rel_tol=1e-12)
    pred[1, 25 + 10, 2] += 0.3  # sample 1 now has error 0.6
    s = keypoint_3d_loss(pred, gt, torch.tensor([0, 1]), reduction="sample")
    assert torch.allclose(s, torch.tensor([0.0, 0.5 * 0.36 / 72], dtype=F64))
    assert math.isclose(keypoint_3d_loss(pred, gt, torch.tensor([0, 1])).item(), 0.5 * 0.36 / 72)
    empty = keypoint_3d_loss(pred, gt, torch.tensor([0, 0]))
    assert empty.item() == 0.0 and empty.shape == ()


def test_vertex_smpl_camera_hand_computed():
    V = 7
    pv = torch.zeros(2, V, 3, dtype=F64)
    gv = torch.zeros(2, V, 3, dtype=F64)
    gv[0, 3, 1] = -0.2
    gv[1] = 1.0
    assert math.isclose(vertex_loss(pv, gv, torch.tensor([1, 0])).item(), 0.2 / (V * 3))
    assert math.isclose(vertex_loss(pv, gv, torch.tensor([1, 1])).item(), (0.2 / 21 + 1.0) / 2)

    eye = torch.eye(3, dtype=F64).expand(1, 24, 3, 3)
    rz90 = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=F64).expand(1, 24, 3, 3)
    pb = torch.zeros(1, 10, dtype=F64)
    gb = pb.clone()
    gb[0, 4] = 1.0
    # I - Rz90 has four entries of magnitude 1 per joint -> 4*24 / (24*9); betas 1 / 10
    pose, betas = smpl_loss(eye, pb, rz90, gb, torch.tensor([1]))
    assert math.isclose(pose.item(), 4 / 9) and math.isclose(betas.item(), 0.1)
    pose0, betas0 = smpl_loss(eye, pb, rz90, gb, torch.tensor([0]))
    assert pose0.item() == 0.0 and betas0.item() == 0.0

    cam = torch.tensor([[0.0, 5.0, 5.0], [0.1, 0.0, 0.0]], dtype=F64)
    assert math.isclose(camera_loss(cam).item(), (1 + math.exp(-2)) / 2)
    assert torch.allclose(camera_loss(cam, "sample"), torch.tensor([1.0, math.exp(-2)], dtype=F64))


def _random_case(B: int = 5, V: int = 9, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    kp_gt = torch.cat([r(B, 49, 2), torch.rand(B, 49, 1, generator=g, dtype=F64)], dim=-1)
    gt3d = torch.cat([r(B, 24, 3), torch.rand(B, 24, 1, generator=g, dtype=F64)], dim=-1)
    pred = Decoded(
        rotmat=r(B, 24, 3, 3), betas=r(B, 10), cam_crop=r(B, 3) * 0.1 + 0.5, transl=r(B, 3),
        vertices=r(B, V, 3), joints=r(B, 49, 3), keypoints2d=r(B, 49, 2), keypoints2d_full=r(B, 49, 2),
    )
    target = LossTargets(
        keypoints2d=kp_gt, joints3d=gt3d, vertices=r(B, V, 3), rotmat=r(B, 24, 3, 3), betas=r(B, 10),
        has_smpl=torch.tensor([1, 0, 1, 1, 0][:B]), has_pose_3d=torch.tensor([0, 1, 1, 0, 1][:B]),
    )
    return pred, target


def _slice_target(t: LossTargets, i: int) -> LossTargets:
    sl = slice(i, i + 1)
    return LossTargets(t.keypoints2d[sl], t.joints3d[sl], t.vertices[sl], t.rotmat[sl], t.betas[sl],
                       t.has_smpl[sl], t.has_pose_3d[sl])


def test_sample_reduction_equals_batch_on_each_sample():
    pred, target = _random_case()
    w = LossWeights(openpose_2d=0.3)
    total_s, parts_s = combined_loss(pred, target, w, reduction="sample")
    total_b, parts_b = combined_loss(pred, target, w)
    assert total_s.shape == (5,) and total_b.shape == ()
    for i in range(5):
        tot_i, parts_i = combined_loss(pred[i], _slice_target(target, i), w)
        assert torch.allclose(total_s[i], tot_i, atol=1e-12)
        for k in parts_i:
            assert torch.allclose(parts_s[k][i], parts_i[k], atol=1e-12), k
    # masked terms: batch = mean of the per-sample values over the masked subset; others: plain mean
    m3 = target.has_pose_3d == 1
    ms = target.has_smpl == 1
    assert torch.allclose(parts_b["keypoint_3d"], parts_s["keypoint_3d"][m3].mean())
    for k in ("vertices", "pose", "betas"):
        assert torch.allclose(parts_b[k], parts_s[k][ms].mean())
    for k in ("keypoint_2d", "camera"):
        assert torch.allclose(parts_b[k], parts_s[k].mean())


def test_combined_weights_terms_and_outer():
    pred, target = _random_case(seed=1)
    w = LossWeights()
    total, parts = combined_loss(pred, target, w)
    kp2 = keypoint_2d_loss(pred.keypoints2d, target.keypoints2d, 0.0, 1.0)
    kp3 = keypoint_3d_loss(pred.joints, target.joints3d, target.has_pose_3d)
    ver = vertex_loss(pred.vertices, target.vertices, target.has_smpl)
    pose, betas = smpl_loss(pred.rotmat, pred.betas, target.rotmat, target.betas, target.has_smpl)
    cam = camera_loss(pred.cam_crop)
    expected = 0.5 * ver + 5 * kp2 + 5 * kp3 + pose + 0.001 * betas + cam
    assert torch.allclose(total, expected, atol=1e-12)
    assert set(parts) == {"keypoint_2d", "keypoint_3d", "vertices", "pose", "betas", "camera"}
    assert all(not v.requires_grad for v in parts.values())
    outer, _ = combined_loss(pred, target, w, outer=True)
    assert torch.allclose(outer, 60 * expected)
    only2d, parts2d = combined_loss(pred, target, w, terms={"keypoint_2d"})
    assert torch.allclose(only2d, 5 * kp2) and set(parts2d) == {"keypoint_2d"}
    # missing targets are skipped by default and refused when requested
    t2 = LossTargets(keypoints2d=target.keypoints2d)
    total2, parts2 = combined_loss(pred, t2, w)
    assert set(parts2) == {"keypoint_2d", "camera"} and torch.allclose(total2, 5 * kp2 + cam)
    with pytest.raises(InputError, match="keypoint_3d"):
        combined_loss(pred, t2, w, terms={"keypoint_3d"})
    with pytest.raises(InputError, match="unknown"):
        combined_loss(pred, target, w, terms={"keypoints"})


def test_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(4)
    gt2 = torch.cat([torch.randn(2, 49, 2, generator=g, dtype=F64),
                     torch.rand(2, 49, 1, generator=g, dtype=F64)], dim=-1)
    pred2 = torch.randn(2, 49, 2, generator=g, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: keypoint_2d_loss(p, gt2, 0.5, 1.0), (pred2,), fast_mode=True)
    gt3 = torch.cat([torch.randn(3, 24, 3, generator=g, dtype=F64),
                     torch.rand(3, 24, 1, generator=g, dtype=F64)], dim=-1)
    pred3 = torch.randn(3, 49, 3, generator=g, dtype=F64, requires_grad=True)
    mask = torch.tensor([1, 0, 1])
    assert torch.autograd.gradcheck(lambda p: keypoint_3d_loss(p, gt3, mask), (pred3,), fast_mode=True)
    assert torch.autograd.gradcheck(lambda p: keypoint_3d_loss(p, gt3, mask, "sample"), (pred3,), fast_mode=True)
    cam = (torch.rand(4, 3, generator=g, dtype=F64) * 0.6 + 0.05).requires_grad_(True)  # typical scales
    assert torch.autograd.gradcheck(lambda c: camera_loss(c), (cam,), fast_mode=True)


def test_combined_directional_derivative():
    pred, target = _random_case(seed=2)
    cam = pred.cam_crop.clone().requires_grad_(True)
    kp = pred.keypoints2d.clone().requires_grad_(True)

    def f(c, k):
        d = Decoded(pred.rotmat, pred.betas, c, pred.transl, pred.vertices, pred.joints, k, pred.keypoints2d_full)
        return combined_loss(d, target, LossWeights())[0]

    total = f(cam, kp)
    gc, gk = torch.autograd.grad(total, (cam, kp))
    g = torch.Generator().manual_seed(5)
    dc = torch.randn(cam.shape, generator=g, dtype=F64)
    dk = torch.randn(kp.shape, generator=g, dtype=F64)
    h = 1e-6
    with torch.no_grad():
        fd = (f(cam + h * dc, kp + h * dk) - f(cam - h * dc, kp - h * dk)) / (2 * h)
    analytic = (gc * dc).sum() + (gk * dk).sum()
    assert torch.allclose(fd, analytic, rtol=1e-6, atol=1e-9)


def test_pseudo_targets_from_aux():
    pred, target = _random_case(seed=3)
    aux = Decoded(**{k: getattr(pred, k).clone().requires_grad_(True) for k in (
        "rotmat", "betas", "cam_crop", "transl", "vertices", "joints", "keypoints2d", "keypoints2d_full")})
    pt = pseudo_targets(aux, target.keypoints2d, target.has_smpl, target.has_pose_3d)
    assert pt.joints3d.shape == (5, 24, 4)
    assert torch.equal(pt.joints3d[..., :3], pred.joints[:, 25:49])
    assert torch.all(pt.joints3d[..., 3] == 1)
    for name in ("joints3d", "vertices", "rotmat", "betas"):
        assert not getattr(pt, name).requires_grad
    # a prediction equal to the aux prediction has zero pseudo terms
    _, parts = combined_loss(pred, pt, LossWeights())
    for k in ("keypoint_3d", "vertices", "pose", "betas"):
        assert parts[k].item() == 0.0
    default = pseudo_targets(aux, target.keypoints2d)
    assert torch.all(default.has_smpl == 1) and torch.all(default.has_pose_3d == 1)


def test_bad_inputs_are_reported():
    with pytest.raises(InputError, match="reduction"):
        camera_loss(torch.zeros(2, 3), reduction="mean")
    with pytest.raises(InputError, match="49"):
        keypoint_2d_loss(torch.zeros(2, 24, 2), torch.zeros(2, 24, 3))
    with pytest.raises(InputError, match="keypoints2d"):
        LossTargets(keypoints2d=torch.zeros(2, 49, 2))
