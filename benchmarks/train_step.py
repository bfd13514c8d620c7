"""Seconds per training step: the plain CLIFF step vs the Meta-HMR meta step (and their ratio).

Random crops and targets (no dataset needed), the stand-in body unless ``--body`` is given. Defaults: CUDA with
HRNet-W48 at the recipe batch (30); CPU with ResNet-50 at a small batch (CPU is slow; the recipe uses 40).

    python benchmarks/train_step.py                                  # auto device
    python benchmarks/train_step.py --device cpu --backbone resnet --batch-size 4 --steps 3
    python benchmarks/train_step.py --device cuda --backbone hrnet --batch-size 30 --grouping sample
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from metahmr_cli.body.builders.standin import write_standin_assets
from metahmr_cli.body.smpl import load_body_model, load_mean_params
from metahmr_cli.geometry.camera import CropInfo
from metahmr_cli.geometry.rotation import axis_angle_to_rotmat
from metahmr_cli.losses import LossTargets
from metahmr_cli.training import TrainConfig, build_networks
from metahmr_cli.training.meta_step import MetaStep, MetaStepConfig, TrainBatch


def random_batch(body, b: int, device: torch.device, gen: torch.Generator) -> TrainBatch:
    """A batch of random crops with consistent synthetic targets (B people)."""
    images = torch.randn(b, 3, 256, 192, generator=gen).to(device)
    center = torch.rand(b, 2, generator=gen) * 200 + 200
    scale = torch.rand(b, generator=gen) + 1.0
    crop = CropInfo.from_boxes(center, scale, torch.tensor([600.0, 800.0])).to(device)
    kp = torch.cat([torch.rand(b, 49, 2, generator=gen) * 1.6 - 0.8, torch.ones(b, 49, 1)], dim=-1).to(device)
    rot = axis_angle_to_rotmat(0.3 * torch.randn(b, 24, 3, generator=gen)).to(device)
    betas = torch.randn(b, 10, generator=gen).to(device)
    with torch.no_grad():
        out = body(rot, betas)
    j3d = torch.cat([out.joints[:, 25:49], torch.ones(b, 24, 1, device=device)], dim=-1)
    ones = torch.ones(b, device=device)
    gt = LossTargets(keypoints2d=kp, joints3d=j3d, vertices=out.vertices, rotmat=rot, betas=betas, has_smpl=ones,
                     has_pose_3d=ones)
    return TrainBatch(images=images, crop=crop, keypoints2d=kp, gt=gt)


def time_steps(step: MetaStep, params, batch: TrainBatch, steps: int, device: torch.device) -> float:
    """Mean seconds of forward + backward + Adam update (after one warm-up step)."""
    opt = torch.optim.Adam(params, lr=1e-4)
    times = []
    for i in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss, _ = step(batch)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i > 0:
            times.append(time.perf_counter() - t0)
    return sum(times) / len(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--backbone", default=None, help="hrnet | resnet | resnet_tiny (default: hrnet on CUDA, "
                    "resnet on CPU)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 30 (hrnet) / 40 (resnet) on CUDA, 4 on "
                    "CPU")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--grouping", default="batch", choices=["batch", "sample"])
    ap.add_argument("--body", default=None, help="body-model folder (default: generated stand-in body)")
    ap.add_argument("--no-amp", action="store_true", help="no bf16 autocast of the backbones on CUDA")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()

    device = torch.device("cuda" if (args.device == "auto" and torch.cuda.is_available()) else
                          ("cpu" if args.device == "auto" else args.device))
    backbone = args.backbone or ("hrnet" if device.type == "cuda" else "resnet")
    recipe_batch = {"hrnet": 30, "resnet": 40, "resnet_tiny": 8}[backbone]
    b = args.batch_size or (recipe_batch if device.type == "cuda" else 4)
    with tempfile.TemporaryDirectory(prefix="metahmr-bench-standin-") as tmp:  # removed once the body is loaded
        body_dir = Path(args.body) if args.body is not None else Path(tmp) / "standin"
        if args.body is None:
            write_standin_assets(body_dir)
        body = load_body_model(body_dir, "neutral", device=device, with_h36m=False)
        mean_params = load_mean_params(body_dir)
    torch.manual_seed(0)
    cfg = TrainConfig(backbone=backbone)
    main_net, aux = build_networks(cfg, mean_params)
    main_net.to(device).train()
    aux.to(device).train()
    amp = None if (args.no_amp or device.type != "cuda") else torch.bfloat16
    batch = random_batch(body, b, device, torch.Generator().manual_seed(0))

    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "threads": torch.get_num_threads(), "backbone": backbone, "batch_size": b,
               "recipe_batch_size": recipe_batch, "grouping": args.grouping, "amp": str(amp)}
    plain = MetaStep(main_net, None, body, MetaStepConfig(meta=False, amp_dtype=amp))
    results["plain_s_per_step"] = time_steps(plain, list(main_net.parameters()), batch, args.steps, device)
    meta = MetaStep(main_net, aux, body, MetaStepConfig(grouping=args.grouping, amp_dtype=amp))
    params = list(main_net.parameters()) + list(aux.parameters())
    results["meta_s_per_step"] = time_steps(meta, params, batch, args.steps, device)
    results["meta_over_plain"] = results["meta_s_per_step"] / results["plain_s_per_step"]
    if device.type == "cuda":
        results["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
