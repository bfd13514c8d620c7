"""What a processed input becomes: its manifest record (status and reason), the run's totals and its report.

Shared by the image loop (:mod:`metahmr_cli.pipeline.runner`), the video runner (:mod:`metahmr_cli.pipeline.video`),
resume (:mod:`metahmr_cli.pipeline.resume`) and the Ray runner (:mod:`metahmr_cli.distributed`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metahmr_cli.errors import MetaHMRError
from metahmr_cli.estimator import Frame
from metahmr_cli.io.outdir import DiskFullError
from metahmr_cli.io.sources import video_info
from metahmr_cli.io.writers import DONE_STATUSES, ManifestRecord
from metahmr_cli.process_config import ProcessConfig

logger = logging.getLogger(__name__)

__all__ = ["RunReport", "count_processed", "new_totals", "progress_units"]


@dataclass
class RunReport:
    """What :meth:`Pipeline.run` returns."""

    counts: dict[str, int]
    exit_code: int
    out_dir: Path
    summary: dict[str, Any]


def _reason(exc: BaseException | None) -> str:
    """A one-line failure reason: metahmr's own messages as they are, others with their type."""
    if exc is None:
        return "unknown error"
    if isinstance(exc, MetaHMRError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def outcome(people: int, no_keypoints: int, min_keypoints: int, where: str = "") -> tuple[str, str | None]:
    """Status and reason of a processed input: ``ok`` with a mesh for someone, else ``no_keypoints`` when people
    were found but none had usable keypoints (they get no mesh), else ``no_person``."""
    if people:
        return "ok", None
    if no_keypoints:
        return "no_keypoints", (f"{no_keypoints} {'person' if no_keypoints == 1 else 'people'} found{where}, none "
                                f"with {min_keypoints} or more usable keypoints: no mesh")
    return "no_person", f"no person detected{where}"


def failed(item: Any, reason: str) -> ManifestRecord:
    """The ``failed`` record of an input (logged as a warning)."""
    logger.warning("%s: %s", item.path, reason)
    return ManifestRecord(input=str(item.path), key=item.stem, kind=item.kind, status="failed", reason=reason)


def disk_full(item: Any, out: Path) -> DiskFullError:
    """The error that stops a run whose disk filled up while writing the outputs of ``item``."""
    return DiskFullError(
        f"The disk holding {out} is full: writing the outputs of {item.path} failed, and the run stopped there. "
        "The outputs of every finished input are kept (and recorded in manifest.jsonl); free some space and run "
        "the same command again to continue, or choose another --out.")


def new_totals() -> dict[str, int]:
    """A run's ``processed`` totals before any input: images, frames, people (with a mesh) and no_keypoints
    (people found without usable keypoints), added up by :func:`count_processed`."""
    return {"images": 0, "frames": 0, "people": 0, "no_keypoints": 0}


def count_processed(totals: dict[str, int], kind: str, rec: ManifestRecord) -> None:
    """Add a finished input to a run's ``totals`` (:func:`new_totals`) when it was processed to the end
    (:data:`~metahmr_cli.io.writers.DONE_STATUSES`: ok, no_person, no_keypoints)."""
    if rec.status in DONE_STATUSES:
        totals["people"] += rec.people
        totals["no_keypoints"] += rec.no_keypoints or 0
        if kind == "video":
            totals["frames"] += rec.frames or 0
        else:
            totals["images"] += 1


def progress_units(item: Any, config: ProcessConfig) -> int:
    """Progress units of an input: 1 for an image, its (estimated) number of processed frames for a video."""
    if item.kind != "video":
        return 1
    try:
        n = video_info(item.path, count_frames=False).n_frames or 1
    except Exception:  # noqa: BLE001 - a damaged video fails later with its own message
        return 1
    n = -(-n // config.video_stride)
    return min(n, config.max_frames) if config.max_frames else n


def batch_full(pending: list[Frame], batch_size: int) -> bool:
    """Whether the frames waiting for the networks hold a batch of people (or as many frames)."""
    return len(pending) >= batch_size or sum(f.num_people for f in pending) >= batch_size
