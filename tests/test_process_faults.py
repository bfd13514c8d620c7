"""`process` under faults around it: unusable output folders, a disk that fills up, two runs into one folder,
Ctrl-C inside the renderer, folder entries that cannot be read, huge images, file names that are not UTF-8."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_pipeline_support import (  # noqa: F401  (fixtures)
    EXAMPLES,
    FixedDetector,
    TemplateKeypoints,
    tiny_checkpoint_fixture,
)
from typer.testing import CliRunner

from metahmr_cli.errors import InputError
from metahmr_cli.files import TEMP_MARKER
from metahmr_cli.io.outdir import LOCK_NAME, DiskFullError, OutputLock, check_output_folder
from metahmr_cli.io.writers import MANIFEST_NAME, read_manifest
from metahmr_cli.pipeline import Pipeline
from metahmr_cli.process_config import ProcessConfig
from metahmr_cli.tto import TTOConfig


def _pipeline(inputs, out, standin_dir, checkpoint, **kw) -> Pipeline:
    kw.setdefault("render", False)
    cfg = ProcessConfig(inputs=[str(i) for i in inputs], out=out, body=str(standin_dir), checkpoint=checkpoint,
                        device="cpu", tto=TTOConfig(schedule="none"), **kw)
    return Pipeline(cfg, progress=False, detector=FixedDetector(), keypoints=TemplateKeypoints())


def _photos(folder: Path, n: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"p{i}.jpg"
        shutil.copy(EXAMPLES / "messi5.jpg", p)
        out.append(p)
    return out


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if TEMP_MARKER in p.name or ".tmp-" in p.name]


# ---------------------------------------------------------------------------------------------- output folder


@pytest.mark.parametrize("where", ["proc", "file_parent"])
def test_unusable_output_folders_stop_before_any_model_loads(tmp_path, where):
    from metahmr_cli.cli.app import app

    if where == "proc":
        out = Path("/proc/metahmr-out")
    else:
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "out"
    res = CliRunner().invoke(app, ["process", str(EXAMPLES / "messi5.jpg"), "--out", str(out)],
                             env={"COLUMNS": "300"})
    assert res.exit_code == 2
    text = " ".join(res.output.split())
    assert str(out) in text and "choose another --out" in text
    assert "Traceback" not in res.output


def test_read_only_and_full_disks_are_named(tmp_path, monkeypatch):
    def refuse(path, *a, **k):
        if ".metahmr-write-test-" in str(path):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *a, **k)

    real_open = open
    monkeypatch.setattr("builtins.open", refuse)
    with pytest.raises(InputError, match="not writable \\(Read-only file system\\)"):
        check_output_folder(tmp_path / "ro")
    monkeypatch.undo()

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=0))
    with pytest.raises(InputError, match="is full"):
        check_output_folder(tmp_path / "full")
    assert not (tmp_path / "full" / MANIFEST_NAME).exists()
    monkeypatch.undo()

    # the quick check before the settings are validated creates nothing, but still names a file in the way
    assert check_output_folder(tmp_path / "later" / "out", create=False) == tmp_path / "later" / "out"
    assert not (tmp_path / "later").exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_output_folder(tmp_path / "afile" / "out", create=False)


def test_a_disk_that_fills_up_stops_the_run_and_keeps_finished_outputs(tmp_path, standin_dir, tiny_checkpoint,
                                                                       monkeypatch):
    import metahmr_cli.pipeline.results as pipeline_module

    photos = _photos(tmp_path / "in", 4)
    out = tmp_path / "out"
    real_write = pipeline_module.write_result_npz
    calls = []

    def write(path, result):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, result)

    monkeypatch.setattr(pipeline_module, "write_result_npz", write)
    pipe = _pipeline(photos, out, standin_dir, tiny_checkpoint, batch_size=1)
    with pytest.raises(DiskFullError, match="is full"):
        pipe.run()
    assert len(calls) == 2  # stopped at the first full write: the other inputs were not attempted
    records = read_manifest(out / MANIFEST_NAME)
    assert records["p0"].status == "ok" and "p1" not in records
    assert (out / "p0.npz").is_file() and not (out / "p1.npz").exists()
    assert _no_temp_files(out)


# ---------------------------------------------------------------------------------------------- two runs


def test_a_second_run_into_a_busy_folder_stops_or_waits(tmp_path, standin_dir, tiny_checkpoint):
    photos = _photos(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(out), pytest.raises(InputError, match=r"in use by another metahmr run \(pid \d+\)"):
        _pipeline(photos, out, standin_dir, tiny_checkpoint).run()
    assert not (out / MANIFEST_NAME).exists()  # nothing written, nothing cleaned

    holder = OutputLock(out)
    holder.__enter__()
    threading.Timer(1.0, holder.__exit__, args=(None, None, None)).start()
    t0 = time.perf_counter()
    report = _pipeline(photos, out, standin_dir, tiny_checkpoint, wait=True).run()
    assert report.exit_code == 0 and time.perf_counter() - t0 >= 0.9  # it waited, then ran


@pytest.mark.parametrize("planted", ["symlink", "dangling_symlink", "hard_link", "folder"])
def test_a_planted_lock_file_is_refused_and_what_it_points_to_is_untouched(tmp_path, standin_dir, tiny_checkpoint,
                                                                           planted):
    photos = _photos(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "precious.txt"
    lock = out / LOCK_NAME
    if planted == "symlink":
        target.write_text("keep me")
        lock.symlink_to(target)
    elif planted == "dangling_symlink":
        lock.symlink_to(target)  # would be created through the link
    elif planted == "hard_link":
        target.write_text("keep me")
        os.link(target, lock)
    else:
        lock.mkdir()
    what = {"symlink": "symbolic link", "dangling_symlink": "symbolic link", "hard_link": "hard link",
            "folder": "cannot open the lock file"}[planted]
    with pytest.raises(InputError, match=what):
        _pipeline(photos, out, standin_dir, tiny_checkpoint).run()
    if planted == "dangling_symlink":
        assert not target.exists()
    elif planted != "folder":
        assert target.read_text() == "keep me"
    assert not (out / MANIFEST_NAME).exists()  # nothing processed
    if planted == "folder":
        lock.rmdir()
    else:
        lock.unlink()
    assert _pipeline(photos, out, standin_dir, tiny_checkpoint).run().exit_code == 0  # a plain lock file is made
    assert lock.is_file() and not lock.is_symlink()


def test_temp_files_of_a_live_run_are_not_touched_by_a_waiting_run(tmp_path, standin_dir, tiny_checkpoint):
    """The lock makes the start-up clean-up safe: it runs only once no other run holds the folder."""
    photos = _photos(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    live_temp = out / f"{TEMP_MARKER}live.npz"
    with OutputLock(out):
        live_temp.write_bytes(b"being written")
        with pytest.raises(InputError):
            _pipeline(photos, out, standin_dir, tiny_checkpoint).run()
        assert live_temp.exists()


# ---------------------------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_inside_an_opengl_call_stops_instead_of_disabling_renders(monkeypatch):
    from metahmr_cli.render import overlay

    class InterruptedGL:
        viewport_width, viewport_height = 32, 32

        def render(self, scene, flags=None):
            overlay.note_interrupt()  # what the runner's SIGINT handler does
            raise ctypes.ArgumentError("argument 2: <class 'KeyboardInterrupt'>: ")

    r = overlay.MeshRenderer()
    try:
        r._pyrender = overlay._import_pyrender()
    except overlay.RendererUnavailable:
        pytest.skip("no offscreen renderer on this machine")
    r._renderer = InterruptedGL()
    verts = np.array([[[0.0, 0.0, 2.0], [0.1, 0.0, 2.0], [0.0, 0.1, 2.0]]])
    K = np.array([[30.0, 0, 16], [0, 30.0, 16], [0, 0, 1]])
    with pytest.raises(KeyboardInterrupt):
        r.render_overlay(np.zeros((32, 32, 3), np.uint8), verts, np.array([[0, 1, 2]]), K)
    assert r._error is None  # renders stay enabled


def test_an_interrupt_exits_130_and_keeps_finished_outputs(tmp_path, monkeypatch):
    from metahmr_cli.cli.app import app

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Pipeline, "run", interrupted)
    res = CliRunner().invoke(app, ["process", str(EXAMPLES / "messi5.jpg"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 130 and "finished inputs are kept" in " ".join(res.output.split())  # wrapped or not


# ---------------------------------------------------------------------------------------------- inputs


def test_unreadable_folder_entries_are_recorded_as_failed(tmp_path, standin_dir, tiny_checkpoint, monkeypatch):
    folder = tmp_path / "in"
    _photos(folder / "sub", 1)
    (folder / "dangling.jpg").symlink_to(folder / "missing.jpg")
    (folder / "loop1.png").symlink_to(folder / "loop2.png")
    (folder / "loop2.png").symlink_to(folder / "loop1.png")
    (folder / "locked").mkdir()
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path).name == "locked":
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    pipe = _pipeline([folder], tmp_path / "out", standin_dir, tiny_checkpoint, recursive=True)
    report = pipe.run()
    records = read_manifest(tmp_path / "out" / MANIFEST_NAME)
    assert records["sub__p0"].status == "ok"
    assert records["dangling"].status == "failed" and "dangling symlink" in records["dangling"].reason
    assert records["loop1"].status == "failed" and "symlink loop" in records["loop1"].reason
    assert records["locked"].status == "failed" and "Permission denied" in records["locked"].reason
    assert report.exit_code == 1


def test_the_pixel_limit_can_be_raised(tmp_path, standin_dir, tiny_checkpoint):
    big = tmp_path / "in" / "big.png"
    big.parent.mkdir()
    Image.new("RGB", (1200, 1000), (120, 120, 120)).save(big)
    pipe = _pipeline([big], tmp_path / "out", standin_dir, tiny_checkpoint, max_pixels=1_000_000)
    assert pipe.run().exit_code == 1
    reason = read_manifest(tmp_path / "out" / MANIFEST_NAME)["big"].reason
    assert "1.2 MP" in reason and "--max-pixels" in reason
    pipe = _pipeline([big], tmp_path / "out2", standin_dir, tiny_checkpoint, max_pixels=2_000_000)
    assert pipe.run().exit_code == 0


def test_names_that_are_not_utf8_are_stored_losslessly(tmp_path, standin_dir, tiny_checkpoint):
    raw = b"caf\xe9.jpg"  # Latin-1 bytes: not UTF-8
    folder = tmp_path / "in"
    folder.mkdir()
    path = Path(os.fsdecode(os.path.join(os.fsencode(folder), raw)))
    shutil.copy(EXAMPLES / "messi5.jpg", path)
    out = tmp_path / "out"
    assert _pipeline([folder], out, standin_dir, tiny_checkpoint).run().exit_code == 0
    text = (out / MANIFEST_NAME).read_bytes().decode("utf-8")  # valid UTF-8 throughout
    assert "\\ud" not in text  # no lone surrogates that other JSON readers reject
    (record,) = [json.loads(line) for line in text.splitlines()]
    assert record["input"].endswith("caf\ufffd.jpg")
    assert bytes.fromhex(record["input_hex"]) == os.fsencode(path)
