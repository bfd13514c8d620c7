"""Person detection with ultralytics YOLO (detection models; class 0 = person).

The adapter never downloads: ultralytics would fetch a missing weight file such as ``yolo11m.pt`` from
GitHub in the middle of a run, so a model *name* is resolved in the weights folders first (see
:func:`metahmr_cli.detect.weights.resolve_model_file`) and a missing one raises
:class:`~metahmr_cli.errors.AssetNotFoundError`. ``*.yaml`` model configs (``yolo11n.yaml``) build a network
with random weights, which is only useful for tests.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np

from metahmr_cli.assets import user_data_dir
from metahmr_cli.detect.base import Detections, filter_detections
from metahmr_cli.detect.weights import resolve_model_file
from metahmr_cli.errors import InputError, MetaHMRError

logger = logging.getLogger(__name__)

DEFAULT_DETECTOR = "yolo11m.pt"
PERSON_CLASS = 0

_HOWTO = (
    "ultralytics would download it from github.com/ultralytics/assets, which metahmr never does during a run. "
    "Download the .pt file yourself and put it in the weights folder '{folder}/' (or pass the full path "
    "instead of a name), or import boxes with --boxes-json FILE."
)


def set_ultralytics_offline(config_dir: str | os.PathLike[str] | None = None) -> None:
    """Make ultralytics work offline and quietly: no downloads, no auto-installs, no settings sync, and its
    ``settings.json`` kept in ``config_dir`` (default: ``ultralytics/`` in metahmr's per-user data folder, not
    ``~/.config/Ultralytics``) without the three lines it prints when it creates the file.

    Must run before ``ultralytics`` is imported for the first time to take full effect (every metahmr module that
    imports it calls this first). Values already in the environment are kept.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    if config_dir is None and "YOLO_CONFIG_DIR" not in os.environ:

        config_dir = user_data_dir() / "ultralytics"
    if config_dir is not None:
        os.environ.setdefault("YOLO_CONFIG_DIR", os.fspath(config_dir))
    if "ultralytics" not in sys.modules:
        # its logger prints at INFO when the settings file is made (and on every prediction): warnings only
        os.environ.setdefault("YOLO_VERBOSE", "False")
    try:
        from ultralytics.utils import SETTINGS
    except ImportError:
        return
    if SETTINGS.get("sync"):
        SETTINGS.update(sync=False)  # no usage analytics from a metahmr run


def _import_yolo():
    set_ultralytics_offline()
    try:
        # ultralytics imports torchvision (-> torch._dynamo -> triton) lazily at the first prediction. Loading
        # triton's LLVM after an EGL/llvmpipe render context exists crashes the process, so load it now,
        # while the pipeline is being set up.
        import torchvision  # noqa: F401
        from ultralytics import YOLO
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MetaHMRError(
            "The YOLO detector needs ultralytics: pip install 'metahmr[detect]' (or pass --boxes-json FILE)."
        ) from exc
    return YOLO


def resolve_yolo_model(model: str | os.PathLike[str], *, subdir: str | tuple[str, ...] = "detectors",
                       weights: str | os.PathLike[str] | None = None) -> str:
    """Path (or ``.yaml`` config name) to hand to ``ultralytics.YOLO`` for ``model``.

    Raises:
        AssetNotFoundError: a name or path that is not available locally.
    """
    text = os.fspath(model)
    if Path(text).suffix.lower() in (".yaml", ".yml") and not Path(text).is_file():
        return text  # a built-in ultralytics config: random weights, no download
    first = subdir if isinstance(subdir, str) else subdir[0]
    return str(resolve_model_file(text, subdir=subdir, suffixes=(".pt",), what="YOLO model",
                                  howto=_HOWTO.format(folder=first), weights=weights))


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class YoloDetector:
    """Person detector backed by an ultralytics YOLO detection model.

    Args:
        model: weight file path, a file name in the weights folder ``detectors/`` (``"yolo11m.pt"``), or a
            ``.yaml`` config (random weights, tests only).
        conf: minimum detection score.
        iou: IoU threshold of non-maximum suppression.
        max_people: keep at most this many people per image (highest scores), None = all.
        min_box_size: drop boxes whose width or height is below this many pixels.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or None (ultralytics' choice).
        imgsz: inference size in pixels.
        half: FP16 inference (CUDA only).
        weights: explicit weights root for the name lookup.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_DETECTOR,
        *,
        conf: float = 0.5,
        iou: float = 0.45,
        max_people: int | None = None,
        min_box_size: float = 16.0,
        device: str | None = "cpu",
        imgsz: int = 640,
        half: bool = False,
        weights: str | os.PathLike[str] | None = None,
    ) -> None:
        if not 0.0 <= conf <= 1.0 or not 0.0 <= iou <= 1.0:
            raise ValueError(f"conf and iou must be in [0, 1], got conf={conf}, iou={iou}")
        self.model_spec = resolve_yolo_model(model, weights=weights)
        YOLO = _import_yolo()
        self.model = YOLO(self.model_spec)
        if getattr(self.model, "task", "detect") not in ("detect", None):
            raise MetaHMRError(
                f"{self.model_spec} is a YOLO '{self.model.task}' model; --detector needs a detection model "
                "(e.g. yolo11m.pt)."
            )
        self.conf = float(conf)
        self.iou = float(iou)
        self.max_people = max_people
        self.min_box_size = float(min_box_size)
        self.device = device
        self.imgsz = int(imgsz)
        self.half = bool(half)
        self.name = Path(self.model_spec).name

    def detect(self, image: np.ndarray) -> Detections:
        """Find people in ``image`` (H, W, 3) uint8 RGB.

        Returns:
            Detections sorted by decreasing score; boxes clamped to the image.
        """
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"detect() expects an (H, W, 3) RGB array, got {getattr(image, 'shape', type(image))}")
        bgr = np.ascontiguousarray(image[:, :, ::-1])  # ultralytics treats numpy input as BGR (OpenCV order)
        results = self.model.predict(
            bgr,
            conf=self.conf,
            iou=self.iou,
            classes=[PERSON_CLASS],
            max_det=max(self.max_people or 300, 1),
            device=self.device,
            imgsz=self.imgsz,
            verbose=False,
            **({"half": True} if self.half else {}),
        )
        h, w = image.shape[:2]
        if not results or getattr(results[0], "boxes", None) is None:
            return Detections.empty()
        boxes = results[0].boxes
        xyxy = _to_numpy(boxes.xyxy).reshape(-1, 4)
        scores = _to_numpy(boxes.conf).reshape(-1)
        cls = _to_numpy(boxes.cls).reshape(-1)
        person = cls.astype(np.int64) == PERSON_CLASS
        dets = Detections(xyxy[person], scores[person])
        return filter_detections(
            dets, min_score=self.conf, min_box_size=self.min_box_size, max_people=self.max_people,
            image_size=(w, h),
        )
