"""The prepared GPU benchmark: run once on a GPU machine (under 8 minutes), it writes one JSON and one Markdown
report, ``benchmarks/results/gpu-<device name>.json`` / ``.md``.

    bash benchmarks/gpu.sh                               # = python benchmarks/gpu.py --device cuda
    python benchmarks/gpu.py --device cpu --quick        # tiny sizes, every section (tests/test_benchmark_gpu.py)

Sections, in this order. Each runs in its own process with a time cap: a failure, crash or overrun is recorded in
the report and the next section runs; rows measured before a failure are kept.

    cuda_tests    ``pytest -m cuda`` (the GPU paths against the CPU, TF32 tolerance, host syncs per step)
    tto_released  TTO people/s and peak memory, scopes head and all, P = 1, 8, 64, released ResNet-50 and
                  HRNet-W48 layouts (random weights): the engine (strategy auto) vs the per-person deep-copy loop
                  vs the released batch-shared copy (schedule "reference", one copy per 20 people)
    tto_open      the open tier: the shipped keypoint model (kpnet), engine vs deep-copy loop, P = 1, 8, 64
    tto_settings  the engine's GPU options (ResNet-50, P = 64): TF32, bf16 backbone, torch.compile (head scope):
                  people/s and the largest change of the vertices against full float32
    process       ``metahmr process`` images/s end to end on examples/ (imported boxes, template keypoints, no
                  renders): the open tier (``--model open``) and the random released HRNet-W48 layout with the open
                  body (see benchmarks/process.py)
    train_step    seconds per meta-training step vs a plain step (HRNet-W48, batch 30; benchmarks/train_step.py)
    ray           ``metahmr process --backend ray`` with one worker per GPU against one worker and the local run
                  (open tier, 256 images, 16 per unit; benchmarks/process.py --backend ray), when there are
                  several GPUs; with one GPU the section only says so. ``--quick`` on a CPU: 1 CPU worker, 2 images

Schedule of the TTO sections: "metahmr" (the default: step 0 SGD on the head, then ``--steps`` Adam updates,
released 14), early stopping off so every person takes 1 + steps updates; body: the open body (7,000 vertices,
close to SMPL's 6,890).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

SECTIONS = ("cuda_tests", "tto_released", "tto_open", "tto_settings", "process", "train_step", "ray")
CAPS = {"cuda_tests": 60, "tto_released": 180, "tto_open": 25, "tto_settings": 40, "process": 50, "train_step": 45,
        "ray": 90}
"""Seconds each section may run (full run); the last ones get what the time limit leaves, at most their cap."""
QUICK_CAPS = {"cuda_tests": 40, "tto_released": 60, "tto_open": 30, "tto_settings": 30, "process": 40,
              "train_step": 30, "ray": 60}
TIME_LIMIT = 450.0
"""Seconds for the whole run (7.5 minutes); a section gets at most what is left."""


def plan(quick: bool, device: str) -> dict[str, Any]:
    """The sizes of every section (``quick``: tiny networks and sizes that finish in seconds on a CPU)."""
    if quick:
        return {"steps": 1, "released": ["tiny"], "people": [2], "open_people": [2], "settings_network": "tiny",
                "settings_people": 2, "process_images": 1, "process_network": "tiny", "train_backbone": "resnet_tiny",
                "train_batch": 2, "train_steps": 1, "pytest_targets": ["tests/test_tto_cuda.py"], "ray_images": 2,
                "ray_images_per_unit": 1}
    return {"steps": 14, "released": ["resnet50", "hrnet"], "people": [1, 8, 64], "open_people": [1, 8, 64],
            "settings_network": "resnet50", "settings_people": 64, "process_images": 64, "process_network": "hrnet",
            "train_backbone": "hrnet", "train_batch": 30, "train_steps": 3, "pytest_targets": ["tests"],
            "ray_images": 256, "ray_images_per_unit": 16}


def device_slug(device: str) -> tuple[str, str]:
    """(name, file-name-safe slug) of the device, e.g. ("NVIDIA H200", "nvidia-h200")."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(torch.device(device))
    else:
        name = f"cpu-{platform.machine()}"
    return name, re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# ------------------------------------------------------------------------------------------------ sections


