"""TTO throughput and peak memory: the engine (strategy chosen per phase) beside the per-person deep-copy loop.

    python benchmarks/tto.py --device cpu --steps 2                 # CPU: ResNet-50 release layouts + open kpnet
    python benchmarks/tto.py --device cuda --networks resnet50,hrnet,kpnet --people 1,8,64 --reference

Every implementation runs the default schedule "metahmr" (the released procedure per person: step 0 SGD lr 1e-5
on the head with L_expl against the auxiliary net's pseudo mesh, then ``--steps`` Adam updates on the scope
with L_2D), early stopping off, so every person takes 1 + steps updates:

    engine     ``run_tto`` (strategy "auto" unless ``--strategy``; the table shows the strategy of each phase)
    loop       one ``copy.deepcopy`` of the network per person, ``torch.optim``, a Python loop (the released
               procedure as the authors' code runs it, one person at a time)
    reference  ``run_tto(schedule="reference")``: the released batch-shared copy (one copy per 20 people)

Networks: "resnet50" / "hrnet" = the released Meta-HMR main + CLIFF auxiliary layouts with random weights;
"kpnet" = the open model shipped with metahmr (keypoint input). Body: the open body (7,000 vertices, about
SMPL's 6,890) unless ``--body standin``. People are synthetic (random crops, GT-slot keypoints).
Peak memory: CUDA ``max_memory_allocated`` above the level at the start; CPU: peak resident set above the level
at the start, each measurement in a fresh process (includes allocator caching).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from metahmr_cli.body.smpl import load_body_model
from metahmr_cli.geometry.camera import CropInfo
from metahmr_cli.losses import combined_loss, keypoint_2d_loss, pseudo_targets
from metahmr_cli.predictions import decode
from metahmr_cli.tto import TTOConfig, TTOInputs, run_tto
from metahmr_cli.tto.engine import resolve_strategies
from metahmr_cli.tto.schedules import PAPER_TTO_LR, REFERENCE_ADAM_LR

LAYOUTS = {"resnet50": ("cliff_meta_resnet", "cliff_aux_resnet"), "hrnet": ("cliff_meta_hrnet", "cliff_aux_hrnet")}
"""Released network -> (main, auxiliary) layouts: the Meta-HMR main net (10 head iterations; pose-HRNet for hrnet)
and its CLIFF auxiliary net."""
NETWORKS = (*LAYOUTS, "kpnet", "tiny")
"""``tiny``: the test network (resnet_tiny backbone) for quick checks of the benchmark itself."""


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


@functools.lru_cache(maxsize=4)
def load_networks_for(network: str, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(main, aux) in eval mode on ``device``: random weights in a released layout, the open kpnet model, or the
    tiny test network. Cached: measurements in one process share the networks (TTO never changes them)."""
    torch.manual_seed(0)
    if network == "tiny":
        from metahmr_cli.models import build_regressor

        return (build_regressor("cliff", "resnet_tiny", 3).to(device).eval(),
                build_regressor("cliff", "resnet_tiny", 3).to(device).eval())
    if network == "kpnet":
        from metahmr_cli.models import load_networks
        from metahmr_cli.tiers import open_checkpoint_path

        nets = load_networks(open_checkpoint_path(), device=device)
        return nets.main.eval(), nets.aux.eval()
    from metahmr_cli.models import build_network

    main_layout, aux_layout = LAYOUTS[network]
    return build_network(main_layout).to(device).eval(), build_network(aux_layout).to(device).eval()


@functools.lru_cache(maxsize=2)
def body_dir_for(body: str) -> Path:
    """Folder of the body model: "open" (bundled) or "standin" (generated into a temporary folder)."""
    if body == "open":
        from metahmr_cli.body.layout import BUNDLED_DIR

        return BUNDLED_DIR
    from metahmr_cli.body.builders.standin import write_standin_assets

    out = Path(tempfile.mkdtemp(prefix="metahmr-bench-")) / "standin"
    write_standin_assets(out)
    return out


def make_people(num: int, device: torch.device, keypoint_input: bool | tuple[int, ...] = False,
                seed: int = 0) -> TTOInputs:
    """P synthetic people: random crops (or, for a keypoint network, their keypoints as the input: ``True`` or the
    network's per-person input shape, e.g. (67, 4) with image-evidence rows, left empty), boxes in a 480x640 image
    and GT-slot keypoints with confidence 1. Built on the CPU and moved with pinned copies."""
    gen = torch.Generator().manual_seed(seed)
    center = torch.stack([300 + 80 * torch.rand(num, generator=gen), 240 + 40 * torch.rand(num, generator=gen)], -1)
    scale = 1.0 + 0.5 * torch.rand(num, generator=gen)
    crop = CropInfo.from_boxes(center, scale, torch.tensor([480.0, 640.0]))
    kp = torch.zeros(num, 49, 3)
    kp[:, 25:, :2] = 1.4 * torch.rand(num, 24, 2, generator=gen) - 0.7
    kp[:, 25:, 2] = 1.0
    if keypoint_input:
        rows, cols = keypoint_input if isinstance(keypoint_input, tuple) else (49, 3)
        images = torch.zeros(num, rows, cols)
        images[:, :49, :3] = kp
    else:
        images = 0.5 * torch.randn(num, 3, 256, 192, generator=gen)
    return TTOInputs(images, crop, kp).to(device)


