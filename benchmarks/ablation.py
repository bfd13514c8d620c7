"""Meta-HMR's ablation on the open tier, as the paper's Table 3 and Figure 3: does meta-training earn its name?

Three models are trained from one recipe with the same data and step budget, then evaluated on the same held-out
synthetic people (``metahmr eval --dataset synthetic-keypoints``) with the regression alone (``none``), EFT and the
default test-time optimisation (``metahmr``: the inner loop the model was trained with, then the Adam refinement),
after every step 0 … 14:

- ``plain``: only plain steps (the recipe with ``meta_warmup_steps`` = the budget); its auxiliary net is trained on
  the ground truth alongside, so the default TTO (which needs its pseudo mesh) runs for it too (Table 3, row 1);
- ``meta``: meta steps whose inner loop uses the 2D keypoints alone (``pseudo = false``; row 2); its default TTO
  starts with the same 2D-only inner loop;
- ``meta+aux``: the recipe itself, meta steps with the auxiliary net's pseudo mesh in the inner loop (dual
  networks; row 3).

The recipe's plain warm-up steps (``meta_warmup_steps``) are the same for all three, so they are trained once and
the three runs continue from that checkpoint (an exact resume: optimiser state, data position, random state); each
run therefore equals a run of its own from scratch. Differences are paired over the same people, with 95 %
t confidence intervals. The inner loop is also measured on training batches at the fork and at the end (relative
weight change and outer-loss change per inner update, cosine between the plain and the meta gradient:
:func:`metahmr_cli.training.probe_inner_loop`).

    python benchmarks/ablation.py                                   # the open recipe -> benchmarks/results/ablation*
    python benchmarks/ablation.py --set inner_lr=3e-5 --steps 3500 --out /tmp/abl   # another inner loop and budget
    python benchmarks/ablation.py --quick --out /tmp/abl-quick      # minutes: a toy budget (what the test runs)
    python benchmarks/ablation.py --parallel 2                      # the three trainings in two processes

Runs, evaluations and their caches go to ``--work`` (default ``runs/ablation``); an interrupted ablation resumes
where it stopped. Outputs in ``--out``: ``ablation.json`` (everything), ``ablation.md`` (the tables) and
``ablation_curves.png`` (MPJPE / PA-MPJPE after each TTO step, per model and method).

Target: meta + aux after TTO better than plain after TTO (paired 95 % CI of the difference below 0), a curve of the
meta model that falls with every step, while plain + EFT is flat or U-shaped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS: dict[str, str] = {"plain": "plain", "meta": "meta (main only)", "meta+aux": "meta + aux"}
"""Run name -> label (Table 3's rows)."""
METHODS: tuple[str, ...] = ("none", "eft", "metahmr")
METRICS: tuple[str, ...] = ("mpjpe", "pa_mpjpe")
LABELS = {"mpjpe": "MPJPE", "pa_mpjpe": "PA-MPJPE"}
QUICK = {"steps": 6, "warmup": 3, "samples": 12, "tto_steps": 3, "probe_batches": 1,
         "set": {"batch_size": 8, "synth_length": 64, "checkpoint_every": 1000, "log_every": 1}}
"""The toy budget of ``--quick``."""
RISE_TOL_MM = 0.05
"""A curve "falls with every step" when no step raises its mean by more than this (float noise of the means)."""


def variant_overrides(name: str, warmup: int, total: int) -> dict[str, Any]:
    """The settings that make a variant of the recipe (see the module docstring): plain steps up to ``warmup``
    (``total`` for plain), then meta steps."""
    if name == "plain":
        return {"meta_warmup_steps": total}
    if name == "meta":
        return {"meta_warmup_steps": warmup, "pseudo": False}
    return {"meta_warmup_steps": warmup}


# ----------------------------------------------------------------------------------------------- training


def _final(run: Path, steps: int) -> Path:
    return run / "checkpoints" / f"step_{steps:08d}.pt"


def _run_config(base: Any, settings: dict[str, Any], resume: Path | None) -> Any:
    """The recipe's settings with ``settings`` on top, continuing from ``resume`` (its networks, optimiser, data
    position and random state) when given: the run's settings come from the recipe, not from the checkpoint."""
    from metahmr_cli.config import apply_overrides

    cfg = apply_overrides(base, settings)
    return dataclasses.replace(cfg, resume=None if resume is None else str(resume))


def train_shared(base: Any, warmup: int, work: Path) -> Path | None:
    """The plain warm-up steps shared by the three runs (None without warm-up); skipped when already done."""
    from metahmr_cli.training import train

    if warmup <= 0:
        return None
    run = work / "shared"
    if _final(run, warmup).is_file():
        return _final(run, warmup)
    last = run / "checkpoints" / "last.pt"
    result = train(_run_config(base, {"max_steps": warmup, "out": str(run)}, last if last.is_file() else None))
    assert result is not None and result.last_checkpoint is not None
    return result.last_checkpoint


def train_variant(name: str, base: Any, fork: Path | None, total: int, work: Path) -> Path:
    """Train one variant to ``total`` steps (from the shared checkpoint, or from scratch); skipped when done."""
    from metahmr_cli.training import train

    run = work / name
    if _final(run, total).is_file():
        return _final(run, total)
    settings = {**variant_overrides(name, base.meta_warmup_steps, total), "max_steps": total, "out": str(run)}
    last = run / "checkpoints" / "last.pt"
    result = train(_run_config(base, settings, last if last.is_file() else fork))  # own last.pt: interrupted
    assert result is not None and result.last_checkpoint is not None
    return result.last_checkpoint


# ----------------------------------------------------------------------------------------------- probe


def probe(checkpoint: Path, cfg: Any, batches: int, device: str) -> dict[str, Any]:
    """The inner loop of a run's settings ``cfg`` measured at ``checkpoint`` on training batches: means over
    ``batches`` batches of the run's size, drawn from the training stream with another seed (people the networks
    were not trained on)."""
    from torch.utils.data import DataLoader

    from metahmr_cli.assets import body_dir
    from metahmr_cli.body.smpl import load_mean_params
    from metahmr_cli.training import (
        build_networks,
        load_training_checkpoint,
        meta_step,
        prepare_batch,
        probe_inner_loop,
        training_body,
        training_dataset,
    )
    from metahmr_cli.training.checkpointing import restore_networks

    cfg = dataclasses.replace(cfg, seed=cfg.seed + 1)
    body = training_body(cfg, device)
    main, aux = build_networks(cfg, load_mean_params(body_dir(cfg.body)))
    restore_networks(load_training_checkpoint(checkpoint), main, aux, source=checkpoint.name)
    main.to(device).train(cfg.net_mode == "train")
    if aux is not None:
        aux.to(device).train(cfg.aux_net_mode == "train")
    step = meta_step(cfg, main, aux, body, device)
    loader = DataLoader(training_dataset(cfg), batch_size=cfg.batch_size, shuffle=False, num_workers=0)
    results = []
    for i, items in enumerate(loader):
        if i >= batches:
            break
        results.append(probe_inner_loop(step, prepare_batch(items, body, device), seed=i).as_dict())
    mean: dict[str, Any] = {"batches": len(results), "inner_loop": cfg.inner_loop().to_record()}
    for key, value in results[0].items():
        values = [r[key] for r in results]
        mean[key] = [float(np.mean(v)) for v in zip(*values, strict=True)] if isinstance(value, list) \
            else float(np.mean(values))
    return mean


# ----------------------------------------------------------------------------------------------- evaluation


def evaluate(name: str, checkpoint: Path, body: str, args: argparse.Namespace, work: Path) -> Any:
    """``metahmr eval`` of one model on the held-out synthetic people (cached per batch under ``work``)."""
    from metahmr_cli.evaluation import EvalConfig, run_evaluation
    from metahmr_cli.evaluation.runner import SYNTHETIC_KEYPOINTS

    cfg = EvalConfig(dataset=SYNTHETIC_KEYPOINTS, body=body, checkpoint=str(checkpoint), methods=METHODS,
                     steps=args.tto_steps, max_samples=args.samples, keypoints=args.keypoints,
                     out=str(work / "eval" / name), device=args.device, progress=False, plots=False)
    return run_evaluation(cfg)


def curve_shape(curve: np.ndarray) -> dict[str, Any]:
    """How a mean curve moves with the steps: monotone (no rise above RISE_TOL_MM), its best step, the rise from
    the best to the last step (a U when > 1 mm), the total change."""
    c = np.asarray(curve, dtype=np.float64)
    rises = np.diff(c)
    best = int(np.nanargmin(c))
    return {"monotone": bool((rises <= RISE_TOL_MM).all()), "largest_rise_mm": float(rises.max(initial=0.0)),
            "best_step": best, "best_mm": float(c[best]), "rise_after_best_mm": float(c[-1] - c[best]),
            "change_mm": float(c[-1] - c[0])}


def analyse(reports: dict[str, Any]) -> dict[str, Any]:
    """Means, curves, paired differences and the verdict from the evaluation reports of the variants."""
    from metahmr_cli.evaluation import paired_difference

    index = reports["plain"].methods["none"].sample_index
    for name, rep in reports.items():
        for m in METHODS:
            if not np.array_equal(rep.methods[m].sample_index, index):
                raise RuntimeError(f"{name}/{m}: evaluated other samples than plain/none; the pairing would be wrong")

    def values(name: str, method: str, metric: str) -> np.ndarray:
        return np.asarray(reports[name].methods[method].values[metric], dtype=np.float64)

    table = {name: {m: {k: float(np.nanmean(values(name, m, k))) for k in METRICS} for m in METHODS}
             for name in reports}
    curves = {name: {m: {k: [float(v) for v in rep.methods[m].curve(k)] for k in METRICS} for m in METHODS}
              for name, rep in reports.items()}
    steps = {name: {m: float(np.nanmean(rep.methods[m].values["steps"])) for m in METHODS}
             for name, rep in reports.items()}

    comparisons: dict[str, dict[str, Any]] = {}

    def compare(key: str, text: str, a: tuple[str, str], b: tuple[str, str]) -> None:
        comparisons[key] = {"text": text, **{k: paired_difference(values(*a, k), values(*b, k)) for k in METRICS}}

    compare("meta+aux_vs_plain_tto", "meta + aux after TTO − plain after TTO", ("meta+aux", "metahmr"),
            ("plain", "metahmr"))
    compare("meta_vs_plain_tto", "meta (main only) after TTO − plain after TTO", ("meta", "metahmr"),
            ("plain", "metahmr"))
    compare("meta+aux_vs_meta_tto", "meta + aux after TTO − meta (main only) after TTO", ("meta+aux", "metahmr"),
            ("meta", "metahmr"))
    compare("meta+aux_vs_plain_eft", "meta + aux after TTO − plain + EFT", ("meta+aux", "metahmr"), ("plain", "eft"))
    compare("meta+aux_vs_plain_none", "meta + aux − plain, regression only", ("meta+aux", "none"), ("plain", "none"))
    for name in reports:
        compare(f"{name}_tto_gain", f"{VARIANTS[name]}: after TTO − regression only (its TTO gain)",
                (name, "metahmr"), (name, "none"))
    comparisons["gain_meta+aux_vs_plain"] = {
        "text": "TTO gain of meta + aux − TTO gain of plain (negative: meta + aux gains more)",
        **{k: paired_difference(values("meta+aux", "metahmr", k) - values("meta+aux", "none", k),
                                values("plain", "metahmr", k) - values("plain", "none", k)) for k in METRICS}}

    shapes = {name: {m: curve_shape(np.asarray(curves[name][m]["mpjpe"])) for m in ("eft", "metahmr")}
              for name in reports}
    better = comparisons["meta+aux_vs_plain_tto"]["mpjpe"]["hi"] < 0
    monotone = shapes["meta+aux"]["metahmr"]["monotone"]
    eft = shapes["plain"]["eft"]
    eft_flat_or_u = abs(eft["change_mm"]) < 1.0 or eft["rise_after_best_mm"] > 1.0
    return {"table": table, "curves": curves, "steps_mean": steps, "comparisons": comparisons,
            "curve_shapes": shapes,
            "verdict": {"meta+aux_better_after_tto": bool(better), "meta+aux_curve_monotone": bool(monotone),
                        "plain_eft_flat_or_u": bool(eft_flat_or_u),
                        "target_met": bool(better and monotone and eft_flat_or_u)},
            "num_samples": int(index.shape[0])}


# ----------------------------------------------------------------------------------------------- outputs


def _ci(d: dict[str, float]) -> str:
    return f"{d['mean']:+.1f} [{d['lo']:+.1f}, {d['hi']:+.1f}]"


def write_markdown(result: dict[str, Any], path: Path) -> None:
    """The tables of ``result`` (see :func:`analyse`) as Markdown."""
    a = result["analysis"]
    cfg = result["settings"]
    inner = result["inner_loop"]
    lines = [
        "# Ablation: meta-training and the auxiliary net on the open tier (paper Table 3 / Figure 3)",
        "",
        f"Recipe `{cfg['recipe']}` ({', '.join(f'{k}={v}' for k, v in cfg['set'].items()) or 'as is'}): "
        f"{cfg['steps']} steps per model, the first {cfg['warmup']} plain steps shared; "
        f"{a['num_samples']} held-out synthetic people, {cfg['keypoints']} keypoints, TTO ≤ {cfg['tto_steps']} "
        "steps. Inner loop (training and the start of the default TTO): "
        f"{inner['steps']} × {inner['optimizer']} lr {inner['lr']:g} on the {inner['scope']} "
        f"({inner['loss']}; `meta (main only)`: 2d).",
        "",
        "| model | none MPJPE | none PA | EFT MPJPE | EFT PA | TTO MPJPE | TTO PA | TTO steps |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, label in VARIANTS.items():
        t = a["table"][name]
        lines.append(f"| {label} | {t['none']['mpjpe']:.1f} | {t['none']['pa_mpjpe']:.1f} | {t['eft']['mpjpe']:.1f} | "
                     f"{t['eft']['pa_mpjpe']:.1f} | {t['metahmr']['mpjpe']:.1f} | {t['metahmr']['pa_mpjpe']:.1f} | "
                     f"{a['steps_mean'][name]['metahmr']:.1f} |")
    lines += ["", "Paired differences (mm, mean [95 % CI]; negative = the first is better):", "",
              "| comparison | MPJPE | PA-MPJPE |", "|---|---|---|"]
    for c in a["comparisons"].values():
        lines.append(f"| {c['text']} | {_ci(c['mpjpe'])} | {_ci(c['pa_mpjpe'])} |")
    lines += ["", "Curves (MPJPE after each step; monotone = no step raises the mean by more than "
              f"{RISE_TOL_MM} mm):", "",
              "| model | method | step 0 | step 1 | best (step) | last | monotone | rise after best |",
              "|---|---|---|---|---|---|---|---|"]
    for name, label in VARIANTS.items():
        for m in ("eft", "metahmr"):
            s = a["curve_shapes"][name][m]
            c = a["curves"][name][m]["mpjpe"]
            lines.append(f"| {label} | {m} | {c[0]:.1f} | {c[min(1, len(c) - 1)]:.1f} | {s['best_mm']:.1f} "
                         f"({s['best_step']}) | {c[-1]:.1f} | {'yes' if s['monotone'] else 'no'} | "
                         f"{s['rise_after_best_mm']:.2f} |")
    lines += ["", "(For metahmr, step 1 is the inner-loop update the model was trained for; steps 2+ the Adam "
              "refinement.)"]
    lines += ["", "Inner loop on training batches (relative weight change ‖w′−w‖/‖w‖ and outer-loss change per "
              "inner update; cosine of the plain and the meta gradient):", "",
              "| where | model | weight change | outer-loss change | gradient cosine |", "|---|---|---|---|---|"]
    for where, per_model in result["probe"].items():
        for name, p in per_model.items():
            lines.append(f"| {where} | {VARIANTS[name]} | {', '.join(f'{v:.2e}' for v in p['rel_weight_change'])} | "
                         f"{', '.join(f'{100 * v:+.2f} %' for v in p['rel_outer_change'])} | "
                         f"{p['grad_cosine']:.4f} |")
    v = a["verdict"]
    lines += ["", f"Target met: **{'yes' if v['target_met'] else 'no'}** (meta + aux better after TTO with the CI "
              f"below 0: {'yes' if v['meta+aux_better_after_tto'] else 'no'}; its TTO curve monotone: "
              f"{'yes' if v['meta+aux_curve_monotone'] else 'no'}; plain + EFT flat or U-shaped: "
              f"{'yes' if v['plain_eft_flat_or_u'] else 'no'}).", "",
              f"Times: {', '.join(f'{k} {v / 60:.1f} min' for k, v in result['seconds'].items())} "
              f"({result['machine']}).", "", f"Command: `{result['command']}`", "",
              "Curves: [ablation_curves.png](ablation_curves.png)."]
    path.write_text("\n".join(lines) + "\n")


def write_curves(result: dict[str, Any], path: Path) -> None:
    """MPJPE and PA-MPJPE after each TTO step (Figure 3): one line per model and method."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    a = result["analysis"]
    colours = {"plain": "tab:gray", "meta": "tab:blue", "meta+aux": "tab:red"}
    styles = {"eft": ("--", "s"), "metahmr": ("-", "o")}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, METRICS, strict=True):
        width = 1
        for name, label in VARIANTS.items():
            for m in ("eft", "metahmr"):
                c = a["curves"][name][m][metric]
                width = max(width, len(c))
                ls, mk = styles[m]
                ax.plot(np.arange(len(c)), c, ls, marker=mk, markersize=3, color=colours[name],
                        label=f"{label}, {'EFT' if m == 'eft' else 'Meta-HMR TTO'}")
            ax.axhline(a["table"][name]["none"][metric], color=colours[name], linestyle=":", linewidth=0.8)
        ax.set_xlabel("TTO step")
        ax.set_ylabel(f"{LABELS[metric]} (mm)")
        ax.set_title(LABELS[metric])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Open tier, {a['num_samples']} held-out people: error after each TTO step "
                 "(dotted: regression only)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="open_keypoints", help="training recipe (name or TOML); a keypoint model "
                    "trained on data = 'synthetic-keypoints'")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="recipe setting (as `metahmr train --set`), e.g. inner_lr=1e-4; repeatable")
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps per model (default: the recipe's)")
    ap.add_argument("--warmup", type=int, default=None, help="plain steps shared by the three models before they "
                    "part (default: the recipe's meta_warmup_steps)")
    ap.add_argument("--samples", type=int, default=300, help="held-out people (default 300)")
    ap.add_argument("--tto-steps", type=int, default=14, help="most TTO steps of EFT and the Adam refinement")
    ap.add_argument("--keypoints", default="detected", choices=["detected", "gt"],
                    help="2D keypoints of the TTO losses: the simulated detector (default) or exact projections")
    ap.add_argument("--probe-batches", type=int, default=4, help="training batches the inner loop is measured on")
    ap.add_argument("--parallel", type=int, default=1, help="train the three models in this many processes at once")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", default=None, help="runs, evaluations and caches (default runs/ablation)")
    ap.add_argument("--out", default=None, help="result files (default benchmarks/results; with --quick: "
                    "<work>/results)")
    ap.add_argument("--quick", action="store_true", help="a toy budget that runs in minutes (for the test)")
    args = ap.parse_args(argv)
    if args.quick:
        for key in ("steps", "warmup"):
            if getattr(args, key) is None:
                setattr(args, key, QUICK[key])
        for key in ("samples", "tto_steps", "probe_batches"):
            if getattr(args, key) == ap.get_default(key):
                setattr(args, key, QUICK[key])
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from metahmr_cli.cli.train import parse_set
    from metahmr_cli.training import recipe_config
    from metahmr_cli.training.config import SYNTHETIC_KEYPOINTS

    args = parse_args(argv)
    work = Path(args.work or "runs/ablation").expanduser()
    out = Path(args.out or (work / "results" if args.quick else REPO / "benchmarks" / "results")).expanduser()
    settings = {**(QUICK["set"] if args.quick else {}), **parse_set(args.set)}
    run_settings = {"progress": False, "export": None, "eval_every": 0, "device": args.device}
    base, source = recipe_config(args.recipe, overrides={**settings, **run_settings})
    if Path(source).is_file() and Path(source).resolve().is_relative_to(REPO):
        source = str(Path(source).resolve().relative_to(REPO))  # the same text on every checkout
    if base.data != SYNTHETIC_KEYPOINTS:
        raise SystemExit(f"recipe {source} trains on {base.data!r}; the ablation evaluates on the held-out synthetic "
                         "people and needs a keypoint model (data = 'synthetic-keypoints').")
    total = int(args.steps if args.steps is not None else base.max_steps)
    warmup = int(args.warmup if args.warmup is not None else base.meta_warmup_steps)
    if not 0 <= warmup < total:
        raise SystemExit(f"--warmup {warmup} must be >= 0 and below the budget --steps {total}.")
    base = dataclasses.replace(base, max_steps=total, meta_warmup_steps=warmup)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    fork = train_shared(base, warmup, work)
    seconds["shared warm-up"] = time.perf_counter() - t0
    finals = {}
    t0 = time.perf_counter()
    if args.parallel > 1:
        # one process per run: on a machine shared with other jobs the runs get their share of the cores together
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.parallel, mp_context=multiprocessing.get_context("spawn")) as pool:
            jobs = {name: pool.submit(train_variant, name, base, fork, total, work) for name in VARIANTS}
            finals = {name: job.result() for name, job in jobs.items()}
        seconds["train (parallel)"] = time.perf_counter() - t0
    else:
        for name in VARIANTS:
            t0 = time.perf_counter()
            finals[name] = train_variant(name, base, fork, total, work)
            seconds[f"train {name}"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    probes: dict[str, dict[str, Any]] = {}
    for where, ckpt in (("fork", fork), ("end", None)):
        probes[where] = {}
        for name in ("meta", "meta+aux"):
            point = ckpt if ckpt is not None else finals[name]
            if point is None:
                continue
            probes[where][name] = probe(point, _run_config(base, variant_overrides(name, warmup, total), None),
                                        args.probe_batches, args.device)
    probes = {k: v for k, v in probes.items() if v}
    seconds["probe"] = time.perf_counter() - t0
    reports = {}
    for name in VARIANTS:
        t0 = time.perf_counter()
        reports[name] = evaluate(name, finals[name], base.body, args, work)
        seconds[f"eval {name}"] = time.perf_counter() - t0

    result = {
        "settings": {"recipe": source, "set": settings, "steps": total, "warmup": warmup, "samples": args.samples,
                     "tto_steps": args.tto_steps, "keypoints": args.keypoints, "quick": bool(args.quick),
                     "device": args.device},
        "inner_loop": base.inner_loop().to_record(),
        "checkpoints": {name: str(p) for name, p in finals.items()},
        "probe": probes,
        "analysis": analyse(reports),
        "seconds": seconds,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, device "
                   f"{args.device}",
        "command": "python benchmarks/ablation.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    (out / "ablation.json").write_text(json.dumps(result, indent=2))
    write_markdown(result, out / "ablation.md")
    write_curves(result, out / "ablation_curves.png")
    print((out / "ablation.md").read_text())
    return result


if __name__ == "__main__":
    main()
