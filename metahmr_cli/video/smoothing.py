"""Causal temporal filters for per-track video outputs: the One-Euro filter on vectors and on rotations.

The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) is a first-order low-pass filter whose cut-off
frequency rises with the signal's speed: slow motion is smoothed strongly (no jitter), fast motion lightly (little
lag). With time step ``dt``, speed estimate ``dx``::

    alpha(fc) = 1 / (1 + 1 / (2 pi fc dt))
    dx_hat    = dx_hat + alpha(d_cutoff) (dx - dx_hat)
    fc        = min_cutoff + beta |dx_hat|
    x_hat     = x_hat + alpha(fc) (x - x_hat)

:class:`RotationOneEuro` runs the same filter on SO(3): the step towards a new rotation is taken along the geodesic,
``R_hat <- R_hat exp(alpha log(R_hat^T R))``, so the output is always a rotation and the speed is an angular speed
(rad/s). Translations and keypoints use :class:`OneEuro` per coordinate. Both are causal (frame t only sees frames
<= t), so a video's frames can be written as soon as they are done.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["OneEuro", "RotationOneEuro", "SmoothingSettings", "so3_exp", "so3_log"]


@dataclass(frozen=True)
class SmoothingSettings:
    """One-Euro parameters of one signal kind.

    Attributes:
        min_cutoff: cut-off frequency (Hz) at rest; lower = smoother and more lag.
        beta: how fast the cut-off rises with speed (per unit of speed: m/s, rad/s or px/s).
        d_cutoff: cut-off frequency (Hz) of the speed estimate.
    """

    min_cutoff: float
    beta: float
    d_cutoff: float = 1.0


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, np.float64))
    return 1.0 / (1.0 + tau / dt)


class OneEuro:
    """One-Euro filter on an array signal (any shape), element by element."""

    def __init__(self, settings: SmoothingSettings) -> None:
        self.s = settings
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None

    def reset(self) -> None:
        self.x = self.dx = None

    def seed(self, value: np.ndarray, previous: np.ndarray | None = None, dt: float = 1.0) -> None:
        """Start from a known filtered value (and speed from the value before it), e.g. after resuming."""
        self.x = np.asarray(value, np.float64).copy()
        self.dx = np.zeros_like(self.x) if previous is None else (self.x - np.asarray(previous, np.float64)) / dt

    def __call__(self, value: np.ndarray, dt: float) -> np.ndarray:
        v = np.asarray(value, np.float64)
        if dt <= 0:
            raise ValueError(f"dt must be > 0, got {dt}")
        if self.x is None or self.dx is None or self.x.shape != v.shape:
            self.x, self.dx = v.copy(), np.zeros_like(v)
            return v.copy()
        dx = (v - self.x) / dt
        self.dx = self.dx + _alpha(self.s.d_cutoff, dt) * (dx - self.dx)
        cutoff = self.s.min_cutoff + self.s.beta * np.abs(self.dx)
        self.x = self.x + _alpha(cutoff, dt) * (v - self.x)
        return self.x.copy()


def so3_log(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotations -> (..., 3) rotation vectors (angle in [0, pi])."""
    R = np.asarray(R, np.float64)
    cos = np.clip((np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos)
    w = np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], axis=-1)
    sin = np.sin(angle)
    small = angle < 1e-6
    near_pi = angle > math.pi - 1e-4
    scale = np.where(small, 0.5 + angle**2 / 12.0, angle / (2.0 * np.where(small, 1.0, sin) + 1e-300))
    out = w * scale[..., None]
    if np.any(near_pi):
        # w vanishes at pi: the axis is the column of R + I with the largest norm
        B = (R[near_pi] + np.eye(3)) / 2.0
        cols = np.argmax(np.linalg.norm(B, axis=-2), axis=-1)
        axis = np.take_along_axis(B, cols[:, None, None].repeat(3, axis=1), axis=2)[..., 0]
        axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
        out[near_pi] = axis * angle[near_pi][:, None]
    return out


def so3_exp(w: np.ndarray) -> np.ndarray:
    """(..., 3) rotation vectors -> (..., 3, 3) rotations (Rodrigues)."""
    w = np.asarray(w, np.float64)
    angle = np.linalg.norm(w, axis=-1)
    small = angle < 1e-8
    a = np.where(small, 1.0, angle)
    k = w / a[..., None]
    K = np.zeros((*w.shape[:-1], 3, 3))
    K[..., 0, 1], K[..., 0, 2] = -k[..., 2], k[..., 1]
    K[..., 1, 0], K[..., 1, 2] = k[..., 2], -k[..., 0]
    K[..., 2, 0], K[..., 2, 1] = -k[..., 1], k[..., 0]
    s = np.where(small, 0.0, np.sin(angle))[..., None, None]
    c = np.where(small, 0.0, 1.0 - np.cos(angle))[..., None, None]
    return np.eye(3) + s * K + c * (K @ K)


class RotationOneEuro:
    """One-Euro filter on (..., 3, 3) rotation matrices, each rotation filtered on its own along geodesics.

    The speed estimate is the angular velocity vector (rad/s, in the frame of the last output), low-passed like
    One-Euro's derivative; for rotations about one fixed axis this is exactly the scalar filter on the angle."""

    def __init__(self, settings: SmoothingSettings) -> None:
        self.s = settings
        self.R: np.ndarray | None = None
        self.w: np.ndarray | None = None  # smoothed angular velocity (..., 3), rad/s

    def reset(self) -> None:
        self.R = self.w = None

    def seed(self, value: np.ndarray, previous: np.ndarray | None = None, dt: float = 1.0) -> None:
        self.R = np.asarray(value, np.float64).copy()
        if previous is None:
            self.w = np.zeros((*self.R.shape[:-2], 3))
        else:
            self.w = so3_log(np.swapaxes(np.asarray(previous, np.float64), -1, -2) @ self.R) / dt

    def __call__(self, value: np.ndarray, dt: float) -> np.ndarray:
        R = np.asarray(value, np.float64)
        if dt <= 0:
            raise ValueError(f"dt must be > 0, got {dt}")
        if self.R is None or self.w is None or self.R.shape != R.shape:
            self.R, self.w = R.copy(), np.zeros((*R.shape[:-2], 3))
            return R.copy()
        delta = so3_log(np.swapaxes(self.R, -1, -2) @ R)       # the step from the last output, in its frame
        self.w = self.w + _alpha(self.s.d_cutoff, dt) * (delta / dt - self.w)
        cutoff = self.s.min_cutoff + self.s.beta * np.linalg.norm(self.w, axis=-1)
        a = np.asarray(_alpha(cutoff, dt))
        self.R = self.R @ so3_exp(delta * a[..., None])
        return self.R.copy()