def _append_row(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(row) + "\n")


def section_tto(args: argparse.Namespace, cfg: dict[str, Any], rows_file: Path, networks: list[str],
                people: list[int], impls: list[str]) -> None:
    """TTO rows, one per (network, scope, P), written as they are measured."""
    from tto import run_table

    deadline = time.monotonic() + args.cap - 5
    for p in people:  # small P of every network first: an overrun loses the largest sizes only
        for network in networks:
            for scope in ("head", "all"):
                if time.monotonic() > deadline:
                    _append_row(rows_file, {"network": network, "scope": scope, "P": p, "skipped": "time cap"})
                    continue
                rows = run_table(args.device, [network], [scope], [p], cfg["steps"], 1, "open", impls,
                                 max_loop_people=10**6, subprocess_per_run=False, log=lambda m: print(m, flush=True))
                for row in rows:
                    _append_row(rows_file, row)


def section_tto_settings(args: argparse.Namespace, cfg: dict[str, Any], rows_file: Path) -> None:
    """Engine people/s with each GPU option, and the largest vertex change against full float32."""
    import torch
    from tto import body_dir_for, load_networks_for, make_people, tto_config

    from metahmr_cli.body.smpl import load_body_model
    from metahmr_cli.tto import run_tto

    dev = torch.device(args.device)
    main, aux = load_networks_for(cfg["settings_network"], dev)
    body = load_body_model(body_dir_for("open"), "neutral", device=dev)
    p = cfg["settings_people"]
    inputs = make_people(p, dev)
    variants = [("float32", {}), ("tf32", {"tf32": True}), ("bf16 backbone", {"backbone_bf16": True}),
                ("compile", {"compile": True})]
    for scope in ("head", "all"):
        ref = None
        for label, extra in variants:
            if label == "compile" and (scope != "head" or dev.type != "cuda"):
                continue  # compile applies to the head-only step; on CPUs it does not pay off
            cfg_tto = tto_config("engine", scope, cfg["steps"], **extra)
            try:
                run_tto(main, aux, body, make_people(2, dev, seed=1), cfg_tto)  # warm-up (and compilation)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                res = run_tto(main, aux, body, inputs, cfg_tto)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - t0
                if ref is None:
                    ref = res
                change = float((res.vertices - ref.vertices).abs().amax())
                row = {"scope": scope, "setting": label, "P": p, "people_per_s": p / seconds,
                       "max_vertex_change_m": change}
            except Exception as exc:
                row = {"scope": scope, "setting": label, "P": p, "error": f"{type(exc).__name__}: {exc}"[:400]}
            print(row, flush=True)
            _append_row(rows_file, row)


def _call_main(script: str, argv: list[str]) -> None:
    """``main()`` of another benchmark script of this folder, in this process, with ``argv``."""
    import importlib

    module = importlib.import_module(script)
    saved = sys.argv
    sys.argv = [f"{script}.py", *argv]
    try:
        module.main()
    finally:
        sys.argv = saved


def section_process(args: argparse.Namespace, cfg: dict[str, Any], rows_file: Path) -> None:
    """benchmarks/process.py: the open tier, and a random released layout with the open body."""
    runs = [("open tier", ["--model", "open"]),
            (f"{cfg['process_network']} + open body", ["--network", cfg["process_network"], "--body", "open"])]
    for i, (label, extra) in enumerate(runs):
        out = rows_file.with_suffix(f".process{i}.json")
        argv = ["--device", args.device, "--images", str(cfg["process_images"]), "--steps", str(cfg["steps"]),
                "--keypoints", "template", "--no-render", "--json", str(out), *extra]
        try:
            _call_main("process", argv)
            row = {"run": label, **json.loads(out.read_text())}
        except BaseException as exc:  # SystemExit from argparse included: record it, run the next one
            row = {"run": label, "error": f"{type(exc).__name__}: {exc}"[-800:]}
        print(row, flush=True)
        _append_row(rows_file, row)


