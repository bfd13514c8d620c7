"""Config system and asset lookup: precedence, unknown keys, error messages that say how to fix things."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from metahmr_cli import assets
from metahmr_cli.config import apply_overrides, build_config, config_to_dict, load_config_file
from metahmr_cli.errors import AssetNotFoundError, ConfigError


@dataclass
class _Inner:
    max_steps: int = 14
    schedule: Literal["metahmr", "none"] = "metahmr"


@dataclass
class _Outer:
    device: str = "auto"
    batch_size: int = 8
    out: Path = Path("results")
    tto: _Inner = field(default_factory=_Inner)


def test_overrides_nested_and_dotted():
    cfg = apply_overrides(_Outer(), {"batch_size": 3, "tto": {"max_steps": 5}})
    assert (cfg.batch_size, cfg.tto.max_steps, cfg.tto.schedule) == (3, 5, "metahmr")
    cfg = apply_overrides(cfg, {"tto.schedule": "none", "out": "x/y"})
    assert cfg.tto.schedule == "none" and cfg.out == Path("x/y") and cfg.tto.max_steps == 5


def test_unknown_key_suggests_closest():
    with pytest.raises(ConfigError, match="batch_size"):
        apply_overrides(_Outer(), {"batchsize": 2})
    with pytest.raises(ConfigError, match="tto.max_steps"):
        apply_overrides(_Outer(), {"tto": {"max_step": 2}})


def test_literal_values_are_checked():
    with pytest.raises(ConfigError, match="schedule"):
        apply_overrides(_Outer(), {"tto.schedule": "magic"})


def test_file_then_cli_precedence(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('batch_size = 4\ndevice = "cpu"\n[tto]\nmax_steps = 3\n')
    cfg = build_config(_Outer, toml, batch_size=16, device=None)
    assert cfg.batch_size == 16  # flag wins over file
    assert cfg.device == "cpu"  # file wins over default; unset flag does not override
    assert cfg.tto.max_steps == 3
    assert config_to_dict(cfg)["out"] == "results"
    js = tmp_path / "run.json"
    js.write_text(json.dumps({"tto": {"max_steps": 2}}))
    assert load_config_file(js) == {"tto": {"max_steps": 2}}


def test_bad_config_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("a = [")
    with pytest.raises(ConfigError, match="does not parse"):
        load_config_file(bad)
    yml = tmp_path / "x.yaml"
    yml.write_text("a: 1")
    with pytest.raises(ConfigError, match=r"\.toml or \.json"):
        load_config_file(yml)


@pytest.fixture
def isolated_roots(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    for var in (assets.ENV_HOME, assets.ENV_SMPL_DIR, assets.ENV_CHECKPOINT):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_lookup_order_explicit_env_local_user(isolated_roots, monkeypatch):
    tmp = isolated_roots
    user = assets.user_data_dir() / "smpl"
    local = tmp / "weights" / "smpl"
    home = tmp / "home" / "smpl"
    for folder in (user, local, home):
        folder.mkdir(parents=True)
        (folder / "J_regressor_h36m.npy").write_bytes(b"x")
    assert assets.resolve_asset("j_regressor_h36m") == local / "J_regressor_h36m.npy"
    monkeypatch.setenv(assets.ENV_HOME, str(tmp / "home"))
    assert assets.resolve_asset("j_regressor_h36m") == home / "J_regressor_h36m.npy"
    explicit = tmp / "mine.npy"
    explicit.write_bytes(b"y")
    assert assets.resolve_asset("j_regressor_h36m", explicit) == explicit
    (local / "J_regressor_h36m.npy").unlink()
    (home / "J_regressor_h36m.npy").unlink()
    monkeypatch.delenv(assets.ENV_HOME)
    assert assets.resolve_asset("j_regressor_h36m") == user / "J_regressor_h36m.npy"


def test_missing_asset_message_lists_places_and_fix(isolated_roots):
    with pytest.raises(AssetNotFoundError) as info:
        assets.resolve_asset("metahmr_cliff_hrnet_3dpw")
    text = str(info.value)
    assert "cliff_hrnet_3dpw.pt" in text
    assert str(isolated_roots / "weights" / "checkpoints") in text
    assert "How to fix" in text and "Meta-HMR" in text
    with pytest.raises(AssetNotFoundError, match="import-smpl"):
        assets.body_dir("smpl")


def test_smpl_alternative_names_and_env_dir(isolated_roots, monkeypatch):
    folder = isolated_roots / "my_smpl"
    folder.mkdir()
    (folder / "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl").write_bytes(b"x")
    monkeypatch.setenv(assets.ENV_SMPL_DIR, str(folder))
    assert assets.resolve_asset("smpl_neutral").name == "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl"
    with pytest.raises(AssetNotFoundError):
        assets.body_dir("smpl")  # J_regressor_extra.npy still missing
    (folder / "J_regressor_extra.npy").write_bytes(b"x")
    assert assets.body_dir("smpl") == folder


def test_unknown_asset_name():
    with pytest.raises(KeyError, match="known"):
        assets.find_asset("nonsense")


def test_manifest_lists_every_asset_with_its_path_and_licence():
    manifest = assets.load_manifest()["files"]
    assert set(manifest) == set(assets.ASSETS)
    for name, spec in assets.ASSETS.items():
        assert manifest[name]["path"] == spec.relpath
        assert manifest[name]["licence"] == spec.licence
