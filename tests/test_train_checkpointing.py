"""Training checkpoints: the random-generator state saved for an exact resume."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from metahmr_cli.training.checkpointing import capture_rng_state, restore_rng_state


@pytest.fixture(autouse=True)
def _keep_global_generators():
    """These tests move the process-wide generators; put them back for the tests that follow."""
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    yield
    random.setstate(saved[0])
    np.random.set_state(saved[1])
    torch.set_rng_state(saved[2])


def _draws() -> dict[str, list[float]]:
    """Draws from each generator, Gaussian ones included (they use the cached second value of a pair)."""
    return {
        "python": [random.random(), float(random.getrandbits(52)), random.gauss(0.0, 1.0)],
        "numpy": np.random.rand(3).tolist() + np.random.randn(3).tolist(),
        "torch": torch.rand(3).tolist() + torch.randn(3).tolist(),
    }


def _disturb() -> None:
    random.seed(1234)
    np.random.seed(1234)
    torch.manual_seed(1234)
    _draws()


def test_rng_state_round_trip_through_a_checkpoint_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0.0, 1.0)  # leave a cached Gaussian in the python and numpy states
    np.random.randn(1)
    state = capture_rng_state()
    expected = _draws()
    # checkpoints are read with weights_only=True: the state must survive that
    torch.save({"rng": state}, tmp_path / "state.pt")
    loaded = torch.load(tmp_path / "state.pt", weights_only=True)["rng"]
    _disturb()
    assert _draws() != expected
    _disturb()
    restore_rng_state(loaded)
    assert _draws() == expected


@pytest.mark.parametrize("part", ["python", "numpy", "torch"])
def test_each_generator_is_restored_on_its_own(part):
    state = capture_rng_state()
    expected = _draws()[part]
    _disturb()
    other = {k: v for k, v in _draws().items() if k != part}
    _disturb()
    restore_rng_state({part: state[part]})  # missing parts are left alone
    draws = _draws()
    assert draws[part] == expected
    assert {k: v for k, v in draws.items() if k != part} == other
