"""MediaPipe Pose (BlazePose, 33 landmarks) run on each person box.

``mediapipe`` bundles the detector and the "full" landmark model (``model_complexity=1``), so this backend
works offline with nothing to download. MediaPipe Pose finds one person per image, so it runs on a crop of
each box enlarged by ``margin`` on every side; landmarks are mapped back to full-image pixels and their
``visibility`` is used as confidence.
"""

from __future__ import annotations

import numpy as np

from metahmr_cli.errors import MetaHMRError
from metahmr_cli.keypoints.base import check_boxes
from metahmr_cli.native_logs import native_stderr_silenced, quiet_native_logs

NUM_LANDMARKS = 33


class MediaPipePoseEstimator:
    """MediaPipe Pose per box crop.

    Args:
        margin: relative enlargement of each box side before cropping (0.25 = 25 % of width/height).
        min_detection_confidence: MediaPipe's person detection threshold inside the crop.
        model_complexity: 1 (bundled); 0 and 2 need a download MediaPipe cannot do offline.
    """

    format = "mediapipe33"

    def __init__(self, *, margin: float = 0.25, min_detection_confidence: float = 0.5,
                 model_complexity: int = 1) -> None:
        try:

            quiet_native_logs()
            import mediapipe as mp
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise MetaHMRError("--keypoints mediapipe needs mediapipe: pip install 'metahmr[keypoints]'") from exc
        if model_complexity != 1:
            raise MetaHMRError(
                "mediapipe ships only the model_complexity=1 pose model; complexity 0 and 2 need a download."
            )
        with native_stderr_silenced():
            self._pose = mp.solutions.pose.Pose(
                static_image_mode=True, model_complexity=model_complexity, enable_segmentation=False,
                min_detection_confidence=min_detection_confidence,
            )
        self.margin = float(margin)
        self.name = "mediapipe-pose-full"

    def close(self) -> None:
        """Release MediaPipe's graph."""
        self._pose.close()

    def estimate(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(N, 33, 3) landmarks ``[x, y, visibility]`` in full-image pixels for boxes (N, 4)."""
        boxes = check_boxes(boxes)
        h, w = image.shape[:2]
        out = np.zeros((len(boxes), NUM_LANDMARKS, 3), np.float32)
        for i, (x1, y1, x2, y2) in enumerate(boxes):
            bw, bh = x2 - x1, y2 - y1
            cx1 = int(np.clip(np.floor(x1 - self.margin * bw), 0, w - 1))
            cy1 = int(np.clip(np.floor(y1 - self.margin * bh), 0, h - 1))
            cx2 = int(np.clip(np.ceil(x2 + self.margin * bw), cx1 + 1, w))
            cy2 = int(np.clip(np.ceil(y2 + self.margin * bh), cy1 + 1, h))
            crop = np.ascontiguousarray(image[cy1:cy2, cx1:cx2])
            if crop.shape[0] < 8 or crop.shape[1] < 8:
                continue
            with native_stderr_silenced():
                result = self._pose.process(crop)
            if result.pose_landmarks is None:
                continue
            cw, ch = cx2 - cx1, cy2 - cy1
            for j, lm in enumerate(result.pose_landmarks.landmark):
                out[i, j] = (cx1 + lm.x * cw, cy1 + lm.y * ch, float(np.clip(lm.visibility, 0.0, 1.0)))
        return out
