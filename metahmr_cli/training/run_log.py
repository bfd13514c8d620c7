"""Training logs: a CSV file (always), TensorBoard (when installed) and a rich progress display.

``train_log.csv`` has one row per logged step: step, epoch, batch, the ×60 outer loss, its weighted terms
(before ×60), the aux loss (paper mode), the gradient norm, the learning rates, samples/s (global batch over
the step's wall time) and elapsed seconds. Values are written with full precision (``repr``), so runs can be
compared exactly. On resume, rows after the checkpoint's step are dropped before appending.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..files import atomic_path
from ..losses import LOSS_TERMS

__all__ = ["CSV_COLUMNS", "RunLogger", "read_log"]

log = logging.getLogger(__name__)

CSV_COLUMNS: tuple[str, ...] = (
    "step", "epoch", "batch", "outer", *(f"term/{t}" for t in LOSS_TERMS), "aux", "grad_norm",
    "lr_main", "lr_aux", "samples_per_s", "elapsed_s",
)


def read_log(path: str | Path) -> list[dict[str, float]]:
    """Rows of a ``train_log.csv`` as floats (NaN for empty cells)."""
    rows = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            rows.append({k: (float(v) if v not in ("", None) else math.nan) for k, v in row.items()})
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


class RunLogger:
    """CSV + optional TensorBoard + optional progress bar for the main process.

    Args:
        run_dir: the run folder (``train_log.csv`` and ``tensorboard/`` go there).
        total_steps: planned optimiser steps (for the progress bar), None if unknown.
        start_step: steps already done (resume): CSV rows with a larger step are removed.
        progress: show a rich progress display on stderr.
        enabled: False on non-main processes (everything becomes a no-op).
    """

    def __init__(self, run_dir: str | Path, *, total_steps: int | None, start_step: int = 0, progress: bool = True,
                 enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "train_log.csv"
        self._tb = None
        self._progress = None
        self._task = None
        self._t0 = time.perf_counter()
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate(start_step)
        new = not self.path.is_file()
        self._fh = open(self.path, "a", newline="")  # noqa: SIM115 - kept open for the whole run
        self._writer = csv.DictWriter(self._fh, fieldnames=list(CSV_COLUMNS))
        if new:
            self._writer.writeheader()
            self._fh.flush()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"), purge_step=start_step + 1)
        except Exception as exc:  # tensorboard is optional
            log.info("TensorBoard logging off (%s)", exc)
        if progress:
            self._progress = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(), console=Console(stderr=True), transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("train", total=total_steps, completed=start_step, info="")

    def _truncate(self, start_step: int) -> None:
        if not self.path.is_file():
            return
        with open(self.path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        keep = [r for r in rows if r.get("step") and int(float(r["step"])) <= start_step]
        if len(keep) == len(rows):
            return
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS))
            w.writeheader()
            for r in keep:
                w.writerow({k: r.get(k, "") for k in CSV_COLUMNS})

    def log_step(self, row: Mapping[str, Any]) -> None:
        """Write one CSV row (keys of :data:`CSV_COLUMNS`; missing ones stay empty) and update the display."""
        if not self.enabled:
            return
        full = {k: _fmt(row.get(k)) for k in CSV_COLUMNS}
        full["elapsed_s"] = repr(round(time.perf_counter() - self._t0, 3))
        self._writer.writerow(full)
        self._fh.flush()
        step = int(row["step"])
        if self._tb is not None:
            for k, v in row.items():
                if k not in ("step", "epoch", "batch") and isinstance(v, float) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)
        if self._progress is not None and self._task is not None:
            sps = row.get("samples_per_s")
            info = f"loss {float(row['outer']):.4g}" + (f"  {sps:.1f} samples/s" if isinstance(sps, float) else "")
            self._progress.update(self._task, completed=step, info=info)

    def log_eval(self, step: int, metrics: Mapping[str, float]) -> None:
        """Append evaluation results to ``eval_log.csv`` (and TensorBoard)."""
        if not self.enabled or not metrics:
            return
        path = self.path.with_name("eval_log.csv")
        new = not path.is_file()
        with open(path, "a", newline="") as fh:
            w = csv.writer(fh)
            if new:
                w.writerow(["step", "metric", "value"])
            for k, v in metrics.items():
                w.writerow([step, k, repr(float(v))])
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(f"eval/{k}", float(v), step)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.stop()
        if self._tb is not None:
            self._tb.close()
        self._fh.close()
