"""People without usable keypoints get no mesh: the result file, the manifest and the summary say why.

"Usable" is what the TTO engine counts for its fallback (``fell_back``): keypoints with a confidence above 0 in the
slots the 2D loss reads (the ground-truth slots 25..48 by default); fewer than ``tto.min_keypoints`` (4) and TTO
would keep the plain regression, which for the open model (it reads only keypoints) is a tiny body.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_pipeline_support import TemplateKeypoints, assert_outputs_clean, tiny_checkpoint_fixture  # noqa: F401

from metahmr_cli.detect import Detections
from metahmr_cli.io.writers import (
    MANIFEST_NAME,
    SUMMARY_NAME,
    FrameResult,
    load_result_npz,
    read_manifest,
    validate_result_arrays,
)
from metahmr_cli.losses import LossWeights
from metahmr_cli.pipeline import Pipeline
from metahmr_cli.process_config import ProcessConfig
from metahmr_cli.tto import TTOConfig, usable_keypoints

W, H = 160, 120
BOXES = np.array([[10, 10, 70, 110], [90, 10, 150, 110], [60, 20, 100, 100]], np.float32)


class Boxes:
    """The same three people in every image."""

    def detect(self, image: np.ndarray) -> Detections:
        return Detections(BOXES.copy(), np.array([0.9, 0.8, 0.7], np.float32))


class SomeKeypoints:
    """Image ``all_missing``: nobody has keypoints. Otherwise person 0 has every keypoint, person 1 three of them
    (one short of ``min_keypoints``), person 2 none."""

    def __init__(self) -> None:
        self.full = TemplateKeypoints()

    def __call__(self, image: np.ndarray, boxes: np.ndarray, *, path, frame) -> np.ndarray:
        kp = self.full(image, boxes, path=path, frame=frame)
        if "all_missing" in str(path):
            kp[..., 2] = 0.0
            return kp
        kp[1, 28:, 2] = 0.0  # slots 25, 26, 27 kept: three usable keypoints
        kp[1, :24] = kp[0, 25:]  # OpenPose slots do not count for the default loss, whatever their confidence
        kp[2, :, 2] = 0.0
        return kp


def test_usable_keypoints_counts_the_slots_the_loss_reads():
    kp = torch.zeros(2, 49, 3)
    kp[0, 25:28, 2] = 0.9     # three ground-truth slots
    kp[0, 0:10, 2] = 0.5      # ten OpenPose slots
    kp[1, 30, 2] = 1e-3       # any confidence above 0 counts
    kp[1, 31, 2] = -0.2       # a negative one does not
    assert usable_keypoints(kp, LossWeights()).tolist() == [3, 1]
    assert usable_keypoints(kp, LossWeights(openpose_2d=1.0, gt_2d=0.0)).tolist() == [10, 0]
    assert usable_keypoints(kp, LossWeights(openpose_2d=1.0, gt_2d=1.0)).tolist() == [13, 1]


def test_the_people_dropped_are_those_tto_falls_back_on(standin_body, tiny_checkpoint):
    """The same people TTO keeps unfitted (``fell_back``) are the ones ``process`` gives no mesh."""
    from metahmr_cli.geometry.camera import CropInfo
    from metahmr_cli.geometry.crop import apply_affine, box_from_xyxy, normalize_crop_keypoints
    from metahmr_cli.models import load_networks
    from metahmr_cli.tto import TTOInputs, run_tto

    image = np.zeros((H, W, 3), np.uint8)
    kp = SomeKeypoints()(image, BOXES, path="a.png", frame=None)
    center, scale = box_from_xyxy(BOXES.astype(np.float64), margin=1.2)
    crop = CropInfo.from_boxes(np.asarray(center).reshape(3, 2), np.asarray(scale).reshape(3),
                               np.array([H, W], np.float64), np.full(3, 200.0), dtype=torch.float32)
    kp_crop = np.concatenate([apply_affine(kp[..., :2].astype(np.float64), crop.crop_trans.numpy()), kp[..., 2:]], -1)
    kp_crop = normalize_crop_keypoints(kp_crop)
    kp_crop[kp[..., 2] <= 0] = 0.0
    nets = load_networks(tiny_checkpoint, device="cpu")
    images = torch.zeros(3, 3, 256, 192)
    res = run_tto(nets.main, nets.aux, standin_body,
                  TTOInputs(images=images, crop=crop, keypoints2d=torch.as_tensor(kp_crop, dtype=torch.float32)),
                  TTOConfig(max_steps=1))
    assert res.fell_back.tolist() == [False, True, True]


@pytest.fixture
def run_out(tmp_path, standin_dir, tiny_checkpoint):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (W, H), (90, 120, 150)).save(folder / "some.png")
    Image.new("RGB", (W, H), (150, 120, 90)).save(folder / "all_missing.png")
    out = tmp_path / "out"
    cfg = ProcessConfig(inputs=[str(folder)], out=out, body=str(standin_dir), checkpoint=tiny_checkpoint,
                        device="cpu", keypoints="mediapipe", tto=TTOConfig(max_steps=2))
    report = Pipeline(cfg, detector=Boxes(), keypoints=SomeKeypoints(), progress=False).run()
    return out, report, cfg


def test_people_without_keypoints_get_no_mesh(run_out):
    out, report, _ = run_out
    assert report.exit_code == 0
    assert_outputs_clean(out)

    some = load_result_npz(out / "some.npz")
    assert str(some["schema_version"]) == "1.3"
    # one mesh: the person with every keypoint; the other two are listed with the reason
    assert some["vertices"].shape[0] == some["betas"].shape[0] == 1
    np.testing.assert_allclose(some["bbox"], BOXES[:1])
    np.testing.assert_allclose(some["dropped_bbox"], BOXES[1:])
    np.testing.assert_allclose(some["dropped_det_score"], [0.8, 0.7])
    assert some["dropped_reason"].tolist() == ["no_keypoints", "no_keypoints"]
    assert (some["dropped_keypoints2d"][0, 25:28, 2] == 1).all() and (some["dropped_keypoints2d"][1, :, 2] == 0).all()
    assert not some["fell_back"].any()

    empty = load_result_npz(out / "all_missing.npz")
    assert empty["vertices"].shape[0] == 0 and empty["dropped_reason"].tolist() == ["no_keypoints"] * 3

    records = read_manifest(out / MANIFEST_NAME)
    assert (records["some"].status, records["some"].people, records["some"].no_keypoints) == ("ok", 1, 2)
    rec = records["all_missing"]
    assert (rec.status, rec.people, rec.no_keypoints) == ("no_keypoints", 0, 3)
    assert "3 people found, none with 4 or more usable keypoints" in rec.reason

    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert summary["counts"]["ok"] == 1 and summary["counts"]["no_keypoints"] == 1
    assert summary["processed"]["people"] == 1 and summary["processed"]["no_keypoints"] == 5


def test_a_rerun_keeps_the_no_keypoints_inputs(run_out):
    out, _, cfg = run_out
    report = Pipeline(cfg, detector=Boxes(), keypoints=SomeKeypoints(), progress=False).run()
    records = read_manifest(out / MANIFEST_NAME)
    assert {k: (r.status, r.previous_status) for k, r in records.items()} == {
        "some": ("skipped", "ok"), "all_missing": ("skipped", "no_keypoints")}
    assert report.exit_code == 0


def test_the_dropped_keys_come_together():
    res = FrameResult.empty("x.png", (4, 4), np.eye(3, dtype=np.float32))
    res.dropped_bbox = np.zeros((1, 4), np.float32)
    res.dropped_det_score = np.ones(1, np.float32)
    res.dropped_keypoints2d = np.zeros((1, 49, 3), np.float32)
    res.dropped_reason = np.array(["no_keypoints"])
    assert validate_result_arrays(res.to_arrays()) == []
    arrays = res.to_arrays()
    del arrays["dropped_reason"]
    assert any("come together" in p for p in validate_result_arrays(arrays))
    arrays = res.to_arrays()
    arrays["dropped_det_score"] = np.ones(2, np.float32)
    assert any("R=2" in p for p in validate_result_arrays(arrays))
