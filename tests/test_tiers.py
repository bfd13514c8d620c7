"""Which assets ``process`` runs with: the automatic tier choice and its explicit overrides."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from metahmr_cli.errors import ConfigError
from metahmr_cli.tiers import OPEN_BODY, choose_tier, open_checkpoint_path


@pytest.fixture
def empty_roots(tmp_path, monkeypatch):
    """No weights anywhere: an empty explicit root, $METAHMR_HOME, ./weights and user data folder."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("METAHMR_HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("METAHMR_SMPL_DIR", raising=False)
    monkeypatch.delenv("METAHMR_CHECKPOINT", raising=False)
    monkeypatch.chdir(tmp_path)
    return home


def _install_paper(root: Path, standin_dir: Path) -> None:
    """SMPL files (the stand-in's arrays under SMPL's names) and a file named like the release."""
    smpl = root / "smpl"
    smpl.mkdir(parents=True)
    shutil.copy(standin_dir / "STANDIN_NEUTRAL.npz", smpl / "SMPL_NEUTRAL.npz")
    shutil.copy(standin_dir / "J_regressor_extra.npy", smpl / "J_regressor_extra.npy")
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "cliff_hrnet_3dpw.pt").write_bytes(b"x")


def _install_movenet(root: Path) -> None:
    folder = root / "keypoints" / "movenet-multipose"
    folder.mkdir(parents=True)
    (folder / "movenet-multipose.json").write_text("{}")


def _install_finder(root: Path) -> None:
    """What `metahmr weights fetch-open` installs: MoveNet MultiPose, MoveNet Thunder and CenterNet."""
    _install_movenet(root)
    for sub, name in (("keypoints/movenet-thunder", "movenet-thunder.json"), ("detectors/centernet", "centernet.json")):
        (root / sub).mkdir(parents=True)
        (root / sub / name).write_text("{}")


def test_nothing_installed_runs_the_open_tier_and_says_why(empty_roots):
    choice = choose_tier(model="auto", body="auto", checkpoint=None, detector="auto", keypoints="auto")
    assert choice.tier == "open" and choice.body == OPEN_BODY
    assert choice.checkpoint == open_checkpoint_path()
    assert (choice.detector, choice.keypoints) == ("finder", "movenet-thunder")
    assert "SMPL is not installed" in choice.message and "metahmr weights status" in choice.message
    assert "not SMPL" in choice.message


def test_open_tier_runs_the_people_finder_once_installed(empty_roots):
    _install_finder(empty_roots)
    choice = choose_tier(model="auto", body="auto", checkpoint=None, detector="auto", keypoints="auto")
    assert (choice.tier, choice.detector, choice.keypoints) == ("open", "finder", "movenet-thunder")
    assert "fetch-open" not in choice.message


def test_an_install_from_before_the_finder_keeps_movenet_and_says_how_to_update(empty_roots):
    _install_movenet(empty_roots)
    choice = choose_tier(model="auto", body="auto", checkpoint=None, detector="auto", keypoints="auto")
    assert (choice.detector, choice.keypoints) == ("movenet", "movenet")
    assert "metahmr weights fetch-open" in choice.message


def test_paper_assets_installed_run_the_paper_tier(empty_roots, standin_dir):
    _install_paper(empty_roots, standin_dir)
    choice = choose_tier(model="auto", body="auto", checkpoint=None, detector="auto", keypoints="auto")
    assert choice.tier == "paper" and choice.body == "smpl" and choice.checkpoint is None
    assert choice.message is None
    # without YOLO / RTMPose files the detector and keypoints fall back to MoveNet only when it is installed
    assert (choice.detector, choice.keypoints) == ("yolo11m.pt", "rtmpose")
    _install_movenet(empty_roots)
    choice = choose_tier(model="auto", body="auto", checkpoint=None, detector="auto", keypoints="auto")
    assert (choice.detector, choice.keypoints) == ("movenet", "movenet")


def test_missing_release_alone_also_gives_the_open_tier(empty_roots, standin_dir):
    _install_paper(empty_roots, standin_dir)
    (empty_roots / "checkpoints" / "cliff_hrnet_3dpw.pt").unlink()
    choice = choose_tier(model="auto", body="auto", checkpoint=None, detector="auto", keypoints="auto")
    assert choice.tier == "open"
    assert choice.reasons == ["the Meta-HMR release is not installed"]


