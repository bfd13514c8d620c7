"""End-to-end evaluation on the synthetic test split with tiny random networks (CPU)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.models import make_tiny_regressor
from typer.testing import CliRunner

from metahmr_cli.errors import AssetNotFoundError, ConfigError, DatasetError
from metahmr_cli.evaluation import runner as R
from metahmr_cli.evaluation.runner import EvalConfig, run_evaluation

N_SAMPLES = 4
STEPS = 2
H36M_TO_J14 = [6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10]  # written out, not imported


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Main + aux tiny CLIFF regressors saved in our checkpoint format."""
    from metahmr_cli.models import save_networks

    path = tmp_path_factory.mktemp("eval_ckpt") / "tiny_metahmr.pt"
    save_networks(path, make_tiny_regressor("cliff", seed=0), make_tiny_regressor("cliff", seed=1))
    return path


def _config(synth_dataset: Path, standin_dir: Path, ckpt: Path | None, out: Path, **kw) -> EvalConfig:
    base = dict(dataset=str(synth_dataset / "synth_test.npz"), checkpoint=None if ckpt is None else str(ckpt),
                body=str(standin_dir),
                methods=("none", "eft", "metahmr", "reference"), steps=STEPS, batch_size=3,
                max_samples=N_SAMPLES, out=str(out), device="cpu", progress=False, gender_rule="neutral",
                plots=False)
    base.update(kw)
    return EvalConfig(**base)


def _per_sample(path: Path) -> dict[str, dict[int, dict[str, str]]]:
    out: dict[str, dict[int, dict[str, str]]] = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            out.setdefault(row["method"], {})[int(row["sample_index"])] = row
    return out


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, synth_dataset, standin_dir, tiny_checkpoint) -> Path:
    from metahmr_cli.cli.app import app

    out = tmp_path_factory.mktemp("eval_cli") / "report"
    args = ["eval", "--dataset", str(synth_dataset / "synth_test.npz"), "--checkpoint", str(tiny_checkpoint),
            "--tto", "none,eft,metahmr,reference", "--steps", str(STEPS), "--batch-size", "3",
            "--max-samples", str(N_SAMPLES), "--body", str(standin_dir), "--out", str(out), "--device", "cpu",
            "--no-progress", "--gender-rule", "neutral"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})  # a table of 7 columns: room for every header
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "MPJPE" in result.output
    return out


