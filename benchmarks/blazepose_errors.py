"""How BlazePose's world landmarks err: the measurement behind the simulated evidence of the open model.

Renders open bodies of random pose and view over procedural backgrounds (``metahmr data synth``'s generator), runs
BlazePose (mediapipe 0.10.21, the bundled full model, static images) on each picture and compares its world
landmarks with the body's ground-truth joints, both centred between the hips, in COCO-17 order:

- people found;
- how often it turns the person around (front and back exchanged: the torso's forward directions disagree);
- the rotation between its world frame and the view (best rotation aligning the two skeletons);
- its scale (size ratio);
- per joint, the offset (median) and spread (s.d. after the rotation) along the person's own axes: left, up and
  forward.

    python benchmarks/blazepose_errors.py                 # 120 people -> benchmarks/results/blazepose_errors.md
    python benchmarks/blazepose_errors.py --n 300 --seed 1

The numbers feed :mod:`metahmr_cli.data.evidence_synth` (its constants quote a run of this script). Rendered bodies
are harder for BlazePose than photos of people, so its errors here are an upper end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# ground-truth joints of the synthetic datasets (24, SPIN's order) -> COCO-17
GT24_OF_COCO17 = (19, 20, 21, 22, 23, 9, 8, 10, 7, 11, 6, 3, 2, 4, 1, 5, 0)
NAMES = ("nose", "leye", "reye", "lear", "rear", "lshoulder", "rshoulder", "lelbow", "relbow", "lwrist", "rwrist",
         "lhip", "rhip", "lknee", "rknee", "lankle", "rankle")


def person_axes(j: np.ndarray) -> np.ndarray:
    """Rows: left, up and forward directions of COCO-17 joints (17, 3) in camera axes (y down)."""
    across = (j[5] - j[6]) + (j[11] - j[12])
    up = 0.5 * (j[5] + j[6]) - 0.5 * (j[11] + j[12])
    a = across / np.linalg.norm(across)
    u = up - (up @ a) * a
    u /= np.linalg.norm(u)
    return np.stack([a, u, np.cross(a, u)])


def best_rotation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The rotation R (3, 3) minimising |x R - y| for centred point sets (N, 3) (Kabsch, no reflection)."""
    u, _, vt = np.linalg.svd(x.T @ y)
    d = np.eye(3)
    d[2, 2] = np.sign(np.linalg.det(u @ vt))
    return u @ d @ vt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=120, help="people to render")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)

    import cv2

    from metahmr_cli.data.synth import SynthConfig, write_synth_dataset
    from metahmr_cli.keypoints.evidence import BLAZEPOSE_OF_COCO17
    from metahmr_cli.native_logs import native_stderr_silenced, quiet_native_logs

    quiet_native_logs()
    import mediapipe as mp

    with tempfile.TemporaryDirectory(prefix="blazepose_errors_") as tmp:
        cfg = SynthConfig(n=args.n, image_size=(384, 384), test_fraction=0.0, seed=args.seed, any_yaw_prob=0.5,
                          depth_range=(2.5, 4.5), overwrite=True)
        res = write_synth_dataset(Path(tmp), cfg, body="open")
        data = np.load(res.train_npz, allow_pickle=False)
        with native_stderr_silenced():
            pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1)
        rows = []
        for i, name in enumerate(data["imgname"]):
            img = cv2.cvtColor(cv2.imread(str(Path(tmp) / str(name))), cv2.COLOR_BGR2RGB)
            with native_stderr_silenced():
                out = pose.process(img)
            if out.pose_world_landmarks is None:
                continue
            lm = out.pose_world_landmarks.landmark
            bp = np.array([[lm[j].x, lm[j].y, lm[j].z] for j in BLAZEPOSE_OF_COCO17])
            gt = data["S"][i][list(GT24_OF_COCO17), :3]
            bp = bp - 0.5 * (bp[11] + bp[12])
            gt = gt - 0.5 * (gt[11] + gt[12])
            axes = person_axes(gt)
            turned = float(person_axes(bp)[2] @ axes[2]) < 0
            rot = best_rotation(bp, gt)
            angle = float(np.degrees(np.arccos(np.clip((np.trace(rot) - 1) / 2, -1, 1))))
            rows.append({"turned": turned, "angle": angle, "scale": float(np.linalg.norm(bp) / np.linalg.norm(gt)),
                         "offset": (bp - gt) @ axes.T, "residual": (bp @ rot - gt) @ axes.T})
        pose.close()
    found = len(rows)
    kept = [r for r in rows if not r["turned"]]
    angles = np.array([r["angle"] for r in kept])
    scales = np.array([r["scale"] for r in kept])
    offset = np.median(np.stack([r["offset"] for r in kept]), axis=0)
    spread = np.stack([r["residual"] for r in kept]).std(axis=0)
    report = {
        "people": args.n, "found": found, "turned_around": found - len(kept),
        "rotation_deg": {"median": float(np.median(angles)), "mean": float(angles.mean()),
                         "p90": float(np.percentile(angles, 90))},
        "scale_sd": float(scales.std()), "scale_median": float(np.median(scales)),
        "offset_m": {n: offset[k].round(3).tolist() for k, n in enumerate(NAMES)},
        "sd_m": {n: spread[k].round(3).tolist() for k, n in enumerate(NAMES)},
    }
    lines = [
        "# BlazePose world landmarks against the ground truth (rendered open bodies)", "",
        f"`python benchmarks/blazepose_errors.py --n {args.n} --seed {args.seed}`", "",
        f"- people found: {found} of {args.n}; turned around (front and back exchanged): {found - len(kept)} "
        f"({100.0 * (found - len(kept)) / max(found, 1):.1f} %)",
        f"- rotation of its world frame against the view: median {np.median(angles):.1f} deg, mean "
        f"{angles.mean():.1f}, 90th percentile {np.percentile(angles, 90):.1f}",
        f"- scale: median {np.median(scales):.3f}, s.d. {scales.std():.3f}", "",
        "| joint | offset left / up / forward (m) | s.d. after rotation (m) |", "|---|---|---|",
    ]
    lines += [f"| {n} | {' / '.join(f'{v:+.3f}' for v in offset[k])} | {' / '.join(f'{v:.3f}' for v in spread[k])} |"
              for k, n in enumerate(NAMES)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "blazepose_errors.md").write_text("\n".join(lines) + "\n")
    (args.out / "blazepose_errors.json").write_text(json.dumps(report, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
