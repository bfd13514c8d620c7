"""The Python API of docs/api.md: the example runs, matches `process`, and loads the models once."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest

import metahmr
from metahmr_cli.errors import InputError

REPO = Path(__file__).resolve().parents[1]
MOVENET = REPO / "weights" / "keypoints" / "movenet-multipose" / "movenet-multipose.json"
needs_movenet = pytest.mark.skipif(not MOVENET.is_file() and not os.environ.get("CI"),
                                   reason="MoveNet is not installed here (scripts/bootstrap.sh fetches it)")


def _doc_blocks() -> list[str]:
    text = (REPO / "docs" / "api.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.fixture(scope="module")
def estimator():
    return metahmr.Estimator.from_config(model="open", device="cpu", weights=str(REPO / "weights"))


@needs_movenet
def test_the_documented_example_runs(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("METAHMR_HOME", str(REPO / "weights"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_doc_blocks()[0], "docs/api.md", "exec"), {})
    text = out.getvalue()
    assert "2 people" in text  # basketball1.png: two players (counted by hand)
    assert text.strip().splitlines()[-1] == "[2, 2]"  # the mirrored image holds the same two players


@needs_movenet
def test_estimator_matches_process_on_the_same_photo(estimator, tmp_path):
    from metahmr_cli.io.sources import read_image
    from metahmr_cli.io.writers import load_result_npz
    from metahmr_cli.pipeline import Pipeline
    from metahmr_cli.process_config import ProcessConfig

    image = read_image(REPO / "examples" / "messi5.jpg")
    people = estimator(image)
    cfg = ProcessConfig(inputs=[str(REPO / "examples" / "messi5.jpg")], out=tmp_path / "out", model="open",
                        device="cpu", render=False, weights=REPO / "weights")
    assert Pipeline(cfg, progress=False).run().exit_code == 0
    d = load_result_npz(tmp_path / "out" / "messi5.npz")
    assert len(people) == d["bbox"].shape[0] == 1
    np.testing.assert_allclose(people.boxes, d["bbox"], atol=1e-3)
    np.testing.assert_allclose(people.betas, d["betas"], atol=1e-5)
    np.testing.assert_allclose(people.vertices, d["vertices"], atol=1e-5)
    np.testing.assert_array_equal(people.tto_steps, d["tto_steps"])
    assert people.body_model == str(d["body_model"]) and people.tier == str(d["model_tier"]) == "open"


@needs_movenet
def test_a_second_call_reuses_the_loaded_models(monkeypatch):
    import metahmr_cli.body.smpl as smpl
    import metahmr_cli.models as models

    loads = {"networks": 0, "body": 0}
    real_networks, real_body = models.load_networks, smpl.load_body_model

    def count_networks(*a, **k):
        loads["networks"] += 1
        return real_networks(*a, **k)

    def count_body(*a, **k):
        loads["body"] += 1
        return real_body(*a, **k)

    monkeypatch.setattr(models, "load_networks", count_networks)
    monkeypatch.setattr(smpl, "load_body_model", count_body)
    est = metahmr.Estimator.from_config(model="open", device="cpu", weights=str(REPO / "weights"))
    image = metahmr.read_image(REPO / "examples" / "basketball1.png")
    first, second = est(image), est(image)
    assert loads == {"networks": 1, "body": 1}
    np.testing.assert_array_equal(first.vertices, second.vertices)  # and gives the same answer


@needs_movenet
def test_results_convert_and_select(estimator):
    people = estimator(np.zeros((120, 160, 3), np.uint8))  # nobody in a black image
    assert len(people) == 0 and people.vertices.shape == (0, 7000, 3)
    t = people.to("cpu")
    import torch

    assert isinstance(t.vertices, torch.Tensor) and isinstance(t.numpy().vertices, np.ndarray)


@needs_movenet
def test_bad_images_get_clear_messages(estimator):
    with pytest.raises(InputError, match="path"):
        estimator("examples/messi5.jpg")
    with pytest.raises(InputError, match=r"\(H, W, 3\)"):
        estimator(np.zeros((3, 64, 64), np.uint8))
    with pytest.raises(InputError, match="NaN"):
        estimator(np.full((32, 32, 3), np.nan, np.float32))