def test_cli_writes_reports_for_all_methods(cli_run: Path):
    report = json.loads((cli_run / "report.json").read_text())
    assert set(report["methods"]) == {"none", "eft", "metahmr", "reference"}
    for name, entry in report["methods"].items():
        assert entry["num_samples"] == N_SAMPLES
        for metric in ("mpjpe", "pa_mpjpe", "pve"):
            m = entry["metrics"][metric]
            assert m["unit"] == "mm" and m["count"] == N_SAMPLES and np.isfinite(m["mean"])
            assert m["protocol"]  # every number names its protocol
        # the released procedure (metahmr, reference) records its step-0 SGD update and up to STEPS Adam updates
        n_curve = {"none": 1, "reference": STEPS + 2, "metahmr": STEPS + 2}.get(name, STEPS + 1)
        assert len(entry["stepwise"]["mpjpe"]) == n_curve
        assert entry["tto_protocol"]
        assert len(entry["per_joint"]["mpjpe"]) == 14
    assert report["protocol"]["joint_set"] == "J14"
    md = (cli_run / "report.md").read_text()
    for name in ("none", "eft", "metahmr", "reference"):
        assert f"| {name} |" in md
    for png in ("stepwise.png", "per_joint.png"):
        data = (cli_run / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    rows = _per_sample(cli_run / "per_sample.csv")
    assert all(len(rows[m]) == N_SAMPLES for m in rows)
    with open(cli_run / "stepwise.csv") as f:
        steps = list(csv.DictReader(f))
    assert len(steps) == 1 + (STEPS + 1) + 2 * (STEPS + 2)  # none, eft, then metahmr and reference
    # the last stepwise point of a method is its final mean
    for name in ("eft", "metahmr", "reference"):
        last = [r for r in steps if r["method"] == name][-1]
        assert float(last["mpjpe"]) == pytest.approx(report["methods"][name]["metrics"]["mpjpe"]["mean"], abs=1e-4)


def test_each_schedule_runs_with_its_own_grouping_by_default(cli_run: Path):
    """Without --grouping, the released schedule shares one weight copy per loader batch (3 here) and Meta-HMR's
    schedule adapts per person; the reports say so, and the released procedure's people of one batch take the
    same number of steps (one copy, one early-stop test)."""
    report = json.loads((cli_run / "report.json").read_text())
    assert report["methods"]["reference"]["tto_protocol"].startswith("reference: batch of 3,")
    assert report["methods"]["metahmr"]["tto_protocol"].startswith("metahmr: per person,")
    assert report["methods"]["eft"]["tto_protocol"].startswith("eft: per person,")
    rows = _per_sample(cli_run / "per_sample.csv")["reference"]
    steps = [rows[i]["steps"] for i in range(N_SAMPLES)]
    assert steps[0] == steps[1] == steps[2]  # samples 0-2: one batch, one copy


def test_plain_regression_matches_independent_computation(cli_run, synth_dataset, standin_dir, tiny_checkpoint):
    """MPJPE/PVE of "none" recomputed by hand: network -> body -> numpy regressor/pelvis/J14 -> errors."""
    from metahmr_cli.body.smpl import load_body_model
    from metahmr_cli.data.datasets import HMRDataset
    from metahmr_cli.geometry.rotation import axis_angle_to_rotmat

    net = make_tiny_regressor("cliff", seed=0)
    body = load_body_model(standin_dir, "neutral", device="cpu", dtype=torch.float32)
    jreg = np.load(standin_dir / "J_regressor_h36m.npy").astype(np.float64)
    ds = HMRDataset(synth_dataset / "synth_test.npz", is_train=False)
    rows = _per_sample(cli_run / "per_sample.csv")["none"]
    for i in range(N_SAMPLES):
        item = ds[i]
        with torch.no_grad():
            out = net(item["img"][None], item["bbox_info"][None])
            pred_v = body(out["rotmat"], out["betas"]).vertices[0].double().numpy()
            gt_rot = axis_angle_to_rotmat(item["pose"].reshape(1, 24, 3))
            gt_v = body(gt_rot, item["betas"][None]).vertices[0].double().numpy()  # gender 'n' -> neutral
        pj, gj = jreg @ pred_v, jreg @ gt_v
        pj = pj[H36M_TO_J14] - pj[0]
        gj = gj[H36M_TO_J14] - gj[0]
        mpjpe = 1000 * np.linalg.norm(pj - gj, axis=1).mean()
        pve = 1000 * np.linalg.norm(pred_v - gt_v, axis=1).mean()
        assert float(rows[i]["mpjpe"]) == pytest.approx(mpjpe, rel=1e-4)
        assert float(rows[i]["pve"]) == pytest.approx(pve, rel=1e-4)


def test_second_run_gives_identical_numbers(cli_run, tmp_path, synth_dataset, standin_dir, tiny_checkpoint):
    rep = run_evaluation(_config(synth_dataset, standin_dir, tiny_checkpoint, tmp_path / "again"))
    first = _per_sample(cli_run / "per_sample.csv")
    second = _per_sample(tmp_path / "again" / "per_sample.csv")
    assert first == {m: {i: {**r} for i, r in rows.items()} for m, rows in second.items()}
    assert all(v == 0 for v in rep.from_cache.values())


def test_resume_uses_cache_without_recomputing(cli_run, tmp_path, synth_dataset, standin_dir, tiny_checkpoint,
                                               monkeypatch):
    import shutil

    out = tmp_path / "resumed"
    shutil.copytree(cli_run / "cache", out / "cache")
    calls = []
    real = R.run_tto

    def counting(*args, **kwargs):
        calls.append(args[4].schedule)
        return real(*args, **kwargs)

    monkeypatch.setattr(R, "run_tto", counting)
    rep = run_evaluation(_config(synth_dataset, standin_dir, tiny_checkpoint, out))
    assert calls == []  # everything came from the cache
    assert rep.from_cache == dict.fromkeys(("none", "eft", "metahmr", "reference"), N_SAMPLES)
    assert _per_sample(out / "per_sample.csv") == _per_sample(cli_run / "per_sample.csv")

    # an interrupted run: one batch file of one method missing -> only that batch is recomputed
    victim = next((out / "cache").glob("metahmr-*/b0000003-0000004.npz"))
    victim.unlink()
    rep = run_evaluation(_config(synth_dataset, standin_dir, tiny_checkpoint, out))
    assert calls == ["metahmr"]
    assert rep.from_cache["metahmr"] == 3 and rep.from_cache["eft"] == N_SAMPLES
    assert _per_sample(out / "per_sample.csv") == _per_sample(cli_run / "per_sample.csv")


def test_batch_grouping_of_one_equals_person_grouping(tmp_path, synth_dataset, standin_dir, tiny_checkpoint):
    kw = dict(methods=("metahmr", "reference"), max_samples=2)
    person = run_evaluation(_config(synth_dataset, standin_dir, tiny_checkpoint, tmp_path / "p",
                                    grouping="person", batch_size=2, **kw))
    batch1 = run_evaluation(_config(synth_dataset, standin_dir, tiny_checkpoint, tmp_path / "b",
                                    grouping="batch", batch_size=1, **kw))
    for m in ("metahmr", "reference"):
        for key in ("mpjpe", "pa_mpjpe", "pve"):
            np.testing.assert_allclose(batch1.methods[m].values[key], person.methods[m].values[key],
                                       rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(batch1.methods[m].values["steps"], person.methods[m].values["steps"])
        np.testing.assert_allclose(batch1.methods[m].stepwise["mpjpe"], person.methods[m].stepwise["mpjpe"],
                                   rtol=1e-5, atol=1e-4)


def test_bad_inputs_are_clear_errors(tmp_path, synth_dataset, standin_dir, tiny_checkpoint):
    with pytest.raises(ConfigError, match="unknown method"):
        _config(synth_dataset, standin_dir, tiny_checkpoint, tmp_path, methods=("none", "spin")).validate()
    with pytest.raises(DatasetError, match="keypoints_detected"):
        run_evaluation(_config(synth_dataset, standin_dir, tiny_checkpoint, tmp_path, keypoints="detected"))
    from metahmr_cli.cli.app import app

    res = CliRunner().invoke(app, ["eval", "--dataset", str(tmp_path / "missing.npz"), "--checkpoint",
                                   str(tiny_checkpoint), "--device", "cpu", "--no-progress"])
    assert res.exit_code == 2


def test_without_checkpoint_the_matching_release_is_looked_up(tmp_path, monkeypatch, synth_dataset, standin_dir):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("METAHMR_HOME", raising=False)
    monkeypatch.delenv("METAHMR_CHECKPOINT", raising=False)
    with pytest.raises(AssetNotFoundError, match="cliff_hrnet_h36m.pt"):
        R.default_checkpoint("h36m")
    with pytest.raises(AssetNotFoundError, match="cliff_hrnet_3dpw.pt"):
        run_evaluation(_config(synth_dataset, standin_dir, None, tmp_path / "out"))
    ckpt_dir = tmp_path / "weights" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    (ckpt_dir / "cliff_hrnet_3dpw.pt").write_bytes(b"x")
    assert R.default_checkpoint("3dpw") == ckpt_dir / "cliff_hrnet_3dpw.pt"
    assert R.default_checkpoint(None) == ckpt_dir / "cliff_hrnet_3dpw.pt"


def test_eval_dataset_short_names_map_to_test_splits():
    assert R.EVAL_DATASET_NAMES == {"3dpw": "3dpw-test", "h36m": "h36m-p2", "mpi-inf-3dhp": "mpi-inf-3dhp-test"}


@pytest.mark.parametrize("rule", ["released", "neutral"])
def test_ground_truth_bodies_follow_dataset_gender_and_rule(tmp_path, synth_dataset, standin_dir, tiny_checkpoint,
                                                            rule):
    """The runner's GT mesh uses the dataset's gender item and the protocol's rule: synth 'n' -> female
    (released) / neutral; a file without a gender key -> male (released) / neutral."""
    from torch.utils.data import DataLoader

    from metahmr_cli.body.smpl import load_body_model
    from metahmr_cli.data.npzio import load_npz
    from metahmr_cli.evaluation import protocols as P
    from metahmr_cli.files import save_npz_atomic
    from metahmr_cli.geometry.rotation import axis_angle_to_rotmat

    d = load_npz(synth_dataset / "synth_test.npz")
    d.pop("gender")
    nokey = tmp_path / "synth_test_nogender.npz"
    save_npz_atomic(nokey, d)
    expect = {("n", "released"): "female", ("n", "neutral"): "neutral",
              (None, "released"): "male", (None, "neutral"): "neutral"}
    for npz, g in ((synth_dataset / "synth_test.npz", "n"), (nokey, None)):
        ev = R._Evaluator(_config(synth_dataset, standin_dir, tiny_checkpoint, tmp_path / "out", dataset=str(npz),
                                  image_root=str(synth_dataset), gender_rule=rule, dtype="float64"))
        batch = next(iter(DataLoader(ev.dataset, batch_size=3, shuffle=False)))
        prepared = P.prepare_ground_truth(ev.ground_truth(batch), ev.protocol, ev.bodies)
        body = load_body_model(standin_dir, expect[(g, rule)], device="cpu", dtype=torch.float64)
        rot = axis_angle_to_rotmat(batch["pose"].double().reshape(3, 24, 3))
        hand = body(rot, batch["betas"].double()).vertices
        torch.testing.assert_close(prepared.vertices, hand)


def test_paper_numbers_only_for_released_protocol_full_set():
    from metahmr_cli.evaluation.protocols import make_protocol

    released = make_protocol("3dpw")
    assert R.paper_family(released, "3dpw", "3dpw-test", "x.npz", 100, 100) == "3dpw"
    assert R.paper_family(make_protocol("3dpw", pve_alignment="pelvis"), "3dpw", "3dpw-test", "x.npz", 100,
                          100) is None
    assert R.paper_family(make_protocol("3dpw", gender_rule="neutral"), "3dpw", "3dpw-test", "x.npz", 100,
                          100) is None
    assert R.paper_family(released, "3dpw", "3dpw-test", "x.npz", 50, 100) is None  # --max-samples cut
    assert R.paper_family(make_protocol("h36m", h36m_gt="S"), "h36m", "h36m-p2", "x.npz", 9, 9) is None
    h36m = make_protocol("h36m-p2")
    assert R.paper_family(h36m, "h36m", "h36m-p2", "h36m_mosh_val_p2_fixname_openpose.npz", 9, 9) == "h36m"
    assert R.paper_family(h36m, "h36m", "h36m-p1", "h36m_mosh_val_p1.npz", 9, 9) is None
    assert R.paper_family(h36m, "h36m", "h36m_mosh_val_p1", "h36m_mosh_val_p1.npz", 9, 9) is None


def test_files_of_no_released_family_keep_the_neutral_body_by_default(synth_dataset, standin_dir, tmp_path):
    """Synthetic data is made with the neutral body (gender 'n'); the released rule would score it against the
    female body. Without --gender-rule, only the released test sets use the released rule."""
    ckpt = tmp_path / "any.pt"
    ckpt.write_bytes(b"not loaded here")
    cfg = _config(synth_dataset, standin_dir, ckpt, tmp_path / "out", gender_rule=None)
    assert R._Evaluator(cfg).protocol.gender_rule == "neutral"
    named = tmp_path / "3dpw_test_copy.npz"
    named.write_bytes((synth_dataset / "synth_test.npz").read_bytes())
    cfg = _config(synth_dataset, standin_dir, ckpt, tmp_path / "out", gender_rule=None, dataset=str(named),
                  image_root=str(synth_dataset))
    assert R._Evaluator(cfg).protocol.gender_rule == "released"


def test_eft_runs_its_own_20_steps_by_default_and_says_so(tmp_path, synth_dataset, standin_dir, tiny_checkpoint):
    """Without --steps, eval gives each method its own budget: EFT's maximum of 20 (as `process`), 14 for Meta-HMR;
    the protocol printed beside the numbers names it."""
    cfg = _config(synth_dataset, standin_dir, tiny_checkpoint, tmp_path / "r", methods=("eft", "metahmr"), steps=None,
                  max_samples=2)
    assert EvalConfig().steps is None
    report = run_evaluation(cfg)
    assert "<= 20 steps" in report.methods["eft"].protocol
    assert "<= 14 steps" in report.methods["metahmr"].protocol
    # one column per update plus the start: 21 for EFT, 1 + 1 + 14 for metahmr (step 0, then Adam)
    assert report.methods["eft"].stepwise["mpjpe"].shape[1] == 21
    assert report.methods["metahmr"].stepwise["mpjpe"].shape[1] == 16
    assert (report.methods["eft"].values["steps"] <= 20).all()
