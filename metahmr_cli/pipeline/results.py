"""From the estimator's people to the files of one image or video frame: the result record, meshes and renders.

:class:`ResultWriter` turns a :class:`~metahmr_cli.estimator.Frame` whose people went through the networks into the
:class:`~metahmr_cli.io.writers.FrameResult` the result file holds (the people plus what made them: body, checkpoint,
TTO schedule and settings, camera, settings fingerprint, tracks), writes it with the per-person meshes, and draws
the overlay (and side view) of the frame. It owns the renderer: when it fails, renders are switched off for the
rest of the run (a warning says so) and the run goes on.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from metahmr_cli.config import config_to_dict
from metahmr_cli.estimator import Estimator, Frame, StageTimer
from metahmr_cli.exports import mesh_names
from metahmr_cli.files import write_image_atomic
from metahmr_cli.io.meshes import write_person_meshes
from metahmr_cli.io.writers import FrameResult, write_result_npz
from metahmr_cli.pipeline.fingerprints import Fingerprints
from metahmr_cli.process_config import ProcessConfig
from metahmr_cli.render import MeshRenderer, RendererUnavailable, person_colors, track_colors

logger = logging.getLogger(__name__)

__all__ = ["Renderer", "ResultWriter"]


class Renderer(Protocol):
    """What the runner needs from a renderer (see :class:`metahmr_cli.render.MeshRenderer`)."""

    def render_overlay(self, image: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                       K: np.ndarray, colors: list[tuple[float, float, float]] | None = None) -> np.ndarray: ...

    def render_side_view(self, image_hw: tuple[int, int], vertices: np.ndarray, faces: np.ndarray,
                         K: np.ndarray, colors: list[tuple[float, float, float]] | None = None) -> np.ndarray: ...


class ResultWriter:
    """Writes the result file, meshes and renders of a frame (see the module docstring).

    Args:
        config: the run settings (``save_vertices``, ``side_view``, ``render``, ``max_render_side``).
        estimator: the estimator whose people are written (body, faces, checkpoint, schedule).
        fingerprints: the run's settings fingerprints (stored in every result file).
        renderer: a :class:`Renderer`; None: :class:`metahmr_cli.render.MeshRenderer` at :meth:`setup` when
            renders are on.
    """

    def __init__(self, config: ProcessConfig, estimator: Estimator, fingerprints: Fingerprints,
                 renderer: Renderer | None = None) -> None:
        self.config = config
        self.estimator = estimator
        self.fingerprints = fingerprints
        self.renderer = renderer
        self.render_enabled = config.render
        self.render_disabled_reason: str | None = None
        self.warnings: list[str] = []

    def setup(self) -> None:
        """Make the default renderer when renders are on and none was given."""
        if self.render_enabled and self.renderer is None:
            self.renderer = MeshRenderer(max_side=self.config.max_render_side)

    def close(self) -> None:
        """Release the renderer (its OpenGL context)."""
        if self.renderer is not None and hasattr(self.renderer, "close"):
            with contextlib.suppress(Exception):
                self.renderer.close()

    # -------------------------------------------------------------------------------------------- result files
    def result(self, f: Frame) -> FrameResult:
        """The result file's content for a frame: the estimator's people + what made them."""
        p = f.result
        assert p is not None
        est = self.estimator
        tto = dict(config_to_dict(est.tto))
        sched = est.schedule
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
            settings_fingerprint=self.fingerprints.settings if f.frame is None else self.fingerprints.video,
            track_id=None if f.track_ids is None else np.asarray(f.track_ids, np.int64),
            tto_warm_start=None if f.warm is None else np.array([w is not None for w in f.warm], np.bool_),
            dropped_bbox=p.dropped.boxes, dropped_det_score=p.dropped.scores,
            dropped_keypoints2d=p.dropped.keypoints2d, dropped_reason=p.dropped.reason)

    def write_frame(self, f: Frame, out: Path, name: str, formats: tuple[str, ...]) -> list[str]:
        """Write a frame's result file ``out/name`` and its people's meshes in ``formats``; returns the names
        written (relative to ``out``). Nothing stays behind when a write fails."""
        res = self.result(f)
        verts = res.vertices
        if not self.config.save_vertices:
            res.vertices = None
        outputs = [name]
        stem = Path(name).with_suffix("")
        names = mesh_names(stem.as_posix(), res.num_people, formats)
        try:
            with StageTimer(f.timings, "write"):
                write_result_npz(out / name, res)
                if names:
                    for fmt in formats:
                        write_person_meshes(out / stem, verts, self.estimator.faces, fmt,  # type: ignore[arg-type]
                                            colors=person_colors(res.num_people))
        except BaseException:
            for n in outputs + names:
                with contextlib.suppress(OSError):
                    (out / n).unlink()
            raise
        return outputs + names

    # -------------------------------------------------------------------------------------------- renders
    def disable_render(self, exc: Exception) -> None:
        """Switch renders off for the rest of the run (the renderer failed), with a warning."""
        self.render_enabled = False
        self.render_disabled_reason = str(exc)
        msg = f"renders disabled for the rest of the run: {exc}"
        self.warnings.append(msg)
        logger.warning(msg)

    def draw(self, f: Frame) -> tuple[np.ndarray, np.ndarray | None]:
        """The overlay of a frame's meshes on its image, and its side view when asked for."""
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

    def render_image(self, f: Frame, out: Path) -> list[str]:
        """Write an image's ``<stem>_overlay.png`` (and ``<stem>_side.png``); returns the names written."""
        if not self.render_enabled:
            return []
        stem = f.item.stem
        try:
            with StageTimer(f.timings, "render"):
                overlay, side = self.draw(f)
                outputs = [write_image_atomic(out / f"{stem}_overlay.png", overlay).name]
                if side is not None:
                    outputs.append(write_image_atomic(out / f"{stem}_side.png", side).name)
        except RendererUnavailable as exc:
            self.disable_render(exc)
            return []
        return outputs

    def render_video_frame(self, f: Frame, writers: dict[str, Any]) -> None:
        """Add a video frame's overlay (and side view) to the video ``writers`` ("overlay", "side")."""
        if not self.render_enabled or not writers:
            return
        try:
            with StageTimer(f.timings, "render"):
                overlay, side = self.draw(f)
                writers["overlay"].write(overlay)
                if side is not None and "side" in writers:
                    writers["side"].write(side)
        except RendererUnavailable as exc:
            self.disable_render(exc)
