"""Keypoints from an ultralytics pose model (``yolo11m-pose.pt``; COCO-17).

The model runs on the whole image (it finds people itself); its people are then matched to the given
boxes one-to-one by box IoU, so the output rows follow the caller's boxes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from metahmr_cli.detect.base import box_iou
from metahmr_cli.detect.yolo import _import_yolo, _to_numpy, resolve_yolo_model
from metahmr_cli.errors import MetaHMRError
from metahmr_cli.keypoints.base import assign_by_iou, check_boxes
from metahmr_cli.keypoints.formats import format_for_count

DEFAULT_POSE_MODEL = "yolo11m-pose.pt"


class UltralyticsPoseEstimator:
    """Ultralytics YOLO pose model as a keypoint estimator.

    Args:
        model: weight path, a file name in the weights folder ``keypoints/`` (or ``detectors/``), or a
            ``*-pose.yaml`` config (random weights, tests only).
        conf: minimum score of a pose detection.
        iou: NMS IoU threshold.
        match_iou: minimum IoU between a pose box and a given box to assign it.
        device, imgsz, half: as for :class:`~metahmr_cli.detect.yolo.YoloDetector`.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_POSE_MODEL,
        *,
        conf: float = 0.25,
        iou: float = 0.45,
        match_iou: float = 0.3,
        device: str | None = "cpu",
        imgsz: int = 640,
        half: bool = False,
        weights: str | os.PathLike[str] | None = None,
    ) -> None:
        spec = resolve_yolo_model(model, subdir=("keypoints", "detectors"), weights=weights)
        YOLO = _import_yolo()
        self.model = YOLO(spec)
        if getattr(self.model, "task", "pose") != "pose":
            raise MetaHMRError(f"{spec} is a YOLO '{self.model.task}' model; a pose model (*-pose.pt) is needed.")
        kpt_shape = None
        inner = getattr(self.model, "model", None)
        if inner is not None and hasattr(inner, "yaml"):
            kpt_shape = inner.yaml.get("kpt_shape")
        self.num_keypoints = int(kpt_shape[0]) if kpt_shape else 17
        self.format = format_for_count(self.num_keypoints)
        self.conf, self.iou, self.match_iou = float(conf), float(iou), float(match_iou)
        self.device, self.imgsz, self.half = device, int(imgsz), bool(half)
        self.name = Path(spec).name

    def predict_people(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All people the pose model finds: boxes (M, 4) and keypoints (M, K, 3) in full-image pixels."""
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        results = self.model.predict(bgr, conf=self.conf, iou=self.iou, device=self.device, imgsz=self.imgsz,
                                     verbose=False, **({"half": True} if self.half else {}))
        k = self.num_keypoints
        if not results or results[0].keypoints is None or results[0].boxes is None:
            return np.zeros((0, 4), np.float32), np.zeros((0, k, 3), np.float32)
        boxes = _to_numpy(results[0].boxes.xyxy).reshape(-1, 4).astype(np.float32)
        data = _to_numpy(results[0].keypoints.data).astype(np.float32)
        if data.ndim != 3 or data.shape[0] == 0:
            return np.zeros((0, 4), np.float32), np.zeros((0, k, 3), np.float32)
        if data.shape[2] == 2:  # a model without visibility: positions only
            data = np.concatenate([data, np.ones(data.shape[:2] + (1,), np.float32)], axis=2)
        return boxes, np.clip(data, [-np.inf, -np.inf, 0.0], [np.inf, np.inf, 1.0]).astype(np.float32)

    def estimate(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(N, K, 3) keypoints for boxes (N, 4); boxes without a matching pose get confidence 0."""
        boxes = check_boxes(boxes)
        out = np.zeros((len(boxes), self.num_keypoints, 3), np.float32)
        if len(boxes) == 0:
            return out
        pose_boxes, kps = self.predict_people(image)
        if len(pose_boxes) == 0:
            return out
        for r, c in assign_by_iou(box_iou(boxes, pose_boxes), self.match_iou):
            out[r] = kps[c]
        return out
