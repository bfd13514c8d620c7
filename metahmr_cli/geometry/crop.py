"""Boxes and the affine maps between full-image pixels and the 256x192 network crop.

Conventions (as in the released Meta-HMR / CLIFF code):

- A box is ``center`` (x, y) in full-image pixels and ``scale`` = box height in pixels / 200.
  The crop covers a box of height ``200 * scale`` and width ``200 * scale * 192 / 256`` around the centre.
- The crop map is a similarity: box centre -> crop centre (w/2, h/2), zoom ``h_out / (200 * scale)``, and an
  optional in-plane rotation by ``rot_deg`` (the augmentation rotation). There is no half-pixel offset.
"""

from __future__ import annotations

import math
from typing import TypeVar

import cv2
import numpy as np
import torch
from torch import Tensor

from ..constants import BBOX_MARGIN_DETECTOR, BBOX_MARGIN_KEYPOINTS, CROP_ASPECT, IMG_H, IMG_W, SCALE_PX
from ..errors import InputError

__all__ = [
    "apply_affine",
    "box_from_keypoints",
    "box_from_xyxy",
    "crop_transform",
    "crop_transform_batch",
    "denormalize_crop_keypoints",
    "normalize_crop_keypoints",
    "warp_crop",
]

ArrayT = TypeVar("ArrayT", np.ndarray, Tensor)


def _check_wh(out_wh: tuple[int, int]) -> tuple[float, float]:
    if len(out_wh) != 2 or min(out_wh) <= 0:
        raise InputError(f"out_wh must be (width, height) with positive entries, got {out_wh!r}.")
    return float(out_wh[0]), float(out_wh[1])


def box_from_keypoints(
    kp: ArrayT, margin: float = BBOX_MARGIN_KEYPOINTS, aspect: float = CROP_ASPECT
) -> tuple[ArrayT, ArrayT]:
    """Box around the visible keypoints (confidence > 0), as the Meta-HMR datasets rebuild it.

    center = centre of the tight box of the visible keypoints;
    scale = max(w * aspect, h) / 200 * margin.

    Args:
        kp: (N, 3) or (B, N, 3) keypoints [x, y, conf] in pixels (numpy array or tensor).
        margin: enlargement factor (1.2 in the released datasets).
        aspect: crop height / width (256 / 192).
    Returns:
        center (2,) or (B, 2), scale () or (B,), same array type as ``kp``.
    Raises:
        InputError: when a person has no keypoint with confidence > 0.
    """
    is_np = isinstance(kp, np.ndarray)
    t = torch.as_tensor(kp, dtype=torch.float64) if is_np else kp
    if not isinstance(t, Tensor) or t.ndim not in (2, 3) or t.shape[-1] < 3:
        raise InputError(
            f"keypoints must have shape (N, 3) or (B, N, 3) with [x, y, conf], got {tuple(np.shape(kp))}."
        )
    single = t.ndim == 2
    if single:
        t = t[None]
    vis = t[..., 2] > 0
    n_vis = vis.sum(-1)
    if bool((n_vis == 0).any()):
        bad = torch.nonzero(n_vis == 0).flatten().tolist()
        raise InputError(
            f"no keypoint with confidence > 0 for person(s) {bad}; a box cannot be built from their "
            "keypoints (drop these people or give a detector box instead)."
        )
    inf = torch.full_like(t[..., 0], math.inf)
    xs_min = torch.where(vis, t[..., 0], inf).amin(-1)
    ys_min = torch.where(vis, t[..., 1], inf).amin(-1)
    xs_max = torch.where(vis, t[..., 0], -inf).amax(-1)
    ys_max = torch.where(vis, t[..., 1], -inf).amax(-1)
    center = torch.stack([(xs_min + xs_max) / 2.0, (ys_min + ys_max) / 2.0], dim=-1)
    size = torch.maximum((xs_max - xs_min) * aspect, ys_max - ys_min)
    scale = size / SCALE_PX * margin
    if single:
        center, scale = center[0], scale[0]
    if is_np:
        return center.numpy(), scale.numpy()
    return center, scale


