"""The inner loop a network is meta-trained with (InnerLoop): schedules, the engine, checkpoint records."""

from __future__ import annotations

import copy

import pytest
import torch
from fixtures.models import make_tiny_regressor
from test_tto_support import make_inputs

from metahmr_cli.body.smpl import load_body_model
from metahmr_cli.errors import CheckpointError, ConfigError
from metahmr_cli.losses import pseudo_targets
from metahmr_cli.models import load_networks, save_networks
from metahmr_cli.predictions import decode
from metahmr_cli.tto import InnerLoop, TTOConfig, inner_phase, inner_update, resolve_schedule, run_tto

DT = torch.float64


@pytest.fixture(scope="module")
def nets64(standin_dir):
    body = load_body_model(standin_dir, "neutral", dtype=DT, with_h36m=False)
    main = make_tiny_regressor("cliff", seed=0).double()
    aux = make_tiny_regressor("cliff", seed=1).double()
    inputs = make_inputs(3, seed=5, dtype=DT)
    return body, main, aux, inputs


def _phase(p):
    return (p.scope, p.optimizer, p.lr, p.loss, p.steps, p.stop_test)


def test_schedules_start_with_the_networks_inner_loop():
    inner = InnerLoop(optimizer="adam", lr=1e-4, steps=2)
    for name in ("metahmr", "reference"):
        sched = resolve_schedule(TTOConfig(schedule=name, inner_loop=inner))
        assert [_phase(p) for p in sched.phases] == [("head", "adam", 1e-4, "expl", 2, False),
                                                     ("all", "adam", 1e-5, "2d", 14, True)]
        assert sched.phases[0] == inner_phase(inner) and sched.needs_aux
    # without a record: the released step (SGD 1e-5, one update, on the head)
    released = resolve_schedule(TTOConfig())
    assert _phase(released.phases[0]) == ("head", "sgd", 1e-5, "expl", 1, False)
    # "paper" repeats the inner update; its optimiser and lr flags still win
    paper = resolve_schedule(TTOConfig(schedule="paper", inner_loop=inner))
    assert [_phase(p) for p in paper.phases] == [("head", "adam", 1e-4, "expl", 14, True)]
    paper = resolve_schedule(TTOConfig(schedule="paper", inner_loop=inner, optimizer="sgd", lr=3e-3))
    assert (paper.phases[0].optimizer, paper.phases[0].lr) == ("sgd", 3e-3)
    # a network meta-trained without the auxiliary net repeats a 2D-only inner loop: no pseudo mesh needed
    two_d = InnerLoop(loss="2d")
    assert not resolve_schedule(TTOConfig(inner_loop=two_d)).needs_aux
    assert not resolve_schedule(TTOConfig(schedule="paper", inner_loop=two_d)).needs_aux
    assert resolve_schedule(TTOConfig(schedule="eft", inner_loop=inner)).phases[0].optimizer == "adam"
    assert resolve_schedule(TTOConfig(schedule="eft", inner_loop=inner)).phases[0].lr == 5e-6  # EFT ignores it


def test_inner_updates_are_never_stopped_early(nets64):
    """Training always takes every inner update, so test time does too: with a stop tolerance that any step
    passes, a person stops after the first Adam update, not inside the inner loop."""
    body, main, aux, inputs = nets64
    for inner_steps in (1, 2, 3):
        cfg = TTOConfig(inner_loop=InnerLoop(lr=1e-3, steps=inner_steps), early_stop_tol=1e9, max_steps=5)
        res = run_tto(main, aux, body, inputs, cfg)
        assert res.steps.tolist() == [inner_steps + 1] * len(inputs)
        assert bool(res.converged.all())


def test_first_updates_are_the_inner_loop_by_hand(nets64):
    """max_steps = 0 leaves the inner loop alone: two SGD steps per person on the unweighted 2D loss, written out
    here (plain module forwards, autograd), for a 2D-only inner loop run without an auxiliary net."""
    body, main, _, inputs = nets64
    lr = 2e-3
    res = run_tto(main, None, body, inputs, TTOConfig(inner_loop=InnerLoop(lr=lr, steps=2, loss="2d"), max_steps=0,
                                                       min_keypoints=0), keep_weights=True)
    names = main.scope_parameter_names("head")
    for i in range(len(inputs)):
        net = copy.deepcopy(main)
        theta = dict(net.named_parameters())
        sl = slice(i, i + 1)
        for _ in range(2):
            dec = decode(net(inputs.images[sl], inputs.crop[sl].bbox_info()), body, inputs.crop[sl])
            kp = inputs.keypoints2d[sl]
            conf = kp[..., 2:].clone()
            conf[:, :25] = 0.0  # GT slots only (the default loss weights)
            loss = (conf * (dec.keypoints2d - kp[..., :2]) ** 2).mean()
            grads = torch.autograd.grad(loss, [theta[k] for k in names])
            with torch.no_grad():
                for k, g in zip(names, grads, strict=True):
                    theta[k] -= lr * g
        assert res.steps[i] == 2
        for k in names:
            torch.testing.assert_close(res.adapted[i][k], theta[k].detach(), rtol=1e-9, atol=1e-12)


