"""The ablation benchmark (benchmarks/ablation.py) runs end to end at its toy budget, and its numbers are those of
the evaluations it ran: paired differences recomputed here from their per-sample files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import t as student_t

REPO = Path(__file__).resolve().parents[1]


def _per_sample(path: Path, method: str, metric: str) -> np.ndarray:
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["method"] == method]
    rows.sort(key=lambda r: int(r["sample_index"]))
    return np.array([float(r[metric]) for r in rows])


def test_quick_ablation_runs_and_reports_its_evaluations(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "ablation.py"), "--quick", "--work", str(work),
                           "--out", str(out)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("ablation.json", "ablation.md", "ablation_curves.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    result = json.loads((out / "ablation.json").read_text())
    a = result["analysis"]
    assert a["num_samples"] == 12 and result["settings"]["steps"] == 6 and result["settings"]["warmup"] == 3

    # paired differences: recomputed from the evaluations' per-sample files
    for metric in ("mpjpe", "pa_mpjpe"):
        meta = _per_sample(work / "eval" / "meta+aux" / "per_sample.csv", "metahmr", metric)
        plain = _per_sample(work / "eval" / "plain" / "per_sample.csv", "metahmr", metric)
        d = meta - plain
        half = student_t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
        got = a["comparisons"]["meta+aux_vs_plain_tto"][metric]
        assert got["count"] == 12
        assert got["mean"] == pytest.approx(d.mean(), abs=1e-5)
        assert (got["lo"], got["hi"]) == (pytest.approx(d.mean() - half, abs=1e-5),
                                          pytest.approx(d.mean() + half, abs=1e-5))
        for name in ("plain", "meta", "meta+aux"):
            for method in ("none", "eft", "metahmr"):
                values = _per_sample(work / "eval" / name / "per_sample.csv", method, metric)
                assert a["table"][name][method][metric] == pytest.approx(values.mean(), abs=1e-5)

    # curves: step 0 is the regression; the Meta-HMR schedule has the inner update plus tto_steps refinements
    for name in ("plain", "meta", "meta+aux"):
        curve = a["curves"][name]["metahmr"]["mpjpe"]
        assert len(curve) == 3 + 2 and len(a["curves"][name]["eft"]["mpjpe"]) == 3 + 1
        # (float32: the regression pass and TTO's first forward round differently, by about 1e-6 mm)
        assert curve[0] == pytest.approx(a["table"][name]["none"]["mpjpe"], abs=1e-3)
        assert a["curve_shapes"][name]["metahmr"]["monotone"] == bool((np.diff(curve) <= 0.05).all())

    # the runs parted at the shared checkpoint: the meta steps changed the main network, the inner loop adapts
    assert a["table"]["meta+aux"]["none"]["mpjpe"] != a["table"]["plain"]["none"]["mpjpe"]
    assert result["inner_loop"] == {"optimizer": "adam", "lr": 1e-4, "steps": 1, "scope": "head", "loss": "expl"}
    assert result["probe"]["fork"]["meta+aux"]["rel_weight_change"][0] > 1e-3
    assert result["probe"]["fork"]["meta"]["inner_loop"]["loss"] == "2d"
    md = (out / "ablation.md").read_text()
    assert "| meta + aux |" in md and "Target met:" in md and "python benchmarks/ablation.py --quick" in md
