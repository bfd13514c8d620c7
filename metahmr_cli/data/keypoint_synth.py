"""Synthetic training and test data for the open keypoint model, generated on the fly.

Every sample is a person drawn from the natural pose sampler (:mod:`.poses`) with a shape from the body's
shape space (betas ~ N(0, 1), i.e. the body's calibrated distribution), seen by a camera like those of real
photos, and the 2D keypoints a detector would report for it:

1. image size from common photo and video formats, focal f = sqrt(W^2 + H^2) (the CLIFF rule used at test
   time), and a framing: the whole person with the box 12-95 % of the image height (log-uniform) anywhere in the
   frame, cut by any image border, framed from the waist up (half-body) or from the chest up (head and
   shoulders); a person framed without their legs gets the legs of a relaxed stance (what an unseen lower body is
   taken to be). The camera is at about eye level (elevation mostly within +-20 deg), or raised over a ground
   plane on which the person stands (2-10 m up, pitched 0-45 deg down, as in surveillance and sports footage);
2. the body posed and projected (49 joints), a detector-like box around it (margins of a silhouette box with
   jitter, clamped to the image) and the crop of ``process`` (:func:`~metahmr_cli.geometry.crop.box_from_xyxy`,
   margin 1.1);
3. detector-like keypoints in one of the formats the pipeline accepts (COCO-17 most often, also Halpe-26,
   BlazePose-33 and OpenPose BODY_25): Gaussian noise relative to the box size (larger at hips), confidences
   like a detector's, random dropout, an occluding rectangle, occasional left/right swaps of one pair or of the
   whole body (more often for people facing the camera) and outliers, keypoints outside the image reported at the
   border with a few percent of confidence the way MoveNet does, mapped onto the 49 slots with
   :func:`~metahmr_cli.keypoints.formats.to_49`; then what ``process`` does to a detector's keypoints before the
   network sees them: :func:`~metahmr_cli.keypoints.evidence.drop_unreliable_keypoints` and
   :func:`~metahmr_cli.keypoints.evidence.resolve_left_right`;
4. the image evidence of :mod:`metahmr_cli.keypoints.evidence` (BlazePose world landmarks, a face check), simulated
   with measured errors (:mod:`.evidence_synth`).

Items carry the keys of :class:`~metahmr_cli.data.datasets.HMRDataset` (so the trainer and the evaluation use
them unchanged) with ``img`` replaced by the network input, (67, 4): the normalised crop keypoints of the
detector and the evidence (:func:`~metahmr_cli.keypoints.evidence.pack_network_input`; a keypoints-only encoder
reads the first 49 rows), and ``keypoints_obs`` (49, 3) the detector's keypoints in crop pixels: the targets of the
inner (test-time) step, while ``keypoints`` holds the exact projections for the outer loss.

A sample is a function of (seed, split, epoch, index) only: the training stream is reproducible and resumable,
and the test split (``split="test"``) never overlaps the training one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from torch.utils.data import Dataset

from ..body.fast_joints import SubsetBody
from ..body.smpl import load_body_model
from ..constants import (
    BBOX_INFO_SIZE_DIV,
    BBOX_INFO_SIZE_OFFSET,
    BBOX_INFO_XY_FACTOR,
    BBOX_MARGIN_DETECTOR,
    NUM_BETAS,
    SCALE_PX,
)
from ..geometry.crop import apply_affine, box_from_xyxy, crop_transform, normalize_crop_keypoints
from ..geometry.rotation import axis_angle_to_rotmat
from ..keypoints.evidence import (
    OPEN_KEYPOINT_MIN_CONF,
    drop_unreliable_keypoints,
    pack_network_input,
    resolve_left_right,
)
from ..keypoints.formats import KEYPOINT_FORMATS, to_49
from .evidence_synth import EvidenceSimConfig, simulate_evidence
from .poses import (
    CameraView,
    camera_orientation,
    params_to_axis_angle,
    sample_pose_params,
    sample_view,
    with_standing_legs,
)

__all__ = ["GENDER_NEUTRAL_CODE", "KeypointSynthConfig", "SyntheticKeypointDataset", "source_slots"]

GENDER_NEUTRAL_CODE = 2
"""Gender code of the samples (neutral body; see :data:`metahmr_cli.data.datasets.GENDER_OTHER`)."""

# body slot (49-joint convention) that stands in for each named detector keypoint
_SLOT_OF_NAME: dict[str, int] = {
    "nose": 44, "leye": 45, "reye": 46, "lear": 47, "rear": 48,
    "lshoulder": 34, "rshoulder": 33, "lelbow": 35, "relbow": 32, "lwrist": 36, "rwrist": 31,
    "lhip": 28, "rhip": 27, "lknee": 29, "rknee": 26, "lankle": 30, "rankle": 25,
    "headtop": 38, "neck": 1, "midhip": 8,
    "lbigtoe": 19, "lsmalltoe": 20, "lheel": 21, "rbigtoe": 22, "rsmalltoe": 23, "rheel": 24,
}
# keypoint noise (standard deviation, fraction of the box height) per kind of keypoint
_NOISE_OF_NAME: dict[str, float] = {
    "nose": 0.008, "leye": 0.007, "reye": 0.007, "lear": 0.012, "rear": 0.012,
    "lshoulder": 0.015, "rshoulder": 0.015, "lelbow": 0.016, "relbow": 0.016, "lwrist": 0.016, "rwrist": 0.016,
    "lhip": 0.03, "rhip": 0.03, "lknee": 0.018, "rknee": 0.018, "lankle": 0.016, "rankle": 0.016,
    "headtop": 0.02, "neck": 0.02, "midhip": 0.03,
    "lbigtoe": 0.015, "lsmalltoe": 0.015, "lheel": 0.015, "rbigtoe": 0.015, "rsmalltoe": 0.015, "rheel": 0.015,
}
_SWAP_PAIRS = (("lshoulder", "rshoulder"), ("lelbow", "relbow"), ("lwrist", "rwrist"), ("lhip", "rhip"),
               ("lknee", "rknee"), ("lankle", "rankle"))
_IMAGE_SIZES: tuple[tuple[int, int], ...] = (
    (640, 480), (480, 640), (1280, 720), (720, 1280), (1920, 1080), (1080, 1920), (1024, 768), (768, 1024),
    (1000, 1000), (4032, 3024), (3024, 4032), (768, 576), (384, 288),
)
_BOX_SLOTS = (0, 4, 7, 11, 14, 19, 20, 21, 22, 23, 24, 31, 36, 38, 44, 47, 48)


def source_slots(fmt: str) -> list[tuple[int, str]]:
    """(index in the source format, name) of every keypoint of ``fmt`` that the simulation produces."""
    names = KEYPOINT_FORMATS[fmt][1]
    return [(i, n) for i, n in enumerate(names) if n in _SLOT_OF_NAME]


@dataclass
class KeypointSynthConfig:
    """Settings of the synthetic keypoint stream.

    Attributes:
        length: samples per epoch.
        seed: base seed.
        split: "train" (a new draw every epoch) or "test" (fixed, disjoint from training).
        formats: detector format -> probability.
        box_height: range of the person's box height as a fraction of the image height.
        noise: range of the per-sample noise multiplier (1 = the base noise of each keypoint kind).
        dropout: range of the per-sample probability that a keypoint is missing.
        occlusion: probability of an occluding rectangle.
        truncation: probability that the person is placed partly outside the image (any border).
        half_body: probability of a person framed from the waist (or upper thigh) up, legs out of the picture.
        head_shoulders: probability of a person framed from the chest up.
        high_camera: probability that a person seen whole (or cut by a border) stands on a ground plane under a
            raised camera (``camera_height`` metres up, pitched ``camera_pitch`` degrees down).
        camera_height: range of the raised camera's height (m).
        camera_pitch: range of the raised camera's downward pitch (deg).
        swap: probability per left/right pair of a swapped detection.
        body_swap: probability that the detector swaps left and right on the whole body: (person facing away or
            larger than 250 px, person facing the camera and smaller).
        outlier: probability per keypoint of a wrong position with a low confidence.
        min_keypoint_conf: detector keypoints below this confidence are dropped (as ``process`` does).
        evidence: the simulated image evidence.
    """

    length: int = 200_000
    seed: int = 0
    split: str = "train"
    formats: dict[str, float] = field(default_factory=lambda: {"coco17": 0.7, "halpe26": 0.1, "mediapipe33": 0.1,
                                                               "body25": 0.1})
    box_height: tuple[float, float] = (0.12, 0.95)
    noise: tuple[float, float] = (0.4, 1.6)
    dropout: tuple[float, float] = (0.0, 0.08)
    occlusion: float = 0.25
    truncation: float = 0.12
    half_body: float = 0.12
    head_shoulders: float = 0.06
    high_camera: float = 0.3
    camera_height: tuple[float, float] = (2.0, 10.0)
    camera_pitch: tuple[float, float] = (0.0, 45.0)
    swap: float = 0.01
    body_swap: tuple[float, float] = (0.03, 0.15)
    outlier: float = 0.015
    min_keypoint_conf: float = OPEN_KEYPOINT_MIN_CONF
    evidence: EvidenceSimConfig = field(default_factory=EvidenceSimConfig)

    def validate(self) -> None:
        if self.split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {self.split!r}")
        if self.length < 1:
            raise ValueError(f"length must be >= 1, got {self.length}")
        unknown = [f for f in self.formats if f not in KEYPOINT_FORMATS]
        if unknown or not self.formats:
            raise ValueError(f"unknown keypoint formats {unknown}; choose from {sorted(KEYPOINT_FORMATS)}")
        framed = self.truncation + self.half_body + self.head_shoulders
        if min(self.truncation, self.half_body, self.head_shoulders, self.high_camera) < 0 or framed > 1:
            raise ValueError("truncation, half_body and head_shoulders are probabilities summing to at most 1, "
                             f"got {self.truncation}, {self.half_body}, {self.head_shoulders}")


@dataclass(frozen=True)
class _Scene:
    """The picture a sample is taken in: image size, focal, framing and camera."""

    width: int
    height: int
    focal: float
    framing: str            # "full", "edge", "half_body" or "head_shoulders"
    view: CameraView        # how the body is seen (its root orientation in the camera frame)
    camera_height: float    # > 0: a raised camera over the ground plane the person stands on


class SyntheticKeypointDataset(Dataset):
    """An endless, reproducible stream of synthetic people for the keypoint model (see the module docstring).

    Args:
        body_dir: folder of the body model whose neutral body poses the samples.
        config: the stream settings.
    """

    def __init__(self, body_dir: str | Path, config: KeypointSynthConfig | None = None) -> None:
        self.config = config if config is not None else KeypointSynthConfig()
        self.config.validate()
        self.body_dir = Path(body_dir)
        self.epoch = 0
        self._body = None
        formats = list(self.config.formats)
        probs = np.array([self.config.formats[f] for f in formats], np.float64)
        self._formats = formats
        self._format_probs = probs / probs.sum()
        self.name = f"synthetic-keypoints-{self.config.split}"

    # ---- bookkeeping
    def __len__(self) -> int:
        return int(self.config.length)

    def set_epoch(self, epoch: int) -> None:
        """Training draws new samples every epoch; the test split is fixed."""
        self.epoch = int(epoch)

    def fingerprint(self) -> str:
        """Identifies the samples (settings + body files) for caches."""
        files = sorted(p for p in self.body_dir.glob("*") if p.is_file())
        digest = hashlib.sha256(json.dumps(asdict(self.config), sort_keys=True).encode())
        for p in files:
            digest.update(p.name.encode())
            digest.update(str(p.stat().st_size).encode())
        return digest.hexdigest()[:16]

    @property
    def joints_body(self) -> SubsetBody:
        """The body posing only what the 49 joints need (loaded lazily: each data-loader worker loads its own)."""
        if self._body is None:

            # float64: a sample must not depend on which other samples share its batch (float32 GEMMs round
            # differently for different batch sizes)
            body = load_body_model(self.body_dir, "neutral", device="cpu", dtype=torch.float64, with_h36m=False)
            self._body = SubsetBody(body, num_surface=0)
        return self._body

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_body"] = None
        return state

    def _rng(self, index: int) -> np.random.Generator:
        split = 0 if self.config.split == "train" else 1
        epoch = self.epoch if self.config.split == "train" else 0
        return np.random.default_rng([int(self.config.seed), split, epoch, int(index)])

    # ---- items
    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:

        rngs = [self._rng(i) for i in indices]
        poses = np.zeros((len(indices), 24, 3))
        betas = np.zeros((len(indices), NUM_BETAS))
        scenes = []
        for k, rng in enumerate(rngs):
            scene = self._scene(rng)
            _, params = sample_pose_params(rng)
            if scene.framing in ("half_body", "head_shoulders"):
                params = with_standing_legs(params, rng)
            poses[k] = params_to_axis_angle(params)
            poses[k, 0] = camera_orientation(scene.view)
            betas[k] = np.clip(rng.normal(0.0, 1.0, NUM_BETAS), -3.0, 3.0)
            scenes.append(scene)
        with torch.no_grad():
            rot = axis_angle_to_rotmat(torch.as_tensor(poses, dtype=torch.float64).reshape(-1, 3))
            out = self.joints_body(rot.reshape(len(indices), 24, 3, 3), torch.as_tensor(betas, dtype=torch.float64))
        joints = out.joints.double().numpy()  # (B, 49, 3): body at the origin, camera axes
        return [self._item(int(i), rng, poses[k], betas[k], joints[k], scenes[k])
                for k, (i, rng) in enumerate(zip(indices, rngs, strict=True))]

    # ---- the picture: framing, camera and placement
    def _scene(self, rng: np.random.Generator) -> _Scene:
        cfg = self.config
        w, h = _IMAGE_SIZES[int(rng.integers(len(_IMAGE_SIZES)))]
        u = rng.random()
        framing = ("edge" if u < cfg.truncation else
                   "half_body" if u < cfg.truncation + cfg.half_body else
                   "head_shoulders" if u < cfg.truncation + cfg.half_body + cfg.head_shoulders else "full")
        height = 0.0
        if framing in ("full", "edge") and rng.random() < cfg.high_camera:
            height = float(rng.uniform(*cfg.camera_height))
            view = CameraView(yaw=float(rng.uniform(-180, 180)), elevation=float(rng.uniform(*cfg.camera_pitch)),
                              roll=float(np.clip(rng.normal(0, 2), -6, 6)))
        else:
            view = sample_view(rng)
        return _Scene(w, h, float(np.hypot(w, h)), framing, view, height)

    def _place(self, rng: np.random.Generator, joints: np.ndarray, scene: _Scene) -> np.ndarray:
        """Camera-frame joints (49, 3) of the person placed in the scene's image."""
        if scene.camera_height > 0:
            placed = self._place_on_ground(rng, joints, scene)
            if placed is not None:
                return placed
        if scene.framing in ("half_body", "head_shoulders"):
            return self._place_framed(rng, joints, scene)
        return self._place_anywhere(rng, joints, scene)

    def _centre_box_on(self, pos: np.ndarray, cx: float, cy: float, scene: _Scene) -> np.ndarray:
        depth = float(pos[8, 2])
        for _ in range(2):  # move the box centre onto (cx, cy)
            uv = _project(pos, scene.focal, scene.width, scene.height)
            box_c = 0.5 * (uv[list(_BOX_SLOTS)].min(0) + uv[list(_BOX_SLOTS)].max(0))
            pos = pos + np.array([(cx - box_c[0]) * depth / scene.focal, (cy - box_c[1]) * depth / scene.focal, 0.0])
        pos[:, 2] = np.maximum(pos[:, 2], 0.2)
        return pos

    def _place_anywhere(self, rng: np.random.Generator, joints: np.ndarray, scene: _Scene) -> np.ndarray:
        """The whole person, box height log-uniform in ``box_height``; for "edge", partly outside the image."""
        w, h, f = scene.width, scene.height, scene.focal
        lo, hi = self.config.box_height
        frac = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        rel = joints - joints[8]  # around the mid-hip
        extent = max(float(np.ptp(rel[list(_BOX_SLOTS), 1])), 0.3)
        depth = max(f * extent / (frac * h), 1.0)
        if scene.framing == "edge":
            cx, cy = rng.uniform(-0.2 * w, 1.2 * w), rng.uniform(-0.1 * h, 1.1 * h)
        else:
            margin = 0.5 * frac * h
            cx = rng.uniform(min(0.6 * margin, w / 2), max(w - 0.6 * margin, w / 2))
            cy = rng.uniform(min(margin, h / 2), max(h - margin, h / 2))
        return self._centre_box_on(rel + np.array([0.0, 0.0, depth]), cx, cy, scene)

    def _place_framed(self, rng: np.random.Generator, joints: np.ndarray, scene: _Scene) -> np.ndarray:
        """A person framed from the waist (half_body) or the chest (head_shoulders) up: the image's bottom edge
        cuts the body there and the visible part fills 50-95 % of the image height."""
        w, h, f = scene.width, scene.height, scene.focal
        rel = joints - joints[8]
        top = float(rel[[38, 44, 45, 46, 47, 48], 1].min())
        hips, knees, shoulders = 0.0, float(rel[[26, 29], 1].mean()), float(rel[[33, 34], 1].mean())
        if scene.framing == "half_body":
            cut = hips + rng.uniform(-0.4, 0.6) * (knees - hips)
        else:
            cut = shoulders + rng.uniform(0.15, 0.6) * (hips - shoulders)
        extent = max(cut - top, 0.15)
        frac = rng.uniform(0.5, 0.95)
        depth = max(f * extent / (frac * h), 0.5)
        pos = rel + np.array([0.0, 0.0, depth])
        v_cut = h * rng.uniform(1.0, 1.04)
        shift_y = (v_cut - h / 2.0) * depth / f - cut
        shift_x = (rng.uniform(0.25, 0.75) * w - w / 2.0) * depth / f - float(rel[[33, 34], 0].mean())
        pos = pos + np.array([shift_x, shift_y, 0.0])
        pos[:, 2] = np.maximum(pos[:, 2], 0.2)
        return pos

    def _place_on_ground(self, rng: np.random.Generator, joints: np.ndarray, scene: _Scene) -> np.ndarray | None:
        """The person standing on the ground plane under the raised camera, somewhere in the image with a box
        height within ``box_height``; None when no spot was found in a few tries."""
        w, h, f = scene.width, scene.height, scene.focal
        lo, hi = self.config.box_height
        up = Rotation.from_rotvec(camera_orientation(CameraView(0.0, scene.view.elevation, scene.view.roll))
                                  ).as_matrix() @ np.array([0.0, 1.0, 0.0])   # the world's up, camera axes
        low = joints[int(np.argmin(joints @ up))]
        for _ in range(8):
            if scene.framing == "edge":
                u, v = rng.uniform(-0.2 * w, 1.2 * w), rng.uniform(0.3 * h, 1.3 * h)
            else:
                u, v = rng.uniform(0.05 * w, 0.95 * w), rng.uniform(0.15 * h, h)
            ray = np.array([(u - w / 2.0) / f, (v - h / 2.0) / f, 1.0])
            down = float(ray @ up)
            if down >= -1e-3:
                continue  # above the horizon
            ground = ray * (-scene.camera_height / down)
            pos = joints - low + ground
            if pos[:, 2].min() < 0.5:
                continue
            uv = _project(pos, f, w, h)
            frac = float(np.ptp(uv[list(_BOX_SLOTS), 1])) / h
            if lo <= frac <= hi:
                return pos
        return None

    # ---- what the detectors report
    def _detector_box(self, rng: np.random.Generator, uv: np.ndarray, w: int, h: int) -> np.ndarray:
        """A detector-like box: the silhouette box of the projected joints with margins and jitter, clamped."""
        pts = uv[list(_BOX_SLOTS)]
        x1, y1 = pts.min(0)
        x2, y2 = pts.max(0)
        size = max(x2 - x1, y2 - y1, 1.0)
        left, right = rng.uniform(0.02, 0.12, 2) * size
        top = rng.uniform(0.0, 0.08) * size
        bottom = rng.uniform(0.0, 0.06) * size
        jitter = rng.normal(0.0, 0.015, 2) * size
        box = np.array([x1 - left + jitter[0], y1 - top + jitter[1], x2 + right + jitter[0], y2 + bottom + jitter[1]])
        box[[0, 2]] = np.clip(box[[0, 2]], 0, w)
        box[[1, 3]] = np.clip(box[[1, 3]], 0, h)
        if box[2] - box[0] < 8 or box[3] - box[1] < 8:  # almost entirely outside: keep an unclamped box
            box = np.array([x1, y1, x2, y2])
        return box

    def _observe(self, rng: np.random.Generator, uv: np.ndarray, box: np.ndarray, w: int, h: int,
                 toward: bool) -> tuple[np.ndarray, np.ndarray]:
        """Detector keypoints in the 49 slots (full-image px + confidence) and the (49,) slots an occluder hides."""
        cfg = self.config
        fmt = self._formats[int(rng.choice(len(self._formats), p=self._format_probs))]
        count, _ = KEYPOINT_FORMATS[fmt]
        size = max(box[2] - box[0], box[3] - box[1], 1.0)
        noise_level = rng.uniform(*cfg.noise)
        drop = rng.uniform(*cfg.dropout)
        src = np.zeros((count, 3))
        named = {}
        for idx, name in source_slots(fmt):
            xy = uv[_SLOT_OF_NAME[name]] + rng.normal(0.0, _NOISE_OF_NAME[name] * noise_level * size, 2)
            conf = float(np.clip(rng.normal(0.8, 0.12), 0.3, 1.0))
            if rng.random() < drop:
                conf = 0.0
            elif rng.random() < cfg.outlier:
                xy = box[:2] + rng.uniform(0, 1, 2) * (box[2:] - box[:2])
                conf = float(rng.uniform(0.05, 0.3))
            src[idx] = [xy[0], xy[1], conf]
            named[name] = idx
        whole = rng.random() < cfg.body_swap[1 if toward and size < 250 else 0]
        for a, b in _SWAP_PAIRS:
            if a in named and b in named and (whole or rng.random() < cfg.swap):
                ia, ib = named[a], named[b]
                src[[ia, ib], :2] = src[[ib, ia], :2]
        occluded = np.zeros(count, bool)
        if rng.random() < cfg.occlusion:
            bw, bh = box[2] - box[0], box[3] - box[1]
            ow, oh = rng.uniform(0.2, 0.6) * bw, rng.uniform(0.15, 0.5) * bh
            ox, oy = box[0] + rng.uniform(0, max(bw - ow, 1e-6)), box[1] + rng.uniform(0, max(bh - oh, 1e-6))
            occluded = ((src[:, 0] >= ox) & (src[:, 0] <= ox + ow) & (src[:, 1] >= oy) & (src[:, 1] <= oy + oh)
                        & (src[:, 2] > 0))
            for i in np.flatnonzero(occluded):
                if rng.random() < 0.6:
                    src[i] = 0.0
                else:
                    src[i, :2] += rng.normal(0.0, 0.05 * size, 2)
                    src[i, 2] = rng.uniform(0.05, 0.35)
        # a joint outside the picture: reported at the border with a few percent of confidence (MoveNet)
        outside = (src[:, 0] < 0) | (src[:, 0] > w - 1) | (src[:, 1] < 0) | (src[:, 1] > h - 1)
        for i in np.flatnonzero(outside & (src[:, 2] > 0)):
            src[i, 0] = np.clip(src[i, 0], 0, w - 1) + rng.normal(0.0, 0.02 * size)
            src[i, 1] = np.clip(src[i, 1], 0, h - 1) + rng.normal(0.0, 0.02 * size)
            src[i, 2] = rng.uniform(0.01, 0.12) if rng.random() < 0.85 else rng.uniform(0.12, 0.3)
        hidden = to_49(np.concatenate([src[:, :2], occluded[:, None].astype(float)], axis=1), fmt)[:, 2] > 0
        return to_49(src, fmt).astype(np.float64), hidden

    def _item(self, index: int, rng: np.random.Generator, pose: np.ndarray, betas: np.ndarray,
              joints: np.ndarray, scene: _Scene) -> dict[str, Any]:
        w, h, f = scene.width, scene.height, scene.focal
        pos = self._place(rng, joints, scene)
        uv = _project(pos, f, w, h)
        box = self._detector_box(rng, uv, w, h)
        center, scale = box_from_xyxy(box[None], margin=BBOX_MARGIN_DETECTOR)
        center, scale = center[0], float(scale[0])
        trans = crop_transform(center, scale)
        inv = crop_transform(center, scale, inverse=True)
        forward = pos[44] - 0.5 * (pos[47] + pos[48])  # the head's facing: toward the camera when along -position
        toward = float(forward @ -pos[44]) > 0
        obs, hidden = self._observe(rng, uv, box, w, h, toward)
        obs = drop_unreliable_keypoints(obs, (h, w), self.config.min_keypoint_conf)
        evidence = simulate_evidence(rng, pos, uv, box, f, w, h, hidden, self.config.evidence)
        obs = resolve_left_right(obs[None], evidence)[0][0].astype(np.float64)
        obs_crop = np.concatenate([apply_affine(obs[:, :2], trans), obs[:, 2:]], axis=1)
        obs_crop[obs[:, 2] <= 0] = 0.0
        kp_in = normalize_crop_keypoints(obs_crop)
        kp_in[obs[:, 2] <= 0] = 0.0
        net_in = pack_network_input(kp_in[None], evidence)[0]
        gt_crop = np.concatenate([apply_affine(uv, trans), np.ones((49, 1))], axis=1)
        s3d = np.concatenate([pos[25:49] - pos[39], np.ones((24, 1))], axis=1)  # around Pelvis (MPII)
        b = SCALE_PX * scale  # CLIFF's normalised bbox_info (geometry.camera.bbox_info), in numpy
        binfo = np.array([(center[0] - w / 2.0) / f * BBOX_INFO_XY_FACTOR,
                          (center[1] - h / 2.0) / f * BBOX_INFO_XY_FACTOR,
                          (b - BBOX_INFO_SIZE_OFFSET * f) / (BBOX_INFO_SIZE_DIV * f)])
        f32 = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
        return {
            "img": f32(net_in),
            "keypoints": f32(gt_crop),
            "keypoints_obs": f32(obs_crop),
            "keypoints_full": f32(obs),
            "pose": f32(pose.reshape(72)),
            "betas": f32(betas),
            "pose_3d": f32(s3d),
            "has_smpl": torch.tensor(1.0),
            "has_pose_3d": torch.tensor(1.0),
            "scale": torch.tensor(scale, dtype=torch.float32),
            "center": f32(center),
            "is_flipped": torch.tensor(0),
            "rot_angle": torch.tensor(0.0),
            "scale_factor": torch.tensor(1.0),
            "gender": torch.tensor(GENDER_NEUTRAL_CODE),
            "img_h": torch.tensor(float(h)),
            "img_w": torch.tensor(float(w)),
            "orig_shape": torch.tensor([h, w]),
            "focal_length": torch.tensor(f, dtype=torch.float32),
            "bbox_info": f32(binfo),
            "crop_trans": f32(trans),
            "full_trans": f32(trans),
            "inv_trans": f32(inv),
            "imgname": f"{self.name}/{index:08d}",
            "dataset_name": self.name,
            "sample_index": torch.tensor(index),
            "framing": scene.framing,
            "camera_height": torch.tensor(scene.camera_height),
        }


def _project(points: np.ndarray, f: float, w: int, h: int) -> np.ndarray:
    """Pinhole projection of camera-frame points (N, 3) with the principal point at the image centre."""
    z = np.maximum(points[:, 2], 1e-6)
    return np.stack([f * points[:, 0] / z + w / 2.0, f * points[:, 1] / z + h / 2.0], axis=1)
