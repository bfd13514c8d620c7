"""The synthetic keypoint stream of the open model: reproducibility, exact geometry, detector-like noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metahmr_cli.data.keypoint_synth import KeypointSynthConfig, SyntheticKeypointDataset
from metahmr_cli.geometry.rotation import axis_angle_to_rotmat


@pytest.fixture(scope="module")
def stream(standin_dir):
    return SyntheticKeypointDataset(standin_dir, KeypointSynthConfig(length=500, seed=7))


def test_items_are_a_function_of_seed_split_epoch_and_index(standin_dir, stream):
    a = stream[3]
    again = SyntheticKeypointDataset(standin_dir, KeypointSynthConfig(length=500, seed=7))[3]
    for key in ("img", "pose", "betas", "keypoints", "center"):
        torch.testing.assert_close(a[key], again[key], atol=0, rtol=0)
    batch = stream.__getitems__([2, 3])
    torch.testing.assert_close(batch[1]["img"], a["img"], atol=0, rtol=0)
    stream.set_epoch(1)
    try:
        assert not torch.equal(stream[3]["pose"], a["pose"])
    finally:
        stream.set_epoch(0)
    test = SyntheticKeypointDataset(standin_dir, KeypointSynthConfig(length=500, seed=7, split="test"))
    assert not torch.equal(test[3]["pose"], a["pose"])
    test.set_epoch(5)  # the test split never changes
    torch.testing.assert_close(test[3]["pose"], SyntheticKeypointDataset(
        standin_dir, KeypointSynthConfig(length=500, seed=7, split="test"))[3]["pose"], atol=0, rtol=0)


def test_ground_truth_keypoints_are_a_perspective_projection_of_the_body(standin_body, stream):
    """Back in full-image pixels, the exact keypoints must be the pinhole projection (focal f, centre W/2, H/2)
    of the body's joints for some translation t: solve t linearly and require a zero residual."""
    for index in range(6):
        item = stream[index]
        rot = axis_angle_to_rotmat(item["pose"].double().reshape(24, 3)).reshape(1, 24, 3, 3)
        joints = standin_body.double()(rot, item["betas"].double()[None]).joints[0].numpy()
        standin_body.float()
        inv = item["inv_trans"].double().numpy()
        crop_px = item["keypoints"][:, :2].double().numpy()
        full = crop_px @ inv[:, :2].T + inv[:, 2]
        f = float(item["focal_length"])
        cx, cy = float(item["img_w"]) / 2, float(item["img_h"]) / 2
        # u = f (X + tx) / (Z + tz) + cx  ->  f tx - (u - cx) tz = (u - cx) Z - f X   (same for v)
        a, b = [], []
        for (x, y, z), (u, v) in zip(joints, full, strict=True):
            a += [[f, 0, -(u - cx)], [0, f, -(v - cy)]]
            b += [(u - cx) * z - f * x, (v - cy) * z - f * y]
        t, *_ = np.linalg.lstsq(np.array(a), np.array(b), rcond=None)
        cam = joints + t
        proj = np.stack([f * cam[:, 0] / cam[:, 2] + cx, f * cam[:, 1] / cam[:, 2] + cy], axis=1)
        box_h = 200.0 * float(item["scale"])
        assert np.abs(proj - full).max() < 1e-3 * box_h, index
        assert (cam[:, 2] > 0).all()


def test_network_input_is_the_normalised_detector_keypoints(stream):
    item = stream[11]
    obs = item["keypoints_obs"].numpy()
    expect = np.zeros((49, 4), np.float32)
    seen = obs[:, 2] > 0
    expect[seen, 0] = 2 * obs[seen, 0] / 192 - 1
    expect[seen, 1] = 2 * obs[seen, 1] / 256 - 1
    expect[seen, 2] = obs[seen, 2]
    assert item["img"].shape == (67, 4)
    np.testing.assert_allclose(item["img"][:49].numpy(), expect, atol=1e-6)
    # the 3D joints are around Pelvis (MPII), GT-set index 14
    np.testing.assert_allclose(item["pose_3d"][14, :3].numpy(), 0.0, atol=1e-6)


def test_detector_keypoints_are_noisy_partial_copies_of_the_truth(stream):
    errs, missing, kept = [], 0, 0
    for item in stream.__getitems__(list(range(200))):
        gt, obs = item["keypoints"].numpy(), item["keypoints_obs"].numpy()
        good = obs[25:, 2] >= 0.3  # the GT-set slots every simulated format fills
        errs.append(np.linalg.norm(obs[25:][good, :2] - gt[25:][good, :2], axis=1))
        missing += int((obs[[25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 44], 2] == 0).sum())
        kept += int((obs[[25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 44], 2] > 0).sum())
    err = np.concatenate(errs)
    # noise is a few percent of the box (the crop is 256 px high and the box fills ~90 % of it)
    assert 1.0 < np.median(err) < 0.05 * 256
    frac_missing = missing / (missing + kept)
    assert 0.02 < frac_missing < 0.4


def test_every_format_leaves_its_own_pattern_of_slots(standin_dir):
    feet = {}
    for fmt in ("coco17", "body25"):
        ds = SyntheticKeypointDataset(standin_dir, KeypointSynthConfig(length=50, seed=1, formats={fmt: 1.0},
                                                                       dropout=(0.0, 0.0), occlusion=0.0,
                                                                       truncation=0.0, half_body=0.0,
                                                                       head_shoulders=0.0, outlier=0.0))
        feet[fmt] = np.mean([float((ds[i]["keypoints_obs"][19:25, 2] > 0).float().mean()) for i in range(20)])
    assert feet["coco17"] == 0.0  # COCO-17 has no feet
    assert feet["body25"] > 0.9


def test_bad_settings_are_rejected(standin_dir):
    with pytest.raises(ValueError, match="split"):
        SyntheticKeypointDataset(standin_dir, KeypointSynthConfig(split="val"))
    with pytest.raises(ValueError, match="formats"):
        SyntheticKeypointDataset(standin_dir, KeypointSynthConfig(formats={"coco99": 1.0}))


def test_noise_free_detections_put_every_keypoint_on_its_own_side(standin_dir):
    """Without noise, dropout, occlusion, outliers and swaps, a simulated detector's keypoint of the left shoulder is
    the body's left shoulder (slot 'Left Shoulder' of the 49), and so on for every limb keypoint of each format:
    nothing is exchanged between sides."""
    from metahmr_cli.body.joints import JOINT_NAMES

    sides = ["Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle"]
    slots = [JOINT_NAMES.index(f"{lr} {part}") for part in sides for lr in ("Left", "Right")]
    for fmt in ("coco17", "body25", "halpe26", "mediapipe33"):
        ds = SyntheticKeypointDataset(standin_dir, KeypointSynthConfig(
            length=20, seed=3, formats={fmt: 1.0}, noise=(0.0, 0.0), dropout=(0.0, 0.0), occlusion=0.0,
            truncation=0.0, half_body=0.0, head_shoulders=0.0, swap=0.0, body_swap=(0.0, 0.0), outlier=0.0))
        for i in range(4):
            item = ds[i]
            gt, obs = item["keypoints"].numpy(), item["keypoints_obs"].numpy()
            assert (obs[slots, 2] > 0).all(), fmt
            # left and right are tens of pixels apart in the 256-px crop; the observed ones sit on their own side
            np.testing.assert_allclose(obs[slots, :2], gt[slots, :2], atol=1e-3, err_msg=f"{fmt} item {i}")
