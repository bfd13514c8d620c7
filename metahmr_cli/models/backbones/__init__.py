"""Image backbones and a small registry of them by name.

Every backbone maps ImageNet-normalised crops (B, 3, H, W) to a global feature (B, feature_dim), has the
attribute ``feature_dim`` and the tuple ``last_stage_modules`` (names of its last-stage submodules).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ...errors import ConfigError
from .hrnet import ClsHRNet, PoseHRNet, hrnet_config, hrnet_w48_cls, hrnet_w48_pose
from .resnet import ResNetBackbone, resnet50, resnet_tiny

__all__ = [
    "BACKBONES",
    "ClsHRNet",
    "PoseHRNet",
    "ResNetBackbone",
    "available_backbones",
    "build_backbone",
    "hrnet_config",
    "hrnet_w48_cls",
    "hrnet_w48_pose",
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
