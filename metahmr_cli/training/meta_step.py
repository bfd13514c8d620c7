"""One training step of Meta-HMR: the first-order meta step (FOMAML) and the plain CLIFF/HMR step.

For a batch of B samples (paper Algorithm 1, Eq. 5-9; released ``trainer_one_stage_cliff.py``):

1. backbone features of the main net f_w (computed once; the released inner step adapts only the head);
2. pseudo targets Θ^u from the auxiliary net f_u (vertices, rotations, betas, GT-set 3D joints), gated by the
   samples' ground-truth flags as released;
3. inner loop through the TTO engine (:func:`metahmr_cli.tto.inner_update`, the one implementation), as the
   config's :class:`metahmr_cli.tto.InnerLoop` says (released: one SGD step,
   w'_g = w − α ∇_w L_expl(f_w, Θ^u, J_2D)), for every unit g: each sample (grouping "sample", the paper) or
   each group of ``group_size`` samples with the group's batch-mean loss (grouping "batch", released);
   the inner gradients are detached (first order). The same InnerLoop object starts test-time optimisation;
4. outer loss: the released batch-mean L_train of the predictions of f_{w'_g} against the ground truth, × 60;
5. the outer gradient reaches w through w'_g = w − α·(constant), i.e. the gradient at w' is applied to w.
   Because the outer loss is a mean over the batch, w receives (1/B) Σ_i ∇_{w'} L_i(w'_{g(i)}).

With ``aux_mode="paper"`` the aux net also receives L_train(f_u) × 60 (Eq. 5/8), whenever it is present (also in
plain steps and with a 2D-only inner loop); with "released" it has no loss (first-order MAML leaves it untouched;
only its BatchNorm statistics move when it runs in train mode).
``meta=False`` is plain training (no inner step); an inner loop with ``loss="2d"`` uses the 2D keypoint loss
alone, the unweighted L_2D of test-time optimisation (no auxiliary net).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..body.smpl import BodyModel
from ..errors import InputError
from ..geometry.camera import CropInfo
from ..geometry.crop import normalize_crop_keypoints
from ..geometry.rotation import axis_angle_to_rotmat
from ..losses import LOSS_TERMS, LossTargets, LossWeights, combined_loss, pseudo_targets
from ..models import Regressor
from ..predictions import Decoded, decode
from ..tto import InnerLoop, TTOInputs, batched_forward, inner_update

__all__ = ["MetaStep", "MetaStepConfig", "TrainBatch", "adapt", "prepare_batch"]


@dataclass
class MetaStepConfig:
    """What one step does (see the module docstring; the fields mirror :class:`TrainConfig`)."""

    meta: bool = True
    aux_mode: Literal["released", "paper"] = "released"
    grouping: Literal["batch", "sample"] = "batch"
    group_size: int | None = None
    inner: InnerLoop = dataclasses.field(default_factory=InnerLoop)
    weights: LossWeights = dataclasses.field(default_factory=LossWeights)
    camera: Literal["cliff", "hmr"] = "cliff"
    amp_dtype: torch.dtype | None = None  # autocast dtype of the backbones (CUDA only), None = off

    @property
    def scope(self) -> str:
        """The weights the inner loop adapts."""
        return self.inner.scope

    @property
    def uses_aux(self) -> bool:
        """The auxiliary net is run (pseudo targets) only by the meta step whose inner loss has pseudo terms."""
        return self.meta and self.inner.loss == "expl"


@dataclass
class TrainBatch:
    """A training batch on the device.

    Attributes:
        images: (B, 3, 256, 192) normalised crops.
        crop: the crops' placement (B entries).
        keypoints2d: (B, 49, 3) 2D keypoints of the inner step in normalised crop coordinates + confidence: the
            GT keypoints, or the detector-like ``keypoints_obs`` of synthetic keypoint data.
        gt: ground-truth targets (keypoints2d, joints3d (B, 24, 4), vertices (B, V, 3), rotmat (B, 24, 3, 3),
            betas (B, 10), has_smpl (B,), has_pose_3d (B,)).
    """

    images: Tensor
    crop: CropInfo
    keypoints2d: Tensor
    gt: LossTargets

    def __len__(self) -> int:
        return int(self.images.shape[0])


def prepare_batch(items: Mapping[str, Any], body: BodyModel, device: torch.device | str,
                  dtype: torch.dtype = torch.float32) -> TrainBatch:
    """Turn a collated data-loader batch (keys of :class:`metahmr_cli.data.HMRDataset`) into a TrainBatch.

    The GT vertices come from ``body`` posed with the GT rotations and betas (neutral body, as released).

    Args:
        items: img (B, 3, 256, 192), keypoints (B, 49, 3) crop px, pose (B, 72), betas (B, 10), pose_3d (B, 24, 4),
            has_smpl (B,), has_pose_3d (B,), center (B, 2), scale (B,), img_h/img_w (B,), focal_length (B,);
            optional keypoints_obs (B, 49, 3) crop px: detector-like keypoints for the inner step.
    """
    missing = [k for k in ("img", "keypoints", "pose", "betas", "pose_3d", "has_smpl", "has_pose_3d", "center",
                           "scale", "img_h", "img_w", "focal_length") if k not in items]
    if missing:
        raise InputError(f"training batch lacks {missing}; use metahmr_cli.data.HMRDataset items.")

    def t(key: str) -> Tensor:
        return items[key].to(device=device, dtype=dtype, non_blocking=True)

    images = t("img")
    b = images.shape[0]
    kp = normalize_crop_keypoints(t("keypoints"))
    # detector-like keypoints (synthetic keypoint data) drive the inner step as they drive TTO at test time;
    # the exact projections stay the outer loss's ground truth
    kp_inner = normalize_crop_keypoints(t("keypoints_obs")) if "keypoints_obs" in items else kp
    if "keypoints_obs" in items:
        kp_inner = kp_inner * (kp_inner[..., 2:3] > 0)
    crop = CropInfo.from_boxes(t("center"), t("scale"), torch.stack([t("img_h"), t("img_w")], dim=-1),
                               t("focal_length"), dtype=dtype, device=device)
    rotmat = axis_angle_to_rotmat(t("pose").reshape(b, 24, 3))
    betas = t("betas")
    with torch.no_grad():
        vertices = body(rotmat, betas).vertices
    gt = LossTargets(keypoints2d=kp, joints3d=t("pose_3d"), vertices=vertices, rotmat=rotmat, betas=betas,
                     has_smpl=t("has_smpl"), has_pose_3d=t("has_pose_3d"))
    return TrainBatch(images=images, crop=crop, keypoints2d=kp_inner, gt=gt)


def _autocast(images: Tensor, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None or images.device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def _features(net: Regressor, images: Tensor, amp_dtype: torch.dtype | None) -> Tensor:
    """(B, F) backbone features (bf16 autocast on CUDA when asked), returned in the head's dtype."""
    with _autocast(images, amp_dtype):
        feats = net.backbone(images)
    return feats.to(net.fc1.weight.dtype)


