"""Cameras: hand-computed values and the full-image/crop camera consistency."""

from __future__ import annotations

import math

import pytest
import torch

from metahmr_cli.errors import InputError
from metahmr_cli.geometry import (
    CropInfo,
    apply_affine,
    bbox_info,
    cam_crop_to_full,
    default_focal,
    estimate_translation,
    normalize_crop_keypoints,
    perspective_projection,
    weak_perspective_crop_transl,
)

F64 = torch.float64


def test_bbox_info_hand_computed():
    # centre (400, 300), scale 1.5 -> b = 300, image H=600, W=1000, f = 1000:
    # x: (400 - 500)/1000*2.8 = -0.28; y: (300 - 300)/1000*2.8 = 0; size: (300 - 240)/60 = 1
    out = bbox_info(
        torch.tensor([[400.0, 300.0]], dtype=F64),
        torch.tensor([1.5], dtype=F64),
        torch.tensor([[600.0, 1000.0]], dtype=F64),
        torch.tensor([1000.0], dtype=F64),
    )
    assert torch.allclose(out, torch.tensor([[-0.28, 0.0, 1.0]], dtype=F64), atol=1e-12)


def test_cam_crop_to_full_hand_computed():
    # s=0.8, tx=0.1, ty=-0.2; b = 300 -> bs = 240; f = 1000; W = 1000, H = 600, centre (400, 300)
    # tz = 2000/240, tx = 2*(-100)/240 + 0.1, ty = 0 - 0.2
    out = cam_crop_to_full(
        torch.tensor([[0.8, 0.1, -0.2]], dtype=F64),
        torch.tensor([[400.0, 300.0]], dtype=F64),
        torch.tensor([1.5], dtype=F64),
        torch.tensor([[600.0, 1000.0]], dtype=F64),
        torch.tensor([1000.0], dtype=F64),
    )
    expected = torch.tensor([[-200 / 240 + 0.1, -0.2, 2000 / 240]], dtype=F64)
    assert torch.allclose(out, expected, atol=1e-9)


def test_default_focal_and_crop_transl():
    assert torch.allclose(default_focal(torch.tensor([[600.0, 800.0]])), torch.tensor([1000.0]))
    t = weak_perspective_crop_transl(torch.tensor([[0.5, 0.1, 0.2]], dtype=F64))
    # tz = 2*5000/(256*0.5) = 78.125
    assert torch.allclose(t, torch.tensor([[0.1, 0.2, 78.125]], dtype=F64), atol=1e-9)
    t224 = weak_perspective_crop_transl(torch.tensor([[0.5, 0.0, 0.0]], dtype=F64), res=224.0)
    assert math.isclose(t224[0, 2].item(), 10000 / 112, rel_tol=1e-10)  # the +1e-9 guard is visible at 1e-11


def test_perspective_projection_hand_computed():
    pts = torch.tensor([[[1.0, 2.0, 3.0]]], dtype=F64)
    t = torch.tensor([[0.0, 0.0, 2.0]], dtype=F64)
    c = torch.tensor([[50.0, 60.0]], dtype=F64)
    # (1,2,5) -> (0.2, 0.4) -> (100*0.2 + 50, 100*0.4 + 60)
    uv = perspective_projection(pts, t, torch.tensor([100.0], dtype=F64), c)
    assert torch.allclose(uv, torch.tensor([[[70.0, 100.0]]], dtype=F64))
    rz90 = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]], dtype=F64)
    # Rz90 (1,2,3) = (-2,1,3); + t = (-2,1,5) -> (-40 + 50, 20 + 60)
    uv = perspective_projection(pts, t, 100.0, c, rotation=rz90)
    assert torch.allclose(uv, torch.tensor([[[10.0, 80.0]]], dtype=F64))


def test_estimate_translation_recovers_translation():
    g = torch.Generator().manual_seed(0)
    B = 3
    S = torch.randn(B, 49, 3, generator=g, dtype=F64) * 0.4
    t_true = torch.tensor([[0.1, -0.2, 8.0], [0.5, 0.3, 12.0], [-0.4, 0.0, 5.0]], dtype=F64)
    f = torch.tensor([5000.0, 4000.0, 1000.0], dtype=F64)
    img_size = 224.0
    uv = perspective_projection(S, t_true, f, torch.full((B, 2), img_size / 2, dtype=F64))
    conf = torch.ones(B, 49, 1, dtype=F64)
    conf[:, 30:33] = 0.0
    uv = uv.clone()
    uv[:, 30:33] += 50.0  # invisible joints are corrupted but carry no weight
    uv[:, :25] = 0.0  # OpenPose slots are not used
    t_hat = estimate_translation(S, torch.cat([uv, conf], dim=-1), f, img_size)
    assert torch.allclose(t_hat, t_true, atol=1e-6)