def test_training_inner_update_equals_the_first_tto_updates(nets64):
    """The training inner loop (inner_update, per person) and the test-time schedule's first updates are one
    computation: the same adapted weights for every person (Adam, two steps, L_expl)."""
    body, main, aux, inputs = nets64
    inner = InnerLoop(optimizer="adam", lr=1e-3, steps=2)
    res = run_tto(main, aux, body, inputs, TTOConfig(inner_loop=inner, max_steps=0, min_keypoints=0),
                  keep_weights=True)
    with torch.no_grad():
        aux_dec = decode(aux(inputs.images, inputs.crop.bbox_info()), body, inputs.crop)
    v = inputs.validated()
    targets = pseudo_targets(aux_dec, inputs.keypoints2d, v.has_smpl, v.has_pose_3d)
    theta = {k: p for k, p in main.named_parameters()}
    adapted = inner_update(main, theta, v, targets, inner.lr, inner.scope, "person", body=body,
                           optimizer=inner.optimizer, steps=inner.steps, loss=inner.loss)
    for i in range(len(inputs)):
        for k, w in adapted.items():
            torch.testing.assert_close(res.adapted[i][k], w[i].detach(), rtol=1e-9, atol=1e-12)
    moved = (adapted["fc1.weight"][0] - main.fc1.weight).detach().abs().max()
    assert float(moved) > 1e-4  # the updates are not vacuous


def test_inner_loop_settings_are_checked():
    with pytest.raises(ConfigError, match="steps"):
        InnerLoop(steps=0).validate()
    with pytest.raises(ConfigError, match="optimizer"):
        InnerLoop(optimizer="rmsprop").validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="lr"):
        TTOConfig(inner_loop=InnerLoop(lr=-1.0)).validate()
    with pytest.raises(ConfigError, match="tto.inner_loop"):
        TTOConfig(inner_loop={"lr": 1e-4}).validate()  # type: ignore[arg-type]
    inner = InnerLoop(optimizer="adam", lr=1e-4, steps=2, scope="all", loss="2d")
    assert InnerLoop.from_record(inner.to_record()) == inner
    with pytest.raises(ConfigError, match="unknown 'inner_loop' entries"):
        InnerLoop.from_record({**inner.to_record(), "momentum": 0.9}, "x.pt")


def test_checkpoints_record_the_inner_loop(tmp_path):
    main, aux = make_tiny_regressor("cliff", seed=0), make_tiny_regressor("cliff", seed=1)
    inner = InnerLoop(optimizer="adam", lr=1e-4)
    path = save_networks(tmp_path / "with.pt", main, aux, extra={"inner_loop": inner.to_record()})
    assert load_networks(path).inner_loop == inner
    assert load_networks(save_networks(tmp_path / "without.pt", main, aux)).inner_loop is None  # releases
    bad = save_networks(tmp_path / "bad.pt", main, aux, extra={"inner_loop": {"optimizer": "adam", "lr": "fast"}})
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_networks(bad)


def test_2d_inner_loop_runs_without_the_auxiliary_net(nets64):
    body, main, _, inputs = nets64
    with pytest.raises(ConfigError, match="auxiliary"):
        run_tto(main, None, body, inputs, TTOConfig())
    res = run_tto(main, None, body, inputs, TTOConfig(inner_loop=InnerLoop(loss="2d", lr=1e-3), max_steps=2))
    assert (res.steps >= 1).all()
    assert bool((res.reproj_after < res.reproj_before).all())  # the 2D-only updates pull towards the keypoints


def test_an_eval_config_file_can_set_the_inner_loop():
    from metahmr_cli.evaluation.runner import config_from_dict

    cfg = config_from_dict({"inner_loop": {"optimizer": "adam", "lr": 1e-4}})
    assert cfg.inner_loop == InnerLoop(optimizer="adam", lr=1e-4)
    with pytest.raises(ConfigError, match="inner_loop.optimizer"):
        config_from_dict({"inner_loop": {"optimiser": "adam"}})
