"""Resume: what an earlier run into the same output folder finished, and what is left to do.

A re-run skips an input whose outputs are complete *and* were made with the same settings (the settings fingerprint,
:mod:`metahmr_cli.pipeline.fingerprints`) *from the same file* (the identity the manifest records: size,
modification time, content hash, :func:`~metahmr_cli.io.sources.input_identity`). An input whose results are
complete but lack some asked-for meshes or sequence files gets them from the stored results (no network runs);
mesh and export formats an earlier run wrote are kept current. Every record of a finished input is stamped with
its fingerprint and identity. (A video's own resume, from its last finished frame, is in
:mod:`metahmr_cli.pipeline.video`.)
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metahmr_cli.estimator import Estimator, StageTimer
from metahmr_cli.exports import (
    EXPORT_SUFFIX,
    MESH_FORMATS,
    mesh_names,
    parse_formats,
    read_sequence_meta,
    sequence_formats,
    sequence_names,
    write_result_meshes,
)
from metahmr_cli.io.outdir import disk_full
from metahmr_cli.io.sources import input_changed, input_identity, video_info
from metahmr_cli.io.writers import (
    DONE_STATUSES,
    ManifestRecord,
    load_result_npz,
    result_num_people,
    validate_result_npz,
)
from metahmr_cli.pipeline.fingerprints import Fingerprints
from metahmr_cli.pipeline.records import _reason, failed
from metahmr_cli.pipeline.records import disk_full as disk_full_error
from metahmr_cli.pipeline.results import ResultWriter
from metahmr_cli.process_config import ProcessConfig

logger = logging.getLogger(__name__)

__all__ = ["Resume", "is_result_name"]


def is_result_name(name: str, stem: str) -> bool:
    """Whether an output name is a result file (an image's ``<stem>.npz`` or a video's frame file)."""
    return name == f"{stem}.npz" or bool(re.fullmatch(rf"{re.escape(stem)}/frame_\d+\.npz", name))


class Resume:
    """The earlier runs' records of a run's inputs, and what each input needs (see the module docstring).

    Args:
        config: the run settings (``overwrite``, ``save_mesh``, ``side_view``, ``video``).
        fingerprints: the run's settings fingerprints.
        writer: the run's result writer (whether renders are on decides which outputs a finished input has).
        estimator: the estimator (its body makes the meshes of stored results).
    """

    def __init__(self, config: ProcessConfig, fingerprints: Fingerprints, writer: ResultWriter,
                 estimator: Estimator) -> None:
        self.config = config
        self.fingerprints = fingerprints
        self.writer = writer
        self.estimator = estimator
        self.identities: dict[str, dict[str, Any] | None] = {}  # input stem -> identity of the file read this run
        self.previous: dict[str, ManifestRecord] = {}           # records of earlier runs in the output folder
        self.earlier_meshes: dict[str, set[str]] = {}
        self.earlier_exports: dict[str, set[str]] = {}

    # -------------------------------------------------------------------------------------------- inputs
    def note_input(self, item: Any, prev: ManifestRecord | None) -> None:
        """Read an input's identity, and the mesh and export formats its earlier record lists (a re-run adds
        formats and keeps those it finds)."""
        self.identities[item.stem] = self.identity(item)
        if prev is not None and not self.config.overwrite:
            self.earlier_meshes[item.stem] = {o.rsplit(".", 1)[-1] for o in prev.outputs
                                              if re.search(r"_person\d{2}\.(obj|ply|glb)$", o)}
            self.earlier_exports[item.stem] = {o for o in prev.outputs if o.startswith(f"{item.stem}_tracks/")}

    @staticmethod
    def identity(item: Any) -> dict[str, Any] | None:
        """The identity of an input file (None when it cannot be read: it fails later with its own reason)."""
        if item.problem is not None:
            return None
        try:
            return input_identity(item.path, item.kind)
        except OSError:
            return None

    def stamp(self, item: Any, rec: ManifestRecord) -> ManifestRecord:
        """``rec`` with the fingerprint of the settings that made its outputs and the identity of the file they were
        made from (neither for a failed input)."""
        finished = rec.status in (*DONE_STATUSES, "skipped")
        rec.settings = self.fingerprints.of(item.kind) if finished else None
        if finished:
            rec.identity = self.identities.get(item.stem)
        return rec

    def say_why_redone(self, item: Any, prev: ManifestRecord | None) -> None:
        """Log why an input an earlier run recorded is processed again (other settings, or another file)."""
        if prev is None or self.config.overwrite:
            return
        name = Path(str(item.path)).name
        if prev.settings and prev.settings != self.fingerprints.of(item.kind):
            logger.info("%s: settings changed since the earlier run; redoing it", name)
        elif prev.identity is not None:
            why = input_changed(prev.identity, self.identities.get(item.stem))
            if why is not None:
                logger.warning("%s: the input file changed since the earlier run (%s); redoing it", name, why)

    # -------------------------------------------------------------------------------------------- skip logic
    def is_finished(self, item: Any, prev: ManifestRecord | None, out: Path) -> str | None:
        """How much of an input an earlier run finished: "done" (skip it), "exports" (its results are complete and
        kept, some asked-for meshes or sequence files are missing: :meth:`exports_only`), or None (process it).
        Only a readable input without ``--overwrite`` whose earlier record ``prev`` was made from the same file
        (its identity, read by :meth:`note_input`) can be finished; then :meth:`completeness` decides."""
        if item.problem is not None or self.config.overwrite or prev is None:
            return None
        if item.stem not in self.identities:
            self.note_input(item, prev)
        if input_changed(prev.identity, self.identities[item.stem]) is not None:
            return None
        return self.completeness(prev, out)

    def finished_video(self, item: Any) -> bool:
        """Whether an earlier run finished this video with the current settings from the same file (its frames
        can be kept when no resume state is left, e.g. to remake the exports)."""
        prev = self.previous.get(item.stem)
        if prev is None or prev.kind != "video":
            return False
        status = prev.previous_status if prev.status == "skipped" else prev.status
        return status in DONE_STATUSES and prev.settings == self.fingerprints.video \
            and input_changed(prev.identity, self.identities.get(item.stem)) is None

    def records(self, items: list[Any], previous: dict[str, ManifestRecord],
                out: Path) -> list[ManifestRecord | None]:
        """For each input, the record it gets without being processed: ``failed`` for a folder entry that cannot be
        read, ``skipped`` when an earlier run with the same settings finished it from the same file
        (:meth:`is_finished` says "done"); None when it must be processed, or when only its exports are missing."""
        self.previous = previous
        plan: list[ManifestRecord | None] = []
        for item in items:
            prev = previous.get(item.stem)
            self.note_input(item, prev)
            if item.problem is not None:
                plan.append(self.stamp(item, failed(item, item.problem)))
            elif self.is_finished(item, prev, out) == "done":
                assert prev is not None
                plan.append(self.stamp(item, skipped_record(item, prev)))
            else:
                plan.append(None)
        return plan

    @property
    def mesh_formats(self) -> tuple[str, ...]:
        """The mesh formats asked for (``--save-mesh``)."""
        return parse_formats(self.config.save_mesh, MESH_FORMATS, "--save-mesh")

    def mesh_formats_for(self, stem: str) -> tuple[str, ...]:
        """The mesh formats to write for an input: those asked for and those an earlier run wrote (kept current)."""
        earlier = self.earlier_meshes.get(stem, set())
        return self.mesh_formats + tuple(sorted(f for f in earlier if f not in self.mesh_formats))

    def sequence_formats_for(self, stem: str, out: Path) -> tuple[str, ...]:
        """The per-track export formats of a video: those asked for and those an earlier run left (no --overwrite)."""
        asked = tuple(self.config.video.export)
        earlier: set[str] = set()
        if not self.config.overwrite:  # on disk, or listed by the earlier run (a file that went missing is remade)
            earlier = sequence_formats(out, stem)
            by_suffix = {v: k for k, v in EXPORT_SUFFIX.items()}
            earlier |= {by_suffix[n.rsplit(".", 1)[-1]] for n in self.earlier_exports.get(stem, set())
                        if n.rsplit(".", 1)[-1] in by_suffix}
        return asked + tuple(f for f in EXPORT_SUFFIX if f in earlier and f not in asked)

    def expected_names(self, stem: str, kind: str) -> list[str]:
        """The outputs of a finished input that only the estimation makes (result files and renders)."""
        cfg = self.config
        render = self.writer.render_enabled
        names = [f"{stem}.mp4"] if kind == "video" and render else []
        if kind == "image":
            names.append(f"{stem}.npz")
            if render:
                names.append(f"{stem}_overlay.png")
                if cfg.side_view:
                    names.append(f"{stem}_side.png")
        elif render and cfg.side_view:
            names.append(f"{stem}_side.mp4")
        return names

    def completeness(self, prev: ManifestRecord, out: Path) -> str | None:
        """"done": an earlier record made with the same settings whose outputs all exist, whose result files are
        valid and that has every output the current settings ask for; "exports": the same, but some asked-for
        meshes or sequence files are missing (they are made from the results); None: the input must be redone."""
        status = prev.previous_status if prev.status == "skipped" else prev.status
        if status not in DONE_STATUSES:
            return None
        if prev.settings != self.fingerprints.of(prev.kind):
            return None
        outputs = set(prev.outputs)
        if prev.kind == "video" and not any(o.endswith(".npz") for o in outputs):
            return None
        for name in self.expected_names(prev.key, prev.kind):
            if name not in outputs or not (out / name).is_file():
                return None
        for name in outputs:
            path = out / name
            if is_result_name(name, prev.key) and (not path.is_file() or validate_result_npz(path)):
                return None
        results = [o for o in outputs if is_result_name(o, prev.key)]
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
            if any(n not in outputs for n in mesh_names(stem, people, self.mesh_formats)):
                return "exports"
        if prev.kind == "video" and not self.sequence_outputs_complete(prev.key, outputs, out):
            return "exports"
        return "done"

    def sequence_outputs_complete(self, stem: str, outputs: set[str], out: Path) -> bool:
        """A video's ``_tracks.npz`` (of these frames, with this world setting) and one export file per track and
        format asked for, when tracking is on."""
        if self.config.video.tracker == "none":
            return True
        if f"{stem}_tracks.npz" not in outputs:
            return False
        meta = read_sequence_meta(out / f"{stem}_tracks.npz")
        if meta is None or meta["settings_fingerprint"] != self.fingerprints.video \
                or meta["world_mode"] != self.config.video.world:
            return False
        return all(n in outputs for n in sequence_names(stem, meta["track_ids"], tuple(self.config.video.export)))

    # -------------------------------------------------------------------------------------------- exports only
    def exports_only(self, item: Any, prev: ManifestRecord, out: Path, timings: dict[str, float],
                     write_sequences: Callable[..., list[str]]) -> ManifestRecord:
        """Write the meshes and sequence files an input lacks from its finished results (no network runs);
        ``write_sequences``: :meth:`metahmr_cli.pipeline.video.VideoRunner.write_sequences`."""
        outputs = [o for o in prev.outputs if (out / o).is_file()]
        results = [o for o in outputs if is_result_name(o, item.stem)]
        added: list[str] = []
        try:
            with StageTimer(timings, "write"):
                for result in results:
                    stem = result[: -len(".npz")]
                    arrays = load_result_npz(out / result)
                    added += write_result_meshes(arrays, out, stem, self.mesh_formats_for(item.stem),
                                                 self.estimator.body)
                if item.kind == "video" and self.config.video.tracker != "none":
                    info = video_info(item.path, count_frames=False)
                    first = load_result_npz(out / sorted(results)[0]) if results else None
                    hw = tuple(int(x) for x in first["image_size"]) if first is not None else info.size[::-1]
                    focal = float(first["K"][0, 0]) if first is not None else 1.0
                    sequence = [o for o in outputs if o == f"{item.stem}_tracks.npz" or
                                o.startswith(f"{item.stem}_tracks/")]
                    outputs = [o for o in outputs if o not in sequence]
                    added += write_sequences(item, out, [out / r for r in sorted(results)], info.fps or 25.0,
                                             hw, focal, reuse=True)
        except Exception as exc:  # noqa: BLE001 - one bad input must not stop the run
            logger.debug("exports of %s failed", item.path, exc_info=True)
            if disk_full(exc):
                raise disk_full_error(item, out) from exc
            return failed(item, f"writing exports from the earlier results failed: {_reason(exc)}")
        new = [n for n in added if n not in outputs]
        outputs += new
        return ManifestRecord(input=str(item.path), key=item.stem, kind=item.kind, status="skipped",
                              reason="results of an earlier run with the same settings are complete; "
                                     f"{len(new)} export file(s) added from them (use --overwrite to redo)",
                              people=prev.people, no_keypoints=prev.no_keypoints, frames=prev.frames,
                              outputs=outputs, previous_status=prev.previous_status or prev.status)


def skipped_record(item: Any, prev: ManifestRecord) -> ManifestRecord:
    """The ``skipped`` record of a finished input (its outputs as ``prev``, the earlier record, lists them)."""
    return ManifestRecord(input=str(item.path), key=item.stem, kind=item.kind, status="skipped",
                          reason="outputs of an earlier run with the same settings are complete "
                                 "(use --overwrite to redo)",
                          people=prev.people, frames=prev.frames, outputs=list(prev.outputs),
                          previous_status=prev.previous_status or prev.status)
