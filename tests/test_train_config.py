"""Training settings, recipes, data order, run folders and ``metahmr train --dry-run`` (fast, no training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from metahmr_cli.config import apply_overrides, load_config_file
from metahmr_cli.errors import ConfigError
from metahmr_cli.training import BUILTIN_RECIPES, GlobalBatchSampler, TrainConfig, recipe_config, unique_run_dir

TRAIN_DIR = Path(__file__).resolve().parents[1] / "train"


@pytest.mark.parametrize("name", sorted(BUILTIN_RECIPES))
def test_recipe_files_match_builtin_copies(name):
    raw = load_config_file(TRAIN_DIR / f"{name}.toml")
    assert raw == BUILTIN_RECIPES[name]
    apply_overrides(TrainConfig(), raw).validate()


def test_paper_settings_of_the_recipes():
    hr, _ = recipe_config(None, "hrnet")
    assert (hr.arch, hr.backbone, hr.batch_size, hr.epochs) == ("cliff", "hrnet", 30, 25)
    r50, _ = recipe_config(None, "resnet")
    assert (r50.batch_size, r50.epochs) == (40, 65)
    hmr, _ = recipe_config("hmr_resnet")
    assert hmr.arch == "hmr" and hmr.camera == "hmr"
    ft, _ = recipe_config("finetune_3dpw", overrides={"batch_size": 8})
    assert (ft.epochs, ft.data, ft.batch_size) == (5, "w3dpw", 8)
    assert hr.outer_lr == 1e-4 and hr.inner_lr == 1e-5 and hr.resolved_aux_lr() == 1e-6
    assert hr.loss_weights.outer_scale == 60.0


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match="grouping"):
        TrainConfig(grouping="images").validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="hmr"):
        TrainConfig(arch="hmr", backbone="hrnet").validate()
    with pytest.raises(ConfigError, match="Did you mean 'batch_size'"):
        apply_overrides(TrainConfig(), {"batchsize": 4})


def test_global_batch_sampler_shards_one_global_order():
    n, b = 23, 3
    one = GlobalBatchSampler(n, 2 * b, seed=5)
    ranks = [GlobalBatchSampler(n, b, seed=5, rank=r, world_size=2) for r in range(2)]
    for epoch in (0, 1):
        one.set_epoch(epoch)
        for s in ranks:
            s.set_epoch(epoch)
        batches_one = list(one)
        per_rank = [list(s) for s in ranks]
        assert len(batches_one) == n // (2 * b) == len(per_rank[0])
        for k, big in enumerate(batches_one):
            assert per_rank[0][k] + per_rank[1][k] == big  # disjoint shards of the same global batch
        flat = [i for batch in batches_one for i in batch]
        assert len(set(flat)) == len(flat)
    # the order depends on the epoch, and a start position skips exactly the first batches
    one.set_epoch(0)
    e0 = list(one)
    one.set_epoch(1)
    assert list(one) != e0
    one.set_epoch(0, start=2)
    assert list(one) == e0[2:]
    assert np.array_equal(one.global_batch(0, 1), np.asarray(e0[1]))


def test_run_folders_are_never_overwritten(tmp_path):
    base = tmp_path / "x"
    assert unique_run_dir(base) == base
    base.mkdir()
    assert unique_run_dir(base) == base  # empty folder is reused
    (base / "f").write_text("1")
    assert unique_run_dir(base) == tmp_path / "x2"
    (tmp_path / "x2").mkdir()
    assert unique_run_dir(base) == tmp_path / "x3"


def test_dry_run_lists_the_plan_and_missing_files(synth_dataset, standin_dir, tmp_path):
    from metahmr_cli.cli.app import app

    runner = CliRunner()
    common = ["train", "--backbone", "resnet_tiny", "--data", str(synth_dataset / "synth_train.npz"),
              "--body", str(standin_dir), "--out", str(tmp_path / "r"), "--set", "syn_occ=false",
              "--max-steps", "5", "--dry-run"]
    ok = runner.invoke(app, common, env={"COLUMNS": "200"})
    assert ok.exit_code == 0, ok.output
    assert "24 samples" in ok.output and "ready to train" in ok.output
    bad = runner.invoke(app, [*common, "--init-aux", str(tmp_path / "nope.pt"), "--init-main",
                              str(tmp_path / "nobackbone.pth")], env={"COLUMNS": "200"})
    assert bad.exit_code == 2
    assert "nope.pt" in bad.output and "nobackbone.pth" in bad.output and "2 problem(s)" in bad.output