def box_from_xyxy(
    xyxy: ArrayT, margin: float = BBOX_MARGIN_DETECTOR, aspect: float = CROP_ASPECT
) -> tuple[ArrayT, ArrayT]:
    """Box from a detector rectangle (the CLIFF demo ``bbox_from_detector``).

    center = rectangle centre; scale = max(w * aspect, h) / 200 * margin.

    Args:
        xyxy: (..., 4) [x1, y1, x2, y2] in pixels (numpy array or tensor).
    Returns:
        center (..., 2), scale (...), same array type as ``xyxy``.
    """
    if xyxy.shape[-1] != 4:
        raise InputError(f"boxes must have shape (..., 4) as [x1, y1, x2, y2], got {tuple(xyxy.shape)}.")
    x1, y1, x2, y2 = xyxy[..., 0], xyxy[..., 1], xyxy[..., 2], xyxy[..., 3]
    w, h = x2 - x1, y2 - y1
    if isinstance(xyxy, np.ndarray):
        center = np.stack([(x1 + x2) / 2.0, (y1 + y2) / 2.0], axis=-1)
        size = np.maximum(w * aspect, h)
    else:
        center = torch.stack([(x1 + x2) / 2.0, (y1 + y2) / 2.0], dim=-1)
        size = torch.maximum(w * aspect, h)
    return center, size / SCALE_PX * margin


def crop_transform(
    center: np.ndarray | tuple[float, float] | Tensor,
    scale: float,
    rot_deg: float = 0.0,
    out_wh: tuple[int, int] = (IMG_W, IMG_H),
    inverse: bool = False,
) -> np.ndarray:
    """2x3 affine map full-image px -> crop px (or crop -> full with ``inverse=True``).

    Closed form of the released three-point ``cv2.getAffineTransform`` construction: the crop centre gets
    the box centre, the image-space "up" vector of the box rotated by ``rot_deg`` (counter-clockwise on screen
    for positive angles, as the augmentation uses it) becomes the crop's up vector, and the zoom is
    ``h_out / (200 * scale)``.

    Args:
        center: (2,) box centre in full-image pixels.
        scale: box height / 200.
        rot_deg: in-plane rotation in degrees.
        out_wh: crop (width, height).
        inverse: return the crop -> full-image map instead.
    Returns:
        (2, 3) float64.
    """
    w_out, h_out = _check_wh(out_wh)
    if isinstance(center, Tensor):
        center = center.detach().cpu().numpy()
    c = np.asarray(center, dtype=np.float64).reshape(-1)
    if c.shape != (2,):
        raise InputError(f"center must be (x, y), got shape {c.shape}.")
    scale = float(scale)
    if not scale > 0:
        raise InputError(f"scale must be positive (box height / 200), got {scale}.")
    # src width of the box; the zoom is dst_w / src_w = h_out / (200*scale)
    zoom = w_out / (SCALE_PX * scale * w_out / h_out)
    theta = math.radians(rot_deg)
    cs, sn = math.cos(theta), math.sin(theta)
    if not inverse:
        a = zoom * np.array([[cs, sn], [-sn, cs]])
        t = np.array([w_out / 2.0, h_out / 2.0]) - a @ c
    else:
        a = np.array([[cs, -sn], [sn, cs]]) / zoom
        t = c - a @ np.array([w_out / 2.0, h_out / 2.0])
    return np.concatenate([a, t[:, None]], axis=1)


def crop_transform_batch(
    center: Tensor, scale: Tensor, out_wh: tuple[int, int] = (IMG_W, IMG_H), inverse: bool = False
) -> Tensor:
    """Batched, differentiable :func:`crop_transform` without rotation.

    Args:
        center: (B, 2) box centres in full-image pixels.
        scale: (B,) box heights / 200.
        out_wh: crop (width, height).
        inverse: return crop -> full-image maps instead.
    Returns:
        (B, 2, 3) with the dtype/device of ``center``.
    """
    w_out, h_out = _check_wh(out_wh)
    if not isinstance(center, Tensor) or center.ndim != 2 or center.shape[-1] != 2:
        raise InputError(f"center must be a (B, 2) tensor, got {getattr(center, 'shape', type(center))}.")
    scale = torch.as_tensor(scale, dtype=center.dtype, device=center.device).reshape(-1)
    if scale.shape[0] != center.shape[0]:
        raise InputError(f"scale must have shape (B,) = ({center.shape[0]},), got {tuple(scale.shape)}.")
    zoom = h_out / (SCALE_PX * scale)
    out = center.new_zeros(center.shape[0], 2, 3)
    half = center.new_tensor([w_out / 2.0, h_out / 2.0])
    if not inverse:
        out[:, 0, 0] = zoom
        out[:, 1, 1] = zoom
        out[:, :, 2] = half - zoom[:, None] * center
    else:
        out[:, 0, 0] = 1.0 / zoom
        out[:, 1, 1] = 1.0 / zoom
        out[:, :, 2] = center - half / zoom[:, None]
    return out


