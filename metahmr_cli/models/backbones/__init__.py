"""Backbones and a small registry of them by name.

Every backbone maps its per-person input to a global feature (B, feature_dim) and has the attributes
``feature_dim`` and ``last_stage_modules`` (names of its last-stage submodules). Image backbones read
ImageNet-normalised crops (B, 3, H, W); a backbone with ``input_kind = "keypoints"`` (the open model's
``kpnet``) reads (B, *input_shape) keypoints instead.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ...errors import ConfigError
from .hrnet import ClsHRNet, PoseHRNet, hrnet_config, hrnet_w48_cls, hrnet_w48_pose
from .keypoints import (
    KeypointEncoder,
    keypoint_encoder,
    keypoint_encoder_evidence,
    keypoint_encoder_small,
    keypoint_encoder_small_evidence,
)
from .resnet import ResNetBackbone, resnet50, resnet_tiny

__all__ = [
    "BACKBONES",
    "ClsHRNet",
    "KeypointEncoder",
    "PoseHRNet",
    "ResNetBackbone",
    "available_backbones",
    "build_backbone",
    "hrnet_config",
    "hrnet_w48_cls",
    "hrnet_w48_pose",
    "keypoint_encoder",
    "keypoint_encoder_evidence",
    "keypoint_encoder_small",
    "keypoint_encoder_small_evidence",
    "register_backbone",
    "resnet50",
    "resnet_tiny",
]

BackboneFactory = Callable[[tuple[int, int]], nn.Module]

BACKBONES: dict[str, BackboneFactory] = {
    "resnet50": resnet50,
    "hrnet_w48_cls": hrnet_w48_cls,
    "hrnet_w48_pose": hrnet_w48_pose,
    "resnet_tiny": resnet_tiny,
    "kpnet": keypoint_encoder,
    "kpnet_small": keypoint_encoder_small,
    "kpnet_ev": keypoint_encoder_evidence,
    "kpnet_small_ev": keypoint_encoder_small_evidence,
}
"""Backbone factories by name; each takes the crop size (H, W) and returns an untrained module."""


def register_backbone(name: str, factory: BackboneFactory) -> None:
    """Add a backbone factory under ``name`` (overwrites an existing entry of that name)."""
    BACKBONES[name] = factory


def available_backbones() -> list[str]:
    """Names accepted by :func:`build_backbone`."""
    return sorted(BACKBONES)


def build_backbone(name: str, img_hw: tuple[int, int] = (256, 192)) -> nn.Module:
    """Instantiate the backbone registered as ``name`` for crops of size ``img_hw`` (H, W)."""
    try:
        factory = BACKBONES[name]
    except KeyError:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {available_backbones()}") from None
    return factory(img_hw)
