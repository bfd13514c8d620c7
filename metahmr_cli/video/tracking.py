"""Person identities across the frames of a video.

:func:`build_tracker` gives ultralytics' ByteTrack (``BYTETracker``: Kalman-predicted boxes, a second matching
stage for low-score detections, lost tracks kept ``track_buffer`` frames so a person who is briefly occluded keeps
their id) when ultralytics and ``lap`` are installed, and otherwise :class:`IoUTracker`, a small Hungarian IoU
tracker with the same interface. Both work with any detector (YOLO, MoveNet, MediaPipe, imported boxes): they
only see boxes and scores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Protocol

import numpy as np
from scipy.optimize import linear_sum_assignment

from metahmr_cli.detect.base import box_iou
from metahmr_cli.detect.yolo import set_ultralytics_offline
from metahmr_cli.errors import ConfigError, MetaHMRError

__all__ = ["ByteTrackTracker", "IoUTracker", "TrackerSettings", "Tracker", "build_tracker"]

logger = logging.getLogger(__name__)


class Tracker(Protocol):
    """``update(boxes (N, 4) xyxy px, scores (N,)) -> ids (N,) int64``: a track id per detection (-1 = none)."""

    name: str

    def update(self, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray: ...


@dataclass
class TrackerSettings:
    """Tracker thresholds (ByteTrack's names and meanings).

    Attributes:
        track_high_thresh: detections at least this confident are matched first.
        track_low_thresh: less confident ones (down to this) can only extend existing tracks.
        new_track_thresh: a new track starts from an unmatched detection at least this confident.
        track_buffer: frames a lost track is kept, so that a person reappearing gets their id back.
        match_thresh: association threshold on 1 - IoU (ByteTrack) / the IoU floor is 1 - match_thresh.
        fuse_score: weigh the IoU by the detection score when matching (ByteTrack's option; off, because the
            detectors' score scales differ: MoveNet's people score 0.2-0.4 where YOLO's score 0.5-0.9).
        fps: frame rate of the processed frames (scales ``track_buffer`` in ByteTrack).
    """

    track_high_thresh: float = 0.25
    track_low_thresh: float = 0.1
    new_track_thresh: float = 0.25
    track_buffer: int = 30
    match_thresh: float = 0.8
    fuse_score: bool = False
    fps: float = 30.0

    @classmethod
    def for_detector(cls, det_conf: float | None, fps: float) -> TrackerSettings:
        """Thresholds on the detector's own score scale: every detection the detector keeps (score >= its
        threshold ``det_conf``) may start or extend a track."""
        th = 0.25 if det_conf is None else float(det_conf)
        return cls(track_high_thresh=th, new_track_thresh=th, track_low_thresh=th / 2, fps=fps)


class _Detections:
    """The numpy detections object ByteTrack reads: ``conf``, ``cls``, ``xywh``, ``xyxy`` and boolean indexing."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray) -> None:
        self.xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
        self.conf = np.asarray(conf, np.float32).reshape(-1)
        self.cls = np.zeros(len(self.conf), np.float32)
        wh = self.xyxy[:, 2:] - self.xyxy[:, :2]
        self.xywh = np.concatenate([self.xyxy[:, :2] + wh / 2, wh], axis=1)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, idx: Any) -> _Detections:
        return _Detections(self.xyxy[idx], self.conf[idx])


class ByteTrackTracker:
    """ultralytics' BYTETracker on plain boxes and scores (see the module docstring).

    A person who appears after the first frame is reported from their second frame on (-1 in the first): ByteTrack
    confirms a new track only when it is matched again, and a detection of a briefly occluded person that it did not
    match to the lost track at once would otherwise burn a new id."""

    name = "bytetrack"

    def __init__(self, settings: TrackerSettings | None = None) -> None:
        set_ultralytics_offline()  # before the first import: settings in metahmr's data folder, quiet
        from ultralytics.trackers.byte_tracker import BYTETracker

        s = settings or TrackerSettings()
        args = SimpleNamespace(tracker_type="bytetrack", track_high_thresh=s.track_high_thresh,
                               track_low_thresh=s.track_low_thresh, new_track_thresh=s.new_track_thresh,
                               track_buffer=s.track_buffer, match_thresh=s.match_thresh, fuse_score=s.fuse_score)
        try:
            self._tracker = BYTETracker(args, frame_rate=max(int(round(s.fps)), 1))
        except TypeError:  # newer ultralytics: the frame rate is not an argument
            self._tracker = BYTETracker(args)

    def update(self, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
        dets = _Detections(boxes, scores)
        ids = np.full(len(dets), -1, np.int64)
        out = self._tracker.update(dets) if len(dets) else self._tracker.update(_Detections(np.zeros((0, 4)),
                                                                                             np.zeros(0)))
        for row in np.asarray(out).reshape(-1, 8):
            idx = int(row[7])
            if 0 <= idx < len(ids):
                ids[idx] = int(row[4])
        return ids


class IoUTracker:
    """A small tracker without extra packages: Hungarian matching on the IoU between each detection and the last box
    of each live track (a constant-velocity prediction of it), new ids for confident unmatched detections, and lost
    tracks kept ``track_buffer`` frames."""

    name = "iou"

    def __init__(self, settings: TrackerSettings | None = None) -> None:
        self.s = settings or TrackerSettings()
        self.min_iou = 1.0 - self.s.match_thresh
        self._tracks: dict[int, dict[str, Any]] = {}
        self._next = 1
        self._frame = 0

    def update(self, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
        self._frame += 1
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        ids = np.full(len(boxes), -1, np.int64)
        live = [tid for tid, t in self._tracks.items() if self._frame - t["seen"] <= self.s.track_buffer]
        keep = scores >= self.s.track_low_thresh
        if live and keep.any():
            pred = np.stack([self._tracks[t]["box"] + self._tracks[t]["vel"] * (self._frame - self._tracks[t]["seen"])
                             for t in live])
            iou = box_iou(boxes, pred)
            iou[~keep] = 0.0
            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols, strict=True):
                if iou[r, c] >= self.min_iou:
                    ids[r] = live[c]
        for i in np.flatnonzero(ids < 0):
            if scores[i] >= self.s.new_track_thresh:
                ids[i] = self._next
                self._next += 1
        for i, tid in enumerate(ids):
            if tid < 0:
                continue
            t = self._tracks.get(int(tid))
            if t is None:
                self._tracks[int(tid)] = {"box": boxes[i], "vel": np.zeros(4), "seen": self._frame}
            else:
                gap = max(self._frame - t["seen"], 1)
                t["vel"] = 0.5 * t["vel"] + 0.5 * (boxes[i] - t["box"]) / gap
                t["box"], t["seen"] = boxes[i], self._frame
        return ids


def build_tracker(kind: str = "auto", settings: TrackerSettings | None = None) -> Tracker:
    """``"bytetrack"``, ``"iou"`` or ``"auto"`` (ByteTrack when ultralytics and lap are installed, else IoU)."""
    if kind not in ("auto", "bytetrack", "iou"):
        raise ConfigError(f"tracker {kind!r}: choose auto, bytetrack or iou")
    if kind in ("auto", "bytetrack"):
        try:
            return ByteTrackTracker(settings)
        except ImportError as exc:
            if kind == "bytetrack":
                raise MetaHMRError(f"--tracker bytetrack needs ultralytics and lap: pip install 'metahmr[detect]' "
                                   f"({exc})") from exc
            logger.info("ByteTrack unavailable (%s); tracking with IoU matching", exc)
    return IoUTracker(settings)
