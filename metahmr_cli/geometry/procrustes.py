"""Similarity (Procrustes) alignment used by PA-MPJPE.

Per sample, after centring both point sets: K = X1 X2^T, SVD K = U S V^T, Z = diag(1, 1, sign det(U V^T)),
R = V Z U^T, scale = tr(R K) / ||X1||^2, t = mu2 - scale R mu1 (the SPIN / Meta-HMR
``compute_similarity_transform``).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError

__all__ = ["similarity_align", "similarity_transform"]

ArrayT = TypeVar("ArrayT", np.ndarray, Tensor)


def _prepare(X: ArrayT, Y: ArrayT) -> tuple[Tensor, Tensor, bool, bool]:
    is_np = isinstance(X, np.ndarray)
    tx = torch.as_tensor(X) if is_np else X
    ty = torch.as_tensor(Y, dtype=tx.dtype, device=tx.device) if isinstance(Y, np.ndarray) else Y
    if not isinstance(tx, Tensor) or not isinstance(ty, Tensor):
        raise InputError("similarity_align needs two numpy arrays or two tensors.")
    if tx.shape != ty.shape or tx.ndim not in (2, 3) or tx.shape[-1] != 3:
        raise InputError(
            f"similarity_align needs X and Y of the same shape (B, N, 3) or (N, 3), got {tuple(tx.shape)} "
            f"and {tuple(ty.shape)}."
        )
    single = tx.ndim == 2
    if single:
        tx, ty = tx[None], ty[None]
    if not tx.is_floating_point():
        tx, ty = tx.double(), ty.double()
    return tx, ty.to(tx.dtype), is_np, single


def _transform(X: Tensor, Y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    mu1 = X.mean(dim=1, keepdim=True)
    mu2 = Y.mean(dim=1, keepdim=True)
    X1 = (X - mu1).transpose(1, 2)  # (B, 3, N)
    X2 = (Y - mu2).transpose(1, 2)
    var1 = (X1**2).sum(dim=(1, 2))
    K = X1 @ X2.transpose(1, 2)  # (B, 3, 3)
    U, _, Vh = torch.linalg.svd(K)
    V = Vh.transpose(1, 2)
    det = torch.linalg.det(U @ Vh)
    sign = torch.where(det < 0, -torch.ones_like(det), torch.ones_like(det))
    Z = torch.eye(3, dtype=X.dtype, device=X.device).repeat(X.shape[0], 1, 1)
    Z[:, 2, 2] = sign
    R = V @ Z @ U.transpose(1, 2)
    scale = torch.diagonal(R @ K, dim1=1, dim2=2).sum(-1) / var1
    t = mu2.transpose(1, 2) - scale[:, None, None] * (R @ mu1.transpose(1, 2))  # (B, 3, 1)
    return scale, R, t[..., 0]


def similarity_transform(X: ArrayT, Y: ArrayT) -> tuple[ArrayT, ArrayT, ArrayT]:
    """Best similarity (scale, rotation, translation) taking X onto Y in the least-squares sense.

    Args:
        X, Y: (B, N, 3) or (N, 3) point sets (numpy or torch, same type).
    Returns:
        scale (B,), R (B, 3, 3), t (B, 3) with Y ~ scale * R @ x + t (leading B dropped for (N, 3) input).
    """
    tx, ty, is_np, single = _prepare(X, Y)
    scale, R, t = _transform(tx, ty)
    if single:
        scale, R, t = scale[0], R[0], t[0]
    if is_np:
        return scale.numpy(), R.numpy(), t.numpy()
    return scale, R, t


def similarity_align(X: ArrayT, Y: ArrayT) -> ArrayT:
    """Align X to Y with the best similarity transform (for PA-MPJPE).

    Args:
        X: (B, N, 3) or (N, 3) predicted points; Y: same shape, target points (numpy or torch).
    Returns:
        X aligned to Y, same shape and type as X.
    """
    tx, ty, is_np, single = _prepare(X, Y)
    scale, R, t = _transform(tx, ty)
    out = scale[:, None, None] * (tx @ R.transpose(1, 2)) + t[:, None, :]
    if single:
        out = out[0]
    return out.numpy() if is_np else out
