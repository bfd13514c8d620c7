"""Test configuration: fixture plugins and a quiet, offline environment."""

from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

pytest_plugins = ["fixtures.body", "fixtures.models", "fixtures.data"]
