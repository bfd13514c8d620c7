"""Numeric constants shared by the networks, crops and cameras (see the released CLIFF/Meta-HMR code)."""

from __future__ import annotations

IMG_H: int = 256
"""Crop height in pixels ('rect' crops, CLIFF and Meta-HMR)."""
IMG_W: int = 192
"""Crop width in pixels."""
IMG_RES_SQUARE: int = 224
"""Crop side for the square SPIN/HMR crops."""
CROP_ASPECT: float = IMG_H / IMG_W
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
FOCAL_LENGTH_HMR: float = 5000.0
"""Focal length of the SPIN/HMR crop camera."""
HMR_BBOX_SIZE: float = 256.0
"""Crop size used by the 'rect' HMR crop camera."""
SCALE_PX: float = 200.0
"""Box sizes are stored as `scale = size_px / 200`."""
BBOX_MARGIN_DETECTOR: float = 1.1
"""Margin applied to detector boxes (CLIFF demo)."""
BBOX_MARGIN_KEYPOINTS: float = 1.2
"""Margin applied to boxes rebuilt from 2D keypoints (Meta-HMR datasets)."""
BBOX_INFO_XY_FACTOR: float = 2.8
BBOX_INFO_SIZE_OFFSET: float = 0.24
BBOX_INFO_SIZE_DIV: float = 0.06
NUM_BETAS: int = 10
GENDERS: tuple[str, str, str] = ("neutral", "male", "female")
"""Body model genders, in the order of the stand-in generator's seeds."""
NUM_SMPL_JOINTS: int = 24
