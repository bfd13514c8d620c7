"""The estimator: images in memory -> people with their body meshes, with every model loaded once.

    from metahmr_cli import Estimator
    est = Estimator.from_config(device="cpu")          # any ProcessConfig setting; loads the models once
    people = est(image)                                  # image: (H, W, 3) uint8 RGB numpy array
    people.vertices                                      # (P, V, 3) camera-frame metres
    batch = est.estimate_batch([img1, img2, img3])       # people of several images batched through the networks

Stages, each injectable (tests and servers can pass their own objects)::

    detect (detect/, or given boxes) -> 2D keypoints (keypoints/, or given keypoints) -> crops + camera (geometry)
      -> main/aux networks + test-time optimisation (tto.run_tto, people batched across images) -> People

Beside it: :mod:`metahmr_cli.stages` checks and loads the detector and keypoint backend, :mod:`metahmr_cli.api_checks`
checks what a caller gives, :func:`metahmr_cli.geometry.camera.camera_for` gives each image its camera, and
:func:`metahmr_cli.tto.run_tto` runs the schedule the estimator resolves once (:attr:`Estimator.schedule`). Files,
folders, videos, resume, manifests and renders belong to the batch runner (:class:`metahmr_cli.pipeline.Pipeline`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

# the body and network loaders and run_tto are looked up at call time (tests and tools replace them)
import metahmr_cli.body.smpl as smpl
import metahmr_cli.models as models
import metahmr_cli.tto as tto_lib
from metahmr_cli.api_checks import check_boxes, check_finite_people, check_focal, check_keypoints
from metahmr_cli.assets import body_dir, resolve_asset
from metahmr_cli.config import apply_overrides
from metahmr_cli.constants import BBOX_MARGIN_DETECTOR, IMAGENET_MEAN, IMAGENET_STD
from metahmr_cli.detect import Detections, filter_detections
from metahmr_cli.devices import resolve_device
from metahmr_cli.errors import AssetNotFoundError, ConfigError, InputError, MetaHMRError
from metahmr_cli.geometry.camera import CameraSettings, CropInfo, camera_for, intrinsics
from metahmr_cli.geometry.crop import apply_affine, box_from_xyxy, normalize_crop_keypoints, warp_crop
from metahmr_cli.geometry.rotation import rotmat_to_axis_angle
from metahmr_cli.io.sources import check_image
from metahmr_cli.io.writers import NO_KEYPOINTS
from metahmr_cli.keypoints import load_keypoints
from metahmr_cli.keypoints.evidence import (
    OPEN_KEYPOINT_MIN_CONF,
    BlazePoseEvidence,
    PersonEvidence,
    drop_unreliable_keypoints,
    pack_network_input,
    resolve_left_right,
)
from metahmr_cli.process_config import DETECTOR_DEFAULTS, YOLO_DEFAULTS, ProcessConfig
from metahmr_cli.stages import (
    EstimatorStage,
    KeypointStage,
    build_detector,
    build_keypoint_stage,
    check_detector_files,
    check_keypoint_model,
)
from metahmr_cli.tiers import choose_tier
from metahmr_cli.tto import ResolvedSchedule, TTOConfig, TTOInputs, resolve_schedule, usable_keypoints

logger = logging.getLogger(__name__)

__all__ = ["Dropped", "Estimator", "EstimatorStage", "Frame", "KeypointStage", "People", "StageTimer",
           "check_keypoint_model"]

_MEAN = np.asarray(IMAGENET_MEAN, np.float32)
_STD = np.asarray(IMAGENET_STD, np.float32)


# ------------------------------------------------------------------------------------------------------ results


class StageTimer:
    """``with StageTimer(timings, "detect"):`` adds the block's wall time to ``timings["detect"]``."""

    def __init__(self, sink: dict[str, float], stage: str) -> None:
        self.sink, self.stage = sink, stage

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.sink[self.stage] += time.perf_counter() - self.t0


