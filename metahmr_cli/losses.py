"""The SPIN / CLIFF / Meta-HMR loss set.

Every loss takes ``reduction``:

- ``"batch"`` reproduces the released scalar (e.g. the 2D loss is the mean over B*49*2 entries; masked terms
  are averaged over the masked subset and are 0 when the subset is empty);
- ``"sample"`` returns (B,) values where entry i equals the "batch" value computed on sample i alone
  (0 for a sample whose mask is off).

Total (released defaults) = 0.5 L_vertices + 5 L_2D + 5 L_3D + 1 L_pose + 0.001 L_betas + 1 L_cam;
the outer (meta) loss is additionally multiplied by 60.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from .body.joints import GT_SLOTS, NUM_JOINTS, OPENPOSE_SLOTS
from .errors import InputError

if TYPE_CHECKING:
    from .predictions import Decoded

__all__ = [
    "LOSS_TERMS",
    "LossTargets",
    "LossWeights",
    "Reduction",
    "camera_loss",
    "combined_loss",
    "keypoint_2d_loss",
    "keypoint_3d_loss",
    "pseudo_targets",
    "smpl_loss",
    "vertex_loss",
]

Reduction = Literal["batch", "sample"]

LOSS_TERMS: tuple[str, ...] = ("keypoint_2d", "keypoint_3d", "vertices", "pose", "betas", "camera")
"""Names of the terms of :func:`combined_loss` (keys of its dict and of ``terms``)."""


@dataclass
class LossWeights:
    """Weights of the loss terms (defaults: Meta-HMR train options).

    ``openpose_2d`` / ``gt_2d`` weight the confidences of the OpenPose (0..24) and GT (25..48) keypoint slots
    inside the 2D loss. ``outer_scale`` multiplies the outer (meta) loss only.
    """

    keypoint_2d: float = 5.0
    keypoint_3d: float = 5.0
    vertices: float = 0.5
    pose: float = 1.0
    betas: float = 0.001
    camera: float = 1.0
    openpose_2d: float = 0.0
    gt_2d: float = 1.0
    outer_scale: float = 60.0


@dataclass
class LossTargets:
    """Targets of :func:`combined_loss` (ground truth, or pseudo targets from the auxiliary net).

    Attributes:
        keypoints2d: (B, 49, 3) normalised crop coordinates + confidence.
        joints3d: (B, 24, 4) GT-set joints + confidence, or None.
        vertices: (B, V, 3) model-frame vertices, or None.
        rotmat: (B, 24, 3, 3), or None.
        betas: (B, 10), or None.
        has_smpl: (B,) 1 where rotmat/betas/vertices are valid.
        has_pose_3d: (B,) 1 where joints3d is valid.
    """

    keypoints2d: Tensor
    joints3d: Tensor | None = None
    vertices: Tensor | None = None
    rotmat: Tensor | None = None
    betas: Tensor | None = None
    has_smpl: Tensor | None = None
    has_pose_3d: Tensor | None = None

    def __post_init__(self) -> None:
        kp = self.keypoints2d
        if not isinstance(kp, Tensor) or kp.ndim != 3 or kp.shape[1:] != (NUM_JOINTS, 3):
            raise InputError(
                f"LossTargets.keypoints2d must be (B, 49, 3) [x, y, conf] in normalised crop coordinates, "
                f"got {getattr(kp, 'shape', type(kp))}."
            )
        b = kp.shape[0]
        if self.has_smpl is None:
            self.has_smpl = kp.new_ones(b)
        if self.has_pose_3d is None:
            self.has_pose_3d = kp.new_ones(b)
        for name in ("has_smpl", "has_pose_3d"):
            flag = getattr(self, name)
            if flag.shape != (b,):
                raise InputError(f"LossTargets.{name} must have shape ({b},), got {tuple(flag.shape)}.")


def _mask(flag: Tensor, b: int, name: str) -> Tensor:
    flag = torch.as_tensor(flag).reshape(-1)
    if flag.shape[0] != b:
        raise InputError(f"{name} must have shape ({b},), got {tuple(flag.shape)}.")
    return flag if flag.dtype == torch.bool else flag == 1


def _reduce_masked(per_sample: Tensor, mask: Tensor, reduction: Reduction) -> Tensor:
    """per_sample: (B,) equal-size per-sample means. 'batch' = mean over the masked samples (0 if none)."""
    per_sample = torch.where(mask, per_sample, torch.zeros_like(per_sample))
    if reduction == "sample":
        return per_sample
    # clamp: an empty subset gives exactly 0 (no host sync, no NaN)
    return per_sample.sum() / mask.sum().clamp_min(1).to(per_sample.dtype)


def _check_reduction(reduction: str) -> None:
    if reduction not in ("batch", "sample"):
        raise InputError(f"reduction must be 'batch' or 'sample', got {reduction!r}.")


def keypoint_2d_loss(
    pred: Tensor,
    gt: Tensor,
    openpose_weight: float = 0.0,
    gt_weight: float = 1.0,
    reduction: Reduction = "batch",
) -> Tensor:
    """Confidence-weighted squared 2D error: mean of conf * (pred - gt)^2 over B*49*2.

    Args:
        pred: (B, 49, 2) predicted keypoints, normalised crop coordinates.
        gt: (B, 49, 3) target keypoints (same coordinates) + confidence.
        openpose_weight: multiplies the confidences of slots 0..24.
        gt_weight: multiplies the confidences of slots 25..48.
    Returns:
        () for "batch", (B,) for "sample".
    """
    _check_reduction(reduction)
    if pred.ndim != 3 or pred.shape[1:] != (NUM_JOINTS, 2) or gt.shape != (*pred.shape[:2], 3):
        raise InputError(
            f"keypoint_2d_loss needs pred (B, 49, 2) and gt (B, 49, 3), got {tuple(pred.shape)} and "
            f"{tuple(gt.shape)}."
        )
    conf = gt[:, :, -1:].clone()
    conf[:, OPENPOSE_SLOTS] *= openpose_weight
    conf[:, GT_SLOTS] *= gt_weight
    err = conf * (pred - gt[:, :, :-1]) ** 2
    return err.mean() if reduction == "batch" else err.flatten(1).mean(dim=1)


def keypoint_3d_loss(
    pred_joints: Tensor, gt: Tensor, has_pose_3d: Tensor, reduction: Reduction = "batch"
) -> Tensor:
    """Confidence-weighted squared 3D error of pelvis-centred GT-set joints.

    Both sides are centred on the mean of their GT-set joints 2 and 3 (right / left hip).

    Args:
        pred_joints: (B, 49, 3) (slots 25..48 are used) or (B, 24, 3).
        gt: (B, 24, 4) joints + confidence.
        has_pose_3d: (B,) 1 where the target is valid.
    Returns:
        () for "batch" (mean over the valid subset's M*24*3 entries, 0 if none), (B,) for "sample".
    """
    _check_reduction(reduction)
    if pred_joints.ndim == 3 and pred_joints.shape[1] == NUM_JOINTS:
        pred_joints = pred_joints[:, GT_SLOTS]
    if pred_joints.ndim != 3 or pred_joints.shape[1:] != (24, 3) or gt.shape != (pred_joints.shape[0], 24, 4):
        raise InputError(
            f"keypoint_3d_loss needs pred_joints (B, 49|24, 3) and gt (B, 24, 4), "
            f"got {tuple(pred_joints.shape)} and {tuple(gt.shape)}."
        )
    mask = _mask(has_pose_3d, pred_joints.shape[0], "has_pose_3d")
    conf = gt[:, :, -1:]
    gt_xyz = gt[:, :, :-1]
    gt_xyz = gt_xyz - (gt_xyz[:, 2:3] + gt_xyz[:, 3:4]) / 2
    pred = pred_joints - (pred_joints[:, 2:3] + pred_joints[:, 3:4]) / 2
    per_sample = (conf * (pred - gt_xyz) ** 2).flatten(1).mean(dim=1)
    return _reduce_masked(per_sample, mask, reduction)


def vertex_loss(pred_v: Tensor, gt_v: Tensor, has_smpl: Tensor, reduction: Reduction = "batch") -> Tensor:
    """L1 vertex error over the samples with SMPL targets.

    Args:
        pred_v: (B, V, 3); gt_v: (B, V, 3); has_smpl: (B,).
    Returns:
        () for "batch" (mean over the valid subset's M*V*3 entries, 0 if none), (B,) for "sample".
    """
    _check_reduction(reduction)
    if pred_v.shape != gt_v.shape or pred_v.ndim != 3:
        raise InputError(
            f"vertex_loss needs two (B, V, 3) tensors, got {tuple(pred_v.shape)} and {tuple(gt_v.shape)}."
        )
    mask = _mask(has_smpl, pred_v.shape[0], "has_smpl")
    per_sample = (pred_v - gt_v).abs().flatten(1).mean(dim=1)
    return _reduce_masked(per_sample, mask, reduction)


def smpl_loss(
    pred_rotmat: Tensor,
    pred_betas: Tensor,
    gt_rotmat: Tensor,
    gt_betas: Tensor,
    has_smpl: Tensor,
    reduction: Reduction = "batch",
) -> tuple[Tensor, Tensor]:
    """MSE between rotation matrices and between betas, over the samples with SMPL targets.

    Args:
        pred_rotmat, gt_rotmat: (B, 24, 3, 3) (convert GT axis-angle with ``axis_angle_to_rotmat``).
        pred_betas, gt_betas: (B, 10).
        has_smpl: (B,).
    Returns:
        (pose, betas), each () for "batch" (0 if no valid sample) or (B,) for "sample".
    """
    _check_reduction(reduction)
    if pred_rotmat.shape != gt_rotmat.shape or pred_betas.shape != gt_betas.shape:
        raise InputError(
            f"smpl_loss shapes differ: rotmat {tuple(pred_rotmat.shape)} vs {tuple(gt_rotmat.shape)}, "
            f"betas {tuple(pred_betas.shape)} vs {tuple(gt_betas.shape)}."
        )
    mask = _mask(has_smpl, pred_rotmat.shape[0], "has_smpl")
    pose = ((pred_rotmat - gt_rotmat) ** 2).flatten(1).mean(dim=1)
    betas = ((pred_betas - gt_betas) ** 2).flatten(1).mean(dim=1)
    return _reduce_masked(pose, mask, reduction), _reduce_masked(betas, mask, reduction)


def camera_loss(crop_cam: Tensor, reduction: Reduction = "batch") -> Tensor:
    """Camera-scale regulariser mean(exp(-10 s)^2), pushing the crop scale s to be positive.

    Args:
        crop_cam: (B, 3) [s, tx, ty].
    Returns:
        () for "batch", (B,) for "sample".
    """
    _check_reduction(reduction)
    if crop_cam.ndim != 2 or crop_cam.shape[-1] != 3:
        raise InputError(f"camera_loss needs crop_cam (B, 3), got {tuple(crop_cam.shape)}.")
    per_sample = torch.exp(-crop_cam[:, 0] * 10) ** 2
    return per_sample.mean() if reduction == "batch" else per_sample


def combined_loss(
    pred: Decoded,
    target: LossTargets,
    weights: LossWeights | None = None,
    reduction: Reduction = "batch",
    terms: Iterable[str] | None = None,
    *,
    outer: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted sum of the loss terms.

    Args:
        pred: decoded prediction (uses keypoints2d, joints, vertices, rotmat, betas, cam_crop).
        target: ground truth or pseudo targets.
        weights: term weights (defaults: :class:`LossWeights`).
        reduction: "batch" or "sample".
        terms: subset of :data:`LOSS_TERMS` to include, e.g. ``{"keypoint_2d"}`` for the 2D-only steps.
            None = every term whose target is present (2D and camera are always present).
        outer: multiply the total by ``weights.outer_scale`` (the outer / meta loss of training).
    Returns:
        total (() or (B,)) and a dict term name -> detached weighted term (() or (B,)); the dict holds the
        selected terms only and never includes ``outer_scale``.
    Raises:
        InputError: a requested term's target is missing, or an unknown term name.
    """
    _check_reduction(reduction)
    w = weights if weights is not None else LossWeights()
    available = {
        "keypoint_2d": True,
        "keypoint_3d": target.joints3d is not None,
        "vertices": target.vertices is not None,
        "pose": target.rotmat is not None,
        "betas": target.betas is not None,
        "camera": True,
    }
    if terms is None:
        selected = [t for t in LOSS_TERMS if available[t]]
    else:
        requested = set(terms)
        unknown = requested - set(LOSS_TERMS)
        if unknown:
            raise InputError(f"unknown loss term(s) {sorted(unknown)}; valid: {list(LOSS_TERMS)}.")
        lacking = [t for t in LOSS_TERMS if t in requested and not available[t]]
        if lacking:
            raise InputError(f"loss term(s) {lacking} requested but their targets are None in LossTargets.")
        selected = [t for t in LOSS_TERMS if t in requested]

    values: dict[str, Tensor] = {}
    if "keypoint_2d" in selected:
        values["keypoint_2d"] = w.keypoint_2d * keypoint_2d_loss(
            pred.keypoints2d, target.keypoints2d, w.openpose_2d, w.gt_2d, reduction
        )
    if "keypoint_3d" in selected:
        values["keypoint_3d"] = w.keypoint_3d * keypoint_3d_loss(
            pred.joints, target.joints3d, target.has_pose_3d, reduction
        )
    if "vertices" in selected:
        values["vertices"] = w.vertices * vertex_loss(pred.vertices, target.vertices, target.has_smpl, reduction)
    if "pose" in selected or "betas" in selected:
        gt_rotmat = target.rotmat if target.rotmat is not None else pred.rotmat.detach()
        gt_betas = target.betas if target.betas is not None else pred.betas.detach()
        pose, betas = smpl_loss(pred.rotmat, pred.betas, gt_rotmat, gt_betas, target.has_smpl, reduction)
        if "pose" in selected:
            values["pose"] = w.pose * pose
        if "betas" in selected:
            values["betas"] = w.betas * betas
    if "camera" in selected:
        values["camera"] = w.camera * camera_loss(pred.cam_crop, reduction)

    if not values:
        raise InputError("combined_loss needs at least one term.")
    total = sum(values.values())
    if outer:
        total = total * w.outer_scale
    return total, {k: v.detach() for k, v in values.items()}


def pseudo_targets(
    aux: Decoded,
    keypoints2d: Tensor,
    has_smpl: Tensor | None = None,
    has_pose_3d: Tensor | None = None,
) -> LossTargets:
    """Targets of the Meta-HMR inner (explicit pseudo) loss from the auxiliary net's prediction.

    The 3D target is the aux net's GT-set joints (slots 25..48) with confidence 1; vertices, rotation matrices
    and betas are the aux net's. All are detached. The 2D target stays the given keypoints; the gates are the
    sample's ground-truth availability flags (as the released code does), default all ones.

    Args:
        aux: decoded auxiliary prediction (B people).
        keypoints2d: (B, 49, 3) normalised crop coordinates + confidence.
        has_smpl, has_pose_3d: (B,) or None.
    """
    joints = aux.joints.detach()[:, GT_SLOTS]
    joints3d = torch.cat([joints, torch.ones_like(joints[..., :1])], dim=-1)
    return LossTargets(
        keypoints2d=keypoints2d,
        joints3d=joints3d,
        vertices=aux.vertices.detach(),
        rotmat=aux.rotmat.detach(),
        betas=aux.betas.detach(),
        has_smpl=has_smpl,
        has_pose_3d=has_pose_3d,
    )