def deepcopy_loop(main, aux, body, inputs: TTOInputs, scope: str, steps: int) -> None:
    """The released procedure one person at a time: a deep copy per person, torch.optim, a Python loop."""
    bbox = inputs.crop.bbox_info()
    with torch.no_grad():
        aux_dec = decode(aux(inputs.images, bbox), body, inputs.crop)
    targets = pseudo_targets(aux_dec, inputs.keypoints2d)
    for i in range(len(inputs)):
        sl = slice(i, i + 1)
        tgt = copy.copy(targets)
        for f in ("keypoints2d", "joints3d", "vertices", "rotmat", "betas", "has_smpl", "has_pose_3d"):
            setattr(tgt, f, getattr(targets, f)[sl])
        net = copy.deepcopy(main).eval()
        named = dict(net.named_parameters())
        adapted = set(net.scope_parameter_names(scope)) | set(net.scope_parameter_names("head"))
        for name, p in named.items():
            p.requires_grad_(name in adapted)
        sgd = torch.optim.SGD([named[n] for n in net.scope_parameter_names("head")], lr=PAPER_TTO_LR)
        adam = torch.optim.Adam([named[n] for n in net.scope_parameter_names(scope)], lr=REFERENCE_ADAM_LR)

        def forward(net=net, sl=sl):
            return decode(net(inputs.images[sl], bbox[sl]), body, inputs.crop[sl])

        loss, _ = combined_loss(forward(), tgt)
        sgd.zero_grad()
        loss.backward()
        sgd.step()
        for _ in range(steps):
            loss = keypoint_2d_loss(forward().keypoints2d, inputs.keypoints2d[sl])
            adam.zero_grad()
            loss.backward()
            adam.step()
        with torch.no_grad():
            forward()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(fn, warm, device: torch.device, repeats: int) -> tuple[float, float]:
    """(best seconds, peak bytes) of ``fn`` after one call of ``warm`` (lazy imports, allocator, autotuning).

    The peak is taken from before the warm-up: memory an allocator keeps after the warm-up is counted once, not
    hidden in the starting level (the warm-up is smaller than the measured call).
    """
    times = []
    with PeakMemory(device) as mem:
        warm()
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
    return min(times), mem.peak


def tto_config(impl: str, scope: str, steps: int, strategy: str = "auto", **extra: Any) -> TTOConfig:
    schedule = "reference" if impl == "reference" else "metahmr"
    return TTOConfig(schedule=schedule, scope=scope, max_steps=steps, early_stop=False, strategy=strategy, **extra)


