"""scripts/compare_results.py: two result folders are identical only when every array is the same, bit for bit."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_results.py"


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("compare_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _folder(root: Path, *, pose: np.ndarray, run_id: str, overlay: bytes = b"png") -> Path:
    root.mkdir()
    np.savez(root / "a.npz", body_pose=pose, source=np.str_("a.png"), tto_steps=np.array([3], np.int64))
    (root / "a_overlay.png").write_bytes(overlay)
    (root / "summary.json").write_text(json.dumps({"run_id": run_id, "wall_seconds": 1.5, "counts": {"ok": 1}}))
    return root


def test_identical_folders_pass_and_times_do_not_count(compare, tmp_path, capsys):
    pose = np.linspace(0, 1, 69, dtype=np.float32)[None]
    a = _folder(tmp_path / "a", pose=pose, run_id="x")
    b = _folder(tmp_path / "b", pose=pose.copy(), run_id="y")
    assert compare.main([str(a), str(b), "--files"]) == 0
    assert "3 files compared: identical" in capsys.readouterr().out


def test_one_ulp_in_one_array_is_a_difference(compare, tmp_path, capsys):
    pose = np.linspace(0, 1, 69, dtype=np.float32)[None]
    other = pose.copy()
    other[0, 7] = np.nextafter(other[0, 7], np.float32(2))  # the smallest change a float32 can make
    a = _folder(tmp_path / "a", pose=pose, run_id="x")
    b = _folder(tmp_path / "b", pose=other, run_id="x")
    assert compare.main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "a.npz: body_pose: values differ" in out and "1 difference(s)" in out


def test_dtype_missing_file_and_other_bytes_are_named(compare, tmp_path):
    pose = np.zeros((1, 69), np.float32)
    a = _folder(tmp_path / "a", pose=pose, run_id="x")
    b = _folder(tmp_path / "b", pose=pose.astype(np.float64), run_id="x", overlay=b"other")
    np.savez(a / "only_a.npz", x=np.zeros(1))
    n, lines = compare.compare_folders(a, b, other_files=True)
    assert n == 3
    assert "a.npz: body_pose: dtype float32 vs float64" in lines
    assert f"only_a.npz: only in {a}" in lines
    assert "a_overlay.png: bytes differ" in lines


def test_not_a_folder_is_a_usage_error(compare, tmp_path):
    assert compare.main([str(tmp_path / "missing"), str(tmp_path)]) == 2
