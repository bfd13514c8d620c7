"""Flip / rotation / crop geometry of the dataset pipeline, checked against hand-derived values."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from metahmr_cli.data.augment import (
    AugmentConfig,
    AugParams,
    flip_joints_3d,
    flip_keypoints,
    flip_pose,
    item_rng,
    rotate_global_orient,
    rotate_joints_3d,
    sample_augmentation,
)
from metahmr_cli.data.datasets import HMRDataset
from metahmr_cli.data.synth import sample_body_pose, sample_global_orient
from metahmr_cli.files import save_npz_atomic
from metahmr_cli.geometry import axis_angle_to_rotmat

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def _denorm(img: torch.Tensor) -> np.ndarray:
    x = img.numpy().transpose(1, 2, 0) * STD + MEAN
    return np.clip(x * 255.0, 0, 255)


def test_flip_twice_is_identity() -> None:
    rng = np.random.default_rng(0)
    kp = np.concatenate([rng.uniform(0, 100, (49, 2)), rng.integers(0, 2, (49, 1))], axis=1)
    s = rng.normal(size=(24, 4))
    pose = rng.normal(size=72)
    np.testing.assert_allclose(flip_keypoints(flip_keypoints(kp, 101), 101), kp)
    np.testing.assert_allclose(flip_joints_3d(flip_joints_3d(s)), s)
    np.testing.assert_allclose(flip_pose(flip_pose(pose)), pose)


def test_flip_matches_hand_permutation() -> None:
    w = 200
    kp = np.zeros((49, 3))
    kp[:, 0] = np.arange(49) + 10.0  # x encodes the source slot
    kp[:, 1] = np.arange(49) * 2.0
    kp[:, 2] = 1.0
    out = flip_keypoints(kp, w)
    # OpenPose: nose (0) stays, RShoulder (2) <-> LShoulder (5), RHip (9) <-> LHip (12), REye (15) <-> LEye (16)
    for dst, src in [(0, 0), (2, 5), (5, 2), (9, 12), (12, 9), (15, 16), (19, 22)]:
        assert out[dst, 0] == w - 1 - kp[src, 0] and out[dst, 1] == kp[src, 1]
    # GT-24 (offset 25): R ankle (25) <-> L ankle (30), R wrist (31) <-> L wrist (36), neck (37) stays,
    # L eye (45) <-> R eye (46)
    for dst, src in [(25, 30), (30, 25), (31, 36), (37, 37), (45, 46), (47, 48)]:
        assert out[dst, 0] == w - 1 - kp[src, 0] and out[dst, 1] == kp[src, 1]

    s = np.zeros((24, 4))
    s[:, 0] = np.arange(24)
    s[:, 1] = -np.arange(24)
    s[:, 3] = 1
    fs = flip_joints_3d(s)
    assert fs[0, 0] == -5 and fs[0, 1] == -5  # R ankle <- L ankle, x negated
    assert fs[12, 0] == -12 and fs[12, 1] == -12  # neck stays

    pose = np.arange(72, dtype=np.float64)
    fp = flip_pose(pose)
    np.testing.assert_array_equal(fp[0:3], [0, -1, -2])  # global orient: y, z negated
    np.testing.assert_array_equal(fp[3:6], [6, -7, -8])  # joint 1 (L hip) <- joint 2 (R hip)
    np.testing.assert_array_equal(fp[6:9], [3, -4, -5])
    np.testing.assert_array_equal(fp[9:12], [9, -10, -11])  # spine1 stays
    np.testing.assert_array_equal(fp[48:51], [51, -52, -53])  # L shoulder (16) <- R shoulder (17)


def test_flipped_pose_gives_mirrored_mesh(standin_body) -> None:
    rng = np.random.default_rng(3)
    poses = np.stack([np.concatenate([sample_global_orient(rng), sample_body_pose(rng)]) for _ in range(2)])
    flipped = np.stack([flip_pose(p) for p in poses])
    aa = torch.tensor(np.concatenate([poses, flipped]), dtype=torch.float32).reshape(-1, 24, 3)
    with torch.no_grad():
        out = standin_body(axis_angle_to_rotmat(aa), torch.zeros(4, 10))
    v = out.vertices.numpy()
    mirror = np.array([-1.0, 1.0, 1.0])
    for i in range(2):
        d, _ = cKDTree(v[2 + i]).query(v[i] * mirror)
        assert d.max() < 1e-4, d.max()
        # the flipped pose's left joints are the mirrored right joints of the original
        j = out.smpl_joints.numpy()
        np.testing.assert_allclose(j[2 + i][[0, 2, 1, 3, 5, 4]], (j[i] * mirror)[[0, 1, 2, 3, 4, 5]], atol=1e-4)


def test_rotation_of_3d_follows_hand_values() -> None:
    up = np.array([[0.0, -1.0, 0.0, 1.0]])  # camera frame: y down, so this is "up" on screen
    r = rotate_joints_3d(up, 90.0)
    np.testing.assert_allclose(r[0], [-1.0, 0.0, 0.0, 1.0], atol=1e-12)  # counter-clockwise: up -> left
    pose = np.zeros(72)
    rp = rotate_global_orient(pose, 90.0)
    np.testing.assert_allclose(rp[:3], [0, 0, -np.pi / 2], atol=1e-9)
    np.testing.assert_allclose(rp[3:], 0)


def test_sample_augmentation_ranges_and_determinism() -> None:
    cfg = AugmentConfig()
    draws = [sample_augmentation(item_rng(5, 0, i), cfg) for i in range(2000)]
    rots = np.array([d.rot_deg for d in draws])
    scales = np.array([d.scale for d in draws])
    pn = np.array([d.pixel_factor for d in draws])
    assert np.abs(rots).max() <= 60 and 0.5 < np.mean(rots == 0) < 0.7
    assert scales.min() >= 0.75 and scales.max() <= 1.25
    assert pn.min() >= 0.6 and pn.max() <= 1.4
    assert 0.45 < np.mean([d.flip for d in draws]) < 0.55
    assert sample_augmentation(item_rng(5, 0, 7), cfg) == draws[7]
    assert sample_augmentation(item_rng(5, 1, 7), cfg) != draws[7]


@pytest.fixture
def marked_dataset(tmp_path):
    """A 300x400 (HxW) black image with a white 3x3 marker and a person box given by 'part'."""
    h, w = 300, 400
    img = np.zeros((h, w, 3), np.uint8)
    marker = (250, 100)  # x, y
    img[marker[1] - 1 : marker[1] + 2, marker[0] - 1 : marker[0] + 2] = 255
    cv2.imwrite(str(tmp_path / "img.png"), img)
    part = np.zeros((1, 24, 3), np.float32)
    part[0, :2] = [[150, 60, 1], [230, 220, 1]]  # box: x 150..230 (w 80), y 60..220 (h 160)
    part[0, 2] = [marker[0], marker[1], 1]
    save_npz_atomic(tmp_path / "m.npz", {
        "imgname": np.array(["img.png"]), "center": np.zeros((1, 2), np.float32),
        "scale": np.ones(1, np.float32), "part": part,
    })
    return HMRDataset(tmp_path / "m.npz"), marker, (h, w)


def test_box_and_crop_keypoints_by_hand(marked_dataset) -> None:
    ds, marker, (h, w) = marked_dataset
    it = ds[0]
    # visible part keypoints span x 150..250, y 60..220
    np.testing.assert_allclose(it["center"].numpy(), [200.0, 140.0])
    expected_scale = max(100 * 256 / 192, 160) / 200 * 1.2
    assert it["scale"].item() == pytest.approx(expected_scale, rel=1e-6)
    zoom = 256.0 / (200.0 * expected_scale)
    full = it["keypoints_full"].numpy()
    crop = it["keypoints"].numpy()
    hand = (full[:, :2] - np.array([200.0, 140.0])) * zoom + np.array([96.0, 128.0])
    np.testing.assert_allclose(crop[:, :2], hand, atol=1e-3)
    ct = it["crop_trans"].numpy()
    np.testing.assert_allclose(full[:, :2] @ ct[:, :2].T + ct[:, 2], crop[:, :2], atol=1e-3)
    np.testing.assert_allclose(crop[:, 2], full[:, 2])
    assert it["focal_length"].item() == pytest.approx(np.hypot(h, w), rel=1e-6)
    assert it["has_smpl"].item() == 0 and it["has_pose_3d"].item() == 0


@pytest.mark.parametrize("rot", [30.0, -50.0])
def test_rotation_moves_marker_and_keypoints(marked_dataset, rot) -> None:
    ds, marker, _ = marked_dataset
    it = ds.get_item(0, AugParams(rot_deg=rot))
    c = np.array([200.0, 140.0])
    s = it["scale"].item()
    # the released three-point construction: box centre -> crop centre, the box's "up" vector rotated by rot
    # (get_dir) -> the crop's up vector
    src_h = 200.0 * s * 192 / 256
    t = np.deg2rad(rot)
    up = np.array([0.0, -src_h / 2])
    src_dir = np.array([up[0] * np.cos(t) - up[1] * np.sin(t), up[0] * np.sin(t) + up[1] * np.cos(t)])
    src = np.float32([c, c + src_dir, c + src_dir + np.array([src_dir[1], -src_dir[0]])])
    dst_dir = np.array([0.0, -96.0])
    dst = np.float32([[96, 128], [96, 128] + dst_dir, [96, 128] + dst_dir + np.array([dst_dir[1], -dst_dir[0]])])
    m = cv2.getAffineTransform(src, dst)
    expect = m[:, :2] @ np.array(marker, float) + m[:, 2]
    img = _denorm(it["img"]).mean(axis=2)
    ys, xs = np.nonzero(img > 60)
    wts = img[ys, xs]
    found = np.array([np.sum(xs * wts), np.sum(ys * wts)]) / wts.sum()
    np.testing.assert_allclose(found, expect, atol=0.75)
    np.testing.assert_allclose(it["keypoints"][27, :2].numpy(), expect, atol=1e-3)
    # positive angles turn the content counter-clockwise on screen: the marker (right of and above the centre)
    # moves up/left for +30
    if rot > 0:
        no_rot = ds.get_item(0, AugParams())["keypoints"][27, :2].numpy()
        assert expect[1] < no_rot[1] and expect[0] < no_rot[0]


def test_flip_item_consistent_with_image(marked_dataset) -> None:
    ds, marker, (_, w) = marked_dataset
    it = ds.get_item(0, AugParams(flip=True))
    assert it["is_flipped"].item() == 1
    np.testing.assert_allclose(it["center"].numpy(), [w - 1 - 200.0, 140.0])
    # the marker was part slot 2 (R hip) -> after the flip it is in slot 3 (L hip), x mirrored
    np.testing.assert_allclose(it["keypoints_full"][25 + 3, :2].numpy(), [w - 1 - marker[0], marker[1]])
    img = _denorm(it["img"]).mean(axis=2)
    ys, xs = np.nonzero(img > 60)
    wts = img[ys, xs]
    found = np.array([np.sum(xs * wts), np.sum(ys * wts)]) / wts.sum()
    np.testing.assert_allclose(found, it["keypoints"][28, :2].numpy(), atol=0.75)


def test_item_flip_then_rotation_of_3d_and_pose_by_hand(synth_dataset) -> None:
    """Released order: flip first (S: J24 permutation, x negated; pose: joint swap, y/z negated), then
    rotation by Rz(-rot) (S) and Rz(-rot) @ R_orient (global orientation)."""
    ds = HMRDataset(synth_dataset / "synth_test.npz")
    z = np.load(synth_dataset / "synth_test.npz")
    rot = 30.0
    it = ds.get_item(2, AugParams(flip=True, rot_deg=rot))
    perm = [5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 12, 13, 14, 15, 16, 17, 18, 19, 21, 20, 23, 22]  # written out
    s = z["S"][2].astype(np.float64)[perm]
    s[:, 0] *= -1
    t = np.deg2rad(-rot)
    rz = np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])
    expect_s = np.concatenate([s[:, :3] @ rz.T, s[:, 3:]], axis=1)
    np.testing.assert_allclose(it["pose_3d"].numpy(), expect_s, atol=1e-5)
    # the global orientation: mirror (y, z negated), then Rz(-rot) on the left
    orient = z["pose"][2, :3].astype(np.float64) * np.array([1.0, -1.0, -1.0])
    r_expect = rz @ cv2.Rodrigues(orient)[0]
    r_item = cv2.Rodrigues(it["pose"][:3].numpy().astype(np.float64))[0]
    np.testing.assert_allclose(r_item, r_expect, atol=1e-5)
    # body joints: left hip (1) <- right hip (2), y and z negated, not rotated
    np.testing.assert_allclose(it["pose"][3:6].numpy(), z["pose"][2, 6:9] * np.array([1.0, -1.0, -1.0]), atol=1e-6)


def test_pixel_factor_after_warp_clipped_then_normalised(marked_dataset) -> None:
    ds, _, _ = marked_dataset
    base = _denorm(ds.get_item(0, AugParams())["img"])  # the warped crop in [0, 255]
    pf = (1.3, 0.7, 1.0)
    got = ds.get_item(0, AugParams(pixel_factor=pf))["img"].numpy().transpose(1, 2, 0)
    expect = (np.clip(base * np.array(pf), 0.0, 255.0) / 255.0 - MEAN) / STD
    np.testing.assert_allclose(got, expect, atol=1e-4)
    # the white marker saturates at 255 in the boosted channel instead of reaching 331.5
    assert got[..., 0].max() == pytest.approx((1.0 - MEAN[0]) / STD[0], abs=1e-5)
