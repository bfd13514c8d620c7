"""Cameras: the camera of an image, the CLIFF full-image camera, the SPIN/HMR crop camera, bbox_info and the
per-person crop record.

The camera of an image (or video, or synthetic clip) has one home: :func:`camera_for` turns the image size, the
``--focal`` / ``--fov`` settings (:class:`CameraSettings`, parsed once by :func:`parse_focal`) and a photo's EXIF
focal length into the intrinsics ``K`` and the rule that gave the focal length ("diagonal", "exif", "focal",
"fov"), which every result records.

Formulas follow the released CLIFF / Meta-HMR code (``cam_crop2full``, ``perspective_projection``,
``get_bboxinfo``); the numeric constants live in :mod:`metahmr_cli.constants`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..constants import (
    BBOX_INFO_SIZE_DIV,
    BBOX_INFO_SIZE_OFFSET,
    BBOX_INFO_XY_FACTOR,
    FOCAL_LENGTH_HMR,
    HMR_BBOX_SIZE,
    IMG_H,
    IMG_W,
    SCALE_PX,
)
from ..errors import ConfigError, InputError
from .crop import crop_transform_batch

__all__ = [
    "FOCAL_RULES",
    "CameraSettings",
    "CropInfo",
    "bbox_info",
    "cam_crop_to_full",
    "camera_for",
    "check_focal",
    "default_focal",
    "estimate_translation",
    "focal_for_image",
    "intrinsics",
    "parse_focal",
    "perspective_projection",
    "weak_perspective_crop_transl",
]


# ------------------------------------------------------------------------------------------------------ image cameras

FOCAL_RULES: tuple[str, ...] = ("diagonal", "exif")
"""``--focal`` words: the CLIFF rule f = sqrt(W^2 + H^2) (default) or the photo's EXIF focal length."""
MAX_FOCAL_PER_DIAGONAL = 1000.0
"""A focal length above this many image diagonals (a field of view under 0.06 degrees) is refused."""


def parse_focal(focal: float | str | None) -> float | str | None:
    """A ``--focal`` setting checked and parsed: a number of pixels (also given as a string) becomes a float, a word
    of :data:`FOCAL_RULES` stays; raises :class:`ConfigError` for anything else (the setting itself is not changed).
    """
    if isinstance(focal, str):
        try:
            focal = float(focal)
        except ValueError:
            if focal not in FOCAL_RULES:
                raise ConfigError(f"focal = {focal!r}; give a number of pixels or one of "
                                  f"{', '.join(FOCAL_RULES)}.") from None
    if isinstance(focal, float | int) and not focal > 0:
        raise ConfigError(f"focal must be a positive number of pixels, got {focal}.")
    return focal


@dataclass(frozen=True)
class CameraSettings:
    """The camera settings of a run, parsed (:func:`parse_focal`): ``focal`` a number of pixels for every input, a
    rule word ("diagonal", "exif") or None (the diagonal rule); ``fov`` a horizontal field of view in degrees."""

    focal: float | str | None = None
    fov: float | None = None


def focal_for_image(width: int, height: int, *, focal: float | str | None = None, fov: float | None = None,
                    exif_focal: float | None = None) -> tuple[float, str]:
    """Focal length in pixels and the rule that gave it.

    ``focal`` as a number > ``fov`` (horizontal, degrees) > ``focal="exif"`` with an EXIF focal length > the
    CLIFF rule sqrt(W^2 + H^2) ("diagonal", the default; what CLIFF and Meta-HMR were trained with: a phone's
    EXIF focal, ~0.6 x the diagonal, would put ``bbox_info`` outside the training range).
    """
    if isinstance(focal, int | float):
        return float(focal), "focal"
    if fov is not None:
        return width / 2.0 / math.tan(math.radians(fov) / 2.0), "fov"
    if focal == "exif" and exif_focal is not None and math.isfinite(exif_focal) and exif_focal > 0:
        return float(exif_focal), "exif"
    return math.hypot(width, height), "diagonal"


