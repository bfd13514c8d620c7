"""The iterative SMPL regressor shared by CLIFF, HMR/SPIN and Meta-HMR.

A backbone turns the crop into a global feature xf (B, F). Starting from the mean parameters, the head runs
``n_iter`` times: xc = [xf, bbox_info (CLIFF only), pose6d (144), betas (10), cam (3)] -> fc1 -> Dropout ->
fc2 -> Dropout, and three linear layers add residual updates to pose, betas and camera. There is no ReLU
between fc1 and fc2 (as in the released code).

The module is written so that ``torch.func.functional_call`` and ``torch.func.vmap`` over stacked
parameters work in eval mode: no in-place operations on parameters or activations in forward, and no
Python control flow that depends on tensor values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from ..constants import IMG_H, IMG_W, NUM_BETAS
from ..errors import InputError
from ..geometry.rotation import rot6d_to_rotmat

__all__ = [
    "HEAD_DROPOUT", "HEAD_MODULES", "HEAD_WIDTH", "NPOSE", "Regressor", "default_mean_params", "init_regressor_weights",
]

NPOSE = 24 * 6
NSHAPE = NUM_BETAS
NCAM = 3
NBBOX = 3
HEAD_WIDTH = 1024
"""Width of fc1/fc2 in every released network."""
HEAD_DROPOUT = 0.5
"""Dropout after fc1 and fc2 in every released network."""
HEAD_MODULES: tuple[str, ...] = ("fc1", "fc2", "decpose", "decshape", "deccam")
"""Top-level modules whose weights and biases make up the ``head`` scope."""

Scope = Literal["head", "last_stage", "all"]


def default_mean_params() -> dict[str, np.ndarray]:
    """Fallback initial state when no ``smpl_mean_params.npz`` is given.

    pose: the identity rotation for all 24 joints in the 6D layout ([1, 0, 0, 1, 0, 0] per joint, i.e. the
    first two columns of I read as a row-major 3x2 matrix), shape: zeros, cam: [0.9, 0, 0].
    """
    return {
        "pose": np.tile(np.array([1, 0, 0, 1, 0, 0], dtype=np.float32), 24),
        "shape": np.zeros(NSHAPE, dtype=np.float32),
        "cam": np.array([0.9, 0.0, 0.0], dtype=np.float32),
    }


def _as_row(value: Any, size: int, name: str) -> Tensor:
    t = torch.as_tensor(np.asarray(value, dtype=np.float32) if not isinstance(value, Tensor) else value)
    t = t.detach().to(dtype=torch.float32).reshape(-1)
    if t.numel() != size:
        raise InputError(f"mean_params['{name}'] must have {size} values, got shape {tuple(t.shape)}; "
                         "pass the arrays of smpl_mean_params.npz (pose (144,), shape (10,), cam (3,)).")
    return t.reshape(1, size).clone()


def init_regressor_weights(module: nn.Module) -> None:
    """Initialise like the released code: convs N(0, sqrt(2 / (k_h k_w out))), BN weight 1 / bias 0.

    The Regressor then applies xavier-uniform (gain 0.01) to ``decpose/decshape/deccam`` and lets a backbone
    with a ``reset_weights()`` method (the pose-HRNet: convs N(0, 0.001)) apply its own scheme.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            with torch.no_grad():
                m.weight.normal_(0.0, math.sqrt(2.0 / n))
        elif isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.fill_(1.0)
                m.bias.zero_()


