"""Which way a body faces the camera, from its 3D joints: the measure behind "facing toward / away / side".

The torso's forward direction is the normal of the plane through the shoulders and hips: with ``left`` the
subject's right-to-left direction (shoulders and hips together) and ``up`` from the hips' midpoint to the
shoulders' midpoint, ``forward = left x up`` (in SMPL's rest frame x = the subject's left, y = up and z = forward,
and x x y = z; a cross product of a rotated pair is the rotated cross product, so the same formula holds in any
right-handed frame, the camera's included). The facing angle is the angle between that forward direction and the
direction from the torso to the camera, both taken in the plane perpendicular to the torso's own up axis: the
turn a person would make about their own vertical axis to face the camera. Measuring it about the body's own
axis rather than in 3D keeps a person who walks toward a camera mounted high up (a surveillance view, the line
of sight 30-60 degrees below the horizon) "toward", as anyone labelling the picture would call them.

Signed: 0 = facing the camera, +90 = facing image right (the person's front turned toward the camera's +x
side), -90 = facing image left, +-180 = back to the camera. A horizontally mirrored picture of the same person
has the opposite angle.

Classes (:func:`facing_class`): ``toward`` below 60 degrees, ``away`` above 120, ``side`` between, with the side
named by the image direction the person faces (``side-left`` / ``side-right``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from metahmr_cli.body.joints import JOINT_NAMES
from metahmr_cli.errors import InputError

__all__ = ["FACING_CLASSES", "FACING_SIDE_LIMITS", "facing_angle", "facing_class", "facing_matches", "torso_frame"]

FacingClass = Literal["toward", "away", "side-left", "side-right"]
FACING_CLASSES: tuple[str, ...] = ("toward", "away", "side-left", "side-right")
FACING_SIDE_LIMITS: tuple[float, float] = (60.0, 120.0)
"""|facing angle| below the first limit (degrees) is ``toward``, above the second ``away``, between them a side."""

_TORSO = ("OP LShoulder", "OP RShoulder", "OP LHip", "OP RHip")
"""The body's kinematic shoulder and hip joints (SMPL joints 16, 17, 1, 2) among the 49 output joints."""


def torso_frame(joints3d: np.ndarray, joint_names: list[str] | tuple[str, ...] | np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre, up and forward directions of each torso (see the module docstring).

    Args:
        joints3d: (..., J, 3) joints, e.g. the ``joints3d`` (P, 49, 3) of a result file.
        joint_names: names of the J joints (a result file's ``joint_names``); None: the 49 output joints.

    Returns:
        centre (..., 3): mean of the shoulders and hips; up (..., 3): unit vector from the hips' midpoint to the
        shoulders' midpoint; forward (..., 3): unit torso normal, perpendicular to ``up`` (NaN where degenerate).
    """
    j = np.asarray(joints3d, dtype=np.float64)
    names = list(JOINT_NAMES if joint_names is None else [str(n) for n in joint_names])
    if j.ndim < 2 or j.shape[-1] != 3 or j.shape[-2] != len(names):
        raise InputError(f"facing needs joints of shape (..., {len(names)}, 3) matching joint_names, got {j.shape}.")
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in _TORSO if n not in index]
    if missing:
        raise InputError(f"facing needs the joints {', '.join(missing)}; the given names lack them.")
    ls, rs, lh, rh = (j[..., index[n], :] for n in _TORSO)
    left = (ls - rs) + (lh - rh)
    with np.errstate(invalid="ignore", divide="ignore"):
        up = 0.5 * (ls + rs) - 0.5 * (lh + rh)
        up = up / np.linalg.norm(up, axis=-1, keepdims=True)
        forward = np.cross(left - (left * up).sum(-1, keepdims=True) * up, up)
        forward = forward / np.linalg.norm(forward, axis=-1, keepdims=True)
    return 0.25 * (ls + rs + lh + rh), up, forward


def facing_angle(joints3d: np.ndarray, joint_names: list[str] | tuple[str, ...] | np.ndarray | None = None,
                 camera: np.ndarray | None = None) -> np.ndarray:
    """Signed facing angle in degrees of each body relative to the camera (see the module docstring).

    Args:
        joints3d: (..., J, 3) joints in camera coordinates (OpenCV axes: x right, y down, z forward; metres),
            e.g. the ``joints3d`` (P, 49, 3) of a result file.
        joint_names: names of the J joints (a result file's ``joint_names``); None: the 49 output joints.
        camera: (3,) camera centre in the same coordinates (default: the origin).

    Returns:
        (...,) angles in [-180, 180]: 0 = facing the camera, +90 = facing image right, -90 = image left,
        +-180 = back to the camera. NaN where the torso is degenerate (non-finite or collapsed joints).
    """
    centre, up, forward = torso_frame(joints3d, joint_names)
    cam = np.zeros(3) if camera is None else np.asarray(camera, dtype=np.float64).reshape(3)
    to_camera = cam - centre
    to_camera = to_camera - (to_camera * up).sum(-1, keepdims=True) * up
    # image right at the person, perpendicular to both the body axis and the line of sight: up x to_camera
    # (for a person straight ahead, up = -y and to_camera = -z give +x)
    right = np.cross(up, to_camera)
    with np.errstate(invalid="ignore", divide="ignore"):
        angle = np.degrees(np.arctan2((forward * right).sum(-1) / np.linalg.norm(right, axis=-1),
                                      (forward * to_camera).sum(-1) / np.linalg.norm(to_camera, axis=-1)))
    return np.where(np.isfinite(angle), angle, np.nan)


def facing_class(angle: float) -> FacingClass | None:
    """``toward`` / ``away`` / ``side-left`` / ``side-right`` for a facing angle in degrees (None for NaN)."""
    value = float(angle)
    if not np.isfinite(value):
        return None
    lo, hi = FACING_SIDE_LIMITS
    if abs(value) < lo:
        return "toward"
    if abs(value) > hi:
        return "away"
    return "side-right" if value > 0 else "side-left"


def facing_matches(label: str, angle: float) -> bool:
    """Whether a facing ``label`` (one of :data:`FACING_CLASSES`, or ``side``: either side) fits ``angle``."""
    if label not in (*FACING_CLASSES, "side"):
        raise InputError(f"facing label {label!r}; use one of {', '.join(FACING_CLASSES)} or side.")
    got = facing_class(angle)
    if got is None:
        return False
    if label == "side":
        return got.startswith("side")
    return got == label

