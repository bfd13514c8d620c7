"""Person detections and the detector protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class Detections:
    """People found in one image.

    Attributes:
        xyxy: (N, 4) float32 boxes ``[x1, y1, x2, y2]`` in full-image pixels.
        scores: (N,) float32 detection confidences in [0, 1] (1.0 for imported boxes without a score).
    """

    xyxy: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if len(self.scores) != len(self.xyxy):
            raise ValueError(f"{len(self.xyxy)} boxes but {len(self.scores)} scores")

    def __repr__(self) -> str:
        return f"Detections(n={len(self)}, xyxy={self.xyxy.round(1).tolist()}, scores={self.scores.round(3).tolist()})"

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def empty(cls) -> Detections:
        """No people."""
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))

    def __getitem__(self, idx) -> Detections:
        """Select people with an index, slice, index array or boolean mask."""
        return Detections(self.xyxy[idx].reshape(-1, 4), np.atleast_1d(self.scores[idx]))


@runtime_checkable
class Detector(Protocol):
    """Anything that finds people: ``detect(image (H, W, 3) uint8 RGB) -> Detections``."""

    def detect(self, image: np.ndarray) -> Detections: ...


def filter_detections(
    dets: Detections,
    *,
    min_score: float = 0.0,
    min_box_size: float = 0.0,
    max_people: int | None = None,
    image_size: tuple[int, int] | None = None,
) -> Detections:
    """Clamp, filter and sort detections.

    Args:
        dets: input detections.
        min_score: drop boxes with a lower score.
        min_box_size: drop boxes whose width or height (after clamping) is below this many pixels.
        max_people: keep at most this many boxes (the highest scores).
        image_size: (width, height); boxes are clamped to the image when given.

    Returns:
        Detections sorted by decreasing score (stable for ties).
    """
    xyxy = dets.xyxy.copy()
    scores = dets.scores.copy()
    if image_size is not None:
        w, h = image_size
        xyxy[:, [0, 2]] = np.clip(xyxy[:, [0, 2]], 0, w)
        xyxy[:, [1, 3]] = np.clip(xyxy[:, [1, 3]], 0, h)
    finite = np.isfinite(xyxy).all(axis=1) & np.isfinite(scores)
    size = np.minimum(xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1])
    keep = finite & (scores >= min_score) & (size > 0) & (size >= min_box_size)
    xyxy, scores = xyxy[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")
    if max_people is not None:
        order = order[: max(int(max_people), 0)]
    return Detections(xyxy[order], scores[order])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes a (N, 4) and b (M, 4) in xyxy -> (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