def check_focal(focal: object, image_hw: tuple[int, int], what: str = "focal") -> float:
    """A focal length in pixels: a finite number > 0 and at most :data:`MAX_FOCAL_PER_DIAGONAL` image diagonals."""
    if isinstance(focal, bool) or not isinstance(focal, int | float | np.integer | np.floating):
        raise InputError(f"{what} must be a number of pixels, got {focal!r} ({type(focal).__name__}).")
    f = float(focal)
    limit = MAX_FOCAL_PER_DIAGONAL * float(np.hypot(*image_hw))
    if not np.isfinite(f) or f <= 0 or f > limit:
        raise InputError(f"{what} = {f!r} px cannot be used: give a focal length > 0 and at most {limit:.4g} px "
                         f"(this image's default is its diagonal, {np.hypot(*image_hw):.1f} px; leave focal unset "
                         "for it).")
    return f


def intrinsics(focal: float, width: int, height: int) -> np.ndarray:
    """(3, 3) float64 pinhole intrinsics ``[[f, 0, W/2], [0, f, H/2], [0, 0, 1]]`` (principal point at the centre)."""
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]], np.float64)


def camera_for(width: int, height: int, settings: CameraSettings | None = None,
               exif_focal: float | None = None) -> tuple[np.ndarray, str]:
    """The camera of a ``width`` x ``height`` image: (3, 3) float64 intrinsics ``K`` and the rule that gave its focal
    length (:func:`focal_for_image`: "focal", "fov", "exif" or "diagonal"). ``settings``: the run's parsed
    ``--focal`` / ``--fov`` (None: the diagonal rule); ``exif_focal``: the photo's EXIF focal length in pixels, used
    with ``focal="exif"`` (a video has none: the diagonal rule).

    Raises:
        InputError: the focal length is not a finite number > 0, or absurdly long for the image
            (:func:`check_focal`).
    """
    s = settings if settings is not None else CameraSettings()
    focal, rule = focal_for_image(width, height, focal=s.focal, fov=s.fov, exif_focal=exif_focal)
    focal = check_focal(focal, (height, width), what="the configured focal length")
    return intrinsics(focal, width, height), rule


# ------------------------------------------------------------------------------------------------------ network cameras


def _as_batch(x: Tensor | float, like: Tensor, name: str, shape_tail: tuple[int, ...] = ()) -> Tensor:
    """Bring a per-sample quantity to shape (B, *shape_tail) with the dtype/device of ``like``."""
    t = torch.as_tensor(x, dtype=like.dtype, device=like.device)
    b = like.shape[0]
    if t.ndim == 0 and not shape_tail:
        return t.expand(b)
    if t.ndim == len(shape_tail) + 1 and t.shape[-1] == 1 and not shape_tail:
        t = t.reshape(-1)
    if tuple(t.shape) != (b, *shape_tail):
        raise InputError(f"{name} must have shape {(b, *shape_tail)}, got {tuple(t.shape)}.")
    return t


def default_focal(img_hw: Tensor) -> Tensor:
    """Full-image focal length used when none is known: the image diagonal (about 55 degrees diagonal FOV).

    Args:
        img_hw: (B, 2) [H, W] in pixels.
    Returns:
        (B,) sqrt(H^2 + W^2).
    """
    img_hw = torch.as_tensor(img_hw)
    if img_hw.shape[-1] != 2:
        raise InputError(f"img_hw must have shape (B, 2) as [H, W], got {tuple(img_hw.shape)}.")
    img_hw = img_hw.to(torch.get_default_dtype()) if not img_hw.is_floating_point() else img_hw
    return torch.sqrt(img_hw[..., 0] ** 2 + img_hw[..., 1] ** 2)


def bbox_info(center: Tensor, scale: Tensor, img_hw: Tensor, focal: Tensor) -> Tensor:
    """The CLIFF bbox_info input, normalised as the released code does it.

    With b = 200 * scale: [(cx - W/2) / f * 2.8, (cy - H/2) / f * 2.8, (b - 0.24 f) / (0.06 f)].

    Args:
        center: (B, 2) box centres in full-image pixels.
        scale: (B,) box heights / 200.
        img_hw: (B, 2) [H, W].
        focal: (B,) full-image focal lengths in pixels.
    Returns:
        (B, 3).
    """
    _check_center(center)
    scale = _as_batch(scale, center, "scale")
    img_hw = _as_batch(img_hw, center, "img_hw", (2,))
    focal = _as_batch(focal, center, "focal")
    b = scale * SCALE_PX
    dx = (center[:, 0] - img_hw[:, 1] / 2.0) / focal * BBOX_INFO_XY_FACTOR
    dy = (center[:, 1] - img_hw[:, 0] / 2.0) / focal * BBOX_INFO_XY_FACTOR
    db = (b - BBOX_INFO_SIZE_OFFSET * focal) / (BBOX_INFO_SIZE_DIV * focal)
    return torch.stack([dx, dy, db], dim=-1)


