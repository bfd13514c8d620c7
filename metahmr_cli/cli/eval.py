"""``metahmr eval``: MPJPE / PA-MPJPE / PVE of regression, EFT and Meta-HMR TTO on a test set."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from metahmr_cli.cli.common import print_error
from metahmr_cli.errors import MetaHMRError

EPILOG = """\
Examples:

  metahmr eval --dataset 3dpw --checkpoint weights/checkpoints/cliff_hrnet_3dpw.pt --keypoints openpose

  metahmr eval --dataset 3dpw --checkpoint cliff_hrnet_3dpw.pt --tto reference
  (the released evaluation that produced the paper's tables: one shared weight copy per batch of 20)

  metahmr eval --dataset h36m --checkpoint cliff_hrnet_h36m.pt --tto none,eft,metahmr --steps 14 --out runs/h36m

  metahmr eval --dataset synthetic-keypoints --checkpoint metahmr_cli/models/open_data/metahmr_open_keypoints.pt \
--body open --tto none,eft,metahmr   (the open model on its held-out synthetic people)

  metahmr eval --dataset data/synth/synth_test.npz --checkpoint ckpt.pt --body open --max-samples 50

Datasets: 3dpw (= 3dpw-test), h36m (= h36m-p2), h36m-p1, mpi-inf-3dhp (= mpi-inf-3dhp-test), any name of the \
datasets config (--datasets-config), a path to a SPIN-format .npz, or synthetic-keypoints (the open model's \
held-out synthetic people; --max-samples of them, default 1000).

The Meta-HMR methods start with the inner loop the checkpoint records (the update the networks were \
meta-trained for; the released one, SGD 1e-5 on the head, for files without a record). A config file can set \
another one: [inner_loop] optimizer = "adam", lr = 1e-4 (--config FILE).

Writes report.json, report.md, per_sample.csv, stepwise.csv/.png (metrics after every TTO step) and \
per_joint.csv/.png into --out. Results are cached per batch under OUT/cache: an interrupted run resumes.
"""


HELP = {
    "dataset": "h36m | 3dpw | mpi-inf-3dhp | a datasets-config name | PATH.npz",
    "checkpoint": "Meta-HMR release, official CLIFF, SPIN or metahmr checkpoint (default: the HRNet release "
                  "for the dataset, cliff_hrnet_h36m.pt or cliff_hrnet_3dpw.pt, from the weights folder).",
    "tto": "Comma-separated methods: none, eft, metahmr, reference, paper (default: none,eft,metahmr,reference).",
    "steps": "Most TTO updates per method (default: each method's own, printed with its numbers: 20 for eft, EFT's "
             "maximum; 14 for metahmr, reference and paper).",
    "scope": "Adapted weights: head | last_stage | all (default: each schedule's own).",
    "grouping": "person | batch (one weight copy per loader batch); default: each schedule's own (batch of 20 "
                "for reference, person for the others).",
    "optimizer": "Optimiser of the adapted phase: sgd | adam (default: each schedule's own).",
    "lr": "Learning rate of the adapted phase (default: each schedule's own).",
    "batch_size": "Loader batch, and the group with --grouping batch (default 20).",
    "keypoints": "2D joints driving TTO: gt (default) | openpose | detected (npz key keypoints_detected).",
    "baseline_net": "Network run by none/eft: main (default) | aux (the paper's CLIFF/EFT baselines).",
    "h36m_gt": "Human3.6M GT joints: mesh (released Meta-HMR; default) | S (SPIN).",
    "gt_source": "Override the GT source for any dataset: mesh | S.",
    "pve_alignment": "PVE alignment: none (released; default) | pelvis.",
    "gender_rule": "GT body: released ('m' or no gender key: male, else female) | neutral ('m' male, 'f' female, "
                   "else or no key neutral); default: released for 3DPW/H36M/MPI-INF-3DHP, neutral for other files.",
    "out": "Output folder of the report (default runs/eval).",
    "body": "Body model: smpl (default) | open | standin | PATH to a body-model folder.",
    "max_samples": "Evaluate only the first N samples.",
    "device": "auto (default) | cpu | cuda | cuda:N.",
    "dtype": "float32 (default) | float64.",
    "seed": "Random seed (default 2023, as the released evaluation).",
    "data_config": "Datasets config (TOML/JSON) naming the data root and files.",
    "image_root": "Override the dataset's image folder.",
    "cache_dir": "Per-batch result cache (default OUT/cache).",
    "resume": "Reuse cached batches (default: resume).",
    "workers": "Data-loader worker processes (default 0).",
    "progress": "Show a progress bar (default: on).",
    "plots": "Write the stepwise and per-joint PNG figures (default: on).",
    "config": "EvalConfig file (TOML/JSON); flags given on the command line override it.",
}


def _split_methods(value: str) -> tuple[str, ...]:
    return tuple(m.strip().lower() for m in value.split(",") if m.strip())


def register(app: typer.Typer) -> None:
    """Add ``metahmr eval`` to the root app."""

    @app.command("eval", epilog=EPILOG, no_args_is_help=True)
    def eval_command(
        dataset: str = typer.Option(..., "--dataset", "-d", help=HELP["dataset"]),
        checkpoint: Path | None = typer.Option(None, "--checkpoint", "-c", help=HELP["checkpoint"]),
        tto: str | None = typer.Option(None, "--tto", help=HELP["tto"]),
        steps: int | None = typer.Option(None, "--steps", help=HELP["steps"]),
        scope: str | None = typer.Option(None, "--scope", help=HELP["scope"]),
        grouping: str | None = typer.Option(None, "--grouping", help=HELP["grouping"]),
        optimizer: str | None = typer.Option(None, "--optimizer", help=HELP["optimizer"]),
        lr: float | None = typer.Option(None, "--lr", help=HELP["lr"]),
        batch_size: int | None = typer.Option(None, "--batch-size", "-b", help=HELP["batch_size"]),
        keypoints: str | None = typer.Option(None, "--keypoints", help=HELP["keypoints"]),
        baseline_net: str | None = typer.Option(None, "--baseline-net", help=HELP["baseline_net"]),
        h36m_gt: str | None = typer.Option(None, "--h36m-gt", help=HELP["h36m_gt"]),
        gt_source: str | None = typer.Option(None, "--gt-source", help=HELP["gt_source"]),
        pve_alignment: str | None = typer.Option(None, "--pve-alignment", help=HELP["pve_alignment"]),
        gender_rule: str | None = typer.Option(None, "--gender-rule", help=HELP["gender_rule"]),
        out: Path | None = typer.Option(None, "--out", "-o", help=HELP["out"]),
        body: str | None = typer.Option(None, "--body", help=HELP["body"]),
        max_samples: int | None = typer.Option(None, "--max-samples", "-n", help=HELP["max_samples"]),
        device: str | None = typer.Option(None, "--device", help=HELP["device"]),
        dtype: str | None = typer.Option(None, "--dtype", help=HELP["dtype"]),
        seed: int | None = typer.Option(None, "--seed", help=HELP["seed"]),
        data_config: Path | None = typer.Option(None, "--datasets-config", "--data-config",
                                                  help=HELP["data_config"]),
        image_root: Path | None = typer.Option(None, "--image-root", help=HELP["image_root"]),
        cache_dir: Path | None = typer.Option(None, "--cache-dir", help=HELP["cache_dir"]),
        resume: bool | None = typer.Option(None, "--resume/--no-resume", help=HELP["resume"]),
        workers: int | None = typer.Option(None, "--workers", help=HELP["workers"]),
        progress: bool | None = typer.Option(None, "--progress/--no-progress", help=HELP["progress"]),
        plots: bool | None = typer.Option(None, "--plots/--no-plots", help=HELP["plots"]),
        config: Path | None = typer.Option(None, "--config", help=HELP["config"]),
    ) -> None:
        """Evaluate regression, EFT and Meta-HMR test-time optimisation: MPJPE, PA-MPJPE, PVE (mm)."""
        from metahmr_cli.config import build_config
        from metahmr_cli.evaluation.reports import rich_table
        from metahmr_cli.evaluation.runner import EvalConfig, run_evaluation

        console = Console()
        err = Console(stderr=True)
        if keypoints is None and dataset == "synthetic-keypoints":
            keypoints = "detected"  # the simulated detector, as the open model meets it in photos
        try:
            cfg = build_config(
                EvalConfig,
                config,
                dataset=dataset,
                checkpoint=None if checkpoint is None else str(checkpoint),
                methods=None if tto is None else _split_methods(tto),
                steps=steps,
                scope=scope,
                grouping=grouping,
                optimizer=optimizer,
                lr=lr,
                batch_size=batch_size,
                keypoints=keypoints,
                baseline_net=baseline_net,
                h36m_gt=h36m_gt,
                gt_source=gt_source,
                pve_alignment=pve_alignment,
                gender_rule=gender_rule,
                out=None if out is None else str(out),
                body=body,
                max_samples=max_samples,
                device=device,
                dtype=dtype,
                seed=seed,
                datasets_config=None if data_config is None else str(data_config),
                image_root=None if image_root is None else str(image_root),
                cache_dir=None if cache_dir is None else str(cache_dir),
                resume=resume,
                num_workers=workers,
                progress=progress,
                plots=plots,
            )
            report = run_evaluation(cfg)
        except MetaHMRError as exc:
            print_error(err, exc)
            raise typer.Exit(code=2) from exc
        console.print(rich_table(report))
        for name, res in report.methods.items():
            cached = report.from_cache.get(name, 0)
            if cached:
                console.print(f"[dim]{name}: {cached} of {res.num_samples} samples from the cache[/]")
        console.print(f"report: {report.files.get('report_md')}  (json, csv and plots beside it)")
