"""``metahmr process``: the batch runner over files, folders and videos.

The runner owns everything about files; the :class:`~metahmr_cli.estimator.Estimator` (models loaded once, images
in memory) does the people::

    inputs (io.sources) -> resume check (manifest + settings fingerprint) -> decode -> Estimator.prepare
      -> Estimator.regress (people batched across images and video frames) -> writers (io.writers, io.meshes)
      -> renders (render/) -> manifest.jsonl + summary.json

Each input is isolated: a failure is recorded in the manifest (``failed`` + reason) and the run goes on. Missing
assets are reported all at once, before any work starts. Re-running into the same folder skips inputs whose
outputs are complete *and* were made with the same settings (checkpoint, body, detector, keypoints, TTO, focal
rule, versions) *from the same file*: the manifest records each input's identity (size, modification time, a
content hash: :func:`~metahmr_cli.io.sources.input_identity`), and a replaced file is redone. A video resumes from
its last finished frame.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import re
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from metahmr_cli import __version__
from metahmr_cli.errors import InputError, MetaHMRError
from metahmr_cli.estimator import (
    Dropped,
    Estimator,
    EstimatorStage,
    Frame,
    KeypointStage,
    People,
    StageTimer,
    check_keypoint_model,
)
from metahmr_cli.io.outdir import DiskFullError, OutputLock, check_output_folder, disk_full
from metahmr_cli.io.writers import (
    DONE_STATUSES,
    SCHEMA_VERSION,
    FrameResult,
    Manifest,
    ManifestRecord,
    clean_temp_files,
    display_path,
    load_result_npz,
    result_num_people,
    validate_result_npz,
    write_image_atomic,
    write_result_npz,
    write_summary,
)
from metahmr_cli.process_config import (
    DETECTOR_DEFAULTS,
    FOCAL_RULES,
    KEYPOINT_BACKENDS,
    MESH_FORMATS,
    STAGES,
    YOLO_DEFAULTS,
    ProcessConfig,
    focal_for_image,
    resolve_device,
)
from metahmr_cli.progress import WorkProgress
from metahmr_cli.render.overlay import RendererUnavailable, person_colors, track_colors

logger = logging.getLogger(__name__)

__all__ = [
    "DETECTOR_DEFAULTS",
    "FOCAL_RULES",
    "KEYPOINT_BACKENDS",
    "MESH_FORMATS",
    "STAGES",
    "YOLO_DEFAULTS",
    "EstimatorStage",
    "KeypointStage",
    "Pipeline",
    "ProcessConfig",
    "Renderer",
    "RunReport",
    "check_keypoint_model",
    "focal_for_image",
    "resolve_device",
]


class Renderer(Protocol):
    """What the runner needs from a renderer (see :class:`metahmr_cli.render.MeshRenderer`)."""

    def render_overlay(self, image: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                       K: np.ndarray, colors: list[tuple[float, float, float]] | None = None) -> np.ndarray: ...

    def render_side_view(self, image_hw: tuple[int, int], vertices: np.ndarray, faces: np.ndarray,
                         K: np.ndarray, colors: list[tuple[float, float, float]] | None = None) -> np.ndarray: ...


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


_FRAME_FILE = re.compile(r"frame_\d{6,}(_person\d{2}\.(obj|ply|glb)|\.npz)")


def _outcome(people: int, no_keypoints: int, min_keypoints: int, where: str = "") -> tuple[str, str | None]:
    """Status and reason of a processed input: ``ok`` with a mesh for someone, else ``no_keypoints`` when people
    were found but none had usable keypoints (they get no mesh), else ``no_person``."""
    if people:
        return "ok", None
    if no_keypoints:
        return "no_keypoints", (f"{no_keypoints} {'person' if no_keypoints == 1 else 'people'} found{where}, none "
                                f"with {min_keypoints} or more usable keypoints: no mesh")
    return "no_person", f"no person detected{where}"


def _remove_frame_files(folder: Path, keep: set[str]) -> None:
    """Delete the per-frame files (``frame_NNNNNN.npz`` and its meshes) of ``folder`` not named in ``keep``; the
    folder goes too when it ends up empty."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.name not in keep and _FRAME_FILE.fullmatch(p.name) and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
    with contextlib.suppress(OSError):
        if not any(folder.iterdir()):
            folder.rmdir()


VIDEO_STATE_NAME = "resume.npz"
"""``<stem>/resume.npz``: while a video is unfinished, the state its tracks carry past its last finished frame."""
STATE_EVERY_FRAME_BYTES = 64 * 2**20
"""A video's resume state up to this size is written after every frame; a larger one (warm-start weights of big
networks) every ceil(size / this) frames, and a resumed run recomputes the frames after the last one written."""


def _is_result_name(name: str, stem: str) -> bool:
    """Whether an output name is a result file (an image's ``<stem>.npz`` or a video's frame file)."""
    return name == f"{stem}.npz" or bool(re.fullmatch(rf"{re.escape(stem)}/frame_\d+\.npz", name))


def _remove_sequence_files(out: Path, stem: str) -> None:
    """Remove a video's ``<stem>_tracks.npz`` and ``<stem>_tracks/track_*`` exports (of an earlier run)."""
    with contextlib.suppress(OSError):
        (out / f"{stem}_tracks.npz").unlink()
    folder = out / f"{stem}_tracks"
    if folder.is_dir():
        for p in folder.iterdir():
            if p.is_file() and p.name.startswith("track_"):
                with contextlib.suppress(OSError):
                    p.unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()


class _Prefetch:
    """Prepares the images of a run (read, detect, keypoints, crops) ahead of the networks, in one background
    thread, so that the next images are ready when TTO of the current batch ends.

    ``plan[i]`` says what item ``i`` is: "image" (prepared ahead), "pass" (needs no preparation: a failed scan
    entry, a skipped input) or "video" (processed on the calling thread). Preparation never runs past a video, so
    the detector and keypoint models are never used by two threads at once. ``depth`` 0 prepares each image when
    it is taken, on the calling thread.
    """

    def __init__(self, prepare: Callable[[Any], Frame], items: list[Any], plan: list[str], depth: int) -> None:
        self.prepare, self.items, self.plan, self.depth = prepare, items, plan, depth
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="metahmr-prefetch") if depth > 0 else None
        self.futures: dict[int, Future[Frame]] = {}
        self.cursor = 0

    def take(self, i: int) -> Frame:
        """The prepared frame of ``items[i]`` (raises what preparing it raised)."""
        if self.pool is None:
            return self.prepare(self.items[i])
        self._fill(i)
        fut = self.futures.pop(i)  # an "image" item at or after the cursor is always submitted by _fill
        try:
            return fut.result()
        finally:
            self._fill(i + 1)

    def _fill(self, start: int) -> None:
        assert self.pool is not None
        self.cursor = max(self.cursor, start)
        while self.cursor < len(self.items) and len(self.futures) < self.depth:
            kind = self.plan[self.cursor]
            if kind == "video":
                break
            if kind == "image":
                self.futures[self.cursor] = self.pool.submit(self.prepare, self.items[self.cursor])
            self.cursor += 1

    def close(self) -> None:
        """Cancel what has not started; wait for the image being prepared (it holds the detector)."""
        if self.pool is not None:
            for fut in self.futures.values():
                fut.cancel()
            self.futures.clear()
            self.pool.shutdown(wait=True, cancel_futures=True)


_END = object()


def _read_ahead(frames: Iterator[Any], depth: int) -> Iterator[Any]:
    """The items of ``frames`` (decoded video frames), produced up to ``depth`` ahead by a background thread.

    Exceptions of the producer are raised where the item would have been. Closing the generator (or dropping it)
    stops the producer; ``depth`` 0 returns ``frames`` itself."""
    import queue
    import threading

    if depth <= 0:
        yield from frames
        return
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[bool, Any]) -> bool:
        """Hand ``entry`` to the consumer; False once the consumer has stopped."""
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for x in frames:
                if not put((True, x)):
                    return
            put((True, _END))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put((False, exc))
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="metahmr-decode", daemon=True)
    worker.start()
    try:
        while True:
            ok, x = q.get()
            if not ok:
                raise x
            if x is _END:
                return
            yield x
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                q.get_nowait()
        worker.join(timeout=5)


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


