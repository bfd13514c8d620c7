"""``metahmr doctor``: what this machine can do (torch/CUDA, renderer, ffmpeg, optional backends) and where the
assets set-up installed are found."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table


@dataclass
class Check:
    """One line of the doctor report."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


def _module_version(name: str) -> str | None:
    """Installed version of a module, found without importing it (some backends are slow or noisy to import)."""
    if importlib.util.find_spec(name) is None:
        return None
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "installed"


def check_torch() -> list[Check]:
    """torch, torchvision, CUDA devices and bf16 support."""
    out: list[Check] = []
    try:
        import torch
    except Exception as exc:  # pragma: no cover - torch is a dependency
        return [Check("torch", False, f"import failed: {exc}", "pip install torch torchvision")]
    out.append(Check("torch", True, f"{torch.__version__} (threads: {torch.get_num_threads()})"))
    try:
        import torchvision
        from torchvision.ops import nms

        nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
        out.append(Check("torchvision", True, torchvision.__version__))
    except Exception as exc:
        out.append(Check("torchvision", False, f"{exc}", "install a torchvision that matches your torch"))
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        bf16 = torch.cuda.is_bf16_supported()
        out.append(Check("cuda", True, f"{len(names)} device(s): {', '.join(names)}; bf16={bf16}"))
    elif torch.version.cuda:  # a CUDA build without a usable GPU: the build is fine, the machine has no device
        out.append(Check("cuda", False, f"torch is built for CUDA {torch.version.cuda}, but no CUDA device is visible: "
                                        "everything runs on the CPU (slower)",
                         "check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES"))
    else:
        out.append(Check("cuda", False, "this torch is a CPU-only build: everything runs on the CPU (slower)",
                         "on a GPU machine install torch's CUDA build (pytorch.org/get-started)"))
    return out


RENDER_CHECK_SECONDS = 300
"""Longest wait for the offscreen render check (seconds 1-3 normally; tens of seconds on a loaded 2-core machine)."""
FFMPEG_CHECK_SECONDS = 120
"""Longest wait for ``ffmpeg -version``."""


def check_renderer() -> Check:
    """Try an offscreen pyrender context (EGL first, as used by ``process``)."""
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    code = (
        "import numpy as np\n"
        "if not hasattr(np, 'infty'): np.infty = np.inf\n"
        "import pyrender, trimesh\n"
        "scene = pyrender.Scene()\n"
        "scene.add(pyrender.Mesh.from_trimesh(trimesh.creation.box(extents=(1, 1, 1))), pose=np.eye(4))\n"
        "cam = np.eye(4); cam[2, 3] = 3.0\n"
        "scene.add(pyrender.PerspectiveCamera(yfov=1.0), pose=cam)\n"
        "r = pyrender.OffscreenRenderer(32, 32)\n"
        "color, depth = r.render(scene)\n"
        "r.delete()\n"
        "assert (depth > 0).any(), 'rendered nothing'\n"
    )
    env = dict(os.environ)
    try:
        # generous: only a hung EGL initialisation should end here, not a Python start on a busy machine
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              timeout=RENDER_CHECK_SECONDS)
    except subprocess.TimeoutExpired:
        return Check("renderer", False, "pyrender offscreen timed out", "renders will be skipped")
    if proc.returncode == 0:
        return Check("renderer", True, f"pyrender offscreen ({env['PYOPENGL_PLATFORM']})")
    last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
    return Check("renderer", False, f"pyrender offscreen failed: {last}",
                 "pip install 'metahmr[render]'; EGL needs libEGL (Mesa or the NVIDIA driver); "
                 "process still runs with renders disabled")


def check_ffmpeg() -> Check:
    """The ffmpeg binary bundled with imageio-ffmpeg (videos in and out)."""
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        proc = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=FFMPEG_CHECK_SECONDS)
        first = proc.stdout.splitlines()[0] if proc.stdout else exe
        return Check("ffmpeg", proc.returncode == 0, first)
    except Exception as exc:
        return Check("ffmpeg", False, str(exc), "pip install imageio-ffmpeg (videos need it)")


def check_backends() -> list[Check]:
    """Optional detectors and keypoint backends."""
    table = [
        ("ultralytics", "detector + yolo pose (AGPL-3.0)", "pip install 'metahmr[detect]'"),
        ("rtmlib", "RTMPose keypoints", "pip install 'metahmr[keypoints]'"),
        ("onnxruntime", "ONNX runtime for RTMPose", "pip install 'metahmr[keypoints]'"),
        ("mediapipe", "mediapipe pose keypoints (works offline)", "pip install 'metahmr[keypoints]'"),
        ("mmpose", "mmpose keypoints (optional, bring your own install)", "see mmpose's install guide"),
        ("smplx", "SMPL layer", "pip install smplx"),
        ("trimesh", "mesh export", "pip install trimesh"),
        ("tensorboard", "training logs", "pip install 'metahmr[train]'"),
        ("ray", "process --backend ray (many GPUs and machines)", "pip install 'metahmr[ray]'"),
    ]
    out = []
    for module, what, fix in table:
        version = _module_version(module)
        out.append(Check(module, version is not None, f"{what}: {version or 'not installed'}", "" if version else fix))
    return out


