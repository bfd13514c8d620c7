"""Person detection: the :class:`Detector` protocol, the ultralytics YOLO adapter and imported boxes.

The MoveNet detector (``--detector movenet``) and the open people finder (``--detector finder``) live in
:mod:`metahmr_cli.keypoints.movenet` and :mod:`metahmr_cli.keypoints.people`: the same networks give the keypoints.
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
    "MediaPipePersonDetector",
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

