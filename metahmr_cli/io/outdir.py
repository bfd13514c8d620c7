"""The output folder of a run: checked before any model loads, locked for the run, and watched for a full disk.

- :func:`check_output_folder` creates the folder and writes a probe file in it, so an unusable ``--out`` (under
  ``/proc``, below a file, on a read-only or full file system) is a clear error naming the folder and the fix.
- :class:`OutputLock` holds an exclusive lock (``fcntl.flock`` on ``<out>/.metahmr.lock``) while a run writes into
  the folder: a second run into the same folder stops with a message (or waits with ``wait=True``), so it can
  neither delete the first run's temporary files nor interleave the manifest. The lock file is opened without
  following symbolic links and must be a plain file of its own: a link or a hard link planted under its name is
  refused, so locking never truncates another file. ``metahmr train`` locks its run folder the same way.
- :func:`disk_full` tells whether an exception comes from a full disk or quota.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
from pathlib import Path
from typing import Any

from metahmr_cli.errors import InputError, MetaHMRError

__all__ = ["LOCK_NAME", "MIN_FREE_BYTES", "DiskFullError", "OutputLock", "check_output_folder", "disk_full"]

LOCK_NAME = ".metahmr.lock"
MIN_FREE_BYTES = 16 * 1024 * 1024
"""Free space below which a run does not start (one result file with vertices is about 1 MB per person)."""


class DiskFullError(MetaHMRError):
    """The disk holding the output folder filled up during a run."""


def disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` or an exception it was raised from is ENOSPC (no space) or EDQUOT (quota exceeded)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def check_output_folder(out: str | os.PathLike[str], *, min_free: int = MIN_FREE_BYTES, create: bool = True) -> Path:
    """Create ``out`` and make sure files can be written there; returns it.

    With ``create=False`` nothing is created: a folder that does not exist yet only needs its nearest existing
    parent to be a writable folder (a quick check before a run whose settings are not validated yet).

    Raises:
        InputError: naming the folder, the reason and the fix.
    """
    out = Path(out).expanduser()
    fix = "choose another --out (a writable folder on a disk with free space)"
    for parent in [out, *out.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"Output folder {out} cannot be created: {parent} is a file, not a folder; {fix}.")
            if not create and parent != out:
                if not os.access(parent, os.W_OK | os.X_OK):
                    raise InputError(f"Output folder {out} cannot be created: {parent} is not writable; {fix}.")
                return out
            break
    if not create and not out.exists():
        return out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"Output folder {out} cannot be created ({exc.strerror or exc}); {fix}.") from exc
    try:
        free = shutil.disk_usage(out).free
    except OSError:
        free = None
    if free is not None and free < min_free:
        raise InputError(f"The disk holding the output folder {out} is full ({free // 1024} KB free); free some "
                         f"space or {fix}.")
    probe = out / f".metahmr-write-test-{os.getpid()}"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"metahmr")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        why = "the disk is full" if disk_full(exc) else (exc.strerror or str(exc))
        raise InputError(f"Output folder {out} is not writable ({why}); {fix}.") from exc
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return out


class OutputLock:
    """Exclusive use of an output folder for the duration of a ``with`` block.

    Args:
        out: the output folder (it must exist).
        wait: wait for a run that holds the folder instead of stopping with an error.
        say: called once with a message when waiting.
        what: how messages name the folder ("Output folder", "Run folder" ...).
        fix: what a refused run should do instead (the end of the "in use" message).
    """

    def __init__(self, out: str | os.PathLike[str], *, wait: bool = False, say: Any = None,
                 what: str = "Output folder", fix: str = "or choose another --out") -> None:
        self.path = Path(out) / LOCK_NAME
        self.wait = wait
        self.say = say
        self.what = what
        self.fix = fix
        self._fh: Any = None

    def _holder(self) -> str:
        with contextlib.suppress(OSError, ValueError):
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "r") as fh:
                return fh.read(64).strip() or "unknown"
        return "unknown"

    def _open(self) -> Any:
        """The lock file, opened for writing without following a symbolic link and without truncating it; refused
        unless it is a plain file with no other name (a link planted there must not make us write elsewhere)."""
        import stat

        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fix = f"Remove {self.path} (metahmr creates its own lock file) and run again."
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP or self.path.is_symlink():
                raise InputError(f"{self.what} {self.path.parent}: its lock file {LOCK_NAME} is a symbolic link; "
                                 f"refusing to follow it. {fix}") from None
            raise InputError(f"cannot open the lock file {self.path} ({exc.strerror or exc}).") from exc
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            kind = "not a plain file" if not stat.S_ISREG(st.st_mode) else f"a hard link ({st.st_nlink} names)"
            raise InputError(f"{self.what} {self.path.parent}: its lock file {LOCK_NAME} is {kind}; refusing to "
                             f"write to it. {fix}")
        return os.fdopen(fd, "r+")

    def __enter__(self) -> OutputLock:
        import fcntl

        fh = self._open()
        announced = False
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    fh.close()
                    raise InputError(f"cannot lock the {self.what.lower()} {self.path.parent} "
                                     f"({exc.strerror}).") from exc
                holder = self._holder()
                if not self.wait:
                    fh.close()
                    raise InputError(
                        f"{self.what} {self.path.parent} is in use by another metahmr run (pid {holder}). Wait for "
                        f"it to finish (or pass --wait to wait here), {self.fix}.") from None
                if not announced and self.say is not None:
                    self.say(f"waiting for the other metahmr run (pid {holder}) writing to {self.path.parent}")
                    announced = True
                time.sleep(0.5)
        # ours now (the file was checked above): record who holds it
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl

        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.seek(0)
                self._fh.truncate()
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
