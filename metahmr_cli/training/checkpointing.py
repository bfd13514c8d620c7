"""Training checkpoints: networks in the released layouts plus everything an exact resume needs.

A checkpoint is the Meta-HMR release form (``model`` and ``model_aux`` in the released key layouts, written by
:func:`metahmr_cli.models.save_networks`, so :func:`metahmr_cli.models.load_networks`, ``metahmr process`` and
``metahmr eval`` read it) with these extra entries:

- ``optimizer``: the optimiser state dict (two param groups: main, aux);
- ``epoch``, ``batch_idx`` (next batch of that epoch), ``total_step_count`` (optimiser steps done),
  ``batch_size`` (per process), ``world_size``;
- ``sampler``: {"seed", "epoch", "position"}: the data order is a function of (seed, epoch) and the position a
  batch index, so resuming needs no replay;
- ``rng``: python / numpy / torch / cuda generator states;
- ``config``: the :class:`TrainConfig` as a dict; ``format``: "metahmr-train/1";
- ``inner_loop``: the run's :class:`metahmr_cli.tto.InnerLoop` (what ``process`` and ``eval`` start test-time
  optimisation with).

Files are written to a temporary name and renamed (atomic); ``last.pt`` is a hard link to the newest one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..files import TEMP_MARKER, atomic_path
from ..models import Regressor, load_layout_state_dict, load_torch_file, save_networks
from ..models.checkpoints import detect_network
from ..tto.config import InnerLoop

__all__ = [
    "CHECKPOINT_FORMAT",
    "capture_rng_state",
    "checkpoint_dir",
    "clean_stale_temp_files",
    "load_training_checkpoint",
    "restore_networks",
    "restore_rng_state",
    "resolve_resume_path",
    "save_training_checkpoint",
    "unique_run_dir",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "metahmr-train/1"
LAST_NAME = "last.pt"


def capture_rng_state() -> dict[str, Any]:
    """States of the python, numpy, torch and CUDA generators (weights-only serialisable)."""
    py = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {"name": str(np_state[0]), "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (missing parts are left alone)."""
    if "python" in state:
        v, internal, gauss = state["python"]
        random.setstate((int(v), tuple(int(x) for x in internal), gauss))
    if "numpy" in state:
        s = state["numpy"]
        keys = np.asarray(s["keys"].numpy() if isinstance(s["keys"], torch.Tensor) else s["keys"], dtype=np.uint32)
        np.random.set_state((s["name"], keys, int(s["pos"]), int(s["has_gauss"]), float(s["cached"])))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([c.cpu() for c in cuda])


def checkpoint_dir(run_dir: str | Path) -> Path:
    """``<run>/checkpoints``."""
    return Path(run_dir) / "checkpoints"


_TEMP_NAMES = (
    re.compile(r"^\.(?P<name>.+)" + re.escape(TEMP_MARKER) + r"(?P<pid>\d+)-[0-9a-f]+(\.[^.]*)?$"),  # atomic_path
    re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)$"),  # written by earlier versions
)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale_temp_files(folder: str | Path) -> list[Path]:
    """Remove checkpoint temp files (those of :func:`metahmr_cli.files.atomic_path`, and ``.<name>.tmp-<pid>``
    of earlier versions) whose writing process is gone (a SIGKILL mid-save); files of live processes are kept.
    Returns the removed paths."""
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        m = next((m for m in (r.match(path.name) for r in _TEMP_NAMES) if m), None)
        if m and path.is_file() and not _pid_alive(int(m["pid"])):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def save_training_checkpoint(run_dir: str | Path, main: Regressor, aux: Regressor | None,
                             optimizer: torch.optim.Optimizer, *, step: int, epoch: int, batch_idx: int,
                             batch_size: int, world_size: int, seed: int, config: Mapping[str, Any],
                             name: str | None = None, inner_loop: InnerLoop | None = None) -> Path:
    """Write ``<run>/checkpoints/step_XXXXXXXX.pt`` atomically and point ``last.pt`` at it.

    Args:
        step: optimiser steps done; epoch / batch_idx: where the next step's batch comes from.
        inner_loop: the run's inner loop, recorded for test-time optimisation (None: not recorded).
    Returns:
        the written file.
    """
    folder = checkpoint_dir(run_dir)
    path = folder / (name or f"step_{int(step):08d}.pt")
    extra = {
        "format": CHECKPOINT_FORMAT,
        "optimizer": optimizer.state_dict(),
        "epoch": int(epoch),
        "batch_idx": int(batch_idx),
        "total_step_count": int(step),
        "batch_size": int(batch_size),
        "world_size": int(world_size),
        "sampler": {"seed": int(seed), "epoch": int(epoch), "position": int(batch_idx)},
        "rng": capture_rng_state(),
        "config": dict(config),
    }
    if inner_loop is not None:
        extra["inner_loop"] = inner_loop.to_record()
    save_networks(path, main, aux, extra=extra)
    with atomic_path(folder / LAST_NAME) as tmp:
        try:
            os.link(path, tmp)
        except OSError:  # no hard links on this file system: a copy
            shutil.copyfile(path, tmp)
    log.info("checkpoint %s (step %d)", path, step)
    return path