def cam_crop_to_full(
    crop_cam: Tensor, center: Tensor, scale: Tensor, img_hw: Tensor, focal: Tensor
) -> Tensor:
    """Weak-perspective crop camera [s, tx, ty] -> full-image camera translation [tx, ty, tz] (CLIFF).

    With b = 200 * scale and bs = b * s + 1e-9: tz = 2 f / bs, tx = 2 (cx - W/2) / bs + tx_crop,
    ty = 2 (cy - H/2) / bs + ty_crop.

    Args:
        crop_cam: (B, 3) [s, tx, ty].
        center: (B, 2) box centres in full-image pixels.
        scale: (B,) box heights / 200.
        img_hw: (B, 2) [H, W].
        focal: (B,) full-image focal lengths.
    Returns:
        (B, 3) translation of the body in the camera frame (metres).
    """
    _check_cam(crop_cam)
    center = _as_batch(center, crop_cam, "center", (2,))
    scale = _as_batch(scale, crop_cam, "scale")
    img_hw = _as_batch(img_hw, crop_cam, "img_hw", (2,))
    focal = _as_batch(focal, crop_cam, "focal")
    b = scale * SCALE_PX
    bs = b * crop_cam[:, 0] + 1e-9
    tz = 2 * focal / bs
    tx = (2 * (center[:, 0] - img_hw[:, 1] / 2.0) / bs) + crop_cam[:, 1]
    ty = (2 * (center[:, 1] - img_hw[:, 0] / 2.0) / bs) + crop_cam[:, 2]
    return torch.stack([tx, ty, tz], dim=-1)


def weak_perspective_crop_transl(
    crop_cam: Tensor, focal: float = FOCAL_LENGTH_HMR, res: float = HMR_BBOX_SIZE
) -> Tensor:
    """SPIN/HMR crop camera translation: [tx, ty, 2 f / (res * s + 1e-9)].

    Args:
        crop_cam: (B, 3) [s, tx, ty].
        focal: crop focal length (5000).
        res: crop size the camera assumes (256 for 'rect' crops, 224 for SPIN squares).
    Returns:
        (B, 3).
    """
    _check_cam(crop_cam)
    tz = 2 * focal / (res * crop_cam[:, 0] + 1e-9)
    return torch.stack([crop_cam[:, 1], crop_cam[:, 2], tz], dim=-1)


def perspective_projection(
    points: Tensor,
    transl: Tensor,
    focal: Tensor | float,
    principal: Tensor,
    rotation: Tensor | None = None,
) -> Tensor:
    """Pinhole projection with K = [[f, 0, cx], [0, f, cy], [0, 0, 1]] of p = R X + t.

    Args:
        points: (B, N, 3) points.
        transl: (B, 3) camera translation.
        focal: (B,) or scalar focal length in pixels.
        principal: (B, 2) principal point (cx, cy) (or (2,), broadcast).
        rotation: (B, 3, 3) or None for the identity.
    Returns:
        (B, N, 2) pixel coordinates.
    """
    if not isinstance(points, Tensor) or points.ndim != 3 or points.shape[-1] != 3:
        raise InputError(f"points must be a (B, N, 3) tensor, got {getattr(points, 'shape', type(points))}.")
    b = points.shape[0]
    transl = _as_batch(transl, points, "transl", (3,))
    focal = _as_batch(focal, points, "focal")
    principal = torch.as_tensor(principal, dtype=points.dtype, device=points.device)
    if principal.ndim == 1:
        principal = principal.expand(b, 2)
    principal = _as_batch(principal, points, "principal", (2,))
    if rotation is not None:
        rotation = _as_batch(rotation, points, "rotation", (3, 3))
        points = torch.einsum("bij,bkj->bki", rotation, points)
    p = points + transl[:, None, :]
    xy = p[..., :2] / p[..., 2:3]
    return xy * focal[:, None, None] + principal[:, None, :]