def _bbox(net: Regressor, crop: CropInfo) -> Tensor | None:
    return crop.bbox_info() if net.uses_bbox_info else None


def adapt(main: Regressor, body: BodyModel, batch: TrainBatch, targets: LossTargets, cfg: MetaStepConfig,
          features: Tensor | None = None) -> tuple[dict[str, Tensor], int]:
    """The inner loop (``cfg.inner``): adapted weights w' of every unit, through the TTO engine's ``inner_update``.

    Args:
        targets: inner-loss targets of the B samples (pseudo targets, or 2D-only targets).
        features: (B, F) main-net features (required for scope "head").
    Returns:
        (name -> (G, ...) adapted weights differentiable w.r.t. the main net's weights, samples per unit n).
    """
    b = len(batch)
    n = 1 if cfg.grouping == "sample" else min(int(cfg.group_size or b), b)
    inner = cfg.inner
    names = set(main.scope_parameter_names(inner.scope))
    theta = {k: p for k, p in main.named_parameters() if k in names}
    inputs = TTOInputs(images=batch.images, crop=batch.crop, keypoints2d=batch.keypoints2d,
                       has_smpl=batch.gt.has_smpl, has_pose_3d=batch.gt.has_pose_3d)
    adapted = inner_update(
        main, theta, inputs, targets, inner.lr, inner.scope,
        "person" if n == 1 else "batch",
        body=body, weights=cfg.weights, camera=cfg.camera, group_size=n,
        features=features if inner.scope == "head" else None,
        optimizer=inner.optimizer, steps=inner.steps, loss=inner.loss,
    )
    return adapted, n


