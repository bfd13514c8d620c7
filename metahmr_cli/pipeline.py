"""``metahmr process``: the batch runner over files, folders and videos.

The runner owns everything about files; the :class:`~metahmr_cli.estimator.Estimator` (models loaded once, images
in memory) does the people::

    inputs (io.sources) -> resume check (manifest + settings fingerprint) -> decode -> Estimator.prepare
      -> Estimator.regress (people batched across images and video frames) -> writers (io.writers, io.meshes)
      -> renders (render/) -> manifest.jsonl + summary.json

Each input is isolated: a failure is recorded in the manifest (``failed`` + reason) and the run goes on. Missing
assets are reported all at once, before any work starts. Re-running into the same folder skips inputs whose
outputs are complete *and* were made with the same settings (checkpoint, body, detector, keypoints, TTO, focal
rule, versions); a video resumes from its last finished frame.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import re
import sys
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


_EXPORT_SUFFIX = {"amass": "npz", "glb": "glb", "bvh": "bvh"}
"""File suffix of each per-track export format."""


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


def count_processed(totals: dict[str, int], kind: str, rec: ManifestRecord) -> None:
    """Add a finished input to a run's ``totals`` (images, frames, people) when it was processed (ok, no_person)."""
    if rec.status in ("ok", "no_person"):
        totals["people"] += rec.people
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


# ------------------------------------------------------------------------------------------------------ progress


