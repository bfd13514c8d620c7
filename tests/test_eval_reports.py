"""Report files and paper-number matching, on hand-made results."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from metahmr_cli.evaluation import paper_numbers as PN
from metahmr_cli.evaluation.protocols import make_protocol
from metahmr_cli.evaluation.reports import EvalReport, MethodResult, render_markdown, write_reports


def _result(method: str, mpjpe: list[float], pa: list[float], pve: list[float], n_steps: int) -> MethodResult:
    n = len(mpjpe)
    curve = np.linspace(1.5, 1.0, n_steps + 1)[None, :] * np.asarray(mpjpe)[:, None]
    return MethodResult(
        method=method,
        sample_index=np.arange(n),
        values={"mpjpe": np.asarray(mpjpe), "pa_mpjpe": np.asarray(pa), "pve": np.asarray(pve),
                "steps": np.full(n, n_steps), "reproj_before": np.full(n, 10.0), "reproj_after": np.full(n, 4.0),
                "converged": np.zeros(n, bool), "fell_back": np.zeros(n, bool), "reverted": np.zeros(n, bool)},
        joint_err=np.tile(np.arange(14, dtype=float), (n, 1)),
        pa_joint_err=np.tile(np.arange(14, dtype=float) / 2, (n, 1)),
        stepwise={"mpjpe": curve, "pa_mpjpe": curve / 2, "pve": curve * 1.2},
    )


def test_paper_numbers_match_released_pairs_only():
    row = PN.match_paper_result("3dpw", "/w/checkpoints/cliff_hrnet_3dpw.pt", "reference", "openpose")
    assert row is not None and row.values == {"mpjpe": 62.9, "pa_mpjpe": 39.7, "pve": 80.1}
    gt = PN.match_paper_result("3dpw", "cliff_hrnet_3dpw.pt", "metahmr", "gt")
    assert gt is not None and gt.values["mpjpe"] == 57.8
    h36m = PN.match_paper_result("h36m", "cliff_hrnet_h36m.pt", "reference", "openpose")
    assert h36m is not None and h36m.values == {"mpjpe": 43.9, "pa_mpjpe": 30.3}
    hmr = PN.match_paper_result("h36m", "hmr_resnet_h36m.pt", "reference", "gt")
    assert hmr is not None and hmr.values == {"mpjpe": 53.7, "pa_mpjpe": 33.8}
    cliff = PN.match_paper_result("3dpw", "hr48-PA43.0_MJE69.0_MVE81.2_3dpw.pt", "none", "gt")
    assert cliff is not None and cliff.values == {"mpjpe": 69.0, "pa_mpjpe": 43.0, "pve": 81.2}
    # wrong dataset, method without a reported number, renamed file, unreported keypoints
    assert PN.match_paper_result("h36m", "cliff_hrnet_3dpw.pt", "reference", "openpose") is None
    assert PN.match_paper_result("3dpw", "cliff_hrnet_3dpw.pt", "eft", "openpose") is None
    assert PN.match_paper_result("3dpw", "my_model.pt", "reference", "openpose") is None
    assert PN.match_paper_result("3dpw", "cliff_hrnet_3dpw.pt", "reference", "detected") is None
    assert PN.match_paper_result("mpi-inf-3dhp", "cliff_hrnet_3dpw.pt", "reference", "gt") is None


def test_reports_show_paper_numbers_with_difference(tmp_path):
    protocol = make_protocol("3dpw")
    paper = PN.match_paper_result("3dpw", "cliff_hrnet_3dpw.pt", "reference", "openpose")
    report = EvalReport(
        dataset="3dpw", dataset_npz="/d/3dpw_test.npz", protocol=protocol, checkpoint="cliff_hrnet_3dpw.pt@abc",
        keypoints="openpose", config={"steps": 3},
        methods={"none": _result("none", [70.0, 80.0], [40.0, 50.0], [90.0, 100.0], 0),
                 "reference": _result("reference", [60.0, 64.0], [38.0, 40.0], [80.0, np.nan], 3)},
        joint_names=protocol.joint_names(), imgnames={0: "a.jpg", 1: "b.jpg"},
        paper={"none": None, "reference": paper},
    )
    files = write_reports(report, tmp_path, plots=False)
    data = json.loads((tmp_path / "report.json").read_text())
    ref = data["methods"]["reference"]
    assert ref["metrics"]["mpjpe"]["mean"] == pytest.approx(62.0)
    assert ref["metrics"]["pve"]["mean"] == pytest.approx(80.0) and ref["metrics"]["pve"]["count"] == 1
    diff = ref["paper"]["difference_mm"]
    assert diff == {"mpjpe": pytest.approx(62.0 - 62.9), "pa_mpjpe": pytest.approx(39.0 - 39.7),
                    "pve": pytest.approx(80.0 - 80.1)}
    assert "paper" not in data["methods"]["none"]
    assert "no alignment" in ref["metrics"]["pve"]["protocol"]
    assert data["protocol"]["released"] is True and data["protocol"]["gender_rule"] == "released"
    # stepwise curve: mean over samples after each step; the last point is 1.0 x the final values
    assert ref["stepwise"]["mpjpe"][-1] == pytest.approx(62.0)
    assert ref["stepwise"]["mpjpe"][0] == pytest.approx(1.5 * 62.0)
    md = render_markdown(report)
    assert "| reference | " in md and "| 62.0 | 39.0 | 80.0 |" in md
    assert "paper (Table 1/2, openpose) | released evaluation | 62.9 | 39.7 | 80.1" in md
    assert "ours - paper |  | -0.9 | -0.7 | -0.1" in md
    with open(files["per_joint_csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 14 and rows[3]["joint"] == protocol.joint_names()[3]
    assert float(rows[3]["mpjpe"]) == 3.0 and float(rows[3]["pa_mpjpe"]) == 1.5
    with open(files["per_sample_csv"]) as f:
        samples = list(csv.DictReader(f))
    assert samples[3]["imgname"] == "b.jpg" and samples[3]["pve"] == ""  # NaN written as empty


def test_report_without_mesh_gt_has_no_pve(tmp_path):
    protocol = make_protocol("mpi-inf-3dhp")
    res = _result("none", [90.0], [60.0], [np.nan], 0)
    res.joint_err = np.zeros((1, 17))
    res.pa_joint_err = np.zeros((1, 17))
    report = EvalReport(dataset="mpi-inf-3dhp", dataset_npz="x.npz", protocol=protocol, checkpoint="c",
                        keypoints="gt", config={}, methods={"none": res}, joint_names=protocol.joint_names())
    write_reports(report, tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    assert set(data["methods"]["none"]["metrics"]) == {"mpjpe", "pa_mpjpe"}
    assert "PVE" not in (tmp_path / "report.md").read_text().split("## Protocols")[0]
