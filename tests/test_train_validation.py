"""``metahmr train`` refuses bad dataset files before it writes anything, and cleans up after killed saves."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metahmr_cli.errors import DatasetError
from metahmr_cli.training import TrainConfig, train
from metahmr_cli.training.checkpointing import clean_stale_temp_files


def _copy_with(synth_dataset: Path, tmp_path: Path, change) -> Path:
    """A copy of the synthetic training set (images shared) with one array changed."""
    with np.load(synth_dataset / "synth_train.npz", allow_pickle=False) as d:
        arrays = {k: d[k] for k in d.files}
    change(arrays)
    path = tmp_path / "bad_train.npz"
    np.savez(path, **arrays)
    images = tmp_path / "images"
    if not images.exists():
        shutil.copytree(synth_dataset / "images", images)
    return path


def _cfg(data: Path, standin_dir: Path, out: Path) -> TrainConfig:
    return TrainConfig(backbone="resnet_tiny", body=str(standin_dir), data=str(data), batch_size=2, epochs=None,
                       max_steps=2, main_iters=1, aux_iters=1, syn_occ=False, num_workers=0, device="cpu",
                       progress=False, out=str(out))


def _nan_part(a):
    a["part"] = a["part"].astype(np.float64)
    a["part"][3, 5, 0] = np.nan


def _nan_s(a):
    a["S"] = a["S"].astype(np.float64)
    a["S"][7, 2, 1] = np.inf


def _empty(a):
    for k in list(a):
        a[k] = a[k][:0]


def _huge_pose(a):
    a["pose"] = a["pose"].astype(np.float64)
    a["pose"][4, 10] = 1e30  # finite, so only a range check sees it


def _huge_keypoint(a):
    a["part"] = a["part"].astype(np.float64)
    a["part"][2, 0, 1] = 1e9


def _huge_joint(a):
    a["S"] = a["S"].astype(np.float64)
    a["S"][6, 3, 2] = -5e3


def _huge_betas(a):
    a["shape"] = a["shape"].astype(np.float64)
    a["shape"][1, 0] = 300.0


@pytest.mark.parametrize("change,key,rows", [(_nan_part, "part", "[3]"), (_nan_s, "S", "[7]"),
                                             (_empty, "imgname", "N = 0"), (_huge_pose, "pose", "[4]"),
                                             (_huge_keypoint, "part", "[2]"), (_huge_joint, "S", "[6]"),
                                             (_huge_betas, "shape", "[1]")])
def test_bad_training_files_stop_before_the_run_folder_exists(synth_dataset, standin_dir, tmp_path, change, key,
                                                              rows):
    data = _copy_with(synth_dataset, tmp_path, change)
    out = tmp_path / "run"
    with pytest.raises(DatasetError) as info:
        train(_cfg(data, standin_dir, out))
    message = str(info.value)
    assert str(data) in message and f"key '{key}'" in message and rows in message
    assert "metahmr data check" in message
    assert not out.exists()


def test_stale_checkpoint_temp_files_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".step_00000010.pt.tmp-{dead_pid}"
    live = tmp_path / f".last.pt.tmp-{os.getpid()}"
    unrelated = tmp_path / "step_00000010.pt"
    for p in (stale, live, unrelated):
        p.write_bytes(b"x")
    assert clean_stale_temp_files(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and unrelated.exists()


def test_train_accepts_a_config_file_under_the_flags(tmp_path, synth_dataset, standin_dir):
    from typer.testing import CliRunner

    from metahmr_cli.cli.app import app

    cfg = tmp_path / "run.toml"
    cfg.write_text(f'batch_size = 3\nmax_steps = 7\nbody = "{standin_dir}"\nsyn_occ = false\n'
                   f'data = "{synth_dataset / "synth_train.npz"}"\n')
    res = CliRunner().invoke(app, ["train", "--backbone", "resnet_tiny", "--config", str(cfg), "--batch-size", "5",
                                   "--dry-run"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "5 x 1 process(es) / 25 / 7" in res.output  # the flag beats the file, the file beats the defaults