def _batch_full(pending: list[Frame], batch_size: int) -> bool:
    """Whether the frames waiting for the networks hold a batch of people (or as many frames)."""
    return len(pending) >= batch_size or sum(f.num_people for f in pending) >= batch_size


@contextlib.contextmanager
def _interrupts_noted():
    """While a run goes on, Ctrl-C still raises KeyboardInterrupt but is also counted, so that the renderer can tell
    an interrupted OpenGL call from a broken one (:func:`metahmr_cli.render.overlay.note_interrupt`)."""
    import signal
    import threading

    from metahmr_cli.render.overlay import note_interrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        note_interrupt()
        if callable(previous):
            previous(signum, frame)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _ImportedKeypoints:
    """Keypoints of ``--keypoints-json`` for one input, matched to its boxes, mapped onto the 49 slots."""

    def __init__(self, imported: Any) -> None:
        self.imported = imported

    def boxes(self, path: Path, frame: int | None) -> Any:
        return self.imported.detections(path, frame)

    def keypoints(self, image: np.ndarray, boxes: np.ndarray, path: Path, frame: int | None) -> np.ndarray:
        from metahmr_cli.keypoints import to_49

        kp = self.imported.bind(path, frame).estimate(image, boxes)
        return to_49(np.asarray(kp, np.float32), self.imported.format)


# ------------------------------------------------------------------------------------------------------ runner


