"""``metahmr process``: images and videos in, SMPL meshes out.

Stages, each injectable (tests and library users can pass their own objects)::

    decode (io.sources) -> detect (detect/) -> 2D keypoints (keypoints/) -> crops + camera (geometry)
      -> main/aux networks + test-time optimisation (tto.run_tto, people batched across images)
      -> result .npz + overlays + meshes + manifest (io.writers, io.meshes, render/)

Each input is isolated: a failure is recorded in the manifest (``failed`` + reason) and the run goes on.
Missing assets are reported all at once, before any work starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from metahmr_cli import __version__
from metahmr_cli.constants import BBOX_MARGIN_DETECTOR, IMAGENET_MEAN, IMAGENET_STD
from metahmr_cli.detect.mediapipe_person import MEDIAPIPE_DETECTOR
from metahmr_cli.errors import AssetNotFoundError, ConfigError, InputError, MetaHMRError
from metahmr_cli.io.writers import (
    FrameResult,
    Manifest,
    ManifestRecord,
    clean_temp_files,
    result_num_people,
    validate_result_npz,
    write_image_atomic,
    write_result_npz,
    write_summary,
)
from metahmr_cli.keypoints.movenet import MOVENET_DETECTOR
from metahmr_cli.render.overlay import RendererUnavailable, person_colors
from metahmr_cli.tto.config import TTOConfig

logger = logging.getLogger(__name__)

STAGES: tuple[str, ...] = ("decode", "detect", "keypoints", "crop", "tto", "write", "render")
"""Timed stages. ``tto`` includes the forward passes of the networks (plain regression when ``--tto none``)."""
KEYPOINT_BACKENDS: tuple[str, ...] = (
    "auto", "rtmpose", "yolo-pose", "mediapipe", "movenet", "openpose-json", "coco-json", "mmpose")
FOCAL_RULES: tuple[str, ...] = ("diagonal", "exif")
"""``--focal`` words: the CLIFF rule f = sqrt(W^2 + H^2) (default) or the photo's EXIF focal length."""
DETECTOR_DEFAULTS: dict[str, tuple[float, float]] = {"movenet": (0.2, 8.0)}
"""Detector -> (score threshold, smallest box side in px) where they differ from YOLO's (0.5, 16): MoveNet's
person scores of clearly visible people are 0.2-0.7 and the pedestrians of small video frames are 8-16 px."""
YOLO_DEFAULTS = (0.5, 16.0)
MESH_FORMATS: tuple[str, ...] = ("none", "obj", "ply", "glb")
_MEAN = np.asarray(IMAGENET_MEAN, np.float32)
_STD = np.asarray(IMAGENET_STD, np.float32)


# ------------------------------------------------------------------------------------------------------ config


