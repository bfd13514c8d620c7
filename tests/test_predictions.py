"""decode(): body -> camera -> 2D keypoints for the CLIFF and HMR camera conventions."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from metahmr_cli.errors import InputError
from metahmr_cli.geometry import CropInfo, rotmat_to_rot6d
from metahmr_cli.predictions import Decoded, decode, project_keypoints

F64 = torch.float64


class FakeBody(nn.Module):
    """Rigid point cloud turned by the global orientation and shifted by the first betas."""

    def __init__(self, flat: bool, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        pts = torch.rand(49 + 11, 3, generator=g, dtype=F64) * 2 - 1
        pts[:, 0] *= 0.4
        pts[:, 1] *= 0.9
        pts[:, 2] *= 0.0 if flat else 0.2
        self.register_buffer("template", pts)

    def forward(self, rotmat, betas, transl=None):
        pts = self.template @ rotmat[:, 0].transpose(1, 2) + 0.01 * betas[:, None, :3]
        if transl is not None:
            pts = pts + transl[:, None]
        return SimpleNamespace(vertices=pts[:, 49:], joints=pts[:, :49], smpl_joints=pts[:, :24])


def _inputs(B: int = 3):
    g = torch.Generator().manual_seed(7)
    rotmat = torch.eye(3, dtype=F64).repeat(B, 24, 1, 1)
    betas = torch.zeros(B, 10, dtype=F64)
    cam = torch.stack([torch.rand(B, generator=g, dtype=F64) * 0.5 + 0.6,
                       torch.randn(B, generator=g, dtype=F64) * 0.1,
                       torch.randn(B, generator=g, dtype=F64) * 0.1], dim=-1)
    crop = CropInfo.from_boxes(torch.tensor([[400.0, 300.0], [1500.0, 250.0], [90.0, 900.0]][:B], dtype=F64),
                               torch.tensor([1.6, 2.4, 0.9][:B], dtype=F64),
                               torch.tensor([1080.0, 1920.0], dtype=F64))
    return {"rotmat": rotmat, "betas": betas, "cam": cam}, crop


def test_flat_body_cliff_and_hmr_equal_weak_perspective():
    # On the body's depth plane both cameras reduce to x_n = (256/192) s (X + tx), y_n = s (Y + ty).
    out, crop = _inputs()
    body = FakeBody(flat=True)
    d_cliff = decode(out, body, crop, "cliff")
    d_hmr = decode(out, body, crop, "hmr")
    X = body.template[:49]
    s, tx, ty = out["cam"].unbind(-1)
    weak = torch.stack([256 / 192 * s[:, None] * (X[:, 0] + tx[:, None]),
                        s[:, None] * (X[:, 1] + ty[:, None])], dim=-1)
    assert torch.allclose(d_cliff.keypoints2d, weak, atol=1e-9)
    assert torch.allclose(d_hmr.keypoints2d, weak, atol=1e-9)
    assert torch.allclose(d_hmr.keypoints2d_full, d_cliff.keypoints2d_full, atol=1e-6)
    assert torch.equal(d_hmr.transl, d_cliff.transl)


def test_cliff_full_image_projection_by_hand():
    out, crop = _inputs()
    body = FakeBody(flat=False)
    d = decode(out, body, crop, "cliff")
    # transl by the CLIFF formula, then a pinhole with f = image diagonal and principal (W/2, H/2)
    H, W = 1080.0, 1920.0
    f = (H**2 + W**2) ** 0.5
    b = 200 * crop.scale
    bs = b * out["cam"][:, 0] + 1e-9
    T = torch.stack([2 * (crop.center[:, 0] - W / 2) / bs + out["cam"][:, 1],
                     2 * (crop.center[:, 1] - H / 2) / bs + out["cam"][:, 2], 2 * f / bs], dim=-1)
    assert torch.allclose(d.transl, T, atol=1e-12)
    P = body.template[:49][None] + T[:, None]
    uv = torch.stack([f * P[..., 0] / P[..., 2] + W / 2, f * P[..., 1] / P[..., 2] + H / 2], dim=-1)
    assert torch.allclose(d.keypoints2d_full, uv, atol=1e-9)
    # crop pixels: (uv - centre) * 256/b + (96, 128), then normalised by (192, 256)
    cpx = (uv - crop.center[:, None]) * (256 / b)[:, None, None] + torch.tensor([96.0, 128.0], dtype=F64)
    norm = torch.stack([2 * cpx[..., 0] / 192 - 1, 2 * cpx[..., 1] / 256 - 1], dim=-1)
    assert torch.allclose(d.keypoints2d, norm, atol=1e-12)
    assert d.vertices.shape == (3, 11, 3) and d.joints.shape == (3, 49, 3)
    assert torch.equal(d.joints, body.template[:49].expand(3, -1, -1))  # model frame, no translation


def test_hmr_crop_camera_by_hand():
    out, crop = _inputs()
    body = FakeBody(flat=False)
    d = decode(out, body, crop, "hmr")
    s, tx, ty = out["cam"].unbind(-1)
    tz = 2 * 5000 / (256 * s + 1e-9)
    P = body.template[:49][None]
    x = 5000 * (P[..., 0] + tx[:, None]) / (P[..., 2] + tz[:, None]) / 96
    y = 5000 * (P[..., 1] + ty[:, None]) / (P[..., 2] + tz[:, None]) / 128
    assert torch.allclose(d.keypoints2d, torch.stack([x, y], dim=-1), atol=1e-12)
    # full-image pixels: back through the crop map
    cpx = torch.stack([(x + 1) * 96, (y + 1) * 128], dim=-1)
    full = (cpx - torch.tensor([96.0, 128.0], dtype=F64)) * (200 * crop.scale / 256)[:, None, None] \
        + crop.center[:, None]
    assert torch.allclose(d.keypoints2d_full, full, atol=1e-9)


def test_pose6d_input_gradients_and_container():
    out, crop = _inputs()
    body = FakeBody(flat=False)
    pose6d = rotmat_to_rot6d(out["rotmat"]).reshape(3, 144).clone().requires_grad_(True)
    cam = out["cam"].clone().requires_grad_(True)
    betas = out["betas"].clone().requires_grad_(True)
    d = decode({"pose6d": pose6d, "betas": betas, "cam": cam}, body, crop.to(dtype=torch.float32))
    assert d.keypoints2d.dtype == F64  # the crop follows the prediction's dtype
    d.keypoints2d.sum().backward()
    assert cam.grad is not None and betas.grad is not None and pose6d.grad is not None
    assert cam.grad.abs().sum() > 0 and pose6d.grad.abs().sum() > 0
    sub = d[1]
    assert isinstance(sub, Decoded) and len(sub) == 1 and torch.equal(sub.joints, d.joints[1:2])
    assert len(Decoded.cat([d[:1], d[1:]])) == 3
    assert not d.detach().keypoints2d.requires_grad


def test_bad_inputs():
    out, crop = _inputs()
    body = FakeBody(flat=True)
    with pytest.raises(InputError, match="cam"):
        decode({"rotmat": out["rotmat"], "betas": out["betas"]}, body, crop)
    with pytest.raises(InputError, match="camera"):
        decode(out, body, crop, "weak")
    with pytest.raises(InputError, match="batch sizes"):
        project_keypoints(torch.zeros(2, 49, 3, dtype=F64), out["cam"][:2], crop)


def test_decode_with_standin_body(standin_body):
    body = standin_body
    out, crop = _inputs()
    out = {k: v.to(body_dtype(body)) for k, v in out.items()}
    d = decode(out, body, crop)
    assert d.keypoints2d.shape == (3, 49, 2) and d.vertices.shape[0] == 3
    assert torch.isfinite(d.keypoints2d).all()


def body_dtype(body: nn.Module) -> torch.dtype:
    for t in list(body.parameters()) + list(body.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32