def resolve_resume_path(path: str | Path) -> Path:
    """A checkpoint file, or a run folder (-> ``checkpoints/last.pt``)."""
    p = Path(path).expanduser()
    if p.is_dir():
        cand = checkpoint_dir(p) / LAST_NAME
        if not cand.is_file():
            cand = p / LAST_NAME
        if not cand.is_file():
            raise CheckpointError(f"--resume {p}: no checkpoints/{LAST_NAME} in this run folder; pass a checkpoint "
                                  "file (runs/x/checkpoints/step_XXXXXXXX.pt) or the folder of a run.")
        return cand
    if not p.is_file():
        raise CheckpointError(f"--resume {p}: no such checkpoint file or run folder.")
    return p


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint (weights-only) and check that it can be resumed."""
    obj = load_torch_file(path)
    if not isinstance(obj, Mapping) or obj.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a metahmr training checkpoint (no format '{CHECKPOINT_FORMAT}'); "
                              "to start from released weights use --init-from (fine-tuning) instead of --resume.")
    for key in ("model", "optimizer", "config", "rng", "sampler", "total_step_count"):
        if key not in obj:
            raise CheckpointError(f"{path}: entry '{key}' is missing; the checkpoint is incomplete.")
    return dict(obj)


def _layout_of(obj: Mapping[str, Any], role: str) -> tuple[str | None, str]:
    spec = (obj.get("network_specs") or {}).get(role) if isinstance(obj.get("network_specs"), Mapping) else None
    sd = obj["model" if role == "main" else "model_aux"]
    if spec and spec.get("layout"):
        return str(spec["layout"]), ""
    plan = detect_network(sd, role, f"['{'model' if role == 'main' else 'model_aux'}']")
    return plan.layout, plan.prefix


def restore_networks(obj: Mapping[str, Any], main: Regressor, aux: Regressor | None, *, source: str) -> None:
    """Load ``model`` / ``model_aux`` of a checkpoint dict into existing networks (strict)."""
    layout, prefix = _layout_of(obj, "main")
    load_layout_state_dict(main, obj["model"], layout, prefix=None if layout else prefix,
                           source=f"{source}['model']")
    if aux is not None:
        if obj.get("model_aux") is None:
            raise CheckpointError(f"{source} has no 'model_aux' but this run trains an auxiliary network.")
        layout, prefix = _layout_of(obj, "aux")
        load_layout_state_dict(aux, obj["model_aux"], layout, prefix=None if layout else prefix,
                               source=f"{source}['model_aux']")


def unique_run_dir(out: str | Path) -> Path:
    """``out`` if it does not exist or is empty, else the first free ``out2``, ``out3`` ... (never overwrites)."""
    base = Path(out).expanduser()
    if not base.exists() or (base.is_dir() and not any(base.iterdir())):
        return base
    k = 2
    while True:
        cand = base.with_name(f"{base.name}{k}")
        if not cand.exists():
            return cand
        k += 1

