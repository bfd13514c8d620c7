"""Training augmentation of the SPIN/CLIFF/Meta-HMR datasets: flip, colour noise, rotation, scale.

All functions are pure numpy functions of one sample. The random draws live in
:func:`sample_augmentation`, which takes an explicit ``numpy.random.Generator`` so that a sample's
augmentation is a function of (seed, epoch, index) only (see :func:`item_rng`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..body.joints import J24_FLIP_PERM, J49_FLIP_PERM, SMPL_POSE_FLIP_PERM

__all__ = [
    "AugmentConfig",
    "AugParams",
    "flip_keypoints",
    "flip_joints_3d",
    "flip_pose",
    "item_rng",
    "rotate_joints_3d",
    "rotate_global_orient",
    "rotation_z",
    "sample_augmentation",
]


@dataclass
class AugmentConfig:
    """Augmentation settings (defaults = the released Meta-HMR/SPIN values).

    Attributes:
        enabled: master switch; when False training samples are processed like test samples.
        flip_prob: probability of a horizontal flip.
        noise_factor: per-channel pixel factor drawn from U[1 - noise_factor, 1 + noise_factor].
        rot_factor: standard deviation (degrees) of the in-plane rotation.
        rot_clip_factor: the rotation is clipped to +-rot_clip_factor * rot_factor degrees.
        rot_zero_prob: probability that the rotation is set to 0.
        scale_factor: standard deviation of the box scale factor N(1, scale_factor).
        scale_clip: the scale factor is clipped to [1 - scale_clip, 1 + scale_clip].
        occlusion: paste synthetic occluders (only on datasets flagged with ``occlusion = true``).
        occluders: path of the occluder file (.npy list of RGBA patches, or a folder of RGBA .png).
        occluder_count: occluder count drawn from randint(low, high) (high exclusive).
        occluder_size: relative occluder size drawn from U(low, high), times min(crop W, H) / 256.
    """

    enabled: bool = True
    flip_prob: float = 0.5
    noise_factor: float = 0.4
    rot_factor: float = 30.0
    rot_clip_factor: float = 2.0
    rot_zero_prob: float = 0.6
    scale_factor: float = 0.25
    scale_clip: float = 0.25
    occlusion: bool = False
    occluders: str | None = None
    occluder_count: tuple[int, int] = (1, 8)
    occluder_size: tuple[float, float] = (0.2, 1.0)


@dataclass(frozen=True)
class AugParams:
    """One sample's augmentation draw.

    Attributes:
        flip: horizontal flip.
        pixel_factor: (3,) per-channel colour factors.
        rot_deg: in-plane rotation in degrees (positive = counter-clockwise on screen).
        scale: multiplies the box scale.
    """

    flip: bool = False
    pixel_factor: tuple[float, float, float] = (1.0, 1.0, 1.0)
    rot_deg: float = 0.0
    scale: float = 1.0

    @staticmethod
    def identity() -> AugParams:
        """No augmentation (test-time processing)."""
        return AugParams()


def item_rng(seed: int, epoch: int, index: int, stream: int = 0) -> np.random.Generator:
    """A generator that depends only on (seed, epoch, index, stream).

    Workers, restarts and resumed runs therefore draw the same augmentation for the same sample.
    """
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index), int(stream)])


def sample_augmentation(rng: np.random.Generator, cfg: AugmentConfig) -> AugParams:
    """Draw flip, pixel factors, rotation and scale as the released ``augm_params`` does.

    flip ~ Bernoulli(flip_prob); pixel factor ~ U[1-n, 1+n]^3; rot = clip(N(0, r), +-2r), zeroed with
    probability rot_zero_prob; scale = clip(N(1, s), 1-c, 1+c).
    """
    if not cfg.enabled:
        return AugParams.identity()
    flip = bool(rng.random() < cfg.flip_prob)
    pn = rng.uniform(1.0 - cfg.noise_factor, 1.0 + cfg.noise_factor, size=3)
    lim = cfg.rot_clip_factor * cfg.rot_factor
    rot = float(np.clip(rng.normal(0.0, 1.0) * cfg.rot_factor, -lim, lim))
    if rng.random() < cfg.rot_zero_prob:
        rot = 0.0
    sc = float(np.clip(rng.normal(0.0, 1.0) * cfg.scale_factor + 1.0, 1.0 - cfg.scale_clip, 1.0 + cfg.scale_clip))
    return AugParams(flip=flip, pixel_factor=(float(pn[0]), float(pn[1]), float(pn[2])), rot_deg=rot, scale=sc)


def flip_keypoints(kp: np.ndarray, img_w: int) -> np.ndarray:
    """Mirror 2D keypoints of a horizontally flipped full image.

    Args:
        kp: (49, 3) or (24, 3) [x, y, conf] in full-image pixels.
        img_w: image width W; x -> W - 1 - x.
    Returns:
        same shape, permuted with J49_FLIP_PERM (or J24_FLIP_PERM for 24 joints).
    """
    perm = {49: J49_FLIP_PERM, 24: J24_FLIP_PERM}.get(kp.shape[0])
    if perm is None:
        raise ValueError(f"flip_keypoints expects 49 or 24 keypoints, got shape {kp.shape}")
    out = kp[perm].copy()
    out[:, 0] = img_w - 1.0 - out[:, 0]
    return out


def flip_joints_3d(joints: np.ndarray) -> np.ndarray:
    """Mirror 3D joints (x negated) and swap left/right.

    Args:
        joints: (24, 3) or (24, 4) GT-24 joints (a 4th confidence column is kept).
    Returns:
        same shape.
    """
    out = joints[J24_FLIP_PERM].copy()
    out[:, 0] = -out[:, 0]
    return out


def flip_pose(pose: np.ndarray) -> np.ndarray:
    """Mirror an SMPL pose: swap left/right joints and negate the axis-angle y and z components.

    Args:
        pose: (72,) axis-angle, global orientation first.
    Returns:
        (72,).
    """
    out = pose[SMPL_POSE_FLIP_PERM].copy()
    out[1::3] = -out[1::3]
    out[2::3] = -out[2::3]
    return out


def rotation_z(deg: float) -> np.ndarray:
    """Rz(deg) = [[c, -s, 0], [s, c, 0], [0, 0, 1]] (3, 3) float64."""
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotate_joints_3d(joints: np.ndarray, rot_deg: float) -> np.ndarray:
    """Rotate camera-frame 3D joints by Rz(-rot_deg), matching an image rotated by ``rot_deg``.

    Args:
        joints: (N, 3) or (N, 4) (a 4th confidence column is kept).
    Returns:
        same shape.
    """
    if rot_deg == 0:
        return joints.copy()
    out = joints.copy()
    out[:, :3] = joints[:, :3] @ rotation_z(-rot_deg).T
    return out


def rotate_global_orient(pose: np.ndarray, rot_deg: float) -> np.ndarray:
    """Left-multiply the global orientation (pose[:3], axis-angle) by Rz(-rot_deg).

    Args:
        pose: (72,) axis-angle.
    Returns:
        (72,).
    """
    out = pose.copy()
    if rot_deg == 0:
        return out
    r_glob, _ = cv2.Rodrigues(pose[:3].astype(np.float64).reshape(3, 1))
    aa, _ = cv2.Rodrigues(rotation_z(-rot_deg) @ r_glob)
    out[:3] = aa.reshape(3)
    return out
