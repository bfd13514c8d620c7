"""The meta step against slow, obvious computations (float64, eval mode, a tiny network).

The references use a plain module forward of one copy of the network per adapted weight set and a loss
written out here term by term (not ``metahmr_cli.losses``), and ``torch.autograd.grad`` for the inner gradient.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from metahmr_cli.body.smpl import load_body_model, load_mean_params
from metahmr_cli.geometry.camera import CropInfo
from metahmr_cli.geometry.rotation import axis_angle_to_rotmat
from metahmr_cli.losses import LossTargets, pseudo_targets
from metahmr_cli.models import build_regressor
from metahmr_cli.predictions import decode
from metahmr_cli.training.meta_step import MetaStep, MetaStepConfig, TrainBatch, adapt
from metahmr_cli.training.probe import probe_inner_loop
from metahmr_cli.tto import InnerLoop, batched_forward

DT = torch.float64
B = 3
LR = 2e-4
HEAD = [f"{m}.{p}" for m in ("fc1", "fc2", "decpose", "decshape", "deccam") for p in ("weight", "bias")]


def hand_loss(dec, tgt: LossTargets, *, pseudo: bool = True, camera: bool = True,
              keypoint_weight: float = 5.0) -> torch.Tensor:
    """Released L_train / L_expl written out: 5 L2D + 5 L3D + 0.5 Lv + Lpose + 0.001 Lbeta + Lcam (means)."""
    conf = tgt.keypoints2d[..., 2:].clone()
    conf[:, :25] = 0.0  # openpose weight 0, GT weight 1
    l2d = (conf * (dec.keypoints2d - tgt.keypoints2d[..., :2]) ** 2).mean()
    total = keypoint_weight * l2d
    if pseudo:
        pj = dec.joints[:, 25:49]
        pj = pj - 0.5 * (pj[:, 2:3] + pj[:, 3:4])
        gj = tgt.joints3d[..., :3]
        gj = gj - 0.5 * (gj[:, 2:3] + gj[:, 3:4])
        l3d = (tgt.joints3d[..., 3:] * (pj - gj) ** 2).mean()
        lv = (dec.vertices - tgt.vertices).abs().mean()
        lpose = ((dec.rotmat - tgt.rotmat) ** 2).mean()
        lbeta = ((dec.betas - tgt.betas) ** 2).mean()
        total = total + 5.0 * l3d + 0.5 * lv + lpose + 0.001 * lbeta
    if camera:
        total = total + (torch.exp(-10.0 * dec.cam_crop[:, 0]) ** 2).mean()
    return total


def take(t: LossTargets, i: slice) -> LossTargets:
    return LossTargets(**{f.name: (getattr(t, f.name)[i] if getattr(t, f.name) is not None else None)
                          for f in dataclasses.fields(t)})


@pytest.fixture(scope="module")
def setup(standin_dir):
    torch.manual_seed(0)
    body = load_body_model(standin_dir, "neutral", dtype=DT, with_h36m=False)
    mp = load_mean_params(standin_dir)
    main = build_regressor("cliff", "resnet_tiny", n_iter=2, mean_params=mp).to(DT).eval()
    aux = build_regressor("cliff", "resnet_tiny", n_iter=2, mean_params=mp).to(DT).eval()
    with torch.no_grad():  # make the head visibly non-trivial
        for n in ("decpose", "decshape", "deccam"):
            getattr(main, n).weight.mul_(20.0)
    images = torch.randn(B, 3, 256, 192, dtype=DT)
    crop = CropInfo.from_boxes(torch.tensor([[300.0, 250.0], [200.0, 310.0], [420.0, 200.0]], dtype=DT),
                               torch.tensor([1.6, 2.1, 1.2], dtype=DT), torch.tensor([600.0, 800.0], dtype=DT))
    kp = torch.cat([torch.rand(B, 49, 2, dtype=DT) * 1.6 - 0.8, torch.ones(B, 49, 1, dtype=DT)], dim=-1)
    kp[0, 30, 2] = 0.0
    rot = axis_angle_to_rotmat(0.3 * torch.randn(B, 24, 3, dtype=DT))
    betas = torch.randn(B, 10, dtype=DT)
    out = body(rot, betas)
    j3d = torch.cat([out.joints[:, 25:49], torch.ones(B, 24, 1, dtype=DT)], dim=-1)
    ones = torch.ones(B, dtype=DT)
    gt = LossTargets(keypoints2d=kp, joints3d=j3d, vertices=out.vertices, rotmat=rot, betas=betas,
                     has_smpl=ones, has_pose_3d=ones)
    batch = TrainBatch(images=images, crop=crop, keypoints2d=kp, gt=gt)
    with torch.no_grad():
        aux_dec = decode(aux(images, crop.bbox_info()), body, crop)
    pseudo = pseudo_targets(aux_dec, kp, ones, ones)
    return body, main, aux, batch, pseudo


def reference_adapted(main, body, batch, targets, lr, *, per_sample: bool, pseudo: bool = True):
    """θ' by autograd of ``hand_loss`` on plain module forwards: one per sample, or one for the batch. Without
    pseudo terms the loss is test-time optimisation's unweighted L_2D."""
    theta = dict(main.named_parameters())
    units = [slice(i, i + 1) for i in range(B)] if per_sample else [slice(0, B)]
    result = []
    for sl in units:
        dec = decode(main(batch.images[sl], batch.crop[sl].bbox_info()), body, batch.crop[sl])
        loss = hand_loss(dec, take(targets, sl), pseudo=pseudo, camera=pseudo, keypoint_weight=5.0 if pseudo else 1.0)
        grads = torch.autograd.grad(loss, [theta[k] for k in HEAD])
        result.append({k: (theta[k] - lr * g).detach() for k, g in zip(HEAD, grads, strict=True)})
    return result


