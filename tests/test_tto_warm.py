"""Warm-started TTO: a person's run may start from the weights their previous run ended with (video tracks).

The reference is independent of the warm-start path: a deep copy of the network with the start weights loaded
into it, run cold on that person alone. Tolerance 1e-5 as in test_tto_equivalence.py (the two runs differ only
in the order of float32 sums: batched vs single-person kernels); Adam lrs of 1e-4 for the same reason.
"""

from __future__ import annotations

import copy

import pytest
import torch
from fixtures.models import make_tiny_regressor
from test_tto_support import make_inputs

from metahmr_cli.errors import ConfigError, InputError
from metahmr_cli.tto import TTOConfig, run_tto

FIELDS = ("rotmat", "betas", "cam_crop", "vertices", "joints")
ATOL = 1e-5
STRATEGIES = {
    "vmap": dict(strategy="vmap"),
    "loop": dict(strategy="loop"),
    "vmap-chunks-of-1": dict(strategy="vmap", memory_budget=1),
}
# "metahmr": the released procedure per person (step-0 head update, then Adam on every weight: the warm state
# holds backbone weights); "paper" in head scope (the warm state holds head weights only).
SCHEDULES = {
    "metahmr": dict(schedule="metahmr", scope="all", optimizer="adam", lr=1e-4, max_steps=3),
    "paper-head": dict(schedule="paper", scope="head", optimizer="adam", lr=1e-4, max_steps=3),
}


@pytest.fixture(scope="module")
def nets():
    return make_tiny_regressor("cliff", seed=0), make_tiny_regressor("cliff", seed=1)


def _with_weights(net, weights):
    """A deep copy of ``net`` holding ``weights`` (name -> tensor)."""
    out = copy.deepcopy(net)
    named = dict(out.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            named[name].copy_(value)
    return out


def _row(res, i):
    return {f: getattr(res, f)[i : i + 1] for f in FIELDS}


def _assert_rows_close(a, b, what):
    for f in FIELDS:
        torch.testing.assert_close(a[f], b[f], atol=ATOL, rtol=0, msg=f"{what}: {f} differs")


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_warm_start_equals_a_cold_run_of_the_network_holding_the_start_weights(nets, standin_body, schedule,
                                                                               strategy):
    main, aux = nets
    cfg = TTOConfig(early_stop=False, grouping="person", **SCHEDULES[schedule], **STRATEGIES[strategy])
    frame1, frame2 = make_inputs(3, seed=11), make_inputs(3, seed=12)
    first = run_tto(main, aux, standin_body, frame1, cfg, keep_weights=True)
    assert first.adapted is not None and all(w is not None for w in first.adapted)
    start = [first.adapted[0], None, first.adapted[2]]
    second = run_tto(main, aux, standin_body, frame2, cfg, start=start, keep_weights=True)

    for i in range(3):
        net = main if start[i] is None else _with_weights(main, start[i])
        alone = run_tto(net, aux, standin_body, frame2[[i]], TTOConfig(
            early_stop=False, grouping="person", **SCHEDULES[schedule]))
        _assert_rows_close(_row(second, i), _row(alone, 0), f"person {i}")
        assert int(second.steps[i]) == int(alone.steps[0])
    # the warm start matters: person 0 ends elsewhere than from the network's own weights
    cold = run_tto(main, aux, standin_body, frame2[[0]], cfg)
    assert (second.vertices[0] - cold.vertices[0]).abs().amax() > 100 * ATOL

    # the kept weights are the ones the outputs come from: a plain forward of a network holding them
    assert second.adapted is not None
    for i in range(3):
        kept = second.adapted[i]
        assert kept is not None
        replay = run_tto(_with_weights(main, kept), None, standin_body, frame2[[i]], TTOConfig(schedule="none"))
        _assert_rows_close(_row(second, i), _row(replay, 0), f"replay of person {i}")


def test_kept_weights_cover_every_adapted_tensor_and_leave_the_network_alone(nets, standin_body):
    main, aux = nets
    before = {k: v.clone() for k, v in main.state_dict().items()}
    cfg = TTOConfig(schedule="metahmr", scope="all", optimizer="adam", lr=1e-4, max_steps=2, early_stop=False)
    res = run_tto(main, aux, standin_body, make_inputs(2, seed=3), cfg, keep_weights=True)
    names = {n for n, _ in main.named_parameters()}
    assert res.adapted is not None
    for kept in res.adapted:
        assert kept is not None and set(kept) == names  # scope "all": every weight
        moved = max(float((kept[n] - before[n]).abs().max()) for n in names)
        assert moved > 0
    for k, v in main.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} was changed"


def test_people_with_too_few_keypoints_keep_no_state(nets, standin_body):
    main, aux = nets
    inputs = make_inputs(2, seed=4)
    inputs.keypoints2d[1, :, 2] = 0  # nobody visible: the regression is kept
    res = run_tto(main, aux, standin_body, inputs, TTOConfig(schedule="metahmr", max_steps=1), keep_weights=True)
    assert res.adapted is not None
    assert res.adapted[0] is not None and res.adapted[1] is None
    assert bool(res.fell_back[1])


def test_warm_start_needs_per_person_weights_that_fit(nets, standin_body):
    main, aux = nets
    inputs = make_inputs(2, seed=5)
    with pytest.raises(ConfigError, match="grouping 'person'"):
        run_tto(main, aux, standin_body, inputs, TTOConfig(schedule="reference"), keep_weights=True)
    good = run_tto(main, aux, standin_body, inputs, TTOConfig(schedule="metahmr", max_steps=1), keep_weights=True)
    assert good.adapted is not None and good.adapted[0] is not None
    with pytest.raises(InputError, match="start states for 2 people"):
        run_tto(main, aux, standin_body, inputs, TTOConfig(schedule="metahmr"), start=[good.adapted[0]])
    wrong = {k: v[..., :1] if v.ndim else v for k, v in good.adapted[0].items()}
    with pytest.raises(InputError, match="does not fit the network"):
        run_tto(main, aux, standin_body, inputs, TTOConfig(schedule="metahmr"), start=[wrong, None])
