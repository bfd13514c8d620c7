"""Config system and asset lookup: precedence, unknown keys, error messages that say how to fix things."""

from __future__ import annotations

import json
import os
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


# ---------------------------------------------------------------------------------------------- hostile settings


@pytest.mark.parametrize(("text", "field", "expected"), [
    ('batch_size = "abc"', "batch_size", "a whole number"),
    ('render = "no"', "render", "true or false"),
    ("tto = 5", "tto", "a table of settings"),
    ("video_stride = 1.5", "video_stride", "a whole number"),
    ('[tto]\nlr = "fast"', "tto.lr", "a number"),
    ("[tto]\nearly_stop = 1", "tto.early_stop", "true or false"),
    ('[video]\nsmooth = "strong"', "video.smooth", "a number"),
    ("inputs = [1, 2]", "inputs[0]", "text"),
    ("out = 3", "out", "a path"),
    ('gender = "robot"', "gender", "one of 'neutral', 'male', 'female'"),
    ("focal = true", "focal", "a number or text"),
    ("det_conf = nan", "det_conf", "finite"),
])
def test_each_bad_process_setting_names_its_field_in_one_line(tmp_path, text, field, expected):
    from metahmr_cli.process_config import ProcessConfig

    path = tmp_path / "run.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as err:
        apply_overrides(ProcessConfig(), load_config_file(path))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"Setting {field}:") and expected in msg, msg


@pytest.mark.parametrize(("values", "field"), [
    ({"outer_lr": "fast"}, "outer_lr"),
    ({"batch_size": "abc"}, "batch_size"),
    ({"eval_methods": "none,eft"}, None),  # a comma-separated text is what the CLI gives: accepted
    ({"eval_methods": [1]}, "eval_methods[0]"),
    ({"loss_weights": {"keypoint_2d": "high"}}, "loss_weights.keypoint_2d"),
    ({"deterministic": "yes"}, "deterministic"),
])
def test_each_bad_train_setting_names_its_field(values, field):
    from metahmr_cli.training import TrainConfig

    if field is None:
        apply_overrides(TrainConfig(), values)
        return
    with pytest.raises(ConfigError) as err:
        apply_overrides(TrainConfig(), values)
    assert str(err.value).startswith(f"Setting {field}: ") and "\n" not in str(err.value)


def test_settings_built_in_python_are_type_checked_too():
    from metahmr_cli.process_config import ProcessConfig
    from metahmr_cli.training import TrainConfig
    from metahmr_cli.tto import TTOConfig

    with pytest.raises(ConfigError, match="^Setting batch_size: expected a whole number, got 'abc'"):
        ProcessConfig(inputs=["x.jpg"], batch_size="abc").validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="^Setting tto.max_steps: expected a whole number"):
        TTOConfig(max_steps="many").validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="^Setting outer_lr: expected a number"):
        TrainConfig(outer_lr="fast").validate()  # type: ignore[arg-type]
    cfg = ProcessConfig(inputs=[Path("a.jpg")], out="out", det_iou=1)  # type: ignore[list-item, arg-type]
    cfg.validate_settings()  # paths and whole numbers take their field's type
    assert cfg.inputs == ["a.jpg"] and cfg.out == Path("out") and isinstance(cfg.det_iou, float)


def test_huge_values_are_refused_and_quoted_short(tmp_path):
    from metahmr_cli.process_config import ProcessConfig

    big = "x" * 50_000_000
    with pytest.raises(ConfigError) as err:
        apply_overrides(ProcessConfig(), {"detector": big})
    msg = str(err.value)
    assert len(msg) < 400 and "50,000,000 characters" in msg and msg.startswith("Setting detector:")
    with pytest.raises(ConfigError) as err:
        apply_overrides(ProcessConfig(), {"render": big})
    assert len(str(err.value)) < 400 and "render" in str(err.value)
    with pytest.raises(ConfigError) as err:
        apply_overrides(ProcessConfig(), {big: 1})  # an unknown key is quoted short too
    assert len(str(err.value)) < 2000 and "Unknown setting" in str(err.value)
    path = tmp_path / "big.toml"
    with open(path, "w") as fh:
        fh.write('detector = "')
        fh.write("y" * (17 * 2**20))
        fh.write('"\n')
    with pytest.raises(ConfigError, match=r"big.toml is 17.0 MB; at most 16 MB"):
        load_config_file(path)


@pytest.mark.parametrize("kind", ["json", "toml_arrays", "toml_tables"])
def test_deeply_nested_config_files_are_a_clear_error(tmp_path, kind):
    depth = 100_000
    if kind == "json":
        path = tmp_path / "deep.json"
        path.write_text('{"tto": ' + "[" * depth + "]" * depth + "}")
    elif kind == "toml_arrays":
        path = tmp_path / "deep.toml"
        path.write_text("tto = " + "[" * depth + "]" * depth + "\n")
    else:
        path = tmp_path / "deep.toml"
        path.write_text("[" + ".".join(["a"] * 2000) + "]\nx = 1\n")
    with pytest.raises(ConfigError, match=r"deep\.(json|toml) nests tables/arrays more than 32 levels deep"):
        load_config_file(path)


@pytest.mark.parametrize("which", ["keypoints", "boxes"])
def test_deeply_nested_imported_json_is_a_clear_error(tmp_path, which):
    from metahmr_cli.detect.boxes_json import load_boxes_json
    from metahmr_cli.errors import InputError
    from metahmr_cli.keypoints import load_keypoints

    path = tmp_path / f"{which}.json"
    path.write_text('{"a.jpg": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(InputError, match=rf"{which}.json nests tables/arrays more than 32 levels deep"):
        (load_keypoints if which == "keypoints" else load_boxes_json)(path)


def test_a_bad_setting_on_the_command_line_is_one_line_and_exit_code_2(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "run.toml"
    path.write_text('render = "no"\n')
    photo = Path(__file__).resolve().parents[1] / "examples" / "messi5.jpg"
    argv = ["metahmr", "process", str(photo), "--config", str(path), "--out", str(tmp_path / "out")]
    code = f"import sys; from metahmr_cli.cli.app import main; sys.argv={argv!r}; main()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [ln for ln in done.stderr.splitlines() if "render" in ln]
    assert lines and "Setting render: expected true or false, got 'no' (text)." in lines[0], done.stderr
    assert "Traceback" not in done.stderr