def cfg_for(grouping: str, *, scope: str = "head", loss: str = "expl", **kw) -> MetaStepConfig:
    return MetaStepConfig(grouping=grouping, inner=InnerLoop(lr=LR, scope=scope, loss=loss), **kw)


@pytest.mark.parametrize("grouping", ["sample", "batch"])
def test_inner_update_matches_hand_computation(setup, grouping):
    body, main, _, batch, pseudo = setup
    feats = main.backbone(batch.images)
    adapted, n = adapt(main, body, batch, pseudo, cfg_for(grouping), feats)
    ref = reference_adapted(main, body, batch, pseudo, LR, per_sample=grouping == "sample")
    assert n == (1 if grouping == "sample" else B)
    for k in HEAD:
        assert adapted[k].shape[0] == len(ref)
        for u, r in enumerate(ref):
            torch.testing.assert_close(adapted[k][u].detach(), r[k], rtol=1e-9, atol=1e-12)
    # the step is not vacuous
    moved = (adapted["fc2.weight"][0] - main.fc2.weight).abs().max()
    assert moved > 1e-6


def test_per_batch_is_mean_of_per_sample(setup):
    """With all gates on, the batch-mean loss's gradient is the mean of the per-sample gradients, so the
    shared w' of grouping "batch" is exactly the mean of the per-sample w'_i (and differs from each)."""
    body, main, _, batch, pseudo = setup
    feats = main.backbone(batch.images)
    per_sample, _ = adapt(main, body, batch, pseudo, cfg_for("sample"), feats)
    shared, _ = adapt(main, body, batch, pseudo, cfg_for("batch"), feats)
    for k in HEAD:
        torch.testing.assert_close(shared[k][0], per_sample[k].mean(dim=0), rtol=1e-9, atol=1e-12)
    assert (per_sample["fc1.weight"][0] - per_sample["fc1.weight"][1]).abs().max() > 1e-8


def test_inner_update_without_pseudo_terms_uses_2d_only(setup):
    body, main, _, batch, _ = setup
    feats = main.backbone(batch.images)
    targets = LossTargets(keypoints2d=batch.keypoints2d)
    adapted, _ = adapt(main, body, batch, targets, cfg_for("sample", loss="2d"), feats)
    ref = reference_adapted(main, body, batch, targets, LR, per_sample=True, pseudo=False)
    for k in HEAD:
        for u, r in enumerate(ref):
            torch.testing.assert_close(adapted[k][u].detach(), r[k], rtol=1e-9, atol=1e-12)


def _grads(module) -> dict[str, torch.Tensor]:
    return {k: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for k, p in module.named_parameters()}


