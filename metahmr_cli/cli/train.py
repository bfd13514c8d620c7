"""``metahmr train``: meta-train the main and auxiliary networks (recipes in ``train/*.toml``)."""

from __future__ import annotations

import tomllib
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from metahmr_cli.errors import ConfigError

EPILOG = (
    "Examples:\n\n"
    "  metahmr train --recipe train/cliff_hrnet.toml --datasets-config datasets.toml   # the paper's main run\n\n"
    "  metahmr train --backbone resnet --dry-run          # CLIFF-R50 recipe: show the plan, list missing files\n\n"
    "  metahmr train --recipe train/finetune_3dpw.toml --init-from runs/cliff_hrnet/checkpoints/last.pt\n\n"
    "  metahmr train --resume runs/cliff_hrnet            # continue exactly where the run stopped\n\n"
    "  metahmr train --resume runs/cliff_hrnet --wait     # the run is still going: wait for it, then continue\n\n"
    "  metahmr train --recipe train/cliff_hrnet.toml --nproc-per-node 4   # 4 GPUs (batch per GPU)\n\n"
    "  metahmr train --backbone resnet_tiny --data data/synth/synth_train.npz --body standin "
    "--set syn_occ=false --max-steps 200 --batch-size 8   # toy run on synthetic data\n\n"
    "Data preparation: train/README.md. Settings: any TrainConfig field with --set KEY=VALUE "
    "(e.g. --set grouping=sample --set aux_mode=paper --set loss_weights.keypoint_3d=5)."
)


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` settings (values parsed as TOML when they parse, else kept as strings) -> overrides."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set '{item}': use KEY=VALUE (e.g. --set grouping=sample).")
        key, raw = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        out[key.strip()] = value
    return out


def _print_plan(plan: Any, console: Console, source: str) -> None:
    table = Table(title=f"training plan (recipe: {source})", show_lines=False)
    table.add_column("section", style="cyan")
    table.add_column("item")
    table.add_column("value", overflow="fold")
    for section, label, value in plan.rows:
        table.add_row(section, escape(str(label)), escape(str(value)))
    console.print(table)
    if plan.problems:
        console.print(f"[bold red]{len(plan.problems)} problem(s):[/]")
        for p in plan.problems:
            console.print(f"  - {p}", highlight=False, markup=False)
    else:
        console.print("[green]all files found; ready to train.[/]")


def train_command(
    recipe: str | None = typer.Option(None, "--recipe", "-r", help="Recipe TOML (train/*.toml) or built-in name: "
                                      "cliff_hrnet, cliff_resnet, hmr_resnet, finetune_3dpw."),
    backbone: str | None = typer.Option(None, "--backbone", help="hrnet | resnet | resnet_tiny (without --recipe: "
                                        "picks the paper recipe of that backbone)."),
    arch: str | None = typer.Option(None, "--arch", help="cliff | hmr."),
    datasets_config: str | None = typer.Option(None, "--datasets-config", help="Datasets TOML "
                                               "(see train/datasets.example.toml)."),
    data: str | None = typer.Option(None, "--data", help="Mix preset wo3dpw | w3dpw, a custom mix "
                                    "'h36m=0.5,coco+mpii=0.5', a dataset name or an npz path."),
    body: str | None = typer.Option(None, "--body", help="Body model: smpl | open | standin | a folder."),
    out: str | None = typer.Option(None, "--out", "-o", help="Run folder (runs/x; never overwritten: runs/x2 ...)."),
    resume: str | None = typer.Option(None, "--resume", help="Checkpoint file or run folder to continue exactly."),
    init_main: str | None = typer.Option(None, "--init-main", help="Backbone initialisation of the main net "
                                         "(pose_hrnet_w48_256x192.pth / pose_resnet.pth or an asset name)."),
    init_aux: str | None = typer.Option(None, "--init-aux", help="Auxiliary net checkpoint (official CLIFF / SPIN "
                                        "file, or a Meta-HMR checkpoint's model_aux)."),
    init_from: str | None = typer.Option(None, "--init-from", help="Start both nets from a Meta-HMR release or a "
                                         "metahmr checkpoint (fine-tuning)."),
    batch_size: int | None = typer.Option(None, "--batch-size", "-b", min=1, help="Samples per step per process."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Number of epochs."),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Stop after this many optimiser steps."),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N."),
    nproc: int | None = typer.Option(None, "--nproc-per-node", min=1, help="Processes (GPUs) on this machine."),
    set_: list[str] | None = typer.Option(None, "--set", help="Any TrainConfig field: KEY=VALUE (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved plan and check every path; "
                                 "do not train."),
    config: str | None = typer.Option(None, "--config", help="TOML/JSON file of TrainConfig fields, applied over "
                                      "the recipe (flags override it)."),
    wait: bool = typer.Option(False, "--wait", help="When another run is using the run folder (a resume of a live "
                              "run), wait for it to end instead of stopping."),
) -> None:
    """Meta-train Meta-HMR (main + auxiliary network) or fine-tune / resume a run."""
    from metahmr_cli.training import config_for_resume, recipe_config, train
    from metahmr_cli.training.plan import plan_run

    console = Console(stderr=True)
    overrides: dict[str, Any] = {
        "arch": arch, "datasets_config": datasets_config, "data": data, "body": body, "out": out,
        "init_backbone": init_main, "init_aux": init_aux, "init_from": init_from, "batch_size": batch_size,
        "epochs": epochs, "max_steps": max_steps, "device": device, "nproc": nproc,
    }
    if config is not None:
        from metahmr_cli.config import load_config_file

        file_values = load_config_file(config)
        overrides = {**file_values, **{k: v for k, v in overrides.items() if v is not None}}
    overrides.update(parse_set(set_))
    if resume:
        if recipe or backbone:
            console.print("[yellow]--resume uses the configuration stored in the checkpoint; --recipe/--backbone "
                          "are ignored.[/]")
        cfg = config_for_resume(resume, overrides)
        source = f"checkpoint {cfg.resume}"
    else:
        cfg, source = recipe_config(recipe, backbone, overrides)
    if dry_run:
        plan = plan_run(cfg)
        _print_plan(plan, console, source)
        raise typer.Exit(code=0 if plan.ok else 2)
    result = train(cfg, wait=wait)
    if result is not None:
        console.print(f"[green]done:[/] {result.steps} steps, epoch {result.epoch}; run folder {result.run_dir}; "
                      f"last checkpoint {result.last_checkpoint}", highlight=False)
        if result.skipped_steps:
            console.print(f"[yellow]{result.skipped_steps} step(s) skipped for non-finite gradients.[/]")


def register(app: typer.Typer) -> None:
    """Add ``metahmr train`` to the root app."""
    app.command("train", help="Meta-train Meta-HMR networks (recipes in train/*.toml; see train/README.md).",
                epilog=EPILOG, no_args_is_help=False)(train_command)
