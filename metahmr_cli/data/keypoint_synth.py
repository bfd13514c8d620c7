"""Synthetic training and test data for the open keypoint model, generated on the fly.

Every sample is a person drawn from the natural pose sampler (:mod:`.poses`) with a shape from the body's
shape space (betas ~ N(0, 1), i.e. the body's calibrated distribution), seen by a camera like those of real
photos, and the 2D keypoints a detector would report for it:

1. image size from common photo and video formats, focal f = sqrt(W^2 + H^2) (the CLIFF rule used at test
   time), the person's box height 12-95 % of the image height (log-uniform), placed anywhere in the frame and
   sometimes partly outside it;
2. the body posed and projected (49 joints), a detector-like box around it (margins of a silhouette box with
   jitter, clamped to the image) and the crop of ``process`` (:func:`~metahmr_cli.geometry.crop.box_from_xyxy`,
   margin 1.1);
3. detector-like keypoints in one of the formats the pipeline accepts (COCO-17 most often, also Halpe-26,
   BlazePose-33 and OpenPose BODY_25): Gaussian noise relative to the box size (larger at hips), confidences
   like a detector's, random dropout, an occluding rectangle, truncation at the image border, occasional
   left/right swaps and outliers, mapped onto the 49 slots with :func:`~metahmr_cli.keypoints.formats.to_49`.

Items carry the keys of :class:`~metahmr_cli.data.datasets.HMRDataset` (so the trainer and the evaluation use
them unchanged) with ``img`` replaced by the network input, the (49, 3) normalised crop keypoints of the
detector, and ``keypoints_obs`` (49, 3) the same keypoints in crop pixels: the targets of the inner
(test-time) step, while ``keypoints`` holds the exact projections for the outer loss.

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
from torch.utils.data import Dataset

from ..body.fast_joints import SubsetBody
from ..constants import (
    BBOX_INFO_SIZE_DIV,
    BBOX_INFO_SIZE_OFFSET,
    BBOX_INFO_XY_FACTOR,
    BBOX_MARGIN_DETECTOR,
    NUM_BETAS,
    SCALE_PX,
)
from ..geometry.crop import apply_affine, box_from_xyxy, crop_transform, normalize_crop_keypoints
from ..keypoints.formats import KEYPOINT_FORMATS, to_49
from .poses import camera_orientation, params_to_axis_angle, sample_pose_params, sample_view

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
        truncation: probability that the person is placed partly outside the image.
        swap: probability per left/right pair of a swapped detection.
        outlier: probability per keypoint of a wrong position with a low confidence.
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
    swap: float = 0.01
    outlier: float = 0.015

    def validate(self) -> None:
        if self.split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {self.split!r}")
        if self.length < 1:
            raise ValueError(f"length must be >= 1, got {self.length}")
        unknown = [f for f in self.formats if f not in KEYPOINT_FORMATS]
        if unknown or not self.formats:
            raise ValueError(f"unknown keypoint formats {unknown}; choose from {sorted(KEYPOINT_FORMATS)}")


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
            from ..body.smpl import load_body_model

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
        from ..geometry.rotation import axis_angle_to_rotmat

        rngs = [self._rng(i) for i in indices]
        poses = np.zeros((len(indices), 24, 3))
        betas = np.zeros((len(indices), NUM_BETAS))
        for k, rng in enumerate(rngs):
            _, params = sample_pose_params(rng)
            poses[k] = params_to_axis_angle(params)
            poses[k, 0] = camera_orientation(sample_view(rng))
            betas[k] = np.clip(rng.normal(0.0, 1.0, NUM_BETAS), -3.0, 3.0)
        with torch.no_grad():
            rot = axis_angle_to_rotmat(torch.as_tensor(poses, dtype=torch.float64).reshape(-1, 3))
            out = self.joints_body(rot.reshape(len(indices), 24, 3, 3), torch.as_tensor(betas, dtype=torch.float64))
        joints = out.joints.double().numpy()  # (B, 49, 3): body at the origin, camera axes
        return [self._item(int(i), rng, poses[k], betas[k], joints[k])
                for k, (i, rng) in enumerate(zip(indices, rngs, strict=True))]

    def _place(self, rng: np.random.Generator, joints: np.ndarray) -> tuple[np.ndarray, int, int, float, bool]:
        """Camera-frame joints (49, 3) of the person placed in a random image; (joints, W, H, f, truncated)."""
        cfg = self.config
        w, h = _IMAGE_SIZES[int(rng.integers(len(_IMAGE_SIZES)))]
        f = float(np.hypot(w, h))
        lo, hi = cfg.box_height
        frac = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        rel = joints - joints[8]  # around the mid-hip
        extent = max(float(np.ptp(rel[list(_BOX_SLOTS), 1])), 0.3)
        depth = max(f * extent / (frac * h), 1.0)
        truncated = bool(rng.random() < cfg.truncation)
        margin = 0.0 if truncated else 0.5 * frac * h
        if truncated:
            cx, cy = rng.uniform(-0.2 * w, 1.2 * w), rng.uniform(-0.1 * h, 1.1 * h)
        else:
            cx = rng.uniform(min(0.6 * margin, w / 2), max(w - 0.6 * margin, w / 2))
            cy = rng.uniform(min(margin, h / 2), max(h - margin, h / 2))
        pos = rel + np.array([0.0, 0.0, depth])
        for _ in range(2):  # move the box centre onto (cx, cy)
            uv = _project(pos, f, w, h)
            box_c = 0.5 * (uv[list(_BOX_SLOTS)].min(0) + uv[list(_BOX_SLOTS)].max(0))
            pos = pos + np.array([(cx - box_c[0]) * depth / f, (cy - box_c[1]) * depth / f, 0.0])
        pos[:, 2] = np.maximum(pos[:, 2], 0.2)
        return pos, w, h, f, truncated

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

    def _observe(self, rng: np.random.Generator, uv: np.ndarray, box: np.ndarray, w: int,
                 h: int) -> tuple[np.ndarray, str]:
        """Detector keypoints in the 49 slots (full-image px + confidence) and the simulated format."""
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
        for a, b in _SWAP_PAIRS:
            if a in named and b in named and rng.random() < cfg.swap:
                ia, ib = named[a], named[b]
                src[[ia, ib], :2] = src[[ib, ia], :2]
        if rng.random() < cfg.occlusion:
            bw, bh = box[2] - box[0], box[3] - box[1]
            ow, oh = rng.uniform(0.2, 0.6) * bw, rng.uniform(0.15, 0.5) * bh
            ox, oy = box[0] + rng.uniform(0, max(bw - ow, 1e-6)), box[1] + rng.uniform(0, max(bh - oh, 1e-6))
            inside = ((src[:, 0] >= ox) & (src[:, 0] <= ox + ow) & (src[:, 1] >= oy) & (src[:, 1] <= oy + oh)
                      & (src[:, 2] > 0))
            for i in np.flatnonzero(inside):
                if rng.random() < 0.6:
                    src[i] = 0.0
                else:
                    src[i, :2] += rng.normal(0.0, 0.05 * size, 2)
                    src[i, 2] = rng.uniform(0.05, 0.35)
        outside = (src[:, 0] < 0) | (src[:, 0] > w - 1) | (src[:, 1] < 0) | (src[:, 1] > h - 1)
        for i in np.flatnonzero(outside & (src[:, 2] > 0)):
            if rng.random() < 0.5:
                src[i] = 0.0
            else:
                src[i, 0] = np.clip(src[i, 0], 0, w - 1)
                src[i, 1] = np.clip(src[i, 1], 0, h - 1)
                src[i, 2] = rng.uniform(0.05, 0.3)
        return to_49(src, fmt).astype(np.float64), fmt

    def _item(self, index: int, rng: np.random.Generator, pose: np.ndarray, betas: np.ndarray,
              joints: np.ndarray) -> dict[str, Any]:
        pos, w, h, f, _ = self._place(rng, joints)
        uv = _project(pos, f, w, h)
        box = self._detector_box(rng, uv, w, h)
        center, scale = box_from_xyxy(box[None], margin=BBOX_MARGIN_DETECTOR)
        center, scale = center[0], float(scale[0])
        trans = crop_transform(center, scale)
        inv = crop_transform(center, scale, inverse=True)
        obs, _ = self._observe(rng, uv, box, w, h)
        obs_crop = np.concatenate([apply_affine(obs[:, :2], trans), obs[:, 2:]], axis=1)
        obs_crop[obs[:, 2] <= 0] = 0.0
        net_in = normalize_crop_keypoints(obs_crop)
        net_in[obs[:, 2] <= 0] = 0.0
        gt_crop = np.concatenate([apply_affine(uv, trans), np.ones((49, 1))], axis=1)
        s3d = np.concatenate([joints[25:49] - joints[39], np.ones((24, 1))], axis=1)  # around Pelvis (MPII)
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
        }


def _project(points: np.ndarray, f: float, w: int, h: int) -> np.ndarray:
    """Pinhole projection of camera-frame points (N, 3) with the principal point at the image centre."""
    z = np.maximum(points[:, 2], 1e-6)
    return np.stack([f * points[:, 0] / z + w / 2.0, f * points[:, 1] / z + h / 2.0], axis=1)
