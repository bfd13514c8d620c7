"""SPIN/CLIFF-format datasets with the released Meta-HMR per-sample pipeline.

One :class:`HMRDataset` reads one annotation ``.npz`` plus an image root. For every item it

1. reads the RGB image (and reduces it by ``downsample``, 2 for 3DPW, with keypoints and focal);
2. rebuilds the box from the visible GT-24 keypoints (``part``): tight box, aspect 256:192, margin 1.2
   (the npz ``center``/``scale`` are only a fallback when no keypoint is visible);
3. in training draws flip / pixel factor / rotation / scale (:mod:`.augment`) from a generator that depends
   only on (seed, epoch, index);
4. flips the full image, keypoints (J49 permutation, x -> W-1-x), 3D joints and SMPL pose;
5. warps the 256x192 crop with ``full_trans`` (with rotation) and rotates S and the global orientation by
   Rz(-rot);
6. pastes synthetic occluders (training, datasets flagged ``occlusion``), applies the pixel factor, scales
   to [0, 1] and normalises with the ImageNet statistics.

Item keys (tensors are float32 unless noted):

====================  =====================  ==============================================================
key                   shape                  meaning
====================  =====================  ==============================================================
img                   (3, 256, 192)          normalised crop
keypoints             (49, 3)                [x, y, conf] in crop pixels (full_trans applied)
keypoints_full        (49, 3)                [x, y, conf] in full-image pixels (after flip/downsample,
                                             without the augmentation rotation)
pose                  (72,)                  SMPL axis-angle (flipped, global orient rotated)
betas                 (10,)                  SMPL shape
pose_3d               (24, 4)                GT-24 3D joints (m) + conf, flipped and rotated
has_smpl              ()                     1. when pose/betas are valid
has_pose_3d           ()                     1. when the dataset has ``S``
scale                 ()                     box height / 200 (after the scale augmentation)
center                (2,)                   box centre, full-image pixels (after flip)
is_flipped            () int64               flip applied
rot_angle             ()                     rotation in degrees
scale_factor          ()                     scale augmentation factor
gender                () int64               the npz value, coded: 0 'm', 1 'f', 2 any other value (e.g.
                                             'n' = neutral), -1 no 'gender' key (GENDER_* constants); the
                                             evaluation maps it to a GT body with its gender rule
                                             (:func:`metahmr_cli.evaluation.protocols.gt_body_codes`)
img_h, img_w          ()                     full image size after downsampling
orig_shape            (2,)                   [H, W] of the image file
focal_length          ()                     full-image focal length (px)
bbox_info             (3,)                   CLIFF bbox_info (normalised form)
crop_trans            (2, 3)                 full px -> crop px, no rotation
full_trans            (2, 3)                 full px -> crop px, with the augmentation rotation
inv_trans             (2, 3)                 crop px -> full px, no rotation
imgname               str                    absolute image path
dataset_name          str
sample_index          () int64               row in the npz
====================  =====================  ==============================================================
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..constants import IMAGENET_MEAN, IMAGENET_STD, IMG_H, IMG_W, NUM_BETAS, SCALE_PX
from ..errors import DatasetError
from ..geometry import apply_affine, bbox_info, box_from_keypoints, crop_transform
from .augment import (
    AugmentConfig,
    AugParams,
    flip_joints_3d,
    flip_keypoints,
    flip_pose,
    item_rng,
    rotate_global_orient,
    rotate_joints_3d,
    sample_augmentation,
)
from .npzio import load_npz
from .occlusion import load_occluders, occlude
from .registry import DatasetsConfig, DatasetSpec, load_datasets_config

__all__ = [
    "GENDER_FEMALE",
    "GENDER_MALE",
    "GENDER_MISSING",
    "GENDER_OTHER",
    "Annotations",
    "HMRDataset",
    "gender_codes",
    "read_rgb",
]

log = logging.getLogger(__name__)

_MEAN = np.asarray(IMAGENET_MEAN, dtype=np.float32)
_STD = np.asarray(IMAGENET_STD, dtype=np.float32)


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB.

    Raises:
        DatasetError: missing or undecodable file.
    """
    p = Path(path)
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:
        why = "does not exist" if not p.exists() else "cannot be decoded"
        raise DatasetError(f"image {p} {why}; check the dataset's image root (datasets config 'images').")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