class MetaStep(nn.Module):
    """The main and the auxiliary net in one module, so one DistributedDataParallel wrapper covers both.

    ``forward(batch)`` returns ``(loss, stats)``: the scalar to backpropagate (outer loss, plus the aux loss in
    paper mode) and detached statistics (``outer``: the ×60 outer loss; ``term/<name>``: its weighted terms
    before the ×60; ``aux``: the aux loss). In "released" aux mode the aux parameters do not require grad.

    Args:
        main: the main regressor f_w. aux: the auxiliary regressor f_u (None when ``cfg.uses_aux`` is False).
        body: body model used to decode predictions (not registered as a submodule: no DDP buffer traffic).
    """

    def __init__(self, main: Regressor, aux: Regressor | None, body: BodyModel, cfg: MetaStepConfig) -> None:
        super().__init__()
        if cfg.uses_aux and aux is None:
            raise InputError("the meta step with pseudo targets needs the auxiliary network (aux is None).")
        self.main = main
        self.aux = aux
        self.cfg = cfg
        object.__setattr__(self, "body", body)
        if aux is not None:
            aux.requires_grad_(cfg.aux_mode == "paper")

    def _decode(self, out: dict[str, Tensor], crop: CropInfo) -> Decoded:
        return decode(out, self.body, crop, camera=self.cfg.camera)

    def _outer(self, dec: Decoded, batch: TrainBatch) -> tuple[Tensor, dict[str, Tensor]]:
        return combined_loss(dec, batch.gt, self.cfg.weights, outer=True)

    def _aux_loss(self, batch: TrainBatch) -> Tensor | None:
        """60·L_train(f_u) on the ground truth when the aux net is trained (paper mode, grad enabled), else None."""
        cfg = self.cfg
        if self.aux is None or cfg.aux_mode != "paper" or not torch.is_grad_enabled():
            return None
        crop = batch.crop
        aux_feats = _features(self.aux, batch.images, cfg.amp_dtype)
        aux_dec = self._decode(self.aux(features=aux_feats, bbox_info=_bbox(self.aux, crop)), crop)
        return combined_loss(aux_dec, batch.gt, cfg.weights, outer=True)[0]

    def inner_targets(self, batch: TrainBatch) -> tuple[LossTargets, Tensor | None]:
        """Targets of the inner loss and the aux net's loss (paper mode with grad enabled, else None).

        With pseudo terms: the aux net's pseudo targets (its forward runs with grad only when it is trained);
        without: the inner keypoints alone.
        """
        cfg = self.cfg
        if not cfg.uses_aux:
            return LossTargets(keypoints2d=batch.keypoints2d, has_smpl=batch.gt.has_smpl,
                               has_pose_3d=batch.gt.has_pose_3d), None
        assert self.aux is not None
        aux, crop = self.aux, batch.crop
        aux_loss: Tensor | None = None
        train_aux = cfg.aux_mode == "paper"
        with torch.set_grad_enabled(train_aux and torch.is_grad_enabled()):
            aux_feats = _features(aux, batch.images, cfg.amp_dtype)
            aux_dec = self._decode(aux(features=aux_feats, bbox_info=_bbox(aux, crop)), crop)
            if train_aux:
                aux_loss, _ = combined_loss(aux_dec, batch.gt, cfg.weights, outer=True)
        return pseudo_targets(aux_dec, batch.keypoints2d, batch.gt.has_smpl, batch.gt.has_pose_3d), aux_loss

    def forward(self, batch: TrainBatch) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.cfg
        main = self.main
        crop = batch.crop
        bbox = _bbox(main, crop)
        head = cfg.scope == "head"
        feats = _features(main, batch.images, cfg.amp_dtype) if (head or not cfg.meta) else None
        stats: dict[str, Tensor] = {}
        aux_loss: Tensor | None = None

        if not cfg.meta:
            dec = self._decode(main(features=feats, bbox_info=bbox), crop)
            outer, terms = self._outer(dec, batch)
            loss = outer
            # plain warm-up steps of a meta run: the aux net learns from the ground truth as in the meta steps
            aux_loss = self._aux_loss(batch)
            if aux_loss is not None:
                loss = outer + aux_loss
        else:
            targets, aux_loss = self.inner_targets(batch)
            if aux_loss is None:  # a 2D-only inner loop: the aux net (paper mode) still learns from the ground truth
                aux_loss = self._aux_loss(batch)
            adapted, n = adapt(main, self.body, batch, targets, cfg, feats)
            out = batched_forward(main, adapted, None if head else batch.images, bbox,
                                  features=feats if head else None, group_size=n)
            outer, terms = self._outer(self._decode(out, crop), batch)
            loss = outer if aux_loss is None else outer + aux_loss

        stats["outer"] = outer.detach()
        for name in LOSS_TERMS:
            if name in terms:
                stats[f"term/{name}"] = terms[name]
        if aux_loss is not None:
            stats["aux"] = aux_loss.detach()
        return loss, stats