def warp_crop(
    img: np.ndarray,
    center: np.ndarray | tuple[float, float],
    scale: float,
    rot_deg: float = 0.0,
    out_wh: tuple[int, int] = (IMG_W, IMG_H),
) -> np.ndarray:
    """Cut the network crop out of an image with ``cv2.warpAffine`` (bilinear, zero border).

    Args:
        img: (H, W, C) or (H, W) image, usually uint8 RGB.
        center, scale, rot_deg: the box (see :func:`crop_transform`).
        out_wh: crop (width, height).
    Returns:
        (h_out, w_out, C) image of the same dtype.
    """
    if not isinstance(img, np.ndarray) or img.ndim not in (2, 3):
        raise InputError(f"img must be an (H, W, 3) numpy image, got {getattr(img, 'shape', type(img))}.")
    trans = crop_transform(center, scale, rot_deg, out_wh)
    w_out, h_out = int(out_wh[0]), int(out_wh[1])
    return cv2.warpAffine(img, trans, (w_out, h_out), flags=cv2.INTER_LINEAR)


def apply_affine(points: ArrayT, trans: ArrayT | np.ndarray) -> ArrayT:
    """Apply 2x3 affine maps to 2D points: p' = A p + t.

    Args:
        points: (..., N, 2) points (extra columns beyond 2 are ignored and dropped).
        trans: (..., 2, 3) maps, broadcast against the leading dims of ``points``.
    Returns:
        (..., N, 2) of the type of ``points``.
    """
    if points.shape[-1] < 2 or tuple(trans.shape[-2:]) != (2, 3):
        raise InputError(
            f"apply_affine needs points (..., N, 2) and maps (..., 2, 3), got {tuple(points.shape)} "
            f"and {tuple(trans.shape)}."
        )
    if isinstance(points, Tensor):
        tr = torch.as_tensor(trans, dtype=points.dtype, device=points.device)
        xy = points[..., :2]
        return xy @ tr[..., :, :2].transpose(-1, -2) + tr[..., None, :, 2]
    tr = np.asarray(trans)
    xy = np.asarray(points)[..., :2]
    return xy @ np.swapaxes(tr[..., :, :2], -1, -2) + tr[..., None, :, 2]


def normalize_crop_keypoints(kp: ArrayT, out_wh: tuple[int, int] = (IMG_W, IMG_H)) -> ArrayT:
    """Crop pixels -> [-1, 1]: x_n = 2x/w - 1, y_n = 2y/h - 1. A confidence column is kept unchanged.

    Args:
        kp: (..., N, 2) or (..., N, 3) crop-pixel keypoints (numpy or tensor).
    Returns:
        same shape and type.
    """
    w_out, h_out = _check_wh(out_wh)
    out = kp.clone() if isinstance(kp, Tensor) else np.array(kp, dtype=np.result_type(kp, np.float32))
    out[..., 0] = 2.0 * kp[..., 0] / w_out - 1.0
    out[..., 1] = 2.0 * kp[..., 1] / h_out - 1.0
    return out


def denormalize_crop_keypoints(kp: ArrayT, out_wh: tuple[int, int] = (IMG_W, IMG_H)) -> ArrayT:
    """Inverse of :func:`normalize_crop_keypoints`: x = (x_n + 1) w / 2, y = (y_n + 1) h / 2.

    Args:
        kp: (..., N, 2) or (..., N, 3) normalised keypoints.
    Returns:
        same shape and type, in crop pixels.
    """
    w_out, h_out = _check_wh(out_wh)
    out = kp.clone() if isinstance(kp, Tensor) else np.array(kp, dtype=np.result_type(kp, np.float32))
    out[..., 0] = 0.5 * w_out * (kp[..., 0] + 1.0)
    out[..., 1] = 0.5 * h_out * (kp[..., 1] + 1.0)
    return out
