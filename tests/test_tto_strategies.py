"""Execution strategies of the TTO engine: same results whatever the strategy and chunking, chunk sizes that
follow the memory budget, the automatic choice, the in-place optimiser and the device settings.

Tolerances:
- float64, strategies and chunkings against each other: 1e-12. The strategies compute the same formulas;
  they differ only in the order of floating-point sums (grouped vs single convolutions, batched vs single
  matmuls, batch sizes of the feature pass). In float32 those differences are at most a few ulps at 1 m after
  TTO (observed <= 1e-6 m, about 8 ulps of 2^-23); the same reassociation in float64 (unit roundoff 1.1e-16)
  gives ~1e-15, so 1e-12 leaves three orders of magnitude of margin and would still catch any difference of
  formula (those show at 1e-6 and above).
- float32, strategies against each other and against the float64 run: per field, 1e-3 of how far TTO moved that
  field from the plain regression (plus 8 ulps of its magnitude; :func:`moved_tolerance`). The strategies then
  differ by rounding only, but Adam's sign-normalised steps amplify it: a weight whose gradient is at rounding
  level moves by about +-lr either way, so rotations can differ by ~1e-5 after a TTO that moves them by 0.19
  (measured: up to 6e-5 of the movement, with AVX2 and AVX-512 kernels and 1 or 2 threads), while a difference
  of formula changes a result by a sizable fraction of its movement. A fixed 1e-5 failed on AVX-512 machines.
- Optimiser updates (in place vs stacked): bit for bit (same operations in the same order).
- bf16 autocast of the backbone: 2e-2 relative to the spread of the float32 outputs (bf16 keeps 8 bits of
  mantissa, unit roundoff 2^-9 = 2e-3; the backbone's features carry a few of those).
"""

from __future__ import annotations

import copy

import pytest
import torch
from fixtures.models import make_tiny_regressor
from test_tto_support import make_inputs

from metahmr_cli.errors import ConfigError
from metahmr_cli.models import build_regressor
from metahmr_cli.tto import BatchedAdam, BatchedSGD, TTOConfig, TTOInputs, run_tto
from metahmr_cli.tto import strategies as st
from metahmr_cli.tto.optim import UnitwiseOptimizer

FIELDS = ("rotmat", "betas", "cam_crop", "transl", "vertices", "joints")
TIB = 2**40


@pytest.fixture(scope="module")
def nets():
    return make_tiny_regressor("cliff", seed=0), make_tiny_regressor("cliff", seed=1)


@pytest.fixture(scope="module")
def nets64(nets):
    return tuple(copy.deepcopy(n).double() for n in nets)


def _to64(inputs: TTOInputs) -> TTOInputs:
    return TTOInputs(inputs.images.double(), inputs.crop.to(dtype=torch.float64), inputs.keypoints2d.double())


def _assert_same(a, b, atol):
    for name in FIELDS:
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=atol, rtol=0, msg=f"{name} differs")
    assert torch.equal(a.steps, b.steps) and torch.equal(a.converged, b.converged)
    assert torch.equal(a.reverted, b.reverted)


