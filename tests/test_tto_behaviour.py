"""TTO engine behaviour: isolation of people, fallbacks, reverts, 'none', records, hooks and configuration."""

from __future__ import annotations

import copy

import pytest
import torch
from fixtures.models import make_tiny_regressor
from test_tto_support import make_inputs, regression

from metahmr_cli.errors import ConfigError
from metahmr_cli.losses import LossWeights, combined_loss, pseudo_targets
from metahmr_cli.tto import TTOConfig, TTOInputs, resolve_schedule, run_tto
from metahmr_cli.tto.eft import weak_perspective_keypoints

RESULT_FIELDS = ("rotmat", "betas", "cam_crop", "transl", "vertices", "joints", "steps", "reproj_after")


@pytest.fixture(scope="module")
def nets():
    return make_tiny_regressor("cliff", seed=0), make_tiny_regressor("cliff", seed=1)


def _without(inputs: TTOInputs, k: int) -> TTOInputs:
    keep = torch.tensor([i for i in range(len(inputs)) if i != k])
    return inputs[keep]


def _as_float64(main, aux, body, inputs: TTOInputs):
    to64 = (lambda m: None if m is None else copy.deepcopy(m).double())
    return to64(main), to64(aux), to64(body), TTOInputs(
        inputs.images.double(), inputs.crop.to(dtype=torch.float64), inputs.keypoints2d.double())


def _assert_others_unaffected(full, control, k, run_without):
    """Others are bit-identical to a run where person k behaves normally (same batch), and equal to a run
    without person k. The second comparison runs in float64 (``run_without`` returns both float64 results):
    GEMMs round differently for different batch sizes, and Adam's first steps (about ±lr per weight whatever
    the gradient's size) can turn float32 rounding into differences of 1e-4; in float64 they stay near 1e-12."""
    keep = [i for i in range(len(full)) if i != k]
    for name in RESULT_FIELDS:
        a, b = getattr(full, name)[keep], getattr(control, name)[keep]
        assert torch.equal(a, b), f"{name} of the other people changed"
    full64, reduced64 = run_without()
    for name in RESULT_FIELDS:
        a, c = getattr(full64, name)[keep], getattr(reduced64, name)
        if name == "steps":
            assert torch.equal(a, c)
        else:
            torch.testing.assert_close(a, c, atol=1e-9, rtol=1e-9, msg=f"{name} differs without person {k}")


EFT_CFG = dict(schedule="eft", scope="head", lr=1e-3, max_steps=4, early_stop_tol=1e-4)


def test_early_stopped_person_leaves_others_bit_identical(nets, standin_body):
    main, aux = nets
    inputs = make_inputs(4, seed=11).validated()
    k = 2
    cfg = TTOConfig(**EFT_CFG)
    control = run_tto(main, aux, standin_body, inputs, cfg)
    # person k's keypoints are its own weak-perspective projection: L_2D ~ 0 -> stops after one update
    reg = regression(main, standin_body, inputs)
    kp = inputs.keypoints2d.clone()
    kp[k, 25:, :2] = weak_perspective_keypoints(reg.joints[k : k + 1], reg.cam_crop[k : k + 1])[0, 25:]
    inputs = TTOInputs(inputs.images, inputs.crop, kp)
    full = run_tto(main, aux, standin_body, inputs, cfg)
    assert full.steps[k] == 1 and bool(full.converged[k])
    assert (full.steps[[0, 1, 3]] == 4).all() and control.steps[k] == 4
    m64, a64, b64, in64 = _as_float64(main, aux, standin_body, inputs)
    _assert_others_unaffected(full, control, k, lambda: (run_tto(m64, a64, b64, in64, cfg),
                                                          run_tto(m64, a64, b64, _without(in64, k), cfg)))