@dataclass
class ProcessConfig:
    """Settings of ``metahmr process`` (CLI flags map onto these fields; ``--config FILE`` may set any of them).

    Attributes:
        inputs: image files, video files, folders or glob patterns.
        out: output folder.
        recursive: scan sub-folders of folder inputs.
        weights: explicit weights root (otherwise $METAHMR_HOME, ./weights, the per-user data folder).
        model: "auto" (the paper tier when SMPL and the Meta-HMR release are installed, else the open tier),
            "paper" or "open" (see :mod:`metahmr_cli.tiers`).
        checkpoint: network checkpoint path (None: the tier's default: the Meta-HMR HRNet release, or the open
            model shipped with metahmr).
        body: "auto" (the tier's body), "smpl", "open", "standin" or a body-model folder; gender: which model
            file of it.
        detector: "auto" (YOLO when its weights are installed and the tier is paper, else MoveNet), a YOLO
            weight file name/path (or a ``.yaml`` config: random weights, tests only), or
            ``"mediapipe"``: MediaPipe's bundled single-person detector (offline, one person per image), or
            ``"movenet"``: MoveNet MultiPose (open model from ``metahmr weights fetch-open``, up to 6 people).
        det_conf / det_iou: detection score threshold / NMS IoU (None: the detector's default, 0.5 for YOLO,
            0.2 for MoveNet); max_people: most people per image (None = all);
        min_box: smallest box side in pixels (None: 16, or 8 for MoveNet).
        keypoints: 2D keypoint backend ("auto": RTMPose when installed and the tier is paper, else MoveNet);
            keypoints_model: its model file (None: the backend's default).
        boxes_json / keypoints_json: import boxes / keypoints instead of running the detector / estimator.
        focal: focal length in pixels for every input, "diagonal" (default: f = sqrt(W^2 + H^2), the rule CLIFF
            and Meta-HMR were trained and evaluated with) or "exif" (the photo's 35 mm focal length when it
            has one, else the diagonal rule); fov: horizontal field of view in degrees (f = W / 2 / tan(fov / 2)).
            Every result records which rule gave its focal length.
        tto: test-time optimisation settings.
        batch_size: people per network/TTO batch (collected across images and video frames).
        device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N"; dtype: "float32" or "float64".
        render: write overlays (PNG per image, MP4 per video); side_view: also a side view.
        save_mesh: per-person mesh files ("obj", "ply", "glb") or "none".
        save_vertices: store vertices (P, V, 3) in the result files.
        overwrite: redo inputs whose outputs are already complete.
        video_stride: process every n-th video frame; max_frames: most frames per video (None = all).
        max_render_side: overlays of larger images are rendered at this longer side.
        self_aux: let a single-network checkpoint (official CLIFF, SPIN) serve as its own auxiliary network for the
            Meta-HMR schedules; refused otherwise, and outputs say ``<schedule>+self-aux``.
    """

    inputs: list[str] = field(default_factory=list)
    out: Path = Path("results")
    recursive: bool = False
    weights: Path | None = None
    model: Literal["auto", "paper", "open"] = "auto"
    checkpoint: Path | None = None
    body: str = "auto"
    gender: Literal["neutral", "male", "female"] = "neutral"
    detector: str = "auto"
    det_conf: float | None = None
    det_iou: float = 0.45
    max_people: int | None = None
    min_box: float | None = None
    keypoints: Literal["auto", "rtmpose", "yolo-pose", "mediapipe", "movenet", "openpose-json", "coco-json",
                       "mmpose"] = "auto"
    keypoints_model: str | None = None
    boxes_json: Path | None = None
    keypoints_json: Path | None = None
    focal: float | str | None = None
    fov: float | None = None
    tto: TTOConfig = field(default_factory=TTOConfig)
    batch_size: int = 32
    device: str = "auto"
    dtype: Literal["float32", "float64"] = "float32"
    render: bool = True
    side_view: bool = False
    save_mesh: Literal["none", "obj", "ply", "glb"] = "none"
    save_vertices: bool = True
    overwrite: bool = False
    video_stride: int = 1
    max_frames: int | None = None
    max_render_side: int = 2048
    self_aux: bool = False

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the bad setting and what is allowed."""
        if not self.inputs:
            raise ConfigError("No inputs given: pass images, videos, folders or glob patterns.")
        if self.keypoints not in KEYPOINT_BACKENDS:
            raise ConfigError(f"keypoints = {self.keypoints!r}; choose one of {', '.join(KEYPOINT_BACKENDS)}.")
        if self.save_mesh not in MESH_FORMATS:
            raise ConfigError(f"save_mesh = {self.save_mesh!r}; choose one of {', '.join(MESH_FORMATS)}.")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}.")
        if isinstance(self.focal, str):
            try:
                self.focal = float(self.focal)
            except ValueError:
                if self.focal not in FOCAL_RULES:
                    raise ConfigError(f"focal = {self.focal!r}; give a number of pixels or one of "
                                      f"{', '.join(FOCAL_RULES)}.") from None
        if isinstance(self.focal, float | int) and not self.focal > 0:
            raise ConfigError(f"focal must be a positive number of pixels, got {self.focal}.")
        if self.model not in ("auto", "paper", "open"):
            raise ConfigError(f"model = {self.model!r}; choose auto, paper or open.")
        if self.fov is not None and not 0 < self.fov < 180:
            raise ConfigError(f"fov must be in (0, 180) degrees, got {self.fov}.")
        if self.focal is not None and self.fov is not None:
            raise ConfigError("Give either focal or fov, not both.")
        if (self.det_conf is not None and not 0 <= self.det_conf <= 1) or not 0 <= self.det_iou <= 1:
            raise ConfigError(f"det_conf and det_iou must be in [0, 1], got {self.det_conf}, {self.det_iou}.")
        if self.min_box is not None and not self.min_box >= 0:
            raise ConfigError(f"min_box must be >= 0 pixels, got {self.min_box}.")
        if self.max_people is not None and self.max_people < 1:
            raise ConfigError(f"max_people must be >= 1 (or unset), got {self.max_people}.")
        if self.video_stride < 1:
            raise ConfigError(f"video_stride must be >= 1, got {self.video_stride}.")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype = {self.dtype!r}; choose float32 or float64.")
        if self.keypoints in ("openpose-json", "coco-json") and self.keypoints_json is None:
            raise ConfigError(f"--keypoints {self.keypoints} needs --keypoints-json FILE.")
        resolve_device(self.device)
        self.tto.validate()


def resolve_device(device: str) -> torch.device:
    """"auto" -> CUDA when available else CPU; raises ConfigError for unknown or unavailable devices."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"device {device!r} is not valid; use auto, cpu, cuda or cuda:N.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available here; use --device cpu.")
    return dev


def focal_for_image(width: int, height: int, *, focal: float | str | None = None, fov: float | None = None,
                    exif_focal: float | None = None) -> tuple[float, str]:
    """Focal length in pixels and the rule that gave it.

    ``focal`` as a number > ``fov`` (horizontal, degrees) > ``focal="exif"`` with an EXIF focal length > the
    CLIFF rule sqrt(W^2 + H^2) ("diagonal", the default; what CLIFF and Meta-HMR were trained with: a phone's
    EXIF focal, ~0.6 x the diagonal, would put ``bbox_info`` outside the training range).
    """
    if isinstance(focal, int | float):
        return float(focal), "focal"
    if fov is not None:
        return width / 2.0 / math.tan(math.radians(fov) / 2.0), "fov"
    if focal == "exif" and exif_focal is not None and math.isfinite(exif_focal) and exif_focal > 0:
        return float(exif_focal), "exif"
    return math.hypot(width, height), "diagonal"


# ------------------------------------------------------------------------------------------------------ stages


class KeypointStage(Protocol):
    """2D keypoints of the people in one image: (N, 49, 3) full-image pixels + confidence (0 = missing)."""

    def __call__(self, image: np.ndarray, boxes: np.ndarray, *, path: Path, frame: int | None) -> np.ndarray: ...


class Renderer(Protocol):
    """What the pipeline needs from a renderer (see :class:`metahmr_cli.render.MeshRenderer`)."""

    def render_overlay(self, image: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                       K: np.ndarray) -> np.ndarray: ...

    def render_side_view(self, image_hw: tuple[int, int], vertices: np.ndarray, faces: np.ndarray,
                         K: np.ndarray) -> np.ndarray: ...