def estimate_translation(
    joints3d: Tensor,
    keypoints2d: Tensor,
    focal: Tensor | float,
    img_size: Tensor | float,
    center: Tensor | None = None,
) -> Tensor:
    """Camera translation that best projects 3D joints onto 2D keypoints (SPIN ``estimate_translation``).

    Weighted linear least squares on the 24 GT-set joints (slots 25..48 of the 49-joint set; all joints
    if 24 are given). Each joint gives the rows [f, 0, cx - u | (u - cx) Z - f X] and
    [0, f, cy - v | (v - cy) Z - f Y], weighted by sqrt(conf).

    Args:
        joints3d: (B, 49, 3) or (B, 24, 3) model-frame joints.
        keypoints2d: (B, 49, 3) or (B, 24, 3) [u, v, conf] in pixels of the image the camera sees.
        focal: (B,) or scalar.
        img_size: (B,) or scalar square image side; the principal point is img_size / 2.
        center: optional (B, 2) principal point overriding img_size / 2.
    Returns:
        (B, 3) translations (float, same dtype/device as ``joints3d``).
    """
    if joints3d.ndim != 3 or joints3d.shape[-1] != 3 or keypoints2d.shape[:2] != joints3d.shape[:2]:
        raise InputError(
            f"estimate_translation needs joints3d (B, N, 3) and keypoints2d (B, N, 3) with the same N, "
            f"got {tuple(joints3d.shape)} and {tuple(keypoints2d.shape)}."
        )
    if joints3d.shape[1] == 49:
        joints3d, keypoints2d = joints3d[:, 25:], keypoints2d[:, 25:]
    dt = torch.float64
    S = joints3d.to(dt)
    kp = keypoints2d.to(device=S.device, dtype=dt)
    f = _as_batch(focal, S, "focal")
    if center is None:
        c = _as_batch(img_size, S, "img_size")[:, None].expand(-1, 2) / 2.0
    else:
        c = _as_batch(center, S, "center", (2,))
    w = torch.sqrt(kp[..., 2].clamp_min(0))  # (B, N)
    u, v = kp[..., 0], kp[..., 1]
    X, Y, Z = S[..., 0], S[..., 1], S[..., 2]
    zeros = torch.zeros_like(u)
    fN = f[:, None].expand_as(u)
    rows_x = torch.stack([fN, zeros, c[:, :1] - u], dim=-1)
    rows_y = torch.stack([zeros, fN, c[:, 1:] - v], dim=-1)
    rhs_x = (u - c[:, :1]) * Z - fN * X
    rhs_y = (v - c[:, 1:]) * Z - fN * Y
    Q = torch.stack([rows_x, rows_y], dim=2).reshape(S.shape[0], -1, 3)
    rhs = torch.stack([rhs_x, rhs_y], dim=2).reshape(S.shape[0], -1)
    wq = torch.stack([w, w], dim=2).reshape(S.shape[0], -1)
    Q = Q * wq[..., None]
    rhs = rhs * wq
    A = Q.transpose(1, 2) @ Q
    bvec = (Q.transpose(1, 2) @ rhs[..., None])[..., 0]
    trans = torch.linalg.solve(A, bvec)
    return trans.to(joints3d.dtype)


def _check_center(center: Tensor) -> None:
    if not isinstance(center, Tensor) or center.ndim != 2 or center.shape[-1] != 2:
        raise InputError(f"center must be a (B, 2) tensor, got {getattr(center, 'shape', type(center))}.")
    if not center.is_floating_point():
        raise InputError(f"center must be a floating-point tensor, got {center.dtype}.")


def _check_cam(crop_cam: Tensor) -> None:
    if not isinstance(crop_cam, Tensor) or crop_cam.ndim != 2 or crop_cam.shape[-1] != 3:
        raise InputError(
            f"crop_cam must be a (B, 3) tensor [s, tx, ty], got {getattr(crop_cam, 'shape', type(crop_cam))}."
        )