@pytest.mark.parametrize("failure", ["nan", "explode"])
@pytest.mark.parametrize("schedule", ["paper", "eft"])
def test_failing_person_is_reverted_and_isolated(nets, standin_body, failure, schedule):
    main, aux = nets
    inputs = make_inputs(4, seed=12).validated()
    k = 1
    cfg = TTOConfig(**EFT_CFG) if schedule == "eft" else TTOConfig(schedule="paper", lr=1e-4, max_steps=3,
                                                                    early_stop=False)
    control = run_tto(main, aux, standin_body, inputs, cfg)
    kp = inputs.keypoints2d.clone()
    if failure == "nan":
        kp[k, 30, 0] = float("nan")
    else:  # finite inputs whose loss overflows float32
        kp[k, 25:, :2] *= 1e25
    inputs = TTOInputs(inputs.images, inputs.crop, kp)
    full = run_tto(main, aux, standin_body, inputs, cfg)
    assert bool(full.reverted[k]) and full.steps[k] == 0
    assert not full.reverted[[0, 2, 3]].any()
    assert (full.steps[[0, 2, 3]] > 0).all()
    # the reverted person keeps its last finite state: here the plain regression
    reg = regression(main, standin_body, inputs)
    torch.testing.assert_close(full.vertices[k], reg.vertices[k], atol=1e-6, rtol=0)
    m64, a64, b64, in64 = _as_float64(main, aux, standin_body, inputs)
    _assert_others_unaffected(full, control, k, lambda: (run_tto(m64, a64, b64, in64, cfg),
                                                          run_tto(m64, a64, b64, _without(in64, k), cfg)))