def test_explicit_choices_win(empty_roots, standin_dir):
    _install_paper(empty_roots, standin_dir)
    forced = choose_tier(model="open", body="auto", checkpoint=None, detector="yolo11m.pt", keypoints="mediapipe")
    assert forced.tier == "open" and forced.body == OPEN_BODY
    assert (forced.detector, forced.keypoints) == ("yolo11m.pt", "mediapipe")
    assert forced.message is None  # explicit: nothing to explain
    custom = choose_tier(model="auto", body=str(standin_dir), checkpoint="ck.pt", detector="auto", keypoints="auto")
    assert custom.tier == "custom" and custom.body == str(standin_dir) and custom.checkpoint == Path("ck.pt")
    with pytest.raises(ConfigError, match="open body"):
        choose_tier(model="open", body="smpl", checkpoint=None, detector="auto", keypoints="auto")
    with pytest.raises(ConfigError, match="model"):
        choose_tier(model="best", body="auto", checkpoint=None, detector="auto", keypoints="auto")


def test_smpl_lookup_ignores_open_and_standin_files_in_the_smpl_folder(empty_roots, standin_dir):
    """An open or stand-in body copied into weights/smpl is not SMPL: the paper tier must not start on it."""
    from metahmr_cli.assets import body_dir
    from metahmr_cli.errors import AssetNotFoundError

    smpl = empty_roots / "smpl"
    smpl.mkdir()
    for name in ("STANDIN_NEUTRAL.npz", "J_regressor_extra.npy"):
        shutil.copy(standin_dir / name, smpl / name)
    with pytest.raises(AssetNotFoundError):
        body_dir("smpl", create_standin=False)
    choice = choose_tier(model="auto", body="auto", checkpoint=None, detector="auto", keypoints="auto")
    assert choice.tier == "open"


def test_open_checkpoint_is_shipped_with_the_package():
    path = open_checkpoint_path()
    assert path.is_file(), f"{path} is missing: train it with `metahmr train --recipe open_keypoints --set export=...`"
    assert path.stat().st_size < 10 * 1024 * 1024


def test_the_open_body_with_another_checkpoint_is_not_called_the_open_tier(empty_roots, tmp_path):
    """An official CLIFF checkpoint with the open body (e.g. run with --self-aux): a custom combination, and the line
    printed says which checkpoint runs instead of naming the open model with an empty reason."""
    ckpt = tmp_path / "hr48-PA43.0_MJE69.0_MVE81.2_3dpw.pt"
    ckpt.write_bytes(b"not the open model")
    choice = choose_tier(model="auto", body="open", checkpoint=str(ckpt), detector="auto", keypoints="auto")
    assert choice.tier == "custom" and choice.body == OPEN_BODY and choice.checkpoint == ckpt
    assert "open Meta-HMR" not in choice.message and ckpt.name in choice.message and "not SMPL" in choice.message
    assert choose_tier(model="open", body="auto", checkpoint=str(ckpt), detector="auto",
                       keypoints="auto").tier == "custom"
    # the shipped open model, named by path or copied elsewhere, is still the open tier, with its reason
    copy = tmp_path / "copy.pt"
    copy.write_bytes(open_checkpoint_path().read_bytes())
    for path in (open_checkpoint_path(), copy):
        choice = choose_tier(model="auto", body="open", checkpoint=str(path), detector="auto", keypoints="auto")
        assert choice.tier == "open" and "(--body open;" in choice.message


def test_an_open_model_checkpoint_runs_the_open_tier_without_model_open(empty_roots, standin_dir, tmp_path):
    """`process --checkpoint FILE` infers the tier from the body the checkpoint records: the open model (or a copy
    of it under another name) runs the open body instead of asking for SMPL."""
    import torch

    _install_paper(empty_roots, standin_dir)  # even with SMPL installed
    copy = tmp_path / "my_open_model.pt"
    shutil.copy(open_checkpoint_path(), copy)
    choice = choose_tier(model="auto", body="auto", checkpoint=str(copy), detector="auto", keypoints="auto")
    assert choice.tier == "open" and choice.body == OPEN_BODY and choice.checkpoint == copy
    assert "my_open_model.pt was trained on the open body" in choice.message
    # a checkpoint that records SMPL, or nothing (a release), stays in the paper tier
    for recorded in ({"body": "smpl"}, None):
        other = tmp_path / "other.pt"
        obj = {"model": {"w": torch.zeros(1)}, "model_aux": None}
        if recorded is not None:
            obj["config"] = recorded
        torch.save(obj, other)
        choice = choose_tier(model="auto", body="auto", checkpoint=str(other), detector="auto", keypoints="auto")
        assert choice.tier == "paper" and choice.body == "smpl"
    # explicit choices still win
    forced = choose_tier(model="paper", body="auto", checkpoint=str(copy), detector="auto", keypoints="auto")
    assert forced.tier == "paper"
    missing = choose_tier(model="auto", body="auto", checkpoint=str(tmp_path / "none.pt"), detector="auto",
                          keypoints="auto")
    assert missing.tier == "paper"  # the load reports the missing file later
