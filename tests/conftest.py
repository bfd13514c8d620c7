"""Test configuration: fixture plugins and a quiet, offline environment."""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

# triton (pulled in lazily by torchvision/torch._dynamo on the first detector call) crashes when it is
# first imported after an EGL context exists in the process; importing it up front avoids that order.
with contextlib.suppress(ImportError):
    import triton  # noqa: F401

pytest_plugins = ["fixtures.body", "fixtures.models", "fixtures.data"]
