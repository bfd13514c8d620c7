"""Shared fixtures of the process tests (tiny networks, fixed stages, sample inputs) and small unit checks."""

from __future__ import annotations

import json
import math
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from metahmr_cli.detect import Detections
from metahmr_cli.errors import ConfigError
from metahmr_cli.files import TEMP_MARKER
from metahmr_cli.geometry.camera import focal_for_image
from metahmr_cli.io.writers import MANIFEST_NAME, read_manifest, validate_result_npz
from metahmr_cli.process_config import ProcessConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PHOTOS = ("messi5.jpg", "basketball1.png")
# person boxes (x1, y1, x2, y2[, score]) drawn by hand on the example photos
EXAMPLE_BOXES = {
    "messi5.jpg": [[65, 55, 460, 340, 0.9]],
    "basketball1.png": [[30, 75, 200, 480], [430, 20, 640, 480, 0.8]],
}

# 24 ground-truth-set joints (slots 25..48) in box-normalised coordinates: a standing person, arms down
_GT_TEMPLATE = np.array([
    [0.40, 0.95], [0.42, 0.75], [0.44, 0.55], [0.56, 0.55], [0.58, 0.75], [0.60, 0.95],  # ankles..hips
    [0.30, 0.50], [0.32, 0.40], [0.38, 0.22], [0.62, 0.22], [0.68, 0.40], [0.70, 0.50],  # wrists..shoulders
    [0.50, 0.20], [0.50, 0.05], [0.50, 0.35], [0.50, 0.45], [0.50, 0.30], [0.50, 0.15],  # neck, top, ...
    [0.50, 0.10], [0.48, 0.09], [0.52, 0.09], [0.47, 0.10], [0.53, 0.10], [0.50, 0.11],  # jaw/head, face
], dtype=np.float32)


class FixedDetector:
    """One person per image at fixed relative coordinates."""

    def __init__(self, rel_box=(0.25, 0.08, 0.75, 0.95), score: float = 0.9) -> None:
        self.rel_box = np.asarray(rel_box, np.float32)
        self.score = score

    def detect(self, image: np.ndarray) -> Detections:
        h, w = image.shape[:2]
        box = self.rel_box * np.array([w, h, w, h], np.float32)
        return Detections(box[None], np.array([self.score], np.float32))


class TemplateKeypoints:
    """Keypoints of a standing person placed in each box (ground-truth slots, confidence 1)."""

    def __call__(self, image: np.ndarray, boxes: np.ndarray, *, path: Path, frame: int | None) -> np.ndarray:
        out = np.zeros((len(boxes), 49, 3), np.float32)
        for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, np.float32)):
            out[i, 25:, 0] = x1 + _GT_TEMPLATE[:, 0] * (x2 - x1)
            out[i, 25:, 1] = y1 + _GT_TEMPLATE[:, 1] * (y2 - y1)
            out[i, 25:, 2] = 1.0
        return out


def coco17_from_box(box) -> list[float]:
    """17 COCO keypoints (flat x, y, c) of a standing person in ``box``."""
    x1, y1, x2, y2 = box[:4]
    rel = [(0.5, 0.08), (0.48, 0.06), (0.52, 0.06), (0.46, 0.07), (0.54, 0.07), (0.38, 0.22), (0.62, 0.22),
           (0.32, 0.40), (0.68, 0.40), (0.30, 0.50), (0.70, 0.50), (0.44, 0.55), (0.56, 0.55), (0.42, 0.75),
           (0.58, 0.75), (0.40, 0.95), (0.60, 0.95)]
    flat: list[float] = []
    for rx, ry in rel:
        flat += [x1 + rx * (x2 - x1), y1 + ry * (y2 - y1), 0.9]
    return flat


