"""Open a video's exports in Blender (``bpy`` from PyPI) and check them as a user would see them.

    python -m venv /tmp/bpy && /tmp/bpy/bin/pip install bpy==4.2.0 numpy     # Blender 4.2 as a module (Python 3.11)
    /tmp/bpy/bin/python scripts/blender_check.py results/ pedestrians        # RESULTS_FOLDER VIDEO_STEM

It follows the Blender notes of the README: the scene's frame rate set to the video's and the start frame to 0,
then File > Import > glTF of ``<stem>_tracks/scene.glb`` and File > Import > BVH of every ``track_NNN.bvh`` with
"Update Scene FPS" (its Start Frame cannot go below 1: BVH frame k lands on Blender frame k + 1, one frame after
the glTF's frame k). Checked, per track:

- the glTF animation starts at the track's first video frame (Blender frame = video frame index) and the track is
  hidden (scale 0) before it;
- the feet are on the floor: the lowest vertex of the evaluated (skinned) mesh at every visible frame, in Blender's
  z-up world (the floor at z = 0);
- the BVH's pelvis follows the glTF's at every frame of the track, one Blender frame later (the same motion, the
  same timing otherwise).

Prints one JSON report and exits 1 when a check fails. Needs only bpy and numpy (not metahmr).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(folder: Path, stem: str) -> int:
    import bpy

    with np.load(folder / f"{stem}_tracks.npz", allow_pickle=False) as z:
        fps, stride = float(z["fps"]), int(z["stride"])
        tracks = {int(t): z[f"track_{int(t)}/frames"] for t in z["track_ids"]}
        world = str(z["world_source"]) if "world_source" in z.files else "camera"
    report: dict = {"blender": bpy.app.version_string, "fps": fps, "stride": stride, "world": world, "tracks": {}}
    ok = True

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = int(round(fps)), round(fps) / fps
    scene.frame_start = 0
    bpy.ops.import_scene.gltf(filepath=str(folder / f"{stem}_tracks" / "scene.glb"))
    depsgraph = bpy.context.evaluated_depsgraph_get()
    pelvis_glb: dict[int, dict[int, np.ndarray]] = {}
    for tid, frames in tracks.items():
        arma = bpy.data.objects[f"track_{tid}"]
        mesh = bpy.data.objects[f"track_{tid}_mesh"]
        action = arma.animation_data.action
        pose_keys = sorted({k.co[0] for fc in action.fcurves if fc.data_path.startswith("pose.bones")
                            for k in fc.keyframe_points})
        first = float(pose_keys[0])
        lowest, hidden_before = [], True
        pelvis_glb[tid] = {}
        for f in range(0, int(frames[-1]) + 1, stride):
            scene.frame_set(f)
            depsgraph.update()
            if f < frames[0]:
                hidden_before &= max(arma.matrix_world.to_scale()) < 1e-6
                continue
            ev = mesh.evaluated_get(depsgraph)
            m = ev.to_mesh()
            co = np.empty(len(m.vertices) * 3)
            m.vertices.foreach_get("co", co)
            ev.to_mesh_clear()
            world_co = co.reshape(-1, 3) @ np.array(mesh.matrix_world)[:3, :3].T + np.array(mesh.matrix_world)[:3, 3]
            lowest.append(float(world_co[:, 2].min()))
            pelvis_glb[tid][f] = np.array(arma.matrix_world @ arma.pose.bones["pelvis"].head)
        lowest_arr = np.array(lowest)
        rec = {"video_first_frame": int(frames[0]), "glb_first_key_frame": first,
               "hidden_before_start": bool(hidden_before),
               "lowest_vertex_z_m": {"median": float(np.median(lowest_arr)), "min": float(lowest_arr.min()),
                                     "max": float(lowest_arr.max())}}
        rec["starts_at_video_time"] = abs(first - frames[0]) < 1e-3
        rec["feet_on_floor"] = bool(abs(np.median(lowest_arr)) < 0.05) if world == "ground" else None
        ok &= rec["starts_at_video_time"] and hidden_before and rec["feet_on_floor"] is not False
        report["tracks"][tid] = rec

    for tid, frames in tracks.items():
        bvh = folder / f"{stem}_tracks" / f"track_{tid:03d}.bvh"
        if not bvh.is_file():
            continue
        before = set(bpy.data.objects)
        bpy.ops.import_anim.bvh(filepath=str(bvh), frame_start=1, update_scene_fps=True, update_scene_duration=True)
        arma = next(o for o in bpy.data.objects if o not in before and o.type == "ARMATURE")
        errs = []
        for k, f in enumerate(range(0, int(frames[-1]) + 1, stride)):
            scene.frame_set(k + 1)  # BVH frame k = processed frame k of the video, at Blender frame k + 1
            if f in pelvis_glb[tid]:
                p = np.array(arma.matrix_world @ arma.pose.bones["pelvis"].head)
                errs.append(float(np.linalg.norm(p - pelvis_glb[tid][f])))
        rec = report["tracks"][tid]
        rec["bvh_scene_fps"] = scene.render.fps / scene.render.fps_base
        rec["bvh_first_frame"] = float(arma.animation_data.action.frame_range[0])
        rec["bvh_pelvis_vs_glb_max_m"] = max(errs)
        rec["bvh_in_sync"] = max(errs) < 0.01
        ok &= rec["bvh_in_sync"]
    report["ok"] = bool(ok)
    print(json.dumps(report, indent=1, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(Path(args[0]), args[1]))