def test_too_few_keypoints_fall_back_to_regression(nets, standin_body):
    main, aux = nets
    inputs = make_inputs(3, seed=13).validated()
    kp = inputs.keypoints2d.clone()
    kp[0, 28:, 2] = 0.0  # 3 visible keypoints < min_keypoints=4
    inputs = TTOInputs(inputs.images, inputs.crop, kp)
    res = run_tto(main, aux, standin_body, inputs, TTOConfig(schedule="paper", lr=1e-4, max_steps=2))
    reg = regression(main, standin_body, inputs)
    assert res.fell_back.tolist() == [True, False, False]
    assert res.steps[0] == 0 and (res.steps[1:] > 0).all()
    torch.testing.assert_close(res.vertices[0], reg.vertices[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(res.transl[0], reg.transl[0], atol=1e-5, rtol=0)


def test_none_returns_plain_regression(nets, standin_body):
    main, _ = nets
    inputs = make_inputs(3, seed=14)
    res = run_tto(main, None, standin_body, inputs, TTOConfig(schedule="none"))
    reg = regression(main, standin_body, inputs.validated())
    for name in ("rotmat", "betas", "cam_crop", "transl", "vertices", "joints"):
        torch.testing.assert_close(getattr(res, name), getattr(reg, name), atol=1e-6, rtol=0)
    assert (res.steps == 0).all() and not res.fell_back.any() and not res.converged.any()
    assert torch.equal(res.reproj_before, res.reproj_after)


def test_reprojection_error_in_full_image_pixels(nets, standin_body):
    main, _ = nets
    inputs = make_inputs(2, seed=15).validated()
    res = run_tto(main, None, standin_body, inputs, TTOConfig(schedule="none"))
    reg = regression(main, standin_body, inputs)
    # crops are similarities with zoom 256 / (200 * scale) and no rotation: crop px -> full px is a plain scale
    d_norm = reg.keypoints2d[:, 25:] - inputs.keypoints2d[:, 25:, :2]
    d_crop = d_norm * torch.tensor([192 / 2, 256 / 2])
    expected = (d_crop.norm(dim=-1) * (200 * inputs.crop.scale[:, None] / 256)).mean(dim=1)
    torch.testing.assert_close(res.reproj_before, expected, rtol=1e-4, atol=1e-3)


def test_loss_record_hooks_and_flags(nets, standin_body):
    main, aux = nets
    inputs = make_inputs(3, seed=16).validated()
    calls = []

    def hook(step, decoded, active):
        calls.append((step, decoded.vertices.clone(), active.clone()))
        return step

    cfg = TTOConfig(schedule="paper", lr=1e-4, max_steps=3, record_losses=True, early_stop=False)
    res = run_tto(main, aux, standin_body, inputs, cfg, step_callback=hook)
    assert res.losses.shape == (3, 4) and torch.isfinite(res.losses).all()
    # entry 0 = L_expl of the plain regression against the aux pseudo mesh
    reg = regression(main, standin_body, inputs)
    aux_reg = regression(aux, standin_body, inputs)
    targets = pseudo_targets(aux_reg, inputs.keypoints2d)
    expected, _ = combined_loss(reg, targets, LossWeights(), reduction="sample")
    torch.testing.assert_close(res.losses[:, 0], expected, rtol=1e-5, atol=1e-7)
    assert [c[0] for c in calls] == [0, 1, 2, 3] and res.metrics_per_step == [0, 1, 2, 3]
    torch.testing.assert_close(calls[0][1], reg.vertices, atol=1e-6, rtol=0)
    assert torch.equal(calls[-1][1], res.vertices)
    assert all(bool(c[2].all()) for c in calls)


def test_network_untouched_and_mode_restored(nets, standin_body):
    main = make_tiny_regressor("cliff", seed=0)
    aux = make_tiny_regressor("cliff", seed=1)
    main.train()
    before = {k: v.clone() for k, v in main.state_dict().items()}
    run_tto(main, aux, standin_body, make_inputs(2, seed=17), TTOConfig(schedule="reference", max_steps=2))
    run_tto(main, aux, standin_body, make_inputs(2, seed=17), TTOConfig(schedule="eft", max_steps=2))
    assert main.training and all(m.training for m in main.modules()) and not aux.training
    for k, v in main.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_chunking_does_not_change_results(nets, standin_body):
    main, aux = nets
    inputs = make_inputs(5, seed=18)
    cfg = dict(schedule="paper", lr=1e-4, max_steps=2, early_stop=False)
    a = run_tto(main, aux, standin_body, inputs, TTOConfig(**cfg, chunk_size=64))
    b = run_tto(main, aux, standin_body, inputs, TTOConfig(**cfg, chunk_size=2))
    torch.testing.assert_close(a.vertices, b.vertices, atol=1e-5, rtol=0)
    assert torch.equal(a.steps, b.steps)


def test_schedule_defaults_and_config_errors(nets, standin_body):
    ref = resolve_schedule(TTOConfig(schedule="reference"))
    assert [(p.scope, p.optimizer, p.lr, p.loss, p.steps) for p in ref.phases] == [
        ("head", "sgd", 1e-5, "expl", 1), ("all", "adam", 1e-5, "2d", 14)]
    assert ref.grouping == "batch" and ref.group_size == 20 and ref.tol == 2e-5
    meta = resolve_schedule(TTOConfig())
    assert [(p.scope, p.optimizer, p.lr, p.steps) for p in meta.phases] == [("head", "sgd", 1e-5, 1),
                                                                           ("all", "adam", 1e-5, 14)]
    assert meta.grouping == "person"
    paper = resolve_schedule(TTOConfig(schedule="paper"))
    assert [(p.scope, p.optimizer, p.lr, p.steps) for p in paper.phases] == [("head", "sgd", 1e-5, 14)]
    assert meta.grouping == "person"
    eft = resolve_schedule(TTOConfig(schedule="eft"))
    assert [(p.scope, p.optimizer, p.lr, p.steps) for p in eft.phases] == [("all", "adam", 5e-6, 20)]
    assert eft.stop_rule == "threshold" and eft.tol == 2e-4  # EFT's test-time threshold
    assert resolve_schedule(TTOConfig(schedule="none")).phases == ()
    with pytest.raises(ConfigError, match="scope"):
        resolve_schedule(TTOConfig(scope="everything"))
    with pytest.raises(ConfigError, match="auxiliary"):
        run_tto(nets[0], None, standin_body, make_inputs(1), TTOConfig(schedule="paper"))


def test_units_with_non_finite_outputs_get_their_predictions_before_tto():
    from metahmr_cli.predictions import Decoded
    from metahmr_cli.tto.steps import _keep_finite_outputs

    def decoded(value: float) -> Decoded:
        p = 4  # 2 units x 2 people, people in unit order
        return Decoded(rotmat=torch.full((p, 24, 3, 3), value), betas=torch.full((p, 10), value),
                       cam_crop=torch.full((p, 3), value), transl=torch.full((p, 3), value),
                       vertices=torch.full((p, 5, 3), value), joints=torch.full((p, 49, 3), value),
                       keypoints2d=torch.full((p, 49, 2), value), keypoints2d_full=torch.full((p, 49, 2), value))

    after, before = decoded(2.0), decoded(1.0)
    after.transl[3, 2] = float("inf")  # person 3 = second person of unit 1
    steps = torch.tensor([5, 7])
    final, new_steps, reverted = _keep_finite_outputs(after, before, steps, torch.tensor([False, False]), 2)
    assert new_steps.tolist() == [5, 0]
    assert reverted.tolist() == [False, True]
    for name in ("rotmat", "betas", "cam_crop", "transl", "vertices", "joints", "keypoints2d"):
        values = getattr(final, name)
        assert torch.all(values[:2] == 2.0) and torch.all(values[2:] == 1.0), name