def bench_one(device: str, network: str, scope: str, p: int, steps: int, impl: str, repeats: int = 1,
              body: str = "open", strategy: str = "auto", extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """People/s and peak memory of one implementation ("engine", "loop", "reference") in one configuration."""
    dev = torch.device(device)
    main, aux = load_networks_for(network, dev)
    body_model = load_body_model(body_dir_for(body), "neutral", device=dev)
    kp_in = tuple(main.backbone.input_shape) if network == "kpnet" else False
    # the engine warms up on 2 people so its one-off activation probe (cached per shape) is not timed
    inputs, warm_inputs = make_people(p, dev, kp_in), make_people(1 if impl == "loop" else 2, dev, kp_in, seed=1)
    extra = extra or {}
    out: dict[str, Any] = {"network": network, "scope": scope, "P": p, "steps": steps, "impl": impl}
    if impl == "loop":
        def run(x):
            return deepcopy_loop(main, aux, body_model, x, scope, steps)
    else:
        cfg = tto_config(impl, scope, steps, strategy, **extra)
        out["strategies"] = list(resolve_strategies(main, cfg, dev, p))
        info: dict[str, Any] = {}

        def run(x):
            info["execution"] = run_tto(main, aux, body_model, x, cfg).execution
    seconds, peak = measure(lambda: run(inputs), lambda: run(warm_inputs), dev, repeats)
    out.update(seconds=seconds, people_per_s=p / seconds, peak_bytes=peak)
    if impl != "loop":
        out["chunks"] = info["execution"]["chunks"]
    return out


def bench_in_subprocess(**kwargs: Any) -> dict[str, Any]:
    """:func:`bench_one` in a fresh process (a clean resident-set peak on CPUs)."""
    proc = subprocess.run([sys.executable, __file__, "--single", json.dumps(kwargs)], capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark child failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def markdown_table(rows: list[dict[str, Any]], title: str) -> str:
    """Engine beside loop (and reference when measured), one row per network / scope / P."""
    mib = 2.0**20
    cols = ["network", "scope", "P", "strategy", "chunks", "engine people/s", "engine peak MiB", "loop people/s",
            "loop peak MiB", "speed-up", "reference people/s"]
    lines = [f"### {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        def num(key: str, scale: float = 1.0, fmt: str = "{:.2f}", r=r) -> str:
            v = r.get(key)
            return "n/a" if v is None or v != v else fmt.format(v / scale)
        speed = (r["engine_people_per_s"] / r["loop_people_per_s"]) if r.get("loop_people_per_s") else None
        lines.append("| " + " | ".join([
            r["network"], r["scope"], str(r["P"]), "/".join(r.get("strategies", [])) or "n/a",
            ",".join(map(str, r.get("chunks", []))) or "n/a",
            num("engine_people_per_s"), num("engine_peak_bytes", mib, "{:.0f}"), num("loop_people_per_s"),
            num("loop_peak_bytes", mib, "{:.0f}"), "n/a" if speed is None else f"{speed:.2f}x",
            num("reference_people_per_s"),
        ]) + " |")
    return "\n".join(lines)


def run_table(device: str, networks: list[str], scopes: list[str], people: list[int], steps: int, repeats: int,
              body: str, impls: list[str], max_loop_people: int, strategy: str = "auto",
              subprocess_per_run: bool | None = None, rounds: int = 1, log=print) -> list[dict[str, Any]]:
    """Measure every configuration; returns one row per (network, scope, P) with the implementations side by side.

    ``rounds``: the implementations are measured in turn this many times (engine, loop, engine, loop, ...) and the
    fastest round of each is kept, so a change of machine load affects both alike.
    """
    isolate = device == "cpu" if subprocess_per_run is None else subprocess_per_run
    rows = []
    for network in networks:
        for scope in scopes:
            for p in people:
                row: dict[str, Any] = {"network": network, "scope": scope, "P": p, "steps": steps}
                for _ in range(rounds):
                    for impl in impls:
                        if impl == "loop" and p > max_loop_people or f"{impl}_error" in row:
                            continue
                        kwargs = dict(device=device, network=network, scope=scope, p=p, steps=steps, impl=impl,
                                      repeats=repeats, body=body, strategy=strategy)
                        try:
                            res = bench_in_subprocess(**kwargs) if isolate else bench_one(**kwargs)
                        except Exception as exc:  # one failing configuration is recorded, the rest still runs
                            row[f"{impl}_error"] = f"{type(exc).__name__}: {exc}"[:500]
                            log(f"  {network} {scope} P={p} {impl}: FAILED {row[f'{impl}_error']}")
                            continue
                        finally:
                            if device.startswith("cuda"):
                                gc.collect()
                                torch.cuda.empty_cache()
                        log(f"  {network} {scope} P={p} {impl}: {res['people_per_s']:.3f} people/s, "
                            f"peak {res['peak_bytes'] / 2**20:.0f} MiB" + (f", strategies {res.get('strategies')}"
                                                                           if impl == "engine" else ""))
                        if res["people_per_s"] > row.get(f"{impl}_people_per_s", 0.0):
                            row[f"{impl}_people_per_s"] = res["people_per_s"]
                            row[f"{impl}_peak_bytes"] = res["peak_bytes"]
                        if impl == "engine":
                            row["strategies"], row["chunks"] = res["strategies"], res["chunks"]
                rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--networks", default="resnet50,kpnet", help=f"comma list of {', '.join(NETWORKS)}")
    parser.add_argument("--people", default="1,8,32", help="comma list of P")
    parser.add_argument("--scopes", default="head,all")
    parser.add_argument("--steps", type=int, default=2, help="Adam updates after the step-0 update (released: 14)")
    parser.add_argument("--strategy", default="auto", choices=("auto", "vmap", "loop"))
    parser.add_argument("--reference", action="store_true", help="also the released batch-shared copy")
    parser.add_argument("--no-loop", action="store_true", help="skip the deep-copy loop")
    parser.add_argument("--max-loop-people", type=int, default=64, help="skip the loop above this P")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per measurement (after a warm-up)")
    parser.add_argument("--rounds", type=int, default=1, help="measure the implementations in turn this many "
                        "times and keep the fastest round of each (CPU machines shared with other work)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--body", default="open", choices=("open", "standin"))
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--single", default=None, help=argparse.SUPPRESS)  # internal: one measurement, in a child
    args = parser.parse_args()

    if args.single:
        print("RESULT " + json.dumps(bench_one(**json.loads(args.single))))
        return
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the measuring child processes inherit it
        torch.set_num_threads(args.threads)
    impls = ["engine"] + ([] if args.no_loop else ["loop"]) + (["reference"] if args.reference else [])
    rows = run_table(args.device, args.networks.split(","), args.scopes.split(","),
                     [int(p) for p in args.people.split(",")], args.steps, args.repeats, args.body, impls,
                     args.max_loop_people, args.strategy, rounds=args.rounds)
    title = (f"TTO, schedule metahmr (1 + {args.steps} updates per person), {args.device}, "
             f"{torch.get_num_threads()} threads, body {args.body}, best of {args.rounds} round(s) x "
             f"{args.repeats} call(s)")
    table = markdown_table(rows, title)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
