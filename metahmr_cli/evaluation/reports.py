"""Evaluation results and the files written from them.

An :class:`EvalReport` holds per-sample numbers for every method. :func:`write_reports` writes:

- ``report.json``: configuration, protocol, per-method summaries (each metric with its protocol), stepwise
  curves, per-joint means, and the paper's numbers beside ours where the checkpoint/dataset pair matches;
- ``report.md``: the method x metric table (with protocols and paper comparison);
- ``per_sample.csv``: one row per (method, sample);
- ``stepwise.csv`` / ``stepwise.png``: each metric after every TTO step, per method (the paper's Figure 3);
- ``per_joint.csv`` / ``per_joint.png``: MPJPE and PA-MPJPE of each evaluated joint, per method.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metahmr_cli.evaluation.metrics import summarize
from metahmr_cli.evaluation.paper_numbers import RELEASED_EVAL_NOTE, PaperResult
from metahmr_cli.evaluation.protocols import METRIC_LABELS, METRICS, EvalProtocol
from metahmr_cli.files import atomic_path, write_text_atomic

REPORT_VERSION = 1
PER_SAMPLE_FIELDS = ("mpjpe", "pa_mpjpe", "pve", "steps", "reproj_before", "reproj_after", "converged",
                     "fell_back", "reverted")


@dataclass
class MethodResult:
    """Per-sample results of one method over the evaluated samples (leading axis N, dataset order).

    Attributes:
        method: "none" | "eft" | "metahmr" | "reference" | "paper".
        sample_index: (N,) int64 dataset indices.
        values: per-sample arrays (N,): mpjpe, pa_mpjpe, pve (mm, NaN where not applicable), steps,
            reproj_before, reproj_after (px), converged, fell_back, reverted.
        joint_err: (N, J) per-joint error (mm). pa_joint_err: (N, J) after Procrustes.
        stepwise: metric -> (N, S + 1): the metric after k updates (k = 0..S); a sample that stopped earlier
            keeps its final value.
        seconds: wall time spent on this method (0 when everything came from the cache).
        protocol: how the numbers were made (schedule, grouping, steps, keypoints), printed beside them.
    """

    method: str
    sample_index: np.ndarray
    values: dict[str, np.ndarray]
    joint_err: np.ndarray
    pa_joint_err: np.ndarray
    stepwise: dict[str, np.ndarray]
    seconds: float = 0.0
    protocol: str = ""

    @property
    def num_samples(self) -> int:
        return int(self.sample_index.shape[0])

    def summary(self) -> dict[str, dict[str, float]]:
        """metric -> {mean, median, std, count} over samples (NaN entries skipped)."""
        return {m: summarize(self.values[m]) for m in METRICS}

    def curve(self, metric: str) -> np.ndarray:
        """(S + 1,) mean of ``metric`` over samples after each step (NaN where no sample applies)."""
        arr = self.stepwise[metric]
        out = np.full(arr.shape[1], np.nan)
        for k in range(arr.shape[1]):
            col = arr[:, k]
            col = col[np.isfinite(col)]
            if col.size:
                out[k] = col.mean()
        return out

    def joint_means(self) -> tuple[np.ndarray, np.ndarray]:
        """(J,) mean per-joint MPJPE and PA-MPJPE over samples with ground truth."""
        def _m(a: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore"):
                valid = np.isfinite(a).all(axis=1)
                return a[valid].mean(axis=0) if valid.any() else np.full(a.shape[1], np.nan)
        return _m(self.joint_err), _m(self.pa_joint_err)


@dataclass
class EvalReport:
    """Everything an evaluation produced."""

    dataset: str
    dataset_npz: str
    protocol: EvalProtocol
    checkpoint: str
    keypoints: str
    config: dict[str, Any]
    methods: dict[str, MethodResult]
    joint_names: list[str]
    imgnames: dict[int, str] = field(default_factory=dict)
    paper: dict[str, PaperResult | None] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    samples_per_second: float = float("nan")
    from_cache: dict[str, int] = field(default_factory=dict)

    def metric_value(self, method: str, metric: str) -> float:
        """Mean of ``metric`` (mm) for ``method``."""
        return self.methods[method].summary()[metric]["mean"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no per-sample arrays; those go to the CSV)."""
        methods = {}
        for name, res in self.methods.items():
            summ = res.summary()
            metrics = {}
            for m in _reported_metrics(self.protocol):
                metrics[m] = {**summ[m], "unit": "mm", "protocol": self.protocol.metric_name(m)}
            jm, pjm = res.joint_means()
            entry: dict[str, Any] = {
                "tto_protocol": res.protocol,
                "num_samples": res.num_samples,
                "metrics": metrics,
                "steps_mean": _finite_mean(res.values["steps"]),
                "reproj_before_px": _finite_mean(res.values["reproj_before"]),
                "reproj_after_px": _finite_mean(res.values["reproj_after"]),
                "converged_fraction": _finite_mean(res.values["converged"]),
                "fell_back": int(np.nansum(res.values["fell_back"])),
                "stepwise": {m: _json_list(res.curve(m)) for m in _reported_metrics(self.protocol)},
                "per_joint": {"names": self.joint_names, "mpjpe": _json_list(jm), "pa_mpjpe": _json_list(pjm)},
                "seconds": res.seconds,
                "from_cache": int(self.from_cache.get(name, 0)),
            }
            paper = self.paper.get(name)
            if paper is not None:
                entry["paper"] = {
                    "row": paper.to_dict(),
                    "released_evaluation": RELEASED_EVAL_NOTE,
                    "difference_mm": {m: _json_float(summ[m]["mean"] - v) for m, v in paper.values.items()},
                }
            methods[name] = entry
        return {
            "report_version": REPORT_VERSION,
            "dataset": self.dataset,
            "dataset_npz": self.dataset_npz,
            "checkpoint": self.checkpoint,
            "keypoints": self.keypoints,
            "protocol": {
                "name": self.protocol.name,
                "released": self.protocol.released,
                "gt_source": self.protocol.gt_source,
                "joint_set": self.protocol.joint_set,
                "pve_alignment": self.protocol.pve_alignment,
                "gender_rule": self.protocol.gender_rule,
                "metrics": {m: self.protocol.metric_name(m) for m in _reported_metrics(self.protocol)},
            },
            "samples_per_second": _json_float(self.samples_per_second),
            "methods": methods,
            "config": self.config,
        }


