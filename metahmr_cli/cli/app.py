"""The ``metahmr`` command: one Typer app; each command group lives in its own thin module."""

from __future__ import annotations

import importlib
import logging
import os
import sys

import typer
from rich.console import Console
from rich.logging import RichHandler

from metahmr_cli import __version__
from metahmr_cli.cli.common import print_error
from metahmr_cli.errors import MetaHMRError

EPILOG = """\
Examples:

  metahmr process ./photos --out results/              # meshes, overlays and a manifest for every photo

  metahmr process clip.mp4 --out results/ --tto reference

  metahmr train --recipe train/cliff_hrnet.toml         # the paper's dual-network meta-training

  metahmr eval --dataset 3dpw --checkpoint weights/checkpoints/cliff_hrnet_3dpw.pt

  metahmr weights status                                # what is installed, what is missing, how to get it

  metahmr doctor                                        # torch/CUDA, renderer, ffmpeg, optional backends
"""

COMMAND_MODULES = ("process", "train", "eval", "data", "weights", "doctor")

console = Console(stderr=True)

app = typer.Typer(
    name="metahmr",
    help="Recover 3D human meshes (SMPL) from photos and videos with Meta-HMR, and train and evaluate the networks.",
    epilog=EPILOG,
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"metahmr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-v info, -vv debug)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Recover 3D human meshes (SMPL) from photos and videos with Meta-HMR."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(
        level=level, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)], force=True
    )


def _hide_flag_placeholders() -> None:
    """typer (>= 0.2x, with its own copy of click) shows a ``<bool>`` value placeholder beside on/off flags such as
    ``--overwrite`` or ``--render/--no-render``, which take no value: show none."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "_metahmr_flags", False):
        return

    def display_type_rich(self: TyperOption, ctx: typer.Context) -> str | None:
        if getattr(self, "is_flag", False) and not getattr(self, "count", False):
            return None
        return shown(self, ctx)

    display_type_rich._metahmr_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_hide_flag_placeholders()

for _name in COMMAND_MODULES:
    _module = importlib.import_module(f"metahmr_cli.cli.{_name}")
    _module.register(app)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the app and turns metahmr's own errors into clean messages (exit code 2)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    try:
        app(args=argv, standalone_mode=True)
    except MetaHMRError as exc:
        print_error(console, exc)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
