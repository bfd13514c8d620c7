"""Throughput and peak memory of the batched TTO engine against a deep-copy loop over people.

Usage:
    python benchmarks/tto.py                          # CPU, ResNet-50 CLIFF, small settings
    python benchmarks/tto.py --people 1,8,64 --steps 14 --device cuda   # adds HRNet-W48 and bf16 rows

Both implementations run the same schedule (paper "metahmr": SGD on L_expl against the pseudo mesh of an
auxiliary net) on random-weight networks, the stand-in body and synthetic people. The engine runs all people at
once (torch.func.functional_call + vmap); the loop deep-copies the network per person and uses torch.optim.
Peak memory: CUDA max_memory_allocated on GPU; on CPU the peak resident set size above the level at the start
of the measurement (Linux /proc, reset via clear_refs), which includes allocator caching.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from metahmr_cli.body.smpl import load_body_model
from metahmr_cli.body.standin import write_standin_assets
from metahmr_cli.geometry.camera import CropInfo
from metahmr_cli.losses import combined_loss, pseudo_targets
from metahmr_cli.models import build_network
from metahmr_cli.predictions import decode
from metahmr_cli.tto import TTOConfig, TTOInputs, run_tto

NETWORKS = {"resnet50": ("cliff_meta_resnet", "cliff_aux_resnet"), "hrnet": ("cliff_meta_hrnet", "cliff_aux_hrnet")}
"""Backbone name -> (main, auxiliary) released layouts: the Meta-HMR main net (10 head iterations; pose-HRNet for
hrnet) and its CLIFF auxiliary net, as in the released checkpoints."""


def _proc_status(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory of a block: CUDA allocator peak, or CPU resident-set peak above the starting level."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = float("nan")

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            with contextlib.suppress(OSError):  # reset the kernel's high-water mark of this process
                Path("/proc/self/clear_refs").write_text("5")
            self.start = _proc_status("VmRSS") or 0
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.start
        else:
            hwm = _proc_status("VmHWM")
            self.peak = float("nan") if hwm is None else hwm - self.start


def make_people(num: int, device: torch.device, seed: int = 0) -> TTOInputs:
    gen = torch.Generator().manual_seed(seed)
    images = 0.5 * torch.randn(num, 3, 256, 192, generator=gen)
    center = torch.stack([300 + 80 * torch.rand(num, generator=gen), 240 + 40 * torch.rand(num, generator=gen)], -1)
    scale = 1.0 + 0.5 * torch.rand(num, generator=gen)
    crop = CropInfo.from_boxes(center, scale, torch.tensor([480.0, 640.0]))
    kp = torch.zeros(num, 49, 3)
    kp[:, 25:, :2] = 1.4 * torch.rand(num, 24, 2, generator=gen) - 0.7
    kp[:, 25:, 2] = 1.0
    return TTOInputs(images.to(device), crop.to(device), kp.to(device))


def deepcopy_loop(main, aux, body, inputs: TTOInputs, scope: str, lr: float, steps: int) -> None:
    """The obvious implementation: one deep copy per person, torch.optim.SGD, Python loop."""
    bbox = inputs.crop.bbox_info()
    with torch.no_grad():
        aux_dec = decode(aux(inputs.images, bbox), body, inputs.crop)
    for i in range(len(inputs)):
        sl = slice(i, i + 1)
        targets = pseudo_targets(aux_dec[sl], inputs.keypoints2d[sl])
        net = copy.deepcopy(main).eval()
        names = set(net.scope_parameter_names(scope))
        opt = torch.optim.SGD([p for n, p in net.named_parameters() if n in names], lr=lr)
        for _ in range(steps):
            dec = decode(net(inputs.images[sl], bbox[sl]), body, inputs.crop[sl])
            loss, _ = combined_loss(dec, targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            decode(net(inputs.images[sl], bbox[sl]), body, inputs.crop[sl])


def run_engine(main, aux, body, inputs, cfg, bf16: bool) -> None:
    with torch.autocast(inputs.images.device.type, dtype=torch.bfloat16, enabled=bf16):
        run_tto(main, aux, body, inputs, cfg)


def run_loop(main, aux, body, inputs, scope, lr, steps, bf16: bool) -> None:
    with torch.autocast(inputs.images.device.type, dtype=torch.bfloat16, enabled=bf16):
        deepcopy_loop(main, aux, body, inputs, scope, lr, steps)


def measure(fn, device: torch.device, repeats: int) -> tuple[float, float]:
    fn()  # warm-up (lazy imports, allocator, cudnn autotune)
    times, peak = [], 0.0
    for _ in range(repeats):
        with PeakMemory(device) as mem:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        peak = max(peak, mem.peak)
    return min(times), peak


def bench_one(device: torch.device, backbone: str, prec: str, scope: str, p: int, steps: int, chunk_size: int,
              repeats: int, with_loop: bool, body_dir: Path, which: str = "both") -> dict[str, float]:
    """Engine and loop timings/peaks for one configuration."""
    torch.manual_seed(0)
    body = load_body_model(body_dir, "neutral", device=device)
    main_layout, aux_layout = NETWORKS[backbone]
    main_net = build_network(main_layout).to(device).eval()
    aux_net = build_network(aux_layout).to(device).eval()
    inputs = make_people(p, device)
    lr = 1e-5
    cfg = TTOConfig(schedule="metahmr", scope=scope, lr=lr, max_steps=steps, early_stop=False, chunk_size=chunk_size)
    bf16 = prec == "bf16"
    out = {"t_e": float("nan"), "m_e": float("nan"), "t_l": float("nan"), "m_l": float("nan")}
    if which in ("both", "engine"):
        with contextlib.suppress(torch.OutOfMemoryError):
            out["t_e"], out["m_e"] = measure(
                partial(run_engine, main_net, aux_net, body, inputs, cfg, bf16), device, repeats
            )
    if with_loop and which in ("both", "loop"):
        out["t_l"], out["m_l"] = measure(
            partial(run_loop, main_net, aux_net, body, inputs, scope, lr, steps, bf16), device, repeats
        )
    return out


def _ratio(a: float, b: float) -> float:
    return a / b if b and b == b else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--people", default=None, help="comma list of P (default 1,8,64 on CUDA, 1,8 on CPU)")
    parser.add_argument("--steps", type=int, default=None, help="TTO updates (default 14 on CUDA, 2 on CPU)")
    parser.add_argument("--scopes", default="head,all")
    parser.add_argument("--backbones", default=None,
                        help="comma list of resnet50, hrnet (default resnet50; on CUDA also hrnet)")
    parser.add_argument("--precisions", default=None, help="fp32,bf16 (default: both on CUDA, fp32 on CPU)")
    parser.add_argument("--no-loop", action="store_true", help="skip the deep-copy loop (engine only)")
    parser.add_argument("--max-loop-people", type=int, default=64, help="skip the loop above this P")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--single", default=None, help=argparse.SUPPRESS)  # internal: one config in a subprocess
    args = parser.parse_args()

    if args.single:  # child process of a CPU run: a fresh process gives a clean resident-set peak
        cfg = json.loads(args.single)
        cfg["device"] = torch.device(cfg["device"])
        cfg["body_dir"] = Path(cfg["body_dir"])
        print("RESULT " + json.dumps(bench_one(**cfg)))
        return

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    people = [int(p) for p in (args.people or ("1,8,64" if cuda else "1,8")).split(",")]
    steps = args.steps if args.steps is not None else (14 if cuda else 2)
    backbones = (args.backbones or ("resnet50,hrnet" if cuda else "resnet50")).split(",")
    precisions = (args.precisions or ("fp32,bf16" if cuda else "fp32")).split(",")
    scopes = args.scopes.split(",")

    body_dir = Path(tempfile.mkdtemp(prefix="metahmr-bench-"))
    write_standin_assets(body_dir)

    table = Table(title=f"TTO engine vs deep-copy loop ({device}, {steps} steps, schedule metahmr/SGD)")
    for col in ("backbone", "prec", "scope", "P", "engine people/s", "engine peak MiB", "loop people/s",
                "loop peak MiB", "speed-up", "memory ratio"):
        table.add_column(col, justify="right")
    console = Console(width=170)
    mib = 2.0**20
    for backbone in backbones:
        for prec in precisions:
            for scope in scopes:
                for p in people:
                    one = dict(device=str(device), backbone=backbone, prec=prec, scope=scope, p=p, steps=steps,
                               chunk_size=args.chunk_size, repeats=args.repeats,
                               with_loop=not args.no_loop and p <= args.max_loop_people, body_dir=str(body_dir))
                    if cuda:
                        res = bench_one(**{**one, "device": device, "body_dir": body_dir})
                        torch.cuda.empty_cache()
                    else:  # engine and loop each in a fresh process: clean resident-set peaks
                        res = {}
                        for which, keys in (("engine", ("t_e", "m_e")), ("loop", ("t_l", "m_l"))):
                            proc = subprocess.run(
                                [sys.executable, __file__, "--single", json.dumps({**one, "which": which})],
                                capture_output=True, text=True, check=True,
                            )
                            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
                            got = json.loads(line[len("RESULT "):])
                            res.update({k: got[k] for k in keys})
                    t_e, m_e, t_l, m_l = res["t_e"], res["m_e"], res["t_l"], res["m_l"]
                    table.add_row(backbone, prec, scope, str(p), f"{p / t_e:.2f}", f"{m_e / mib:.0f}",
                                  f"{_ratio(p, t_l):.2f}", f"{m_l / mib:.0f}", f"{_ratio(t_l, t_e):.2f}x",
                                  f"{_ratio(m_e, m_l):.2f}")
                    console.print(f"done {backbone} {prec} {scope} P={p}")
    console.print(table)


if __name__ == "__main__":
    main()
