"""End-to-end runs of `metahmr process` through the CLI (stand-in body, tiny random networks, CPU)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import trimesh
from test_pipeline_support import (  # noqa: F401  (fixtures)
    EXAMPLE_BOXES,
    EXAMPLES,
    assert_outputs_clean,
    base_args,
    coco17_from_box,
    copy_photos,
    manifest_status,
    tiny_checkpoint_fixture,
    write_boxes_json,
    yolo_env_fixture,
)
from typer.testing import CliRunner

from metahmr_cli.body.smpl import load_body_model
from metahmr_cli.cli.app import app
from metahmr_cli.files import is_temp_file
from metahmr_cli.geometry.rotation import axis_angle_to_rotmat
from metahmr_cli.io.sources import read_image
from metahmr_cli.io.writers import MANIFEST_NAME, load_result_npz, read_manifest

runner = CliRunner()


def _invoke(args: list[str]):
    result = runner.invoke(app, ["process", *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def _read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_photos_with_imported_boxes_and_mediapipe(tmp_path, standin_dir, tiny_checkpoint):
    photos = tmp_path / "photos"
    copy_photos(photos)
    boxes = write_boxes_json(tmp_path / "boxes.json")
    out = tmp_path / "out"
    args = [str(photos), *base_args(standin_dir, tiny_checkpoint, out), "--boxes-json", str(boxes),
            "--keypoints", "mediapipe", "--save-mesh", "ply", "--side-view"]
    res = _invoke(args)
    assert res.exit_code == 0, res.output
    assert manifest_status(out) == {"messi5": "ok", "basketball1": "ok"}
    records = read_manifest(out / MANIFEST_NAME)
    # MediaPipe finds no keypoint in basketball1's right-hand box (every confidence 0): that player gets no mesh,
    # and the result file and the manifest say why
    assert records["messi5"].people == 1 and records["basketball1"].people == 1
    assert records["messi5"].no_keypoints == 0 and records["basketball1"].no_keypoints == 1
    assert_outputs_clean(out)
    meshed = {"messi5.jpg": EXAMPLE_BOXES["messi5.jpg"], "basketball1.png": EXAMPLE_BOXES["basketball1.png"][:1]}
    dropped = load_result_npz(out / "basketball1.npz")
    np.testing.assert_allclose(dropped["dropped_bbox"], [EXAMPLE_BOXES["basketball1.png"][1][:4]], atol=1e-4)
    assert dropped["dropped_reason"].tolist() == ["no_keypoints"] and not dropped["dropped_keypoints2d"][..., 2].any()

    body = load_body_model(standin_dir, "neutral", device="cpu", dtype=torch.float64)
    for stem, name in (("messi5", "messi5.jpg"), ("basketball1", "basketball1.png")):
        d = load_result_npz(out / f"{stem}.npz")
        image = read_image(photos / name)
        H, W = image.shape[:2]
        P = len(meshed[name])
        assert d["image_size"].tolist() == [H, W]
        f = math.hypot(W, H)  # no EXIF focal in these files: the CLIFF default
        np.testing.assert_allclose(d["K"], [[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], rtol=1e-6)
        np.testing.assert_allclose(d["bbox"], [b[:4] for b in meshed[name]], atol=1e-4)
        np.testing.assert_allclose(d["det_score"], [b[4] if len(b) == 5 else 1.0 for b in meshed[name]])
        assert d["global_orient"].shape == (P, 3) and d["body_pose"].shape == (P, 69)
        assert d["vertices"].shape == (P, body.num_vertices, 3)
        assert str(d["body_model"]) == "standin" and str(d["tto_schedule"]) == "metahmr"
        assert json.loads(str(d["tto_config"]))["max_steps"] == 2
        assert str(d["checkpoint"]).startswith("tiny_metahmr.pt")
        # the default schedule: one SGD step on the head, then at most --steps Adam steps
        assert (d["tto_steps"] <= 1 + 2).all() and (d["tto_steps"] >= 0).all()
        assert str(d["focal_rule"]) == "diagonal" and str(d["model_tier"]) == "custom"
        # the stored parameters rebuild the stored mesh: SMPL(pose, betas) + transl == vertices
        aa = torch.from_numpy(np.concatenate([d["global_orient"], d["body_pose"]], 1)).double().reshape(P, 24, 3)
        rebuilt = body(axis_angle_to_rotmat(aa), torch.from_numpy(d["betas"]).double(),
                       torch.from_numpy(d["transl"]).double())
        np.testing.assert_allclose(rebuilt.vertices.numpy(), d["vertices"], atol=2e-4)
        np.testing.assert_allclose(rebuilt.joints.numpy(), d["joints3d"], atol=2e-4)
        # the overlay is the image with meshes drawn over it
        overlay = _read_rgb(out / f"{stem}_overlay.png")
        assert overlay.shape == image.shape
        changed = (overlay.astype(int) - image.astype(int)).any(-1)
        assert changed.mean() > 0.01
        assert (out / f"{stem}_side.png").is_file()
        for i in range(P):
            mesh = trimesh.load(out / f"{stem}_person{i:02d}.ply", process=False)
            # mesh files use glTF/Blender axes (y up): the camera frame turned half a turn about x
            np.testing.assert_allclose(mesh.vertices, d["vertices"][i] * [1, -1, -1], atol=1e-5)
    # MediaPipe finds Messi: confident keypoints, inside the (enlarged) box
    kp = load_result_npz(out / "messi5.npz")["keypoints2d"][0]
    seen = kp[:, 2] > 0
    assert seen.sum() >= 10
    x1, y1, x2, y2 = EXAMPLE_BOXES["messi5.jpg"][0][:4]
    assert (kp[seen, 0] > x1 - 100).all() and (kp[seen, 0] < x2 + 100).all()
    assert (kp[seen, 1] > y1 - 100).all() and (kp[seen, 1] < y2 + 100).all()

    # a re-run skips both inputs and touches no output
    stamps = {p: p.stat().st_mtime_ns for p in out.iterdir()
              if p.suffix != ".jsonl" and p.name not in ("summary.json", ".metahmr.lock")}
    res = _invoke(args)
    assert res.exit_code == 0, res.output
    assert manifest_status(out) == {"messi5": "skipped", "basketball1": "skipped"}
    assert read_manifest(out / MANIFEST_NAME)["basketball1"].previous_status == "ok"
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # asking for other mesh formats writes them from the stored results; the results and the .ply files stay
    res = _invoke([*args[:-2], "obj,glb", "--side-view"])
    assert res.exit_code == 0, res.output
    assert manifest_status(out) == {"messi5": "skipped", "basketball1": "skipped"}
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    outputs = read_manifest(out / MANIFEST_NAME)["basketball1"].outputs
    for fmt in ("ply", "obj", "glb"):
        assert (out / f"basketball1_person00.{fmt}").is_file() and f"basketball1_person00.{fmt}" in outputs
    mesh = trimesh.load(out / "basketball1_person00.obj", process=False)
    np.testing.assert_allclose(mesh.vertices, load_result_npz(out / "basketball1.npz")["vertices"][0] * [1, -1, -1],
                               atol=1e-5)
    assert not (out / "basketball1_person01.obj").exists()  # the player without keypoints has no mesh


def test_random_yolo_detector_finds_nobody(tmp_path, standin_dir, tiny_checkpoint, yolo_env):
    photos = tmp_path / "photos"
    copy_photos(photos)
    out = tmp_path / "out"
    res = _invoke([str(photos), *base_args(standin_dir, tiny_checkpoint, out), "--detector", "yolo11n.yaml",
                   "--keypoints", "mediapipe"])
    assert res.exit_code == 0, res.output
    assert manifest_status(out) == {"messi5": "no_person", "basketball1": "no_person"}
    assert_outputs_clean(out)
    for stem, name in (("messi5", "messi5.jpg"), ("basketball1", "basketball1.png")):
        d = load_result_npz(out / f"{stem}.npz")
        assert d["global_orient"].shape == (0, 3) and d["vertices"].shape[0] == 0
        np.testing.assert_array_equal(_read_rgb(out / f"{stem}_overlay.png"), read_image(photos / name))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["no_person"] == 2 and summary["exit_code"] == 0


def test_missing_assets_are_listed_before_any_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("METAHMR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("METAHMR_SMPL_DIR", raising=False)
    monkeypatch.delenv("METAHMR_CHECKPOINT", raising=False)
    photos = tmp_path / "photos"
    copy_photos(photos)
    out = tmp_path / "out"
    res = _invoke([str(photos), "--out", str(out), "--checkpoint", str(tmp_path / "nope.pt"), "--no-progress"])
    assert res.exit_code == 2
    text = " ".join(res.output.split())
    assert "4 required files are missing" in text
    for needle in ("SMPL", "nope.pt", "yolo11m.pt", "RTMPose", "How to fix"):
        assert needle in text, needle
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--tto", "bogus"], "tto.schedule"),
        (["--save-mesh", "stl"], "save_mesh"),
        (["--keypoints", "openpose-json"], "--keypoints-json"),
        (["--focal", "500", "--fov", "60"], "either focal or fov"),
    ],
)
def test_usage_errors_exit_2(tmp_path, extra, needle):
    res = _invoke([str(EXAMPLES / "messi5.jpg"), "--out", str(tmp_path / "o"), "--no-progress", *extra])
    assert res.exit_code == 2
    assert needle in " ".join(res.output.split())
    assert not (tmp_path / "o").exists()


def test_missing_input_exit_2(tmp_path):
    res = _invoke([str(tmp_path / "none.jpg"), "--out", str(tmp_path / "o"), "--no-progress"])
    assert res.exit_code == 2 and "does not exist" in " ".join(res.output.split())


def _keypoint_inputs(folder: Path, n: int) -> Path:
    """n small photos and a COCO-style keypoints file listing one person per photo."""
    folder.mkdir()
    base = cv2.imread(str(EXAMPLES / "basketball1.png"))
    entries = {}
    for i in range(n):
        img = cv2.resize(base, (160, 120), interpolation=cv2.INTER_AREA)
        img = np.roll(img, 3 * i, axis=1)
        cv2.imwrite(str(folder / f"img{i:02d}.png"), img)
        entries[f"img{i:02d}.png"] = [{"keypoints": coco17_from_box([20 + i, 15, 70 + i, 118])}]
    kp_file = folder.parent / "keypoints.json"
    kp_file.write_text(json.dumps(entries))
    return kp_file


def test_config_file_and_imported_keypoints(tmp_path, standin_dir, tiny_checkpoint):
    kp_file = _keypoint_inputs(tmp_path / "imgs", 2)
    cfg = tmp_path / "run.toml"
    cfg.write_text('render = false\nsave_vertices = false\n[tto]\nschedule = "eft"\nmax_steps = 1\n')
    out = tmp_path / "out"
    res = _invoke([str(tmp_path / "imgs"), "--config", str(cfg), "--out", str(out), "--body", str(standin_dir),
                   "--checkpoint", str(tiny_checkpoint), "--keypoints", "coco-json", "--keypoints-json",
                   str(kp_file), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert manifest_status(out) == {"img00": "ok", "img01": "ok"}
    assert sorted(p.name for p in out.iterdir()) == [".metahmr.lock", "img00.npz", "img01.npz", MANIFEST_NAME,
                                                     "summary.json"]
    d = load_result_npz(out / "img01.npz")
    assert "vertices" not in d and str(d["tto_schedule"]) == "eft"
    assert json.loads(str(d["tto_config"]))["max_steps"] == 1
    # boxes come from the keypoints' extent; COCO keypoints fill both 49-joint slot sets
    np.testing.assert_allclose(d["bbox"][0, [0, 2]], [21 + 0.30 * 50, 21 + 0.70 * 50], atol=1e-3)
    assert (d["keypoints2d"][0, :, 2] > 0).sum() > 17


def test_image_missing_from_imported_keypoints_fails_naming_the_file(tmp_path, standin_dir, tiny_checkpoint):
    kp_file = _keypoint_inputs(tmp_path / "imgs", 2)
    entries = json.loads(kp_file.read_text())
    del entries["img01.png"]
    kp_file.write_text(json.dumps(entries))
    out = tmp_path / "out"
    res = _invoke([str(tmp_path / "imgs"), "--out", str(out), "--body", str(standin_dir), "--checkpoint",
                   str(tiny_checkpoint), "--keypoints", "coco-json", "--keypoints-json", str(kp_file),
                   "--steps", "1", "--no-render", "--no-progress"])
    assert res.exit_code == 1, res.output
    records = read_manifest(out / MANIFEST_NAME)
    assert records["img00"].status == "ok" and records["img01"].status == "failed"
    assert str(kp_file) in records["img01"].reason and "img01.png" in records["img01"].reason
    assert not list(out.glob("img01*"))


def _finished(out: Path) -> list[Path]:
    return [p for p in out.glob("*.npz") if not is_temp_file(p)]


def test_killed_run_resumes_with_valid_outputs(tmp_path, standin_dir, tiny_checkpoint):
    n = 24
    kp_file = _keypoint_inputs(tmp_path / "imgs", n)
    out = tmp_path / "out"
    args = [str(tmp_path / "imgs"), *base_args(standin_dir, tiny_checkpoint, out), "--keypoints", "coco-json",
            "--keypoints-json", str(kp_file), "--side-view"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYOPENGL_PLATFORM": "egl"}
    log = tmp_path / "killed_run.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "metahmr_cli.cli.app", "process", *args], env=env,
                                stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if _finished(out):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be interrupted:\n" + log.read_text()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    finished_before = _finished(out)
    assert 1 <= len(finished_before) < n
    # nothing under a final name is partial (temporary files may remain; the next run removes them)
    for p in finished_before:
        assert load_result_npz(p)["schema_version"] == "1.3"

    res = _invoke(args)
    assert res.exit_code == 0, res.output
    statuses = manifest_status(out)
    assert len(statuses) == n and set(statuses.values()) <= {"ok", "skipped"}
    assert_outputs_clean(out)
    for i in range(n):
        assert (out / f"img{i:02d}_overlay.png").is_file() and (out / f"img{i:02d}_side.png").is_file()


def test_summary_line_prints_the_output_folder_verbatim(tmp_path, standin_dir, tiny_checkpoint):
    photos = tmp_path / "photos"
    copy_photos(photos)
    out = tmp_path / "out[bold]"
    res = _invoke([str(photos / "messi5.jpg"), *base_args(standin_dir, tiny_checkpoint, out), "--boxes-json",
                   str(write_boxes_json(tmp_path / "boxes.json")), "--keypoints", "mediapipe", "--tto", "none",
                   "--no-render"])
    assert res.exit_code == 0, res.output
    assert "out[bold]" in "".join(res.output.split())