def _flat_body(n: int, depth_extent: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand(1, n, 3, generator=g, dtype=F64) * 2 - 1
    pts[..., 0] *= 0.4
    pts[..., 1] *= 0.9
    pts[..., 2] *= depth_extent
    return pts


@pytest.mark.parametrize("center", [(400.0, 300.0), (1500.0, 250.0), (90.0, 900.0)])
def test_full_camera_in_crop_equals_weak_perspective(center):
    """Full-image projection + crop_trans + normalisation vs the weak-perspective crop camera.

    With b = 200*scale, T = cam_crop_to_full(s, tx, ty) and eps = Z / Tz, the full-image projection mapped into
    normalised crop coordinates is exactly
        x_n = [(h/w) s (X + tx) - eps (h/w) (2/b) (cx - W/2)] / (1 + eps)
        y_n = [      s (Y + ty) - eps       (2/b) (cy - H/2)] / (1 + eps)
    so for points on the body's depth plane (Z = 0) it equals the weak-perspective projection
    x_n = (h/w) s (X + tx), y_n = s (Y + ty) (h/w = 256/192 because x is normalised by the crop width while the
    camera is defined on the box height), and otherwise deviates by at most
        |eps| / (1 - |eps|) * (|weak| + (h/w)(2/b)|cx - W/2|)   (and the analogue in y).
    """
    H, W = 1080.0, 1920.0
    crop = CropInfo.from_boxes(torch.tensor([center], dtype=F64), torch.tensor([1.6], dtype=F64),
                               torch.tensor([[H, W]], dtype=F64))
    b = 200 * 1.6
    aspect = 256 / 192
    cam = torch.tensor([[0.9, 0.05, 0.12]], dtype=F64)
    transl = cam_crop_to_full(cam, crop.center, crop.scale, crop.img_hw, crop.focal)

    def to_crop(points):
        full = perspective_projection(points, transl, crop.focal, crop.principal())
        return normalize_crop_keypoints(apply_affine(full, crop.crop_trans))

    def weak(points):
        return torch.stack([aspect * cam[:, 0, None] * (points[..., 0] + cam[:, 1, None]),
                            cam[:, 0, None] * (points[..., 1] + cam[:, 2, None])], dim=-1)

    # exact on the depth plane
    plane = _flat_body(40, 0.0, 0)
    assert torch.allclose(to_crop(plane), weak(plane), atol=1e-9)

    # bounded deviation that shrinks with the depth extent
    prev = None
    for extent in (0.3, 0.03, 0.003):
        pts = _flat_body(40, extent, 1)
        err = (to_crop(pts) - weak(pts)).abs()
        eps = extent / transl[0, 2].item()
        w_ = weak(pts).abs()
        tol_x = eps / (1 - eps) * (w_[..., 0].max() + aspect * 2 / b * abs(center[0] - W / 2))
        tol_y = eps / (1 - eps) * (w_[..., 1].max() + 2 / b * abs(center[1] - H / 2))
        assert err[..., 0].max() <= tol_x + 1e-12
        assert err[..., 1].max() <= tol_y + 1e-12
        if prev is not None:
            assert err.max() < 0.2 * prev  # first order in the depth extent
        prev = err.max()


def test_cropinfo_helpers():
    crop = CropInfo.from_boxes(
        torch.tensor([[100.0, 50.0], [300.0, 200.0], [10.0, 20.0]]),
        torch.tensor([1.0, 2.0, 0.5]),
        torch.tensor([480.0, 640.0]),
    )
    assert crop.crop_trans.shape == (3, 2, 3) and len(crop) == 3
    assert torch.allclose(crop.focal, torch.full((3,), 800.0))
    assert len(crop[1]) == 1 and torch.equal(crop[1].center, crop.center[1:2])
    assert len(crop[torch.tensor([True, False, True])]) == 2
    both = CropInfo.cat([crop[:1], crop[1:]])
    assert torch.equal(both.crop_trans, crop.crop_trans)
    c64 = crop.to(dtype=F64)
    assert c64.center.dtype == F64 and c64.scale.dtype == F64
    assert torch.allclose(crop.bbox_info(), bbox_info(crop.center, crop.scale, crop.img_hw, crop.focal))
    # inverse maps crop pixels back to full-image pixels
    pts = torch.tensor([[[0.0, 0.0], [96.0, 128.0], [192.0, 256.0]]]).expand(3, -1, -1)
    back = apply_affine(apply_affine(pts, crop.inv_trans()), crop.crop_trans)
    assert torch.allclose(back, pts, atol=1e-4)
    with pytest.raises(InputError, match="crop_trans"):
        CropInfo(crop.center, crop.scale, crop.img_hw, crop.focal, crop.crop_trans[:, :1])


def test_camera_for_gives_the_intrinsics_and_the_rule_for_every_kind_of_input():
    import numpy as np

    from metahmr_cli.geometry.camera import CameraSettings, camera_for, parse_focal

    K, rule = camera_for(640, 480)  # the diagonal rule: sqrt(640^2 + 480^2) = 800, principal point at the centre
    assert rule == "diagonal" and K.dtype == np.float64
    np.testing.assert_array_equal(K, [[800.0, 0.0, 320.0], [0.0, 800.0, 240.0], [0.0, 0.0, 1.0]])
    assert camera_for(640, 480, CameraSettings(focal="exif"), exif_focal=1234.5)[1] == "exif"
    assert camera_for(640, 480, CameraSettings(focal="exif"))[1] == "diagonal"  # a video: no EXIF
    K, rule = camera_for(640, 480, CameraSettings(focal=parse_focal("500")))
    assert (K[0, 0], K[1, 1], rule) == (500.0, 500.0, "focal")
    assert camera_for(640, 480, CameraSettings(fov=90.0))[1] == "fov"
    with pytest.raises(InputError, match="configured focal length"):
        camera_for(640, 480, CameraSettings(focal=1e9))

