"""The offline MediaPipe person detector on a real photo and on an empty image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_pipeline_support import (  # noqa: F401  (fixture)
    assert_outputs_clean,
    base_args,
    manifest_status,
    tiny_checkpoint_fixture,
)
from typer.testing import CliRunner

from metahmr_cli.cli.app import app
from metahmr_cli.detect import MediaPipePersonDetector, box_iou
from metahmr_cli.io.sources import read_image

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# Messi in examples/messi5.jpg (548x342), whole body incl. raised hand and shoe, measured by eye on a 50 px grid.
MESSI_BOX = np.array([[60.0, 55.0, 465.0, 342.0]], dtype=np.float32)


@pytest.fixture(scope="module")
def detector():
    pytest.importorskip("mediapipe")
    det = MediaPipePersonDetector()
    yield det
    det.close()


def test_finds_the_player_in_a_real_photo(detector):
    dets = detector.detect(read_image(EXAMPLES / "messi5.jpg"))
    assert len(dets) == 1
    assert 0.5 < dets.scores[0] <= 1.0
    assert box_iou(dets.xyxy, MESSI_BOX)[0, 0] > 0.7
    x1, y1, x2, y2 = dets.xyxy[0]
    assert 0 <= x1 < x2 <= 548 and 0 <= y1 < y2 <= 342  # clamped to the image


def test_empty_image_has_nobody(detector):
    assert len(detector.detect(np.full((240, 320, 3), 127, np.uint8))) == 0


def test_process_runs_fully_offline_on_the_examples(tmp_path, standin_dir, tiny_checkpoint):
    """`--detector mediapipe --keypoints mediapipe` needs no downloaded file besides body and checkpoint."""
    from metahmr_cli.io.writers import load_result_npz

    out = tmp_path / "out"
    args = ["process", str(EXAMPLES / "messi5.jpg"), *base_args(standin_dir, tiny_checkpoint, out),
            "--detector", "mediapipe", "--keypoints", "mediapipe", "--no-render"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert manifest_status(out) == {"messi5": "ok"}
    assert_outputs_clean(out)
    d = load_result_npz(out / "messi5.npz")
    assert d["bbox"].shape == (1, 4) and box_iou(d["bbox"], MESSI_BOX)[0, 0] > 0.7
    # keypoint evidence lies inside the detected box
    kp = d["keypoints2d"][0]
    seen = kp[kp[:, 2] > 0.5]
    assert len(seen) >= 10
    x1, y1, x2, y2 = d["bbox"][0]
    assert ((seen[:, 0] >= x1 - 1) & (seen[:, 0] <= x2 + 1) & (seen[:, 1] >= y1 - 1) & (seen[:, 1] <= y2 + 1)).all()