class Regressor(nn.Module):
    """Backbone + iterative SMPL regressor head.

    Internal state-dict keys: ``backbone.<...>`` for the backbone, ``fc1.weight`` ... ``deccam.bias`` for
    the head and the buffers ``init_pose`` (1, 144), ``init_shape`` (1, 10), ``init_cam`` (1, 3).

    Args:
        backbone: module mapping (B, 3, H, W) crops to (B, feature_dim) features.
        feature_dim: F, width of the backbone output.
        arch: "cliff" (bbox_info enters the head) or "hmr" (it does not).
        n_iter: default number of head iterations.
        mean_params: dict with ``pose`` (144,), ``shape`` (10,), ``cam`` (3,); None -> identity pose,
            zero shape, cam [0.9, 0, 0].
        backbone_name: registry name of the backbone (kept for checkpoints and reports).
        img_hw: crop size (H, W) the network expects.
        init_weights: apply the released initialisation (False skips it, e.g. when weights are loaded next).
        hidden: width of fc1/fc2 (released: 1024).
        dropout: dropout probability after fc1 and fc2 in training mode (released: 0.5).
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, *, arch: str = "cliff", n_iter: int = 3,
                 mean_params: Mapping[str, Any] | None = None, backbone_name: str = "custom",
                 img_hw: tuple[int, int] = (IMG_H, IMG_W), init_weights: bool = True,
                 hidden: int = HEAD_WIDTH, dropout: float = HEAD_DROPOUT) -> None:
        super().__init__()
        if arch not in ("cliff", "hmr"):
            raise ValueError(f"arch must be 'cliff' or 'hmr', got {arch!r}")
        if int(n_iter) < 1:
            raise ValueError(f"n_iter must be >= 1, got {n_iter}")
        if int(hidden) < 1 or not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"hidden must be >= 1 and dropout in [0, 1), got {hidden}, {dropout}")
        self.arch = arch
        self.uses_bbox_info = arch == "cliff"
        self.feature_dim = int(feature_dim)
        self.n_iter = int(n_iter)
        self.backbone_name = backbone_name
        self.img_hw = (int(img_hw[0]), int(img_hw[1]))
        self.hidden = int(hidden)
        self.dropout = float(dropout)

        self.backbone = backbone
        in_dim = self.feature_dim + (NBBOX if self.uses_bbox_info else 0) + NPOSE + NSHAPE + NCAM
        self.fc1 = nn.Linear(in_dim, self.hidden)
        self.drop1 = nn.Dropout(self.dropout)
        self.fc2 = nn.Linear(self.hidden, self.hidden)
        self.drop2 = nn.Dropout(self.dropout)
        self.decpose = nn.Linear(self.hidden, NPOSE)
        self.decshape = nn.Linear(self.hidden, NSHAPE)
        self.deccam = nn.Linear(self.hidden, NCAM)

        if init_weights:
            init_regressor_weights(self)
            for dec in (self.decpose, self.decshape, self.deccam):
                nn.init.xavier_uniform_(dec.weight, gain=0.01)
            reset = getattr(backbone, "reset_weights", None)
            if callable(reset):  # backbones with their own released initialisation (pose-HRNet)
                reset()

        mp = default_mean_params() if mean_params is None else mean_params
        for key in ("pose", "shape", "cam"):
            if key not in mp:
                raise InputError(f"mean_params lacks '{key}'; it needs the keys pose, shape and cam "
                                 "(as in smpl_mean_params.npz).")
        self.register_buffer("init_pose", _as_row(mp["pose"], NPOSE, "pose"))
        self.register_buffer("init_shape", _as_row(mp["shape"], NSHAPE, "shape"))
        self.register_buffer("init_cam", _as_row(mp["cam"], NCAM, "cam"))

    # ------------------------------------------------------------------ forward
    @property
    def input_kind(self) -> str:
        """"image" (ImageNet-normalised crops) or "keypoints" (normalised crop keypoints, the open model)."""
        return str(getattr(self.backbone, "input_kind", "image"))

    def encode(self, images: Tensor) -> Tensor:
        """Backbone features of the network input: (B, 3, H, W) crops, or (B, *input_shape) keypoints for a
        keypoint backbone -> (B, feature_dim)."""
        if self.input_kind != "image":
            want = tuple(getattr(self.backbone, "input_shape", ()))
            if (isinstance(images, Tensor) and images.ndim == 3 and len(want) == 2 and tuple(images.shape[1:]) != want
                    and images.shape[1] >= want[0] and images.shape[2] >= want[1]):
                # keypoints + image evidence (metahmr_cli.keypoints.evidence) for a keypoints-only encoder: the
                # keypoint rows lead, so such a network reads them and ignores the rest
                images = images[:, :want[0], :want[1]]
            if not isinstance(images, Tensor) or tuple(images.shape[1:]) != want:
                shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
                raise InputError(f"this network reads {self.input_kind} of shape (B, {', '.join(map(str, want))}), "
                                 f"got {shape}.")
            return self.backbone(images)
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise InputError(f"images must be a (B, 3, {self.img_hw[0]}, {self.img_hw[1]}) tensor, got {shape}.")
        if tuple(images.shape[2:]) != self.img_hw:
            raise InputError(f"images must be {self.img_hw[0]}x{self.img_hw[1]} crops (H x W) for this network, "
                             f"got {images.shape[2]}x{images.shape[3]}; crop with the network's img_hw.")
        return self.backbone(images)

    def forward(self, images: Tensor | None = None, bbox_info: Tensor | None = None, *,
                features: Tensor | None = None, n_iter: int | None = None) -> dict[str, Tensor]:
        """Regress SMPL parameters.

        Args:
            images: (B, 3, H, W) ImageNet-normalised crops; ignored when ``features`` is given.
            bbox_info: (B, 3) normalised box information (CLIFF); unused by "hmr" networks.
            features: (B, feature_dim) precomputed backbone features; the backbone is skipped.
            n_iter: head iterations (default: ``self.n_iter``).
        Returns:
            {"pose6d": (B, 144), "rotmat": (B, 24, 3, 3), "betas": (B, 10), "cam": (B, 3)} where cam is the
            weak-perspective crop camera [s, tx, ty].
        """
        if features is None:
            if images is None:
                raise InputError("Regressor.forward needs images (B, 3, H, W) or features (B, F).")
            features = self.encode(images)
        elif features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise InputError(f"features must be (B, {self.feature_dim}), got {tuple(features.shape)}.")
        batch = features.shape[0]
        steps = self.n_iter if n_iter is None else int(n_iter)
        if steps < 1:
            raise InputError(f"n_iter must be >= 1, got {steps}.")

        parts_fixed = [features]
        if self.uses_bbox_info:
            if bbox_info is None:
                raise InputError("this CLIFF-style network needs bbox_info (B, 3); compute it with "
                                 "metahmr_cli.geometry.camera.bbox_info or CropInfo.bbox_info().")
            if bbox_info.shape != (batch, NBBOX):
                raise InputError(f"bbox_info must be ({batch}, 3), got {tuple(bbox_info.shape)}.")
            parts_fixed.append(bbox_info.to(features.dtype))

        pose = self.init_pose.expand(batch, -1)
        betas = self.init_shape.expand(batch, -1)
        cam = self.init_cam.expand(batch, -1)
        for _ in range(steps):
            xc = torch.cat([*parts_fixed, pose, betas, cam], dim=1)
            xc = self.drop1(self.fc1(xc))
            xc = self.drop2(self.fc2(xc))
            pose = pose + self.decpose(xc)
            betas = betas + self.decshape(xc)
            cam = cam + self.deccam(xc)

        rotmat = rot6d_to_rotmat(pose.reshape(batch, 24, 6))
        return {"pose6d": pose, "rotmat": rotmat, "betas": betas, "cam": cam}

    # ------------------------------------------------------------------ scopes
    def scope_parameter_names(self, scope: Scope) -> list[str]:
        """Names (as in ``named_parameters()``) of the parameters adapted in a scope.

        head: fc1, fc2, decpose, decshape, deccam weights and biases (10 tensors);
        last_stage: head + the backbone's last stage (``backbone.last_stage_modules``, e.g. ResNet layer4;
        pose-HRNet stage4 + downsample_stage_*; cls-HRNet stage4 + incre/downsamp modules + final_layer);
        all: every parameter.
        """
        names = [n for n, _ in self.named_parameters()]
        if scope == "all":
            return names
        head = [f"{m}.{p}" for m in HEAD_MODULES for p in ("weight", "bias")]
        if scope == "head":
            return head
        if scope == "last_stage":
            modules = getattr(self.backbone, "last_stage_modules", None)
            if not modules:
                raise ValueError(f"backbone {self.backbone_name!r} does not declare last_stage_modules")
            prefixes = tuple(f"backbone.{m}." for m in modules)
            return [n for n in names if n.startswith(prefixes)] + head
        raise ValueError(f"unknown scope {scope!r}; use 'head', 'last_stage' or 'all'")

    def extra_repr(self) -> str:
        return (f"arch={self.arch}, backbone={self.backbone_name}, feature_dim={self.feature_dim}, "
                f"n_iter={self.n_iter}, img_hw={self.img_hw}, hidden={self.hidden}")
