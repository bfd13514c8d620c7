"""The prepared GPU benchmark (benchmarks/gpu.py) runs end to end on the CPU at tiny sizes, so it cannot rot.

The runs here lift the script's time caps (``--no-time-limit``): on a loaded machine a section may take longer
than its GPU-run budget, and these tests check what the script does, not how fast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_quick_run_on_cpu(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--device", "cpu", "--quick",
                           "--no-time-limit", "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO,
                          timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = sorted(tmp_path.glob("gpu-*-quick.json"))
    assert len(reports) == 1 and reports[0].with_suffix(".md").is_file()
    report = json.loads(reports[0].read_text())
    sections = report["sections"]
    assert list(sections) == ["cuda_tests", "tto_released", "tto_open", "tto_settings", "process", "train_step",
                              "ray"]
    for name, sec in sections.items():
        assert sec["status"] == "ok", f"{name}: {sec.get('error')}"
        assert sec["rows"], name
    for name, impls in (("tto_released", ("engine", "loop", "reference")), ("tto_open", ("engine", "loop"))):
        for row in sections[name]["rows"]:
            for impl in impls:
                assert row[f"{impl}_people_per_s"] > 0, (name, impl, row)
            assert row["strategies"] and row["chunks"]
    assert {r["run"] for r in sections["process"]["rows"]} == {"open tier", "tiny + open body"}
    assert all(r["images_per_second"] > 0 for r in sections["process"]["rows"])
    assert sections["train_step"]["rows"][0]["meta_over_plain"] > 0
    ray_row = sections["ray"]["rows"][0]  # on a CPU: one worker, the code path
    assert ray_row["workers"] == 1 and ray_row["images"] == 2 and ray_row["images_per_second"] > 0
    assert ray_row["counts"]["ok"] == 2
    md = reports[0].with_suffix(".md").read_text()
    assert "engine people/s" in md and "process, end to end" in md and "pytest -m cuda" in md
    assert "process on Ray" in md


def test_failing_section_is_recorded_and_the_rest_runs(tmp_path, monkeypatch):
    """A section that fails (here: an unknown network) is reported; the next section still runs."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--device", "no-such-device",
                           "--quick", "--no-time-limit", "--sections", "tto_open,cuda_tests", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(next(tmp_path.glob("gpu-*.json")).read_text())
    assert report["sections"]["tto_open"]["status"] in ("failed", "partial")
    assert report["sections"]["tto_open"]["error"]
    assert report["sections"]["cuda_tests"]["status"] == "ok"