@pytest.mark.parametrize("grouping", ["sample", "batch"])
def test_outer_gradient_is_first_order_maml(setup, grouping):
    """grad_w = (1/B) Σ_i ∇ 60·L_i evaluated at w'_{g(i)} (FOMAML), backbone included."""
    body, main0, aux0, batch, pseudo = setup
    main, aux = copy.deepcopy(main0), copy.deepcopy(aux0)
    step = MetaStep(main, aux, body, cfg_for(grouping))
    main.zero_grad()
    loss, stats = step(batch)
    loss.backward()
    got = _grads(main)

    per_sample = grouping == "sample"
    ref_theta = reference_adapted(main0, body, batch, pseudo, LR, per_sample=per_sample)
    units = [slice(i, i + 1) for i in range(B)] if per_sample else [slice(0, B)]
    want = {k: torch.zeros_like(p) for k, p in main0.named_parameters()}
    outer_total = 0.0
    for sl, theta in zip(units, ref_theta, strict=True):
        net = copy.deepcopy(main0)
        with torch.no_grad():
            for k, v in theta.items():
                net.get_parameter(k).copy_(v)
        dec = decode(net(batch.images[sl], batch.crop[sl].bbox_info()), body, batch.crop[sl])
        li = 60.0 * hand_loss(dec, take(batch.gt, sl))
        weight = (sl.stop - sl.start) / B
        outer_total += weight * float(li.detach())
        gi = torch.autograd.grad(li, list(net.parameters()))
        for (k, _), g in zip(net.named_parameters(), gi, strict=True):
            want[k] += weight * g
    assert float(stats["outer"]) == pytest.approx(outer_total, rel=1e-9)
    for k in want:
        err = float((got[k] - want[k]).abs().max())
        assert err <= 1e-7 * float(want[k].abs().max()) + 1e-12, (k, err, float(want[k].abs().max()))
    assert aux.fc1.weight.grad is None  # released mode: the aux net gets no gradient


def test_plain_step_and_paper_aux(setup):
    body, main0, aux0, batch, _ = setup
    # meta=False: ordinary gradient of 60·L_train
    main = copy.deepcopy(main0)
    loss, _ = MetaStep(main, None, body, cfg_for("batch", meta=False))(batch)
    loss.backward()
    ref = copy.deepcopy(main0)
    li = 60.0 * hand_loss(decode(ref(batch.images, batch.crop.bbox_info()), body, batch.crop), batch.gt)
    li.backward()
    for (k, p), q in zip(main.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-7, atol=1e-10, msg=k)
    # paper mode: the aux net is trained by 60·L_train(f_u) on the ground truth
    main, aux = copy.deepcopy(main0), copy.deepcopy(aux0)
    loss, stats = MetaStep(main, aux, body, cfg_for("batch", aux_mode="paper"))(batch)
    loss.backward()
    ref = copy.deepcopy(aux0).requires_grad_(True)
    la = 60.0 * hand_loss(decode(ref(batch.images, batch.crop.bbox_info()), body, batch.crop), batch.gt)
    la.backward()
    assert float(stats["aux"]) == pytest.approx(float(la.detach()), rel=1e-9)
    for (k, p), q in zip(aux.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-7, atol=1e-10, msg=k)