class EstimatorStage:
    """Adapts a :class:`~metahmr_cli.keypoints.KeypointEstimator` to the pipeline: its keypoints mapped onto
    the 49-joint convention (both the OpenPose and the ground-truth slots)."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def __call__(self, image: np.ndarray, boxes: np.ndarray, *, path: Path, frame: int | None) -> np.ndarray:
        from metahmr_cli.keypoints import to_49

        kp = np.asarray(self.estimator.estimate(image, boxes), np.float32)
        return to_49(kp.reshape(len(boxes), -1, kp.shape[-1] if kp.ndim == 3 else 3), self.estimator.format)


class _ImportedKeypointStage:
    """Keypoints of ``--keypoints-json``, matched to the boxes of each input."""

    def __init__(self, imported: Any) -> None:
        self.imported = imported

    def __call__(self, image: np.ndarray, boxes: np.ndarray, *, path: Path, frame: int | None) -> np.ndarray:
        from metahmr_cli.keypoints import to_49

        kp = self.imported.bind(path, frame).estimate(image, boxes)
        return to_49(np.asarray(kp, np.float32), self.imported.format)


class _BoxesFromKeypoints:
    """Person boxes from imported keypoints (``--keypoints-json`` without a detector)."""

    def __init__(self, imported: Any) -> None:
        self.imported = imported

    def get(self, path: Path, frame: int | None) -> Any:
        return self.imported.detections(path, frame)


def _check_keypoint_model(backend: str, model: str | None, weights: Path | None) -> None:
    """Raise AssetNotFoundError when the model file of a keypoint backend is missing (without loading it)."""
    if backend == "rtmpose":
        from metahmr_cli.keypoints.rtmpose import resolve_rtmpose_model

        resolve_rtmpose_model(model or "rtmpose-m", weights=weights)
    elif backend == "yolo-pose":
        from metahmr_cli.detect import resolve_yolo_model
        from metahmr_cli.keypoints.ultralytics_pose import DEFAULT_POSE_MODEL

        resolve_yolo_model(model or DEFAULT_POSE_MODEL, subdir=("keypoints", "detectors"), weights=weights)
    elif backend == "movenet":
        from metahmr_cli.keypoints.movenet import resolve_model_json

        resolve_model_json(model, weights=weights)


@dataclass
class _Frame:
    """One image or video frame on its way through the pipeline."""

    item: Any                      # InputItem
    frame: int | None              # video frame index or None
    image: np.ndarray              # (H, W, 3) uint8
    K: np.ndarray                  # (3, 3)
    boxes: np.ndarray              # (N, 4)
    scores: np.ndarray             # (N,)
    keypoints: np.ndarray          # (N, 49, 3) full-image px
    crops: torch.Tensor | None = None           # (N, 3, 256, 192)
    crop_info: Any = None                       # CropInfo (N)
    kp_crop: torch.Tensor | None = None         # (N, 49, 3) normalised crop coords
    result: FrameResult | None = None
    timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    started: float = 0.0
    focal_rule: str = "diagonal"

    @property
    def num_people(self) -> int:
        return len(self.boxes)


@dataclass
class RunReport:
    """Outcome of :meth:`Pipeline.run`."""

    counts: dict[str, int]
    exit_code: int
    out_dir: Path
    summary: dict[str, Any]


def _reason(exc: BaseException | None) -> str:
    """A one-line failure reason: metahmr's own messages as they are, others with their type."""
    if exc is None:
        return "unknown error"
    if isinstance(exc, MetaHMRError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


_FRAME_FILE = re.compile(r"frame_\d{6,}\.npz")


def _remove_frame_files(folder: Path, keep: set[str]) -> None:
    """Delete the per-frame result files (``frame_NNNNNN.npz``) of ``folder`` not named in ``keep``; the folder
    goes too when it ends up empty."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.name not in keep and _FRAME_FILE.fullmatch(p.name) and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
    with contextlib.suppress(OSError):
        if not any(folder.iterdir()):
            folder.rmdir()


def _batch_full(pending: list[_Frame], batch_size: int) -> bool:
    """Whether the frames waiting for the networks hold a batch of people (or as many frames)."""
    return len(pending) >= batch_size or sum(f.num_people for f in pending) >= batch_size


class _Timer:
    def __init__(self, sink: dict[str, float], stage: str) -> None:
        self.sink, self.stage = sink, stage

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.sink[self.stage] += time.perf_counter() - self.t0


# ------------------------------------------------------------------------------------------------------ pipeline


class Pipeline:
    """Runs ``metahmr process`` over a set of inputs.

    Args:
        config: the run settings.
        detector: object with ``detect(image) -> Detections`` (default: YOLO from ``config.detector``, or the
            boxes of ``config.boxes_json``).
        keypoints: a :class:`KeypointStage` callable (default: the backend of ``config.keypoints``).
        networks: object with ``main``, ``aux`` and ``identifier`` (default: ``load_networks(checkpoint)``).
        body: a BodyModel (default: ``load_body_model(config.body)``).
        renderer: a :class:`Renderer` (default: :class:`metahmr_cli.render.MeshRenderer`); None with
            ``config.render`` off.
        progress: show a rich progress bar (on stderr).
        console: rich console for the progress bar and warnings.
    """

    def __init__(self, config: ProcessConfig, *, detector: Any = None, keypoints: KeypointStage | None = None,
                 networks: Any = None, body: Any = None, renderer: Renderer | None = None,
                 progress: bool = True, console: Any = None) -> None:
        config.validate()
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = torch.float64 if config.dtype == "float64" else torch.float32
        self.detector = detector
        self.keypoint_stage = keypoints
        self.networks = networks
        self.body = body
        self.renderer = renderer
        self.progress = progress
        self.console = console
        self.render_enabled = config.render
        self.render_disabled_reason: str | None = None
        self.warnings: list[str] = []
        self._imported_boxes: Any = None
        self._imported_keypoints: Any = None
        self._faces: np.ndarray | None = None
        self._checkpoint_id = ""
        self._network_input = "image"
        self._body_dir: Path | None = None
        self._stage_totals: dict[str, float] = defaultdict(float)
        self._setup_done = False
        self._tier_done = False
        self.tier = "custom"
        self.tier_message: str | None = None
        self._schedule_label = config.tto.schedule

    # -------------------------------------------------------------------------------------------- assets/setup
    def resolve_tier(self) -> None:
        """Turn every ``auto`` setting into a concrete choice (:func:`metahmr_cli.tiers.choose_tier`): the model
        tier with its body and checkpoint, the detector, the keypoint backend and the detector's thresholds."""
        if self._tier_done:
            return
        from metahmr_cli.tiers import choose_tier

        cfg = self.config
        injected = self.networks is not None and self.body is not None
        needs_detector = self.detector is None and cfg.boxes_json is None and cfg.keypoints_json is None
        needs_keypoints = self.keypoint_stage is None and cfg.keypoints_json is None
        choice = choose_tier(
            model="paper" if injected else cfg.model,
            body="smpl" if injected and cfg.body == "auto" else cfg.body,
            checkpoint=cfg.checkpoint,
            detector=cfg.detector if needs_detector else "unused",
            keypoints=cfg.keypoints if needs_keypoints else "unused",
            keypoints_model=cfg.keypoints_model, weights=cfg.weights)
        self.tier = "custom" if injected else choice.tier
        self.tier_message = choice.message
        cfg.body = choice.body
        if choice.checkpoint is not None:
            cfg.checkpoint = choice.checkpoint
        if needs_detector:
            cfg.detector = choice.detector
        if needs_keypoints:
            cfg.keypoints = choice.keypoints  # type: ignore[assignment]
        conf, min_box = DETECTOR_DEFAULTS.get(cfg.detector, YOLO_DEFAULTS)
        if cfg.det_conf is None:
            cfg.det_conf = conf
        if cfg.min_box is None:
            cfg.min_box = min_box
        if self.tier_message:
            logger.info("%s", self.tier_message)
            if self.console is not None:
                self.console.print(self.tier_message, markup=False, highlight=False)
        self._tier_done = True

    def check_assets(self) -> None:
        """Resolve every file the run needs; raise one AssetNotFoundError listing all that are missing."""
        from metahmr_cli.assets import body_dir, resolve_asset

        self.resolve_tier()
        cfg = self.config
        missing: list[str] = []

        def attempt(fn: Callable[[], Any]) -> Any:
            try:
                return fn()
            except AssetNotFoundError as exc:
                if str(exc) not in missing:  # one model may serve two stages (e.g. MoveNet)
                    missing.append(str(exc))
                return None

        if self.body is None:
            self._body_dir = attempt(lambda: body_dir(cfg.body, weights=cfg.weights))
        if self.networks is None:
            self._checkpoint_path = attempt(
                lambda: resolve_asset("metahmr_cliff_hrnet_3dpw", cfg.checkpoint, weights=cfg.weights))
        if (self.detector is None and cfg.boxes_json is None and cfg.keypoints_json is None
                and cfg.detector not in (MEDIAPIPE_DETECTOR, MOVENET_DETECTOR)):
            from metahmr_cli.detect import resolve_yolo_model

            attempt(lambda: resolve_yolo_model(cfg.detector, weights=cfg.weights))
        if (self.detector is None and cfg.boxes_json is None and cfg.keypoints_json is None
                and cfg.detector == MOVENET_DETECTOR):
            from metahmr_cli.keypoints.movenet import resolve_model_json

            attempt(lambda: resolve_model_json(weights=cfg.weights))
        if cfg.boxes_json is not None and not Path(cfg.boxes_json).is_file():
            missing.append(f"Boxes file {cfg.boxes_json} (--boxes-json) does not exist.")
        if cfg.keypoints_json is not None and not Path(cfg.keypoints_json).is_file():
            missing.append(f"Keypoints file {cfg.keypoints_json} (--keypoints-json) does not exist.")
        if self.keypoint_stage is None and cfg.keypoints_json is None:
            attempt(lambda: _check_keypoint_model(cfg.keypoints, cfg.keypoints_model, cfg.weights))
        if missing:
            n = len(missing)
            head = f"{n} required file{'s are' if n > 1 else ' is'} missing; nothing was processed.\n\n"
            raise AssetNotFoundError(head + "\n\n".join(missing))

    def setup(self) -> None:
        """Check assets, then load the body model, networks, detector and keypoint backend."""
        if self._setup_done:
            return
        self.check_assets()
        cfg = self.config
        if self.body is None:
            from metahmr_cli.body.smpl import load_body_model

            self.body = load_body_model(self._body_dir, cfg.gender, device=self.device, dtype=self.dtype,
                                        with_h36m=False)
        self.body = self.body.to(device=self.device, dtype=self.dtype).eval()
        self._faces = np.asarray(self.body.faces, dtype=np.int64)
        if self.networks is None:
            from metahmr_cli.models import load_networks

            mean_params = None
            if self._body_dir is not None:
                from metahmr_cli.body.smpl import load_mean_params

                with contextlib.suppress(FileNotFoundError, AssetNotFoundError):
                    mean_params = load_mean_params(self._body_dir)
            self.networks = load_networks(self._checkpoint_path, device=self.device, dtype=self.dtype,
                                          mean_params=mean_params)
        for net in (self.networks.main, self.networks.aux):
            if net is not None:
                net.to(device=self.device, dtype=self.dtype).eval()
        self._checkpoint_id = str(getattr(self.networks, "identifier", "") or "")
        self._network_input = str(getattr(self.networks.main, "input_kind", "image"))
        self._check_auxiliary()
        # The camera of the TTO losses must fit the network: an HMR-architecture checkpoint predicts the SPIN crop
        # camera (focal 5000, 256 px box), CLIFF the one of the full image (the written transl is full-image in both).
        arch = getattr(self.networks.main, "arch", None)
        if arch in ("cliff", "hmr") and cfg.tto.camera != arch:
            logger.info("TTO camera set to %r to fit the %s network", arch, arch)
            cfg.tto = dataclasses.replace(cfg.tto, camera=arch)
        if cfg.keypoints_json is not None and self.keypoint_stage is None:
            from metahmr_cli.keypoints import load_keypoints

            fmt = "coco17" if cfg.keypoints == "coco-json" else None
            self._imported_keypoints = load_keypoints(cfg.keypoints_json, fmt=fmt)
            self.keypoint_stage = _ImportedKeypointStage(self._imported_keypoints)
        if cfg.boxes_json is not None and self.detector is None:
            from metahmr_cli.detect import ImportedBoxes

            self._imported_boxes = ImportedBoxes(cfg.boxes_json)
        elif self.detector is None and self._imported_keypoints is not None:
            self._imported_boxes = _BoxesFromKeypoints(self._imported_keypoints)
        elif self.detector is None and cfg.detector == MEDIAPIPE_DETECTOR:
            from metahmr_cli.detect.mediapipe_person import MediaPipePersonDetector

            self.detector = MediaPipePersonDetector(conf=cfg.det_conf, min_box_size=cfg.min_box)
        elif self.detector is None and cfg.detector == MOVENET_DETECTOR:
            from metahmr_cli.keypoints.movenet import MoveNetDetector

            self.detector = MoveNetDetector(device=str(self.device), weights=cfg.weights, conf=cfg.det_conf,
                                            min_box_size=cfg.min_box)
        elif self.detector is None:
            from metahmr_cli.detect import YoloDetector

            self.detector = YoloDetector(cfg.detector, conf=cfg.det_conf, iou=cfg.det_iou,
                                         max_people=cfg.max_people, min_box_size=cfg.min_box,
                                         device=str(self.device), weights=cfg.weights)
        if self.keypoint_stage is None:
            from metahmr_cli.keypoints import build_keypoint_estimator

            estimator = build_keypoint_estimator(cfg.keypoints, cfg.keypoints_model, device=str(self.device),
                                                 weights=cfg.weights)
            self.keypoint_stage = EstimatorStage(estimator)
        if self.render_enabled and self.renderer is None:
            from metahmr_cli.render import MeshRenderer

            self.renderer = MeshRenderer(max_side=cfg.max_render_side)
        self._setup_done = True

    def _check_auxiliary(self) -> None:
        """A single-network checkpoint (official CLIFF, SPIN) has no auxiliary net: the Meta-HMR schedules would
        use the network as its own pseudo mesh. Refuse unless asked for, and then label the outputs so."""
        from metahmr_cli.tto import resolve_schedule

        cfg = self.config
        kind = getattr(self.networks, "kind", "metahmr")
        if kind == "metahmr" or not resolve_schedule(cfg.tto).needs_aux:
            self._schedule_label = cfg.tto.schedule
            return
        if not cfg.self_aux:
            raise ConfigError(
                f"checkpoint {self._checkpoint_id or cfg.checkpoint} holds a single network ({kind}), but "
                f"--tto {cfg.tto.schedule} needs Meta-HMR's auxiliary network for its pseudo mesh. Use a Meta-HMR "
                "checkpoint, or --tto eft / --tto none with this one, or --self-aux to let the network be its own "
                f"auxiliary net (outputs are labelled '{cfg.tto.schedule}+self-aux', not Meta-HMR).")
        self._schedule_label = f"{cfg.tto.schedule}+self-aux"

    # -------------------------------------------------------------------------------------------- run
    def run(self) -> RunReport:
        """Process every input; returns the counts per status and the exit code (0 all ok, 1 some failed)."""
        from metahmr_cli.config import config_to_dict
        from metahmr_cli.io.sources import expand_inputs

        cfg = self.config
        items = expand_inputs(cfg.inputs, recursive=cfg.recursive)
        self.setup()
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        clean_temp_files(out)
        run_id = uuid.uuid4().hex[:12]
        manifest = Manifest(out, run_id=run_id)
        started = time.time()
        t0 = time.perf_counter()
        totals = {"images": 0, "frames": 0, "people": 0}

        pending: list[_Frame] = []

        def record(item: Any, rec: ManifestRecord) -> None:
            manifest.add(rec)
            if rec.status in ("ok", "no_person"):
                totals["people"] += rec.people
                if item.kind == "video":
                    totals["frames"] += rec.frames or 0
                else:
                    totals["images"] += 1
            advance(item)

        def flush() -> None:
            errors = self._regress(pending)
            for fr in pending:
                err = errors.get(id(fr))
                rec = self._failed(fr.item, _reason(err)) if err is not None else self._finish_image(fr, out)
                record(fr.item, rec)
            pending.clear()

        with self._progress_bar(len(items)) as advance:
            for item in items:
                prev = manifest.previous.get(item.stem)
                if not cfg.overwrite and prev is not None and self._is_complete(prev, out):
                    rec = ManifestRecord(input=str(item.path), key=item.stem, kind=item.kind, status="skipped",
                                         reason="outputs of an earlier run are complete (use --overwrite to redo)",
                                         people=prev.people, frames=prev.frames, outputs=list(prev.outputs),
                                         previous_status=prev.previous_status or prev.status)
                    record(item, rec)
                    continue
                if item.kind == "video":
                    if pending:
                        flush()
                    record(item, self._process_video_safe(item, out))
                    continue
                try:
                    frame = self._prepare_image(item)
                except Exception as exc:  # noqa: BLE001 - one bad input must not stop the run
                    record(item, self._failed(item, _reason(exc)))
                    continue
                pending.append(frame)
                # decoded images wait here until a batch of people is full (or as many images are held)
                if _batch_full(pending, cfg.batch_size):
                    flush()
            if pending:
                flush()
        manifest.finalize(order=[it.stem for it in items])
        wall = time.perf_counter() - t0
        counts = manifest.counts()
        exit_code = 1 if counts["failed"] else 0
        n_units = totals["images"] + totals["frames"]
        summary = {
            "run_id": run_id,
            "metahmr_version": __version__,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "wall_seconds": wall,
            "inputs": len(items),
            "counts": counts,
            "exit_code": exit_code,
            "processed": totals,
            "images_per_second": n_units / wall if wall > 0 else None,
            "people_per_second": totals["people"] / wall if wall > 0 else None,
            "stage_seconds": {s: self._stage_totals.get(s, 0.0) for s in STAGES},
            "device": str(self.device),
            "dtype": cfg.dtype,
            "body_model": getattr(self.body, "name", "smpl"),
            "checkpoint": self._checkpoint_id,
            "renders_disabled": self.render_disabled_reason,
            "warnings": self.warnings,
            "config": config_to_dict(cfg),
        }
        write_summary(out, summary)
        if self.renderer is not None and hasattr(self.renderer, "close"):
            with contextlib.suppress(Exception):
                self.renderer.close()
        return RunReport(counts=counts, exit_code=exit_code, out_dir=out, summary=summary)

    @contextlib.contextmanager
    def _progress_bar(self, total: int) -> Iterator[Callable[[Any], None]]:
        if not self.progress:
            yield lambda item: None
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (TextColumn("[bold]process[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[name]}", markup=False))
        with Progress(*columns, console=self.console, transient=False) as bar:
            task = bar.add_task("process", total=total, name="")

            def advance(item: Any) -> None:
                bar.update(task, advance=1, name=Path(str(item.path)).name)

            yield advance

    # -------------------------------------------------------------------------------------------- skip logic
    def _expected_names(self, stem: str, kind: str, people: int) -> list[str]:
        cfg = self.config
        names = [f"{stem}.mp4"] if kind == "video" and self.render_enabled else []
        if kind == "image":
            names.append(f"{stem}.npz")
            if self.render_enabled:
                names.append(f"{stem}_overlay.png")
                if cfg.side_view:
                    names.append(f"{stem}_side.png")
            if cfg.save_mesh != "none":
                names += [f"{stem}_person{i:02d}.{cfg.save_mesh}" for i in range(people)]
        elif self.render_enabled and cfg.side_view:
            names.append(f"{stem}_side.mp4")
        return names

    def _is_complete(self, prev: ManifestRecord, out: Path) -> bool:
        """An earlier record whose outputs all exist, whose result files are valid, and that has every
        output the current settings ask for."""
        status = prev.previous_status if prev.status == "skipped" else prev.status
        if status not in ("ok", "no_person"):
            return False
        outputs = set(prev.outputs)
        if prev.kind == "image":
            people = prev.people
        else:
            people = 0
            if not any(o.endswith(".npz") for o in outputs):
                return False
        for name in self._expected_names(prev.key, prev.kind, people):
            if name not in outputs:
                return False
        for name in outputs:
            path = out / name
            if not path.is_file():
                return False
            if name.endswith(".npz") and validate_result_npz(path):
                return False
        if prev.kind == "image":
            with contextlib.suppress(Exception):
                return result_num_people(out / f"{prev.key}.npz") == prev.people
            return False
        return True

    # -------------------------------------------------------------------------------------------- per input
    def _process_video_safe(self, item: Any, out: Path) -> ManifestRecord:
        t0 = time.perf_counter()
        try:
            rec = self._process_video(item, out)
        except Exception as exc:  # noqa: BLE001 - one bad input must not stop the run
            logger.debug("input %s failed", item.path, exc_info=True)
            rec = self._failed(item, _reason(exc))
        rec.timings["total"] = time.perf_counter() - t0
        return rec

    def _failed(self, item: Any, reason: str) -> ManifestRecord:
        logger.warning("%s: %s", item.path, reason)
        return ManifestRecord(input=str(item.path), key=item.stem, kind=item.kind, status="failed", reason=reason)

    def _prepare_image(self, item: Any) -> _Frame:
        from metahmr_cli.io.sources import read_exif_focal, read_image

        t0 = time.perf_counter()
        timings: dict[str, float] = defaultdict(float)
        with _Timer(timings, "decode"):
            image = read_image(item.path)
            H, W = image.shape[:2]
            exif = read_exif_focal(item.path, W, H) if self.config.focal == "exif" else None
        focal, rule = focal_for_image(W, H, focal=self.config.focal, fov=self.config.fov, exif_focal=exif)
        frame = self._prepare(item, None, image, focal, timings)
        frame.started = t0
        frame.focal_rule = rule
        return frame

    def _finish_image(self, frame: _Frame, out: Path) -> ManifestRecord:
        """Write the outputs of one image whose people went through the networks; failures are isolated."""
        item = frame.item
        outputs: list[str] = []
        try:
            outputs += self._write_frame(frame, out, f"{item.stem}.npz")
            outputs += self._render_image(frame, out)
        except Exception as exc:  # noqa: BLE001 - one bad input must not stop the run
            for name in outputs:
                with contextlib.suppress(OSError):
                    (out / name).unlink()
            logger.debug("input %s failed", item.path, exc_info=True)
            return self._failed(item, _reason(exc))
        self._add_timings(frame.timings)
        frame.timings["total"] = time.perf_counter() - frame.started
        status = "ok" if frame.num_people else "no_person"
        return ManifestRecord(input=str(item.path), key=item.stem, kind="image", status=status,
                              reason=None if frame.num_people else "no person detected",
                              people=frame.num_people, outputs=outputs, timings=dict(frame.timings))

    def _process_video(self, item: Any, out: Path) -> ManifestRecord:
        from metahmr_cli.io.sources import iter_video_frames, video_info
        from metahmr_cli.render import VideoWriter

        cfg = self.config
        timings: dict[str, float] = defaultdict(float)
        info = video_info(item.path, count_frames=False)
        fps = (info.fps or 25.0) / cfg.video_stride
        W, H = info.size
        focal, focal_rule = focal_for_image(W, H, focal=cfg.focal, fov=cfg.fov)
        outputs: list[str] = []
        writers: dict[str, Any] = {}
        if self.render_enabled:
            writers["overlay"] = VideoWriter(out / f"{item.stem}.mp4", fps)
            if cfg.side_view:
                writers["side"] = VideoWriter(out / f"{item.stem}_side.mp4", fps)
        written: list[Path] = []
        people = 0
        pending: list[_Frame] = []

        def flush() -> None:
            nonlocal people
            errors = self._regress(pending)
            if errors:
                raise next(iter(errors.values()))
            for fr in pending:
                name = f"{item.stem}/frame_{fr.frame:06d}.npz"
                outputs.extend(self._write_frame(fr, out, name))
                written.append(out / name)
                self._render_video_frame(fr, writers)
                people += fr.num_people
                for k, v in fr.timings.items():
                    timings[k] += v
            pending.clear()

        try:
            it = iter_video_frames(item.path, stride=cfg.video_stride, max_frames=cfg.max_frames)
            while True:
                t = time.perf_counter()
                try:
                    index, image = next(it)
                except StopIteration:
                    break
                finally:
                    timings["decode"] += time.perf_counter() - t
                frame = self._prepare(item, index, image, focal, defaultdict(float))
                frame.focal_rule = focal_rule
                pending.append(frame)
                if _batch_full(pending, cfg.batch_size):
                    flush()
            if pending:
                flush()
            for w in writers.values():
                if self.render_enabled:
                    p = w.close()
                    if p is not None:
                        outputs.append(p.name)
                else:  # renders were switched off mid-video: drop the partial overlay
                    w.abort()
        except BaseException:
            for w in writers.values():
                w.abort()
            for p in written:
                with contextlib.suppress(OSError):
                    p.unlink()
            _remove_frame_files(out / item.stem, keep=set())
            raise
        # frames of an earlier run with other settings (stride, max_frames) must not mix with this run's
        _remove_frame_files(out / item.stem, keep={p.name for p in written})
        self._add_timings(timings)
        status = "ok" if people else "no_person"
        return ManifestRecord(input=str(item.path), key=item.stem, kind="video", status=status,
                              reason=None if people else "no person detected in any frame",
                              people=people, frames=len(written), outputs=outputs, timings=dict(timings))

    def _add_timings(self, timings: dict[str, float]) -> None:
        for k, v in timings.items():
            self._stage_totals[k] += v

    # -------------------------------------------------------------------------------------------- stages
    def _detect(self, item: Any, frame: int | None, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from metahmr_cli.detect import filter_detections
        from metahmr_cli.detect.boxes_json import input_label

        cfg = self.config
        H, W = image.shape[:2]
        if self._imported_boxes is not None:
            dets = self._imported_boxes.get(item.path, frame)
            if dets is None:
                where = input_label(item.path, frame)
                source = cfg.boxes_json if cfg.boxes_json is not None else cfg.keypoints_json
                what = "boxes" if cfg.boxes_json is not None else "people"
                raise InputError(f"{source} lists no {what} for {where!r}; add an entry (may be empty).")
            dets = filter_detections(dets, min_box_size=cfg.min_box, max_people=cfg.max_people, image_size=(W, H))
        else:
            dets = self.detector.detect(image)
            dets = filter_detections(dets, min_score=cfg.det_conf, min_box_size=cfg.min_box,
                                     max_people=cfg.max_people, image_size=(W, H))
        return np.asarray(dets.xyxy, np.float32).reshape(-1, 4), np.asarray(dets.scores, np.float32).reshape(-1)

    def _prepare(self, item: Any, frame: int | None, image: np.ndarray, focal: float,
                 timings: dict[str, float]) -> _Frame:
        """Detect, estimate keypoints and cut crops for one image."""
        from metahmr_cli.geometry.camera import CropInfo
        from metahmr_cli.geometry.crop import apply_affine, box_from_xyxy, normalize_crop_keypoints, warp_crop

        H, W = image.shape[:2]
        K = np.array([[focal, 0.0, W / 2.0], [0.0, focal, H / 2.0], [0.0, 0.0, 1.0]], np.float32)
        with _Timer(timings, "detect"):
            boxes, scores = self._detect(item, frame, image)
        n = len(boxes)
        if n:
            with _Timer(timings, "keypoints"):
                kp = np.asarray(self.keypoint_stage(image, boxes, path=Path(item.path), frame=frame), np.float32)
            if kp.shape != (n, 49, 3):
                raise MetaHMRError(f"keypoint backend returned shape {kp.shape}, expected ({n}, 49, 3)")
            kp = np.where(np.isfinite(kp), kp, 0.0).astype(np.float32)
        else:
            kp = np.zeros((0, 49, 3), np.float32)
        fr = _Frame(item=item, frame=frame, image=image, K=K, boxes=boxes, scores=scores, keypoints=kp,
                    timings=timings)
        if n:
            with _Timer(timings, "crop"):
                center, scale = box_from_xyxy(boxes.astype(np.float64), margin=BBOX_MARGIN_DETECTOR)
                center = np.asarray(center, np.float64).reshape(n, 2)
                scale = np.asarray(scale, np.float64).reshape(n)
                fr.crop_info = CropInfo.from_boxes(center, scale, np.array([H, W], np.float64),
                                                   np.full(n, focal), dtype=torch.float64)
                trans = fr.crop_info.crop_trans.numpy()
                kp_crop = np.concatenate([apply_affine(kp[..., :2].astype(np.float64), trans), kp[..., 2:]], -1)
                kp_crop = normalize_crop_keypoints(kp_crop)
                kp_crop[kp[..., 2] <= 0] = 0.0
                fr.kp_crop = torch.from_numpy(kp_crop)
                if self._network_input == "keypoints":  # the open model reads the keypoints, not the pixels
                    fr.crops = fr.kp_crop.clone()
                else:
                    crops = np.stack([warp_crop(image, center[i], float(scale[i])) for i in range(n)])
                    crops = (crops.astype(np.float32) / 255.0 - _MEAN) / _STD
                    fr.crops = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()
        return fr

    def _regress(self, frames: list[_Frame]) -> dict[int, Exception]:
        """Networks + TTO for all people of ``frames`` (in batches of ``batch_size``), filling ``frame.result``.

        When a batch fails, its frames are retried one at a time so that one bad input cannot fail others.
        Returns the errors of the frames that failed alone, keyed by ``id(frame)``.
        """
        errors: dict[int, Exception] = {}
        with_people = [f for f in frames if f.num_people]
        try:
            self._regress_batch(with_people)
        except Exception as exc:  # noqa: BLE001 - isolate the failing input below
            if len(with_people) == 1:
                errors[id(with_people[0])] = exc
            else:
                logger.debug("batch failed; retrying frames one by one", exc_info=True)
                for f in with_people:
                    try:
                        self._regress_batch([f])
                    except Exception as exc1:  # noqa: BLE001
                        errors[id(f)] = exc1
        for f in frames:
            if not f.num_people:
                f.result = self._empty_result(f)
        return errors

    def _regress_batch(self, frames: list[_Frame]) -> None:
        if not frames:
            return
        from metahmr_cli.geometry.camera import CropInfo
        from metahmr_cli.geometry.rotation import rotmat_to_axis_angle
        from metahmr_cli.tto import TTOInputs, run_tto

        dev, dt = self.device, self.dtype
        images = torch.cat([f.crops for f in frames])
        crop = CropInfo.cat([f.crop_info for f in frames])
        kp = torch.cat([f.kp_crop for f in frames])
        counts = [f.num_people for f in frames]
        total = sum(counts)
        bs = self.config.batch_size
        parts: list[dict[str, np.ndarray]] = []
        t0 = time.perf_counter()
        for s in range(0, total, bs):
            inputs = TTOInputs(images=images[s:s + bs].to(dev, dt), crop=crop[s:s + bs].to(dev, dt),
                               keypoints2d=kp[s:s + bs].to(dev, dt))
            res = run_tto(self.networks.main, self.networks.aux, self.body, inputs, self.config.tto)
            with torch.no_grad():
                rotmat = res.rotmat.detach()
                aa = rotmat_to_axis_angle(rotmat)          # (P, 24, 3)
                transl = res.transl.detach()
                parts.append({
                    "global_orient": aa[:, 0],
                    "body_pose": aa[:, 1:].reshape(-1, 69),
                    "betas": res.betas.detach(),
                    "transl": transl,
                    "joints3d": res.joints.detach() + transl[:, None],
                    "vertices": res.vertices.detach() + transl[:, None],
                    "tto_steps": res.steps,
                    "reproj_error_before": res.reproj_before.detach(),
                    "reproj_error_after": res.reproj_after.detach(),
                    "tto_converged": res.converged,
                    "fell_back": res.fell_back | res.reverted,
                })
        elapsed = time.perf_counter() - t0
        merged = {k: np.concatenate([p[k].cpu().numpy() for p in parts]) for k in parts[0]}
        start = 0
        for f, n in zip(frames, counts, strict=True):
            sl = slice(start, start + n)
            start += n
            f.timings["tto"] += elapsed * n / total
            f.result = self._make_result(f, {k: v[sl] for k, v in merged.items()})

    def _meta(self, f: _Frame) -> dict[str, Any]:
        from metahmr_cli.config import config_to_dict

        tto = self.config.tto
        return {
            "body_model": getattr(self.body, "name", "smpl"),
            "gender": getattr(self.body, "gender", self.config.gender),
            "checkpoint": self._checkpoint_id,
            "tto_schedule": self._schedule_label,
            "tto_config": config_to_dict(tto),
            "frame_index": -1 if f.frame is None else int(f.frame),
            "focal_rule": f.focal_rule,
            "model_tier": self.tier,
        }

    def _make_result(self, f: _Frame, v: dict[str, np.ndarray]) -> FrameResult:
        H, W = f.image.shape[:2]
        return FrameResult(
            source=str(f.item.path), image_size=(H, W), K=f.K, global_orient=v["global_orient"],
            body_pose=v["body_pose"], betas=v["betas"], transl=v["transl"], joints3d=v["joints3d"],
            keypoints2d=f.keypoints, bbox=f.boxes, det_score=f.scores, tto_steps=v["tto_steps"],
            reproj_error_before=v["reproj_error_before"], reproj_error_after=v["reproj_error_after"],
            tto_converged=v["tto_converged"], fell_back=v["fell_back"],
            vertices=v["vertices"], **self._meta(f),
        )

    def _empty_result(self, f: _Frame) -> FrameResult:
        H, W = f.image.shape[:2]
        nv = int(getattr(self.body, "num_vertices", 0) or len(getattr(self.body, "v_template", [])))
        return FrameResult.empty(str(f.item.path), (H, W), f.K, num_vertices=nv or None, **self._meta(f))

    # -------------------------------------------------------------------------------------------- outputs
    def _write_frame(self, f: _Frame, out: Path, name: str) -> list[str]:
        cfg = self.config
        res = f.result
        assert res is not None
        verts = res.vertices
        if not cfg.save_vertices:
            res.vertices = None
        outputs = [name]
        stem = Path(name).with_suffix("").name
        mesh_names = [f"{stem}_person{i:02d}.{cfg.save_mesh}" for i in range(res.num_people)] \
            if cfg.save_mesh != "none" and f.frame is None else []
        try:
            with _Timer(f.timings, "write"):
                write_result_npz(out / name, res)
                if mesh_names:
                    from metahmr_cli.io.meshes import write_person_meshes

                    write_person_meshes(out / stem, verts, self._faces, cfg.save_mesh,
                                        colors=person_colors(res.num_people))
        except BaseException:
            for n in outputs + mesh_names:
                with contextlib.suppress(OSError):
                    (out / n).unlink()
            raise
        finally:
            res.vertices = verts
        return outputs + mesh_names

    def _disable_render(self, exc: Exception) -> None:
        self.render_enabled = False
        self.render_disabled_reason = str(exc)
        msg = f"renders disabled for the rest of the run: {exc}"
        self.warnings.append(msg)
        logger.warning(msg)

    def _draw(self, f: _Frame) -> tuple[np.ndarray, np.ndarray | None]:
        res = f.result
        assert res is not None and self.renderer is not None
        verts = res.vertices if res.vertices is not None else np.zeros((0, 1, 3), np.float32)
        overlay = self.renderer.render_overlay(f.image, verts, self._faces, f.K)
        side = None
        if self.config.side_view:
            side = self.renderer.render_side_view(f.image.shape[:2], verts, self._faces, f.K)
        return overlay, side

    def _render_image(self, f: _Frame, out: Path) -> list[str]:
        if not self.render_enabled:
            return []
        stem = f.item.stem
        try:
            with _Timer(f.timings, "render"):
                overlay, side = self._draw(f)
                outputs = [write_image_atomic(out / f"{stem}_overlay.png", overlay).name]
                if side is not None:
                    outputs.append(write_image_atomic(out / f"{stem}_side.png", side).name)
        except RendererUnavailable as exc:
            self._disable_render(exc)
            return []
        return outputs

    def _render_video_frame(self, f: _Frame, writers: dict[str, Any]) -> None:
        if not self.render_enabled or not writers:
            return
        try:
            with _Timer(f.timings, "render"):
                overlay, side = self._draw(f)
                writers["overlay"].write(overlay)
                if side is not None and "side" in writers:
                    writers["side"].write(side)
        except RendererUnavailable as exc:
            self._disable_render(exc)
