"""RTMPose top-down keypoints through rtmlib (ONNX Runtime).

The model is an ONNX file with RTMPose's SimCC outputs (``simcc_x`` (1, K, W*2), ``simcc_y`` (1, K, H*2)).
Give a path, or a name looked up in the weights folder ``keypoints/`` and in rtmlib's own download cache
(``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/rtmlib/hub/checkpoints``). rtmlib would download a
missing model; metahmr never does, it raises :class:`~metahmr_cli.errors.AssetNotFoundError` instead.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path

import numpy as np

from metahmr_cli.detect.weights import resolve_model_file
from metahmr_cli.errors import MetaHMRError
from metahmr_cli.keypoints.base import check_boxes
from metahmr_cli.keypoints.formats import format_for_count

logger = logging.getLogger(__name__)

RTMPOSE_RELEASES: dict[str, str] = {
    "rtmpose-m": "rtmpose-m_simcc-body7_pt-body7_420e-256x192-e48f03d0_20230504",
    "rtmpose-s": "rtmpose-s_simcc-body7_pt-body7_420e-256x192-acd4a1ef_20230504",
    "rtmpose-x": "rtmpose-x_simcc-body7_pt-body7_700e-384x288-71d7b7e9_20230629",
}
"""Short names of the RTMPose body7 ONNX releases (file stems of the openmmlab/rtmlib zips)."""
_ALIASES = {"rtmpose-m": ("rtmpose-m_body7_256x192.onnx",)}

_HOWTO = (
    "rtmlib would download it from download.openmmlab.com, which metahmr never does during a run. Download the "
    "RTMPose ONNX zip (see the rtmlib/mmpose README), unzip it and put the end2end.onnx file, renamed to "
    "<name>.onnx, in the weights folder 'keypoints/', or pass --keypoint-model PATH.onnx. "
    "`--keypoints mediapipe` works offline without any download."
)


def rtmlib_cache_dir() -> Path:
    """Folder where rtmlib keeps downloaded checkpoints."""
    torch_home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "rtmlib"))
    return Path(os.path.expanduser(torch_home)) / "hub" / "checkpoints"


def resolve_rtmpose_model(model: str | os.PathLike[str], *, weights: str | os.PathLike[str] | None = None) -> Path:
    """Path of an RTMPose ONNX model given by path or name (``"rtmpose-m"``); never downloads."""
    text = os.fspath(model)
    if text.lower().startswith(("http://", "https://")):
        raise MetaHMRError(f"metahmr does not download models ({text}). {_HOWTO}")
    release = RTMPOSE_RELEASES.get(text)
    alternatives: list[str] = []
    if release is not None:
        alternatives = [release + ".onnx", *_ALIASES.get(text, ())]
    return resolve_model_file(text, subdir="keypoints", suffixes=(".onnx",), what="RTMPose model", howto=_HOWTO,
                              weights=weights, extra_dirs=[("rtmlib cache", rtmlib_cache_dir())],
                              alternatives=alternatives)


class RTMPoseEstimator:
    """RTMPose via rtmlib; output format from the model's keypoint count (17 -> coco17, 26 -> halpe26, ...).

    Args:
        model: ONNX path or a name (see :data:`RTMPOSE_RELEASES` and :func:`resolve_rtmpose_model`).
        device: ``"cpu"`` or ``"cuda"`` (onnxruntime-gpu needed for CUDA).
        backend: rtmlib backend (``"onnxruntime"`` or ``"opencv"``).
        input_size: model input (width, height); read from the ONNX file when it is static.

    Confidences are RTMPose's SimCC maxima clipped to [0, 1].
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = "rtmpose-m",
        *,
        device: str = "cpu",
        backend: str = "onnxruntime",
        input_size: tuple[int, int] | None = None,
        weights: str | os.PathLike[str] | None = None,
    ) -> None:
        try:
            from rtmlib import RTMPose
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise MetaHMRError("--keypoints rtmpose needs rtmlib and onnxruntime: "
                               "pip install 'metahmr[keypoints]'") from exc
        self.model_path = resolve_rtmpose_model(model, weights=weights)
        size = input_size or self._static_input_size(self.model_path) or (192, 256)
        with contextlib.redirect_stdout(io.StringIO()):  # rtmlib prints a "load ..." line
            self._model = RTMPose(str(self.model_path), model_input_size=tuple(size), backend=backend,
                                  device=device)
        self.input_size = tuple(size)
        self.num_keypoints = self._num_keypoints()
        self.format = format_for_count(self.num_keypoints) if self.num_keypoints else "coco17"
        self.name = self.model_path.name

    @staticmethod
    def _static_input_size(path: Path) -> tuple[int, int] | None:
        try:
            import onnxruntime as ort

            shape = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
        except Exception:  # noqa: BLE001 - fall back to the default size
            return None
        if len(shape) == 4 and all(isinstance(v, int) for v in shape[2:]):
            return int(shape[3]), int(shape[2])
        return None

    def _num_keypoints(self) -> int | None:
        session = getattr(self._model, "session", None)
        if session is None or not hasattr(session, "get_outputs"):
            return None
        shape = session.get_outputs()[0].shape
        return int(shape[1]) if len(shape) == 3 and isinstance(shape[1], int) else None

    def estimate(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(N, K, 3) keypoints in full-image pixels for boxes (N, 4); image (H, W, 3) uint8 RGB."""
        boxes = check_boxes(boxes)
        k = self.num_keypoints or 17
        if len(boxes) == 0:
            return np.zeros((0, k, 3), np.float32)
        bgr = np.ascontiguousarray(image[:, :, ::-1])  # rtmlib's pre-processing expects OpenCV (BGR) images
        kps, scores = self._model(bgr, bboxes=[list(map(float, b)) for b in boxes])
        kps = np.asarray(kps, np.float32).reshape(len(boxes), -1, 2)
        scores = np.clip(np.asarray(scores, np.float32).reshape(len(boxes), -1), 0.0, 1.0)
        return np.concatenate([kps, scores[..., None]], axis=2)