GENDER_MISSING = -1
"""Gender code of a sample of a file without a ``gender`` key."""
GENDER_MALE = 0
"""Gender code of the value ``'m'``."""
GENDER_FEMALE = 1
"""Gender code of the value ``'f'``."""
GENDER_OTHER = 2
"""Gender code of any other value (``'n'`` = neutral in ``metahmr data synth`` files, but also ``'male'``, ...)."""


def gender_codes(values: Any) -> np.ndarray:
    """Code the ``gender`` values of an npz without deciding which body they mean.

    The values are compared exactly, as the released code compares ``str(g) == 'm'`` (bytes are decoded
    first): ``'m'`` -> GENDER_MALE, ``'f'`` -> GENDER_FEMALE, anything else -> GENDER_OTHER. Which GT body each
    code is evaluated with is decided in one place, by the evaluation's gender rule
    (:func:`metahmr_cli.evaluation.protocols.gt_body_codes`). A file without the key has GENDER_MISSING.

    Returns:
        (N,) int64.
    """
    out = []
    for g in np.asarray(values).reshape(-1):
        if isinstance(g, bytes):
            g = g.decode("utf-8", "replace")
        g = str(g)
        out.append(GENDER_MALE if g == "m" else GENDER_FEMALE if g == "f" else GENDER_OTHER)
    return np.asarray(out, dtype=np.int64)


@dataclass
class Annotations:
    """The arrays of one SPIN/CLIFF npz, with missing keys filled as the released BaseDataset does.

    Attributes:
        imgname: (N,) str, relative to the image root.
        center: (N, 2); scale: (N,).
        part: (N, 24, 3); openpose: (N, 25, 3) (zeros when missing).
        pose: (N, 72); betas: (N, 10) (zeros when missing); has_smpl: (N,) float32.
        S: (N, 24, 4) or None; gender: (N,) int64 codes of :func:`gender_codes` (GENDER_MISSING without the key);
        focal_length: (N,) or None.
    """

    imgname: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    part: np.ndarray
    openpose: np.ndarray
    pose: np.ndarray
    betas: np.ndarray
    has_smpl: np.ndarray
    S: np.ndarray | None
    gender: np.ndarray
    focal_length: np.ndarray | None

    @property
    def has_pose_3d(self) -> bool:
        """Per dataset: True iff the file has ``S``."""
        return self.S is not None

    def __len__(self) -> int:
        return int(self.imgname.shape[0])

    @staticmethod
    def from_npz(path: str | Path) -> Annotations:
        """Load and normalise the arrays; see :mod:`metahmr_cli.data.check` for a full validation."""
        d = load_npz(path)
        if "imgname" not in d:
            raise DatasetError(f"{path}: key 'imgname' is missing (run `metahmr data check {path}`).")
        n = int(d["imgname"].shape[0])
        if "part" not in d:
            raise DatasetError(
                f"{path}: key 'part' (N, 24, 3) is missing; the box is rebuilt from it "
                f"(run `metahmr data check {path}`)."
            )

        def arr(key: str, shape: tuple[int, ...], default: float | None = 0.0) -> np.ndarray | None:
            if key not in d:
                return None if default is None else np.full((n, *shape), default, dtype=np.float32)
            a = np.asarray(d[key])
            if a.shape[0] != n or (shape and tuple(a.shape[1:]) != shape):
                raise DatasetError(
                    f"{path}: key '{key}' has shape {a.shape}, expected ({n}, {', '.join(map(str, shape))}) "
                    f"(run `metahmr data check {path}`)."
                )
            return a.astype(np.float32)

        has_pose = "pose" in d
        if has_pose:
            has_smpl = (
                np.asarray(d["has_smpl"], dtype=np.float32).reshape(n)
                if "has_smpl" in d
                else np.ones(n, dtype=np.float32)
            )
        else:
            has_smpl = np.zeros(n, dtype=np.float32)
        betas = d.get("shape")
        if betas is not None:
            betas = np.asarray(betas, dtype=np.float32)[:, :NUM_BETAS]
            if betas.shape != (n, NUM_BETAS):
                raise DatasetError(f"{path}: key 'shape' has shape {d['shape'].shape}, expected ({n}, {NUM_BETAS}).")
        else:
            betas = np.zeros((n, NUM_BETAS), dtype=np.float32)
        focal = d.get("focal_length")
        if focal is not None:
            focal = np.asarray(focal, dtype=np.float32).reshape(n, -1)[:, 0]
        gender = gender_codes(d["gender"]) if "gender" in d else np.full(n, GENDER_MISSING, dtype=np.int64)
        if gender.shape != (n,):
            raise DatasetError(f"{path}: key 'gender' has shape {np.shape(d['gender'])}, expected ({n},).")
        return Annotations(
            imgname=np.asarray([str(s.decode() if isinstance(s, bytes) else s) for s in d["imgname"]]),
            center=arr("center", (2,)),
            scale=arr("scale", ()).reshape(n),
            part=arr("part", (24, 3)),
            openpose=arr("openpose", (25, 3)),
            pose=arr("pose", (72,)),
            betas=betas,
            has_smpl=has_smpl,
            S=arr("S", (24, 4), default=None),
            gender=gender,
            focal_length=focal,
        )


