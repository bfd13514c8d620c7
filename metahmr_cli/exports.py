"""Exports over finished results: mesh files from result files, and a video's sequence files from its frame files.

Exports are a cheap step after the estimation, never a reason to redo it: a re-run of ``process`` that asks for
another mesh format (``--save-mesh``) or another animation format (``--export``) writes them from the stored
results (vertices, or the body posed with the stored parameters) without running the networks, and a re-run
*adds* what it asks for and keeps what an earlier run wrote (``--overwrite`` aside):

- meshes: ``<stem>_personNN.<fmt>`` per image, ``<stem>/frame_NNNNNN_personNN.<fmt>`` per video frame;
- a video's sequence files: ``<stem>_tracks.npz`` (every track, camera frame, plus the world frame),
  ``<stem>_tracks/track_NNN.{npz,glb,bvh}`` (AMASS layout, animated GLB, BVH, in the world frame) and
  ``<stem>_tracks/scene.glb`` (every track and the camera, with ``glb``).
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from metahmr_cli.errors import ConfigError
from metahmr_cli.geometry.rotation import axis_angle_to_rotmat
from metahmr_cli.io.meshes import write_person_meshes
from metahmr_cli.render.overlay import person_colors
from metahmr_cli.video.export import write_bvh, write_glb_animation, write_scene_glb
from metahmr_cli.video.sequences import collect_tracks, write_amass, write_tracks_npz
from metahmr_cli.video.world import camera_world, estimate_world, onto_floor, sole_contacts

__all__ = ["EXPORT_SUFFIX", "MESH_FORMATS", "SCENE_NAME", "mesh_names", "parse_formats", "sequence_formats",
           "sequence_names", "write_result_meshes", "write_sequence_files"]

MESH_FORMATS: tuple[str, ...] = ("obj", "ply", "glb")
EXPORT_SUFFIX = {"amass": "npz", "glb": "glb", "bvh": "bvh"}
"""File suffix of each per-track export format."""
SCENE_NAME = "scene.glb"
"""Every track of a video and its camera, in ``<stem>_tracks/`` (written with the ``glb`` export)."""
_TRACK_FILE = re.compile(r"track_(\d+)\.(npz|glb|bvh)")


def parse_formats(value: str | tuple[str, ...] | list[str] | None, allowed: tuple[str, ...], what: str
                  ) -> tuple[str, ...]:
    """A list of formats from ``"glb,obj"``, ``("glb", "obj")``, ``"none"`` or None, in order and without repeats.

    Raises:
        ConfigError: a format not in ``allowed`` (the message names ``what`` and the choices).
    """
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        name = str(item).strip().lower()
        if name and name != "none" and name not in out:
            out.append(name)
    bad = [f for f in out if f not in allowed]
    if bad:
        raise ConfigError(f"{what} {','.join(bad)}: choose from {', '.join(allowed)} (comma-separated), or none.")
    return tuple(out)


def mesh_names(stem: str, people: int, formats: tuple[str, ...]) -> list[str]:
    """Output names (relative to the output folder) of the meshes of one result: ``<stem>_personNN.<fmt>``."""
    return [f"{stem}_person{i:02d}.{fmt}" for fmt in formats for i in range(people)]


def write_result_meshes(result: dict[str, np.ndarray], out: Path, stem: str, formats: tuple[str, ...], body: Any,
                        *, only_missing: bool = True) -> list[str]:
    """The meshes of a finished result (``load_result_npz`` arrays) in each of ``formats``.

    Uses the stored ``vertices``; without them (``--no-save-vertices``) the body is posed with the stored
    parameters (``BODY(global_orient, body_pose, betas) + transl``). ``only_missing``: files that exist are kept as
    they are. Returns every mesh name of the result in these formats (written or kept).
    """

    people = int(np.asarray(result["global_orient"]).shape[0])
    names = mesh_names(stem, people, formats)
    todo = [f for f in formats if not only_missing or any(not (out / n).is_file()
                                                          for n in mesh_names(stem, people, (f,)))]
    if not todo or people == 0:
        return names
    vertices = result.get("vertices")
    if vertices is None:
        vertices = _pose_body(body, result)
    for fmt in todo:
        write_person_meshes(out / stem, np.asarray(vertices), np.asarray(body.faces), fmt,  # type: ignore[arg-type]
                            colors=person_colors(people))
    return names


def _pose_body(body: Any, result: dict[str, np.ndarray]) -> np.ndarray:
    """(P, V, 3) vertices of a result's people posed with its parameters (camera frame)."""
    import torch


    aa = np.concatenate([result["global_orient"], result["body_pose"]], axis=1).reshape(-1, 24, 3)
    with torch.no_grad():
        rot = axis_angle_to_rotmat(torch.as_tensor(aa, dtype=body.dtype, device=body.device))
        out = body(rot, torch.as_tensor(result["betas"], dtype=body.dtype, device=body.device),
                   torch.as_tensor(result["transl"], dtype=body.dtype, device=body.device))
    return out.vertices.cpu().numpy()


# ------------------------------------------------------------------------------------------------------ videos
def sequence_formats(out: Path, stem: str) -> set[str]:
    """The export formats an earlier run left in ``<stem>_tracks/``."""
    folder = out / f"{stem}_tracks"
    found: set[str] = set()
    if folder.is_dir():
        by_suffix = {v: k for k, v in EXPORT_SUFFIX.items()}
        for p in folder.iterdir():
            m = _TRACK_FILE.fullmatch(p.name)
            if m and p.is_file():
                found.add(by_suffix[m.group(2)])
            elif p.name == SCENE_NAME:
                found.add("glb")
    return found


