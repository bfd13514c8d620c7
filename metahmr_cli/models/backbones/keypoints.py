"""A keypoint encoder: the "backbone" of the open model, which regresses the body from 2D keypoints.

Instead of an image crop, the network reads each person's 2D keypoints in the 49 slots of
:data:`metahmr_cli.body.joints.JOINT_NAMES`, in normalised crop coordinates (x_n = 2x/192 - 1, y_n = 2y/256 - 1,
the same crop and normalisation as the 2D loss) with their confidences: a (B, 49, 3) tensor. Together with
CLIFF's ``bbox_info`` in the regressor head this is enough to place, pose and shape the body, and it transfers
from synthetic training data to photos because the keypoints come from detectors trained on real images.

Every keypoint contributes [x_n·v, y_n·v, c, v] with c its confidence clipped to [0, 1] and v = 1 when c > 0
(0 otherwise, so missing keypoints carry no position). The flattened vector goes through a linear embedding and
residual MLP blocks (LayerNorm, GELU); there are no BatchNorm layers, so the same module runs unchanged in
training, under ``torch.func.vmap`` in test-time optimisation and for a single person.

With ``evidence=True`` (backbones ``kpnet_ev`` / ``kpnet_small_ev``) the input is (B, 67, 4), the layout of
:func:`metahmr_cli.keypoints.evidence.pack_network_input`: the 49 keypoints as above, then per person image evidence
for what keypoints cannot tell, 17 BlazePose world landmarks [X, Y, Z, w] (metres, w their visibility: each
contributes [X·m, Y·m, Z·m, w] with m = 1 when w > 0) and the flags [face score, face checked, BlazePose found].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["KeypointEncoder", "keypoint_encoder", "keypoint_encoder_evidence", "keypoint_encoder_small",
           "keypoint_encoder_small_evidence"]

NUM_SLOTS = 49
NUM_WORLD = 17
"""World landmarks of the evidence input (COCO-17 order)."""
NUM_FLAGS = 3
"""Flags of the evidence input: face score, face checked, BlazePose found."""


class _Block(nn.Module):
    """x + W2 GELU(W1 LN(x))."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class KeypointEncoder(nn.Module):
    """(B, 49, 3) keypoints [x_n, y_n, confidence] (or (B, 67, 4) keypoints + evidence) -> (B, feature_dim).

    Attributes:
        input_kind: "keypoints" (tells the pipeline, training and evaluation what to feed).
        input_shape: (49, 3), the per-person input, or (67, 4) with ``evidence``.
        evidence: whether the input carries the image evidence rows.
        feature_dim: width of the output.
        last_stage_modules: the last residual block and the output norm (the ``last_stage`` TTO scope).
    """

    input_kind = "keypoints"

    def __init__(self, num_keypoints: int = NUM_SLOTS, width: int = 512, depth: int = 3,
                 evidence: bool = False) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.num_keypoints = int(num_keypoints)
        self.evidence = bool(evidence)
        rows = self.num_keypoints + NUM_WORLD + 1
        self.input_shape = (rows, 4) if self.evidence else (self.num_keypoints, 3)
        self.feature_dim = int(width)
        in_dim = 4 * self.num_keypoints + (4 * NUM_WORLD + NUM_FLAGS if self.evidence else 0)
        self.embed = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList(_Block(width) for _ in range(depth))
        self.out_norm = nn.LayerNorm(width)
        self.act = nn.GELU()
        self.last_stage_modules = (f"blocks.{depth - 1}", "out_norm")

    def reset_weights(self) -> None:
        """Default PyTorch initialisation for the linear layers, the residual branches start small."""
        for block in self.blocks:
            nn.init.zeros_(block.fc2.bias)
            with torch.no_grad():
                block.fc2.weight.mul_(0.1)

    def forward(self, keypoints: Tensor) -> Tensor:
        """(B, 49, 3) normalised crop keypoints with confidences (or (B, 67, 4) with evidence) -> (B, feature_dim)."""
        kp = keypoints[:, :self.num_keypoints, :3]
        conf = kp[..., 2:3].clamp(0.0, 1.0)
        vis = (conf > 0).to(kp.dtype)
        x = torch.cat([kp[..., :2] * vis, conf, vis], dim=-1).flatten(1)
        if self.evidence:
            world = keypoints[:, self.num_keypoints:self.num_keypoints + NUM_WORLD]
            wconf = world[..., 3:4].clamp(0.0, 1.0)
            seen = (wconf > 0).to(kp.dtype)
            flags = keypoints[:, self.num_keypoints + NUM_WORLD, :NUM_FLAGS]
            x = torch.cat([x, torch.cat([world[..., :3] * seen, wconf], dim=-1).flatten(1), flags], dim=1)
        h = self.act(self.embed(x))
        for block in self.blocks:
            h = block(h)
        return self.out_norm(h)


def keypoint_encoder(img_hw: tuple[int, int] = (256, 192)) -> KeypointEncoder:
    """Registry factory ``"kpnet"`` (width 384, 2 blocks: the open model's main network).

    The crop size only defines the keypoint normalisation upstream."""
    return KeypointEncoder(width=384, depth=2)


def keypoint_encoder_small(img_hw: tuple[int, int] = (256, 192)) -> KeypointEncoder:
    """Registry factory ``"kpnet_small"`` (width 256, 2 blocks: the open model's auxiliary network)."""
    return KeypointEncoder(width=256, depth=2)


def keypoint_encoder_evidence(img_hw: tuple[int, int] = (256, 192)) -> KeypointEncoder:
    """Registry factory ``"kpnet_ev"``: ``kpnet`` reading keypoints + image evidence, (B, 67, 4)."""
    return KeypointEncoder(width=384, depth=2, evidence=True)


def keypoint_encoder_small_evidence(img_hw: tuple[int, int] = (256, 192)) -> KeypointEncoder:
    """Registry factory ``"kpnet_small_ev"``: ``kpnet_small`` reading keypoints + image evidence, (B, 67, 4)."""
    return KeypointEncoder(width=256, depth=2, evidence=True)