class _Progress:
    """Progress over units (images and video frames): a rich bar on a terminal, plain lines every ``every``
    seconds otherwise (logs, CI). Shows the current input (and frame), elapsed time and ETA."""

    def __init__(self, total: int, *, enabled: bool, console: Any, every: float = 10.0) -> None:
        self.total = max(int(total), 1)
        self.enabled = enabled
        self.console = console
        self.every = every
        self.done = 0
        self.t0 = time.perf_counter()
        self.last_line = self.t0
        self.bar = None
        self.task = None

    def __enter__(self) -> _Progress:
        if not self.enabled:
            return self
        isatty = bool(getattr(getattr(self.console, "file", None) or sys.stderr, "isatty", lambda: False)())
        if isatty:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            columns = (TextColumn("[bold]process[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[name]}", markup=False))
            self.bar = Progress(*columns, console=self.console, transient=False)
            self.bar.__enter__()
            self.task = self.bar.add_task("process", total=self.total, name="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
        elif self.enabled and self.done:
            self._line("", final=True)

    def current(self, name: str) -> None:
        """Name the unit being worked on."""
        if self.bar is not None:
            self.bar.update(self.task, name=name)

    def advance(self, n: int = 1, name: str = "") -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(self.task, advance=n, name=name)
        elif self.enabled and time.perf_counter() - self.last_line >= self.every:
            self._line(name)

    def _line(self, name: str, final: bool = False) -> None:
        now = time.perf_counter()
        self.last_line = now
        elapsed = now - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 and not final else 0.0
        text = (f"process: {self.done}/{self.total} images+frames, {elapsed:.0f} s elapsed"
                + ("" if final else f", ETA {eta:.0f} s") + (f", at {name}" if name else ""))
        if self.console is not None:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)  # one line, whatever the width
        else:
            logger.info(text)


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
    """

    def __init__(self, config: ProcessConfig, *, detector: Any = None, keypoints: KeypointStage | None = None,
                 networks: Any = None, body: Any = None, renderer: Renderer | None = None,
                 progress: bool = True, console: Any = None, estimator: Estimator | None = None) -> None:
        config.validate()
        self.config = config
        self.estimator = estimator if estimator is not None else Estimator(
            config, detector=detector, keypoints=keypoints, networks=networks, body=body, console=console)
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
        self._setup_done = False

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
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def video_fingerprint(self) -> str:
        """:meth:`settings_fingerprint` plus what changes a video's frames: the stride, tracking, warm start and
        smoothing (not the exports, which are remade from the frames)."""
        from metahmr_cli.config import config_to_dict

        v = config_to_dict(self.config.video)
        v.pop("export", None)
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
        run_id = uuid.uuid4().hex[:12]
        manifest = Manifest(out, run_id=run_id)
        started = time.time()
        t0 = time.perf_counter()
        totals = {"images": 0, "frames": 0, "people": 0}
        units = sum(self._units(it) for it in items)

        with _Progress(units, enabled=self.progress, console=self.console) as progress:

            def record(item: Any, rec: ManifestRecord, advance: bool = True) -> None:
                manifest.add(rec)
                count_processed(totals, item.kind, rec)
                if advance:
                    progress.advance(1 if item.kind == "image" else 0, name=Path(str(item.path)).name)

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

    def _process_items(self, items: list[Any], out: Path, previous: dict[str, ManifestRecord], progress: _Progress,
                       record: Callable[..., None]) -> None:
        """Process ``items`` into ``out``, calling ``record(item, record, advance=True)`` once per input (in input
        order, with the settings fingerprint set); ``previous`` holds the records of earlier runs (resume)."""
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

    def process_units(self, items: list[Any], out: str | Path,
                      records: list[ManifestRecord] | None = None) -> list[ManifestRecord]:
        """Process ``items`` (:class:`~metahmr_cli.io.sources.InputItem`, none of them skipped) into ``out`` and
        return their manifest records in input order, for a runner that hands out units of work to several
        processes (:mod:`metahmr_cli.distributed`): the caller owns the output lock, the manifest, the summary and
        the clean-up of temporary files. A video resumes from its last finished frame, as in :meth:`run`.

        ``records``: a list the records are appended to as each input finishes (so that a caller still has those of
        the finished inputs when this raises, e.g. :class:`~metahmr_cli.io.outdir.DiskFullError`)."""
        self.setup()
        records = [] if records is None else records
        with _Progress(len(items), enabled=False, console=None) as progress:
            self._process_items(items, Path(out), {}, progress, lambda item, rec, advance=True: records.append(rec))
        return records

    def use_fingerprints(self, settings: str, video: str) -> None:
        """Take the settings fingerprints computed where the models are loaded (a runner whose workers hold the
        models checks resume without loading them: :meth:`resume_records`)."""
        self._fingerprint, self._video_fingerprint = settings, video

    def resume_records(self, items: list[Any], previous: dict[str, ManifestRecord],
                       out: Path) -> list[ManifestRecord | None]:
        """For each input, the record it gets without being processed: ``failed`` for a folder entry that cannot be
        read, ``skipped`` when an earlier run with the same settings finished it (see :meth:`is_finished`); None
        when it must be processed."""
        plan: list[ManifestRecord | None] = []
        for item in items:
            prev = previous.get(item.stem)
            if item.problem is not None:
                plan.append(self._stamp(item, self._failed(item, item.problem)))
            elif self.is_finished(item, prev, out):
                assert prev is not None
                plan.append(self._stamp(item, self.skipped_record(item, prev)))
            else:
                plan.append(None)
        return plan

    def _stamp(self, item: Any, rec: ManifestRecord) -> ManifestRecord:
        """``rec`` with the fingerprint of the settings that made its outputs (none for a failed input)."""
        rec.settings = self._fingerprint_of(item.kind) if rec.status in ("ok", "no_person", "skipped") else None
        return rec

    def run_summary(self, *, run_id: str, started: float, wall: float, inputs: int, counts: dict[str, int],
                    processed: dict[str, int]) -> dict[str, Any]:
        """The content of ``summary.json`` (``started``: epoch seconds; ``processed``: images, frames, people)."""
        from metahmr_cli.config import config_to_dict

        cfg = self.config
        exit_code = 1 if counts["failed"] else 0
        n_units = processed["images"] + processed["frames"]
        totals = processed
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

    def _loop(self, items: list[Any], out: Path, previous: dict[str, ManifestRecord], progress: _Progress,
              record: Any, flush: Any, pending: list[Frame]) -> None:
        complete = []
        plan = []
        for item in items:
            done = self.is_finished(item, previous.get(item.stem), out)
            complete.append(done)
            plan.append("pass" if item.problem is not None or done else "video" if item.kind == "video" else "image")
        prefetch = _Prefetch(self._prepare_image, items, plan, self.prefetch_depth)
        try:
            self._loop_items(items, out, previous, progress, record, flush, pending, complete, prefetch)
        finally:
            prefetch.close()

    def _loop_items(self, items: list[Any], out: Path, previous: dict[str, ManifestRecord], progress: _Progress,
                    record: Any, flush: Any, pending: list[Frame], complete: list[bool], prefetch: _Prefetch) -> None:
        cfg = self.config
        for index, item in enumerate(items):
            name = Path(str(item.path)).name
            progress.current(name)
            if item.problem is not None:
                record(item, self._failed(item, item.problem))
                continue
            prev = previous.get(item.stem)
            if complete[index]:
                assert prev is not None
                record(item, self.skipped_record(item, prev), advance=False)
                progress.advance(self._units(item), name=name)
                continue
            if prev is not None and not cfg.overwrite and prev.settings \
                    and prev.settings != self._fingerprint_of(item.kind):
                logger.info("%s: settings changed since the earlier run; redoing it", name)
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
    def is_finished(self, item: Any, prev: ManifestRecord | None, out: Path) -> bool:
        """Whether an input is finished: readable, not ``--overwrite``, and its earlier record ``prev`` is complete
        (:meth:`_is_complete`)."""
        return item.problem is None and not self.config.overwrite and prev is not None \
            and self._is_complete(prev, out)

    def skipped_record(self, item: Any, prev: ManifestRecord) -> ManifestRecord:
        """The ``skipped`` record of a finished input (its outputs as ``prev``, the earlier record, lists them)."""
        return ManifestRecord(input=str(item.path), key=item.stem, kind=item.kind, status="skipped",
                              reason="outputs of an earlier run with the same settings are complete "
                                     "(use --overwrite to redo)",
                              people=prev.people, frames=prev.frames, outputs=list(prev.outputs),
                              previous_status=prev.previous_status or prev.status)

    def _expected_names(self, stem: str, kind: str, people: int) -> list[str]:
        cfg = self.config
        names = [f"{stem}.mp4"] if kind == "video" and self.render_enabled else []
        if kind == "image":
            names.append(f"{stem}.npz")
            if self.render_enabled:
                names.append(f"{stem}_overlay.png")
                if cfg.side_view:
                    names.append(f"{stem}_side.png")
            if cfg.save_mesh != "none":
                names += [f"{stem}_person{i:02d}.{cfg.save_mesh}" for i in range(people)]
        elif self.render_enabled and cfg.side_view:
            names.append(f"{stem}_side.mp4")
        return names

    def _is_complete(self, prev: ManifestRecord, out: Path) -> bool:
        """An earlier record made with the same settings, whose outputs all exist, whose result files are valid,
        and that has every output the current settings ask for."""
        status = prev.previous_status if prev.status == "skipped" else prev.status
        if status not in ("ok", "no_person"):
            return False
        if prev.settings != self._fingerprint_of(prev.kind):
            return False
        outputs = set(prev.outputs)
        if prev.kind == "image":
            people = prev.people
        else:
            people = 0
            if not any(o.endswith(".npz") for o in outputs):
                return False
            if self.config.save_mesh != "none" and not any(o.endswith("." + self.config.save_mesh) for o in outputs) \
                    and prev.people:
                return False
            if not self._sequence_outputs_complete(prev.key, outputs, out):
                return False
        for name in self._expected_names(prev.key, prev.kind, people):
            if name not in outputs:
                return False
        for name in outputs:
            path = out / name
            if not path.is_file():
                return False
            if _is_result_name(name, prev.key) and validate_result_npz(path):
                return False
        if prev.kind == "image":
            with contextlib.suppress(Exception):
                return result_num_people(out / f"{prev.key}.npz") == prev.people
            return False
        return True

    def _sequence_outputs_complete(self, stem: str, outputs: set[str], out: Path) -> bool:
        """A video's ``_tracks.npz`` and one export file per track and format, when tracking is on."""
        if self.config.video.tracker == "none":
            return True
        name = f"{stem}_tracks.npz"
        if name not in outputs:
            return False
        try:
            with np.load(out / name, allow_pickle=False) as z:
                ids = [int(t) for t in z["track_ids"]]
        except Exception:  # noqa: BLE001 - a damaged file means: redo
            return False
        wanted = {f"{stem}_tracks/track_{t:03d}.{_EXPORT_SUFFIX[e]}" for e in self.config.video.export for t in ids}
        return wanted == {o for o in outputs if o.startswith(f"{stem}_tracks/")}

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
        status = "ok" if frame.num_people else "no_person"
        return ManifestRecord(input=str(item.path), key=item.stem, kind="image", status=status,
                              reason=None if frame.num_people else "no person detected",
                              people=frame.num_people, outputs=outputs, timings=dict(frame.timings))

    def _process_video_safe(self, item: Any, out: Path, progress: _Progress) -> ManifestRecord:
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

    def _resumable_frame(self, path: Path, mesh_names: list[str], out: Path) -> dict[str, np.ndarray] | None:
        """The arrays of a frame file of an earlier run with the same settings (and its meshes), else None."""
        if not path.is_file() or validate_result_npz(path):
            return None
        with contextlib.suppress(Exception):
            arrays = load_result_npz(path)
            if str(arrays.get("settings_fingerprint", "")) != self._video_fingerprint:
                return None
            if self.config.save_vertices and "vertices" not in arrays:
                return None
            people = int(arrays["global_orient"].shape[0])
            if self.config.save_mesh != "none" and not all((out / n).is_file() for n in mesh_names[:people]):
                return None
            return arrays
        return None

    def _process_video(self, item: Any, out: Path, progress: _Progress) -> ManifestRecord:
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
        resumed = 0
        people = 0
        pending: list[Frame] = []
        name = Path(str(item.path)).name

        def emit(fr: Frame) -> None:
            nonlocal people
            with StageTimer(fr.timings, "smooth"):
                self._apply_motion(fr, book, warm)
            frame_name = f"{item.stem}/frame_{fr.frame:06d}.npz"
            outputs.extend(self._write_frame(fr, out, frame_name))
            written.append(out / frame_name)
            self._render_video_frame(fr, writers)
            people += fr.num_people
            for k, v in fr.timings.items():
                timings[k] += v
            progress.advance(1, name=f"{name} frame {fr.frame}")

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
                mesh_names = [f"{item.stem}/frame_{index:06d}_person{i:02d}.{cfg.save_mesh}" for i in range(99)]
                arrays = None if cfg.overwrite else self._resumable_frame(frame_file, mesh_names, out)
                if arrays is not None:  # finished by an earlier run with the same settings: keep it, render it
                    if pending:
                        flush()
                    fr = self._frame_from_arrays(item, index, image, arrays)
                    self._resume_motion(fr, book, arrays)
                    n = fr.num_people
                    outputs.append(f"{item.stem}/{frame_file.name}")
                    if cfg.save_mesh != "none":
                        outputs.extend(mesh_names[:n])
                    written.append(frame_file)
                    self._render_video_frame(fr, writers)
                    people += n
                    resumed += 1
                    progress.advance(1, name=f"{name} frame {index} (resumed)")
                    continue
                ids: list[np.ndarray] = []

                def hook(boxes: np.ndarray, scores: np.ndarray, kp: np.ndarray, index: int = index,
                         ids: list[np.ndarray] = ids) -> np.ndarray:
                    tid = book.assign(boxes, scores)
                    ids.append(tid)
                    return book.smooth_keypoints(tid, boxes, kp, index)

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
        self._add_timings(timings)
        status = "ok" if people else "no_person"
        return ManifestRecord(input=str(item.path), key=item.stem, kind="video", status=status,
                              reason=None if people else "no person detected in any frame",
                              people=people, frames=len(written), outputs=outputs, timings=dict(timings))

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
                         focal: float) -> list[str]:
        """``<stem>_tracks.npz`` and the per-track exports of a finished video (each written atomically)."""
        from metahmr_cli.video.export import write_bvh, write_glb_animation
        from metahmr_cli.video.sequences import collect_tracks, write_amass, write_tracks_npz

        cfg = self.config
        est = self.estimator
        keys = ("frame_index", "track_id", "global_orient", "body_pose", "betas", "transl", "bbox", "det_score",
                "keypoints2d", "tto_steps", "reproj_error_before", "reproj_error_after", "tto_converged", "fell_back",
                "K")
        frames = []
        for path in frame_files:
            with np.load(path, allow_pickle=False) as z:
                frames.append({k: z[k] for k in keys if k in z.files})
        tracks = collect_tracks(frames, est.body)
        K = frames[0]["K"] if frames else np.array([[focal, 0, image_hw[1] / 2], [0, focal, image_hw[0] / 2],
                                                    [0, 0, 1]])
        gender = str(getattr(est.body, "gender", "neutral"))
        meta = {"source": display_path(str(item.path))[0], "body_model": est.body_name, "gender": gender,
                "checkpoint": est.checkpoint_id, "tto_schedule": est.schedule_label, "model_tier": est.tier,
                "settings_fingerprint": self._video_fingerprint, "tracker": cfg.video.tracker,
                "smooth": float(cfg.video.smooth), "warm_start": self._warm_possible()}
        names = [f"{item.stem}_tracks.npz"]
        write_tracks_npz(out / names[0], tracks, fps=fps, stride=cfg.video_stride, K=K, image_size=image_hw,
                         meta=meta)
        folder = out / f"{item.stem}_tracks"
        wanted: set[str] = set()
        for t in tracks:
            for fmt in cfg.video.export:
                rel = f"{item.stem}_tracks/track_{t.track_id:03d}.{_EXPORT_SUFFIX[fmt]}"
                if fmt == "amass":
                    write_amass(out / rel, t, est.body, fps=fps, stride=cfg.video_stride, gender=gender)
                elif fmt == "glb":
                    write_glb_animation(out / rel, t, est.body, fps=fps, stride=cfg.video_stride)
                else:
                    write_bvh(out / rel, t, est.body, fps=fps, stride=cfg.video_stride)
                names.append(rel)
                wanted.add(Path(rel).name)
        if folder.is_dir():  # exports of an earlier run that this run did not make again
            for p in folder.iterdir():
                if p.is_file() and p.name.startswith("track_") and p.name not in wanted:
                    with contextlib.suppress(OSError):
                        p.unlink()
        return names

    def _frame_from_arrays(self, item: Any, index: int, image: np.ndarray, a: dict[str, np.ndarray]) -> Frame:
        """A finished frame rebuilt from its result file (for the overlay video of a resumed run)."""
        est = self.estimator
        fr = Frame(source=str(item.path), frame=index, image=image, K=a["K"], boxes=a["bbox"],
                   scores=a["det_score"], keypoints=a["keypoints2d"], item=item,
                   focal_rule=str(a.get("focal_rule", "diagonal")))
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
            tto_warm_start=None if f.warm is None else np.array([w is not None for w in f.warm], np.bool_))

    def _write_frame(self, f: Frame, out: Path, name: str) -> list[str]:
        cfg = self.config
        res = self._result(f)
        verts = res.vertices
        if not cfg.save_vertices:
            res.vertices = None
        outputs = [name]
        stem = Path(name).with_suffix("")
        mesh_names = [f"{stem.as_posix()}_person{i:02d}.{cfg.save_mesh}" for i in range(res.num_people)] \
            if cfg.save_mesh != "none" else []
        try:
            with StageTimer(f.timings, "write"):
                write_result_npz(out / name, res)
                if mesh_names:
                    from metahmr_cli.io.meshes import write_person_meshes

                    write_person_meshes(out / stem, verts, self.estimator.faces, cfg.save_mesh,
                                        colors=person_colors(res.num_people))
        except BaseException:
            for n in outputs + mesh_names:
                with contextlib.suppress(OSError):
                    (out / n).unlink()
            raise
        return outputs + mesh_names

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
