"""The batched TTO engine against a slow deep-copy implementation, and its gradients against finite differences.

Every comparison with the deep-copy loop runs with each execution strategy of the engine (``vmap``, ``loop``, and
``vmap`` in chunks of one person from a one-byte memory budget). Tolerance 1e-5 on the outputs (metres for
vertices and joints, unitless for rotations, betas and cameras): the implementations differ only in the order of
floating-point sums (batched, grouped or single-person kernels), a few float32 ulps per forward (observed
<= 1e-6 after 3 updates, i.e. <= 8 ulps of 2^-23 at 1 m). Adam's first steps move each weight by about +-lr
whatever the gradient's size, so a weight whose gradient is at rounding level may flip sign between two correct
implementations (a 2 lr change); the Adam lrs of 1e-4 keep the effect of such flips below the tolerance, while the
TTO itself moves the mesh by more than 100x the tolerance (checked). test_tto_strategies.py compares the
strategies with each other in float64 at 1e-12.
"""

from __future__ import annotations

import copy

import pytest
import torch
from fixtures.models import make_tiny_regressor
from test_tto_support import make_inputs, slow_tto

from metahmr_cli.losses import LossWeights, pseudo_targets
from metahmr_cli.predictions import decode
from metahmr_cli.tto import TTOConfig, batched_forward, inner_update, run_tto, unit_objective
from metahmr_cli.tto import schedules as tto_schedules

FIELDS = ("rotmat", "betas", "cam_crop", "vertices", "joints")
P = 3
STRATEGIES = {
    # the chunking is pinned: the default memory budget follows the machine's free memory, and people grouped into
    # other chunks are summed in another order (one chunk here, one person per chunk below)
    "vmap": dict(strategy="vmap", memory_budget=2**40),
    "loop": dict(strategy="loop"),
    "vmap-chunks-of-1": dict(strategy="vmap", memory_budget=1),
}
_SLOW: dict[tuple, object] = {}


def _slow_once(key: tuple, compute):
    """The deep-copy result of one configuration, computed once for all strategies."""
    if key not in _SLOW:
        _SLOW[key] = compute()
    return _SLOW[key]


@pytest.fixture(scope="module")
def nets():
    return make_tiny_regressor("cliff", seed=0), make_tiny_regressor("cliff", seed=1)


def _assert_matches(res, slow, num_people, moved_from=None, atol=1e-5):
    """``atol``: a number, or a callable ``atol(name, ref)`` giving each field's tolerance."""
    for name in FIELDS:
        ours = getattr(res, name)
        ref = slow.field(name, num_people)
        tol = atol(name, ref) if callable(atol) else atol
        torch.testing.assert_close(ours, ref, atol=tol, rtol=0, msg=f"{name} differs")
    assert torch.equal(res.steps, slow.steps_per_person(num_people))
    if moved_from is not None:  # the comparison is only meaningful if TTO really moved the result
        moved = (res.vertices - moved_from.vertices).abs().amax()
        limit = atol("vertices", slow.field("vertices", num_people)) if callable(atol) else atol
        assert moved > 100 * limit, f"TTO barely changed the mesh ({moved:.2e}); the test would be vacuous"


