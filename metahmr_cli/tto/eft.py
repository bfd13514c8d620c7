"""The EFT exemplar fine-tuning loss (the 2D-only TTO baseline, notes 7.1), as a pure function.

EFT projects the 3D joints with a weak-perspective camera in normalised crop coordinates. We use the
weak-perspective limit of the same crop camera the network predicts and that the outputs use
(``cam_crop_to_full`` / the 'rect' HMR camera): x_n = s·(X + t_x)·(crop_h / crop_w), y_n = s·(Y + t_y).
For a square crop this is EFT's projection; with the 256×192 crops it keeps the fitted camera consistent with
the full-image translation reported afterwards.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from metahmr_cli.constants import IMG_H, IMG_W
from metahmr_cli.losses import LossWeights, camera_loss, keypoint_2d_loss

EFT_LEG_WEIGHT = 0.005
"""Weight of the leg-orientation term (EFT ``run_eft_step``)."""
EFT_MIN_LEG_LENGTH = 0.0089
"""GT knee->ankle 2D length (normalised crop units) below which a leg's orientation is ignored."""

# 49-joint slots (notes 3.1): GT set starts at 25.
_GT = 25
GT_R_ANKLE, GT_R_KNEE, GT_R_HIP, GT_L_HIP, GT_L_KNEE, GT_L_ANKLE, GT_PELVIS = (
    _GT + 0,
    _GT + 1,
    _GT + 2,
    _GT + 3,
    _GT + 4,
    _GT + 5,
    _GT + 14,
)
OP_R_KNEE, OP_R_ANKLE, OP_L_KNEE, OP_L_ANKLE = 10, 11, 13, 14
LEG_SLOTS: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "gt": ((GT_R_KNEE, GT_R_ANKLE), (GT_L_KNEE, GT_L_ANKLE)),
    "openpose": ((OP_R_KNEE, OP_R_ANKLE), (OP_L_KNEE, OP_L_ANKLE)),
}
"""(knee, ankle) slots of the right and left leg in each keypoint group."""
EFT_HIP_SLOTS = (GT_R_HIP, GT_L_HIP, GT_PELVIS)
"""GT hips and pelvis: removed from EFT's L_2D unless asked (EFT ``--eft_withHip2D``)."""
EFT_ANKLE_SLOTS = (GT_R_ANKLE, GT_L_ANKLE)
"""GT ankles: always removed from EFT's L_2D (used only through the leg-orientation term)."""
EFT_ZEROED_SLOTS = EFT_HIP_SLOTS + EFT_ANKLE_SLOTS
"""Slots removed from EFT's L_2D by default. As in EFT only GT-set slots are touched; the OpenPose slots keep
their confidences (they count only when ``openpose_2d`` > 0)."""


def weak_perspective_keypoints(joints: Tensor, cam_crop: Tensor, crop_wh: tuple[int, int] = (IMG_W, IMG_H)) -> Tensor:
    """Weak-perspective projection into normalised crop coordinates.

    Args:
        joints: (B, N, 3) model-frame joints; cam_crop: (B, 3) [s, tx, ty].
    Returns:
        (B, N, 2) x_n = s·(X + tx)·(crop_h / crop_w), y_n = s·(Y + ty).
    """
    s = cam_crop[:, 0:1]
    x = s * (joints[..., 0] + cam_crop[:, 1:2]) * (crop_wh[1] / crop_wh[0])
    y = s * (joints[..., 1] + cam_crop[:, 2:3])
    return torch.stack([x, y], dim=-1)