def check_tiers() -> list[Check]:
    """The assets of the two tiers: which one ``process --model auto`` would run, and what each is missing."""
    from metahmr_cli import assets
    from metahmr_cli.errors import AssetNotFoundError

    def found(name: str) -> bool:
        return assets.find_asset(name).found is not None

    try:
        assets.body_dir("smpl", create_standin=False)
        smpl = True
    except AssetNotFoundError:
        smpl = False
    release = found("metahmr_cliff_hrnet_3dpw")
    paper_missing = [n for n, ok in (("SMPL", smpl), ("Meta-HMR release", release), ("YOLO", found("detector")),
                                     ("RTMPose", found("keypoints_rtmpose"))) if not ok]
    open_missing = [n for n, ok in (("open body", found("open_body")), ("open model", found("open_model")),
                                    ("MoveNet", found("keypoints_movenet_multipose")),
                                    ("MoveNet Thunder", found("keypoints_movenet_thunder")),
                                    ("CenterNet", found("detector_centernet"))) if not ok]
    paper = Check("paper tier", not paper_missing,
                  "SMPL + Meta-HMR release + YOLO + RTMPose: " + ("installed" if not paper_missing else
                                                                 "missing " + ", ".join(paper_missing)),
                  "" if not paper_missing else "metahmr weights status (where each file goes)")
    opened = Check("open tier", not open_missing,
                   "open body + open model (bundled) + MoveNet, MoveNet Thunder, CenterNet: "
                   + ("installed" if not open_missing else "missing " + ", ".join(open_missing)),
                   "" if not open_missing else "metahmr weights fetch-open")
    auto = "paper" if smpl and release else "open"
    return [paper, opened, Check("process --model auto", True, f"runs the {auto} tier")]


def check_setup_assets() -> list[Check]:
    """Where the open tier's files were found (bundled, ./weights, $METAHMR_HOME, the set-up record, ...), and what
    the set-up record lists (``metahmr weights fetch-open`` writes it)."""
    from metahmr_cli import assets

    out: list[Check] = []
    for name, label, fix in (("open_body", "open body", "reinstall metahmr"),
                             ("open_model", "open model", "reinstall metahmr"),
                             ("keypoints_movenet_multipose", "MoveNet", "metahmr weights fetch-open")):
        lookup = assets.find_asset(name)
        if lookup.found is not None:
            out.append(Check(label, True, f"{lookup.found} [{lookup.found_in}]"))
        else:
            places = sorted({str(p.parent) for _, p in lookup.searched})
            out.append(Check(label, False, "not found; looked in " + ", ".join(places), fix))
    record = assets.setup_record_path()
    installs = assets.setup_installs()
    if installs:
        listed = "; ".join(f"{i.folder} ({i.what}, {i.source}{'' if i.folder.is_dir() else ', folder missing'})"
                           for i in installs)
        out.append(Check("set-up record", True, f"{record}: {listed}"))
    else:
        out.append(Check("set-up record", False, f"{record}: nothing recorded (assets are found only in the folders "
                                                 "above, ./weights relative to the current folder)",
                         "metahmr weights fetch-open (records what it installs)"))
    return out


def run_checks(render: bool = True) -> list[Check]:
    """All checks, in report order."""
    checks = [Check("python", True, f"{platform.python_version()} on {platform.platform()}")]
    checks += check_torch()
    if render:
        checks.append(check_renderer())
    checks.append(check_ffmpeg())
    checks += check_backends()
    checks += check_tiers()
    checks += check_setup_assets()
    return checks


def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    no_render: bool = typer.Option(False, "--no-render", help="Skip the (slower) renderer check."),
) -> None:
    """Report torch/CUDA, the rendering backend, ffmpeg, which optional backends are usable, and where the open
    tier's files (bundled, and what `metahmr weights fetch-open` installed) are found."""
    checks = run_checks(render=not no_render)
    if as_json:
        typer.echo(json.dumps([asdict(c) for c in checks], indent=2))
        return
    table = Table(title="metahmr doctor")
    table.add_column("check")
    table.add_column("")
    table.add_column("detail", overflow="fold")
    table.add_column("fix", overflow="fold")
    for c in checks:  # details and fixes are plain text: "[render]" in a pip extra is not markup
        table.add_row(escape(c.name), "[green]ok[/]" if c.ok else "[yellow]no[/]", escape(c.detail), escape(c.fix))
    Console().print(table)
    Console().print("Assets (weights, SMPL, checkpoints): run `metahmr weights status`.")


def register(app: typer.Typer) -> None:
    """Add the ``doctor`` command to the root app."""
    app.command("doctor", epilog="Example:\n\n  metahmr doctor --no-render")(doctor)
