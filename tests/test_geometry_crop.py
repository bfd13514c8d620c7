"""Crop boxes and affine maps against hand-derived values and OpenCV's three-point construction."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from metahmr_cli.errors import InputError
from metahmr_cli.geometry import (
    apply_affine,
    box_from_keypoints,
    box_from_xyxy,
    crop_transform,
    crop_transform_batch,
    denormalize_crop_keypoints,
    normalize_crop_keypoints,
    warp_crop,
)


def _third(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = a - b
    return b + np.array([-d[1], d[0]])


def _cv2_reference(center, scale, rot_deg, out_wh=(192, 256), inverse=False) -> np.ndarray:
    """The published construction: three point pairs given to cv2.getAffineTransform."""
    w_out, h_out = out_wh
    src_w = scale * 200.0 * w_out / h_out
    th = math.radians(rot_deg)
    src_dir = np.array([src_w * 0.5 * math.sin(th), -src_w * 0.5 * math.cos(th)])
    c = np.asarray(center, dtype=np.float64)
    src = np.stack([c, c + src_dir, _third(c, c + src_dir)])
    d0 = np.array([w_out * 0.5, h_out * 0.5])
    d1 = d0 + np.array([0.0, -w_out * 0.5])
    dst = np.stack([d0, d1, _third(d0, d1)])
    if inverse:
        return cv2.getAffineTransform(np.float32(dst), np.float32(src))
    return cv2.getAffineTransform(np.float32(src), np.float32(dst))


def test_box_corners_and_centre_go_to_crop_corners():
    cx, cy, scale = 321.5, 654.25, 1.7
    h = 200 * scale
    w = h * 192 / 256
    T = crop_transform((cx, cy), scale)
    pts = np.array([[cx, cy], [cx - w / 2, cy - h / 2], [cx + w / 2, cy + h / 2], [cx, cy - h / 2], [cx - w / 2, cy]])
    expected = np.array([[96, 128], [0, 0], [192, 256], [96, 0], [0, 128]], dtype=np.float64)
    assert np.allclose(apply_affine(pts, T), expected, atol=1e-9)
    Tinv = crop_transform((cx, cy), scale, inverse=True)
    assert np.allclose(apply_affine(expected, Tinv), pts, atol=1e-9)


@pytest.mark.parametrize("rot", [0.0, 17.0, -45.0, 90.0, 180.0])
@pytest.mark.parametrize("inverse", [False, True])
def test_matches_cv2_three_point_construction(rot, inverse):
    center, scale = (812.3, 441.7), 2.35
    ours = crop_transform(center, scale, rot, inverse=inverse)
    ref = _cv2_reference(center, scale, rot, inverse=inverse)
    # cv2 receives float32 points; compare the maps on points spread over the crop / box
    pts = np.array([[0.0, 0.0], [192.0, 256.0], [50.0, 200.0]]) if inverse else \
        np.array([[812.3, 441.7], [500.0, 100.0], [1000.0, 800.0]])
    assert np.allclose(ours[:, :2], ref[:, :2], atol=1e-5)
    assert np.allclose(apply_affine(pts, ours), apply_affine(pts, ref), atol=2e-3)


def test_rotation_direction():
    # the box point at angle rot from "up" (rotated towards +x for positive rot) lands at the crop top centre
    cx, cy, scale, rot = 400.0, 300.0, 1.0, 30.0
    r = 100.0  # half box height in px
    th = math.radians(rot)
    p = np.array([[cx + r * math.sin(th), cy - r * math.cos(th)]])
    assert np.allclose(apply_affine(p, crop_transform((cx, cy), scale, rot)), [[96.0, 0.0]], atol=1e-9)


def test_batch_transform_matches_cv2_and_is_differentiable():
    centers = torch.tensor([[100.0, 200.0], [640.5, 360.25]], dtype=torch.float64, requires_grad=True)
    scales = torch.tensor([0.8, 3.1], dtype=torch.float64)
    T = crop_transform_batch(centers, scales)
    for i in range(2):
        ref = _cv2_reference(centers[i].detach().numpy(), scales[i].item(), 0.0)
        assert np.allclose(T[i].detach().numpy()[:, :2], ref[:, :2], atol=1e-5)
        assert np.allclose(T[i].detach().numpy()[:, 2], ref[:, 2], atol=2e-3)
    T.sum().backward()
    assert centers.grad is not None
    Tinv = crop_transform_batch(centers.detach(), scales, inverse=True)
    eye = torch.eye(3, dtype=torch.float64)
    for i in range(2):
        A = torch.cat([T[i].detach(), eye[2:]])
        Ai = torch.cat([Tinv[i], eye[2:]])
        assert torch.allclose(A @ Ai, eye, atol=1e-12)


def test_warp_crop_puts_marked_pixel_where_apply_affine_says():
    img = np.zeros((480, 640, 3), dtype=np.uint8)
    x0, y0 = 301, 207
    img[y0, x0] = (255, 10, 20)
    # zoom 1 (scale 1.28 -> 256 px box) and an integer offset: pixel-exact
    center, scale = (300.0, 200.0), 1.28
    crop = warp_crop(img, center, scale)
    assert crop.shape == (256, 192, 3) and crop.dtype == np.uint8
    u, v = apply_affine(np.array([[x0, y0]], dtype=np.float64), crop_transform(center, scale))[0]
    assert (u, v) == (97.0, 135.0)
    ys, xs = np.nonzero(crop[..., 0])
    assert list(zip(xs.tolist(), ys.tolist(), strict=True)) == [(97, 135)]
    assert tuple(crop[135, 97]) == (255, 10, 20)


@pytest.mark.parametrize("rot", [0.0, 25.0, -60.0])
def test_warp_crop_blob_with_zoom_and_rotation(rot):
    img = np.zeros((600, 800), dtype=np.uint8)
    x0, y0 = 420, 260
    img[y0 - 6:y0 + 7, x0 - 6:x0 + 7] = 255
    center, scale = (400.0, 300.0), 1.9
    crop = warp_crop(img, center, scale, rot)
    ys, xs = np.nonzero(crop > 0)
    w = crop[ys, xs].astype(np.float64)
    centroid = np.array([np.sum(xs * w), np.sum(ys * w)]) / w.sum()
    target = apply_affine(np.array([[x0, y0]], dtype=np.float64), crop_transform(center, scale, rot))[0]
    assert np.linalg.norm(centroid - target) < 0.5


def test_box_from_keypoints_hand_computed():
    kp = np.array([[10.0, 20.0, 1.0], [50.0, 100.0, 0.5], [1000.0, 1000.0, 0.0]])
    # visible: x in [10, 50], y in [20, 100] -> centre (30, 60); max(40*256/192, 80) = 80 -> 80/200*1.2
    c, s = box_from_keypoints(kp)
    assert isinstance(c, np.ndarray)
    assert np.allclose(c, [30.0, 60.0]) and math.isclose(float(s), 0.48)
    kp2 = kp.copy()
    kp2[:, 0] *= 3  # now wider: x in [30, 150] -> 120*256/192 = 160
    ct, st = box_from_keypoints(torch.tensor(np.stack([kp, kp2])), margin=1.0)
    assert isinstance(ct, torch.Tensor) and ct.shape == (2, 2) and st.shape == (2,)
    assert torch.allclose(st, torch.tensor([0.4, 0.8], dtype=torch.float64))
    assert torch.allclose(ct[1], torch.tensor([90.0, 60.0], dtype=torch.float64))
    with pytest.raises(InputError, match="no keypoint"):
        box_from_keypoints(np.zeros((24, 3)))


def test_box_from_xyxy_hand_computed():
    c, s = box_from_xyxy(np.array([[10.0, 20.0, 110.0, 120.0], [0.0, 0.0, 30.0, 200.0]]))
    # 100x100 -> max(133.33, 100)/200*1.1; 30x200 -> max(40, 200)/200*1.1
    assert np.allclose(c, [[60.0, 70.0], [15.0, 100.0]])
    assert np.allclose(s, [100 * 256 / 192 / 200 * 1.1, 1.1])
    ct, st = box_from_xyxy(torch.tensor([10.0, 20.0, 110.0, 120.0]))
    assert torch.allclose(ct, torch.tensor([60.0, 70.0])) and math.isclose(st.item(), 0.7333333, rel_tol=1e-6)


def test_normalize_crop_keypoints_keeps_confidence():
    kp = torch.tensor([[[0.0, 0.0, 0.3], [192.0, 256.0, 1.0], [96.0, 64.0, 0.0]]])
    n = normalize_crop_keypoints(kp)
    assert torch.allclose(n, torch.tensor([[[-1.0, -1.0, 0.3], [1.0, 1.0, 1.0], [0.0, -0.5, 0.0]]]))
    assert torch.allclose(denormalize_crop_keypoints(n), kp)
    assert np.allclose(normalize_crop_keypoints(kp.numpy()), n.numpy())