@pytest.fixture(scope="session", name="tiny_checkpoint")
def tiny_checkpoint_fixture(standin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Main + auxiliary CLIFF networks on the tiny backbone, saved in the Meta-HMR checkpoint form."""
    from metahmr_cli.body.smpl import load_mean_params
    from metahmr_cli.models import build_regressor, save_networks

    mean = load_mean_params(standin_dir)
    torch.manual_seed(0)
    main = build_regressor("cliff", "resnet_tiny", n_iter=3, mean_params=mean)
    aux = build_regressor("cliff", "resnet_tiny", n_iter=3, mean_params=mean)
    return save_networks(tmp_path_factory.mktemp("ckpt") / "tiny_metahmr.pt", main, aux)


@pytest.fixture(scope="session", name="yolo_env")
def yolo_env_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ultralytics settings folder so that nothing is written to the home folder."""
    import os

    d = tmp_path_factory.mktemp("yolo")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(d))
    return d


def base_args(standin_dir: Path, checkpoint: Path, out: Path) -> list[str]:
    """CLI flags shared by the end-to-end runs (stand-in body, tiny checkpoint, 2 TTO steps)."""
    return ["--out", str(out), "--body", str(standin_dir), "--checkpoint", str(checkpoint), "--steps", "2",
            "--device", "cpu", "--no-progress"]


def copy_photos(dst: Path) -> list[Path]:
    dst.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(EXAMPLES / name, dst / name)) for name in PHOTOS]


def write_boxes_json(path: Path, boxes: dict | None = None) -> Path:
    path.write_text(json.dumps(boxes or EXAMPLE_BOXES))
    return path


def write_synthetic_video(path: Path, n_frames: int = 6, size=(128, 96), fps: float = 5.0) -> Path:
    """A moving bright rectangle on a dark background (H.264 MP4)."""
    from metahmr_cli.render import VideoWriter

    w, h = size
    with VideoWriter(path, fps) as vw:
        for i in range(n_frames):
            frame = np.full((h, w, 3), 30, np.uint8)
            x = 30 + 4 * i
            cv2.rectangle(frame, (x, 15), (x + 40, 90), (220, 200, 180), -1)
            vw.write(frame)
    return path


def png_with_header_size(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height (the pixel data is a tiny stub): a decompression bomb."""
    ok, buf = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))
    assert ok
    data = bytearray(buf.tobytes())
    ihdr = 8 + 8  # signature + length + type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:ihdr + 13])) & 0xFFFFFFFF
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))
    return path


def assert_outputs_clean(out: Path) -> None:
    """No temporary files anywhere; every result file valid."""
    temps = [p for p in out.rglob("*") if TEMP_MARKER in p.name]
    assert temps == [], temps
    for p in out.rglob("*.npz"):
        if p.name.endswith("_tracks.npz") or p.parent.name.endswith("_tracks"):
            continue  # sequence files of videos (their own layout)
        assert validate_result_npz(p) == [], p


def manifest_status(out: Path) -> dict[str, str]:
    return {k: r.status for k, r in read_manifest(out / MANIFEST_NAME).items()}


# ---------------------------------------------------------------------------------------------- unit checks


def test_focal_precedence_hand_values():
    # default: sqrt(640^2 + 480^2) = 800, also when the photo has an EXIF focal (used only with focal="exif")
    assert focal_for_image(640, 480) == (800.0, "diagonal")
    assert focal_for_image(640, 480, exif_focal=1234.5) == (800.0, "diagonal")
    assert focal_for_image(640, 480, focal="exif", exif_focal=1234.5) == (1234.5, "exif")
    # horizontal fov 90 degrees: f = W / 2 = 320
    f, src = focal_for_image(640, 480, fov=90.0, exif_focal=1234.5)
    assert math.isclose(f, 320.0) and src == "fov"
    assert focal_for_image(640, 480, focal=500.0, fov=90.0) == (500.0, "focal")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"inputs": []}, "No inputs"),
        ({"batch_size": 0}, "batch_size"),
        ({"focal": -1.0}, "focal"),
        ({"fov": 200.0}, "fov"),
        ({"focal": 500.0, "fov": 60.0}, "either focal or fov"),
        ({"save_mesh": "stl"}, "save_mesh"),
        ({"keypoints": "openpose-json"}, "--keypoints-json"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_process_config_rejects_bad_values(changes, match):
    cfg = ProcessConfig(inputs=["x.jpg"])
    for k, v in changes.items():
        setattr(cfg, k, v)
    with pytest.raises(ConfigError, match=match):
        cfg.validate()
