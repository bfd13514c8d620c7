"""Build regressors by architecture + backbone name, or by the name of a released network layout."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..constants import IMG_H, IMG_W
from ..errors import ConfigError
from .backbones import available_backbones, build_backbone
from .regressor import HEAD_DROPOUT, HEAD_WIDTH, Regressor

__all__ = ["LAYOUTS", "LayoutSpec", "build_network", "build_regressor", "layout_for"]


@dataclass(frozen=True)
class LayoutSpec:
    """How one released network is built and how its state-dict keys are named.

    ``backbone_prefix`` is the prefix of the backbone keys in the released file ("" = flat keys such as
    ``conv1.weight``); the head keys (``fc1.*`` ...) and ``init_*`` buffers are always at top level.
    """

    name: str
    arch: str
    backbone: str
    n_iter: int
    backbone_prefix: str
    description: str


LAYOUTS: dict[str, LayoutSpec] = {
    spec.name: spec
    for spec in (
        LayoutSpec("cliff_meta_resnet", "cliff", "resnet50", 10, "",
                   "Meta-HMR main net, CLIFF head, ResNet-50 with flat keys (fc1 in 2208)"),
        LayoutSpec("cliff_aux_resnet", "cliff", "resnet50", 3, "",
                   "auxiliary CLIFF-Res50, flat keys (fc1 in 2208)"),
        LayoutSpec("hmr_meta_resnet", "hmr", "resnet50", 10, "",
                   "Meta-HMR main net, HMR head, ResNet-50 with flat keys (fc1 in 2205)"),
        LayoutSpec("hmr_aux_resnet", "hmr", "resnet50", 3, "",
                   "auxiliary HMR/SPIN net, flat keys (fc1 in 2205)"),
        LayoutSpec("cliff_meta_hrnet", "cliff", "hrnet_w48_pose", 10, "backbone.",
                   "Meta-HMR main net, pose-HRNet-W48 under 'backbone.' (fc1 in 880)"),
        LayoutSpec("cliff_aux_hrnet", "cliff", "hrnet_w48_cls", 3, "encoder.",
                   "auxiliary CLIFF-HR48, classification HRNet-W48 under 'encoder.' (fc1 in 2208)"),
    )
}
"""The six released network layouts (see reference-checkpoint-layouts.json)."""


def build_regressor(arch: str = "cliff", backbone: str = "resnet50", n_iter: int = 3,
                    mean_params: Mapping[str, Any] | None = None,
                    img_hw: tuple[int, int] = (IMG_H, IMG_W), *, init_weights: bool = True,
                    hidden: int = HEAD_WIDTH, dropout: float = HEAD_DROPOUT) -> Regressor:
    """A freshly initialised :class:`Regressor`.

    Args:
        arch: "cliff" (bbox_info in the head) or "hmr".
        backbone: one of ``available_backbones()``: "resnet50", "hrnet_w48_cls", "hrnet_w48_pose",
            "resnet_tiny".
        n_iter: default head iterations.
        mean_params: pose (144,), shape (10,), cam (3,) arrays for the init_* buffers (None -> identity pose).
        img_hw: crop size (H, W).
        init_weights: False skips the released initialisation (weights are loaded right after).
        hidden, dropout: width of the head's fc1/fc2 and its dropout (released: 1024, 0.5).
    """
    if arch not in ("cliff", "hmr"):
        raise ConfigError(f"unknown architecture {arch!r}; use 'cliff' or 'hmr'")
    if backbone not in available_backbones():
        raise ConfigError(f"unknown backbone {backbone!r}; choose one of {available_backbones()}")
    net = build_backbone(backbone, img_hw)
    return Regressor(net, int(net.feature_dim), arch=arch, n_iter=n_iter, mean_params=mean_params,
                     backbone_name=backbone, img_hw=img_hw, init_weights=init_weights, hidden=hidden,
                     dropout=dropout)


def layout_for(layout: str) -> LayoutSpec:
    """The :class:`LayoutSpec` of a released layout name (ConfigError listing the valid ones otherwise)."""
    try:
        return LAYOUTS[layout]
    except KeyError:
        raise ConfigError(f"unknown network layout {layout!r}; choose one of {sorted(LAYOUTS)}") from None


def build_network(layout: str, mean_params: Mapping[str, Any] | None = None) -> Regressor:
    """Build the network of one of the six released layouts (architecture, backbone and n_iter)."""
    spec = layout_for(layout)
    return build_regressor(spec.arch, spec.backbone, spec.n_iter, mean_params=mean_params)
