"""`metahmr data check` / `metahmr data synth` and the file checks behind them."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from metahmr_cli.cli.data import data_app
from metahmr_cli.data.check import check_npz
from metahmr_cli.data.npzio import load_npz
from metahmr_cli.files import save_npz_atomic

runner = CliRunner()
NARROW = {"COLUMNS": "40"}  # narrower than any temp path: report lines must not depend on the console width


def _copy_dataset(src, dst, drop=(), replace=None):
    d = load_npz(src / "synth_train.npz")
    for k in drop:
        d.pop(k)
    d.update(replace or {})
    dst.mkdir(parents=True, exist_ok=True)
    save_npz_atomic(dst / "synth_train.npz", d)
    (dst / "images").symlink_to(src / "images")
    return dst / "synth_train.npz"


def test_check_ok_on_synth(synth_dataset) -> None:
    npz = synth_dataset / "synth_train.npz"
    res = runner.invoke(data_app, ["check", str(npz)], env=NARROW)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].endswith(str(npz))  # the path is printed whole on the dataset's line
    assert "24 samples" in res.output and "0 missing" in res.output


def test_check_reports_missing_key(synth_dataset, tmp_path) -> None:
    npz = _copy_dataset(synth_dataset, tmp_path / "d", drop=("part",))
    res = runner.invoke(data_app, ["check", str(npz)], env=NARROW)
    assert res.exit_code == 1
    assert "key 'part': required key is missing" in res.output
    assert "expected (N, 24, 3), found absent" in res.output


def test_check_reports_wrong_shape_and_row_count(synth_dataset, tmp_path) -> None:
    d = load_npz(synth_dataset / "synth_train.npz")
    npz = _copy_dataset(synth_dataset, tmp_path / "d", replace={"S": d["S"][..., :3], "pose": d["pose"][:-2]})
    rep = check_npz(npz)
    msgs = [str(i) for i in rep.errors]
    assert any("key 'S'" in m and "expected (24, 24, 4), found (24, 24, 3)" in m for m in msgs), msgs
    assert any("key 'pose'" in m and "found (22, 72)" in m for m in msgs), msgs


def test_check_reports_missing_images(synth_dataset, tmp_path) -> None:
    root = tmp_path / ("a_folder_name_longer_than_the_console_" * 3) / "copy"
    d = load_npz(synth_dataset / "synth_train.npz")
    root.mkdir(parents=True)
    save_npz_atomic(root / "synth_train.npz", d)
    (root / "images" / "train").mkdir(parents=True)
    for name in d["imgname"][2:]:  # the first two images are missing
        (root / name).write_bytes((synth_dataset / name).read_bytes())
    res = runner.invoke(data_app, ["check", str(root / "synth_train.npz"), "--all-images"], env=NARROW)
    assert res.exit_code == 1
    assert "2 image file(s) missing (all checked)" in res.output
    for name in d["imgname"][:2]:  # the first missing paths are named, each whole on one line
        assert str(root / name) in res.output
    rep = check_npz(root / "synth_train.npz", all_images=True)
    assert rep.images_missing == 2 and rep.images_checked == 24
    assert rep.missing_examples == [str(root / d["imgname"][0]), str(root / d["imgname"][1])]


def test_check_by_config_name(synth_dataset, tmp_path) -> None:
    cfg = tmp_path / "datasets.toml"
    cfg.write_text(f'root = "{synth_dataset}"\n[datasets.mysynth]\nnpz = "synth_test.npz"\n')
    res = runner.invoke(data_app, ["check", "--config", str(cfg), "mysynth"], env=NARROW)
    assert res.exit_code == 0, res.output
    assert "mysynth" in res.output and "8 samples" in res.output
    # without names: every configured dataset; absent built-in files are listed as skipped, not failures
    res = runner.invoke(data_app, ["check", "--config", str(cfg)], env=NARROW)
    assert res.exit_code == 0, res.output
    assert "not present (skipped)" in res.output


def test_synth_cli(tmp_path, standin_dir) -> None:
    out = tmp_path / "s"
    res = runner.invoke(data_app, ["synth", "--out", str(out), "--n", "3", "--body", str(standin_dir),
                                   "--size", "64x48", "--test-fraction", "0.34", "--ext", "jpg"])
    assert res.exit_code == 0, res.output
    z = np.load(out / "synth_train.npz")
    assert len(z["imgname"]) == 2 and z["imgname"][0].endswith(".jpg")
    assert len(np.load(out / "synth_test.npz")["imgname"]) == 1
    assert check_npz(out / "synth_train.npz").ok


def test_check_reports_values_out_of_range(synth_dataset, tmp_path) -> None:
    """Finite but impossible values (pose = 1e30 would pass the NaN check and only show in training as skipped
    steps) are errors naming the key, the first rows and the allowed range."""
    d = load_npz(synth_dataset / "synth_train.npz")
    pose, part, s3d = (d[k].astype(np.float64) for k in ("pose", "part", "S"))
    pose[5, 3:6] = [13.0, 0.0, 0.0]       # 13 rad > 4 pi
    part[0, 4, 0] = 2e5                     # px
    s3d[9, 0, 1] = 150.0                    # m
    npz = _copy_dataset(synth_dataset, tmp_path / "d", replace={"pose": pose, "part": part, "S": s3d,
                                                                "focal_length": np.full(len(pose), -3.0)})
    rep = check_npz(npz)
    msgs = {i.key: str(i) for i in rep.errors}
    assert "rows [5]" in msgs["pose"] and "4 pi rad" in msgs["pose"] and "found up to 13" in msgs["pose"]
    assert "rows [0]" in msgs["part"] and "within +-1e5" in msgs["part"]
    assert "rows [9]" in msgs["S"] and "100 m" in msgs["S"]
    assert "focal_length" in msgs and "(0, 1e6]" in msgs["focal_length"]
    assert set(msgs) == {"pose", "part", "S", "focal_length"}  # the untouched keys pass
    # the limits are not tighter than real data: 2 pi rotations, 10 betas, keypoints far outside the image
    pose[5, 3:6] = [2 * np.pi, 0.0, 0.0]
    far = d["part"].astype(np.float64)
    far[..., :2] -= 5000.0
    npz = _copy_dataset(synth_dataset, tmp_path / "ok", replace={"pose": pose, "shape": d["shape"] * 0 + 10.0,
                                                                 "part": far})
    assert check_npz(npz).ok, [str(i) for i in check_npz(npz).errors]
