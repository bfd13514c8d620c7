"""The keypoint estimator protocol and helpers to pair keypoints with person boxes."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from metahmr_cli.detect.base import box_iou


@runtime_checkable
class KeypointEstimator(Protocol):
    """Top-down 2D keypoints for given people.

    Attributes:
        format: keypoint format of the output (a key of
            :data:`metahmr_cli.keypoints.formats.KEYPOINT_FORMATS`, e.g. ``"coco17"``).
    """

    format: str

    def estimate(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Keypoints of each person.

        Args:
            image: (H, W, 3) uint8 RGB.
            boxes: (N, 4) float ``[x1, y1, x2, y2]`` full-image pixels.

        Returns:
            (N, K, 3) float32 ``[x, y, confidence]``, full-image pixels, confidence in [0, 1]; a person
            without an estimate has confidence 0 everywhere.
        """
        ...


def check_boxes(boxes: np.ndarray) -> np.ndarray:
    """Validate boxes: returns (N, 4) float64, raises ValueError for another shape."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4) [x1, y1, x2, y2], got {np.shape(boxes)}")
    return arr


def boxes_from_keypoints(
    kp: np.ndarray, *, min_conf: float = 0.05, min_points: int = 2, pad: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Tight boxes around the confident keypoints of each person.

    Args:
        kp: (N, K, 3) keypoints with confidences.
        min_conf: keypoints with a lower confidence are ignored.
        min_points: a person needs at least this many confident keypoints for a box.
        pad: relative padding added on each side (0.1 = 10 % of the width/height).

    Returns:
        boxes (N, 4) float32 xyxy (zeros where invalid) and valid (N,) bool (enough points and a
        positive width and height). Crops for the regressor add their own margin
        (:func:`metahmr_cli.geometry.crop.box_from_keypoints` uses 1.2).
    """
    kp = np.asarray(kp, dtype=np.float64)
    if kp.ndim != 3 or kp.shape[2] < 3:
        raise ValueError(f"keypoints must have shape (N, K, 3), got {kp.shape}")
    n = kp.shape[0]
    boxes = np.zeros((n, 4), np.float64)
    valid = np.zeros(n, bool)
    for i in range(n):
        good = (kp[i, :, 2] >= min_conf) & np.isfinite(kp[i, :, :2]).all(axis=1) & (kp[i, :, 2] > 0)
        if good.sum() < max(min_points, 1):
            continue
        pts = kp[i, good, :2]
        x1, y1 = pts.min(axis=0)
        x2, y2 = pts.max(axis=0)
        w, h = x2 - x1, y2 - y1
        if w <= 0 or h <= 0:
            continue
        boxes[i] = [x1 - pad * w, y1 - pad * h, x2 + pad * w, y2 + pad * h]
        valid[i] = True
    return boxes.astype(np.float32), valid


def assign_by_iou(iou: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """One-to-one (row, column) pairs maximising the total IoU (Hungarian), keeping those with IoU >= ``min_iou``.

    Args:
        iou: (N, M) IoU between N boxes and M candidates (e.g. from :func:`~metahmr_cli.detect.base.box_iou`).
        min_iou: lowest IoU of a kept pair.
    """
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(-iou)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= min_iou]


def match_keypoints_to_boxes(
    kp: np.ndarray, boxes: np.ndarray, *, min_iou: float = 0.1, min_conf: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Assign each box the person whose keypoint extent overlaps it most (one-to-one, Hungarian on IoU).

    Args:
        kp: (M, K, 3) keypoints of M people (e.g. imported, or from a bottom-up model).
        boxes: (N, 4) xyxy person boxes.
        min_iou: pairs with a lower IoU between the box and the keypoints' extent are not matched.
        min_conf: keypoints with a lower confidence do not count for the extent.

    Returns:
        matched (N, K, 3) float32 (all zero for an unmatched box) and index (N,) int64 into ``kp``
        (-1 when unmatched).
    """
    kp = np.asarray(kp, dtype=np.float32)
    boxes = check_boxes(boxes)
    n = boxes.shape[0]
    k = kp.shape[1] if kp.ndim == 3 else 0
    matched = np.zeros((n, k, 3), np.float32)
    index = np.full(n, -1, np.int64)
    if n == 0 or kp.ndim != 3 or kp.shape[0] == 0:
        return matched, index
    extents, valid = boxes_from_keypoints(kp, min_conf=min_conf)
    iou = box_iou(boxes, extents)
    iou[:, ~valid] = 0.0
    for r, c in assign_by_iou(iou, min_iou):
        if iou[r, c] > 0:
            matched[r] = kp[c, :, :3]
            index[r] = c
    return matched, index

