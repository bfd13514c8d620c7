"""Pure geometry: rotations, cameras, crops and Procrustes alignment."""

from __future__ import annotations

from .camera import (
    CropInfo,
    bbox_info,
    cam_crop_to_full,
    default_focal,
    estimate_translation,
    perspective_projection,
    weak_perspective_crop_transl,
)
from .crop import (
    apply_affine,
    box_from_keypoints,
    box_from_xyxy,
    crop_transform,
    crop_transform_batch,
    denormalize_crop_keypoints,
    normalize_crop_keypoints,
    warp_crop,
)
from .procrustes import similarity_align, similarity_transform
from .rotation import (
    axis_angle_to_rotmat,
    quaternion_to_rotmat,
    rot6d_to_rotmat,
    rotmat_to_axis_angle,
    rotmat_to_quaternion,
    rotmat_to_rot6d,
)

__all__ = [
    "CropInfo",
    "apply_affine",
    "axis_angle_to_rotmat",
    "bbox_info",
    "box_from_keypoints",
    "box_from_xyxy",
    "cam_crop_to_full",
    "crop_transform",
    "crop_transform_batch",
    "default_focal",
    "denormalize_crop_keypoints",
    "estimate_translation",
    "normalize_crop_keypoints",
    "perspective_projection",
    "quaternion_to_rotmat",
    "rot6d_to_rotmat",
    "rotmat_to_axis_angle",
    "rotmat_to_quaternion",
    "rotmat_to_rot6d",
    "similarity_align",
    "similarity_transform",
    "warp_crop",
    "weak_perspective_crop_transl",
]
