"""The one atomic writer (``files.atomic_path``) and the writers built on it: a failed or killed write keeps
the previous file and leaves no temporary file behind (or one that the next run recognises and removes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metahmr_cli import files
from metahmr_cli.body.builders import common as body_builders
from metahmr_cli.files import atomic_path, clean_temp_files, is_temp_file
from metahmr_cli.training.checkpointing import clean_stale_temp_files

OLD = b"the previous, complete file\n"


class Crash(RuntimeError):
    """Stands for a failure in the middle of a write (disk full, a bug in a writer, Ctrl-C)."""


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _half_write(target) -> None:
    """Write some bytes to a path or an open binary file, then fail."""
    if isinstance(target, (str, os.PathLike)):
        with open(target, "wb") as fh:
            fh.write(b"PARTIAL")
    else:
        target.write(b"PARTIAL")
    raise Crash("died mid-write")


def test_atomic_path_replaces_on_success(tmp_path):
    path = tmp_path / "sub" / "out.npz"
    with atomic_path(path) as tmp:
        assert tmp.parent == path.parent and tmp.suffix == ".npz" and is_temp_file(tmp)
        assert not path.exists()  # nothing is visible under the final name while writing
        np.savez(tmp, a=np.arange(3))  # keeps the suffix: np.savez writes exactly there
    with np.load(path) as z:
        np.testing.assert_array_equal(z["a"], np.arange(3))
    assert _names(path.parent) == ["out.npz"]


def test_atomic_path_failure_keeps_old_file_and_removes_temp(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(OLD)
    with pytest.raises(Crash), atomic_path(path) as tmp:
        _half_write(tmp)
    assert path.read_bytes() == OLD
    assert _names(tmp_path) == ["out.bin"]
    # a writer that produces nothing is an error too, and the old file stays
    with pytest.raises(OSError, match="no file"), atomic_path(path):
        pass
    assert path.read_bytes() == OLD and _names(tmp_path) == ["out.bin"]


# each writer of the project, with the library call it makes patched to fail half-way
WRITERS = {
    "torch checkpoint (files.save_torch_atomic)": (
        "out.pt", lambda path: files.save_torch_atomic({"w": torch.zeros(2)}, path),
        (torch, "save", lambda obj, f, *a, **k: _half_write(f))),
    "npz: datasets, eval caches, tracks (files.save_npz_atomic)": (
        "out.npz", lambda path: files.save_npz_atomic(path, {"a": np.zeros(2)}),
        (np, "savez", lambda f, *a, **k: _half_write(f))),
    "compressed npz (files.save_npz_atomic, compressed)": (
        "out.npz", lambda path: files.save_npz_atomic(path, {"a": np.zeros(2)}, compressed=True),
        (np, "savez_compressed", lambda f, *a, **k: _half_write(f))),
    "body asset (body.builders.common.write_atomic)": (
        "out.bin", lambda path: body_builders.write_atomic(path, _half_write), None),
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_writer_crash_mid_write_keeps_old_file(name, tmp_path, monkeypatch):
    filename, write, patch = WRITERS[name]
    path = tmp_path / filename
    path.write_bytes(OLD)
    if patch is not None:
        monkeypatch.setattr(*patch)
    with pytest.raises(Crash):
        write(path)
    assert path.read_bytes() == OLD, "the final file was written in place"
    assert _names(tmp_path) == [filename]


@pytest.mark.parametrize("name", list(WRITERS)[:3])
def test_writer_success_replaces_file(name, tmp_path):
    filename, write, _ = WRITERS[name]
    path = tmp_path / filename
    path.write_bytes(OLD)
    write(path)
    assert path.read_bytes() != OLD and _names(tmp_path) == [filename]
    if filename == "out.npz":
        with np.load(path) as z:
            np.testing.assert_array_equal(z["a"], np.zeros(2))
    else:
        assert torch.equal(torch.load(path, weights_only=True)["w"], torch.zeros(2))


_KILLED_CHILD = """
import os, signal, sys
from metahmr_cli.files import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    with open(tmp, "wb") as fh:
        fh.write(b"PARTIAL")
        fh.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_killed_writer_keeps_old_file_and_its_temp_file_is_cleaned(tmp_path):
    """A process killed (SIGKILL) in the middle of a write: the old file is intact; the temporary file it
    leaves is recognised as such and removed by both clean-ups (process outputs and checkpoint folders)."""
    for clean in (clean_temp_files, clean_stale_temp_files):
        path = tmp_path / "step_00000010.pt"
        path.write_bytes(OLD)
        proc = subprocess.run([sys.executable, "-c", _KILLED_CHILD, str(path)], capture_output=True)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
        assert path.read_bytes() == OLD
        left = [p for p in tmp_path.iterdir() if p != path]
        assert len(left) == 1 and is_temp_file(left[0]) and left[0].read_bytes() == b"PARTIAL"
        assert clean(tmp_path) == left
        assert _names(tmp_path) == [path.name]


def test_checkpoint_clean_up_keeps_temp_files_of_live_writers(tmp_path):
    with atomic_path(tmp_path / "last.pt") as tmp:
        tmp.write_bytes(b"being written by this (live) process")
        assert clean_stale_temp_files(tmp_path) == []
        assert tmp.exists()
    assert _names(tmp_path) == ["last.pt"]


def test_written_files_get_the_usual_permissions(tmp_path):
    """Files written atomically are readable by others as any new file is (0666 minus the umask), not 0600."""
    from metahmr_cli.body.builders.standin import write_standin_assets

    old = os.umask(0o022)
    try:
        write_standin_assets(tmp_path / "body")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "body").iterdir()}
    assert modes and set(modes.values()) == {0o644}, modes
