"""A person detector that needs no download: MediaPipe's bundled BlazePose detector + landmark model.

MediaPipe Pose finds at most ONE person per image, so this detector suits single-person photos and demos;
use a YOLO model (``--detector yolo11m.pt``) for crowds. The box is the extent of the landmarks MediaPipe
considers visible, enlarged by ``pad`` on every side (landmarks sit inside the body outline: the top of the
head and the soles lie beyond the eye and heel landmarks), and the score is their mean visibility.
"""

from __future__ import annotations

import numpy as np

from metahmr_cli.detect.base import Detections, filter_detections
from metahmr_cli.errors import MetaHMRError
from metahmr_cli.native_logs import native_stderr_silenced, quiet_native_logs

MEDIAPIPE_DETECTOR = "mediapipe"


class MediaPipePersonDetector:
    """Single-person detection with MediaPipe Pose (offline; the model ships inside the ``mediapipe`` wheel).

    Args:
        conf: minimum mean visibility of the landmarks for the person to count.
        min_visibility: landmarks below this visibility do not shape the box.
        pad: relative enlargement of the landmark extent on every side.
        min_box_size: boxes with a shorter side (pixels) are dropped.
    """

    def __init__(self, *, conf: float = 0.5, min_visibility: float = 0.5, pad: float = 0.1,
                 min_box_size: float = 16.0) -> None:
        try:

            quiet_native_logs()
            import mediapipe as mp
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise MetaHMRError("--detector mediapipe needs mediapipe: pip install 'metahmr[keypoints]'") from exc
        with native_stderr_silenced():
            self._pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1,
                                                enable_segmentation=False, min_detection_confidence=0.5)
        self.conf = float(conf)
        self.min_visibility = float(min_visibility)
        self.pad = float(pad)
        self.min_box_size = float(min_box_size)

    def close(self) -> None:
        """Release MediaPipe's graph."""
        self._pose.close()

    def detect(self, image: np.ndarray) -> Detections:
        """Person boxes (0 or 1) for an RGB uint8 image (H, W, 3)."""
        h, w = image.shape[:2]
        with native_stderr_silenced():
            result = self._pose.process(np.ascontiguousarray(image))
        if result.pose_landmarks is None:
            return Detections.empty()
        lms = np.array([(lm.x * w, lm.y * h, lm.visibility) for lm in result.pose_landmarks.landmark],
                       dtype=np.float32)
        seen = lms[lms[:, 2] >= self.min_visibility]
        if len(seen) < 2:
            return Detections.empty()
        x1, y1 = seen[:, :2].min(axis=0)
        x2, y2 = seen[:, :2].max(axis=0)
        px, py = self.pad * (x2 - x1), self.pad * (y2 - y1)
        box = np.array([[x1 - px, y1 - py, x2 + px, y2 + py]], dtype=np.float32)
        score = np.array([float(seen[:, 2].mean())], dtype=np.float32)
        return filter_detections(Detections(box, score), min_score=self.conf, min_box_size=self.min_box_size,
                                 image_size=(w, h))