class HMRDataset(Dataset):
    """One SPIN/CLIFF-format dataset with the Meta-HMR per-sample pipeline (see the module docstring).

    Args:
        spec: a resolved :class:`DatasetSpec`, or a path to an npz (image root = its folder).
        is_train: apply augmentation (and synthetic occlusion where allowed).
        augment: augmentation settings (defaults = released values).
        seed: base seed; item ``i`` of epoch ``e`` uses a generator seeded with (seed, e, i).
        occluders: preloaded occluder patches (else read from ``augment.occluders`` when occlusion is on).
        out_wh: crop (width, height).
    """

    def __init__(
        self,
        spec: DatasetSpec | str | Path,
        *,
        is_train: bool = False,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        occluders: list[np.ndarray] | None = None,
        out_wh: tuple[int, int] = (IMG_W, IMG_H),
    ) -> None:
        if not isinstance(spec, DatasetSpec):
            spec = DatasetsConfig().resolve(str(spec))
        self.spec = spec
        self.name = spec.name
        self.is_train = bool(is_train)
        self.augment = augment if augment is not None else AugmentConfig()
        self.seed = int(seed)
        self.epoch = 0
        self.out_wh = (int(out_wh[0]), int(out_wh[1]))
        self.ann = Annotations.from_npz(spec.npz)
        self.use_occlusion = self.is_train and self.augment.enabled and self.augment.occlusion and spec.occlusion
        self.occluders: list[np.ndarray] = []
        if self.use_occlusion:
            if occluders is not None:
                self.occluders = occluders
            elif self.augment.occluders:
                self.occluders = load_occluders(self.augment.occluders)
            else:
                raise DatasetError(
                    f"synthetic occlusion is on for dataset '{self.name}' but no occluder file is set; set "
                    "'occluders' in the datasets config (or augment.occluders) or switch occlusion off."
                )
        log.debug("dataset %s: %d samples from %s", self.name, len(self.ann), spec.npz)

    @classmethod
    def from_config(
        cls,
        name_or_path: str | Path,
        config: DatasetsConfig | str | Path | None = None,
        *,
        is_train: bool = False,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        **resolve_overrides: Any,
    ) -> HMRDataset:
        """Build a dataset by name (or npz path) from a datasets config (object, file or defaults).

        The config's ``occluders`` file is used when ``augment.occlusion`` is on and no file is set there.
        """
        cfg = config if isinstance(config, DatasetsConfig) else load_datasets_config(config)
        spec = cfg.resolve(name_or_path, **resolve_overrides)
        aug = augment if augment is not None else AugmentConfig()
        if aug.occlusion and not aug.occluders and spec.occlusion and is_train:
            occ = cfg.occluders_path()
            if occ is not None:
                aug = dataclasses.replace(aug, occluders=str(occ))
        return cls(spec, is_train=is_train, augment=aug, seed=seed)

    def __len__(self) -> int:
        return len(self.ann)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (call before each epoch; workers copy it)."""
        self.epoch = int(epoch)

    def image_path(self, index: int) -> Path:
        """Absolute path of sample ``index``'s image."""
        return self.spec.image_root / str(self.ann.imgname[index])

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for dataset '{self.name}' of length {len(self)}")
        rng = item_rng(self.seed, self.epoch, index)
        aug = sample_augmentation(rng, self.augment) if self.is_train else AugParams.identity()
        return self.get_item(index, aug, rng)

    def get_item(self, index: int, aug: AugParams, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """Process sample ``index`` with an explicit augmentation draw (``rng`` drives occlusion)."""
        a = self.ann
        ds = self.spec.downsample
        img = read_rgb(self.image_path(index))
        orig_shape = img.shape[:2]
        if ds > 1:
            img = cv2.resize(img, (img.shape[1] // ds, img.shape[0] // ds))
        h, w = img.shape[:2]

        kp = np.concatenate([a.openpose[index], a.part[index]], axis=0).astype(np.float64)
        kp[:, :2] /= ds
        part = kp[25:]
        if (part[:, 2] > 0).any():
            center, scale = box_from_keypoints(part)
            center = np.asarray(center, dtype=np.float64)
            scale = float(scale)
        else:
            center = a.center[index].astype(np.float64) / ds
            scale = float(a.scale[index]) / ds
            if not scale > 0:
                raise DatasetError(
                    f"{self.spec.npz}: sample {index} has no visible 'part' keypoint and no valid center/scale."
                )
        scale *= aug.scale

        pose = a.pose[index].astype(np.float64)
        S = a.S[index].astype(np.float64) if a.S is not None else np.zeros((24, 4))
        if aug.flip:
            img = img[:, ::-1]
            center = np.array([w - 1.0 - center[0], center[1]])
            kp = flip_keypoints(kp, w)
            S = flip_joints_3d(S)
            pose = flip_pose(pose)
        full_trans = crop_transform(center, scale, aug.rot_deg, self.out_wh)
        crop_trans = crop_transform(center, scale, 0.0, self.out_wh)
        inv_trans = crop_transform(center, scale, 0.0, self.out_wh, inverse=True)

        crop = cv2.warpAffine(np.ascontiguousarray(img), full_trans, self.out_wh, flags=cv2.INTER_LINEAR)
        kp_crop = kp.copy()
        kp_crop[:, :2] = apply_affine(kp[:, :2], full_trans)
        if aug.rot_deg != 0:
            S = rotate_joints_3d(S, aug.rot_deg)
            pose = rotate_global_orient(pose, aug.rot_deg)

        if self.use_occlusion and self.occluders:
            occ_rng = rng if rng is not None else item_rng(self.seed, self.epoch, index, stream=1)
            crop = occlude(crop, self.occluders, occ_rng, self.augment.occluder_count, self.augment.occluder_size)
        crop_f = np.clip(crop.astype(np.float32) * np.asarray(aug.pixel_factor, dtype=np.float32), 0.0, 255.0)
        crop_f = (crop_f / 255.0 - _MEAN) / _STD
        img_t = torch.from_numpy(np.ascontiguousarray(crop_f.transpose(2, 0, 1)))

        if a.focal_length is not None:
            focal = float(a.focal_length[index]) / ds
        else:
            focal = float(np.sqrt(w * w + h * h))
        binfo = bbox_info(
            torch.from_numpy(np.asarray(center, dtype=np.float64)[None]),
            torch.tensor([scale], dtype=torch.float64),
            torch.tensor([[h, w]], dtype=torch.float64),
            torch.tensor([focal], dtype=torch.float64),
        )[0]
        has_smpl = float(a.has_smpl[index])
        if has_smpl == 0:
            pose = np.zeros(72)

        def f32(x: Any) -> torch.Tensor:
            return torch.as_tensor(np.asarray(x, dtype=np.float32))

        return {
            "img": img_t,
            "keypoints": f32(kp_crop),
            "keypoints_full": f32(kp),
            "pose": f32(pose),
            "betas": f32(a.betas[index] if has_smpl else np.zeros(NUM_BETAS)),
            "pose_3d": f32(S),
            "has_smpl": f32(has_smpl),
            "has_pose_3d": f32(1.0 if a.has_pose_3d else 0.0),
            "scale": f32(scale),
            "center": f32(center),
            "is_flipped": torch.tensor(int(aug.flip), dtype=torch.int64),
            "rot_angle": f32(aug.rot_deg),
            "scale_factor": f32(aug.scale),
            "gender": torch.tensor(int(a.gender[index]), dtype=torch.int64),
            "img_h": f32(h),
            "img_w": f32(w),
            "orig_shape": f32(orig_shape),
            "focal_length": f32(focal),
            "bbox_info": binfo.to(torch.float32),
            "crop_trans": f32(crop_trans),
            "full_trans": f32(full_trans),
            "inv_trans": f32(inv_trans),
            "imgname": str(self.image_path(index)),
            "dataset_name": self.name,
            "sample_index": torch.tensor(index, dtype=torch.int64),
        }

    def box_size_px(self, index: int) -> float:
        """Box height in pixels of sample ``index`` without augmentation (diagnostics)."""
        part = self.ann.part[index].astype(np.float64)
        part[:, :2] /= self.spec.downsample
        return float(box_from_keypoints(part)[1]) * SCALE_PX
