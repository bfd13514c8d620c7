"""What set-up installs is found from any current folder: ``metahmr weights fetch-open`` records where it installed,
every lookup searches there, and ``metahmr doctor`` says where each file was found.

No test here reads or writes the real user's home: HOME, XDG_DATA_HOME and METAHMR_HOME point into tmp folders.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metahmr_cli import assets
from metahmr_cli.cli.app import app
from metahmr_cli.io.writers import MANIFEST_NAME, load_result_npz
from metahmr_cli.keypoints.movenet import MOVENET_NPM, installed_ok

REPO = Path(__file__).resolve().parents[1]
MOVENET_DIR = REPO / "weights" / MOVENET_NPM.subdir

needs_movenet = pytest.mark.skipif(
    not installed_ok(MOVENET_DIR) and not os.environ.get("CI"),
    reason="MoveNet is not installed here (scripts/bootstrap.sh or `metahmr weights fetch-open` fetches it)",
)


@pytest.fixture
def isolated(tmp_path, monkeypatch) -> Path:
    """A fresh user: HOME, XDG_DATA_HOME and METAHMR_HOME (not created) in tmp_path, the current folder empty."""
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("METAHMR_HOME", str(tmp_path / "metahmr_home"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return tmp_path


def _labels(roots: list[tuple[str, Path]]) -> list[tuple[str, Path]]:
    return [(label, path) for label, path in roots if label == assets.SETUP_ROOT_LABEL]


def test_the_record_adds_the_roots_set_up_installed_into(isolated):
    a, b = isolated / "a" / "weights", isolated / "b" / "weights"
    for root in (a, b):
        (root / "keypoints" / "x").mkdir(parents=True)
    assert assets.setup_installs() == [] and _labels(assets.weights_roots()) == []

    path = assets.record_setup_install(a, a / "keypoints" / "x", what="model X", source="pkg@1")
    assert path == isolated / "xdg" / "metahmr" / "setup.json" and path.is_file()
    assets.record_setup_install(b, b / "keypoints" / "x", what="model X", source="pkg@1")
    assert [i.root for i in assets.setup_installs()] == [b.resolve(), a.resolve()]  # most recent first
    # the recorded roots come after the usual ones, in the record's order
    roots = assets.weights_roots()
    assert [label for label, _ in roots[:3]] == ["$METAHMR_HOME", "./weights", "user data folder"]
    assert _labels(roots) == [(assets.SETUP_ROOT_LABEL, b.resolve()), (assets.SETUP_ROOT_LABEL, a.resolve())]

    # recording a folder again moves it to the front, once; a folder that is gone is no longer searched
    assets.record_setup_install(a, a / "keypoints" / "x", what="model X", source="pkg@1")
    assert [i.root for i in assets.setup_installs()] == [a.resolve(), b.resolve()]
    shutil.rmtree(b)
    assert _labels(assets.weights_roots()) == [(assets.SETUP_ROOT_LABEL, a.resolve())]

    # a root that is also ./weights is listed once, as ./weights
    os.chdir(a.parent)
    assert _labels(assets.weights_roots()) == []
    assert [label for label, _ in assets.weights_roots()].count("./weights") == 1


def test_a_damaged_record_is_ignored_with_a_warning(isolated, caplog):
    path = assets.setup_record_path()
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="metahmr_cli.assets"):
        assert assets.setup_installs() == []
    assert "fetch-open" in caplog.text
    # and the next set-up writes it again
    (isolated / "w" / "f").mkdir(parents=True)
    assets.record_setup_install(isolated / "w", isolated / "w" / "f", what="m", source="s")
    assert json.loads(path.read_text())["installed"][0]["folder"] == str((isolated / "w" / "f").resolve())


def _process(image: Path, out: Path) -> object:
    return CliRunner().invoke(app, ["process", str(image), "--out", str(out), "--model", "open", "--no-render",
                                    "--no-progress", "--device", "cpu"], env={"COLUMNS": "200"})


@needs_movenet
def test_process_from_another_folder_finds_the_set_up_assets(isolated, monkeypatch):
    checkout = isolated / "checkout"
    installed = checkout / "weights" / MOVENET_NPM.subdir
    shutil.copytree(MOVENET_DIR, installed)  # what an earlier `fetch-open` in the checkout left there
    image = isolated / "messi5.jpg"
    shutil.copy(REPO / "examples" / "messi5.jpg", image)

    # without the record, `process` run from another folder does not find it
    res = _process(image, isolated / "before")
    assert res.exit_code == 2 and "MoveNet" in res.output and "fetch-open" in res.output

    # set-up in the checkout: the files are valid, so nothing is downloaded (no npm needed); the folder is recorded
    monkeypatch.chdir(checkout)
    res = CliRunner().invoke(app, ["weights", "fetch-open"])
    assert res.exit_code == 0, res.output
    assert "already installed" in res.output and str(installed.resolve()) in res.output
    record = json.loads(assets.setup_record_path().read_text())
    assert str(installed.resolve()) in [e["folder"] for e in record["installed"]]
    assert record["installed"][0]["source"] == MOVENET_NPM.spec

    monkeypatch.chdir(isolated / "elsewhere")
    res = _process(image, isolated / "after")
    assert res.exit_code == 0, res.output
    rec = json.loads((isolated / "after" / MANIFEST_NAME).read_text().splitlines()[0])
    assert rec["status"] == "ok" and rec["people"] == 1  # messi5.jpg: one player
    assert str(load_result_npz(isolated / "after" / "messi5.npz")["model_tier"]) == "open"

    # doctor says where each file of the open tier was found
    res = CliRunner().invoke(app, ["doctor", "--json", "--no-render"])
    assert res.exit_code == 0, res.output
    checks = {c["name"]: c for c in json.loads(res.output)}
    movenet = checks["MoveNet"]
    assert movenet["ok"] and str(installed.resolve()) in movenet["detail"]
    assert f"[{assets.SETUP_ROOT_LABEL}]" in movenet["detail"]
    assert checks["open body"]["ok"] and "[bundled with metahmr]" in checks["open body"]["detail"]
    assert checks["set-up record"]["ok"] and str(assets.setup_record_path()) in checks["set-up record"]["detail"]