def leg_orientation_loss(
    pred_kp: Tensor, gt_kp: Tensor, reduction: Literal["batch", "sample"] = "batch",
    slots: Literal["gt", "openpose"] = "gt",
) -> Tensor:
    """1 − cos between predicted and target knee→ankle 2D directions, per leg.

    A leg counts only when its target length exceeds :data:`EFT_MIN_LEG_LENGTH`; it is weighted by the
    product of the knee and ankle confidences. As in EFT the two legs are summed (not averaged).

    Args:
        pred_kp: (B, 49, 2) normalised crop coords; gt_kp: (B, 49, 3) normalised + conf.
        slots: the keypoint group whose knees and ankles are compared (:data:`LEG_SLOTS`): the GT slots (EFT)
            or the OpenPose slots, so that the term reads the same keypoints as the 2D loss.
    Returns:
        (B,) sum over the two legs ("sample"), or its mean over the B people ("batch").
    """
    terms = []
    for knee, ankle in LEG_SLOTS[slots]:
        d_pred = pred_kp[:, ankle, :2] - pred_kp[:, knee, :2]
        d_gt = gt_kp[:, ankle, :2] - gt_kp[:, knee, :2]
        len_gt = d_gt.norm(dim=-1)
        cos = (d_pred * d_gt).sum(-1) / (d_pred.norm(dim=-1).clamp_min(1e-8) * len_gt.clamp_min(1e-8))
        weight = gt_kp[:, knee, 2] * gt_kp[:, ankle, 2] * (len_gt > EFT_MIN_LEG_LENGTH).to(pred_kp.dtype)
        terms.append(weight * (1.0 - cos))
    per_person = terms[0] + terms[1]  # (B,)
    return per_person.mean() if reduction == "batch" else per_person


def eft_keypoints(keypoints2d: Tensor, with_hips: bool = False) -> Tensor:
    """(B, 49, 3) -> copy with the confidences of the GT ankles (and, unless ``with_hips``, of the GT hips and
    pelvis) set to 0."""
    kp = keypoints2d.clone()
    kp[:, list(EFT_ANKLE_SLOTS if with_hips else EFT_ZEROED_SLOTS), 2] = 0.0
    return kp


def eft_loss(
    joints: Tensor,
    cam_crop: Tensor,
    betas: Tensor,
    keypoints2d: Tensor,
    weights: LossWeights,
    reduction: Literal["batch", "sample"] = "batch",
    with_hips: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """EFT's exemplar loss: outer_scale·(w_2D·L_2D + w_β·mean β² + w_cam·L_cam + 0.005·L_leg).

    Args:
        joints: (B, 49, 3) model-frame joints; cam_crop: (B, 3); betas: (B, 10).
        keypoints2d: (B, 49, 3) normalised crop coords + conf (GT ankles, and GT hips unless ``with_hips``,
            are masked here).
        weights: uses keypoint_2d, betas, camera, openpose_2d, gt_2d and outer_scale.
    Returns:
        (total, terms) with terms "keypoint_2d" (masked, unweighted L_2D, used by the stop test),
        "betas_prior", "camera", "leg_orientation"; scalars ("batch") or (B,) ("sample").
    """
    pred_kp = weak_perspective_keypoints(joints, cam_crop)
    l2d = keypoint_2d_loss(
        pred_kp, eft_keypoints(keypoints2d, with_hips), weights.openpose_2d, weights.gt_2d, reduction=reduction
    )
    beta_sq = betas.pow(2)
    l_beta = beta_sq.mean() if reduction == "batch" else beta_sq.mean(dim=-1)
    l_cam = camera_loss(cam_crop, reduction=reduction)
    # the leg term reads the keypoint group the 2D loss uses: with GT weight 0 (e.g. --keypoints openpose) the GT
    # slots must not leak into the fit
    leg_slots: Literal["gt", "openpose"] = "gt" if weights.gt_2d > 0 or weights.openpose_2d <= 0 else "openpose"
    l_leg = leg_orientation_loss(pred_kp, keypoints2d, reduction=reduction, slots=leg_slots)
    total = weights.outer_scale * (
        weights.keypoint_2d * l2d + weights.betas * l_beta + weights.camera * l_cam + EFT_LEG_WEIGHT * l_leg
    )
    return total, {"keypoint_2d": l2d, "betas_prior": l_beta, "camera": l_cam, "leg_orientation": l_leg}
