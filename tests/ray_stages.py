"""Keypoint stages for the Ray backend's tests that misbehave on purpose inside Ray workers (other processes, so
they coordinate through files): a worker killed while it processes an image, a run held until its driver is
killed, a log of what each run processed. Ray workers import this module (the tests put ``tests/`` on their
``PYTHONPATH``), so it must stay importable without pytest fixtures.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from test_pipeline_support import TemplateKeypoints


def _claim(path: Path) -> bool:
    """Create ``path`` if it does not exist yet; True for the one caller (of any process) that created it."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


class LoggedKeypoints(TemplateKeypoints):
    """Template keypoints; each call leaves ``log_dir/<file name>_<frame>.<pid>`` (what was processed, by whom)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)

    def __call__(self, image: np.ndarray, boxes: np.ndarray, *, path: Path, frame: int | None) -> np.ndarray:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.log_dir / f"{Path(path).name}_{frame}.{os.getpid()}").touch()
        return super().__call__(image, boxes, path=path, frame=frame)


class KillingKeypoints(LoggedKeypoints):
    """Kills its worker process (``os._exit``, as the kernel's OOM killer or a crash would) on ``kill_once`` the
    first time any worker reaches it, and on ``kill_always`` every time."""

    def __init__(self, log_dir: Path, marker: Path, kill_once: str, kill_always: str | None = None) -> None:
        super().__init__(log_dir)
        self.marker, self.kill_once, self.kill_always = Path(marker), kill_once, kill_always

    def __call__(self, image: np.ndarray, boxes: np.ndarray, *, path: Path, frame: int | None) -> np.ndarray:
        name = Path(path).name
        if name == self.kill_always or (name == self.kill_once and _claim(self.marker)):
            os._exit(1)
        return super().__call__(image, boxes, path=path, frame=frame)


class GatedKeypoints(LoggedKeypoints):
    """Lets the first ``free`` calls (of all workers together) through; every later call waits until
    ``gate/open`` exists, so a run stays in flight with a known number of finished inputs."""

    def __init__(self, log_dir: Path, gate: Path, free: int) -> None:
        super().__init__(log_dir)
        self.gate, self.free = Path(gate), free

    def __call__(self, image: np.ndarray, boxes: np.ndarray, *, path: Path, frame: int | None) -> np.ndarray:
        self.gate.mkdir(parents=True, exist_ok=True)
        if not any(_claim(self.gate / f"ticket_{k}") for k in range(self.free)):
            give_up = time.monotonic() + 900  # only so that a broken test cannot leave a worker behind for ever
            while not (self.gate / "open").exists():
                if time.monotonic() > give_up:
                    raise RuntimeError("the gate was never opened")
                time.sleep(0.05)
        return super().__call__(image, boxes, path=path, frame=frame)
