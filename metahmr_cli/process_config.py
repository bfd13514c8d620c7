"""Settings of ``metahmr process`` and of the :class:`~metahmr_cli.estimator.Estimator` (one dataclass), their
validation, and the defaults that turn them into concrete choices (detector thresholds).

Validation changes no setting's type: :meth:`ProcessConfig.validate` checks every setting (it only normalises
``save_mesh`` into the tuple its field declares); ``focal``, which may be a number, a number written as a string or a
rule word, is read parsed through :attr:`ProcessConfig.camera`. The focal rule itself lives in
:mod:`metahmr_cli.geometry.camera`, the device rule in :mod:`metahmr_cli.devices`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from metahmr_cli.config import check_types
from metahmr_cli.devices import resolve_device
from metahmr_cli.distributed.settings import BACKENDS, RaySettings
from metahmr_cli.errors import ConfigError
from metahmr_cli.exports import MESH_FORMATS as FORMATS
from metahmr_cli.exports import parse_formats
from metahmr_cli.geometry.camera import FOCAL_RULES, CameraSettings, parse_focal
from metahmr_cli.keypoints.people import PeopleSettings
from metahmr_cli.tto.config import TTOConfig
from metahmr_cli.video.motion import VideoSettings

__all__ = [
    "DETECTOR_DEFAULTS",
    "FOCAL_RULES",
    "KEYPOINT_BACKENDS",
    "MESH_FORMATS",
    "STAGES",
    "YOLO_DEFAULTS",
    "ProcessConfig",
]

STAGES: tuple[str, ...] = ("decode", "detect", "keypoints", "evidence", "crop", "tto", "smooth", "write", "render")
"""Timed stages. ``evidence`` is the open model's image evidence (BlazePose and the face check on each person's crop);
``tto`` includes the forward passes of the networks (plain regression when ``--tto none``);
``smooth`` is the temporal filter of videos."""
KEYPOINT_BACKENDS: tuple[str, ...] = (
    "auto", "rtmpose", "yolo-pose", "mediapipe", "movenet", "movenet-thunder", "openpose-json", "coco-json", "mmpose")
DETECTOR_DEFAULTS: dict[str, tuple[float, float]] = {"movenet": (0.2, 8.0), "finder": (0.25, 8.0),
                                                     "centernet": (0.3, 8.0)}
"""Detector -> (score threshold, smallest box side in px) where they differ from YOLO's (0.5, 16): MoveNet's
person scores of clearly visible people are 0.2-0.7, CenterNet's 0.3-0.8 (0.2-0.3 for people 30 px tall), and the
pedestrians of small video frames are 8-16 px. The finder checks every box with MoveNet Thunder, so it can take
CenterNet boxes from 0.25."""
YOLO_DEFAULTS = (0.5, 16.0)
MESH_FORMATS: tuple[str, ...] = ("none", "obj", "ply", "glb")

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
        detector: "auto" (YOLO when its weights are installed and the tier is paper, else the people finder), a
            YOLO weight file name/path (or a ``.yaml`` config: random weights, tests only), or
            ``"mediapipe"``: MediaPipe's bundled single-person detector (offline, one person per image), or
            ``"finder"``: the open people finder (CenterNet boxes and MoveNet MultiPose at several sizes and on
            tiles, each checked by MoveNet Thunder; :mod:`metahmr_cli.keypoints.people`), or ``"centernet"``:
            CenterNet's person boxes alone, or ``"movenet"``: MoveNet MultiPose alone (one input size, up to 6
            people). The open models come from ``metahmr weights fetch-open``.
        det_conf / det_iou: detection score threshold / NMS IoU (None: the detector's default, 0.5 for YOLO,
            0.25 for the finder, 0.3 for CenterNet, 0.2 for MoveNet); max_people: most people per image (None = all);
        min_box: smallest box side in pixels (None: 16, or 8 for the open detectors).
        people: the people finder's input sizes, tiles and thresholds (:class:`PeopleSettings`).
        keypoints: 2D keypoint backend ("auto": RTMPose when installed and the tier is paper, else
            ``movenet-thunder``: MoveNet Thunder on each person's crop); keypoints_model: its model file (None:
            the backend's default).
        boxes_json / keypoints_json: import boxes / keypoints instead of running the detector / estimator.
        focal: focal length in pixels for every input, "diagonal" (default: f = sqrt(W^2 + H^2), the rule CLIFF
            and Meta-HMR were trained and evaluated with) or "exif" (the photo's 35 mm focal length when it
            has one, else the diagonal rule); fov: horizontal field of view in degrees (f = W / 2 / tan(fov / 2)).
            Every result records which rule gave its focal length.
        tto: test-time optimisation settings.
        batch_size: people per network/TTO batch (collected across images and video frames).
        device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N"; dtype: "float32" or "float64".
        render: write overlays (PNG per image, MP4 per video); side_view: also a side view.
        save_mesh: per-person mesh files, any of "obj", "ply", "glb" (a tuple, or a comma-separated string such as
            "glb,obj"; "none" or empty: none). A re-run writes the formats it lacks from the stored results and
            keeps the meshes an earlier run wrote.
        save_vertices: store vertices (P, V, 3) in the result files.
        overwrite: redo inputs whose outputs are already complete.
        video_stride: process every n-th video frame; max_frames: most frames per video (None = all).
        video: how videos are followed over time: tracking, warm-started TTO, smoothing and the per-track exports
            (:class:`~metahmr_cli.video.motion.VideoSettings`).
        max_render_side: overlays of larger images are rendered at this longer side.
        max_pixels: largest image (width x height) decoded; larger files fail with a clear reason.
        prefetch: images read, detected and given keypoints ahead, in a background thread, while the networks and
            TTO run on the current batch; the outputs of a batch written and rendered by another thread while the
            next batch runs; video frames decoded ahead. 0 = every stage in turn; None = 4 on a GPU and 0 on a CPU
            (there the stages compete for the same cores: no gain measured on 2 cores). Results do not depend on it.
        wait: wait for another run writing to ``out`` instead of stopping with an error.
        self_aux: let a single-network checkpoint (official CLIFF, SPIN) serve as its own auxiliary network for the
            Meta-HMR schedules; refused otherwise, and outputs say ``<schedule>+self-aux``.
        backend: "local" (this process) or "ray" (Ray Data workers on a Ray cluster, the same outputs:
            :mod:`metahmr_cli.distributed`); ray: its settings (:class:`~metahmr_cli.distributed.RaySettings`).
            ``metahmr process`` picks the runner from it; :class:`~metahmr_cli.pipeline.Pipeline` always runs in its
            own process and :class:`~metahmr_cli.distributed.ray_backend.RayRunner` on Ray. Neither setting changes
            results, so
            neither is part of the settings fingerprint (a local run resumes a Ray run and the other way round).
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
    people: PeopleSettings = field(default_factory=PeopleSettings)
    keypoints: Literal["auto", "rtmpose", "yolo-pose", "mediapipe", "movenet", "movenet-thunder", "openpose-json",
                       "coco-json", "mmpose"] = "auto"
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
    save_mesh: tuple[str, ...] = ()
    save_vertices: bool = True
    overwrite: bool = False
    video_stride: int = 1
    max_frames: int | None = None
    video: VideoSettings = field(default_factory=VideoSettings)
    max_render_side: int = 2048
    self_aux: bool = False
    max_pixels: int = 100_000_000
    wait: bool = False
    prefetch: int | None = None
    backend: Literal["local", "ray"] = "local"
    ray: RaySettings = field(default_factory=RaySettings)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the bad setting and what is allowed (inputs included)."""
        if not self.inputs:
            raise ConfigError("No inputs given: pass images, videos, folders or glob patterns.")
        self.validate_settings()

    def validate_settings(self) -> None:
        """Check every setting except the inputs (what an :class:`~metahmr_cli.estimator.Estimator` uses); only
        ``save_mesh`` is normalised (a comma-separated string into the tuple of formats)."""
        check_types(self)
        if self.keypoints not in KEYPOINT_BACKENDS:
            raise ConfigError(f"keypoints = {self.keypoints!r}; choose one of {', '.join(KEYPOINT_BACKENDS)}.")
        self.save_mesh = parse_formats(self.save_mesh, FORMATS, "save_mesh")  # the declared type: a tuple
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}.")
        focal = parse_focal(self.focal)
        if self.model not in ("auto", "paper", "open"):
            raise ConfigError(f"model = {self.model!r}; choose auto, paper or open.")
        if self.fov is not None and not 0 < self.fov < 180:
            raise ConfigError(f"fov must be in (0, 180) degrees, got {self.fov}.")
        if focal is not None and self.fov is not None:
            raise ConfigError("Give either focal or fov, not both.")
        if (self.det_conf is not None and not 0 <= self.det_conf <= 1) or not 0 <= self.det_iou <= 1:
            raise ConfigError(f"det_conf and det_iou must be in [0, 1], got {self.det_conf}, {self.det_iou}.")
        if self.min_box is not None and not self.min_box >= 0:
            raise ConfigError(f"min_box must be >= 0 pixels, got {self.min_box}.")
        if self.max_people is not None and self.max_people < 1:
            raise ConfigError(f"max_people must be >= 1 (or unset), got {self.max_people}.")
        if self.max_pixels < 1:
            raise ConfigError(f"max_pixels must be >= 1, got {self.max_pixels}.")
        if self.prefetch is not None and self.prefetch < 0:
            raise ConfigError(f"prefetch must be >= 0 (0 = off), got {self.prefetch}.")
        if self.video_stride < 1:
            raise ConfigError(f"video_stride must be >= 1, got {self.video_stride}.")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype = {self.dtype!r}; choose float32 or float64.")
        if self.keypoints in ("openpose-json", "coco-json") and self.keypoints_json is None:
            raise ConfigError(f"--keypoints {self.keypoints} needs --keypoints-json FILE.")
        resolve_device(self.device)
        self.people.validate()
        self.tto.validate()
        self.video.validate()
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend = {self.backend!r}; choose one of {', '.join(BACKENDS)}.")
        self.ray.validate()


    @property
    def camera(self) -> CameraSettings:
        """The parsed ``focal`` / ``fov`` (:func:`~metahmr_cli.geometry.camera.camera_for` takes them)."""
        return CameraSettings(focal=parse_focal(self.focal), fov=self.fov)

    def resolved(self) -> ProcessConfig:
        """A copy with ``focal`` in its parsed form (a number given as a string becomes a float), as run summaries
        record it."""
        return replace(self, focal=self.camera.focal)