@dataclass
class CropInfo:
    """Where each person's network crop sits in its full image.

    Attributes:
        center: (B, 2) box centres in full-image pixels.
        scale: (B,) box heights / 200.
        img_hw: (B, 2) [H, W] of the full images.
        focal: (B,) full-image focal lengths in pixels.
        crop_trans: (B, 2, 3) full-image pixels -> crop pixels (no rotation).
    """

    center: Tensor
    scale: Tensor
    img_hw: Tensor
    focal: Tensor
    crop_trans: Tensor

    def __post_init__(self) -> None:
        b = self.center.shape[0] if self.center.ndim == 2 else -1
        shapes = {
            "center": (b, 2),
            "scale": (b,),
            "img_hw": (b, 2),
            "focal": (b,),
            "crop_trans": (b, 2, 3),
        }
        for name, shape in shapes.items():
            value = getattr(self, name)
            if not isinstance(value, Tensor) or tuple(value.shape) != shape:
                raise InputError(
                    f"CropInfo.{name} must be a tensor of shape {shape}, "
                    f"got {getattr(value, 'shape', type(value))}."
                )

    @staticmethod
    def from_boxes(
        center: Tensor | np.ndarray,
        scale: Tensor | np.ndarray,
        img_hw: Tensor | np.ndarray,
        focal: Tensor | np.ndarray | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        out_wh: tuple[int, int] = (IMG_W, IMG_H),
    ) -> CropInfo:
        """Build a CropInfo and its ``crop_trans`` from boxes.

        Args:
            center: (B, 2) box centres; scale: (B,); img_hw: (B, 2) [H, W] (or (2,) shared by all).
            focal: (B,), a scalar, or None for :func:`default_focal`.
            dtype/device: default to those of ``center`` when it is a floating tensor, else float32 / cpu.
        """
        if dtype is None:
            is_float = isinstance(center, Tensor) and center.is_floating_point()
            dtype = center.dtype if is_float else torch.float32
        if device is None:
            device = center.device if isinstance(center, Tensor) else torch.device("cpu")
        c = torch.as_tensor(np.asarray(center) if not isinstance(center, Tensor) else center)
        c = c.to(device=device, dtype=dtype).reshape(-1, 2)
        b = c.shape[0]
        s = torch.as_tensor(np.asarray(scale) if not isinstance(scale, Tensor) else scale)
        s = s.to(device=device, dtype=dtype).reshape(-1)
        if s.numel() == 1 and b > 1:
            s = s.expand(b).clone()
        hw = torch.as_tensor(np.asarray(img_hw) if not isinstance(img_hw, Tensor) else img_hw)
        hw = hw.to(device=device, dtype=dtype)
        if hw.ndim == 1:
            hw = hw.expand(b, 2).clone()
        if focal is None:
            f = default_focal(hw)
        else:
            f = torch.as_tensor(np.asarray(focal) if not isinstance(focal, Tensor) else focal)
            f = f.to(device=device, dtype=dtype).reshape(-1)
            if f.numel() == 1 and b > 1:
                f = f.expand(b).clone()
        trans = crop_transform_batch(c, s, out_wh)
        return CropInfo(center=c, scale=s, img_hw=hw, focal=f, crop_trans=trans)

    def __len__(self) -> int:
        return int(self.center.shape[0])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> CropInfo:
        """Move / cast every field."""
        return CropInfo(**{n: getattr(self, n).to(device=device, dtype=dtype) for n in _CROP_FIELDS})

    def __getitem__(self, idx: int | slice | Tensor | list[int]) -> CropInfo:
        """Select people along B (an int keeps a batch dimension of 1)."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1 if idx != -1 else None)
        return CropInfo(**{n: getattr(self, n)[idx] for n in _CROP_FIELDS})

    @staticmethod
    def cat(items: list[CropInfo]) -> CropInfo:
        """Concatenate along B."""
        if not items:
            raise InputError("CropInfo.cat needs at least one CropInfo.")
        return CropInfo(**{n: torch.cat([getattr(it, n) for it in items]) for n in _CROP_FIELDS})

    def bbox_info(self) -> Tensor:
        """(B, 3) normalised CLIFF bbox_info, see :func:`bbox_info`."""
        return bbox_info(self.center, self.scale, self.img_hw, self.focal)

    def principal(self) -> Tensor:
        """(B, 2) principal point (W/2, H/2) of the full-image camera."""
        return torch.stack([self.img_hw[:, 1] / 2.0, self.img_hw[:, 0] / 2.0], dim=-1)

    def inv_trans(self) -> Tensor:
        """(B, 2, 3) crop pixels -> full-image pixels (the inverse of ``crop_trans``)."""
        a_inv = torch.linalg.inv(self.crop_trans[:, :, :2])
        t_inv = -(a_inv @ self.crop_trans[:, :, 2:])
        return torch.cat([a_inv, t_inv], dim=-1)


_CROP_FIELDS = ("center", "scale", "img_hw", "focal", "crop_trans")