@dataclass
class Dropped:
    """People found in an image who get no mesh, and why (leading axis R, possibly 0).

    Attributes:
        boxes: (R, 4) person boxes x1, y1, x2, y2 in image pixels; scores: (R,) detector confidences.
        keypoints2d: (R, 49, 3) their 2D evidence (image px + confidence).
        reason: (R,) str: ``"no_keypoints"``, fewer usable keypoints than ``tto.min_keypoints`` (keypoints with a
            confidence above 0 in the slots the 2D fit reads, :func:`metahmr_cli.tto.usable_keypoints`).
    """

    boxes: np.ndarray
    scores: np.ndarray
    keypoints2d: np.ndarray
    reason: np.ndarray

    def __len__(self) -> int:
        return int(len(self.boxes))

    @classmethod
    def none(cls) -> Dropped:
        """Nobody dropped."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 49, 3), np.float32),
                   np.zeros(0, np.str_))

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Dropped:
        """The ``dropped_*`` keys of a result file (none in files older than schema 1.3)."""
        if "dropped_reason" not in arrays:
            return cls.none()
        return cls(arrays["dropped_bbox"], arrays["dropped_det_score"], arrays["dropped_keypoints2d"],
                   arrays["dropped_reason"])


_ARRAY_FIELDS = ("boxes", "scores", "keypoints2d", "global_orient", "body_pose", "betas", "transl", "vertices",
                 "joints3d", "cam_crop", "tto_steps", "reproj_error_before", "reproj_error_after", "tto_converged",
                 "fell_back", "K")


@dataclass
class People:
    """The people of one image (leading axis P, possibly 0). 3D values are in the camera frame in metres with
    OpenCV axes (x right, y down, z forward), the camera at the origin with intrinsics ``K``.

    Attributes:
        boxes: (P, 4) person boxes x1, y1, x2, y2 in image pixels; scores: (P,) detector confidences.
        keypoints2d: (P, 49, 3) the 2D evidence (image px + confidence, 0 = missing), 49-joint order
            (:data:`metahmr_cli.body.joints.JOINT_NAMES`).
        global_orient: (P, 3) root rotation (axis-angle); body_pose: (P, 69) joints 1..23 (axis-angle);
        betas: (P, 10) shape; transl: (P, 3) translation.
        vertices: (P, V, 3) mesh vertices, translation included; joints3d: (P, 49, 3), translation included.
        cam_crop: (P, 3) the weak-perspective crop camera [s, tx, ty] the network predicted (after TTO).
        tto_steps: (P,) updates taken; reproj_error_before / reproj_error_after: (P,) mean 2D keypoint error
            (px) before and after TTO; tto_converged: (P,) early stop reached; fell_back: (P,) TTO skipped or
            reverted.
        K: (3, 3) intrinsics; image_size: (H, W).
        body_model, checkpoint, tier, tto_schedule, focal_rule: what made the result.
        faces: (F, 3) triangles of the body mesh (shared by every person).
        dropped: the people found in the image who got no mesh, and why (:class:`Dropped`).
    """

    boxes: Any
    scores: Any
    keypoints2d: Any
    global_orient: Any
    body_pose: Any
    betas: Any
    transl: Any
    vertices: Any
    joints3d: Any
    cam_crop: Any
    tto_steps: Any
    reproj_error_before: Any
    reproj_error_after: Any
    tto_converged: Any
    fell_back: Any
    K: Any
    image_size: tuple[int, int]
    body_model: str = ""
    checkpoint: str = ""
    tier: str = ""
    tto_schedule: str = ""
    focal_rule: str = "diagonal"
    faces: np.ndarray | None = field(default=None, repr=False)
    dropped: Dropped = field(default_factory=Dropped.none, repr=False)

    def __len__(self) -> int:
        return int(self.betas.shape[0])

    def __repr__(self) -> str:
        return (f"People(n={len(self)}, image_size={self.image_size}, body={self.body_model!r}, "
                f"tto={self.tto_schedule!r}, tier={self.tier!r})")

    def numpy(self) -> People:
        """A copy whose arrays are numpy arrays."""
        def conv(v: Any) -> Any:
            return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)

        return dataclasses.replace(self, **{k: conv(getattr(self, k)) for k in _ARRAY_FIELDS})

    def to(self, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> People:
        """A copy whose arrays are torch tensors on ``device`` (floating ones cast to ``dtype`` when given)."""
        def conv(v: Any) -> torch.Tensor:
            t = v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            return t.to(device)

        return dataclasses.replace(self, **{k: conv(getattr(self, k)) for k in _ARRAY_FIELDS})

    def __getitem__(self, idx: Any) -> People:
        """Select people (index, slice, mask or index array)."""
        def sel(v: Any) -> Any:
            out = v[idx]
            return out if out.ndim == v.ndim else out[None]

        return dataclasses.replace(self, **{k: sel(getattr(self, k)) for k in _ARRAY_FIELDS if k != "K"})


@dataclass
class Frame:
    """One image (or video frame) on its way through the estimator."""

    source: str                    # what the image is (a path, "<array>" ...)
    frame: int | None              # video frame index or None
    image: np.ndarray              # (H, W, 3) uint8
    K: np.ndarray                  # (3, 3)
    boxes: np.ndarray              # (N, 4)
    scores: np.ndarray             # (N,)
    keypoints: np.ndarray          # (N, 49, 3) full-image px
    crops: torch.Tensor | None = None           # (N, 3, 256, 192) or (N, 49, 3) for a keypoint network
    crop_info: Any = None                       # CropInfo (N)
    kp_crop: torch.Tensor | None = None         # (N, 49, 3) normalised crop coords
    result: People | None = None
    timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    started: float = 0.0
    focal_rule: str = "diagonal"
    item: Any = None               # the runner's input item (files), None for arrays
    track_ids: np.ndarray | None = None   # (N,) video: track id per person (-1 = untracked)
    warm: list[Any] | None = None         # (N,) TTO start state per person (None = the pretrained weights)
    tto_states: list[Any] | None = None   # (N,) TTO end state per person, when asked for
    evidence: Any = None                  # PersonEvidence (N), for a network that reads image evidence
    dropped: Dropped = field(default_factory=Dropped.none)  # people found but given no mesh

    @property
    def num_people(self) -> int:
        return len(self.boxes)


# ------------------------------------------------------------------------------------------------------ estimator


class Estimator:
    """Images in, people with body meshes out, in memory; models are loaded once (see the module docstring).

    Args:
        config: the settings (:class:`~metahmr_cli.process_config.ProcessConfig`; file-level fields such as
            ``inputs`` or ``out`` are ignored here). Keyword ``overrides`` set fields by name.
        detector: object with ``detect(image) -> Detections`` (default: from ``config.detector``).
        keypoints: a :class:`KeypointStage` callable (default: the backend of ``config.keypoints``).
        evidence: callable ``(image, boxes, keypoints) -> PersonEvidence`` for a network that reads image evidence
            beside the keypoints (default: :class:`~metahmr_cli.keypoints.evidence.BlazePoseEvidence`).
        networks: object with ``main``, ``aux``, ``identifier`` and ``kind`` (default: ``load_networks``).
        body: a BodyModel (default: ``load_body_model(config.body)``).
        console: rich console for the one-line tier message (None: logging only).

    Threads: one estimator may be shared by several threads (a server's thread pool). Its set-up runs once; the
    detector and keypoint models serve one call at a time, and so do the networks with TTO (a lock each), so one
    thread's detection can overlap another's TTO. Every call gives exactly the result it gives alone.
    """

    def __init__(self, config: ProcessConfig | None = None, *, detector: Any = None,
                 keypoints: KeypointStage | None = None, networks: Any = None, body: Any = None,
                 console: Any = None, evidence: Any = None, **overrides: Any) -> None:
        cfg = config if config is not None else ProcessConfig()
        if overrides:
            cfg = apply_overrides(cfg, overrides)
        cfg.validate_settings()
        self.config = cfg
        self.camera_settings: CameraSettings = cfg.camera  # the parsed --focal / --fov
        self.device = resolve_device(cfg.device)
        self.dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
        self.detector = detector
        self.keypoint_stage = keypoints
        self.evidence_stage = evidence
        self.uses_evidence = False
        self.networks = networks
        self.body = body
        self.console = console
        self.tier = "custom"
        self.tier_message: str | None = None
        # the TTO settings and their schedule, resolved once (set-up adds what the networks need, in a copy)
        self.tto: TTOConfig = cfg.tto
        self.schedule: ResolvedSchedule = resolve_schedule(cfg.tto)
        self.schedule_label = cfg.tto.schedule
        self.checkpoint_id = ""
        self.network_input = "image"
        self.faces: np.ndarray | None = None
        self.imported_keypoints: Any = None
        self._body_dir: Path | None = None
        self._checkpoint_path: Path | None = None
        self._tier_done = False
        self._setup_done = False
        # Threads (see the class docstring): set-up once; the detector and keypoint model, and the networks with
        # TTO (torch.func transforms, modules switched to eval mode and back) each serve one call at a time.
        self._setup_lock = threading.RLock()
        self._stages_lock = threading.RLock()
        self._networks_lock = threading.RLock()

    @classmethod
    def from_config(cls, config: ProcessConfig | None = None, **overrides: Any) -> Estimator:
        """An estimator with its models loaded (``overrides``: ProcessConfig fields and the stage keywords of
        :class:`Estimator`)."""
        stages = {k: overrides.pop(k) for k in ("detector", "keypoints", "networks", "body", "console", "evidence")
                  if k in overrides}
        est = cls(config, **stages, **overrides)
        est.setup()
        return est

    # -------------------------------------------------------------------------------------------- set-up
    def resolve_tier(self) -> None:
        """Turn every ``auto`` setting into a concrete choice (:func:`metahmr_cli.tiers.choose_tier`): the model
        tier with its body and checkpoint, the detector, the keypoint backend and the detector's thresholds."""
        with self._setup_lock:
            self._resolve_tier()

    def _resolve_tier(self) -> None:
        if self._tier_done:
            return
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
        # the concrete choices go into the estimator's own copy of the settings; the caller's stay as given
        resolved: dict[str, Any] = {"body": choice.body}
        if choice.checkpoint is not None:
            resolved["checkpoint"] = choice.checkpoint
        if needs_detector:
            resolved["detector"] = choice.detector
        if needs_keypoints:
            resolved["keypoints"] = choice.keypoints
        conf, min_box = DETECTOR_DEFAULTS.get(resolved.get("detector", cfg.detector), YOLO_DEFAULTS)
        if cfg.det_conf is None:
            resolved["det_conf"] = conf
        if cfg.min_box is None:
            resolved["min_box"] = min_box
        self.config = dataclasses.replace(cfg, **resolved)
        if self.tier_message:
            logger.info("%s", self.tier_message)
            if self.console is not None:
                self.console.print(self.tier_message, markup=False, highlight=False)
        self._tier_done = True

    def check_assets(self) -> None:
        """Resolve every file the estimator needs; raise one AssetNotFoundError listing all that are missing."""
        with self._setup_lock:
            self._check_assets()

    def _check_assets(self) -> None:
        self.resolve_tier()
        cfg = self.config
        missing: list[str] = []

        def attempt(fn: Any) -> Any:
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
        if self.detector is None and cfg.boxes_json is None and cfg.keypoints_json is None:
            check_detector_files(cfg, attempt)
        if cfg.boxes_json is not None and not Path(cfg.boxes_json).is_file():
            missing.append(f"Boxes file {cfg.boxes_json} (--boxes-json) does not exist.")
        if cfg.keypoints_json is not None and not Path(cfg.keypoints_json).is_file():
            missing.append(f"Keypoints file {cfg.keypoints_json} (--keypoints-json) does not exist.")
        if self.keypoint_stage is None and cfg.keypoints_json is None:
            attempt(lambda: check_keypoint_model(cfg.keypoints, cfg.keypoints_model, cfg.weights))
        if missing:
            n = len(missing)
            head = f"{n} required file{'s are' if n > 1 else ' is'} missing; nothing was processed.\n\n"
            raise AssetNotFoundError(head + "\n\n".join(missing))

    def setup(self) -> Estimator:
        """Check assets, then load the body model, networks, detector and keypoint backend (once)."""
        if self._setup_done:
            return self
        with self._setup_lock:
            if not self._setup_done:  # another thread may have finished it meanwhile
                self._setup()
        return self

    def _setup(self) -> None:
        self.check_assets()
        cfg = self.config
        if self.body is None:
            self.body = smpl.load_body_model(self._body_dir, cfg.gender, device=self.device, dtype=self.dtype,
                                        with_h36m=False)
        self.body = self.body.to(device=self.device, dtype=self.dtype).eval()
        self.faces = np.asarray(self.body.faces, dtype=np.int64)
        if self.networks is None:
            mean_params = None
            if self._body_dir is not None:
                with contextlib.suppress(FileNotFoundError, AssetNotFoundError):
                    mean_params = smpl.load_mean_params(self._body_dir)
            self.networks = models.load_networks(self._checkpoint_path, device=self.device, dtype=self.dtype,
                                          mean_params=mean_params)
        for net in (self.networks.main, self.networks.aux):
            if net is not None:
                net.to(device=self.device, dtype=self.dtype).eval()
        self.checkpoint_id = str(getattr(self.networks, "identifier", "") or "")
        self.network_input = str(getattr(self.networks.main, "input_kind", "image"))
        self.uses_evidence = bool(getattr(getattr(self.networks.main, "backbone", None), "evidence", False))
        self._resolve_tto()
        if cfg.keypoints_json is not None and self.keypoint_stage is None:
            fmt = "coco17" if cfg.keypoints == "coco-json" else None
            self.imported_keypoints = load_keypoints(cfg.keypoints_json, fmt=fmt)
        if self.detector is None and cfg.boxes_json is None and cfg.keypoints_json is None:
            self.detector = build_detector(cfg, str(self.device))
        if self.keypoint_stage is None and self.imported_keypoints is None:
            self.keypoint_stage = build_keypoint_stage(cfg, str(self.device))
        if self.uses_evidence and self.evidence_stage is None:
            self.evidence_stage = BlazePoseEvidence()
        self._setup_done = True

    def _resolve_tto(self) -> None:
        """The TTO settings the networks need, and their schedule, resolved once: :attr:`tto` and :attr:`schedule`,
        passed to :func:`~metahmr_cli.tto.run_tto` and recorded by the writers. The caller's config is not changed:
        :attr:`config` becomes a copy holding these TTO settings."""
        tto = self.tto
        inner = getattr(self.networks, "inner_loop", None)
        if inner is not None and tto.inner_loop is None:
            # TTO starts with the inner loop the networks were meta-trained with (their checkpoint's record)
            tto = dataclasses.replace(tto, inner_loop=inner)
            self.schedule = resolve_schedule(tto)
        self.tto = tto
        self._check_auxiliary()
        # The camera of the TTO losses must fit the network: an HMR-architecture checkpoint predicts the SPIN crop
        # camera (focal 5000, 256 px box), CLIFF the one of the full image (the written transl is full-image in both).
        arch = getattr(self.networks.main, "arch", None)
        if arch in ("cliff", "hmr") and tto.camera != arch:
            logger.info("TTO camera set to %r to fit the %s network", arch, arch)
            tto = dataclasses.replace(tto, camera=arch)  # the schedule does not depend on the camera
        self.tto = tto
        self.config = dataclasses.replace(self.config, tto=tto)

    def _check_auxiliary(self) -> None:
        """A single-network checkpoint (official CLIFF, SPIN) has no auxiliary net: the Meta-HMR schedules would
        use the network as its own pseudo mesh. Refuse unless asked for, and then label the outputs so."""
        cfg = self.config
        kind = getattr(self.networks, "kind", "metahmr")
        if kind == "metahmr" or not self.schedule.needs_aux:
            self.schedule_label = cfg.tto.schedule
            return
        if not cfg.self_aux:
            raise ConfigError(
                f"checkpoint {self.checkpoint_id or cfg.checkpoint} holds a single network ({kind}), but "
                f"--tto {cfg.tto.schedule} needs Meta-HMR's auxiliary network for its pseudo mesh. Use a Meta-HMR "
                "checkpoint, or --tto eft / --tto none with this one, or --self-aux to let the network be its own "
                f"auxiliary net (outputs are labelled '{cfg.tto.schedule}+self-aux', not Meta-HMR).")
        self.schedule_label = f"{cfg.tto.schedule}+self-aux"
        note = (f"checkpoint {self.checkpoint_id or cfg.checkpoint}: a single network ({kind}) serving as its own "
                f"auxiliary network (--self-aux); outputs say tto_schedule={self.schedule_label}, "
                f"model_tier={self.tier}")
        logger.info("%s", note)
        if self.console is not None:
            self.console.print(note, markup=False, highlight=False)

    def supports_warm_start(self) -> bool:
        """Whether TTO can start from a given adapted state per person (a schedule that adapts each person's own
        weights; "reference" shares one copy per batch of 20 and "none" adapts nothing)."""
        sched = self.schedule
        return bool(sched.phases) and sched.grouping == "person"

    @property
    def body_name(self) -> str:
        return str(getattr(self.body, "name", "smpl"))

    @property
    def num_vertices(self) -> int:
        return int(getattr(self.body, "num_vertices", 0) or len(getattr(self.body, "v_template", [])))

    # -------------------------------------------------------------------------------------------- per image
    def _detect(self, image: np.ndarray, boxes: Any, scores: Any,
                keypoints_given: bool = False) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        H, W = image.shape[:2]
        if boxes is not None:
            b = np.asarray(boxes, np.float32).reshape(-1, 4)
            s = np.ones(len(b), np.float32) if scores is None else np.asarray(scores, np.float32).reshape(-1)
            dets = filter_detections(Detections(b, s), min_box_size=cfg.min_box, max_people=cfg.max_people,
                                     image_size=(W, H))
            if keypoints_given and len(dets) != len(b):
                raise InputError(f"{len(b) - len(dets)} of the {len(b)} given boxes are smaller than min_box "
                                 f"({cfg.min_box} px) or over max_people, so the given keypoints no longer match "
                                 "the people; give only the boxes to use, or lower min_box.")
        else:
            if self.detector is None:
                raise ConfigError("no detector: give boxes=..., or build the estimator with a detector.")
            dets = filter_detections(self.detector.detect(image), min_score=cfg.det_conf, min_box_size=cfg.min_box,
                                     max_people=cfg.max_people, image_size=(W, H))
        return np.asarray(dets.xyxy, np.float32).reshape(-1, 4), np.asarray(dets.scores, np.float32).reshape(-1)

    def prepare(self, image: Any, *, source: str = "<array>", frame: int | None = None,
                focal: float | None = None, exif_focal: float | None = None, boxes: Any = None, scores: Any = None,
                keypoints: Any = None, timings: dict[str, float] | None = None, item: Any = None,
                path: Path | None = None,
                people_hook: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
                camera: tuple[np.ndarray, str] | None = None) -> Frame:
        """Detect, estimate keypoints and cut crops for one image (no networks yet).

        Args:
            image: (H, W, 3) uint8 RGB.
            focal: focal length in px (None: the configured rule, :func:`~metahmr_cli.geometry.camera.camera_for`).
            exif_focal: the photo's EXIF focal length in px (used with ``focal="exif"`` in the settings).
            boxes, scores: (N, 4) person boxes in px (and (N,) scores) instead of the detector.
            keypoints: (N, 49, 3) keypoints in px + confidence instead of the keypoint backend (needs ``boxes``).
            people_hook: called as ``hook(boxes, scores, keypoints)`` once the people are known (also with none),
                returns the keypoints to use (a video runner tracks the people and smooths their keypoints here).
            camera: ``(K, rule)`` from :func:`~metahmr_cli.geometry.camera.camera_for`, instead of ``focal`` (a video
                runner finds its camera once per video).

        Raises:
            InputError: a given value that cannot be used, named with the fix: a focal length that is not a finite
                number > 0 (or absurdly long), boxes that are not (N, 4) finite x1 < x2, y1 < y2 near the image,
                scores outside [0, 1], keypoints that are not (N, 49, 3) finite values with confidences in [0, 1]
                near the image.
        """
        self.setup()
        image = check_image(image)
        timings = timings if timings is not None else defaultdict(float)
        H, W = image.shape[:2]
        if camera is not None:
            K64, rule = camera
        elif focal is None:
            K64, rule = camera_for(W, H, self.camera_settings, exif_focal)
        else:
            K64, rule = intrinsics(check_focal(focal, (H, W)), W, H), "focal"
        focal = float(K64[0, 0])
        if boxes is not None:
            boxes, scores = check_boxes(boxes, scores, (H, W))
        elif scores is not None:
            raise InputError("scores were given without boxes; give boxes=... with them (or neither).")
        if keypoints is not None and boxes is None:
            raise InputError("keypoints were given without boxes; give boxes=... for the people they belong to.")
        K = np.asarray(K64, np.float32)
        with self._stages_lock:  # detector and keypoint models: one call at a time
            boxes_px, det_scores, kp = self._people_of(image, boxes, scores, keypoints, timings, (H, W),
                                                       path or Path(source), frame)
        n = len(boxes_px)
        dropped = Dropped.none()
        if self.uses_evidence:  # the keypoints the detector only guessed go first: they are not evidence
            kp = drop_unreliable_keypoints(kp, (H, W), OPEN_KEYPOINT_MIN_CONF)
        if n:
            boxes_px, det_scores, kp, dropped = self._drop_without_keypoints(boxes_px, det_scores, kp, source)
            n = len(boxes_px)
        evidence = None
        if self.uses_evidence:
            with self._stages_lock:  # BlazePose and the face detector: one call at a time
                kp, evidence = self._with_evidence(image, boxes_px, kp, timings)
        if people_hook is not None:
            kp = np.asarray(people_hook(boxes_px, det_scores, kp), np.float32).reshape(n, 49, 3)
        fr = Frame(source=source, frame=frame, image=image, K=K, boxes=boxes_px, scores=det_scores, keypoints=kp,
                   timings=timings, focal_rule=rule, item=item, evidence=evidence, dropped=dropped)
        if n:
            with StageTimer(timings, "crop"):
                center, scale = box_from_xyxy(boxes_px.astype(np.float64), margin=BBOX_MARGIN_DETECTOR)
                center = np.asarray(center, np.float64).reshape(n, 2)
                scale = np.asarray(scale, np.float64).reshape(n)
                fr.crop_info = CropInfo.from_boxes(center, scale, np.array([H, W], np.float64),
                                                   np.full(n, focal), dtype=torch.float64)
                trans = fr.crop_info.crop_trans.numpy()
                kp_crop = np.concatenate([apply_affine(kp[..., :2].astype(np.float64), trans), kp[..., 2:]], -1)
                kp_crop = normalize_crop_keypoints(kp_crop)
                kp_crop[kp[..., 2] <= 0] = 0.0
                fr.kp_crop = torch.from_numpy(kp_crop)
                if self.network_input == "keypoints" and evidence is not None:  # keypoints + image evidence
                    fr.crops = torch.from_numpy(pack_network_input(kp_crop, evidence)).to(torch.float64)
                elif self.network_input == "keypoints":  # the open model reads the keypoints, not the pixels
                    fr.crops = fr.kp_crop.clone()
                else:
                    crops = np.stack([warp_crop(image, center[i], float(scale[i])) for i in range(n)])
                    crops = (crops.astype(np.float32) / 255.0 - _MEAN) / _STD
                    fr.crops = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()
        return fr

    def _with_evidence(self, image: np.ndarray, boxes: np.ndarray, kp: np.ndarray,
                       timings: dict[str, float]) -> tuple[np.ndarray, Any]:
        """For a network that reads image evidence: look at each person's crop (BlazePose, face) and undo left/right
        swaps the evidence contradicts (:mod:`metahmr_cli.keypoints.evidence`). Returns (keypoints, evidence)."""
        if len(boxes) == 0:
            return kp, PersonEvidence.empty(0)
        with StageTimer(timings, "evidence"):
            evidence = self.evidence_stage(image, boxes, kp)
        kp, swapped = resolve_left_right(kp, evidence)
        if swapped.any():
            logger.debug("left/right labels of %d people swapped back after the image evidence", int(swapped.sum()))
        return kp, evidence

    def _people_of(self, image: np.ndarray, boxes: Any, scores: Any, keypoints: Any, timings: dict[str, float],
                   image_hw: tuple[int, int], path: Path,
                   frame: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, 4) boxes, (N,) scores and (N, 49, 3) keypoints of the people of an image (given or estimated)."""
        H, W = image_hw
        with StageTimer(timings, "detect"):
            boxes_px, det_scores = self._detect(image, boxes, scores, keypoints_given=keypoints is not None)
        n = len(boxes_px)
        if n:
            with StageTimer(timings, "keypoints"):
                if keypoints is not None:
                    # the boxes were sorted by decreasing score (all kept: _detect checked it); the keypoints follow
                    order = np.argsort(-np.asarray(scores, np.float32), kind="stable")
                    kp = check_keypoints(keypoints, n, (H, W))[order]
                else:
                    if self.keypoint_stage is None:
                        raise ConfigError("no keypoint backend: give keypoints=..., or build the estimator with one.")
                    kp = np.asarray(self.keypoint_stage(image, boxes_px, path=path, frame=frame),
                                    np.float32)
            if kp.shape != (n, 49, 3):
                raise MetaHMRError(f"keypoints have shape {kp.shape}, expected ({n}, 49, 3) for {n} people")
            kp = np.where(np.isfinite(kp), kp, 0.0).astype(np.float32)
        else:
            kp = np.zeros((0, 49, 3), np.float32)
        return boxes_px, det_scores, kp

    def _drop_without_keypoints(self, boxes: np.ndarray, scores: np.ndarray, kp: np.ndarray,
                                source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, Dropped]:
        """Split off the people with fewer usable keypoints than ``tto.min_keypoints``: they get no mesh.

        The networks would still turn them into a body (the open model, which reads only keypoints, into a tiny
        one), and TTO would keep that regression untouched, so the result would look like a fit and be none.

        Args:
            boxes: (N, 4); scores: (N,); kp: (N, 49, 3) full-image px + confidence.
        Returns:
            the kept boxes, scores and keypoints, and the dropped people.
        """
        tto = self.tto
        counts = usable_keypoints(torch.from_numpy(kp), self.schedule.weights).numpy()
        ok = counts >= tto.min_keypoints
        if ok.all():
            return boxes, scores, kp, Dropped.none()
        logger.info("%s: %d of %d people have fewer than %d usable keypoints: no mesh for them", source,
                    int((~ok).sum()), len(ok), tto.min_keypoints)
        dropped = Dropped(boxes[~ok], scores[~ok], kp[~ok], np.full(int((~ok).sum()), NO_KEYPOINTS))
        return boxes[ok], scores[ok], kp[ok], dropped

    def regress(self, frames: Sequence[Frame]) -> dict[int, Exception]:
        """Networks + TTO for all people of ``frames`` (in batches of ``batch_size``), filling ``frame.result``.

        When a batch fails, its frames are retried one at a time so that one bad input cannot fail others.
        Returns the errors of the frames that failed alone, keyed by ``id(frame)``.
        """
        self.setup()
        with self._networks_lock:
            return self._regress(frames)

    def _regress(self, frames: Sequence[Frame]) -> dict[int, Exception]:
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
                f.result = self._people(f, None)
        return errors

    def _regress_batch(self, frames: Sequence[Frame]) -> None:
        if not frames:
            return
        dev, dt = self.device, self.dtype
        images = torch.cat([f.crops for f in frames])
        crop = CropInfo.cat([f.crop_info for f in frames])
        kp = torch.cat([f.kp_crop for f in frames])
        counts = [f.num_people for f in frames]
        total = sum(counts)
        bs = self.config.batch_size
        # warm starts (video tracks): per person, the TTO state to start from; the end states are kept then
        keep = any(f.warm is not None for f in frames) and self.supports_warm_start()
        warm: list[Any] = []
        for f in frames:
            warm += list(f.warm) if f.warm is not None else [None] * f.num_people
        states: list[Any] = []
        parts: list[dict[str, torch.Tensor]] = []
        t0 = time.perf_counter()
        for s in range(0, total, bs):
            inputs = TTOInputs(images=images[s:s + bs].to(dev, dt), crop=crop[s:s + bs].to(dev, dt),
                               keypoints2d=kp[s:s + bs].to(dev, dt))
            res = tto_lib.run_tto(self.networks.main, self.networks.aux, self.body, inputs, self.tto,
                          start=warm[s:s + bs] if keep else None, keep_weights=keep, schedule=self.schedule)
            states += list(res.adapted) if res.adapted is not None else [None] * len(res)
            with torch.no_grad():
                aa = rotmat_to_axis_angle(res.rotmat.detach())          # (P, 24, 3)
                transl = res.transl.detach()
                parts.append({
                    "global_orient": aa[:, 0],
                    "body_pose": aa[:, 1:].reshape(-1, 69),
                    "betas": res.betas.detach(),
                    "transl": transl,
                    "joints3d": res.joints.detach() + transl[:, None],
                    "vertices": res.vertices.detach() + transl[:, None],
                    "cam_crop": res.cam_crop.detach(),
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
            f.timings["tto"] += elapsed * n / total  # this input's share of the batch
            values = {k: v[sl] for k, v in merged.items()}
            check_finite_people(values, f.source if f.frame is None else f"{f.source} frame {f.frame}")
            f.result = self._people(f, values)
            if keep:
                f.tto_states = states[sl]

    def _people(self, f: Frame, v: dict[str, np.ndarray] | None) -> People:
        H, W = f.image.shape[:2]
        if v is None:
            z = lambda *s: np.zeros((0, *s), np.float32)  # noqa: E731
            v = {"global_orient": z(3), "body_pose": z(69), "betas": z(10), "transl": z(3),
                 "joints3d": z(49, 3), "vertices": z(self.num_vertices, 3), "cam_crop": z(3),
                 "tto_steps": np.zeros(0, np.int64), "reproj_error_before": z(), "reproj_error_after": z(),
                 "tto_converged": np.zeros(0, bool), "fell_back": np.zeros(0, bool)}
        return People(boxes=f.boxes, scores=f.scores, keypoints2d=f.keypoints, K=f.K, image_size=(H, W),
                      body_model=self.body_name, checkpoint=self.checkpoint_id, tier=self.tier,
                      tto_schedule=self.schedule_label, focal_rule=f.focal_rule, faces=self.faces,
                      dropped=f.dropped, **v)

    def repose(self, people: People, rotmat: np.ndarray, betas: np.ndarray, transl: np.ndarray) -> People:
        """``people`` with new body parameters ((P, 24, 3, 3) rotations, (P, 10) betas, (P, 3) translations) and
        the vertices and joints the body model gives for them (e.g. after temporal smoothing)."""
        self.setup()
        p = people.numpy()
        if len(p) == 0:
            return p
        body = self.body
        with self._networks_lock, torch.no_grad():
            rot = torch.as_tensor(np.asarray(rotmat), dtype=body.dtype, device=body.device)
            out = body(rot, torch.as_tensor(np.asarray(betas), dtype=body.dtype, device=body.device),
                       torch.as_tensor(np.asarray(transl), dtype=body.dtype, device=body.device))
            aa = rotmat_to_axis_angle(rot).cpu().numpy().astype(np.float32)
        return dataclasses.replace(
            p, global_orient=aa[:, 0], body_pose=aa[:, 1:].reshape(len(p), 69),
            betas=np.asarray(betas, np.float32), transl=np.asarray(transl, np.float32),
            vertices=out.vertices.cpu().numpy().astype(np.float32),
            joints3d=out.joints.cpu().numpy().astype(np.float32))

    # -------------------------------------------------------------------------------------------- public calls
    def __call__(self, image: Any, *, focal: float | None = None, boxes: Any = None, scores: Any = None,
                 keypoints: Any = None) -> People:
        """The people of one (H, W, 3) uint8 RGB image (see :meth:`prepare` for the optional arguments)."""
        return self.estimate_batch([image], focal=focal, boxes=None if boxes is None else [boxes],
                                   scores=None if scores is None else [scores],
                                   keypoints=None if keypoints is None else [keypoints])[0]

    def estimate_batch(self, images: Sequence[Any], *, focal: float | None = None, boxes: Sequence[Any] | None = None,
                       scores: Sequence[Any] | None = None, keypoints: Sequence[Any] | None = None) -> list[People]:
        """The people of several images; their people go through the networks together (``batch_size`` at a
        time). ``boxes`` / ``scores`` / ``keypoints``: one entry per image (or None)."""
        n = len(images)
        for name, arg in (("boxes", boxes), ("scores", scores), ("keypoints", keypoints)):
            if arg is not None and len(arg) != n:
                raise InputError(f"{name} must have one entry per image ({n}), got {len(arg)}.")
        frames = [self.prepare(img, source=f"<array {i}>", focal=focal,
                               boxes=None if boxes is None else boxes[i],
                               scores=None if scores is None else scores[i],
                               keypoints=None if keypoints is None else keypoints[i])
                  for i, img in enumerate(images)]
        errors = self.regress(frames)
        if errors:
            raise next(iter(errors.values()))
        return [f.result for f in frames]  # type: ignore[misc]