@pytest.mark.parametrize("grouping", ["sample", "batch"])
def test_backbone_scope_in_train_mode(setup, grouping):
    """scope "last_stage" with the main net in train mode (BatchNorm on batch statistics, the default net_mode):
    each unit's forward normalises with its own people's statistics, as a plain train-mode forward of that unit
    does. (This used to fail: BatchNorm's in-place running-stat update cannot run under vmap.)"""
    body, main0, _, batch, pseudo = setup
    main = copy.deepcopy(main0).train()
    for m in main.modules():  # keep train-mode BatchNorm, take the randomness of dropout out of the comparison
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    names = main.scope_parameter_names("last_stage")
    assert any(n.startswith("backbone.") for n in names)
    adapted, n = adapt(copy.deepcopy(main), body, batch, pseudo, cfg_for(grouping, scope="last_stage"))
    units = [slice(i, i + 1) for i in range(B)] if grouping == "sample" else [slice(0, B)]
    for u, sl in enumerate(units):
        net = copy.deepcopy(main)
        theta = dict(net.named_parameters())
        dec = decode(net(batch.images[sl], batch.crop[sl].bbox_info()), body, batch.crop[sl])
        grads = torch.autograd.grad(hand_loss(dec, take(pseudo, sl)), [theta[k] for k in names])
        for k, g in zip(names, grads, strict=True):
            torch.testing.assert_close(adapted[k][u].detach(), (theta[k] - LR * g).detach(), rtol=1e-9, atol=1e-12)
        # the adapted unit's forward (the outer forward) equals a train-mode forward of a copy holding w'
        with torch.no_grad():
            for k in names:
                net.get_parameter(k).copy_(adapted[k][u])
            want = net(batch.images[sl], batch.crop[sl].bbox_info())
        out = batched_forward(main, {k: v[u : u + 1] for k, v in adapted.items()}, batch.images[sl],
                              batch.crop[sl].bbox_info(), group_size=sl.stop - sl.start)
        torch.testing.assert_close(out["rotmat"].detach(), want["rotmat"], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize(("optimizer", "steps", "lr"), [("adam", 1, 1e-3), ("adam", 3, 1e-3), ("sgd", 2, LR)])
@pytest.mark.parametrize("grouping", ["sample", "batch"])
def test_inner_loop_matches_torch_optim(setup, grouping, optimizer, steps, lr):
    """Several inner updates and Adam: per unit, ``steps`` updates of ``torch.optim.SGD``/``Adam`` on a copy of the
    network with the hand-written loss; the adapted weights are those, and the outer gradient still reaches w
    unchanged (first order: d w'/d w = identity)."""
    body, main, _, batch, pseudo = setup
    feats = main.backbone(batch.images)
    cfg = MetaStepConfig(grouping=grouping, inner=InnerLoop(optimizer=optimizer, lr=lr, steps=steps))
    adapted, _ = adapt(main, body, batch, pseudo, cfg, feats)
    units = [slice(i, i + 1) for i in range(B)] if grouping == "sample" else [slice(0, B)]
    for u, sl in enumerate(units):
        net = copy.deepcopy(main)
        theta = dict(net.named_parameters())
        opt_cls = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
        opt = opt_cls([theta[k] for k in HEAD], lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            dec = decode(net(batch.images[sl], batch.crop[sl].bbox_info()), body, batch.crop[sl])
            hand_loss(dec, take(pseudo, sl)).backward()
            opt.step()
        for k in HEAD:
            torch.testing.assert_close(adapted[k][u].detach(), theta[k].detach(), rtol=1e-9, atol=1e-12)
    # Adam's first update moves every weight with a gradient by about lr, whatever the loss scale
    if optimizer == "adam" and steps == 1:
        moved = (adapted["fc1.weight"][0] - main.fc1.weight).detach().abs()
        assert float(moved.max()) == pytest.approx(lr, rel=1e-6)
    # first order: the gradient of a function of w' w.r.t. w is the gradient w.r.t. w'
    probe = sum((adapted[k] * (k_i + 1.0)).sum() for k_i, k in enumerate(HEAD))
    grads = torch.autograd.grad(probe, [dict(main.named_parameters())[k] for k in HEAD])
    for k_i, g in enumerate(grads):
        torch.testing.assert_close(g, torch.full_like(g, (k_i + 1.0) * len(units)))


def test_probe_measures_the_inner_step_by_hand(setup):
    """probe_inner_loop against hand computations: ‖w′ − w‖/‖w‖ over the head (mean over units), 60·L_train at w
    and at the per-sample w′_i (the batch mean), and the cosine of the two gradients over all weights."""
    body, main0, aux0, batch, pseudo = setup
    step = MetaStep(copy.deepcopy(main0), copy.deepcopy(aux0), body, cfg_for("sample"))
    rep = probe_inner_loop(step, batch)
    theta0 = dict(main0.named_parameters())
    ref = reference_adapted(main0, body, batch, pseudo, LR, per_sample=True)
    w = torch.cat([theta0[k].detach().flatten() for k in HEAD])
    rel = sum(float(torch.cat([(r[k] - theta0[k].detach()).flatten() for k in HEAD]).norm() / w.norm())
              for r in ref) / B
    assert rep.rel_weight_change == [pytest.approx(rel, rel=1e-6)]

    net = copy.deepcopy(main0)
    plain = 60.0 * hand_loss(decode(net(batch.images, batch.crop.bbox_info()), body, batch.crop), batch.gt)
    g_plain = torch.autograd.grad(plain, list(net.parameters()))
    plain = float(plain.detach())
    outer, g_meta = 0.0, [torch.zeros_like(p) for p in net.parameters()]
    for i, theta in enumerate(ref):
        net = copy.deepcopy(main0)
        with torch.no_grad():
            for k, v in theta.items():
                net.get_parameter(k).copy_(v)
        sl = slice(i, i + 1)
        li = 60.0 * hand_loss(decode(net(batch.images[sl], batch.crop[sl].bbox_info()), body, batch.crop[sl]),
                              take(batch.gt, sl)) / B
        outer += float(li.detach())
        for acc, g in zip(g_meta, torch.autograd.grad(li, list(net.parameters())), strict=True):
            acc += g
    a, b = torch.cat([g.flatten() for g in g_plain]), torch.cat([g.flatten() for g in g_meta])
    assert rep.outer == [pytest.approx(float(plain), rel=1e-9), pytest.approx(outer, rel=1e-9)]
    assert rep.rel_outer_change == [pytest.approx((outer - float(plain)) / float(plain), rel=1e-6)]
    assert rep.grad_cosine == pytest.approx(float(a @ b / (a.norm() * b.norm())), rel=1e-9)
    assert rep.grad_cosine < 1.0 - 1e-6 and rel > 1e-6  # the step moved something