# (schedule, optimiser, lr) chosen so that a few steps change the mesh by far more than the tolerance. Adam's
# first steps move every weight by about ±lr whatever the gradient's size, so weights whose gradient is at
# float-rounding level can flip sign between two correct implementations: Adam lrs stay at 1e-4 to keep
# those flips below the tolerance.
CASES = {
    "paper": ("sgd", {"head": 2e-4, "last_stage": 2e-4, "all": 2e-4}),
    "metahmr": ("adam", {"head": 1e-4, "last_stage": 1e-4, "all": 1e-4}),
    "reference": ("adam", {"head": 1e-4, "last_stage": 1e-4, "all": 1e-4}),
    "eft": ("adam", {"head": 1e-4, "last_stage": 1e-4, "all": 1e-4}),
}


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("scope", ["head", "last_stage", "all"])
@pytest.mark.parametrize("schedule", ["paper", "metahmr", "reference", "eft"])
def test_engine_equals_deepcopy_loop(nets, standin_body, monkeypatch, schedule, scope, strategy):
    main, aux = nets
    monkeypatch.setattr(tto_schedules, "PAPER_TTO_LR", 1e-3)  # make reference's step-0 SGD update visible
    optimizer, lrs = CASES[schedule]
    steps = 3
    inputs = make_inputs(P, seed=1)
    cfg = TTOConfig(schedule=schedule, scope=scope, optimizer=optimizer, lr=lrs[scope], max_steps=steps,
                    early_stop=False, grouping="person", **STRATEGIES[strategy])
    res = run_tto(main, aux, standin_body, inputs, cfg)
    assert set(res.execution["strategies"]) == {STRATEGIES[strategy]["strategy"]}
    slow = _slow_once(("engine", schedule, scope), lambda: slow_tto(
        main, aux if schedule != "eft" else None, standin_body, inputs, schedule=schedule, scope=scope,
        optimizer=optimizer, lr=lrs[scope], max_steps=steps, units=[[i] for i in range(P)], first_lr=1e-3))
    before = _slow_once(("none",), lambda: run_tto(main, aux, standin_body, inputs, TTOConfig(schedule="none")))
    _assert_matches(res, slow, P, moved_from=before)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_paper_adam_and_early_stop_match(nets, standin_body, strategy):
    main, aux = nets
    inputs = make_inputs(4, seed=2)
    # a loose tolerance that stops people at different iterations
    cfg = TTOConfig(schedule="paper", scope="head", optimizer="adam", lr=1e-4, max_steps=6, early_stop_tol=0.045,
                    grouping="person", **STRATEGIES[strategy])
    res = run_tto(main, aux, standin_body, inputs, cfg)
    slow = _slow_once(("paper-adam",), lambda: slow_tto(
        main, aux, standin_body, inputs, schedule="paper", scope="head", optimizer="adam", lr=1e-4, max_steps=6,
        units=[[i] for i in range(4)], tol=0.045))
    _assert_matches(res, slow, 4)
    assert res.steps.tolist() == [4, 5, 5, 6] and res.converged.all()


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("schedule", ["reference", "paper"])
def test_batch_grouping_equals_shared_copy(nets, standin_body, monkeypatch, schedule, strategy):
    main, aux = nets
    monkeypatch.setattr(tto_schedules, "PAPER_TTO_LR", 1e-3)
    inputs = make_inputs(5, seed=3)
    optimizer = "adam" if schedule == "reference" else "sgd"
    lr = 1e-4 if schedule == "reference" else 2e-4
    cfg = TTOConfig(schedule=schedule, optimizer=optimizer, lr=lr, max_steps=3, grouping="batch", group_size=2,
                    early_stop=False, **STRATEGIES[strategy])
    res = run_tto(main, aux, standin_body, inputs, cfg)
    assert res.execution["chunks"] == {"vmap": [2, 1], "loop": [2, 1], "vmap-chunks-of-1": [1, 1]}[strategy]
    scope = "all" if schedule == "reference" else "head"
    slow = _slow_once(("groups", schedule), lambda: slow_tto(
        main, aux, standin_body, inputs, schedule=schedule, scope=scope, optimizer=optimizer, lr=lr, max_steps=3,
        units=[[0, 1], [2, 3], [4]], first_lr=1e-3))
    plain = _slow_once(("none-5",), lambda: run_tto(main, aux, standin_body, inputs, TTOConfig(schedule="none")))

    def tol(name, ref):
        # shared copies adapted with Adam over all weights: rounding differences of the summation order (chunks of
        # 2 + 1 groups vs 1 + 1) reach ~1e-5 on rotations that TTO moves by 0.5 (see test_tto_strategies.py's
        # moved_tolerance): 1e-3 of the field's movement, at least 8 ulps of its magnitude
        moved = float((ref.double() - getattr(plain, name).double()).abs().amax())
        return 1e-3 * moved + 8 * 2.0**-23 * float(ref.abs().amax())

    _assert_matches(res, slow, 5, moved_from=plain, atol=tol)
    # one copy per group: people of a group end with the same weights, so the same step count
    assert res.steps[0] == res.steps[1] and res.steps[2] == res.steps[3]


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_reference_early_stop_quirk_matches(nets, standin_body, strategy):
    """Released schedule with its defaults (lr 1e-5, grouping by batch) and the step-1 quirk.

    At step 1 the released loop compares the step-1 L_2D with the step-0 *pseudo* loss (~0.8 vs ~0.16 here),
    so a tolerance of 1.0 stops every group right after its first Adam update (2 updates in all); without
    the quirk the first comparison would come one step later.
    """
    main, aux = nets
    inputs = make_inputs(4, seed=4)
    for tol, expected_steps in ((1.0, 2), (1e-3, 15)):
        cfg = TTOConfig(schedule="reference", grouping="batch", group_size=2, early_stop_tol=tol,
                        **STRATEGIES[strategy])
        res = run_tto(main, aux, standin_body, inputs, cfg)
        slow = slow_tto(main, aux, standin_body, inputs, schedule="reference", scope="all", optimizer="adam",
                        lr=1e-5, max_steps=14, units=[[0, 1], [2, 3]], tol=tol)
        _assert_matches(res, slow, 4)
        assert (res.steps == expected_steps).all()


