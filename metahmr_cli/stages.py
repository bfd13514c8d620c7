"""The estimator's people stages, chosen by the settings: the person detector and the 2D keypoint backend.

Before anything loads, :func:`check_detector_files` and :func:`check_keypoint_model` resolve the model files the
chosen detector and keypoint backend need (so that every missing file is reported at once); at set-up,
:func:`build_detector` and :func:`build_keypoint_stage` load them. A keypoint backend is wrapped into the estimator's
:class:`KeypointStage` by :class:`EstimatorStage` (its keypoints mapped onto the 49 slots).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from metahmr_cli.detect import YoloDetector, resolve_yolo_model
from metahmr_cli.detect.mediapipe_person import MediaPipePersonDetector
from metahmr_cli.keypoints import build_keypoint_estimator, to_49
from metahmr_cli.keypoints.movenet import MoveNetDetector, resolve_model_json
from metahmr_cli.keypoints.people import CenterNetPersons, PeopleFinder, resolve_centernet_json, resolve_thunder_json
from metahmr_cli.keypoints.rtmpose import resolve_rtmpose_model
from metahmr_cli.keypoints.ultralytics_pose import DEFAULT_POSE_MODEL
from metahmr_cli.process_config import ProcessConfig

__all__ = [
    "CENTERNET_DETECTOR",
    "FINDER_DETECTOR",
    "MEDIAPIPE_DETECTOR",
    "MOVENET_DETECTOR",
    "EstimatorStage",
    "KeypointStage",
    "build_detector",
    "build_keypoint_stage",
    "check_detector_files",
    "check_keypoint_model",
]

MEDIAPIPE_DETECTOR = "mediapipe"
MOVENET_DETECTOR = "movenet"
FINDER_DETECTOR = "finder"
CENTERNET_DETECTOR = "centernet"


class KeypointStage(Protocol):
    """2D keypoints of the people in one image: (N, 49, 3) full-image pixels + confidence (0 = missing)."""

    def __call__(self, image: np.ndarray, boxes: np.ndarray, *, path: Path, frame: int | None) -> np.ndarray: ...


class EstimatorStage:
    """Adapts a :class:`~metahmr_cli.keypoints.KeypointEstimator` to the pipeline: its keypoints mapped onto
    the 49-joint convention (both the OpenPose and the ground-truth slots)."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def __call__(self, image: np.ndarray, boxes: np.ndarray, *, path: Path, frame: int | None) -> np.ndarray:
        kp = np.asarray(self.estimator.estimate(image, boxes), np.float32)
        return to_49(kp.reshape(len(boxes), -1, kp.shape[-1] if kp.ndim == 3 else 3), self.estimator.format)


def check_keypoint_model(backend: str, model: str | None, weights: Path | None) -> None:
    """Raise AssetNotFoundError when the model file of a keypoint backend is missing (without loading it)."""
    if backend == "rtmpose":
        resolve_rtmpose_model(model or "rtmpose-m", weights=weights)
    elif backend == "yolo-pose":
        resolve_yolo_model(model or DEFAULT_POSE_MODEL, subdir=("keypoints", "detectors"), weights=weights)
    elif backend == "movenet":
        resolve_model_json(model, weights=weights)
    elif backend == "movenet-thunder":
        resolve_thunder_json(model, weights=weights)


def check_detector_files(cfg: ProcessConfig, attempt: Callable[[Callable[[], Any]], Any]) -> None:
    """Resolve the model files of the detector ``cfg.detector`` (without loading them), each through
    ``attempt(resolve)``, which collects what is missing."""
    if cfg.detector == MOVENET_DETECTOR:
        attempt(lambda: resolve_model_json(weights=cfg.weights))
    elif cfg.detector in (FINDER_DETECTOR, CENTERNET_DETECTOR):
        if cfg.detector == CENTERNET_DETECTOR or cfg.people.boxes == "centernet":
            attempt(lambda: resolve_centernet_json(weights=cfg.weights))
        if cfg.detector == FINDER_DETECTOR:
            attempt(lambda: resolve_thunder_json(weights=cfg.weights))
            if cfg.people.sizes:
                attempt(lambda: resolve_model_json(weights=cfg.weights))
    elif cfg.detector != MEDIAPIPE_DETECTOR:
        attempt(lambda: resolve_yolo_model(cfg.detector, weights=cfg.weights))


def build_detector(cfg: ProcessConfig, device: str) -> Any:
    """Load the person detector ``cfg.detector`` (with its thresholds) on ``device``."""
    if cfg.detector == MEDIAPIPE_DETECTOR:
        return MediaPipePersonDetector(conf=cfg.det_conf, min_box_size=cfg.min_box)
    if cfg.detector == MOVENET_DETECTOR:
        return MoveNetDetector(device=device, weights=cfg.weights, conf=cfg.det_conf, min_box_size=cfg.min_box)
    if cfg.detector == FINDER_DETECTOR:
        return PeopleFinder(cfg.people, conf=cfg.det_conf, min_box_size=cfg.min_box, device=device,
                            weights=cfg.weights)
    if cfg.detector == CENTERNET_DETECTOR:
        return CenterNetPersons(device=device, weights=cfg.weights, conf=cfg.det_conf, tile=cfg.people.tile,
                                tile_overlap=cfg.people.tile_overlap, nms_iou=cfg.det_iou, min_box_size=cfg.min_box)
    return YoloDetector(cfg.detector, conf=cfg.det_conf, iou=cfg.det_iou, max_people=cfg.max_people,
                        min_box_size=cfg.min_box, device=device, weights=cfg.weights)


def build_keypoint_stage(cfg: ProcessConfig, device: str) -> EstimatorStage:
    """Load the keypoint backend ``cfg.keypoints`` (its model ``cfg.keypoints_model``) on ``device``."""
    options = {"crop_expand": cfg.people.crop_expand} if cfg.keypoints == "movenet-thunder" else {}
    estimator = build_keypoint_estimator(cfg.keypoints, cfg.keypoints_model, device=device, weights=cfg.weights,
                                         **options)
    return EstimatorStage(estimator)
