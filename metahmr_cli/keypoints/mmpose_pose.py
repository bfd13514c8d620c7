"""Optional mmpose top-down backend, used when the user already has mmpose (>= 1.0) installed.

mmpose is not a dependency of metahmr (it needs mmcv built from source); :class:`MMPoseEstimator` raises a
clear :class:`~metahmr_cli.errors.MetaHMRError` when it is missing.
"""

from __future__ import annotations

import os

import numpy as np

from metahmr_cli.errors import AssetNotFoundError, MetaHMRError
from metahmr_cli.keypoints.base import check_boxes
from metahmr_cli.keypoints.formats import format_for_count


def mmpose_available() -> bool:
    """Whether ``mmpose.apis`` imports."""
    try:
        import mmpose.apis  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not usable"
        return False
    return True


class MMPoseEstimator:
    """mmpose top-down model from a config file and a checkpoint file.

    Args:
        config: mmpose model config (``.py``).
        checkpoint: matching ``.pth`` checkpoint (a local file; nothing is downloaded).
        device: torch device string.
    """

    def __init__(self, config: str | os.PathLike[str], checkpoint: str | os.PathLike[str], *,
                 device: str = "cpu") -> None:
        try:
            from mmpose.apis import inference_topdown, init_model
        except Exception as exc:  # noqa: BLE001 - ImportError or a broken mmcv build
            raise MetaHMRError(
                "--keypoints mmpose needs mmpose>=1.0 with mmcv and mmengine, which is not installed here "
                f"({type(exc).__name__}: {exc}). Install it following mmpose's guide, or use "
                "--keypoints rtmpose (the same RTMPose models as ONNX) or --keypoints mediapipe."
            ) from exc
        for p, what in ((config, "config"), (checkpoint, "checkpoint")):
            if not os.path.isfile(os.fspath(p)):
                raise AssetNotFoundError(f"mmpose {what} file {p} does not exist.")
        self._inference = inference_topdown
        self.model = init_model(os.fspath(config), os.fspath(checkpoint), device=device)
        meta = getattr(self.model, "dataset_meta", None) or {}
        self.num_keypoints = int(meta.get("num_keypoints", 17))
        self.format = format_for_count(self.num_keypoints)
        self.name = os.path.basename(os.fspath(checkpoint))

    def estimate(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(N, K, 3) keypoints in full-image pixels for boxes (N, 4); image (H, W, 3) uint8 RGB."""
        boxes = check_boxes(boxes)
        out = np.zeros((len(boxes), self.num_keypoints, 3), np.float32)
        if len(boxes) == 0:
            return out
        bgr = np.ascontiguousarray(image[:, :, ::-1])  # mmpose's inference pipeline loads images as BGR
        results = self._inference(self.model, bgr, bboxes=boxes.astype(np.float32), bbox_format="xyxy")
        for i, res in enumerate(results[: len(boxes)]):
            inst = res.pred_instances
            out[i, :, :2] = np.asarray(inst.keypoints)[0]
            out[i, :, 2] = np.clip(np.asarray(inst.keypoint_scores)[0], 0.0, 1.0)
        return out
