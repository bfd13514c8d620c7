"""End-to-end throughput of ``metahmr process``: images/s, people/s and the time per stage.

Runs the real pipeline (decode, detect, keypoints, crops, networks + TTO, writers, renders) on the example
photos, repeated to ``--images`` inputs, with random-weight networks in a released layout (or the tiny test
backbone) and the stand-in body (``--body open``: the open body; or a body folder), or with the open tier
(``--model open``: the open keypoint model shipped with metahmr and the open body), so it needs no downloads.
Person boxes are imported (a random-weight detector finds nobody); keypoints come from MediaPipe (offline) unless
``--keypoints template``.

The regression time is measured by a run with ``--tto none``; TTO = (tto stage with TTO) - (regression).

``--backend ray`` then runs the same inputs with ``--backend ray`` on a local Ray instance sized to the machine,
once per worker count of ``--ray-workers`` (a unit of work per image, ``--images-per-unit``), and prints images/s
against the local run (measured before and after the Ray runs: on a shared machine the load drifts), Ray's start-up
(connecting, the probe task, workers started and their models loaded) and what Ray adds per unit of work: the wait
between the end of a worker's unit and the start of its next one.

    python benchmarks/process.py --device cpu --images 8 --network tiny
    python benchmarks/process.py --device cuda --images 64 --network hrnet --batch-size 32 --body open
    python benchmarks/process.py --device cuda --images 64 --model open
    python benchmarks/process.py --device cpu --images 16 --backend ray --ray-workers 1,2 --no-render
    python benchmarks/process.py --device cuda --images 256 --model open --backend ray --ray-workers 4
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
BOXES = {"messi5": [[65, 55, 460, 340, 0.9]], "basketball1": [[30, 75, 200, 480], [430, 20, 640, 480, 0.8]]}
NETWORKS = {"tiny": None, "resnet": "metahmr_cliff_resnet", "hrnet": "metahmr_cliff_hrnet"}


class _TemplateKeypoints:
    """Cheap stand-in for a keypoint model: a standing person spread over each box (GT slots)."""

    def __call__(self, image, boxes, *, path, frame):
        out = np.zeros((len(boxes), 49, 3), np.float32)
        ys = np.linspace(0.05, 0.95, 24, dtype=np.float32)
        xs = 0.5 + 0.2 * np.sin(np.arange(24, dtype=np.float32))
        for i, (x1, y1, x2, y2) in enumerate(boxes):
            out[i, 25:, 0] = x1 + xs * (x2 - x1)
            out[i, 25:, 1] = y1 + ys * (y2 - y1)
            out[i, 25:, 2] = 1.0
        return out


def _prepare(work: Path, n_images: int, network: str, model: str = "paper",
             body_choice: str | None = None) -> tuple[str, Path | None, Path, Path]:
    import torch

    from metahmr_cli.body.builders.standin import write_standin_assets
    from metahmr_cli.body.layout import BUNDLED_DIR
    from metahmr_cli.body.smpl import load_mean_params
    from metahmr_cli.models import build_regressor, save_networks, write_random_checkpoint

    choice = body_choice or ("open" if model == "open" else "standin")
    if choice == "standin":
        body = work / "standin"
        write_standin_assets(body)
    elif choice == "open":
        body = BUNDLED_DIR
    else:
        body = Path(choice)
    mean = load_mean_params(body)
    ckpt: Path | None = work / f"{network}.pt"
    if model == "open":
        ckpt = None  # the open model shipped with metahmr
    elif NETWORKS[network] is None:
        torch.manual_seed(0)
        save_networks(ckpt, build_regressor("cliff", "resnet_tiny", 3, mean_params=mean),
                      build_regressor("cliff", "resnet_tiny", 3, mean_params=mean))
    else:
        write_random_checkpoint(ckpt, NETWORKS[network], mean_params=mean)
    photos = work / "photos"
    photos.mkdir()
    boxes = {}
    sources = sorted(EXAMPLES.glob("*.jpg")) + sorted(EXAMPLES.glob("*.png"))
    for i in range(n_images):
        src = sources[i % len(sources)]
        name = f"img{i:04d}{src.suffix}"
        shutil.copy(src, photos / name)
        boxes[name] = BOXES[src.stem]
    boxes_json = work / "boxes.json"
    boxes_json.write_text(json.dumps(boxes))
    return "open" if choice == "open" else str(body), ckpt, photos, boxes_json


def _run(photos: Path, out: Path, body: str, ckpt: Path | None, boxes: Path, args: argparse.Namespace,
         schedule: str, render: bool) -> dict:
    from metahmr_cli.pipeline import Pipeline
    from metahmr_cli.process_config import ProcessConfig
    from metahmr_cli.tto import TTOConfig

    cfg = ProcessConfig(inputs=[str(photos)], out=out, model=args.model, body=body, checkpoint=ckpt,
                        boxes_json=boxes, keypoints="mediapipe", device=args.device, batch_size=args.batch_size,
                        render=render, tto=TTOConfig(schedule=schedule, max_steps=args.steps),
                        prefetch=args.prefetch)
    stages = {"keypoints": _TemplateKeypoints()} if args.keypoints == "template" else {}
    t0 = time.perf_counter()
    report = Pipeline(cfg, progress=False, **stages).run()
    wall = time.perf_counter() - t0
    s = report.summary
    return {"wall_seconds": wall, "run_seconds": s["wall_seconds"], "images": s["processed"]["images"],
            "people": s["processed"]["people"], "stages": s["stage_seconds"], "counts": s["counts"]}


def _run_ray(photos: Path, out: Path, body: str, ckpt: Path | None, boxes: Path, args: argparse.Namespace,
             render: bool, workers: int) -> dict:
    """One ``--backend ray`` run on the Ray instance this process is connected to, and what Ray added."""
    from metahmr_cli.distributed import RaySettings
    from metahmr_cli.distributed.ray_backend import RayRunner
    from metahmr_cli.process_config import ProcessConfig
    from metahmr_cli.tto import TTOConfig

    cfg = ProcessConfig(inputs=[str(photos)], out=out, model=args.model, body=body, checkpoint=ckpt,
                        boxes_json=boxes, keypoints="mediapipe", device=args.device, batch_size=args.batch_size,
                        render=render, tto=TTOConfig(schedule=args.schedule, max_steps=args.steps),
                        prefetch=args.prefetch, backend="ray",
                        ray=RaySettings(workers=workers, gpus_per_worker=args.gpus_per_worker,
                                        images_per_unit=args.images_per_unit))
    stages = {"keypoints": _TemplateKeypoints()} if args.keypoints == "template" else {}
    t0 = time.perf_counter()
    report = RayRunner(cfg, progress=False, **stages).run()
    wall = time.perf_counter() - t0
    s = report.summary
    images, units = s["processed"]["images"], s["ray"]["units"]
    ws = s["workers"]
    gaps = sum(max(w["units"] - 1, 0) for w in ws)
    startup = s["ray"]["startup_seconds"] or 0.0
    return {"workers": workers, "units": units, "images": images, "people": s["processed"]["people"],
            "seconds": wall, "images_per_second": images / wall,
            "connect_and_probe_seconds": wall - s["wall_seconds"], "startup_seconds": startup,
            "images_per_second_after_startup": images / max(s["wall_seconds"] - startup, 1e-9),
            "wait_per_unit_seconds": sum(w["waiting_seconds"] for w in ws) / gaps if gaps else None,
            "busy_seconds_per_image": sum(w["busy_seconds"] for w in ws) / max(images, 1),
            "worker_processes": len(ws), "counts": s["counts"]}


def _bench_ray(args: argparse.Namespace, work: Path, body: str, ckpt: Path | None, photos: Path, boxes: Path,
               render: bool) -> list[dict]:
    import os

    import ray

    from metahmr_cli.distributed.ray_backend import init_ray

    # one local instance sized to the machine; its workers import this folder's modules (the template keypoints)
    init_ray(ray, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent),
                                                                     os.environ.get("PYTHONPATH", "")])}})
    try:
        return [_run_ray(photos, work / f"out_ray{n}", body, ckpt, boxes, args, render, n) for n in args.ray_workers]
    finally:
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--network", choices=sorted(NETWORKS), default="tiny")
    ap.add_argument("--model", choices=("paper", "open"), default="paper",
                    help="paper: random weights in --network's layout; open: the open tier (keypoint model)")
    ap.add_argument("--body", default=None, help="standin (default for --model paper), open (default for --model "
                    "open) or a body-model folder")
    ap.add_argument("--steps", type=int, default=14)
    ap.add_argument("--prefetch", type=int, default=None, help="images prepared ahead and outputs written by "
                    "background threads while TTO runs (0 = off; default: 4 on a GPU, 0 on a CPU)")
    ap.add_argument("--schedule", default="metahmr")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--keypoints", choices=("mediapipe", "template"), default="mediapipe")
    ap.add_argument("--no-render", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the numbers to this file")
    ap.add_argument("--backend", choices=("local", "ray"), default="local",
                    help="ray: also run with --backend ray for each of --ray-workers and compare")
    ap.add_argument("--ray-workers", type=lambda t: [int(x) for x in t.split(",")], default=[1, 2],
                    help="worker counts of the Ray runs (comma list, default 1,2)")
    ap.add_argument("--gpus-per-worker", type=float, default=None, help="Ray runs: GPUs per worker (default: 1 when "
                    "there are GPUs)")
    ap.add_argument("--images-per-unit", type=int, default=1, help="Ray runs: images per unit of work (default 1)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        body, ckpt, photos, boxes = _prepare(work, args.images, args.network, args.model, args.body)
        render = not args.no_render
        # warm-up on a copy of one image (imports, OpenGL context, first-call costs)
        warm = work / "warm"
        warm.mkdir()
        shutil.copy(next(photos.iterdir()), warm / next(photos.iterdir()).name)
        _run(warm, work / "out_warm", body, ckpt, boxes, args, args.schedule, render)
        plain = _run(photos, work / "out_none", body, ckpt, boxes, args, "none", False)
        full = _run(photos, work / "out_full", body, ckpt, boxes, args, args.schedule, render)
        ray_rows, after = [], None
        if args.backend == "ray":
            ray_rows = _bench_ray(args, work, body, ckpt, photos, boxes, render)
            after = _run(photos, work / "out_after", body, ckpt, boxes, args, args.schedule, render)

    regress = plain["stages"]["tto"]
    stages = dict(full["stages"])
    stages["regress"] = regress
    stages["tto"] = max(full["stages"]["tto"] - regress, 0.0)
    t = full["run_seconds"]
    result = {
        "device": args.device, "network": "open" if args.model == "open" else args.network, "body": body,
        "schedule": args.schedule, "steps": args.steps,
        "batch_size": args.batch_size, "prefetch": args.prefetch, "keypoints": args.keypoints, "render": render,
        "images": full["images"], "people": full["people"], "seconds": t,
        "images_per_second": full["images"] / t, "people_per_second": full["people"] / t,
        "plain_regression_images_per_second": plain["images"] / plain["run_seconds"],
        "stage_seconds_per_image": {k: stages.get(k, 0.0) / max(full["images"], 1) for k in
                                    ("decode", "detect", "keypoints", "evidence", "crop", "regress", "tto", "write",
                                     "render")},
    }
    print(f"{result['images']} images, {result['people']} people on {args.device} ({result['network']}, body {body}, "
          f"{args.schedule} x{args.steps}, batch {args.batch_size}, keypoints {args.keypoints}, "
          f"render {'on' if render else 'off'})")
    print(f"  {result['images_per_second']:.2f} images/s, {result['people_per_second']:.2f} people/s "
          f"(plain regression without renders: {result['plain_regression_images_per_second']:.2f} images/s)")
    for k, v in result["stage_seconds_per_image"].items():
        print(f"  {k:<10s} {1000 * v:8.1f} ms/image")
    if ray_rows:
        assert after is not None
        result["ray"] = ray_rows
        result["local_images_per_second_after_ray"] = after["images"] / after["run_seconds"]
        print(f"--backend ray ({args.images_per_unit} image(s) per unit of work); the local run: "
              f"{result['images_per_second']:.2f} images/s before the Ray runs, "
              f"{result['local_images_per_second_after_ray']:.2f} after, {1000 / result['images_per_second']:.0f} ms "
              "per image before")
        for r in ray_rows:
            wait = r["wait_per_unit_seconds"]
            print(f"  {r['workers']} worker(s): {r['images_per_second']:.2f} images/s end to end "
                  f"({r['seconds']:.1f} s: connect + probe {r['connect_and_probe_seconds']:.1f} s, workers' start-up "
                  f"{r['startup_seconds']:.1f} s), {r['images_per_second_after_startup']:.2f} images/s after start-up; "
                  f"{'n/a' if wait is None else f'{1000 * wait:.0f} ms'} waiting per unit, "
                  f"{1000 * r['busy_seconds_per_image']:.0f} ms busy per image; {r['units']} units on "
                  f"{r['worker_processes']} worker process(es), counts {r['counts']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
