"""Quieting the native (C++) logs of mediapipe and TFLite, which ignore Python's logging settings."""

from __future__ import annotations


def quiet_native_logs() -> None:
    """Keep the C++ logs of mediapipe / TFLite (absl, glog) off the console: they print INFO and WARNING lines
    for every graph they build. Set before the first import of mediapipe; an explicit setting wins."""
    import os

    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # absl comes with mediapipe; without it there is nothing to quiet
        pass


class native_stderr_silenced:  # noqa: N801 - used like a function: ``with native_stderr_silenced():``
    """Send what native code writes to file descriptor 2 to /dev/null while the block runs (mediapipe's graph and
    TFLite delegate logs ignore the logging settings). Python's own ``sys.stderr`` is flushed first; errors raised
    in the block still reach the caller as exceptions."""

    def __enter__(self) -> native_stderr_silenced:
        import os
        import sys

        self._saved = None
        try:
            sys.stderr.flush()
            self._saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # no real stderr (e.g. captured): leave it alone
            self._saved = None
        return self

    def __exit__(self, *exc: object) -> None:
        import os

        if self._saved is not None:
            _flush_c_streams()  # what native code buffered in the block goes to /dev/null too, not out at exit
            os.dup2(self._saved, 2)
            os.close(self._saved)


def _flush_c_streams() -> None:
    """``fflush(NULL)``: write out every C stdio buffer now (native libraries may buffer their stderr)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        libc.fflush(None)
    except (OSError, AttributeError):  # no C library to reach: nothing buffered there either
        pass