def section_ray(args: argparse.Namespace, cfg: dict[str, Any], rows_file: Path) -> None:
    """benchmarks/process.py --backend ray: one worker per GPU against one worker and the local run."""
    import torch

    if args.device.startswith("cuda"):
        gpus = torch.cuda.device_count()
        if gpus < 2:
            _append_row(rows_file, {"note": f"not run: {gpus} GPU here; one Ray worker per GPU needs 2 or more"})
            return
        workers, gpw = [1, gpus], ["--gpus-per-worker", "1"]
    else:  # --quick on a CPU: the code path, not a measurement
        workers, gpw = [1], []
    out = rows_file.with_suffix(".ray.json")
    _call_main("process", ["--device", args.device, "--images", str(cfg["ray_images"]), "--steps", str(cfg["steps"]),
                           "--model", "open", "--keypoints", "template", "--no-render", "--backend", "ray",
                           "--ray-workers", ",".join(map(str, workers)), "--images-per-unit",
                           str(cfg["ray_images_per_unit"]), "--json", str(out), *gpw])
    result = json.loads(out.read_text())
    for r in result["ray"]:
        _append_row(rows_file, {"local_images_per_second": result["images_per_second"], **r})


def section_train_step(args: argparse.Namespace, cfg: dict[str, Any], rows_file: Path) -> None:
    out = rows_file.with_suffix(".train.json")
    _call_main("train_step", ["--device", args.device, "--backbone", cfg["train_backbone"], "--batch-size",
                              str(cfg["train_batch"]), "--steps", str(cfg["train_steps"]), "--json", str(out)])
    _append_row(rows_file, json.loads(out.read_text()))


def cuda_test_files(targets: list[str]) -> list[str]:
    """Test files among ``targets`` that mark tests ``cuda`` (collecting only those keeps ``pytest -m cuda`` fast)."""
    files = []
    for target in targets:
        path = REPO / target
        for f in sorted(path.rglob("test_*.py")) if path.is_dir() else [path]:
            if "mark.cuda" in f.read_text(errors="replace"):
                files.append(str(f.relative_to(REPO)))
    return files