def sequence_names(stem: str, track_ids: list[int], formats: tuple[str, ...] | set[str]) -> list[str]:
    """The sequence files of a video (relative names): ``<stem>_tracks.npz`` and the exports of each format."""
    names = [f"{stem}_tracks.npz"]
    for fmt in sorted(formats, key=list(EXPORT_SUFFIX).index):
        names += [f"{stem}_tracks/track_{t:03d}.{EXPORT_SUFFIX[fmt]}" for t in track_ids]
        if fmt == "glb" and track_ids:
            names.append(f"{stem}_tracks/{SCENE_NAME}")
    return names


def read_sequence_meta(path: Path) -> dict[str, Any] | None:
    """``track_ids``, ``settings_fingerprint`` and ``world_mode`` of a ``<stem>_tracks.npz`` (None: unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {"track_ids": [int(t) for t in z["track_ids"]],
                    "settings_fingerprint": str(z["settings_fingerprint"]) if "settings_fingerprint" in z.files
                    else "", "world_mode": str(z["world_mode"]) if "world_mode" in z.files else ""}
    except Exception:  # noqa: BLE001 - a damaged file means: remake it
        return None


_FRAME_KEYS = ("frame_index", "track_id", "global_orient", "body_pose", "betas", "transl", "bbox", "det_score",
               "keypoints2d", "tto_steps", "reproj_error_before", "reproj_error_after", "tto_converged", "fell_back",
               "K")


def write_sequence_files(out: Path, stem: str, frame_files: list[Path], *, body: Any, fps: float, stride: int,
                         image_hw: tuple[int, int], focal: float, formats: tuple[str, ...] | set[str],
                         meta: dict[str, Any], world_mode: str = "ground",
                         only_missing: bool = False) -> list[str]:
    """``<stem>_tracks.npz`` and the per-track exports of a finished video, in the world frame (each file written
    atomically).

    Args:
        frame_files: the video's frame result files.
        fps: the source video's frame rate; stride: every how many source frames one was processed.
        formats: export formats ("amass", "glb", "bvh").
        meta: what made the frames (recorded in ``<stem>_tracks.npz``).
        world_mode: "ground" (floor and gravity from the people's foot contacts) or "camera" (the camera's axes).
        only_missing: keep export files that exist (the frames did not change since they were written).
    Returns:
        the names written or kept (relative to ``out``). Exports of tracks that no longer exist are removed.
    """

    frames = []
    for path in frame_files:
        with np.load(path, allow_pickle=False) as z:
            frames.append({k: z[k] for k in _FRAME_KEYS if k in z.files})
    tracks = collect_tracks(frames, body)
    K = frames[0]["K"] if frames else np.array([[focal, 0, image_hw[1] / 2], [0, focal, image_hw[0] / 2],
                                                [0, 0, 1]])
    world = camera_world()
    if world_mode == "ground" and tracks:
        soles, up = zip(*(sole_contacts(body, t.poses, t.betas, t.trans) for t in tracks), strict=True)
        groups = np.concatenate([np.full(t.num_frames, t.track_id) for t in tracks])
        world = estimate_world(np.concatenate(soles), np.concatenate(up), groups)
    moved = [onto_floor(t, world, body) for t in tracks]
    exported = [t for t, _ in moved]
    depth_scale = {t.track_id: s for t, s in moved}
    gender = str(meta.get("gender", getattr(body, "gender", "neutral")))
    body_model = str(meta.get("body_model", getattr(body, "name", "smpl")))
    ids = [t.track_id for t in tracks]
    names = sequence_names(stem, ids, formats)
    sequences = out / names[0]
    if not (only_missing and sequences.is_file()):
        write_tracks_npz(sequences, tracks, fps=fps, stride=stride, K=K, image_size=image_hw,
                         meta={**meta, "world_mode": world_mode}, world=world, depth_scale=depth_scale)
    for t in exported:
        for fmt in formats:
            path = out / f"{stem}_tracks/track_{t.track_id:03d}.{EXPORT_SUFFIX[fmt]}"
            if only_missing and path.is_file():
                continue
            if fmt == "amass":
                write_amass(path, t, body, fps=fps, stride=stride, gender=gender, world=world, body_model=body_model)
            elif fmt == "glb":
                write_glb_animation(path, t, body, fps=fps, stride=stride, world=world)
            else:
                write_bvh(path, t, body, fps=fps, stride=stride, world=world)
    scene = out / f"{stem}_tracks" / SCENE_NAME
    if "glb" in formats and tracks and not (only_missing and scene.is_file()):
        write_scene_glb(scene, exported, body, fps=fps, stride=stride, K=K, image_size=image_hw, world=world)
    folder = out / f"{stem}_tracks"
    if folder.is_dir():  # exports of tracks (or formats) that this video's frames no longer have
        keep = {Path(n).name for n in names}
        for p in folder.iterdir():
            if p.is_file() and (_TRACK_FILE.fullmatch(p.name) or p.name == SCENE_NAME) and p.name not in keep:
                with contextlib.suppress(OSError):
                    p.unlink()
    return names


def world_summary(out: Path, stem: str) -> dict[str, Any] | None:
    """The world frame recorded in ``<stem>_tracks.npz`` (source, camera height, quality), for messages."""
    try:
        with np.load(out / f"{stem}_tracks.npz", allow_pickle=False) as z:
            if "world_source" not in z.files:
                return None
            return {"source": str(z["world_source"]), "camera_height": float(z["camera_height"]),
                    "quality": json.loads(str(z["world_quality"]))}
    except Exception:  # noqa: BLE001
        return None
