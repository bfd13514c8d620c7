"""Settings fingerprints: the short hashes that say which settings made a result.

Every result file, manifest record and ``_tracks.npz`` of ``metahmr process`` stores one; a re-run keeps the outputs
whose fingerprint equals its own (:mod:`metahmr_cli.pipeline.resume`). Images carry :func:`settings_fingerprint`,
video frames :func:`video_fingerprint` (the settings plus what changes a video's frames).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metahmr_cli import __version__
from metahmr_cli.config import config_to_dict
from metahmr_cli.estimator import Estimator
from metahmr_cli.files import fingerprint
from metahmr_cli.io.writers import SCHEMA_VERSION
from metahmr_cli.process_config import ProcessConfig

__all__ = ["Fingerprints", "settings_fingerprint", "video_fingerprint", "warm_possible"]


@dataclass
class Fingerprints:
    """The fingerprints of one run: ``settings`` (images) and ``video`` (video frames); empty until set up."""

    settings: str = ""
    video: str = ""

    def of(self, kind: str) -> str:
        """The fingerprint of an input of this kind ("image" or "video")."""
        return self.video if kind == "video" else self.settings


def _file_id(path: Path | None) -> Any:
    if path is None:
        return None
    p = Path(path)
    st = p.stat() if p.is_file() else None
    return [str(p.resolve()), st.st_size if st else None, st.st_mtime_ns if st else None]


def settings_fingerprint(est: Estimator) -> str:
    """A short hash of everything that changes the results of an input: checkpoint and body identity, tier,
    detector and its thresholds, keypoint source, imported files, TTO settings, focal rule, dtype, device type
    and the versions of metahmr and of the result schema."""
    cfg = est.config  # the estimation settings (the runner's own when it built the estimator)
    key = {
        "checkpoint": est.checkpoint_id, "body": est.body_name, "gender": getattr(est.body, "gender", cfg.gender),
        "tier": est.tier, "detector": cfg.detector, "det_conf": cfg.det_conf, "det_iou": cfg.det_iou,
        "max_people": cfg.max_people, "min_box": cfg.min_box, "keypoints": cfg.keypoints,
        "keypoints_model": cfg.keypoints_model, "boxes_json": _file_id(cfg.boxes_json),
        "keypoints_json": _file_id(cfg.keypoints_json), "tto": config_to_dict(est.tto),
        "schedule": est.schedule_label, "focal": est.camera_settings.focal, "fov": est.camera_settings.fov,
        "dtype": cfg.dtype, "device": est.device.type, "metahmr": __version__, "schema": SCHEMA_VERSION,
    }
    if cfg.detector in ("finder", "centernet") or cfg.keypoints == "movenet-thunder":
        key["people"] = config_to_dict(cfg.people)  # only then: other settings keep their fingerprints
    return fingerprint(key, 16)


def warm_possible(config: ProcessConfig, est: Estimator) -> bool:
    """Whether warm-started TTO is on for videos (asked for, tracking on, and the schedule adapts weights per
    person)."""
    v = config.video
    return bool(v.warm_start and v.tracker != "none" and est.supports_warm_start())


def video_fingerprint(config: ProcessConfig, base: str, warm: bool) -> str:
    """``base`` (:func:`settings_fingerprint`) plus what changes a video's frames: the stride, tracking, warm start
    (``warm``: :func:`warm_possible`) and smoothing (not the exports and their world frame, which are made from the
    frames)."""
    v = config_to_dict(config.video)
    v.pop("export", None)
    v.pop("world", None)
    key = {"base": base, "stride": config.video_stride, "video": v, "warm": warm}
    return fingerprint(key, 16)