class _Outcomes:
    """pytest plugin: counts of test outcomes and the failing test ids."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.failures: list[str] = []

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "call" or report.outcome != "passed":
            self.counts[report.outcome] = self.counts.get(report.outcome, 0) + 1
            if report.failed:
                self.failures.append(f"{report.nodeid} ({report.when})")


def section_cuda_tests(args: argparse.Namespace, cfg: dict[str, Any], rows_file: Path) -> None:
    """``pytest -m cuda`` over the test files that have CUDA tests, in this process."""
    import pytest

    plugin = _Outcomes()
    code = pytest.main(["-m", "cuda", "-q", "-p", "no:cacheprovider", *cuda_test_files(cfg["pytest_targets"])],
                       plugins=[plugin])
    summary = ", ".join(f"{n} {k}" for k, n in sorted(plugin.counts.items())) or "no tests"
    _append_row(rows_file, {"summary": summary, "counts": plugin.counts, "failures": plugin.failures[:20],
                            "returncode": int(code)})
    if int(code) not in (0, 5):  # 5: nothing collected
        raise RuntimeError(f"pytest -m cuda: {summary}")


def run_section(args: argparse.Namespace) -> None:
    """Child process: one section, rows appended to ``--rows`` as they are measured."""
    import torch

    torch.manual_seed(0)
    os.chdir(REPO)
    cfg = plan(args.quick, args.device)
    rows = Path(args.rows)
    name = args.section
    if name == "tto_released":
        section_tto(args, cfg, rows, cfg["released"], cfg["people"], ["engine", "loop", "reference"])
    elif name == "tto_open":
        section_tto(args, cfg, rows, ["kpnet"], cfg["open_people"], ["engine", "loop"])
    elif name == "tto_settings":
        section_tto_settings(args, cfg, rows)
    elif name == "process":
        section_process(args, cfg, rows)
    elif name == "train_step":
        section_train_step(args, cfg, rows)
    elif name == "cuda_tests":
        section_cuda_tests(args, cfg, rows)
    elif name == "ray":
        section_ray(args, cfg, rows)
    else:
        raise SystemExit(f"unknown section {name!r}")


# ------------------------------------------------------------------------------------------------ report


def environment(device: str) -> dict[str, Any]:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "threads": torch.get_num_threads(), "platform": platform.platform()}
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   capability=f"{props.major}.{props.minor}")
    return env


def _fmt(v: Any, spec: str = "{:.2f}") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"
    return spec.format(v) if isinstance(v, int | float) else str(v)


def markdown(report: dict[str, Any]) -> str:
    from tto import markdown_table

    lines = [f"# GPU benchmark: {report['device_name']}", "",
             f"{report['started']}, {'quick' if report['quick'] else 'full'} run, {report['total_seconds']:.0f} s. "
             f"torch {report['environment']['torch']}, CUDA {report['environment']['cuda']}. "
             f"TTO schedule metahmr, 1 + {report['plan']['steps']} updates per person, early stop off, open body.",
             "", "| section | status | seconds | note |", "|---|---|---|---|"]
    for name, sec in report["sections"].items():
        note = sec.get("error", "") or ""
        lines.append(f"| {name} | {sec['status']} | {_fmt(sec.get('seconds'), '{:.0f}')} | "
                     f"{note.splitlines()[-1][:160] if note else ''} |")
    secs = report["sections"]
    for name, title in (("tto_released", "TTO, released layouts (random weights)"),
                        ("tto_open", "TTO, open tier (kpnet)")):
        rows = [r for r in secs.get(name, {}).get("rows", []) if "skipped" not in r]
        if rows:
            lines += ["", markdown_table(rows, title)]
        skipped = [r for r in secs.get(name, {}).get("rows", []) if "skipped" in r]
        if skipped:
            lines.append(f"\nSkipped ({skipped[0]['skipped']}): " +
                         ", ".join(f"{r['network']} {r['scope']} P={r['P']}" for r in skipped))
    rows = secs.get("tto_settings", {}).get("rows", [])
    if rows:
        lines += ["", "### Engine settings", "", "| scope | setting | P | people/s | max vertex change (m) |",
                  "|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['scope']} | {r['setting']} | {r['P']} | {_fmt(r.get('people_per_s'))} | "
                         f"{_fmt(r.get('max_vertex_change_m'), '{:.2e}')} {r.get('error', '')[:80]} |")
    rows = secs.get("process", {}).get("rows", [])
    if rows:
        lines += ["", "### process, end to end on examples/", "", "| run | images | people | images/s | people/s | "
                  "TTO ms/image |", "|---|---|---|---|---|---|"]
        for r in rows:
            tto_ms = r.get("stage_seconds_per_image", {}).get("tto")
            lines.append(f"| {r['run']} | {_fmt(r.get('images'))} | {_fmt(r.get('people'))} | "
                         f"{_fmt(r.get('images_per_second'))} | {_fmt(r.get('people_per_second'))} | "
                         f"{_fmt(None if tto_ms is None else 1000 * tto_ms, '{:.1f}')} {r.get('error', '')[:80]} |")
    rows = secs.get("train_step", {}).get("rows", [])
    if rows:
        r = rows[0]
        lines += ["", "### Training step", "",
                  f"{r.get('backbone')} batch {r.get('batch_size')}: plain {_fmt(r.get('plain_s_per_step'), '{:.3f}')}"
                  f" s, meta {_fmt(r.get('meta_s_per_step'), '{:.3f}')} s per step "
                  f"(meta / plain = {_fmt(r.get('meta_over_plain'))})."]
    rows = secs.get("ray", {}).get("rows", [])
    if rows and "note" in rows[0]:
        lines += ["", "### process on Ray", "", rows[0]["note"]]
    elif rows:
        lines += ["", "### process on Ray (open tier, one worker per GPU)", "",
                  "| workers | images | images/s | local images/s | images/s after start-up | start-up s | "
                  "wait per unit ms |", "|---|---|---|---|---|---|---|"]
        for r in rows:
            wait = r.get("wait_per_unit_seconds")
            lines.append(f"| {r.get('workers')} | {_fmt(r.get('images'))} | {_fmt(r.get('images_per_second'))} | "
                         f"{_fmt(r.get('local_images_per_second'))} | "
                         f"{_fmt(r.get('images_per_second_after_startup'))} | {_fmt(r.get('startup_seconds'))} | "
                         f"{_fmt(None if wait is None else 1000 * wait, '{:.0f}')} |")
    rows = secs.get("cuda_tests", {}).get("rows", [])
    if rows:
        lines += ["", "### pytest -m cuda", "", f"`{rows[0]['summary']}`"]
        lines += [f"- {f}" for f in rows[0].get("failures", [])]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny networks and sizes (checks the script itself)")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="folder of the reports")
    ap.add_argument("--sections", default=",".join(SECTIONS), help="comma list of the sections to run")
    ap.add_argument("--section", default=None, help=argparse.SUPPRESS)  # internal: run one section (child)
    ap.add_argument("--rows", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cap", type=float, default=60.0, help=argparse.SUPPRESS)
    ap.add_argument("--no-time-limit", action="store_true",
                    help="no time caps (a check that every section runs, e.g. --device cpu --quick on a busy machine)")
    args = ap.parse_args()

    if args.section:
        run_section(args)
        return

    started = time.strftime("%Y-%m-%d %H:%M:%S")
    t_start = time.monotonic()
    name, slug = device_slug(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    caps = QUICK_CAPS if args.quick else CAPS
    time_limit = TIME_LIMIT
    if args.no_time_limit:
        caps = dict.fromkeys(SECTIONS, 3600.0)
        time_limit = float("inf")
    work = args.out / f".gpu-{slug}-rows"
    work.mkdir(exist_ok=True)
    report: dict[str, Any] = {"device": args.device, "device_name": name, "started": started, "quick": args.quick,
                              "environment": environment(args.device), "plan": plan(args.quick, args.device),
                              "sections": {}}
    for section in args.sections.split(","):
        rows_file = work / f"{section}.jsonl"
        rows_file.unlink(missing_ok=True)
        left = time_limit - (time.monotonic() - t_start) - 15
        cap = min(caps[section], left)
        if cap < 10:
            report["sections"][section] = {"status": "skipped", "error": "time limit of the whole run", "rows": []}
            continue
        cmd = [sys.executable, __file__, "--device", args.device, "--section", section, "--rows", str(rows_file),
               "--cap", str(cap), *(["--quick"] if args.quick else [])]
        t0 = time.monotonic()
        print(f"== {section} (cap {cap} s)", flush=True)
        entry: dict[str, Any] = {}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=cap + 10, cwd=REPO,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})
            entry["status"] = "ok" if proc.returncode == 0 else "failed"
            if proc.returncode != 0:
                entry["error"] = (proc.stderr or proc.stdout).strip()[-1500:]
        except subprocess.TimeoutExpired:
            entry["status"] = "timeout"
            entry["error"] = f"stopped after {cap + 10:.0f} s; rows measured before are kept"
        except Exception:  # pragma: no cover - the harness itself
            entry["status"] = "failed"
            entry["error"] = traceback.format_exc()[-1500:]
        entry["seconds"] = time.monotonic() - t0
        entry["rows"] = [json.loads(ln) for ln in rows_file.read_text().splitlines()] if rows_file.is_file() else []
        problems = [f"{k}: {v}" for r in entry["rows"] for k, v in r.items() if k.endswith(("error", "skipped"))]
        if entry["status"] == "ok" and problems:
            entry["status"] = "partial"
            entry["error"] = problems[0]
        report["sections"][section] = entry
        print(f"   {entry['status']} in {entry['seconds']:.0f} s", flush=True)
        rows_file.unlink(missing_ok=True)
    for leftover in work.iterdir():
        leftover.unlink()
    work.rmdir()
    report["total_seconds"] = time.monotonic() - t_start
    json_path = args.out / f"gpu-{slug}{'-quick' if args.quick else ''}.json"
    md_path = json_path.with_suffix(".md")
    json_path.write_text(json.dumps(report, indent=2))
    md_path.write_text(markdown(report))
    print(f"wrote {json_path} and {md_path} ({report['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
