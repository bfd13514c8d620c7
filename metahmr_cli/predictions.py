"""Decode a regressor output into a posed body, its camera and its 2D keypoints.

One code path shared by inference, test-time optimisation, training and evaluation:

- ``"cliff"`` camera (CLIFF / Meta-HMR): the crop camera [s, tx, ty] becomes a full-image translation
  (:func:`~metahmr_cli.geometry.cam_crop_to_full`); joints are projected with the full-image focal length and
  principal point (W/2, H/2), mapped into crop pixels with ``crop_trans`` and normalised to [-1, 1].
- ``"hmr"`` camera (SPIN-style Meta-HMR variant): the crop camera with focal 5000 and a 256 px box,
  principal point 0, and the projection divided by (crop_w/2, crop_h/2). The full-image translation is still
  reported through ``cam_crop_to_full``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from .constants import FOCAL_LENGTH_HMR, HMR_BBOX_SIZE, IMG_H, IMG_W
from .errors import InputError
from .geometry.camera import CropInfo, cam_crop_to_full, perspective_projection, weak_perspective_crop_transl
from .geometry.crop import apply_affine, denormalize_crop_keypoints, normalize_crop_keypoints
from .geometry.rotation import rot6d_to_rotmat

if TYPE_CHECKING:
    from .body.smpl import BodyModel

__all__ = ["CameraKind", "Decoded", "decode", "project_keypoints"]

CameraKind = Literal["cliff", "hmr"]


@dataclass
class Decoded:
    """A decoded prediction for B people.

    Attributes:
        rotmat: (B, 24, 3, 3) joint rotations (global orientation first).
        betas: (B, 10) shape coefficients.
        cam_crop: (B, 3) weak-perspective crop camera [s, tx, ty].
        transl: (B, 3) translation of the body in the full-image camera frame (metres).
        vertices: (B, V, 3) model-frame vertices (no translation).
        joints: (B, 49, 3) model-frame joints (no translation).
        keypoints2d: (B, 49, 2) projected joints in normalised crop coordinates ([-1, 1]).
        keypoints2d_full: (B, 49, 2) projected joints in full-image pixels.
    """

    rotmat: Tensor
    betas: Tensor
    cam_crop: Tensor
    transl: Tensor
    vertices: Tensor
    joints: Tensor
    keypoints2d: Tensor
    keypoints2d_full: Tensor

    def __len__(self) -> int:
        return int(self.rotmat.shape[0])

    def _map(self, fn) -> Decoded:
        return Decoded(**{f.name: fn(getattr(self, f.name)) for f in fields(Decoded)})

    def detach(self) -> Decoded:
        """Copy without autograd history."""
        return self._map(lambda t: t.detach())

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Decoded:
        """Move / cast every field."""
        return self._map(lambda t: t.to(device=device, dtype=dtype))

    def __getitem__(self, idx: int | slice | Tensor | list[int]) -> Decoded:
        """Select people along B (an int keeps a batch dimension of 1)."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1 if idx != -1 else None)
        return self._map(lambda t: t[idx])

    @staticmethod
    def cat(items: list[Decoded]) -> Decoded:
        """Concatenate along B."""
        if not items:
            raise InputError("Decoded.cat needs at least one Decoded.")
        return Decoded(**{f.name: torch.cat([getattr(d, f.name) for d in items]) for f in fields(Decoded)})


def project_keypoints(
    joints: Tensor,
    cam_crop: Tensor,
    crop: CropInfo,
    camera: CameraKind = "cliff",
    out_wh: tuple[int, int] = (IMG_W, IMG_H),
) -> tuple[Tensor, Tensor, Tensor]:
    """Project model-frame points with the chosen camera convention.

    Args:
        joints: (B, N, 3) model-frame points.
        cam_crop: (B, 3) crop camera [s, tx, ty].
        crop: CropInfo of the B people.
        camera: "cliff" (full-image perspective) or "hmr" (crop camera, focal 5000, 256 px box).
        out_wh: crop (width, height).
    Returns:
        keypoints2d (B, N, 2) normalised crop coordinates, keypoints2d_full (B, N, 2) full-image pixels,
        transl (B, 3) full-image camera translation.
    """
    if camera not in ("cliff", "hmr"):
        raise InputError(f"camera must be 'cliff' or 'hmr', got {camera!r}.")
    if len(crop) != joints.shape[0] or cam_crop.shape != (joints.shape[0], 3):
        raise InputError(
            f"batch sizes differ: joints {tuple(joints.shape)}, cam_crop {tuple(cam_crop.shape)}, "
            f"crop {len(crop)} people."
        )
    if crop.center.dtype != joints.dtype or crop.center.device != joints.device:
        crop = crop.to(device=joints.device, dtype=joints.dtype)
    transl = cam_crop_to_full(cam_crop, crop.center, crop.scale, crop.img_hw, crop.focal)
    if camera == "cliff":
        full = perspective_projection(joints, transl, crop.focal, crop.principal())
        kp = normalize_crop_keypoints(apply_affine(full, crop.crop_trans), out_wh)
        return kp, full, transl
    w_out, h_out = float(out_wh[0]), float(out_wh[1])
    t_crop = weak_perspective_crop_transl(cam_crop, FOCAL_LENGTH_HMR, HMR_BBOX_SIZE)
    zeros = joints.new_zeros(joints.shape[0], 2)
    px = perspective_projection(joints, t_crop, FOCAL_LENGTH_HMR, zeros)
    kp = px / px.new_tensor([w_out / 2.0, h_out / 2.0])
    full = apply_affine(denormalize_crop_keypoints(kp, out_wh), crop.inv_trans())
    return kp, full, transl


def decode(
    out: dict[str, Tensor],
    body: BodyModel,
    crop: CropInfo,
    camera: CameraKind = "cliff",
) -> Decoded:
    """Run the body model on a regressor output and project its joints.

    Args:
        out: regressor output with "rotmat" (B, 24, 3, 3) (or "pose6d" (B, 144)), "betas" (B, 10), "cam" (B, 3).
        body: body model, called as ``body(rotmat, betas)`` (no translation).
        crop: CropInfo of the B people.
        camera: "cliff" or "hmr" (see module docstring).
    Returns:
        :class:`Decoded`; gradients flow from every field back to ``out``.
    """
    missing = [k for k in ("betas", "cam") if k not in out]
    if "rotmat" not in out and "pose6d" not in out:
        missing.insert(0, "rotmat (or pose6d)")
    if missing:
        raise InputError(f"regressor output lacks {', '.join(missing)}; got keys {sorted(out)}.")
    rotmat = out["rotmat"] if "rotmat" in out else rot6d_to_rotmat(out["pose6d"])
    betas, cam = out["betas"], out["cam"]
    body_out = body(rotmat, betas)
    kp, full, transl = project_keypoints(body_out.joints, cam, crop, camera)
    return Decoded(
        rotmat=rotmat,
        betas=betas,
        cam_crop=cam,
        transl=transl,
        vertices=body_out.vertices,
        joints=body_out.joints,
        keypoints2d=kp,
        keypoints2d_full=full,
    )
