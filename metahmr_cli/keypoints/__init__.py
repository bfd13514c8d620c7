"""2D keypoints: the :class:`KeypointEstimator` protocol, backends, imports and the 49-joint mapping.

Backends (:func:`build_keypoint_estimator`):

- ``"rtmpose"``: RTMPose ONNX through rtmlib (path or name in the weights folder ``keypoints/``);
- ``"yolo-pose"``: an ultralytics pose model (``yolo11m-pose.pt``), matched to the boxes by IoU;
- ``"mediapipe"``: MediaPipe Pose bundled with the ``mediapipe`` wheel (offline, 33 landmarks);
- ``"movenet"``: MoveNet MultiPose Lightning run with torch (offline once ``metahmr weights fetch-open`` installed
  it; COCO-17, whole image, matched to the boxes);
- ``"movenet-thunder"``: MoveNet SinglePose Thunder on each box's crop (top-down COCO-17; installed by the same
  command; shares its results with the people finder, :mod:`metahmr_cli.keypoints.people`);
- ``"mmpose"``: an mmpose config + checkpoint, when mmpose is installed.

Imported keypoints (:func:`load_keypoints`): OpenPose BODY_25/COCO-18 JSON folders and COCO-style JSON files.
"""

from __future__ import annotations

import os

from metahmr_cli.keypoints.base import (
    KeypointEstimator,
    boxes_from_keypoints,
    match_keypoints_to_boxes,
)
from metahmr_cli.keypoints.formats import (
    KEYPOINT_FORMATS,
    canonical_format,
    format_for_count,
    mapping_table,
    mapping_table_markdown,
    slot_sources,
    to_49,
)
from metahmr_cli.keypoints.imported import (
    ImportedKeypoints,
    ImportedPeople,
    load_keypoints,
    read_keypoints_json,
    read_openpose_file,
)

BACKENDS = ("rtmpose", "yolo-pose", "mediapipe", "movenet", "movenet-thunder", "mmpose")


def build_keypoint_estimator(
    backend: str,
    model: str | os.PathLike[str] | None = None,
    *,
    device: str = "cpu",
    weights: str | os.PathLike[str] | None = None,
    **options,
) -> KeypointEstimator:
    """Create a keypoint estimator by backend name.

    Args:
        backend: one of :data:`BACKENDS` (``"ultralytics"`` is an alias of ``"yolo-pose"``).
        model: model path or name (``rtmpose``: ONNX, default ``"rtmpose-m"``; ``yolo-pose``: default
            ``"yolo11m-pose.pt"``; ``mediapipe``: unused; ``movenet``: ``movenet-multipose.json`` or its folder,
            default from the weights roots; ``movenet-thunder``: ``movenet-thunder.json`` or its folder, default
            from the weights roots; ``mmpose``: ``"CONFIG.py,CHECKPOINT.pth"``).
        device: ``"cpu"`` or ``"cuda[:i]"``.
        weights: explicit weights root for name lookups.
        options: backend-specific keyword arguments (e.g. ``margin`` for mediapipe, ``conf`` for yolo-pose).

    Raises:
        AssetNotFoundError: a model name/path that is not available locally.
        MetaHMRError: the backend's package is not installed.
        ValueError: an unknown backend.
    """
    name = backend.strip().lower()
    if name in ("rtmpose", "rtmlib"):
        from metahmr_cli.keypoints.rtmpose import RTMPoseEstimator

        cuda = device.startswith("cuda")
        return RTMPoseEstimator(model or "rtmpose-m", device="cuda" if cuda else "cpu", weights=weights, **options)
    if name in ("yolo-pose", "yolo_pose", "ultralytics"):
        from metahmr_cli.keypoints.ultralytics_pose import DEFAULT_POSE_MODEL, UltralyticsPoseEstimator

        return UltralyticsPoseEstimator(model or DEFAULT_POSE_MODEL, device=device, weights=weights, **options)
    if name == "mediapipe":
        from metahmr_cli.keypoints.mediapipe_pose import MediaPipePoseEstimator

        return MediaPipePoseEstimator(**options)
    if name == "movenet":
        from metahmr_cli.keypoints.movenet import MoveNetPoseEstimator

        return MoveNetPoseEstimator(model, device=device, weights=weights, **options)
    if name in ("movenet-thunder", "thunder"):
        from metahmr_cli.keypoints.people import MoveNetTopDown

        return MoveNetTopDown.shared(model, device=device, weights=weights, **options)
    if name == "mmpose":
        from metahmr_cli.keypoints.mmpose_pose import MMPoseEstimator

        if model is None or "," not in os.fspath(model):
            raise ValueError("mmpose needs model='CONFIG.py,CHECKPOINT.pth'")
        config, checkpoint = os.fspath(model).split(",", 1)
        return MMPoseEstimator(config, checkpoint, device=device, **options)
    raise ValueError(f"unknown keypoint backend {backend!r}; choose one of {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "KEYPOINT_FORMATS",
    "ImportedKeypoints",
    "ImportedPeople",
    "KeypointEstimator",
    "boxes_from_keypoints",
    "build_keypoint_estimator",
    "canonical_format",
    "format_for_count",
    "load_keypoints",
    "mapping_table",
    "mapping_table_markdown",
    "match_keypoints_to_boxes",
    "read_keypoints_json",
    "read_openpose_file",
    "slot_sources",
    "to_49",
]