# ---------------------------------------------------------------------------------------------- gradients


def _double_setup(body, seed=5):
    main = make_tiny_regressor("cliff", seed=0).double()
    aux = make_tiny_regressor("cliff", seed=1).double()
    body64 = copy.deepcopy(body).double()
    inputs = make_inputs(3, seed=seed, dtype=torch.float64)
    inputs = inputs.validated()
    with torch.no_grad():
        aux_dec = decode(aux(inputs.images, inputs.crop.bbox_info()), body64, inputs.crop)
    targets = pseudo_targets(aux_dec, inputs.keypoints2d, inputs.has_smpl, inputs.has_pose_3d)
    return main, body64, inputs, targets


@pytest.mark.parametrize(("kind", "scope"), [("expl", "head"), ("expl", "all"), ("2d", "last_stage"),
                                             ("eft", "all")])
def test_per_person_gradient_matches_finite_differences(standin_body, kind, scope):
    main, body, inputs, targets = _double_setup(standin_body)
    p = len(inputs)
    names = main.scope_parameter_names(scope)
    own = dict(main.named_parameters())
    gen = torch.Generator().manual_seed(7)
    theta = {n: own[n].detach().unsqueeze(0).repeat(p, *[1] * own[n].ndim) for n in names}
    # make the people's weights differ, as after a few TTO steps
    theta = {n: v + 1e-3 * torch.randn(v.shape, generator=gen, dtype=v.dtype) for n, v in theta.items()}
    direction = {n: torch.randn(v.shape, generator=gen, dtype=v.dtype) for n, v in theta.items()}
    # unit-norm direction per person keeps the probe far from the kinks of the L1 vertex term
    norm = sum(d.flatten(1).pow(2).sum(1) for d in direction.values()).sqrt()
    direction = {n: d / norm.reshape(-1, *[1] * (d.ndim - 1)) for n, d in direction.items()}

    def losses(params):
        return unit_objective(main, body, params, inputs.images, inputs.crop, inputs.keypoints2d, targets,
                              kind=kind, weights=LossWeights(), num_units=p)[0]

    leaves = {n: v.clone().requires_grad_() for n, v in theta.items()}
    grads = torch.autograd.grad(losses(leaves).sum(), list(leaves.values()))
    analytic = sum((g * direction[n]).flatten(1).sum(1) for n, g in zip(names, grads, strict=True))
    eps = 1e-6
    with torch.no_grad():
        plus = losses({n: v + eps * direction[n] for n, v in theta.items()})
        minus = losses({n: v - eps * direction[n] for n, v in theta.items()})
    numeric = (plus - minus) / (2 * eps)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-9)


