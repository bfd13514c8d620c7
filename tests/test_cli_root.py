"""The root CLI: help with examples, `weights status`, `doctor`, and clean error reporting."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from metahmr_cli import assets
from metahmr_cli.cli.app import app

runner = CliRunner()


@pytest.fixture
def empty_roots(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    for var in (assets.ENV_HOME, assets.ENV_SMPL_DIR, assets.ENV_CHECKPOINT):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_help_lists_command_groups_and_examples():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for word in ("process", "train", "eval", "weights", "doctor", "Examples"):
        assert word in result.output


def test_weights_status_reports_every_asset_missing(empty_roots):
    result = runner.invoke(app, ["weights", "status", "--json"])
    # only the bundled open files exist: the MoveNet and CenterNet models are missing, so neither tier can run
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert report["can_run"] == {"paper": False, "open": False, "process": False}
    assert report["tiers"]["open"]["missing"] == ["keypoints_movenet_multipose", "keypoints_movenet_thunder",
                                                  "detector_centernet"]
    assert report["process_auto_tier"] == "open"
    names = {row["name"] for row in report["assets"]}
    assert names == set(assets.ASSETS)
    bundled = {name for name, spec in assets.ASSETS.items() if spec.bundled}
    assert bundled == {"open_body", "open_model"}
    for row in report["assets"]:
        if row["name"] in bundled:  # shipped with the package: found even with empty weights folders
            assert row["found"] and "metahmr_cli" in row["found"]
        else:
            assert row["found"] is None
        assert row["searched"], row["name"]
        assert row["howto"]
    smpl = next(r for r in report["assets"] if r["name"] == "smpl_neutral")
    assert any(str(empty_roots / "weights" / "smpl") in p for p in smpl["searched"])


def test_weights_status_finds_files_and_checksums(empty_roots):
    folder = empty_roots / "weights" / "smpl"
    folder.mkdir(parents=True)
    (folder / "J_regressor_extra.npy").write_bytes(b"abc")
    result = runner.invoke(app, ["weights", "status", "--json", "--checksums"])
    row = next(r for r in json.loads(result.output)["assets"] if r["name"] == "j_regressor_extra")
    assert row["found"] == str(folder / "J_regressor_extra.npy")
    # sha256("abc"), computed independently
    assert row["sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_weights_status_exit_code_says_whether_a_tier_can_run(empty_roots):
    for sub, name in (("keypoints/movenet-multipose", "movenet-multipose.json"),
                      ("keypoints/movenet-thunder", "movenet-thunder.json"), ("detectors/centernet", "centernet.json")):
        folder = empty_roots / "weights" / sub
        folder.mkdir(parents=True)
        if name == "centernet.json":  # without it the open tier is incomplete
            assert runner.invoke(app, ["weights", "status", "--for", "open"]).exit_code == 1
        (folder / name).write_text("{}")
    assert runner.invoke(app, ["weights", "status"]).exit_code == 0  # the open tier is complete
    assert runner.invoke(app, ["weights", "status", "--for", "open"]).exit_code == 0
    result = runner.invoke(app, ["weights", "status", "--for", "paper"], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "paper tier (SMPL, Meta-HMR release, YOLO, RTMPose): missing smpl_neutral" in result.output
    assert "runs the open tier" in result.output and "--details" in result.output
    detailed = runner.invoke(app, ["weights", "status", "--details", "--for", "open"], env={"COLUMNS": "200"})
    assert detailed.exit_code == 0 and "pose_hrnet_w48" in detailed.output  # every asset, found or not


def test_doctor_reports_the_renderer_as_a_real_render_finds_it():
    """The probe renders a box through a camera; on this machine EGL renders (the render tests use it too)."""
    from metahmr_cli.render import MeshRenderer

    try:
        import numpy as np
        import trimesh

        box = trimesh.creation.box(extents=(0.5, 0.5, 0.5))
        img = MeshRenderer().render_overlay(np.zeros((32, 32, 3), np.uint8), (box.vertices + [0, 0, 2])[None],
                                            box.faces, np.array([[30.0, 0, 16], [0, 30.0, 16], [0, 0, 1]]))
        works = bool(img.any())
    except Exception:  # noqa: BLE001 - no renderer here: doctor must say so too
        works = False
    result = runner.invoke(app, ["doctor", "--json"])
    checks = {c["name"]: c for c in json.loads(result.output)}
    assert checks["renderer"]["ok"] is works


def test_doctor_prints_pip_extras_verbatim(monkeypatch):
    from metahmr_cli.cli import doctor

    monkeypatch.setattr(doctor, "run_checks", lambda render=True: [
        doctor.Check("renderer", False, "pyrender offscreen failed", "pip install 'metahmr[render]'")])
    result = runner.invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert "pip install 'metahmr[render]'" in result.output


def test_doctor_json_reports_torch_and_ffmpeg():
    result = runner.invoke(app, ["doctor", "--json", "--no-render"])
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.output)}
    assert checks["torch"]["ok"] is True
    assert checks["ffmpeg"]["ok"] is True
    assert "cuda" in checks


def test_console_script_reports_metahmr_errors_cleanly(empty_roots):
    code = (
        "import sys; from metahmr_cli.cli.app import main; "
        "sys.argv=['metahmr','weights','import-smpl', 'missing.pkl']; main()"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=empty_roots)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "missing.pkl" in proc.stderr + proc.stdout


def test_process_without_inputs_says_so_in_one_line():
    result = runner.invoke(app, ["process"], env={"COLUMNS": "40"})
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) <= 3 and "missing INPUTS" in result.output and "Options" not in result.output


@pytest.mark.parametrize("command", [["process"], ["eval"], ["train"], ["weights", "status"], ["doctor"]])
def test_help_shows_no_value_placeholder_for_flags(command):
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "<bool>" not in result.output
    assert "--help" in result.output
    if command == ["process"]:  # options that take a value still show their type
        assert "--overwrite" in result.output and "<int>" in result.output