def _reported_metrics(protocol: EvalProtocol) -> list[str]:
    """The metrics a protocol reports, in order (PVE only where it compares meshes)."""
    return [m for m in METRICS if protocol.has_pve or m != "pve"]


def _finite_mean(a: np.ndarray) -> float | None:
    v = np.asarray(a, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else None


def _json_float(x: float) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _json_list(a: np.ndarray) -> list[float | None]:
    return [_json_float(float(x)) for x in np.asarray(a, dtype=np.float64).reshape(-1)]


def _fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None or not math.isfinite(float(x)) else f"{x:.{digits}f}"


def table_rows(report: EvalReport) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the method x metric table (mm), paper numbers and differences included."""
    metrics = _reported_metrics(report.protocol)
    header = ["method", "protocol", *[f"{METRIC_LABELS[m]} (mm)" for m in metrics], "steps", "samples"]
    rows = []
    for name, res in report.methods.items():
        summ = res.summary()
        rows.append([name, res.protocol or "-", *[_fmt(summ[m]["mean"]) for m in metrics],
                     _fmt(_finite_mean(res.values["steps"]), 2), str(res.num_samples)])
        paper = report.paper.get(name)
        if paper is not None:
            rows.append([f"  paper ({paper.source}, {paper.keypoints})", "released evaluation",
                         *[_fmt(paper.values.get(m)) for m in metrics], "", ""])
            diffs = []
            for m in metrics:
                v = paper.values.get(m)
                d = None if v is None else summ[m]["mean"] - v
                diffs.append("-" if d is None or not math.isfinite(d) else f"{d:+.1f}")
            rows.append(["  ours - paper", "", *diffs, "", ""])
    return header, rows


def _tto_settings(config: dict[str, Any]) -> str:
    keys = ("steps", "scope", "grouping", "batch_size", "baseline_net")
    shown = {k: config[k] for k in keys if k in config}
    if "steps" in shown and shown["steps"] is None:
        shown["steps"] = "each method's own"  # 20 for eft, 14 for the others: each protocol line says which
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "-"


def render_markdown(report: EvalReport) -> str:
    """The Markdown report: table, protocols, paper comparison notes."""
    header, rows = table_rows(report)
    lines = [
        f"# Evaluation on {_label(report)}",
        "",
        f"- dataset file: `{report.dataset_npz}`",
        f"- checkpoint: `{report.checkpoint}`",
        f"- 2D keypoints for TTO: {report.keypoints}",
        f"- TTO settings: {_tto_settings(report.config)}",
        f"- samples: {max((r.num_samples for r in report.methods.values()), default=0)}",
        f"- protocol: `{report.protocol.name}`" + (" (released Meta-HMR protocol)" if report.protocol.released
                                                   else " (differs from the released protocol)"),
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "## Protocols", ""]
    for m in _reported_metrics(report.protocol):
        lines.append(f"- **{METRIC_LABELS[m]}**: {report.protocol.metric_name(m)}")
    if any(p is not None for p in report.paper.values()):
        lines += ["", f"Paper numbers: {RELEASED_EVAL_NOTE}."]
    for key, label in (("stepwise_png", "Stepwise curves"), ("per_joint_png", "Per-joint errors")):
        if key in report.files:
            lines += ["", f"## {label}", "", f"![{label}]({Path(report.files[key]).name})"]
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _csv_value(x: Any) -> Any:
    if isinstance(x, (float, np.floating)):
        return "" if not math.isfinite(float(x)) else f"{float(x):.6f}"
    if isinstance(x, (np.bool_, bool)):
        return int(bool(x))
    if isinstance(x, np.integer):
        return int(x)
    return x


def _label(report: EvalReport) -> str:
    """Short dataset label for plot titles (file name for a path)."""
    return Path(report.dataset).name if ("/" in report.dataset or report.dataset.endswith(".npz")) \
        else report.dataset


def write_per_sample_csv(report: EvalReport, path: Path) -> Path:
    rows = []
    for name, res in report.methods.items():
        for i in range(res.num_samples):
            idx = int(res.sample_index[i])
            rows.append([name, idx, report.imgnames.get(idx, ""),
                         *[_csv_value(res.values[k][i]) for k in PER_SAMPLE_FIELDS]])
    _write_csv(path, ["method", "sample_index", "imgname", *PER_SAMPLE_FIELDS], rows)
    return path


def write_stepwise(report: EvalReport, csv_path: Path, png_path: Path | None) -> tuple[Path, Path | None]:
    """Stepwise curves: CSV (method, step, metric means) and a PNG with one panel per metric (if a path)."""
    metrics = _reported_metrics(report.protocol)
    rows = []
    for name, res in report.methods.items():
        curves = {m: res.curve(m) for m in metrics}
        for k in range(len(curves[metrics[0]])):
            rows.append([name, k, *[_csv_value(float(curves[m][k])) for m in metrics]])
    _write_csv(csv_path, ["method", "step", *metrics], rows)
    if png_path is None:
        return csv_path, None

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    max_len = max((res.stepwise[metrics[0]].shape[1] for res in report.methods.values()), default=1)
    for ax, m in zip(axes[0], metrics, strict=True):
        for name, res in report.methods.items():
            c = res.curve(m)
            if len(c) == 1:  # no optimisation: a flat reference line
                ax.plot([0, max(max_len - 1, 1)], [c[0], c[0]], linestyle="--", label=name)
            else:
                ax.plot(np.arange(len(c)), c, marker="o", markersize=3, label=name)
        ax.set_xlabel("TTO step")
        ax.set_ylabel(f"{METRIC_LABELS[m]} (mm)")
        ax.set_title(METRIC_LABELS[m])
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{_label(report)}: metrics after each test-time optimisation step", fontsize=10)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return csv_path, png_path


def write_per_joint(report: EvalReport, csv_path: Path, png_path: Path | None) -> tuple[Path, Path | None]:
    """Per-joint MPJPE / PA-MPJPE: CSV (method, joint, values) and a grouped bar chart (if a path)."""
    rows = []
    means = {}
    for name, res in report.methods.items():
        jm, pjm = res.joint_means()
        means[name] = (jm, pjm)
        for j, jn in enumerate(report.joint_names):
            rows.append([name, j, jn, _csv_value(float(jm[j])), _csv_value(float(pjm[j]))])
    _write_csv(csv_path, ["method", "joint_index", "joint", "mpjpe", "pa_mpjpe"], rows)
    if png_path is None:
        return csv_path, None

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    J = len(report.joint_names)
    n = max(len(means), 1)
    width = 0.8 / n
    fig, axes = plt.subplots(2, 1, figsize=(max(7.0, 0.55 * J + 2), 6.4), sharex=True)
    x = np.arange(J)
    for i, (name, (jm, pjm)) in enumerate(means.items()):
        axes[0].bar(x + (i - (n - 1) / 2) * width, jm, width, label=name)
        axes[1].bar(x + (i - (n - 1) / 2) * width, pjm, width, label=name)
    axes[0].set_ylabel("MPJPE (mm)")
    axes[1].set_ylabel("PA-MPJPE (mm)")
    axes[1].set_xticks(x)
    axes[1].set_xticklabels(report.joint_names, rotation=60, ha="right", fontsize=8)
    axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{_label(report)}: per-joint errors ({report.protocol.joint_set})", fontsize=10)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return csv_path, png_path


def write_reports(report: EvalReport, out_dir: str | Path, *, plots: bool = True) -> dict[str, str]:
    """Write every report file into ``out_dir``; returns name -> path (also stored in ``report.files``).

    ``plots=False`` skips the two PNG figures (their CSVs are still written)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    files["per_sample_csv"] = str(write_per_sample_csv(report, out / "per_sample.csv"))
    c, p = write_stepwise(report, out / "stepwise.csv", out / "stepwise.png" if plots else None)
    files["stepwise_csv"] = str(c)
    if p is not None:
        files["stepwise_png"] = str(p)
    c, p = write_per_joint(report, out / "per_joint.csv", out / "per_joint.png" if plots else None)
    files["per_joint_csv"] = str(c)
    if p is not None:
        files["per_joint_png"] = str(p)
    files["report_json"] = str(out / "report.json")
    files["report_md"] = str(out / "report.md")
    report.files.update(files)
    md = render_markdown(report)
    write_text_atomic(out / "report.md", md)
    data = _sanitize(report.to_dict())
    data["files"] = {k: Path(v).name for k, v in report.files.items()}
    write_text_atomic(out / "report.json", json.dumps(data, indent=2, allow_nan=False, default=_json_default))
    return files


def _sanitize(obj: Any) -> Any:
    """Replace non-finite floats by None (JSON has no NaN) throughout nested dicts/lists."""
    if isinstance(obj, dict):
        return {k: _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_sanitize(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return _json_float(float(obj))
    return obj


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def rich_table(report: EvalReport):  # -> rich.table.Table
    """The method x metric table for the terminal."""
    from rich.table import Table

    header, rows = table_rows(report)
    table = Table(title=f"{report.dataset} — protocol {report.protocol.name}", show_lines=False)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        style = "dim" if r[0].startswith("  ") else None
        table.add_row(*r, style=style)
    return table