def test_person_loss_depends_only_on_own_weights(standin_body):
    main, body, inputs, targets = _double_setup(standin_body)
    names = main.scope_parameter_names("head")
    own = dict(main.named_parameters())
    theta = {n: own[n].detach().unsqueeze(0).repeat(3, *[1] * own[n].ndim) for n in names}

    def losses(params):
        return unit_objective(main, body, params, inputs.images, inputs.crop, inputs.keypoints2d, targets,
                              kind="expl", weights=LossWeights(), num_units=3)[0]

    base = losses(theta)
    bumped = {n: v.clone() for n, v in theta.items()}
    bumped["fc1.weight"][1] += 0.1
    after = losses(bumped)
    assert after[1] != base[1]
    assert torch.equal(after[[0, 2]], base[[0, 2]])


# ---------------------------------------------------------------------------------------------- inner update


@pytest.mark.parametrize("grouping", ["person", "batch"])
def test_inner_update_is_one_first_order_step(nets, standin_body, grouping):
    main, aux = nets
    inputs = make_inputs(4, seed=6).validated()
    with torch.no_grad():
        aux_dec = decode(aux(inputs.images, inputs.crop.bbox_info()), standin_body, inputs.crop)
    targets = pseudo_targets(aux_dec, inputs.keypoints2d)
    params = {n: p for n, p in main.named_parameters() if n in main.scope_parameter_names("head")}
    lr = 1e-3
    adapted = inner_update(main, params, inputs, targets, lr, "head", grouping, body=standin_body, group_size=3)
    units = [[0], [1], [2], [3]] if grouping == "person" else [[0, 1, 2], [3]]
    slow = slow_tto(main, aux, standin_body, inputs, schedule="paper", scope="head", optimizer="sgd", lr=lr,
                    max_steps=1, units=units)
    assert adapted["fc1.weight"].shape[0] == len(units)
    # forward every person with its unit's adapted weights and compare with the deep-copy result
    out = batched_forward(main, adapted, inputs.images, inputs.crop.bbox_info(),
                          group_size=1 if grouping == "person" else 3)
    dec = decode(out, standin_body, inputs.crop)
    for name in ("rotmat", "betas", "vertices"):
        torch.testing.assert_close(getattr(dec, name).detach(), slow.field(name, 4), atol=1e-5, rtol=0)
    # first order: d(sum θ')/dθ = number of units (the inner gradient is detached)
    (g,) = torch.autograd.grad(adapted["deccam.bias"].sum(), [params["deccam.bias"]])
    torch.testing.assert_close(g, torch.full_like(g, float(len(units))))


def test_batch_grouping_keeps_groups_when_a_person_has_few_keypoints(nets, standin_body):
    """Released eval adapts every person of its batch: a person with few keypoints must not shift the groups.

    Groups of 2 are {0, 1}, {2, 3}, {4, 5}. Person 0 has 3 visible keypoints (< min_keypoints 4) but its group has
    27, so the group is adapted as a whole; people 4 and 5 have 1 each (group total 2 < 4): that group falls back.
    """
    main, aux = nets
    inputs = make_inputs(6, seed=8).validated()
    kp = inputs.keypoints2d.clone()
    kp[0, 28:, 2] = 0.0
    kp[4:, 26:, 2] = 0.0
    inputs = type(inputs)(inputs.images, inputs.crop, kp)
    cfg = TTOConfig(schedule="reference", grouping="batch", group_size=2, max_steps=3, lr=1e-4, early_stop=False)
    res = run_tto(main, aux, standin_body, inputs, cfg)
    slow = slow_tto(main, aux, standin_body, inputs, schedule="reference", scope="all", optimizer="adam", lr=1e-4,
                    max_steps=3, units=[[0, 1], [2, 3]])
    assert res.fell_back.tolist() == [False, False, False, False, True, True]
    for name in FIELDS:
        torch.testing.assert_close(getattr(res, name)[:4], slow.field(name, 4), atol=1e-5, rtol=0)
    assert res.steps.tolist() == [4, 4, 4, 4, 0, 0]
    plain = run_tto(main, aux, standin_body, inputs, TTOConfig(schedule="none"))
    torch.testing.assert_close(res.vertices[4:], plain.vertices[4:], atol=1e-6, rtol=0)
