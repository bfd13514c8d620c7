"""Person detection: the :class:`Detector` protocol, the ultralytics YOLO adapter and imported boxes.

``MoveNetDetector`` / ``MOVENET_DETECTOR`` (MoveNet MultiPose, ``--detector movenet``) live in
:mod:`metahmr_cli.keypoints.movenet` (the same network gives the keypoints) and are loaded on first access.
"""

from metahmr_cli.detect.base import Detections, Detector, box_iou, filter_detections
from metahmr_cli.detect.boxes_json import ImportedBoxes, candidate_keys, load_boxes_json, lookup_key
from metahmr_cli.detect.mediapipe_person import MEDIAPIPE_DETECTOR, MediaPipePersonDetector
from metahmr_cli.detect.weights import resolve_model_file
from metahmr_cli.detect.yolo import (
    DEFAULT_DETECTOR,
    YoloDetector,
    resolve_yolo_model,
    set_ultralytics_offline,
)

__all__ = [
    "DEFAULT_DETECTOR",
    "Detections",
    "Detector",
    "ImportedBoxes",
    "MEDIAPIPE_DETECTOR",
    "MOVENET_DETECTOR",
    "MediaPipePersonDetector",
    "MoveNetDetector",
    "YoloDetector",
    "box_iou",
    "candidate_keys",
    "filter_detections",
    "load_boxes_json",
    "lookup_key",
    "resolve_model_file",
    "resolve_yolo_model",
    "set_ultralytics_offline",
]


def __getattr__(name: str):
    # Imported on demand: metahmr_cli.keypoints imports metahmr_cli.detect.base, so an eager import would be circular.
    if name in ("MOVENET_DETECTOR", "MoveNetDetector"):
        from metahmr_cli.keypoints import movenet

        return getattr(movenet, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
