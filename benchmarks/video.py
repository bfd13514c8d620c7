"""Video as motion: identities, accuracy and smoothness of cold-start TTO, warm-start TTO and warm start +
smoothing, on a synthetic clip with ground truth.

The clip (:mod:`metahmr_cli.video.synthetic`): two people of the open body walking and turning along paths that
cross (the nearer one occludes the other), 30 fps, rendered by the project's renderer. ``metahmr process`` runs on
it with the open tier (MoveNet people and keypoints, the open model, the default TTO) once per configuration, and
the printed table gives per configuration:

- identity switches (CLEAR MOT: a ground-truth person matched to another track id than before; target 0);
- MPJPE and PA-MPJPE (mm, the 14 LSP joints, root = mid-hips) of people matched to the ground truth (box IoU);
- acceleration error (mm/frame^2, root-relative joints, over runs of consecutive matched frames);
- TTO steps per person and TTO time per frame.

    python benchmarks/video.py                          # 60 frames -> benchmarks/results/video.{json,md}
    python benchmarks/video.py --frames 30 --out /tmp/v --device cuda
    python benchmarks/video.py --clip examples/pedestrians.mp4   # also: tracks of a real clip + contact sheet

Target: warm + smoothing not less accurate than cold per frame, with a lower acceleration error.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LSP = list(range(25, 39))          # the 14 LSP joints of the 49-joint set
HIPS = (27 - 25, 28 - 25)          # right and left hip within LSP

CONFIGS = {
    "cold": {"warm_start": False, "smooth": 0.0},
    "cold+smooth": {"warm_start": False, "smooth": 1.0},
    "cold+smooth+kp": {"warm_start": False, "smooth": 1.0, "smooth_keypoints": True},
    "warm": {"warm_start": True, "smooth": 0.0},
    "warm+smooth": {"warm_start": True, "smooth": 1.0},
}


def _root_relative(j: np.ndarray) -> np.ndarray:
    lsp = j[..., LSP, :]
    return lsp - lsp[..., list(HIPS), :].mean(axis=-2, keepdims=True)


def _match(pred_boxes: np.ndarray, gt_boxes: np.ndarray, min_iou: float = 0.3) -> list[tuple[int, int]]:
    from scipy.optimize import linear_sum_assignment

    from metahmr_cli.detect.base import box_iou

    if len(pred_boxes) == 0:
        return []
    iou = box_iou(pred_boxes.astype(np.float64), gt_boxes.astype(np.float64))
    rows, cols = linear_sum_assignment(-iou)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= min_iou]


def evaluate(run_dir: Path, stem: str, gt: dict[str, np.ndarray]) -> dict[str, float]:
    """Identity switches, MPJPE, PA-MPJPE and acceleration error of one run against the ground truth."""
    from metahmr_cli.evaluation.metrics import accel_error, id_switches, pa_mpjpe
    from metahmr_cli.io.writers import load_result_npz

    P, T = gt["joints"].shape[:2]
    gt_rel = _root_relative(gt["joints"])                     # (P, T, 14, 3)
    pred_rel = np.full_like(gt_rel, np.nan)
    assigned: list[dict[int, int]] = []
    steps = []
    for t in range(T):
        path = run_dir / stem / f"frame_{t:06d}.npz"
        if not path.is_file():
            assigned.append({})
            continue
        a = load_result_npz(path)
        pairs = _match(a["bbox"], gt["boxes"][:, t])
        assigned.append({g: int(a["track_id"][p]) for p, g in pairs if a["track_id"][p] >= 0})
        for p, g in pairs:
            pred_rel[g, t] = _root_relative(a["joints3d"][p].astype(np.float64))
            steps.append(int(a["tto_steps"][p]))
    ok = np.isfinite(pred_rel[..., 0, 0])
    err = np.linalg.norm(pred_rel - gt_rel, axis=-1).mean(-1)     # (P, T)
    pa = np.full((P, T), np.nan)
    pa[ok] = pa_mpjpe(pred_rel[ok], gt_rel[ok])
    accel = []
    for g in range(P):
        run: list[int] = []
        for t in list(range(T)) + [T]:
            if t < T and ok[g, t]:
                run.append(t)
                continue
            if len(run) >= 3:
                accel.append(accel_error(pred_rel[g, run], gt_rel[g, run], mm=True))
            run = []
    accel_all = np.concatenate(accel) if accel else np.array([np.nan])
    return {"id_switches": id_switches(assigned), "matched": int(ok.sum()), "of": int(P * T),
            "mpjpe_mm": float(np.nanmean(err[ok]) * 1000), "pa_mpjpe_mm": float(np.nanmean(pa[ok]) * 1000),
            "accel_mm": float(accel_all.mean()), "tto_steps": float(np.mean(steps)) if steps else float("nan")}


def run_configs(video: Path, out: Path, names: list[str], device: str, gt: dict[str, np.ndarray]) -> dict:
    from metahmr_cli.estimator import Estimator
    from metahmr_cli.pipeline import Pipeline
    from metahmr_cli.process_config import ProcessConfig
    from metahmr_cli.video.motion import VideoSettings

    est = Estimator.from_config(model="open", device=device)
    results = {}
    for name in names:
        video_cfg = VideoSettings(export=(), **CONFIGS[name])
        cfg = ProcessConfig(inputs=[str(video)], out=out / name, model="open", device=device, render=False,
                            video=video_cfg, overwrite=True)
        pipe = Pipeline(cfg, estimator=est, progress=False)
        t0 = time.perf_counter()
        report = pipe.run()
        wall = time.perf_counter() - t0
        frames = report.summary["processed"]["frames"]
        res = evaluate(out / name, video.stem, gt)
        res.update({"tto_s_per_frame": report.summary["stage_seconds"]["tto"] / max(frames, 1),
                    "wall_s_per_frame": wall / max(frames, 1), "warm_start_active": pipe._warm_possible()})
        results[name] = res
        print(f"{name:12s} " + "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in res.items()), flush=True)
    return results


def clip_tracks(clip: Path, out: Path, device: str, sheet_dir: Path) -> dict:
    """Track a real clip with the defaults; a contact sheet of its overlay frames for counting switches by eye."""
    import cv2

    from metahmr_cli.pipeline import Pipeline
    from metahmr_cli.process_config import ProcessConfig

    cfg = ProcessConfig(inputs=[str(clip)], out=out / "clip", model="open", device=device, overwrite=True)
    report = Pipeline(cfg, progress=False).run()
    with np.load(out / "clip" / f"{clip.stem}_tracks.npz") as z:
        ids = [int(t) for t in z["track_ids"]]
        frames = {t: z[f"track_{t}/frames"].tolist() for t in ids}
    cap = cv2.VideoCapture(str(out / "clip" / f"{clip.stem}.mp4"))
    tiles = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        tiles.append(cv2.resize(img, (320, round(img.shape[0] * 320 / img.shape[1]))))
    cap.release()
    cols = 5
    rows = [np.concatenate(tiles[i:i + cols] + [np.zeros_like(tiles[0])] * (cols - len(tiles[i:i + cols])), 1)
            for i in range(0, len(tiles), cols)]
    sheet = sheet_dir / f"video_{clip.stem}_tracks.jpg"
    sheet_dir.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(sheet), np.concatenate(rows, 0), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return {"tracks": len(ids), "frames_per_track": {str(t): len(f) for t, f in frames.items()},
            "track_frames": {str(t): f for t, f in frames.items()}, "sheet": sheet.name,
            "counts": report.counts}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--clip", type=Path, default=None, help="also track this real clip")
    args = ap.parse_args()

    import torch

    from metahmr_cli.body.layout import BUNDLED_DIR
    from metahmr_cli.body.smpl import load_body_model
    from metahmr_cli.video.synthetic import make_walking_scene, render_walking_video, scene_ground_truth

    work = args.out or Path(tempfile.mkdtemp(prefix="metahmr-video-"))
    work.mkdir(parents=True, exist_ok=True)
    body = load_body_model(BUNDLED_DIR, "neutral", dtype=torch.float64, with_h36m=False)
    scene = make_walking_scene(body, frames=args.frames, fps=30.0, size=(960, 540), seed=0)
    gt = scene_ground_truth(scene, body)
    video = work / "walk.mp4"
    t0 = time.perf_counter()
    render_walking_video(scene, body, video)
    print(f"rendered {args.frames} frames in {time.perf_counter() - t0:.1f} s -> {video}", flush=True)
    results = {"frames": args.frames, "fps": scene.fps, "size": list(scene.size), "device": args.device,
               "configs": run_configs(video, work, args.configs.split(","), args.device, gt)}
    if args.clip is not None:
        results["clip"] = {"path": str(args.clip), **clip_tracks(args.clip, work, args.device, args.results)}
        print(f"clip: {results['clip']['tracks']} tracks, frames per track {results['clip']['frames_per_track']}, "
              f"contact sheet {results['clip']['sheet']}")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "video.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["# Video benchmark (synthetic two-person walk, open tier)", "",
             f"{args.frames} frames at 30 fps, 960x540, device {args.device}.", "",
             "| config | ID switches | matched | MPJPE mm | PA-MPJPE mm | accel mm/f^2 | TTO steps | TTO s/frame |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results["configs"].items():
        lines.append(f"| {name} | {r['id_switches']} | {r['matched']}/{r['of']} | {r['mpjpe_mm']:.1f} | "
                     f"{r['pa_mpjpe_mm']:.1f} | {r['accel_mm']:.2f} | {r['tto_steps']:.1f} | "
                     f"{r['tto_s_per_frame']:.3f} |")
    if "clip" in results:
        c = results["clip"]
        lines += ["", f"Real clip `{Path(c['path']).name}` (defaults: MoveNet, ByteTrack, warm start, smoothing): "
                  f"{c['tracks']} tracks.", "", "| track | frames | first | last |", "|---|---|---|---|"]
        for t, f in c["track_frames"].items():
            lines.append(f"| {t} | {len(f)} | {f[0]} | {f[-1]} |")
        lines += ["", f"Overlay frames, 5 per row: [{c['sheet']}]({c['sheet']}) (one colour per track id)."]
    (args.results / "video.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
