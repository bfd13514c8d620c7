"""Rotation representations: the 6D network output, axis-angle and rotation matrices.

All functions are pure, differentiable where it makes sense, and keep the device and dtype of their input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError

__all__ = [
    "axis_angle_to_rotmat",
    "quaternion_to_rotmat",
    "rot6d_to_rotmat",
    "rotmat_to_axis_angle",
    "rotmat_to_quaternion",
    "rotmat_to_rot6d",
]


def _check_tensor(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise InputError(
            f"{name} must be a torch.Tensor, got {type(x).__name__}; wrap it with torch.as_tensor(...)."
        )
    if not x.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor, got dtype {x.dtype}; call .float() first.")
    return x


def rot6d_to_rotmat(x: Tensor) -> Tensor:
    """Convert the 6D rotation representation of the regressor head to rotation matrices.

    The six numbers of one rotation are read as a 3x2 matrix in row-major order: the first column
    a1 = (x0, x2, x4) and the second a2 = (x1, x3, x5). Gram-Schmidt gives b1, b2 and b3 = b1 x b2,
    and the result has the columns [b1, b2, b3]. This is the layout the released CLIFF / Meta-HMR weights use.

    Args:
        x: (..., 6) one rotation per row, or (..., 6*K) e.g. (B, 144) for the 24 SMPL joints.
    Returns:
        (..., 3, 3) for input (..., 6); (..., K, 3, 3) for input (..., 6*K) with K > 1.
    """
    x = _check_tensor(x, "rot6d")
    if x.ndim == 0 or x.shape[-1] % 6 != 0:
        raise InputError(f"rot6d must have a last dimension divisible by 6 (got shape {tuple(x.shape)}).")
    k = x.shape[-1] // 6
    lead = x.shape[:-1] if k == 1 else (*x.shape[:-1], k)
    m = x.reshape(-1, 3, 2)
    a1 = m[:, :, 0]
    a2 = m[:, :, 1]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - torch.einsum("bi,bi->b", b1, a2).unsqueeze(-1) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-1).reshape(*lead, 3, 3)


def rotmat_to_rot6d(rotmat: Tensor) -> Tensor:
    """Inverse of :func:`rot6d_to_rotmat` for proper rotations.

    Args:
        rotmat: (..., 3, 3).
    Returns:
        (..., 6): the first two columns, written as a 3x2 matrix in row-major order.
    """
    rotmat = _check_tensor(rotmat, "rotmat")
    if rotmat.shape[-2:] != (3, 3):
        raise InputError(f"rotmat must have shape (..., 3, 3), got {tuple(rotmat.shape)}.")
    return rotmat[..., :, :2].reshape(*rotmat.shape[:-2], 6)


def quaternion_to_rotmat(quat: Tensor) -> Tensor:
    """Convert quaternions (w, x, y, z) to rotation matrices. The quaternion is normalised first.

    Args:
        quat: (..., 4) scalar-first quaternions.
    Returns:
        (..., 3, 3).
    """
    quat = _check_tensor(quat, "quat")
    if quat.shape[-1] != 4:
        raise InputError(f"quat must have shape (..., 4) in (w, x, y, z) order, got {tuple(quat.shape)}.")
    q = quat / quat.norm(p=2, dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    w2, x2, y2, z2 = w * w, x * x, y * y, z * z
    wx, wy, wz = w * x, w * y, w * z
    xy, xz, yz = x * y, x * z, y * z
    rows = [
        w2 + x2 - y2 - z2, 2 * xy - 2 * wz, 2 * wy + 2 * xz,
        2 * wz + 2 * xy, w2 - x2 + y2 - z2, 2 * yz - 2 * wx,
        2 * xz - 2 * wy, 2 * wx + 2 * yz, w2 - x2 - y2 + z2,
    ]
    return torch.stack(rows, dim=-1).reshape(*quat.shape[:-1], 3, 3)


def axis_angle_to_rotmat(aa: Tensor) -> Tensor:
    """Axis-angle to rotation matrix through a unit quaternion (the SPIN/HMR ``batch_rodrigues``).

    The angle is the norm of ``aa + 1e-8`` (each component shifted by 1e-8), as in the released code, so a
    zero vector gives the identity without a division by zero.

    Args:
        aa: (..., 3) axis * angle in radians; e.g. (B, 72) must be reshaped to (B, 24, 3) first.
    Returns:
        (..., 3, 3).
    """
    aa = _check_tensor(aa, "axis_angle")
    if aa.shape[-1] != 3:
        raise InputError(
            f"axis_angle must have shape (..., 3), got {tuple(aa.shape)}; "
            "reshape (B, 72) poses to (B, 24, 3)."
        )
    angle = torch.norm(aa + 1e-8, p=2, dim=-1, keepdim=True)
    axis = aa / angle
    half = angle * 0.5
    quat = torch.cat([torch.cos(half), torch.sin(half) * axis], dim=-1)
    return quaternion_to_rotmat(quat)


def rotmat_to_quaternion(rotmat: Tensor) -> Tensor:
    """Rotation matrix to unit quaternion (w, x, y, z) with w >= 0, stable for every angle.

    Four candidate quaternions are formed, each dividing by a different diagonal combination
    (Shepperd's method); the one with the largest (best conditioned) denominator is kept.

    Args:
        rotmat: (..., 3, 3) proper rotation matrices.
    Returns:
        (..., 4).
    """
    rotmat = _check_tensor(rotmat, "rotmat")
    if rotmat.shape[-2:] != (3, 3):
        raise InputError(f"rotmat must have shape (..., 3, 3), got {tuple(rotmat.shape)}.")
    m = rotmat
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # 4*w^2, 4*x^2, 4*y^2, 4*z^2
    sq = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1
    )
    q_abs = torch.sqrt(sq.clamp_min(0.0))  # 2|w|, 2|x|, 2|y|, 2|z|
    cand = torch.stack(
        [
            torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], dim=-1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1),
        ],
        dim=-2,
    )  # (..., 4 candidates, 4)
    # The chosen denominator is >= 1 for any rotation; the clamp only protects the unused candidates.
    cand = cand / (2.0 * q_abs.clamp_min(0.1)).unsqueeze(-1)
    best = q_abs.argmax(dim=-1)
    idx = best[..., None, None].expand(*best.shape, 1, 4)
    quat = torch.gather(cand, -2, idx).squeeze(-2)
    quat = quat / quat.norm(dim=-1, keepdim=True)
    return torch.where(quat[..., :1] < 0, -quat, quat)


def rotmat_to_axis_angle(rotmat: Tensor) -> Tensor:
    """Rotation matrix to axis-angle, accurate near angle 0 and near pi.

    Args:
        rotmat: (..., 3, 3) proper rotation matrices, e.g. (B, 24, 3, 3).
    Returns:
        (..., 3) axis * angle with angle in [0, pi].
    """
    quat = rotmat_to_quaternion(rotmat)
    w = quat[..., :1]
    v = quat[..., 1:]
    s = v.norm(dim=-1, keepdim=True)
    angle = 2.0 * torch.atan2(s, w)
    small = s < 1e-6
    # For tiny angles angle/s -> 2/w (w ~ 1); the where keeps both branches finite.
    factor = torch.where(small, 2.0 / w.clamp_min(0.5), angle / torch.where(small, torch.ones_like(s), s))
    return v * factor
