"""Shared helpers of the TTO tests (no tests here): synthetic people and a slow, obvious TTO.

The slow implementation is written the way the released code does it: one ``copy.deepcopy`` of the network
per person (or per group), ``torch.optim.SGD`` / ``torch.optim.Adam``, ``loss.backward()``, a Python loop
over people. It shares only the loss functions with the engine.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor

from metahmr_cli.geometry.camera import CropInfo
from metahmr_cli.losses import LossWeights, combined_loss, keypoint_2d_loss, pseudo_targets
from metahmr_cli.predictions import Decoded, decode
from metahmr_cli.tto import TTOInputs
from metahmr_cli.tto.eft import eft_loss


def make_inputs(num_people: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> TTOInputs:
    """P synthetic people: random crops, boxes in a 480x640 image, GT-slot keypoints with conf 1."""
    gen = torch.Generator().manual_seed(seed)
    images = 0.5 * torch.randn(num_people, 3, 256, 192, generator=gen)
    center = torch.stack(
        [320 + 80 * torch.rand(num_people, generator=gen), 240 + 50 * torch.rand(num_people, generator=gen)], dim=-1
    )
    scale = 1.0 + 0.5 * torch.rand(num_people, generator=gen)
    crop = CropInfo.from_boxes(center.to(dtype), scale.to(dtype), torch.tensor([480.0, 640.0], dtype=dtype))
    kp = torch.zeros(num_people, 49, 3)
    kp[:, 25:, :2] = 1.4 * torch.rand(num_people, 24, 2, generator=gen) - 0.7
    kp[:, 25:, 2] = 1.0
    return TTOInputs(images=images.to(dtype), crop=crop, keypoints2d=kp.to(dtype))


def head_names(net: torch.nn.Module) -> list[str]:
    return net.scope_parameter_names("head")


@dataclass
class SlowResult:
    final: list[Decoded]
    steps: list[int]
    units: list[list[int]]

    def field(self, name: str, num_people: int) -> Tensor:
        rows: list[Tensor | None] = [None] * num_people
        for unit, dec in zip(self.units, self.final, strict=True):
            for j, person in enumerate(unit):
                rows[person] = getattr(dec, name)[j]
        return torch.stack(rows)  # type: ignore[arg-type]

    def steps_per_person(self, num_people: int) -> Tensor:
        out = torch.zeros(num_people, dtype=torch.int64)
        for unit, s in zip(self.units, self.steps, strict=True):
            out[unit] = s
        return out


def slow_tto(
    main: torch.nn.Module,
    aux: torch.nn.Module | None,
    body: torch.nn.Module,
    inputs: TTOInputs,
    *,
    schedule: str,
    scope: str,
    optimizer: str,
    lr: float,
    max_steps: int,
    units: list[list[int]],
    weights: LossWeights | None = None,
    tol: float | None = None,
    first_lr: float = 1e-5,
) -> SlowResult:
    """Obvious per-unit TTO with deep copies and torch.optim (mirrors the released eval loop)."""
    weights = weights or LossWeights()
    inputs = inputs.validated()
    bbox = inputs.crop.bbox_info()
    targets = None
    if aux is not None:
        with torch.no_grad():
            aux_dec = decode(aux(inputs.images, bbox), body, inputs.crop)
        targets = pseudo_targets(aux_dec, inputs.keypoints2d, inputs.has_smpl, inputs.has_pose_3d)
    finals, steps_taken = [], []
    for unit in units:
        idx = torch.tensor(unit)
        net = copy.deepcopy(main).eval()
        if schedule == "eft":  # EFT's exemplar mode: BatchNorm affine parameters do not train
            for m in net.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.requires_grad_(False)
        named = dict(net.named_parameters())
        scope_params = [named[n] for n in net.scope_parameter_names(scope) if named[n].requires_grad]
        kp = inputs.keypoints2d[idx]
        tgt = None
        if targets is not None:
            tgt = copy.copy(targets)
            for f in ("keypoints2d", "joints3d", "vertices", "rotmat", "betas", "has_smpl", "has_pose_3d"):
                setattr(tgt, f, getattr(targets, f)[idx])

        def forward(net=net, idx=idx) -> Decoded:
            return decode(net(inputs.images[idx], bbox[idx]), body, inputs.crop[idx])

        def make_opt(params, name, rate):
            if name == "sgd":
                return torch.optim.SGD(params, lr=rate)
            return torch.optim.Adam(params, lr=rate, betas=(0.9, 0.999), eps=1e-8)

        steps = 0
        if schedule in ("reference", "metahmr"):  # the released two-phase procedure
            adam = make_opt(scope_params, optimizer, lr)
            sgd = torch.optim.SGD([named[n] for n in head_names(net)], lr=first_lr)
            loss = None
            for it in range(max_steps + 1):
                dec = forward()
                if it == 0:
                    loss, _ = combined_loss(dec, tgt, weights, reduction="batch")
                    net.zero_grad()
                    loss.backward()
                    sgd.step()
                    steps += 1
                    continue
                loss_prev = loss
                loss = keypoint_2d_loss(dec.keypoints2d, kp, weights.openpose_2d, weights.gt_2d)
                adam.zero_grad()
                loss.backward()
                adam.step()
                steps += 1
                if tol is not None and abs(float(loss_prev.detach()) - float(loss.detach())) < tol:
                    break
        elif schedule == "paper":
            opt = make_opt(scope_params, optimizer, lr)
            prev = None
            for _ in range(max_steps):
                dec = forward()
                loss, _ = combined_loss(dec, tgt, weights, reduction="batch")
                opt.zero_grad()
                loss.backward()
                opt.step()
                steps += 1
                if tol is not None and prev is not None and abs(prev - float(loss.detach())) < tol:
                    break
                prev = float(loss.detach())
        elif schedule == "eft":
            opt = make_opt(scope_params, optimizer, lr)
            for _ in range(max_steps):
                dec = forward()
                loss, terms = eft_loss(dec.joints, dec.cam_crop, dec.betas, kp, weights, reduction="batch")
                opt.zero_grad()
                loss.backward()
                opt.step()
                steps += 1
                if tol is not None and float(terms["keypoint_2d"].detach()) < tol:
                    break
        else:
            raise ValueError(schedule)
        with torch.no_grad():
            finals.append(forward())
        steps_taken.append(steps)
    return SlowResult(finals, steps_taken, units)


def regression(main: torch.nn.Module, body: torch.nn.Module, inputs: TTOInputs) -> Decoded:
    """Plain regression, one person at a time (independent of the engine)."""
    decs = []
    with torch.no_grad():
        for i in range(len(inputs)):
            crop = inputs.crop[i : i + 1]
            decs.append(decode(main(inputs.images[i : i + 1], crop.bbox_info()), body, crop))
    return Decoded.cat(decs)