class Pipeline:
    """Runs ``metahmr process`` over a set of inputs (files, folders, globs, videos).

    Args:
        config: the run settings.
        detector, keypoints, networks, body: injected stages of the estimator (see
            :class:`~metahmr_cli.estimator.Estimator`).
        renderer: a :class:`Renderer` (default: :class:`metahmr_cli.render.MeshRenderer`); None with
            ``config.render`` off.
        progress: show progress (a bar on a terminal, plain lines otherwise).
        console: rich console for progress and messages.
        estimator: a ready :class:`~metahmr_cli.estimator.Estimator` to use (its models stay loaded across runs).
        evidence: the image-evidence stage of a network that reads it (see :class:`~metahmr_cli.estimator.Estimator`).
    """

    def __init__(self, config: ProcessConfig, *, detector: Any = None, keypoints: KeypointStage | None = None,
                 networks: Any = None, body: Any = None, renderer: Renderer | None = None,
                 progress: bool = True, console: Any = None, estimator: Estimator | None = None,
                 evidence: Any = None) -> None:
        config.validate()
        self.config = config
        self.estimator = estimator if estimator is not None else Estimator(
            config, detector=detector, keypoints=keypoints, networks=networks, body=body, console=console,
            evidence=evidence)
        self.device = self.estimator.device
        self.renderer = renderer
        self.progress = progress
        self.console = console
        self.render_enabled = config.render
        self.render_disabled_reason: str | None = None
        self.warnings: list[str] = []
        self._imported_boxes: Any = None
        self._imported_keypoints: _ImportedKeypoints | None = None
        self._stage_totals: dict[str, float] = defaultdict(float)
        self._fingerprint = ""
        self._video_fingerprint = ""
        self._earlier_meshes: dict[str, set[str]] = {}
        self._earlier_exports: dict[str, set[str]] = {}
        self._setup_done = False
        self._identities: dict[str, dict[str, Any] | None] = {}  # input stem -> identity of the file read this run
        self._previous: dict[str, ManifestRecord] = {}          # records of earlier runs in the output folder

    # -------------------------------------------------------------------------------------------- set-up
    def resolve_tier(self) -> None:
        """See :meth:`Estimator.resolve_tier`."""
        self.estimator.resolve_tier()

    def check_assets(self) -> None:
        """Resolve every file the run needs; raise one AssetNotFoundError listing all that are missing."""
        self.estimator.check_assets()

    def setup(self) -> None:
        """Load the estimator's models, the imported boxes/keypoints and the renderer."""
        if self._setup_done:
            return
        est = self.estimator.setup()
        cfg = self.config
        if est.imported_keypoints is not None:
            self._imported_keypoints = _ImportedKeypoints(est.imported_keypoints)
        if cfg.boxes_json is not None:
            from metahmr_cli.detect import ImportedBoxes

            self._imported_boxes = ImportedBoxes(cfg.boxes_json)
        if self.render_enabled and self.renderer is None:
            from metahmr_cli.render import MeshRenderer

            self.renderer = MeshRenderer(max_side=cfg.max_render_side)
        self._fingerprint = self.settings_fingerprint()
        self._video_fingerprint = self.video_fingerprint()
        self._setup_done = True

    @property
    def tier(self) -> str:
        return self.estimator.tier

    # the estimator's stages, for callers that inspect them
    detector = property(lambda self: self.estimator.detector)
    keypoint_stage = property(lambda self: self.estimator.keypoint_stage)
    networks = property(lambda self: self.estimator.networks)
    body = property(lambda self: self.estimator.body)

    def settings_fingerprint(self) -> str:
        """A short hash of everything that changes the results of an input: checkpoint and body identity, tier,
        detector and its thresholds, keypoint source, imported files, TTO settings, focal rule, dtype, device type
        and the versions of metahmr and of the result schema."""
        from metahmr_cli.config import config_to_dict

        cfg = self.estimator.config  # the estimation settings (the runner's own when it built the estimator)
        est = self.estimator

        def file_id(path: Path | None) -> Any:
            if path is None:
                return None
            p = Path(path)
            st = p.stat() if p.is_file() else None
            return [str(p.resolve()), st.st_size if st else None, st.st_mtime_ns if st else None]

        key = {
            "checkpoint": est.checkpoint_id, "body": est.body_name, "gender": getattr(est.body, "gender", cfg.gender),
            "tier": est.tier, "detector": cfg.detector, "det_conf": cfg.det_conf, "det_iou": cfg.det_iou,
            "max_people": cfg.max_people, "min_box": cfg.min_box, "keypoints": cfg.keypoints,
            "keypoints_model": cfg.keypoints_model, "boxes_json": file_id(cfg.boxes_json),
            "keypoints_json": file_id(cfg.keypoints_json), "tto": config_to_dict(cfg.tto),
            "schedule": est.schedule_label, "focal": cfg.focal, "fov": cfg.fov, "dtype": cfg.dtype,
            "device": est.device.type, "metahmr": __version__, "schema": SCHEMA_VERSION,
        }
        if cfg.detector in ("finder", "centernet") or cfg.keypoints == "movenet-thunder":
            key["people"] = config_to_dict(cfg.people)  # only then: other settings keep their fingerprints
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def video_fingerprint(self) -> str:
        """:meth:`settings_fingerprint` plus what changes a video's frames: the stride, tracking, warm start and
        smoothing (not the exports and their world frame, which are made from the frames)."""
        from metahmr_cli.config import config_to_dict

        v = config_to_dict(self.config.video)
        v.pop("export", None)
        v.pop("world", None)
        key = {"base": self._fingerprint or self.settings_fingerprint(), "stride": self.config.video_stride,
               "video": v, "warm": self._warm_possible()}
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def prefetch_depth(self) -> int:
        """Images prepared ahead (``ProcessConfig.prefetch``; unset: 4 on a GPU, 0 on a CPU)."""
        if self.config.prefetch is not None:
            return int(self.config.prefetch)
        return 4 if self.device.type == "cuda" else 0

    def _warm_possible(self) -> bool:
        """Whether warm-started TTO is on for videos (asked for, tracking on, and the schedule adapts weights per
        person)."""
        v = self.config.video
        return bool(v.warm_start and v.tracker != "none" and self.estimator.supports_warm_start())

    def _fingerprint_of(self, kind: str) -> str:
        return self._video_fingerprint if kind == "video" else self._fingerprint

    # -------------------------------------------------------------------------------------------- run
    def run(self) -> RunReport:
        """Process every input; returns the counts per status and the exit code (0 all ok, 1 some failed).

        Raises:
            InputError: no usable input, or an output folder that cannot be written (before any model loads).
            DiskFullError: the disk filled up: finished inputs are kept and recorded, the rest is not started.
        """
        from metahmr_cli.io.sources import expand_inputs

        cfg = self.config
        items = expand_inputs(cfg.inputs, recursive=cfg.recursive, report_problems=True)
        if not self._setup_done:
            self.check_assets()  # every missing file at once, before the output folder is made
        out = check_output_folder(cfg.out)  # before any model loads: a bad --out costs nothing
        say = (lambda text: self.console.print(text, markup=False, highlight=False)) if self.console else logger.info
        with OutputLock(out, wait=cfg.wait, say=say), _interrupts_noted():
            return self._run_locked(items, out)

    def _run_locked(self, items: list[Any], out: Path) -> RunReport:
        clean_temp_files(out)  # no other run writes here (the lock): every temporary file is a leftover
        self.setup()
        self._say_schedule()
        run_id = uuid.uuid4().hex[:12]
        manifest = Manifest(out, run_id=run_id)
        started = time.time()
        t0 = time.perf_counter()
        totals = new_totals()
        progress = WorkProgress(label="process", unit="images+frames", enabled=self.progress, console=self.console)
        for it in items:  # the ETA prices each input by its kind and the people found in it so far
            progress.add_work(it.stem, self._units(it), "frame" if it.kind == "video" else "image")

        with progress:

            def record(item: Any, rec: ManifestRecord, advance: bool = True) -> None:
                manifest.add(rec)
                count_processed(totals, item.kind, rec)
                if advance and item.kind == "image":
                    progress.advance(item.stem, 1, people=rec.people, name=Path(str(item.path)).name)

            try:
                self._process_items(items, out, manifest.previous, progress, record)
            except DiskFullError:
                with contextlib.suppress(OSError):
                    manifest.finalize(order=[it.stem for it in items])
                raise
        manifest.finalize(order=[it.stem for it in items])
        wall = time.perf_counter() - t0
        counts = manifest.counts()
        summary = self.run_summary(run_id=run_id, started=started, wall=wall, inputs=len(items), counts=counts,
                                   processed=totals)
        write_summary(out, summary)
        if self.renderer is not None and hasattr(self.renderer, "close"):
            with contextlib.suppress(Exception):
                self.renderer.close()
        return RunReport(counts=counts, exit_code=summary["exit_code"], out_dir=out, summary=summary)

    def _process_items(self, items: list[Any], out: Path, previous: dict[str, ManifestRecord],
                       progress: WorkProgress, record: Callable[..., None]) -> None:
        """Process ``items`` into ``out``, calling ``record(item, record, advance=True)`` once per input (in input
        order, stamped by :meth:`_stamp`); ``previous`` holds the records of earlier runs (resume, exports kept)."""
        pending: list[Frame] = []

        def settled(item: Any, rec: ManifestRecord, advance: bool = True) -> None:
            record(item, self._stamp(item, rec), advance)

        # the outputs (files, renders) of a batch are written on a background thread while the next batch
        # goes through the networks; their records follow in input order
        writer = ThreadPoolExecutor(1, thread_name_prefix="metahmr-write") if self.prefetch_depth > 0 else None
        writing: deque[tuple[Any, Future[ManifestRecord]]] = deque()

        def settle() -> None:
            """Record every image whose outputs are being written, in input order (waits for them)."""
            while writing:
                item, fut = writing.popleft()
                settled(item, fut.result())

        def flush(drain: bool = False) -> None:
            if pending:
                errors = self.estimator.regress(pending)  # meanwhile the previous batch's outputs are written
                settle()
                for fr in pending:
                    err = errors.get(id(fr))
                    job = functools.partial(self._failed, fr.item, _reason(err)) if err is not None \
                        else functools.partial(self._finish_image, fr, out)
                    if writer is None:
                        settled(fr.item, job())
                    else:
                        writing.append((fr.item, writer.submit(job)))
                pending.clear()
            if drain:
                settle()

        try:
            self._loop(items, out, previous, progress, settled, flush, pending)
            flush(drain=True)
        finally:
            if writer is not None:  # stopped early: keep the records of the images already written
                writer.shutdown(wait=True, cancel_futures=True)
                for item, fut in writing:
                    if fut.done() and not fut.cancelled() and fut.exception() is None:
                        settled(item, fut.result())
                writing.clear()

    def process_units(self, items: list[Any], out: str | Path, records: list[ManifestRecord] | None = None,
                      previous: dict[str, ManifestRecord] | None = None) -> list[ManifestRecord]:
        """Process ``items`` (:class:`~metahmr_cli.io.sources.InputItem`, none of them unreadable) into ``out`` and
        return their manifest records in input order, for a runner that hands out units of work to several
        processes (:mod:`metahmr_cli.distributed`): the caller owns the output lock, the manifest, the summary and
        the clean-up of temporary files. The inputs' identities are read here (the records carry them); as in
        :meth:`run`, a video resumes from its last finished frame, an input whose results are finished and only
        lack exports gets them from those results (``skipped``), and earlier mesh and export formats are kept.

        ``records``: a list the records are appended to as each input finishes (so that a caller still has those of
        the finished inputs when this raises, e.g. :class:`~metahmr_cli.io.outdir.DiskFullError`).
        ``previous``: the earlier runs' records of these inputs (from ``manifest.jsonl``; none: a fresh start)."""
        self.setup()
        records = [] if records is None else records
        with WorkProgress(label="process", unit="images+frames", enabled=False) as progress:
            self._process_items(items, Path(out), dict(previous or {}), progress,
                                lambda item, rec, advance=True: records.append(rec))
        return records

    def use_fingerprints(self, settings: str, video: str) -> None:
        """Take the settings fingerprints computed where the models are loaded (a runner whose workers hold the
        models checks resume without loading them: :meth:`resume_records`)."""
        self._fingerprint, self._video_fingerprint = settings, video

    def resume_records(self, items: list[Any], previous: dict[str, ManifestRecord],
                       out: Path) -> list[ManifestRecord | None]:
        """For each input, the record it gets without being processed: ``failed`` for a folder entry that cannot be
        read, ``skipped`` when an earlier run with the same settings finished it from the same file
        (:meth:`is_finished` says "done"); None when it must be processed, or when only its exports are missing
        (:meth:`process_units`, given the earlier records, writes those from the stored results)."""
        self._previous = previous
        plan: list[ManifestRecord | None] = []
        for item in items:
            prev = previous.get(item.stem)
            self._note_input(item, prev)
            if item.problem is not None:
                plan.append(self._stamp(item, self._failed(item, item.problem)))
            elif self.is_finished(item, prev, out) == "done":
                assert prev is not None
                plan.append(self._stamp(item, self.skipped_record(item, prev)))
            else:
                plan.append(None)
        return plan

    def _stamp(self, item: Any, rec: ManifestRecord) -> ManifestRecord:
        """``rec`` with the fingerprint of the settings that made its outputs and the identity of the file they were
        made from (neither for a failed input)."""
        finished = rec.status in (*DONE_STATUSES, "skipped")
        rec.settings = self._fingerprint_of(item.kind) if finished else None
        if finished:
            rec.identity = self._identities.get(item.stem)
        return rec

    def run_summary(self, *, run_id: str, started: float, wall: float, inputs: int, counts: dict[str, int],
                    processed: dict[str, int]) -> dict[str, Any]:
        """The content of ``summary.json`` (``started``: epoch seconds; ``processed``: images, frames, people,
        no_keypoints, as :func:`count_processed` adds them up)."""
        from metahmr_cli.config import config_to_dict

        cfg = self.config
        exit_code = 1 if counts["failed"] else 0
        totals = processed
        n_units = totals["images"] + totals["frames"]
        est = self.estimator
        summary = {
            "run_id": run_id,
            "metahmr_version": __version__,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "wall_seconds": wall,
            "inputs": inputs,
            "counts": counts,
            "exit_code": exit_code,
            "processed": totals,
            "images_per_second": n_units / wall if wall > 0 else None,
            "people_per_second": totals["people"] / wall if wall > 0 else None,
            "stage_seconds": {s: self._stage_totals.get(s, 0.0) for s in STAGES},
            "device": str(self.device),
            "prefetch": self.prefetch_depth,
            "dtype": cfg.dtype,
            "tier": est.tier,
            "body_model": est.body_name,
            "checkpoint": est.checkpoint_id,
            "settings_fingerprint": self._fingerprint,
            "renders_disabled": self.render_disabled_reason,
            "warnings": self.warnings,
            "config": config_to_dict(cfg),
        }
        return summary

    def _say_schedule(self) -> None:
        """Name the test-time optimisation and its step budget (e.g. EFT's 20) before the work starts."""
        from metahmr_cli.tto import resolve_schedule

        line = "test-time optimisation " + resolve_schedule(self.config.tto).describe()
        label = self.estimator.schedule_label
        if label != self.config.tto.schedule:
            line += f" [{label}]"
        if self.console is not None and self.progress:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        logger.info("%s", line)

    def _loop(self, items: list[Any], out: Path, previous: dict[str, ManifestRecord], progress: WorkProgress,
              record: Any, flush: Any, pending: list[Frame]) -> None:
        complete: list[str | None] = []
        plan = []
        self._previous = previous
        self._earlier_meshes, self._earlier_exports = {}, {}
        for item in items:
            prev = previous.get(item.stem)
            self._note_input(item, prev)
            done = self.is_finished(item, prev, out)
            complete.append(done)
            plan.append("pass" if item.problem is not None or done else "video" if item.kind == "video" else "image")
        prefetch = _Prefetch(self._prepare_image, items, plan, self.prefetch_depth)
        try:
            self._loop_items(items, out, previous, progress, record, flush, pending, complete, prefetch)
        finally:
            prefetch.close()

    def _loop_items(self, items: list[Any], out: Path, previous: dict[str, ManifestRecord], progress: WorkProgress,
                    record: Any, flush: Any, pending: list[Frame], complete: list[str | None],
                    prefetch: _Prefetch) -> None:
        cfg = self.config
        for index, item in enumerate(items):
            name = Path(str(item.path)).name
            progress.current(name)
            if item.problem is not None:
                record(item, self._failed(item, item.problem))
                continue
            prev = previous.get(item.stem)
            if complete[index] == "exports":  # results of an earlier run: only exports are missing
                assert prev is not None
                record(item, self._exports_only(item, prev, out), advance=False)
                progress.skip(item.stem, name=name)
                continue
            if complete[index]:
                assert prev is not None
                record(item, self.skipped_record(item, prev), advance=False)
                progress.skip(item.stem, name=name)
                continue
            if prev is not None and not cfg.overwrite and prev.settings \
                    and prev.settings != self._fingerprint_of(item.kind):
                logger.info("%s: settings changed since the earlier run; redoing it", name)
            elif prev is not None and not cfg.overwrite and prev.identity is not None:
                from metahmr_cli.io.sources import input_changed

                why = input_changed(prev.identity, self._identities.get(item.stem))
                if why is not None:
                    logger.warning("%s: the input file changed since the earlier run (%s); redoing it", name, why)
            if item.kind == "video":
                flush(drain=True)  # the images before it are finished and recorded first
                record(item, self._process_video_safe(item, out, progress), advance=False)
                continue
            try:
                frame = prefetch.take(index)
            except Exception as exc:  # noqa: BLE001 - one bad input must not stop the run
                record(item, self._failed(item, _reason(exc)))
                continue
            pending.append(frame)
            # decoded images wait here until a batch of people is full (or as many images are held)
            if _batch_full(pending, cfg.batch_size):
                flush()

    def _note_input(self, item: Any, prev: ManifestRecord | None) -> None:
        """Read an input's identity, and the mesh and export formats its earlier record lists (a re-run adds
        formats and keeps those it finds)."""
        self._identities[item.stem] = self._identity(item)
        if prev is not None and not self.config.overwrite:
            self._earlier_meshes[item.stem] = {o.rsplit(".", 1)[-1] for o in prev.outputs
                                               if re.search(r"_person\d{2}\.(obj|ply|glb)$", o)}
            self._earlier_exports[item.stem] = {o for o in prev.outputs if o.startswith(f"{item.stem}_tracks/")}

    def _identity(self, item: Any) -> dict[str, Any] | None:
        """The identity of an input file (None when it cannot be read: it fails later with its own reason)."""
        from metahmr_cli.io.sources import input_identity

        if item.problem is not None:
            return None
        try:
            return input_identity(item.path, item.kind)
        except OSError:
            return None

    def _units(self, item: Any) -> int:
        """Progress units of an input: 1 for an image, its (estimated) number of processed frames for a video."""
        if item.kind != "video":
            return 1
        from metahmr_cli.io.sources import video_info

        try:
            n = video_info(item.path, count_frames=False).n_frames or 1
        except Exception:  # noqa: BLE001 - a damaged video fails later with its own message
            return 1
        n = -(-n // self.config.video_stride)
        return min(n, self.config.max_frames) if self.config.max_frames else n

    # -------------------------------------------------------------------------------------------- skip logic
    def is_finished(self, item: Any, prev: ManifestRecord | None, out: Path) -> str | None:
        """How much of an input an earlier run finished: "done" (skip it), "exports" (its results are complete and
        kept, some asked-for meshes or sequence files are missing: :meth:`_exports_only`), or None (process it).
        Only a readable input without ``--overwrite`` whose earlier record ``prev`` was made from the same file
        (its identity, read by :meth:`_note_input`) can be finished; then :meth:`_completeness` decides."""
        from metahmr_cli.io.sources import input_changed

        if item.problem is not None or self.config.overwrite or prev is None:
            return None
        if item.stem not in self._identities:
            self._note_input(item, prev)
        if input_changed(prev.identity, self._identities[item.stem]) is not None:
            return None
        return self._completeness(prev, out)

    def skipped_record(self, item: Any, prev: ManifestRecord) -> ManifestRecord:
        """The ``skipped`` record of a finished input (its outputs as ``prev``, the earlier record, lists them)."""
        return ManifestRecord(input=str(item.path), key=item.stem, kind=item.kind, status="skipped",
                              reason="outputs of an earlier run with the same settings are complete "
                                     "(use --overwrite to redo)",
                              people=prev.people, frames=prev.frames, outputs=list(prev.outputs),
                              previous_status=prev.previous_status or prev.status)

    @property
    def mesh_formats(self) -> tuple[str, ...]:
        """The mesh formats asked for (``--save-mesh``)."""
        from metahmr_cli.exports import MESH_FORMATS, parse_formats

        return parse_formats(self.config.save_mesh, MESH_FORMATS, "--save-mesh")

    def _mesh_formats_for(self, stem: str) -> tuple[str, ...]:
        """The mesh formats to write for an input: those asked for and those an earlier run wrote (kept current)."""
        earlier = self._earlier_meshes.get(stem, set())
        return self.mesh_formats + tuple(sorted(f for f in earlier if f not in self.mesh_formats))

    def _sequence_formats_for(self, stem: str, out: Path) -> tuple[str, ...]:
        """The per-track export formats of a video: those asked for and those an earlier run left (no --overwrite)."""
        from metahmr_cli.exports import EXPORT_SUFFIX, sequence_formats

        asked = tuple(self.config.video.export)
        earlier: set[str] = set()
        if not self.config.overwrite:  # on disk, or listed by the earlier run (a file that went missing is remade)
            earlier = sequence_formats(out, stem)
            by_suffix = {v: k for k, v in EXPORT_SUFFIX.items()}
            earlier |= {by_suffix[n.rsplit(".", 1)[-1]] for n in self._earlier_exports.get(stem, set())
                        if n.rsplit(".", 1)[-1] in by_suffix}
        return asked + tuple(f for f in EXPORT_SUFFIX if f in earlier and f not in asked)

    def _expected_names(self, stem: str, kind: str) -> list[str]:
        """The outputs of a finished input that only the estimation makes (result files and renders)."""
        cfg = self.config
        names = [f"{stem}.mp4"] if kind == "video" and self.render_enabled else []
        if kind == "image":
            names.append(f"{stem}.npz")
            if self.render_enabled:
                names.append(f"{stem}_overlay.png")
                if cfg.side_view:
                    names.append(f"{stem}_side.png")
        elif self.render_enabled and cfg.side_view:
            names.append(f"{stem}_side.mp4")
        return names

    def _completeness(self, prev: ManifestRecord, out: Path) -> str | None:
        """"done": an earlier record made with the same settings whose outputs all exist, whose result files are
        valid and that has every output the current settings ask for; "exports": the same, but some asked-for
        meshes or sequence files are missing (they are made from the results); None: the input must be redone."""
        status = prev.previous_status if prev.status == "skipped" else prev.status
        if status not in DONE_STATUSES:
            return None
        if prev.settings != self._fingerprint_of(prev.kind):
            return None
        outputs = set(prev.outputs)
        if prev.kind == "video" and not any(o.endswith(".npz") for o in outputs):
            return None
        for name in self._expected_names(prev.key, prev.kind):
            if name not in outputs or not (out / name).is_file():
                return None
        for name in outputs:
            path = out / name
            if _is_result_name(name, prev.key) and (not path.is_file() or validate_result_npz(path)):
                return None
        results = [o for o in outputs if _is_result_name(o, prev.key)]
        if prev.kind == "image":
            with contextlib.suppress(Exception):
                if result_num_people(out / f"{prev.key}.npz") != prev.people:
                    return None
        # exports: what an earlier run wrote must still be there, and what is asked for now must exist
        for name in outputs:
            if not (out / name).is_file():
                return "exports"
        for result in results:
            people = result_num_people(out / result) if prev.kind == "video" else prev.people
            stem = result[: -len(".npz")]
            from metahmr_cli.exports import mesh_names

            if any(n not in outputs for n in mesh_names(stem, people, self.mesh_formats)):
                return "exports"
        if prev.kind == "video" and not self._sequence_outputs_complete(prev.key, outputs, out):
            return "exports"
        return "done"

    def _sequence_outputs_complete(self, stem: str, outputs: set[str], out: Path) -> bool:
        """A video's ``_tracks.npz`` (of these frames, with this world setting) and one export file per track and
        format asked for, when tracking is on."""
        from metahmr_cli.exports import read_sequence_meta, sequence_names

        if self.config.video.tracker == "none":
            return True
        if f"{stem}_tracks.npz" not in outputs:
            return False
        meta = read_sequence_meta(out / f"{stem}_tracks.npz")
        if meta is None or meta["settings_fingerprint"] != self._video_fingerprint \
                or meta["world_mode"] != self.config.video.world:
            return False
        return all(n in outputs for n in sequence_names(stem, meta["track_ids"], tuple(self.config.video.export)))

    def _exports_only(self, item: Any, prev: ManifestRecord, out: Path) -> ManifestRecord:
        """Write the meshes and sequence files an input lacks from its finished results (no network runs)."""
        from metahmr_cli.exports import write_result_meshes

        outputs = [o for o in prev.outputs if (out / o).is_file()]
        results = [o for o in outputs if _is_result_name(o, item.stem)]
        added: list[str] = []
        try:
            with StageTimer(self._stage_totals, "write"):
                for result in results:
                    stem = result[: -len(".npz")]
                    arrays = load_result_npz(out / result)
                    added += write_result_meshes(arrays, out, stem, self._mesh_formats_for(item.stem),
                                                 self.estimator.body)
                if item.kind == "video" and self.config.video.tracker != "none":
                    from metahmr_cli.io.sources import video_info

                    info = video_info(item.path, count_frames=False)
                    first = load_result_npz(out / sorted(results)[0]) if results else None
                    hw = tuple(int(x) for x in first["image_size"]) if first is not None else info.size[::-1]
                    focal = float(first["K"][0, 0]) if first is not None else 1.0
                    sequence = [o for o in outputs if o == f"{item.stem}_tracks.npz" or
                                o.startswith(f"{item.stem}_tracks/")]
                    outputs = [o for o in outputs if o not in sequence]
                    added += self._write_sequences(item, out, [out / r for r in sorted(results)], info.fps or 25.0,
                                                   hw, focal, reuse=True)
        except Exception as exc:  # noqa: BLE001 - one bad input must not stop the run
            logger.debug("exports of %s failed", item.path, exc_info=True)
            if disk_full(exc):
                raise self._disk_full(item, out) from exc
            return self._failed(item, f"writing exports from the earlier results failed: {_reason(exc)}")
        new = [n for n in added if n not in outputs]
        outputs += new
        return ManifestRecord(input=str(item.path), key=item.stem, kind=item.kind, status="skipped",
                              reason="results of an earlier run with the same settings are complete; "
                                     f"{len(new)} export file(s) added from them (use --overwrite to redo)",
                              people=prev.people, no_keypoints=prev.no_keypoints, frames=prev.frames,
                              outputs=outputs, previous_status=prev.previous_status or prev.status)

    # -------------------------------------------------------------------------------------------- per input
    def _disk_full(self, item: Any, out: Path) -> DiskFullError:
        return DiskFullError(
            f"The disk holding {out} is full: writing the outputs of {item.path} failed, and the run stopped there. "
            "The outputs of every finished input are kept (and recorded in manifest.jsonl); free some space and run "
            "the same command again to continue, or choose another --out.")

    def _failed(self, item: Any, reason: str) -> ManifestRecord:
        logger.warning("%s: %s", item.path, reason)
        return ManifestRecord(input=str(item.path), key=item.stem, kind=item.kind, status="failed", reason=reason)

    def _people_inputs(self, item: Any, frame: int | None, image: np.ndarray) -> dict[str, Any]:
        """Boxes / keypoints imported for this input (``--boxes-json`` / ``--keypoints-json``), for the estimator."""
        from metahmr_cli.detect.boxes_json import input_label

        cfg = self.estimator.config
        if self._imported_boxes is None and self._imported_keypoints is None:
            return {}
        source = self._imported_boxes if self._imported_boxes is not None else self._imported_keypoints
        dets = source.get(item.path, frame) if self._imported_boxes is not None else source.boxes(item.path, frame)
        if dets is None:
            where = input_label(item.path, frame)
            path = cfg.boxes_json if cfg.boxes_json is not None else cfg.keypoints_json
            what = "boxes" if cfg.boxes_json is not None else "people"
            raise InputError(f"{path} lists no {what} for {where!r}; add an entry (may be empty).")
        out: dict[str, Any] = {"boxes": dets.xyxy, "scores": dets.scores}
        if self._imported_keypoints is not None:
            from metahmr_cli.detect import filter_detections

            H, W = image.shape[:2]
            kept = filter_detections(dets, min_box_size=cfg.min_box, max_people=cfg.max_people, image_size=(W, H))
            out = {"boxes": kept.xyxy, "scores": kept.scores,
                   "keypoints": self._imported_keypoints.keypoints(image, kept.xyxy, Path(item.path), frame)}
        return out

    def _prepare(self, item: Any, frame: int | None, image: np.ndarray, focal: float | None,
                 timings: dict[str, float], focal_rule: str | None = None, exif_focal: float | None = None,
                 people_hook: Any = None) -> Frame:
        fr = self.estimator.prepare(image, source=str(item.path), frame=frame, focal=focal, exif_focal=exif_focal,
                                    timings=timings, item=item, path=Path(item.path), people_hook=people_hook,
                                    **self._people_inputs(item, frame, image))
        if focal_rule is not None:
            fr.focal_rule = focal_rule
        return fr

    def _prepare_image(self, item: Any) -> Frame:
        from metahmr_cli.io.sources import read_exif_focal, read_image

        t0 = time.perf_counter()
        timings: dict[str, float] = defaultdict(float)
        with StageTimer(timings, "decode"):
            image = read_image(item.path, max_pixels=self.config.max_pixels)
            H, W = image.shape[:2]
            exif = read_exif_focal(item.path, W, H) if self.config.focal == "exif" else None
        frame = self._prepare(item, None, image, None, timings, exif_focal=exif)
        frame.started = t0
        return frame

    def _finish_image(self, frame: Frame, out: Path) -> ManifestRecord:
        """Write the outputs of one image whose people went through the networks; failures are isolated."""
        item = frame.item
        outputs: list[str] = []
        try:
            outputs += self._write_frame(frame, out, f"{item.stem}.npz")
            outputs += self._render_image(frame, out)
        except Exception as exc:  # noqa: BLE001 - one bad input must not stop the run
            for name in outputs:
                with contextlib.suppress(OSError):
                    (out / name).unlink()
            logger.debug("input %s failed", item.path, exc_info=True)
            if disk_full(exc):
                raise self._disk_full(item, out) from exc
            return self._failed(item, _reason(exc))
        self._add_timings(frame.timings)
        frame.timings["total"] = time.perf_counter() - frame.started
        status, reason = _outcome(frame.num_people, len(frame.dropped), self.config.tto.min_keypoints)
        return ManifestRecord(input=str(item.path), key=item.stem, kind="image", status=status, reason=reason,
                              people=frame.num_people, no_keypoints=len(frame.dropped), outputs=outputs,
                              timings=dict(frame.timings))

    def _process_video_safe(self, item: Any, out: Path, progress: WorkProgress) -> ManifestRecord:
        t0 = time.perf_counter()
        try:
            rec = self._process_video(item, out, progress)
        except Exception as exc:  # noqa: BLE001 - one bad input must not stop the run
            logger.debug("input %s failed", item.path, exc_info=True)
            if disk_full(exc):
                raise self._disk_full(item, out) from exc
            rec = self._failed(item, _reason(exc))
        rec.timings["total"] = time.perf_counter() - t0
        return rec

    def _resumable_frame(self, path: Path) -> dict[str, np.ndarray] | None:
        """The arrays of a frame file of an earlier run with the same settings, else None (its meshes are made
        from it when missing)."""
        if not path.is_file() or validate_result_npz(path):
            return None
        with contextlib.suppress(Exception):
            arrays = load_result_npz(path)
            if str(arrays.get("settings_fingerprint", "")) != self._video_fingerprint:
                return None
            if self.config.save_vertices and "vertices" not in arrays:
                return None
            return arrays
        return None

    # -------------------------------------------------------------------------------------------- video resume
    def _finished_video(self, item: Any) -> bool:
        """Whether an earlier run finished this video with the current settings from the same file (its frames
        can be kept when no resume state is left, e.g. to remake the exports)."""
        from metahmr_cli.io.sources import input_changed

        prev = self._previous.get(item.stem)
        if prev is None or prev.kind != "video":
            return False
        status = prev.previous_status if prev.status == "skipped" else prev.status
        return status in DONE_STATUSES and prev.settings == self._video_fingerprint \
            and input_changed(prev.identity, self._identities.get(item.stem)) is None

    def _load_video_state(self, item: Any, out: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """The resume state an interrupted run left for this video, when it was made with the current settings
        from the same file (else None)."""
        from metahmr_cli.io.sources import input_changed
        from metahmr_cli.video.motion import STATE_VERSION

        path = out / item.stem / VIDEO_STATE_NAME
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            meta = json.loads(str(arrays.pop("meta")))
        except Exception as exc:  # noqa: BLE001 - a damaged state: redo the video
            logger.info("%s: ignoring the damaged resume state %s (%s)", item.path, path, exc)
            return None
        why = None
        if meta.get("version") != STATE_VERSION:
            why = "another metahmr version"
        elif meta.get("fingerprint") != self._video_fingerprint:
            why = "other settings"
        else:
            why = input_changed(meta.get("identity"), self._identities.get(item.stem))
        if why is not None:
            logger.info("%s: the frames of an earlier run are not resumed (%s)", Path(str(item.path)).name, why)
            return None
        return meta, arrays

    def _save_video_state(self, item: Any, out: Path, book: Any, frames: list[int], keypoints: Any) -> int:
        """Write the video's resume state after its frame ``frames[-1]`` (atomically); returns its size in bytes."""
        from metahmr_cli.io.writers import atomic_path

        meta, arrays = book.export_state(keypoints)
        meta.update(frame=int(frames[-1]), frames=[int(f) for f in frames], fingerprint=self._video_fingerprint,
                    identity=self._identities.get(item.stem))
        with atomic_path(out / item.stem / VIDEO_STATE_NAME) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)
        return int(sum(a.nbytes for a in arrays.values()))

    def _warm_from_arrays(self, weights: dict[str, np.ndarray]) -> dict[str, Any]:
        """Stored warm-start weights as the tensors the TTO starts from (on the estimator's device)."""
        import torch

        return {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device) for k, v in weights.items()}

    def _process_video(self, item: Any, out: Path, progress: WorkProgress) -> ManifestRecord:
        from metahmr_cli.exports import write_result_meshes
        from metahmr_cli.io.sources import iter_video_frames, video_info
        from metahmr_cli.render import VideoWriter
        from metahmr_cli.video.motion import TrackBook

        cfg = self.config
        timings: dict[str, float] = defaultdict(float)
        info = video_info(item.path, count_frames=False)
        source_fps = info.fps or 25.0
        fps = source_fps / cfg.video_stride
        W, H = info.size
        focal, focal_rule = focal_for_image(W, H, focal=cfg.focal if cfg.focal != "exif" else None, fov=cfg.fov)
        book = TrackBook(cfg.video, fps=source_fps, stride=cfg.video_stride,
                         det_conf=self.estimator.config.det_conf if self._imported_boxes is None else 0.0)
        warm = self._warm_possible()
        outputs: list[str] = []
        writers: dict[str, Any] = {}
        if self.render_enabled:
            writers["overlay"] = VideoWriter(out / f"{item.stem}.mp4", fps)
            if cfg.side_view:
                writers["side"] = VideoWriter(out / f"{item.stem}_side.mp4", fps)
        written: list[Path] = []
        done: list[int] = []  # indices of the finished frames, in order
        resumed = 0
        people = 0
        no_keypoints = 0
        pending: list[Frame] = []
        name = Path(str(item.path)).name
        # Resume: an interrupted run left its frames and the tracks' state after one of them (exact); a finished
        # run of the same settings and file left its frames (kept, e.g. to remake the exports). Frames are reused
        # up to the first one missing (and, with a state, up to the state's frame); the rest are recomputed.
        state = None if cfg.overwrite else self._load_video_state(item, out)
        state_frame = None if state is None else int(state[0]["frame"])
        reuse = state is not None or (not cfg.overwrite and self._finished_video(item))
        keypoint_states: dict[int, Any] = {}  # frame -> the keypoint filters as they were after that frame
        save = {"every": 1, "since": 0}

        def save_state() -> None:
            save["since"] += 1
            if save["since"] < save["every"]:
                return
            size = self._save_video_state(item, out, book, done, keypoint_states.pop(done[-1], None))
            save["every"], save["since"] = max(1, -(-size // STATE_EVERY_FRAME_BYTES)), 0

        def emit(fr: Frame) -> None:
            nonlocal people, no_keypoints
            with StageTimer(fr.timings, "smooth"):
                self._apply_motion(fr, book, warm)
            frame_name = f"{item.stem}/frame_{fr.frame:06d}.npz"
            outputs.extend(self._write_frame(fr, out, frame_name))
            written.append(out / frame_name)
            done.append(int(fr.frame))
            with StageTimer(fr.timings, "write"):
                save_state()
            keypoint_states.pop(int(fr.frame), None)
            self._render_video_frame(fr, writers)
            people += fr.num_people
            no_keypoints += len(fr.dropped)
            for k, v in fr.timings.items():
                timings[k] += v
            progress.advance(item.stem, 1, people=fr.num_people, name=f"{name} frame {fr.frame}")

        def flush() -> None:
            errors = self.estimator.regress(pending)
            if errors:
                raise next(iter(errors.values()))
            for fr in pending:
                emit(fr)
            pending.clear()

        it = _read_ahead(iter_video_frames(item.path, stride=cfg.video_stride, max_frames=cfg.max_frames),
                         self.prefetch_depth)
        try:
            while True:
                t = time.perf_counter()
                try:
                    index, image = next(it)
                except StopIteration:
                    break
                finally:
                    timings["decode"] += time.perf_counter() - t
                frame_file = out / item.stem / f"frame_{index:06d}.npz"
                arrays = None
                if reuse and (state_frame is None or index <= state_frame):
                    arrays = self._resumable_frame(frame_file)
                    if arrays is None and state_frame is not None:
                        logger.warning("%s: frame %d of the interrupted run is missing; it and the frames after it "
                                       "are recomputed, the tracks continuing from the frames before it", name, index)
                reuse = arrays is not None
                if arrays is not None:  # finished by an earlier run with the same settings: keep it, render it
                    assert not pending  # frames are reused only before the first recomputed one
                    fr = self._frame_from_arrays(item, index, image, arrays)
                    self._resume_motion(fr, book, arrays)
                    if state is not None and index == state_frame:  # the tracks exactly as the run left them
                        book.load_state(*state, warm=self._warm_from_arrays)
                    n = fr.num_people
                    outputs.append(f"{item.stem}/{frame_file.name}")
                    with StageTimer(timings, "write"):
                        outputs.extend(write_result_meshes(arrays, out, f"{item.stem}/frame_{index:06d}",
                                                           self._mesh_formats_for(item.stem), self.estimator.body))
                    written.append(frame_file)
                    done.append(int(index))
                    self._render_video_frame(fr, writers)
                    people += n
                    no_keypoints += len(fr.dropped)
                    resumed += 1
                    progress.advance(item.stem, 1, name=f"{name} frame {index} (resumed)", timed=False)
                    continue
                ids: list[np.ndarray] = []

                def hook(boxes: np.ndarray, scores: np.ndarray, kp: np.ndarray, index: int = index,
                         ids: list[np.ndarray] = ids) -> np.ndarray:
                    tid = book.assign(boxes, scores)
                    ids.append(tid)
                    smoothed = book.smooth_keypoints(tid, boxes, kp, index)
                    if book.filters is not None and cfg.video.smooth_keypoints:
                        keypoint_states[index] = book.keypoint_state()  # for the resume state of this frame
                    return smoothed

                frame = self._prepare(item, index, image, focal, defaultdict(float), focal_rule=focal_rule,
                                      people_hook=hook)
                frame.track_ids = ids[0]
                if warm:
                    frame.warm = book.warm_states(frame.track_ids, frame.boxes, index)
                pending.append(frame)
                # warm starts need the previous frame's TTO to have finished: one frame at a time then
                if warm or _batch_full(pending, cfg.batch_size):
                    flush()
            if pending:
                flush()
            for w in writers.values():
                if self.render_enabled:
                    p = w.close()
                    if p is not None:
                        outputs.append(p.name)
                else:  # renders were switched off mid-video: drop the partial overlay
                    w.abort()
        except KeyboardInterrupt:
            it.close()  # stops the decoding thread
            # finished frames stay: the next run resumes from them; the partial videos go
            for w in writers.values():
                w.abort()
            raise
        except BaseException:
            it.close()
            for w in writers.values():
                w.abort()
            for p in written:
                with contextlib.suppress(OSError):
                    p.unlink()
            with contextlib.suppress(OSError):
                (out / item.stem / VIDEO_STATE_NAME).unlink()
            _remove_frame_files(out / item.stem, keep=set())
            _remove_sequence_files(out, item.stem)
            raise
        # frames of an earlier run with other settings (stride, max_frames) must not mix with this run's
        _remove_frame_files(out / item.stem, keep={Path(o).name for o in outputs if o.startswith(f"{item.stem}/")})
        if resumed:
            logger.info("%s: %d of %d frames resumed from an earlier run", name, resumed, len(written))
        if book.tracker is not None:
            with StageTimer(timings, "write"):
                outputs += self._write_sequences(item, out, written, source_fps, (H, W), focal)
        with contextlib.suppress(OSError):  # the video is complete: its frames are all there is to resume from
            (out / item.stem / VIDEO_STATE_NAME).unlink()
        with contextlib.suppress(OSError):
            (out / item.stem).rmdir()  # a video without frames (none decoded) leaves no empty folder
        self._add_timings(timings)
        status, reason = _outcome(people, no_keypoints, self.config.tto.min_keypoints, " in any frame")
        return ManifestRecord(input=str(item.path), key=item.stem, kind="video", status=status, reason=reason,
                              people=people, no_keypoints=no_keypoints, frames=len(written), outputs=outputs,
                              timings=dict(timings))

    def _apply_motion(self, fr: Frame, book: Any, warm: bool) -> None:
        """Smooth a frame's people per track (rotations, translation, held shape) and keep their TTO end state."""
        from scipy.spatial.transform import Rotation

        p = fr.result
        ids = fr.track_ids
        if p is None or ids is None or fr.frame is None:
            return
        n = len(ids)
        if n == 0:
            return
        q = p.numpy()
        aa = np.concatenate([q.global_orient, q.body_pose], axis=1).reshape(n * 24, 3)
        rot = Rotation.from_rotvec(aa.astype(np.float64)).as_matrix().reshape(n, 24, 3, 3)
        rot_s, tr_s, betas_s = book.smooth_outputs(ids, fr.boxes, rot, q.transl, q.betas, fr.frame)
        if warm:  # after smooth_outputs, which starts the tracks of new people
            book.store_warm(ids, fr.tto_states or [None] * n, fr.frame)
        if book.filters is not None:
            fr.result = self.estimator.repose(q, rot_s, betas_s, tr_s)

    def _resume_motion(self, fr: Frame, book: Any, arrays: dict[str, np.ndarray]) -> None:
        """Feed a frame finished by an earlier run to the tracker and the filters (resume)."""
        from scipy.spatial.transform import Rotation

        assert fr.frame is not None
        ids = book.assign(arrays["bbox"], arrays["det_score"])
        fr.track_ids = ids
        n = len(ids)
        if n == 0:
            return
        aa = np.concatenate([arrays["global_orient"], arrays["body_pose"]], axis=1).reshape(n * 24, 3)
        rot = Rotation.from_rotvec(aa.astype(np.float64)).as_matrix().reshape(n, 24, 3, 3)
        book.seed_from_result(ids, arrays["bbox"], rot, arrays["transl"], arrays["betas"], arrays["keypoints2d"],
                              fr.frame)

    def _write_sequences(self, item: Any, out: Path, frame_files: list[Path], fps: float, image_hw: tuple[int, int],
                         focal: float, reuse: bool = False) -> list[str]:
        """``<stem>_tracks.npz`` and the per-track exports of a finished video (:mod:`metahmr_cli.exports`), in the
        formats asked for plus those an earlier run left; ``reuse``: the frames are those of the files already there,
        so files that exist and were made from them stay."""
        from metahmr_cli.exports import read_sequence_meta, write_sequence_files

        cfg = self.config
        est = self.estimator
        gender = str(getattr(est.body, "gender", "neutral"))
        meta = {"source": display_path(str(item.path))[0], "body_model": est.body_name, "gender": gender,
                "checkpoint": est.checkpoint_id, "tto_schedule": est.schedule_label, "model_tier": est.tier,
                "settings_fingerprint": self._video_fingerprint, "tracker": cfg.video.tracker,
                "smooth": float(cfg.video.smooth), "warm_start": self._warm_possible()}
        if reuse:
            earlier = read_sequence_meta(out / f"{item.stem}_tracks.npz")
            reuse = earlier is not None and earlier["settings_fingerprint"] == self._video_fingerprint \
                and earlier["world_mode"] == cfg.video.world
        names = write_sequence_files(out, item.stem, frame_files, body=est.body, fps=fps, stride=cfg.video_stride,
                                     image_hw=image_hw, focal=focal,
                                     formats=self._sequence_formats_for(item.stem, out), meta=meta,
                                     world_mode=cfg.video.world, only_missing=reuse)
        self._say_world(item, out)
        return names

    def _say_world(self, item: Any, out: Path) -> None:
        """One line on the world frame of a video's exports: the floor and how sure its estimate is."""
        from metahmr_cli.exports import world_summary

        w = world_summary(out, item.stem)
        if w is None:
            return
        q = w["quality"]
        if w["source"] == "ground":
            line = (f"{Path(str(item.path)).name}: floor and gravity from {q['contacts']} foot contacts "
                    f"({q['level']} confidence: tilt +-{q['tilt_std_deg']:.1f} deg, contacts within "
                    f"{100 * q['rms_m']:.1f} cm); camera {w['camera_height']:.2f} m above the floor")
        else:
            line = f"{Path(str(item.path)).name}: exports in the camera's axes (no people to find the floor)"
        logger.info("%s", line)
        if self.console is not None and self.progress:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def _frame_from_arrays(self, item: Any, index: int, image: np.ndarray, a: dict[str, np.ndarray]) -> Frame:
        """A finished frame rebuilt from its result file (for the overlay video of a resumed run)."""
        est = self.estimator
        fr = Frame(source=str(item.path), frame=index, image=image, K=a["K"], boxes=a["bbox"],
                   scores=a["det_score"], keypoints=a["keypoints2d"], item=item,
                   focal_rule=str(a.get("focal_rule", "diagonal")), dropped=Dropped.from_arrays(a))
        n = fr.num_people
        verts = a["vertices"] if "vertices" in a else np.zeros((n, est.num_vertices, 3), np.float32)
        fr.result = People(
            boxes=a["bbox"], scores=a["det_score"], keypoints2d=a["keypoints2d"], global_orient=a["global_orient"],
            body_pose=a["body_pose"], betas=a["betas"], transl=a["transl"], vertices=verts, joints3d=a["joints3d"],
            cam_crop=np.zeros((n, 3), np.float32), tto_steps=a["tto_steps"],
            reproj_error_before=a["reproj_error_before"], reproj_error_after=a["reproj_error_after"],
            tto_converged=a["tto_converged"], fell_back=a["fell_back"], K=a["K"], image_size=image.shape[:2],
            body_model=str(a["body_model"]), checkpoint=str(a["checkpoint"]), tier=est.tier,
            tto_schedule=str(a["tto_schedule"]), focal_rule=fr.focal_rule, faces=est.faces)
        return fr

    def _add_timings(self, timings: dict[str, float]) -> None:
        for k, v in timings.items():
            self._stage_totals[k] += v

    # -------------------------------------------------------------------------------------------- outputs
    def _result(self, f: Frame) -> FrameResult:
        """The result file's content for a frame: the estimator's people + what made them."""
        from metahmr_cli.config import config_to_dict
        from metahmr_cli.tto import resolve_schedule

        p = f.result
        assert p is not None
        est = self.estimator
        tto = dict(config_to_dict(self.config.tto))
        sched = resolve_schedule(self.config.tto)
        tto["resolved"] = {"grouping": sched.grouping, "group_size": sched.group_size, "stop_rule": sched.stop_rule,
                           "tol": sched.tol, "max_updates": sched.max_steps,
                           "phases": [{"scope": ph.scope, "optimizer": ph.optimizer, "lr": ph.lr, "loss": ph.loss,
                                       "steps": ph.steps} for ph in sched.phases]}
        return FrameResult(
            source=f.source, image_size=tuple(f.image.shape[:2]), K=f.K, global_orient=p.global_orient,
            body_pose=p.body_pose, betas=p.betas, transl=p.transl, joints3d=p.joints3d, keypoints2d=p.keypoints2d,
            bbox=p.boxes, det_score=p.scores, tto_steps=p.tto_steps, reproj_error_before=p.reproj_error_before,
            reproj_error_after=p.reproj_error_after, tto_converged=p.tto_converged, fell_back=p.fell_back,
            vertices=p.vertices, body_model=est.body_name, gender=str(getattr(est.body, "gender", "neutral")),
            checkpoint=est.checkpoint_id, tto_schedule=est.schedule_label, tto_config=tto,
            frame_index=-1 if f.frame is None else int(f.frame), focal_rule=f.focal_rule, model_tier=est.tier,
            settings_fingerprint=self._fingerprint if f.frame is None else self._video_fingerprint,
            track_id=None if f.track_ids is None else np.asarray(f.track_ids, np.int64),
            tto_warm_start=None if f.warm is None else np.array([w is not None for w in f.warm], np.bool_),
            dropped_bbox=p.dropped.boxes, dropped_det_score=p.dropped.scores,
            dropped_keypoints2d=p.dropped.keypoints2d, dropped_reason=p.dropped.reason)

    def _write_frame(self, f: Frame, out: Path, name: str) -> list[str]:
        from metahmr_cli.exports import mesh_names

        cfg = self.config
        res = self._result(f)
        verts = res.vertices
        if not cfg.save_vertices:
            res.vertices = None
        outputs = [name]
        stem = Path(name).with_suffix("")
        formats = self._mesh_formats_for(f.item.stem) if f.item is not None else self.mesh_formats
        names = mesh_names(stem.as_posix(), res.num_people, formats)
        try:
            with StageTimer(f.timings, "write"):
                write_result_npz(out / name, res)
                if names:
                    from metahmr_cli.io.meshes import write_person_meshes

                    for fmt in formats:
                        write_person_meshes(out / stem, verts, self.estimator.faces, fmt,  # type: ignore[arg-type]
                                            colors=person_colors(res.num_people))
        except BaseException:
            for n in outputs + names:
                with contextlib.suppress(OSError):
                    (out / n).unlink()
            raise
        return outputs + names

    def _disable_render(self, exc: Exception) -> None:
        self.render_enabled = False
        self.render_disabled_reason = str(exc)
        msg = f"renders disabled for the rest of the run: {exc}"
        self.warnings.append(msg)
        logger.warning(msg)

    def _draw(self, f: Frame) -> tuple[np.ndarray, np.ndarray | None]:
        p = f.result
        assert p is not None and self.renderer is not None
        faces = self.estimator.faces
        verts = np.asarray(p.vertices) if p.vertices is not None else np.zeros((0, 1, 3), np.float32)
        colors = track_colors(f.track_ids) if f.track_ids is not None else person_colors(len(verts))
        overlay = self.renderer.render_overlay(f.image, verts, faces, f.K, colors=colors)
        side = None
        if self.config.side_view:
            side = self.renderer.render_side_view(f.image.shape[:2], verts, faces, f.K, colors=colors)
        return overlay, side

    def _render_image(self, f: Frame, out: Path) -> list[str]:
        if not self.render_enabled:
            return []
        stem = f.item.stem
        try:
            with StageTimer(f.timings, "render"):
                overlay, side = self._draw(f)
                outputs = [write_image_atomic(out / f"{stem}_overlay.png", overlay).name]
                if side is not None:
                    outputs.append(write_image_atomic(out / f"{stem}_side.png", side).name)
        except RendererUnavailable as exc:
            self._disable_render(exc)
            return []
        return outputs

    def _render_video_frame(self, f: Frame, writers: dict[str, Any]) -> None:
        if not self.render_enabled or not writers:
            return
        try:
            with StageTimer(f.timings, "render"):
                overlay, side = self._draw(f)
                writers["overlay"].write(overlay)
                if side is not None and "side" in writers:
                    writers["side"].write(side)
        except RendererUnavailable as exc:
            self._disable_render(exc)
