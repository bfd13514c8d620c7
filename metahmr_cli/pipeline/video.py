"""Videos in ``metahmr process``: frames in order, people followed over time, results per frame and per track.

:class:`VideoRunner` processes one video: it decodes the frames (ahead, in a background thread), tracks the people
(:class:`~metahmr_cli.video.motion.TrackBook`: track ids, keypoint and output smoothing, warm-started TTO from the
person's previous frame), sends the frames through the estimator (one at a time with warm starts, else in batches),
writes each frame's result file, meshes and overlay frame (:class:`~metahmr_cli.pipeline.results.ResultWriter`), and
at the end the per-track sequences and exports (``<stem>_tracks.npz``, AMASS, glTF, BVH: :mod:`metahmr_cli.exports`).

Resume: after every finished frame (or every few, for a large state) the tracks' state is written to
``<stem>/resume.npz``; an interrupted video resumes from its last finished frame exactly as if never interrupted,
and a finished one keeps its frames (e.g. to remake the exports).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from metahmr_cli.estimator import Dropped, Estimator, Frame, People, StageTimer
from metahmr_cli.exports import read_sequence_meta, world_summary, write_result_meshes, write_sequence_files
from metahmr_cli.files import save_npz_atomic
from metahmr_cli.geometry.camera import camera_for
from metahmr_cli.io.sources import input_changed, iter_video_frames, video_info
from metahmr_cli.io.writers import ManifestRecord, display_path, load_result_npz, validate_result_npz
from metahmr_cli.pipeline.fingerprints import Fingerprints, warm_possible
from metahmr_cli.pipeline.imported import ImportedPeople
from metahmr_cli.pipeline.records import batch_full, outcome
from metahmr_cli.pipeline.results import ResultWriter
from metahmr_cli.pipeline.resume import Resume
from metahmr_cli.pipeline.threads import read_ahead
from metahmr_cli.process_config import ProcessConfig
from metahmr_cli.progress import WorkProgress
from metahmr_cli.render import VideoWriter
from metahmr_cli.video.motion import STATE_VERSION, TrackBook

logger = logging.getLogger(__name__)

__all__ = ["STATE_EVERY_FRAME_BYTES", "VIDEO_STATE_NAME", "VideoRunner"]

VIDEO_STATE_NAME = "resume.npz"
"""``<stem>/resume.npz``: while a video is unfinished, the state its tracks carry past its last finished frame."""
STATE_EVERY_FRAME_BYTES = 64 * 2**20
"""A video's resume state up to this size is written after every frame; a larger one (warm-start weights of big
networks) every ceil(size / this) frames, and a resumed run recomputes the frames after the last one written."""

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


class VideoRunner:
    """Processes the videos of a run (see the module docstring).

    Args:
        config: the run settings (``video``, ``video_stride``, ``max_frames``, ``batch_size``).
        estimator: the estimator (set up).
        writer: writes each frame's results and renders.
        resume: the run's resume records (identities, fingerprints, mesh and export formats kept).
        people: the imported boxes / keypoints of the run.
        fingerprints: the run's settings fingerprints.
        stage_totals: the run's seconds per stage (a video's timings are added to it).
        prefetch_depth: frames decoded ahead (0: in turn).
        console, progress: where the world-frame line of a video's exports is said.
    """

    def __init__(self, config: ProcessConfig, estimator: Estimator, writer: ResultWriter, resume: Resume,
                 people: ImportedPeople, fingerprints: Fingerprints, stage_totals: dict[str, float],
                 prefetch_depth: int, console: Any = None, progress: bool = False) -> None:
        self.config = config
        self.estimator = estimator
        self.writer = writer
        self.resume = resume
        self.people = people
        self.fingerprints = fingerprints
        self.stage_totals = stage_totals
        self.prefetch_depth = prefetch_depth
        self.console = console
        self.progress = progress

    def add_timings(self, timings: dict[str, float]) -> None:
        for k, v in timings.items():
            self.stage_totals[k] += v

    def resumable_frame(self, path: Path) -> dict[str, np.ndarray] | None:
        """The arrays of a frame file of an earlier run with the same settings, else None (its meshes are made
        from it when missing)."""
        if not path.is_file() or validate_result_npz(path):
            return None
        with contextlib.suppress(Exception):
            arrays = load_result_npz(path)
            if str(arrays.get("settings_fingerprint", "")) != self.fingerprints.video:
                return None
            if self.config.save_vertices and "vertices" not in arrays:
                return None
            return arrays
        return None

    def load_state(self, item: Any, out: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """The resume state an interrupted run left for this video, when it was made with the current settings
        from the same file (else None)."""
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
        elif meta.get("fingerprint") != self.fingerprints.video:
            why = "other settings"
        else:
            why = input_changed(meta.get("identity"), self.resume.identities.get(item.stem))
        if why is not None:
            logger.info("%s: the frames of an earlier run are not resumed (%s)", Path(str(item.path)).name, why)
            return None
        return meta, arrays

    def _save_state(self, item: Any, out: Path, book: Any, frames: list[int], keypoints: Any) -> int:
        """Write the video's resume state after its frame ``frames[-1]`` (atomically); returns its size in bytes."""
        meta, arrays = book.export_state(keypoints)
        meta.update(frame=int(frames[-1]), frames=[int(f) for f in frames], fingerprint=self.fingerprints.video,
                    identity=self.resume.identities.get(item.stem))
        save_npz_atomic(out / item.stem / VIDEO_STATE_NAME, {"meta": np.array(json.dumps(meta, sort_keys=True)),
                                                             **arrays})
        return int(sum(a.nbytes for a in arrays.values()))

    def warm_from_arrays(self, weights: dict[str, np.ndarray]) -> dict[str, Any]:
        """Stored warm-start weights as the tensors the TTO starts from (on the estimator's device)."""
        return {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.estimator.device) for k, v in weights.items()}

    def process(self, item: Any, out: Path, progress: WorkProgress) -> ManifestRecord:
        """Process a video into ``out``: its frames, overlay video and per-track exports; returns its record."""
        cfg = self.config
        timings: dict[str, float] = defaultdict(float)
        info = video_info(item.path, count_frames=False)
        source_fps = info.fps or 25.0
        fps = source_fps / cfg.video_stride
        W, H = info.size
        camera = camera_for(W, H, self.estimator.camera_settings)  # one camera per video (no EXIF: the diagonal)
        focal = float(camera[0][0, 0])
        book = TrackBook(cfg.video, fps=source_fps, stride=cfg.video_stride,
                         det_conf=self.estimator.config.det_conf if self.people.boxes is None else 0.0)
        warm = warm_possible(self.config, self.estimator)
        outputs: list[str] = []
        writers: dict[str, Any] = {}
        if self.writer.render_enabled:
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
        state = None if cfg.overwrite else self.load_state(item, out)
        state_frame = None if state is None else int(state[0]["frame"])
        reuse = state is not None or (not cfg.overwrite and self.resume.finished_video(item))
        keypoint_states: dict[int, Any] = {}  # frame -> the keypoint filters as they were after that frame
        save = {"every": 1, "since": 0}

        def save_state() -> None:
            save["since"] += 1
            if save["since"] < save["every"]:
                return
            size = self._save_state(item, out, book, done, keypoint_states.pop(done[-1], None))
            save["every"], save["since"] = max(1, -(-size // STATE_EVERY_FRAME_BYTES)), 0

        def emit(fr: Frame) -> None:
            nonlocal people, no_keypoints
            with StageTimer(fr.timings, "smooth"):
                self.apply_motion(fr, book, warm)
            frame_name = f"{item.stem}/frame_{fr.frame:06d}.npz"
            outputs.extend(self.writer.write_frame(fr, out, frame_name, self.resume.mesh_formats_for(item.stem)))
            written.append(out / frame_name)
            done.append(int(fr.frame))
            with StageTimer(fr.timings, "write"):
                save_state()
            keypoint_states.pop(int(fr.frame), None)
            self.writer.render_video_frame(fr, writers)
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

        it = read_ahead(iter_video_frames(item.path, stride=cfg.video_stride, max_frames=cfg.max_frames),
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
                    arrays = self.resumable_frame(frame_file)
                    if arrays is None and state_frame is not None:
                        logger.warning("%s: frame %d of the interrupted run is missing; it and the frames after it "
                                       "are recomputed, the tracks continuing from the frames before it", name, index)
                reuse = arrays is not None
                if arrays is not None:  # finished by an earlier run with the same settings: keep it, render it
                    assert not pending  # frames are reused only before the first recomputed one
                    fr = self.frame_from_arrays(item, index, image, arrays)
                    self.resume_motion(fr, book, arrays)
                    if state is not None and index == state_frame:  # the tracks exactly as the run left them
                        book.load_state(*state, warm=self.warm_from_arrays)
                    n = fr.num_people
                    outputs.append(f"{item.stem}/{frame_file.name}")
                    with StageTimer(timings, "write"):
                        outputs.extend(write_result_meshes(arrays, out, f"{item.stem}/frame_{index:06d}",
                                                           self.resume.mesh_formats_for(item.stem),
                                                           self.estimator.body))
                    written.append(frame_file)
                    done.append(int(index))
                    self.writer.render_video_frame(fr, writers)
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

                frame = self.estimator.prepare(image, source=str(item.path), frame=index, camera=camera,
                                               timings=defaultdict(float), item=item, path=Path(item.path),
                                               people_hook=hook, **self.people.inputs(item, index, image))
                frame.track_ids = ids[0]
                if warm:
                    frame.warm = book.warm_states(frame.track_ids, frame.boxes, index)
                pending.append(frame)
                # warm starts need the previous frame's TTO to have finished: one frame at a time then
                if warm or batch_full(pending, cfg.batch_size):
                    flush()
            if pending:
                flush()
            for w in writers.values():
                if self.writer.render_enabled:
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
                outputs += self.write_sequences(item, out, written, source_fps, (H, W), focal)
        with contextlib.suppress(OSError):  # the video is complete: its frames are all there is to resume from
            (out / item.stem / VIDEO_STATE_NAME).unlink()
        with contextlib.suppress(OSError):
            (out / item.stem).rmdir()  # a video without frames (none decoded) leaves no empty folder
        self.add_timings(timings)
        status, reason = outcome(people, no_keypoints, self.config.tto.min_keypoints, " in any frame")
        return ManifestRecord(input=str(item.path), key=item.stem, kind="video", status=status, reason=reason,
                              people=people, no_keypoints=no_keypoints, frames=len(written), outputs=outputs,
                              timings=dict(timings))

    def apply_motion(self, fr: Frame, book: Any, warm: bool) -> None:
        """Smooth a frame's people per track (rotations, translation, held shape) and keep their TTO end state."""
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

    def resume_motion(self, fr: Frame, book: Any, arrays: dict[str, np.ndarray]) -> None:
        """Feed a frame finished by an earlier run to the tracker and the filters (resume)."""
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

    def write_sequences(self, item: Any, out: Path, frame_files: list[Path], fps: float, image_hw: tuple[int, int],
                         focal: float, reuse: bool = False) -> list[str]:
        """``<stem>_tracks.npz`` and the per-track exports of a finished video (:mod:`metahmr_cli.exports`), in the
        formats asked for plus those an earlier run left; ``reuse``: the frames are those of the files already there,
        so files that exist and were made from them stay."""
        cfg = self.config
        est = self.estimator
        gender = str(getattr(est.body, "gender", "neutral"))
        meta = {"source": display_path(str(item.path))[0], "body_model": est.body_name, "gender": gender,
                "checkpoint": est.checkpoint_id, "tto_schedule": est.schedule_label, "model_tier": est.tier,
                "settings_fingerprint": self.fingerprints.video, "tracker": cfg.video.tracker,
                "smooth": float(cfg.video.smooth), "warm_start": warm_possible(self.config, self.estimator)}
        if reuse:
            earlier = read_sequence_meta(out / f"{item.stem}_tracks.npz")
            reuse = earlier is not None and earlier["settings_fingerprint"] == self.fingerprints.video \
                and earlier["world_mode"] == cfg.video.world
        names = write_sequence_files(out, item.stem, frame_files, body=est.body, fps=fps, stride=cfg.video_stride,
                                     image_hw=image_hw, focal=focal,
                                     formats=self.resume.sequence_formats_for(item.stem, out), meta=meta,
                                     world_mode=cfg.video.world, only_missing=reuse)
        self.say_world(item, out)
        return names

    def say_world(self, item: Any, out: Path) -> None:
        """One line on the world frame of a video's exports: the floor and how sure its estimate is."""
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

    def frame_from_arrays(self, item: Any, index: int, image: np.ndarray, a: dict[str, np.ndarray]) -> Frame:
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

