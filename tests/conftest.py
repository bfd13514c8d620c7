"""Test configuration: fixture plugins and a quiet, offline environment."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
if "YOLO_CONFIG_DIR" not in os.environ:
    # ultralytics writes its settings there (read when it is first imported): one folder per test process,
    # removed when the process ends
    _YOLO_DIR = tempfile.mkdtemp(prefix="metahmr_yolo_cfg_")
    os.environ["YOLO_CONFIG_DIR"] = _YOLO_DIR
    atexit.register(shutil.rmtree, _YOLO_DIR, ignore_errors=True)

# triton (pulled in lazily by torchvision/torch._dynamo on the first detector call) crashes when it is
# first imported after an EGL context exists in the process; importing it up front avoids that order.
with contextlib.suppress(ImportError):
    import triton  # noqa: F401

pytest_plugins = ["fixtures.body", "fixtures.models", "fixtures.data"]
