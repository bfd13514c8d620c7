"""The image/batch loop of ``metahmr process``: inputs, resume, batches, threads, manifest and summary.

:class:`Pipeline` owns the run: it lists the inputs, takes the output folder's lock, asks
:class:`~metahmr_cli.pipeline.resume.Resume` what an earlier run finished, prepares images ahead
(:class:`~metahmr_cli.pipeline.threads.Prefetch`), batches their people through the estimator, hands the outputs to a
writer thread (:class:`~metahmr_cli.pipeline.results.ResultWriter`) while the next batch runs, hands each video to the
:class:`~metahmr_cli.pipeline.video.VideoRunner`, records every input in ``manifest.jsonl`` (in input order) and
writes ``summary.json``. Each input is isolated: a failure becomes a ``failed`` record and the run goes on; a full
disk stops it with every finished input kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import signal
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from metahmr_cli import __version__
from metahmr_cli.config import config_to_dict
from metahmr_cli.estimator import Estimator, Frame, KeypointStage, StageTimer
from metahmr_cli.files import clean_temp_files
from metahmr_cli.io.outdir import DiskFullError, OutputLock, check_output_folder, disk_full
from metahmr_cli.io.sources import expand_inputs, read_exif_focal, read_image
from metahmr_cli.io.writers import Manifest, ManifestRecord, write_summary
from metahmr_cli.pipeline import fingerprints as fp
from metahmr_cli.pipeline.imported import ImportedPeople
from metahmr_cli.pipeline.records import (
    RunReport,
    _reason,
    batch_full,
    count_processed,
    failed,
    new_totals,
    outcome,
    progress_units,
)
from metahmr_cli.pipeline.records import disk_full as disk_full_error
from metahmr_cli.pipeline.results import Renderer, ResultWriter
from metahmr_cli.pipeline.resume import Resume, skipped_record
from metahmr_cli.pipeline.threads import Prefetch
from metahmr_cli.pipeline.video import VideoRunner
from metahmr_cli.process_config import STAGES, ProcessConfig
from metahmr_cli.progress import WorkProgress
from metahmr_cli.render.overlay import note_interrupt

logger = logging.getLogger(__name__)

__all__ = ["Pipeline"]


@contextlib.contextmanager
def _interrupts_noted():
    """While a run goes on, Ctrl-C still raises KeyboardInterrupt but is also counted, so that the renderer can tell
    an interrupted OpenGL call from a broken one (:func:`metahmr_cli.render.overlay.note_interrupt`)."""
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


class Pipeline:
    """Runs ``metahmr process`` over a set of inputs (files, folders, globs, videos).

    Args:
        config: the run settings.
        detector, keypoints, networks, body: injected stages of the estimator (see
            :class:`~metahmr_cli.estimator.Estimator`).
        renderer: a :class:`~metahmr_cli.pipeline.results.Renderer` (default: :class:`metahmr_cli.render.MeshRenderer`);
            None with ``config.render`` off.
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
        self._given = config
        self._owns_estimator = estimator is None
        self.estimator = estimator if estimator is not None else Estimator(
            config, detector=detector, keypoints=keypoints, networks=networks, body=body, console=console,
            evidence=evidence)
        self.device = self.estimator.device
        self.progress = progress
        self.console = console
        self.fingerprints = fp.Fingerprints()
        self.writer = ResultWriter(config, self.estimator, self.fingerprints, renderer)
        self.resume = Resume(config, self.fingerprints, self.writer, self.estimator)
        self.video: VideoRunner | None = None  # made by setup()
        self._people: ImportedPeople | None = None  # made by setup()
        self._stage_totals: dict[str, float] = defaultdict(float)
        self._setup_done = False

    @property
    def config(self) -> ProcessConfig:
        """The run's settings: with its own estimator, the settings it was given as the estimator resolved them
        (``auto`` choices made concrete once the tier is resolved); with a shared estimator (``estimator=``), the
        settings it was given (inputs, output folder, exports, video settings), the estimator keeping its own. The
        settings the runner was given are never written."""
        return self.estimator.config if self._owns_estimator else self._given

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
        self.estimator.setup()
        people = ImportedPeople(self.estimator, self.config.boxes_json)
        self.writer.setup()
        self.fingerprints.settings = self.settings_fingerprint()
        self.fingerprints.video = self.video_fingerprint()
        self.video = VideoRunner(self.config, self.estimator, self.writer, self.resume, people, self.fingerprints,
                                 self._stage_totals, self.prefetch_depth, self.console, self.progress)
        self._people = people
        self._setup_done = True

    @property
    def _imported(self) -> ImportedPeople:
        assert self._people is not None, "setup() first"
        return self._people

    @property
    def tier(self) -> str:
        return self.estimator.tier

    # the estimator's stages, for callers that inspect them
    detector = property(lambda self: self.estimator.detector)
    keypoint_stage = property(lambda self: self.estimator.keypoint_stage)
    networks = property(lambda self: self.estimator.networks)
    body = property(lambda self: self.estimator.body)

    # the renders (owned by the result writer)
    renderer = property(lambda self: self.writer.renderer)
    render_enabled = property(lambda self: self.writer.render_enabled)
    warnings = property(lambda self: self.writer.warnings)

    @property
    def render_disabled_reason(self) -> str | None:
        return self.writer.render_disabled_reason

    @render_disabled_reason.setter
    def render_disabled_reason(self, reason: str | None) -> None:
        self.writer.render_disabled_reason = reason

    @property
    def mesh_formats(self) -> tuple[str, ...]:
        """The mesh formats asked for (``--save-mesh``)."""
        return self.resume.mesh_formats

    def settings_fingerprint(self) -> str:
        """See :func:`metahmr_cli.pipeline.fingerprints.settings_fingerprint`."""
        return fp.settings_fingerprint(self.estimator)

    def video_fingerprint(self) -> str:
        """See :func:`metahmr_cli.pipeline.fingerprints.video_fingerprint`."""
        return fp.video_fingerprint(self.config, self.fingerprints.settings or self.settings_fingerprint(),
                                    fp.warm_possible(self.config, self.estimator))

    def use_fingerprints(self, settings: str, video: str) -> None:
        """Take the settings fingerprints computed where the models are loaded (a runner whose workers hold the
        models checks resume without loading them: :meth:`resume_records`)."""
        self.fingerprints.settings, self.fingerprints.video = settings, video

    @property
    def prefetch_depth(self) -> int:
        """Images prepared ahead (``ProcessConfig.prefetch``; unset: 4 on a GPU, 0 on a CPU)."""
        if self.config.prefetch is not None:
            return int(self.config.prefetch)
        return 4 if self.device.type == "cuda" else 0

    # -------------------------------------------------------------------------------------------- run
    def run(self) -> RunReport:
        """Process every input; returns the counts per status and the exit code (0 all ok, 1 some failed).

        Raises:
            InputError: no usable input, or an output folder that cannot be written (before any model loads).
            DiskFullError: the disk filled up: finished inputs are kept and recorded, the rest is not started.
        """
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
            progress.add_work(it.stem, progress_units(it, self.config), "frame" if it.kind == "video" else "image")

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
        self.writer.close()
        return RunReport(counts=counts, exit_code=summary["exit_code"], out_dir=out, summary=summary)

    def _process_items(self, items: list[Any], out: Path, previous: dict[str, ManifestRecord],
                       progress: WorkProgress, record: Callable[..., None]) -> None:
        """Process ``items`` into ``out``, calling ``record(item, record, advance=True)`` once per input (in input
        order, stamped by :meth:`Resume.stamp`); ``previous`` holds the records of earlier runs (resume, exports
        kept)."""
        pending: list[Frame] = []

        def settled(item: Any, rec: ManifestRecord, advance: bool = True) -> None:
            record(item, self.resume.stamp(item, rec), advance)

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
                    job = functools.partial(failed, fr.item, _reason(err)) if err is not None \
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

    def resume_records(self, items: list[Any], previous: dict[str, ManifestRecord],
                       out: Path) -> list[ManifestRecord | None]:
        """For each input, the record it gets without being processed (:meth:`Resume.records`); None when it must
        be processed, or when only its exports are missing (:meth:`process_units`, given the earlier records, writes
        those from the stored results)."""
        return self.resume.records(items, previous, out)

    def run_summary(self, *, run_id: str, started: float, wall: float, inputs: int, counts: dict[str, int],
                    processed: dict[str, int]) -> dict[str, Any]:
        """The content of ``summary.json`` (``started``: epoch seconds; ``processed``: images, frames, people,
        no_keypoints, as :func:`count_processed` adds them up)."""
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
            "settings_fingerprint": self.fingerprints.settings,
            "renders_disabled": self.render_disabled_reason,
            "warnings": self.warnings,
            "config": config_to_dict(dataclasses.replace(cfg.resolved(), tto=est.tto)),  # the settings used
        }
        return summary

    def _say_schedule(self) -> None:
        """Name the test-time optimisation and its step budget (e.g. EFT's 20) before the work starts."""
        line = "test-time optimisation " + self.estimator.schedule.describe()
        label = self.estimator.schedule_label
        if label != self.estimator.tto.schedule:
            line += f" [{label}]"
        if self.console is not None and self.progress:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        logger.info("%s", line)

    def _loop(self, items: list[Any], out: Path, previous: dict[str, ManifestRecord], progress: WorkProgress,
              record: Any, flush: Any, pending: list[Frame]) -> None:
        resume = self.resume
        complete: list[str | None] = []
        plan = []
        resume.previous = previous
        resume.earlier_meshes, resume.earlier_exports = {}, {}
        for item in items:
            prev = previous.get(item.stem)
            resume.note_input(item, prev)
            done = resume.is_finished(item, prev, out)
            complete.append(done)
            plan.append("pass" if item.problem is not None or done else "video" if item.kind == "video" else "image")
        prefetch = Prefetch(self._prepare_image, items, plan, self.prefetch_depth)
        try:
            self._loop_items(items, out, previous, progress, record, flush, pending, complete, prefetch)
        finally:
            prefetch.close()

    def _loop_items(self, items: list[Any], out: Path, previous: dict[str, ManifestRecord], progress: WorkProgress,
                    record: Any, flush: Any, pending: list[Frame], complete: list[str | None],
                    prefetch: Prefetch) -> None:
        for index, item in enumerate(items):
            name = Path(str(item.path)).name
            progress.current(name)
            if item.problem is not None:
                record(item, failed(item, item.problem))
                continue
            prev = previous.get(item.stem)
            if complete[index] == "exports":  # results of an earlier run: only exports are missing
                assert prev is not None and self.video is not None
                record(item, self.resume.exports_only(item, prev, out, self._stage_totals, self.video.write_sequences),
                       advance=False)
                progress.skip(item.stem, name=name)
                continue
            if complete[index]:
                assert prev is not None
                record(item, skipped_record(item, prev), advance=False)
                progress.skip(item.stem, name=name)
                continue
            self.resume.say_why_redone(item, prev)
            if item.kind == "video":
                flush(drain=True)  # the images before it are finished and recorded first
                record(item, self._process_video_safe(item, out, progress), advance=False)
                continue
            try:
                frame = prefetch.take(index)
            except Exception as exc:  # noqa: BLE001 - one bad input must not stop the run
                record(item, failed(item, _reason(exc)))
                continue
            pending.append(frame)
            # decoded images wait here until a batch of people is full (or as many images are held)
            if batch_full(pending, self.config.batch_size):
                flush()

    # -------------------------------------------------------------------------------------------- per input
    def _prepare_image(self, item: Any) -> Frame:
        """Read an image and prepare its people (detect, keypoints, crops) for the networks."""
        t0 = time.perf_counter()
        timings: dict[str, float] = defaultdict(float)
        with StageTimer(timings, "decode"):
            image = read_image(item.path, max_pixels=self.config.max_pixels)
            H, W = image.shape[:2]
            exif = read_exif_focal(item.path, W, H) if self.estimator.camera_settings.focal == "exif" else None
        frame = self.estimator.prepare(image, source=str(item.path), frame=None, focal=None, exif_focal=exif,
                                       timings=timings, item=item, path=Path(item.path),
                                       **self._imported.inputs(item, None, image))
        frame.started = t0
        return frame

    def _finish_image(self, frame: Frame, out: Path) -> ManifestRecord:
        """Write the outputs of one image whose people went through the networks; failures are isolated."""
        item = frame.item
        outputs: list[str] = []
        try:
            outputs += self.writer.write_frame(frame, out, f"{item.stem}.npz", self.resume.mesh_formats_for(item.stem))
            outputs += self.writer.render_image(frame, out)
        except Exception as exc:  # noqa: BLE001 - one bad input must not stop the run
            for name in outputs:
                with contextlib.suppress(OSError):
                    (out / name).unlink()
            logger.debug("input %s failed", item.path, exc_info=True)
            if disk_full(exc):
                raise disk_full_error(item, out) from exc
            return failed(item, _reason(exc))
        for k, v in frame.timings.items():
            self._stage_totals[k] += v
        frame.timings["total"] = time.perf_counter() - frame.started
        status, reason = outcome(frame.num_people, len(frame.dropped), self.config.tto.min_keypoints)
        return ManifestRecord(input=str(item.path), key=item.stem, kind="image", status=status, reason=reason,
                              people=frame.num_people, no_keypoints=len(frame.dropped), outputs=outputs,
                              timings=dict(frame.timings))

    def _process_video_safe(self, item: Any, out: Path, progress: WorkProgress) -> ManifestRecord:
        """Process a video (:meth:`VideoRunner.process`); a failure becomes its ``failed`` record."""
        assert self.video is not None
        t0 = time.perf_counter()
        try:
            rec = self.video.process(item, out, progress)
        except Exception as exc:  # noqa: BLE001 - one bad input must not stop the run
            logger.debug("input %s failed", item.path, exc_info=True)
            if disk_full(exc):
                raise disk_full_error(item, out) from exc
            rec = failed(item, _reason(exc))
        rec.timings["total"] = time.perf_counter() - t0
        return rec
