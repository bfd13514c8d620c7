"""Per-track state of a video: identities, warm-start bookkeeping and temporal smoothing.

:class:`TrackBook` is fed the people of each frame in frame order. It

- gives every person a track id (:mod:`metahmr_cli.video.tracking`);
- says, per person, whether TTO may start from the weights the same track ended the previous frame with
  (``warm_start``): only when the track was seen in the previous processed frame and its box did not jump
  (IoU with the last box >= ``reset_iou``); otherwise the person starts from the pretrained weights;
- smooths, per track and causally, the 2D keypoints the TTO fits (before TTO) and the outputs (after TTO):
  joint rotations on SO(3), the translation, and holds the shape (the running mean of the track's betas).

Strength 1 is the default; 0 switches smoothing off; 2 smooths twice as strongly (half the cut-off frequency).

Resume: :meth:`TrackBook.export_state` gives everything the book carries from one frame to the next (each track's
filter state, held shape, warm-start weights, the keypoint filters) as plain arrays, and :meth:`TrackBook.load_state`
puts it back, so that a video interrupted after frame ``k`` continues exactly as if it had not stopped. The tracker
itself is not stored: it is replayed from the boxes and scores of the finished frames (it sees nothing else).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metahmr_cli.config import check_types
from metahmr_cli.detect.base import box_iou
from metahmr_cli.errors import ConfigError
from metahmr_cli.video.smoothing import OneEuro, RotationOneEuro, SmoothingSettings
from metahmr_cli.video.tracking import Tracker, TrackerSettings, build_tracker

__all__ = ["EXPORT_FORMATS", "STATE_VERSION", "TrackBook", "VideoSettings", "smoothing_settings"]

STATE_VERSION = 1
"""Version of the layout of :meth:`TrackBook.export_state`."""

EXPORT_FORMATS: tuple[str, ...] = ("amass", "glb", "bvh")

# One-Euro parameters at strength 1 (min_cutoff, Hz, is divided by the strength; beta in Hz per unit of speed).
# Rotations: a low cut-off for slow jitter that opens quickly with the angular speed (a limb turning at 1 rad/s
# is filtered at 12 Hz): on the synthetic walks of benchmarks/video.py (seeds 0 and 3) this cuts about 30 % of the
# acceleration error without raising the PA-MPJPE of cold or warm starts; (4 Hz, 1) cut it by half but raised the
# PA-MPJPE by up to 2.5 mm.
_ROTATION = SmoothingSettings(min_cutoff=2.0, beta=10.0)     # rad/s
_TRANSLATION = SmoothingSettings(min_cutoff=2.0, beta=0.7)   # m/s
_KEYPOINTS = SmoothingSettings(min_cutoff=4.0, beta=0.01)    # px/s


def smoothing_settings(strength: float) -> dict[str, SmoothingSettings] | None:
    """The One-Euro settings of rotations, translations and keypoints at ``strength`` (None = off)."""
    if strength <= 0:
        return None
    return {k: SmoothingSettings(min_cutoff=s.min_cutoff / strength, beta=s.beta, d_cutoff=s.d_cutoff)
            for k, s in (("rotation", _ROTATION), ("translation", _TRANSLATION), ("keypoints", _KEYPOINTS))}


@dataclass
class VideoSettings:
    """How a video's people are followed over time.

    Attributes:
        tracker: "auto" (ByteTrack when available, else IoU matching), "bytetrack", "iou" or "none".
        smooth: smoothing strength (0 = off, 1 = default, larger = smoother).
        smooth_keypoints: also smooth the 2D keypoints the TTO fits (needs ``smooth`` > 0).
        warm_start: start each tracked person's TTO from the weights their track ended the previous frame with.
        reset_iou: a box that overlaps the track's last box less than this restarts the TTO from the
            pretrained weights (a jump: a wrong match or a cut).
        max_gap: frames a track may be missed (not detected) and still warm-start / keep its filter state.
        export: per-track files written once a video is complete, besides ``<stem>_tracks.npz``: "amass"
            (AMASS-layout ``.npz``), "glb" (animated skinned glTF, and one scene GLB of every track and the camera),
            "bvh"; empty = none. A re-run adds formats and keeps those an earlier run wrote.
        world: the frame of the exports: "ground" (the floor and gravity estimated from the people's foot contacts
            over the clip, for a static camera: z up / y up, floor at 0) or "camera" (the camera's axes).
    """

    tracker: str = "auto"
    smooth: float = 1.0
    smooth_keypoints: bool = False
    warm_start: bool = True
    reset_iou: float = 0.3
    max_gap: int = 1
    export: tuple[str, ...] = ("amass",)
    world: str = "ground"

    def validate(self) -> None:
        check_types(self, prefix="video.")

        if self.tracker not in ("auto", "bytetrack", "iou", "none"):
            raise ConfigError(f"--tracker {self.tracker!r}: choose auto, bytetrack, iou or none")
        if not np.isfinite(self.smooth) or self.smooth < 0:
            raise ConfigError(f"--smooth must be >= 0 (0 = off), got {self.smooth}")
        if not 0.0 <= self.reset_iou <= 1.0:
            raise ConfigError(f"reset_iou must be in [0, 1], got {self.reset_iou}")
        if self.max_gap < 0:
            raise ConfigError(f"max_gap must be >= 0, got {self.max_gap}")
        if isinstance(self.export, str):
            self.export = tuple(e.strip() for e in self.export.split(",") if e.strip() and e.strip() != "none")
        bad = [e for e in self.export if e not in EXPORT_FORMATS]
        if bad:
            raise ConfigError(f"--export {','.join(bad)}: choose from {', '.join(EXPORT_FORMATS)} (or none)")
        if self.world not in ("ground", "camera"):
            raise ConfigError(f"--world {self.world!r}: choose ground (floor and gravity from the people's feet, "
                              "for a static camera) or camera (the camera's axes)")


@dataclass
class _Track:
    last_frame: int
    box: np.ndarray
    rotation: RotationOneEuro | None = None
    translation: OneEuro | None = None
    betas_sum: np.ndarray | None = None
    betas_count: int = 0
    warm: Any = None          # the TTO state the track ended its last frame with
    warm_frame: int = -1
    extras: dict[str, Any] = field(default_factory=dict)


class TrackBook:
    """Track ids, warm-start decisions and smoothing for one video (see the module docstring)."""

    def __init__(self, settings: VideoSettings, fps: float, *, stride: int = 1, det_conf: float | None = None,
                 tracker: Tracker | None = None) -> None:
        """``fps``: frame rate of the source video; ``stride``: every how many source frames one is processed;
        ``det_conf``: the detector's score threshold (the tracker's thresholds follow it)."""
        settings.validate()
        self.settings = settings
        self.fps = float(fps) if fps and fps > 0 else 25.0
        self.stride = max(int(stride), 1)
        if tracker is not None:
            self.tracker: Tracker | None = tracker
        elif settings.tracker == "none":
            self.tracker = None
        else:
            self.tracker = build_tracker(settings.tracker,
                                         TrackerSettings.for_detector(det_conf, fps=self.fps / self.stride))
        self.filters = smoothing_settings(settings.smooth)
        self.tracks: dict[int, _Track] = {}
        self._kp: dict[int, tuple[OneEuro, int, np.ndarray]] = {}
        self.resets = 0
        self.warm_starts = 0

    @property
    def tracker_name(self) -> str:
        return "none" if self.tracker is None else self.tracker.name

    # ------------------------------------------------------------------------------------------------ ids
    def assign(self, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """(P,) track ids of the people of the next frame (-1 = untracked)."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if self.tracker is None:
            return np.full(len(boxes), -1, np.int64)
        return np.asarray(self.tracker.update(boxes, np.asarray(scores, np.float64).reshape(-1)), np.int64)

    def _gap_ok(self, track: _Track | None, frame: int) -> bool:
        """Whether ``track`` was seen recently enough (at most ``max_gap`` processed frames missed)."""
        if track is None:
            return False
        missed = (frame - track.last_frame) / self.stride - 1
        return missed <= self.settings.max_gap

    # ------------------------------------------------------------------------------------------- warm start
    def warm_states(self, ids: np.ndarray, boxes: np.ndarray, frame: int) -> list[Any]:
        """Per person: the TTO state to start from (None = the pretrained weights)."""
        out: list[Any] = []
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        for tid, box in zip(np.asarray(ids).reshape(-1), boxes, strict=True):
            t = self.tracks.get(int(tid)) if tid >= 0 else None
            state = None
            if self.settings.warm_start and t is not None and t.warm is not None and self._gap_ok(t, frame):
                if float(box_iou(box[None], t.box[None])[0, 0]) >= self.settings.reset_iou:
                    state = t.warm
                else:
                    self.resets += 1
            if state is not None:
                self.warm_starts += 1
            out.append(state)
        return out

    def store_warm(self, ids: np.ndarray, states: list[Any], frame: int) -> None:
        """Keep each tracked person's TTO end state for their next frame (None forgets it)."""
        for tid, state in zip(np.asarray(ids).reshape(-1), states, strict=True):
            t = self.tracks.get(int(tid))
            if t is not None:
                t.warm, t.warm_frame = state, frame

    # -------------------------------------------------------------------------------------------- smoothing
    def _track(self, tid: int, frame: int, box: np.ndarray) -> tuple[_Track, float | None]:
        """The track (new or restarted when its gap is too long) and the time step to its last frame (s)."""
        t = self.tracks.get(tid)
        if t is None or not self._gap_ok(t, frame):
            warm = t.warm if t is not None else None
            t = _Track(last_frame=frame, box=np.asarray(box, np.float64))
            if self.filters is not None:
                t.rotation = RotationOneEuro(self.filters["rotation"])
                t.translation = OneEuro(self.filters["translation"])
            t.warm = warm
            self.tracks[tid] = t
            return t, None
        dt = (frame - t.last_frame) / self.fps
        return t, (dt if dt > 0 else None)

    def smooth_keypoints(self, ids: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray, frame: int) -> np.ndarray:
        """(P, K, 3) keypoints with the x, y of tracked people smoothed (confidences unchanged).

        Keeps its own per-track state, so the keypoints of a frame may be smoothed before the outputs of the
        frames before it (frames batched together)."""
        kp = np.array(keypoints, np.float64, copy=True)
        if self.filters is None or not self.settings.smooth_keypoints:
            return kp.astype(np.asarray(keypoints).dtype)
        for i, tid in enumerate(np.asarray(ids).reshape(-1)):
            if tid < 0:
                continue
            seen = kp[i, :, 2] > 0
            xy = kp[i, :, :2]
            f, last, valid = self._kp.get(int(tid), (None, None, None))
            if f is None or last is None or valid is None or f.x is None or f.dx is None or frame <= last \
                    or (frame - last) / self.stride - 1 > self.settings.max_gap:
                f = OneEuro(self.filters["keypoints"])
                f.seed(xy)
                valid = seen.copy()
            else:
                prev_x, prev_dx = f.x.copy(), f.dx.copy()
                sm = f(xy, (frame - last) / self.fps)
                use = seen & valid
                kp[i, use, :2] = sm[use]
                # a keypoint seen for the first time starts from its raw value; one the detector lost keeps its
                # last state until it is seen again
                fresh = seen & ~valid
                f.x[fresh], f.dx[fresh] = xy[fresh], 0.0
                f.x[~seen], f.dx[~seen] = prev_x[~seen], prev_dx[~seen]
                valid = valid | seen
            self._kp[int(tid)] = (f, frame, valid)
        return kp.astype(np.asarray(keypoints).dtype)

    def _tracked(self, ids: np.ndarray, boxes: np.ndarray,
                 frame: int) -> Iterator[tuple[int, int, _Track, float | None]]:
        """(index, track id, track, time step to its last frame or None) of each tracked person of a frame; once
        the caller is done with a person, the track records this frame and box as its last."""
        for i, tid in enumerate(np.asarray(ids).reshape(-1)):
            if tid < 0:
                continue
            t, dt = self._track(int(tid), frame, boxes[i])
            yield i, int(tid), t, dt
            t.last_frame = frame
            t.box = np.asarray(boxes[i], np.float64)

    def smooth_outputs(self, ids: np.ndarray, boxes: np.ndarray, rotmat: np.ndarray, transl: np.ndarray,
                       betas: np.ndarray, frame: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Smoothed (P, 24, 3, 3) rotations, (P, 3) translations and held (P, 10) betas of the tracked people; the
        others are returned unchanged. Also records each track's last box and frame."""
        rotmat = np.array(rotmat, np.float64, copy=True)
        transl = np.array(transl, np.float64, copy=True)
        betas = np.array(betas, np.float64, copy=True)
        for i, _, t, dt in self._tracked(ids, boxes, frame):
            if self.filters is not None:
                assert t.rotation is not None and t.translation is not None
                if dt is None:
                    t.rotation.seed(rotmat[i])
                    t.translation.seed(transl[i])
                else:
                    rotmat[i] = t.rotation(rotmat[i], dt)
                    transl[i] = t.translation(transl[i], dt)
                t.betas_sum = betas[i].copy() if t.betas_sum is None else t.betas_sum + betas[i]
                t.betas_count += 1
                betas[i] = t.betas_sum / t.betas_count
        return rotmat, transl, betas

    def seed_from_result(self, ids: np.ndarray, boxes: np.ndarray, rotmat: np.ndarray, transl: np.ndarray,
                         betas: np.ndarray, keypoints: np.ndarray, frame: int) -> None:
        """Continue from a frame finished by an earlier run (resume): its stored, already smoothed outputs become
        the filter state of its tracks."""
        for i, tid, t, dt in self._tracked(ids, boxes, frame):
            if self.filters is not None:
                assert t.rotation is not None and t.translation is not None
                prev_r, prev_t = t.rotation.R, t.translation.x
                step = dt if dt is not None else 1.0 / self.fps
                t.rotation.seed(rotmat[i], prev_r if dt is not None else None, step)
                t.translation.seed(transl[i], prev_t if dt is not None else None, step)
                kf = OneEuro(self.filters["keypoints"])
                kf.seed(np.asarray(keypoints[i], np.float64)[:, :2])
                self._kp[tid] = (kf, frame, np.asarray(keypoints[i])[:, 2] > 0)
                t.betas_count += 1
                t.betas_sum = np.asarray(betas[i], np.float64) * t.betas_count
            t.warm = None  # the adapted weights of a finished frame are not stored: the next frame starts cold

    # ------------------------------------------------------------------------------------------------- resume
    def keypoint_state(self) -> dict[int, tuple[OneEuro, int, np.ndarray]]:
        """A copy of the keypoint filters (taken when a frame's keypoints are smoothed, for :meth:`export_state`:
        frames batched together have their keypoints smoothed before the outputs of the frames before them)."""
        out = {}
        for tid, (f, last, valid) in self._kp.items():
            g = OneEuro(f.s)
            g.x = None if f.x is None else f.x.copy()
            g.dx = None if f.dx is None else f.dx.copy()
            out[tid] = (g, last, valid.copy())
        return out

    def export_state(self, keypoints: dict[int, tuple[OneEuro, int, np.ndarray]] | None = None
                     ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Everything but the tracker, as (JSON-able description, name -> array): per track its last frame and
        box, rotation / translation filter state, held shape and warm-start weights (arrays of any tensor type);
        the keypoint filters (``keypoints``: a :meth:`keypoint_state` copy, default the current ones)."""
        meta: dict[str, Any] = {"version": STATE_VERSION, "tracks": [], "keypoints": [], "resets": self.resets,
                                "warm_starts": self.warm_starts}
        arrays: dict[str, np.ndarray] = {}

        def put(name: str, value: Any) -> bool:
            if value is None:
                return False
            if hasattr(value, "detach"):  # a torch tensor of the warm-start weights
                value = value.detach().cpu().numpy()
            arrays[name] = np.asarray(value)
            return True

        for tid, t in self.tracks.items():
            pre = f"track/{tid}/"
            entry = {"id": int(tid), "last_frame": int(t.last_frame), "warm_frame": int(t.warm_frame),
                     "betas_count": int(t.betas_count), "warm": None, "rotation": False, "translation": False}
            put(pre + "box", t.box)
            put(pre + "betas_sum", t.betas_sum)
            if t.rotation is not None:
                entry["rotation"] = put(pre + "rotation/R", t.rotation.R) & put(pre + "rotation/w", t.rotation.w)
            if t.translation is not None:
                entry["translation"] = put(pre + "translation/x", t.translation.x) \
                    & put(pre + "translation/dx", t.translation.dx)
            if t.warm is not None:
                entry["warm"] = sorted(t.warm)
                for name, value in t.warm.items():
                    put(f"{pre}warm/{name}", value)
            meta["tracks"].append(entry)
        for tid, (f, last, valid) in (self._kp if keypoints is None else keypoints).items():
            pre = f"keypoints/{tid}/"
            meta["keypoints"].append({"id": int(tid), "last": int(last),
                                      "filter": put(pre + "x", f.x) & put(pre + "dx", f.dx)})
            put(pre + "valid", valid)
        return meta, arrays

    def load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                   warm: Callable[[dict[str, np.ndarray]], Any] | None = None) -> None:
        """Replace the per-track state by one of :meth:`export_state` (the tracker is left as it is: replay the
        finished frames' boxes into it first). ``warm`` turns stored warm-start weights (name -> array) into the
        form the TTO takes (default: the arrays themselves).

        Raises:
            ValueError: the state is of another layout version or another smoothing setting.
        """
        if meta.get("version") != STATE_VERSION:
            raise ValueError(f"video state of version {meta.get('version')!r}, expected {STATE_VERSION}")
        tracks: dict[int, _Track] = {}
        for e in meta["tracks"]:
            tid, pre = int(e["id"]), f"track/{int(e['id'])}/"
            t = _Track(last_frame=int(e["last_frame"]), box=np.asarray(arrays[pre + "box"], np.float64))
            if self.filters is not None:
                t.rotation = RotationOneEuro(self.filters["rotation"])
                t.translation = OneEuro(self.filters["translation"])
                if e["rotation"]:
                    t.rotation.R, t.rotation.w = arrays[pre + "rotation/R"].copy(), arrays[pre + "rotation/w"].copy()
                if e["translation"]:
                    t.translation.x = arrays[pre + "translation/x"].copy()
                    t.translation.dx = arrays[pre + "translation/dx"].copy()
            elif e["rotation"] or e["translation"]:
                raise ValueError("video state with smoothing filters, but smoothing is off")
            if pre + "betas_sum" in arrays:
                t.betas_sum = arrays[pre + "betas_sum"].copy()
            t.betas_count = int(e["betas_count"])
            t.warm_frame = int(e["warm_frame"])
            if e["warm"] is not None:
                weights = {name: arrays[f"{pre}warm/{name}"] for name in e["warm"]}
                t.warm = warm(weights) if warm is not None else weights
            tracks[tid] = t
        kp: dict[int, tuple[OneEuro, int, np.ndarray]] = {}
        for e in meta["keypoints"]:
            if self.filters is None:
                raise ValueError("video state with keypoint filters, but smoothing is off")
            tid, pre = int(e["id"]), f"keypoints/{int(e['id'])}/"
            f = OneEuro(self.filters["keypoints"])
            if e["filter"]:
                f.x, f.dx = arrays[pre + "x"].copy(), arrays[pre + "dx"].copy()
            kp[tid] = (f, int(e["last"]), arrays[pre + "valid"].astype(bool))
        self.tracks, self._kp = tracks, kp
        self.resets, self.warm_starts = int(meta.get("resets", 0)), int(meta.get("warm_starts", 0))
