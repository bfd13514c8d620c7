"""Checks of what a caller hands the :class:`~metahmr_cli.estimator.Estimator` (and of what it hands back).

Values given through the API (a focal length, boxes and scores, keypoints) are checked before any model runs, and
a bad one is an :class:`~metahmr_cli.errors.InputError` that names the value and the fix; the people the networks
return are checked to be finite. (The image itself is checked by :func:`metahmr_cli.io.sources.check_image`, the
focal length by :func:`metahmr_cli.geometry.camera.check_focal`.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from metahmr_cli.errors import InputError
from metahmr_cli.geometry.camera import MAX_FOCAL_PER_DIAGONAL, check_focal

__all__ = ["KEYPOINT_MARGIN", "MAX_FOCAL_PER_DIAGONAL", "check_boxes", "check_finite_people", "check_focal",
           "check_keypoints"]

KEYPOINT_MARGIN = 10.0
"""Keypoints (and boxes) may lie at most this many image widths / heights outside the image."""


def _numeric(value: Any, what: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what} must hold numbers, got {type(value).__name__}.") from None
    return arr


def check_boxes(boxes: Any, scores: Any, image_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) float32 boxes x1, y1, x2, y2 and (N,) scores given to the estimator, checked: the shape, finite
    values, x2 > x1 and y2 > y1, within :data:`KEYPOINT_MARGIN` image sizes of the image, scores in [0, 1]."""
    b = _numeric(boxes, "boxes")
    if b.size == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise InputError(f"boxes must be an (N, 4) array of x1, y1, x2, y2 in pixels, got shape {b.shape}; "
                         "one box is [[x1, y1, x2, y2]].")
    H, W = image_hw
    span = np.array([W, H, W, H], np.float64)
    bad = ~np.isfinite(b).all(axis=1)
    bad |= (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
    bad |= (np.abs(b - span / 2) > (KEYPOINT_MARGIN + 0.5) * span).any(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"boxes[{i}] = {b[i].tolist()} cannot be used: a box is x1, y1, x2, y2 in pixels with "
                         f"x2 > x1 and y2 > y1, finite, near the {W}x{H} image.")
    if scores is None:
        s = np.ones(len(b), np.float64)
    else:
        s = _numeric(scores, "scores").reshape(-1) if np.ndim(scores) <= 1 else _numeric(scores, "scores")
        if s.shape != (len(b),):
            raise InputError(f"scores must have one value per box ({len(b)}), got shape {np.shape(scores)}.")
        if not (np.isfinite(s) & (s >= 0) & (s <= 1)).all():
            raise InputError(f"scores must be in [0, 1], got {s.tolist()[:8]}.")
    return b.astype(np.float32), s.astype(np.float32)


def check_keypoints(keypoints: Any, n: int, image_hw: tuple[int, int]) -> np.ndarray:
    """(n, 49, 3) float32 keypoints given to the estimator (px + confidence), checked: the shape, finite values,
    confidences in [0, 1], and confident keypoints within :data:`KEYPOINT_MARGIN` image sizes of the image."""
    kp = _numeric(keypoints, "keypoints")
    if kp.shape != (n, 49, 3):
        raise InputError(f"keypoints must have shape ({n}, 49, 3) for {n} people (x, y in pixels + confidence, "
                         f"in the 49-joint order), got {kp.shape}.")
    if not np.isfinite(kp).all():
        p, j = np.argwhere(~np.isfinite(kp).all(axis=-1))[0]
        raise InputError(f"keypoints[{p}, {j}] = {kp[p, j].tolist()} is not finite; give 0 confidence (and any "
                         "finite x, y) to a missing keypoint.")
    conf = kp[..., 2]
    if ((conf < 0) | (conf > 1)).any():
        p, j = np.argwhere((conf < 0) | (conf > 1))[0]
        raise InputError(f"keypoints[{p}, {j}] has confidence {conf[p, j]!r}; confidences are in [0, 1] "
                         "(0 = missing).")
    H, W = image_hw
    span = np.array([W, H], np.float64)
    far = (np.abs(kp[..., :2] - span / 2) > (KEYPOINT_MARGIN + 0.5) * span).any(axis=-1) & (conf > 0)
    if far.any():
        p, j = np.argwhere(far)[0]
        raise InputError(f"keypoints[{p}, {j}] = {kp[p, j, :2].tolist()} px is far outside the {W}x{H} image (more "
                         f"than {KEYPOINT_MARGIN:g} image sizes away); check the units (pixels of this image).")
    return kp.astype(np.float32)


def check_finite_people(v: dict[str, np.ndarray], source: str) -> None:
    """Never hand out non-finite bodies: a person whose parameters, mesh or joints are NaN/inf is an error."""
    for key in ("global_orient", "body_pose", "betas", "transl", "vertices", "joints3d", "cam_crop"):
        arr = np.asarray(v[key])
        if arr.size and not np.isfinite(arr).all():
            person = int(np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1))[0])
            raise InputError(f"{source}: person {person} got non-finite {key}; the inputs (focal length, boxes, "
                             "keypoints) are probably out of range.")
