"""The installed environment: the two OpenCV wheels agree and cv2 works; the public API imports without torch."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys

import numpy as np


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def test_opencv_wheels_share_one_version_and_cv2_works():
    import cv2

    versions = {d: _version(d) for d in ("opencv-python", "opencv-contrib-python", "opencv-python-headless")}
    installed = {d: v for d, v in versions.items() if v}
    assert installed, "no OpenCV wheel installed"
    # the wheels overwrite each other's cv2/ folder: only identical versions leave a consistent package
    assert len(set(installed.values())) == 1, installed
    assert cv2.__version__ == next(iter(installed.values())).rsplit(".", 1)[0]
    img = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    ok, png = cv2.imencode(".png", img)
    assert ok and np.array_equal(cv2.imdecode(png, cv2.IMREAD_UNCHANGED), img)
    assert cv2.resize(img, (2, 2)).shape == (2, 2, 3)


def test_import_metahmr_is_light():
    code = "import sys, metahmr; print('torch' in sys.modules, metahmr.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "False" and out[1] == __import__("metahmr_cli").__version__