# schedule settings whose TTO moves the mesh well beyond the tolerances; the early-stop cases stop the people of
# make_inputs(4, seed=22) after different numbers of updates (paper: [3, 4, 3, 2], eft: [3, 2, 2, 1])
CASES = {
    "metahmr-all": dict(schedule="metahmr", scope="all", lr=1e-4, max_steps=2, early_stop=False),
    "metahmr-head": dict(schedule="metahmr", scope="head", lr=1e-4, max_steps=2, early_stop=False),
    "paper-early-stop": dict(schedule="paper", scope="all", lr=1e-4, max_steps=4, early_stop_tol=0.03),
    "eft-early-stop": dict(schedule="eft", scope="all", lr=1e-4, max_steps=4, early_stop_tol=0.1),
    "reference-groups": dict(schedule="reference", lr=1e-4, max_steps=2, group_size=2, early_stop=False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_strategies_and_chunkings_agree_in_float64(nets64, standin_body, case):
    main, aux = nets64
    body = copy.deepcopy(standin_body).double()
    inputs = _to64(make_inputs(3, seed=22))
    runs = {}
    for strategy, label, extra in (("vmap", "one chunk", {"memory_budget": TIB}),
                                   ("vmap", "chunks of 1", {"memory_budget": 1}),
                                   ("loop", "one chunk", {"memory_budget": TIB}),
                                   ("loop", "chunks of 2", {"memory_budget": TIB, "chunk_size": 2})):
        cfg = TTOConfig(**CASES[case], strategy=strategy, **extra)
        runs[(strategy, label)] = run_tto(main, aux, body, inputs, cfg)
    ref = runs[("vmap", "one chunk")]
    plain = run_tto(main, aux, body, inputs, TTOConfig(schedule="none"))
    assert (ref.vertices - plain.vertices).abs().amax() > 1e-4, "TTO barely moved the mesh: the test is vacuous"
    for (strategy, label), res in runs.items():
        assert res.execution["strategies"] == [strategy] * len(res.execution["strategies"])
        if label == "chunks of 1":
            assert set(res.execution["chunks"]) == {1}
        _assert_same(res, ref, atol=1e-12)


def moved_tolerance(result, plain, name: str, fraction: float = 1e-3) -> float:
    """Tolerance for comparing float32 TTO results of field ``name``: ``fraction`` of how far the TTO moved it from
    the plain regression, at least 8 float32 ulps of its magnitude (see the module docstring)."""
    x, x0 = getattr(result, name).double(), getattr(plain, name).double()
    return fraction * float((x - x0).abs().amax()) + 8 * 2.0**-23 * float(x.abs().amax())


@pytest.mark.parametrize("case", ["metahmr-all", "paper-early-stop"])
def test_strategies_agree_in_float32(nets, nets64, standin_body, case):
    main, aux = nets
    inputs = make_inputs(4, seed=22)
    a = run_tto(main, aux, standin_body, inputs, TTOConfig(**CASES[case], strategy="vmap", memory_budget=TIB))
    b = run_tto(main, aux, standin_body, inputs, TTOConfig(**CASES[case], strategy="loop", memory_budget=1))
    exact = run_tto(*nets64, copy.deepcopy(standin_body).double(), _to64(inputs),
                    TTOConfig(**CASES[case], strategy="vmap", memory_budget=TIB))
    plain = run_tto(main, aux, standin_body, inputs, TTOConfig(schedule="none"))
    for name in FIELDS:
        tol = moved_tolerance(exact, plain, name)
        assert tol < 1e-3 * float(getattr(exact, name).abs().amax()) + 1e-6  # tight next to the values compared
        for res in (a, b):
            torch.testing.assert_close(getattr(res, name).double(), getattr(exact, name), atol=tol, rtol=0,
                                       msg=f"{name} differs from float64")
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=tol, rtol=0, msg=f"{name} differs")
    assert torch.equal(a.steps, b.steps) and torch.equal(a.steps, exact.steps)
    assert torch.equal(a.converged, b.converged) and torch.equal(a.reverted, b.reverted)


def test_step_records_agree_across_strategies(nets, standin_body):
    """The loop strategy skips stopped people; their per-step records must still show their final weights."""
    main, aux = nets
    inputs = make_inputs(4, seed=22)
    cfg = dict(CASES["eft-early-stop"])
    records = {}
    for strategy in ("vmap", "loop"):
        seen = []
        res = run_tto(main, aux, standin_body, inputs, TTOConfig(**cfg, strategy=strategy),
                      step_callback=lambda step, dec, active, seen=seen: seen.append(dec.vertices.clone()))
        records[strategy] = (res, seen)
    (res_v, rec_v), (res_l, rec_l) = records["vmap"], records["loop"]
    assert len(set(res_v.steps.tolist())) > 1, "early stop should stop people at different steps"
    assert len(rec_v) == len(rec_l)
    for a, b in zip(rec_v, rec_l, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(rec_l[-1], res_l.vertices, atol=0, rtol=0)


def test_mixed_strategies_step_by_step(standin_body):
    """A network with a small head and a convolutional backbone: on a CPU the released schedule's head step runs
    under vmap and its later steps as a loop, chunk-wide and step by step; early stops and per-step records
    included, it agrees with all-vmap and all-loop execution (float64, 1e-12)."""
    torch.manual_seed(3)
    main = build_regressor("cliff", "resnet_tiny", n_iter=3, hidden=256).eval().double()
    torch.manual_seed(4)
    aux = build_regressor("cliff", "resnet_tiny", n_iter=3, hidden=256).eval().double()
    body = copy.deepcopy(standin_body).double()
    inputs = _to64(make_inputs(4, seed=22))
    cfg = dict(schedule="metahmr", scope="all", lr=1e-4, max_steps=4, early_stop_tol=1e-2, memory_budget=TIB)
    runs = {}
    for strategy in ("auto", "vmap", "loop"):
        seen = []
        res = run_tto(main, aux, body, inputs, TTOConfig(**cfg, strategy=strategy),
                      step_callback=lambda step, dec, active, seen=seen: seen.append(dec.vertices.clone()))
        runs[strategy] = (res, seen)
    mixed, records = runs["auto"]
    assert mixed.execution["strategies"] == ["vmap", "loop"] and not mixed.execution["plans"][0]["unit_major"]
    assert mixed.steps.tolist() == [4, 3, 3, 3]  # people stop at different steps
    for strategy in ("vmap", "loop"):
        res, rec = runs[strategy]
        _assert_same(res, mixed, atol=1e-12)
        assert len(rec) == len(records)
        for a, b in zip(rec, records, strict=True):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------- chunk sizes


def _weight_bytes(net, scopes):
    named = dict(net.named_parameters())
    names = {n for s in scopes for n in net.scope_parameter_names(s)}
    return sum(named[n].numel() * named[n].element_size() for n in names)


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_chunk_size_follows_the_memory_budget(nets, standin_body, strategy):
    main, aux = nets
    inputs = make_inputs(7, seed=24)
    base = dict(schedule="metahmr", scope="all", max_steps=1, early_stop=False, strategy=strategy)
    big = run_tto(main, aux, standin_body, inputs, TTOConfig(**base, memory_budget=TIB))
    plan = big.execution["plans"][0]
    assert big.execution["chunks"] == [7] and plan["units"] == 7  # one chunk
    # the numbers behind the plan are those of the formula (CPU: in-place updates; metahmr uses Adam, a = 1; with
    # every phase looping the units run one after another, so only inputs and predictions are held per unit)
    assert big.execution["unitwise"] and plan["unit_major"] == (strategy == "loop")
    w = _weight_bytes(main, ["all", "head"])
    assert plan["weight_bytes"] == w and plan["activation_bytes"] > 0 and plan["io_bytes"] > 0
    k_unit, k_fixed = st.state_factors(strategy, unitwise=True, adam=True, unit_major=strategy == "loop")
    assert (k_unit, k_fixed) == ((4, 0) if strategy == "vmap" else (0, 4))
    act, io = plan["activation_bytes"], plan["io_bytes"]
    assert plan["per_unit_bytes"] == io + k_unit * w + (act if strategy == "vmap" else 0)
    assert plan["fixed_bytes"] == k_fixed * w + (act if strategy == "loop" else 0)
    # a budget for three units (and a half) gives chunks of 3; one byte gives chunks of 1
    budget = plan["fixed_bytes"] + 3 * plan["per_unit_bytes"] + plan["per_unit_bytes"] // 2
    three = run_tto(main, aux, standin_body, inputs, TTOConfig(**base, memory_budget=budget))
    assert three.execution["chunks"] == [3]
    tiny = run_tto(main, aux, standin_body, inputs, TTOConfig(**base, memory_budget=1))
    assert tiny.execution["chunks"] == [1]
    # chunk_size stays an explicit cap (people per chunk)
    capped = run_tto(main, aux, standin_body, inputs, TTOConfig(**base, memory_budget=TIB, chunk_size=2))
    assert capped.execution["chunks"] == [2]
    for res in (three, tiny, capped):
        _assert_same(res, big, atol=1e-5)


def test_plan_chunk_formula():
    mib = 2**20
    phases = [("vmap", 10 * mib), ("loop", 50 * mib)]
    plan = st.plan_chunk(num_units=100, people_per_unit=1, weight_bytes=8 * mib, phases=phases, unitwise=True,
                         adam=True, budget=1000 * mib, cap_people=None, io_bytes=mib)
    # step by step, in place: vmap k_unit 4 -> 1 + 32 + 10 MiB; loop k_unit 3 -> 1 + 24 MiB; per unit = 43 MiB
    # fixed: vmap 0, loop 1 x 8 + 50 = 58 MiB -> 58 MiB
    assert plan.per_unit_bytes == 43 * mib and plan.fixed_bytes == 58 * mib
    assert plan.units == (1000 - 58) // 43
    stacked = st.plan_chunk(num_units=100, people_per_unit=1, weight_bytes=8 * mib, phases=[("vmap", 10 * mib)],
                            unitwise=False, adam=False, budget=1000 * mib, cap_people=None)
    assert stacked.per_unit_bytes == 3 * 8 * mib + 10 * mib and stacked.fixed_bytes == 0  # weights, grad, proposal
    one_by_one = st.plan_chunk(num_units=100, people_per_unit=1, weight_bytes=8 * mib,
                               phases=[("loop", 10 * mib), ("loop", 50 * mib)], unitwise=True, adam=True,
                               budget=1000 * mib, cap_people=None, unit_major=True, io_bytes=mib)
    assert one_by_one.per_unit_bytes == mib and one_by_one.fixed_bytes == 4 * 8 * mib + 50 * mib
    assert one_by_one.units == 100  # (1000 - 82) MiB hold every unit's inputs and predictions
    few = st.plan_chunk(num_units=3, people_per_unit=20, weight_bytes=mib, phases=phases, unitwise=True, adam=False,
                        budget=TIB, cap_people=45)
    assert few.units == 2  # 45 people / 20 per unit
    assert st.plan_chunk(num_units=5, people_per_unit=1, weight_bytes=mib, phases=phases, unitwise=True, adam=True,
                         budget=1, cap_people=None).units == 1


def test_default_budget_is_positive():
    assert st.default_memory_budget(torch.device("cpu")) > 2**20


# ---------------------------------------------------------------------------------------------- automatic choice


def test_auto_strategy_rule():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    tiny = make_tiny_regressor("cliff")  # convolutions; its head's fc2 is 1024 x 1024
    kp = build_regressor("cliff", "kpnet", hidden=512)  # the open model's sizes: no convolution, small matrices
    for net in (tiny, kp):
        for scope in ("head", "all"):
            names = net.scope_parameter_names(scope)
            assert st.choose_strategy("auto", cuda, net, names) == "vmap"
            assert st.choose_strategy("vmap", cpu, net, names) == "vmap"
            assert st.choose_strategy("loop", cpu, net, names) == "loop"
    assert st.choose_strategy("auto", cpu, tiny, tiny.scope_parameter_names("all")) == "loop"  # convolutions
    assert st.choose_strategy("auto", cpu, tiny, tiny.scope_parameter_names("head")) == "loop"  # 1M-element fc2
    assert st.choose_strategy("auto", cpu, tiny, ["deccam.weight", "deccam.bias"]) == "vmap"
    assert st.choose_strategy("auto", cpu, kp, kp.scope_parameter_names("all")) == "vmap"
    assert st.choose_strategy("auto", cpu, kp, kp.scope_parameter_names("head")) == "vmap"
    with pytest.raises(ConfigError, match="strategy"):
        TTOConfig(strategy="threads").validate()
    with pytest.raises(ConfigError, match="memory_budget"):
        TTOConfig(memory_budget=0).validate()


def test_released_step0_runs_the_head_on_features_once(nets, standin_body, monkeypatch):
    """metahmr with scope all: the step-0 head update runs on features computed once per chunk, not the backbone."""
    from metahmr_cli.tto import chunks, engine, steps

    main, aux = nets
    calls = []
    original = engine._encode
    for module in (engine, chunks, steps):
        monkeypatch.setattr(module, "_encode", lambda *a, **k: calls.append(a[1].shape[0]) or original(*a, **k))
    run_tto(main, aux, standin_body, make_inputs(3, seed=25),
            TTOConfig(schedule="metahmr", max_steps=1, early_stop=False, memory_budget=TIB))
    assert calls.count(3) == 1 and set(calls) <= {1, 3}  # the chunk once (and maybe a 1-person memory probe)


# ---------------------------------------------------------------------------------------------- optimisers


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_in_place_optimiser_matches_stacked_bit_for_bit(kind):
    gen = torch.Generator().manual_seed(0)
    g = 4
    params = {"a": torch.randn(g, 5, 3, generator=gen), "b": torch.randn(g, 7, generator=gen)}
    stacked_opt = BatchedAdam(lr=1e-3) if kind == "adam" else BatchedSGD(lr=1e-3)
    unit_opt = UnitwiseOptimizer(kind, 1e-3)
    stacked = {k: v.clone() for k, v in params.items()}
    inplace = {k: v.clone() for k, v in params.items()}
    for step in range(3):
        grads = {k: torch.randn(v.shape, generator=gen) for k, v in params.items()}
        if step == 1:
            grads["b"][2, 0] = float("inf")  # unit 2 fails at step 1: it keeps its state
        mask = torch.tensor([True, True, True, step < 2])  # unit 3 stops after step 1
        proposal, state = stacked_opt.step(stacked, grads, mask)
        ok = torch.stack([torch.isfinite(proposal[k].reshape(g, -1).sum(1)) for k in proposal]).all(0)
        upd = mask & ok
        stacked = {k: torch.where(upd.view(-1, *[1] * (v.ndim - 1)), proposal[k], v) for k, v in stacked.items()}
        stacked_opt.commit(state, upd)
        oks = []
        for u in range(g):
            if mask[u]:
                oks.append(unit_opt.update_unit(inplace, u, {k: v[u] for k, v in grads.items()},
                                                torch.tensor(True)))
            else:
                oks.append(torch.tensor(False))
        unit_opt.end_step()
        assert torch.equal(torch.stack(oks), upd)
        for k in params:
            assert torch.equal(inplace[k], stacked[k]), (step, k)
    if kind == "adam":
        for k in params:
            assert torch.equal(unit_opt.exp_avg[k], stacked_opt.exp_avg[k])
            assert torch.equal(unit_opt.exp_avg_sq[k], stacked_opt.exp_avg_sq[k])


# ---------------------------------------------------------------------------------------------- device settings


def test_backbone_bf16_autocast_stays_close(nets, standin_body):
    main, aux = nets
    inputs = make_inputs(3, seed=26)
    cfg = dict(schedule="metahmr", scope="all", lr=1e-4, max_steps=2, early_stop=False)
    ref = run_tto(main, aux, standin_body, inputs, TTOConfig(**cfg))
    low = run_tto(main, aux, standin_body, inputs, TTOConfig(**cfg, backbone_bf16=True))
    assert not main.backbone._forward_hooks and not main.backbone._forward_pre_hooks  # hooks removed
    for name in ("vertices", "joints", "betas", "cam_crop"):
        a, b = getattr(low, name), getattr(ref, name)
        assert a.dtype == torch.float32
        spread = (b - b.mean(dim=0)).abs().amax().clamp_min(1e-3)
        assert (a - b).abs().amax() <= 2e-2 * spread + 1e-5, name
    assert not torch.equal(low.vertices, ref.vertices)  # bf16 really ran


def test_compile_falls_back_to_eager_on_failure(nets, standin_body, monkeypatch, caplog):
    main, aux = nets
    inputs = make_inputs(3, seed=27)
    cfg = dict(schedule="metahmr", scope="head", lr=1e-4, max_steps=2, early_stop=False, strategy="vmap")

    def broken_compile(fn, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("no compiler here")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(st, "_COMPILE_FAILED", set())
    eager = run_tto(main, aux, standin_body, inputs, TTOConfig(**cfg))
    with caplog.at_level("WARNING"):
        fallback = run_tto(main, aux, standin_body, inputs, TTOConfig(**cfg, compile=True))
    assert "falling back to eager" in caplog.text
    _assert_same(fallback, eager, atol=1e-5)


def test_inputs_move_to_the_network_device(nets, standin_body):
    main, aux = nets
    inputs = make_inputs(2, seed=28)
    moved = inputs.to("cpu")
    assert moved.images is inputs.images  # nothing to move
    res = run_tto(main, aux, standin_body, inputs, TTOConfig(max_steps=1))
    assert res.vertices.device.type == "cpu"
