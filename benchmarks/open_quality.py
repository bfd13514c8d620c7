"""How well the open tier fits real photos: people found and the 2D keypoint error before and after TTO.

Runs ``metahmr process`` with the open tier (open body, open Meta-HMR keypoint model, MoveNet MultiPose for
people and keypoints, the default TTO) on the example photos and on every frame of the example clip (extracted
as images, so each frame gets its own overlay), then prints per input the people found and the median 2D error
of the fitted body's keypoints against the detected ones, in percent of each person's box height, before TTO
(the regression alone) and after it; and writes a montage of the overlays.

    python benchmarks/open_quality.py                       # examples/ -> benchmarks/results/open_quality*
    python benchmarks/open_quality.py --device cuda --out /tmp/oq

Target: at most 5 % median after TTO over all people.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
PHOTOS = ("messi5.jpg", "basketball1.png")
CLIP = "pedestrians.mp4"


def extract_frames(video: Path, out: Path) -> list[Path]:
    """Every frame of ``video`` as PNG files ``<stem>_NNN.png`` in ``out``."""
    cap = cv2.VideoCapture(str(video))
    paths = []
    index = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        path = out / f"{video.stem}_{index:03d}.png"
        cv2.imwrite(str(path), frame)
        paths.append(path)
        index += 1
    cap.release()
    return paths


def montage(images: list[np.ndarray], cols: int, cell_w: int = 320) -> np.ndarray:
    """Tile RGB images (each scaled to ``cell_w`` wide, letterboxed to the tallest) into a grid."""
    scaled = []
    for img in images:
        h, w = img.shape[:2]
        scaled.append(cv2.resize(img, (cell_w, max(1, round(h * cell_w / w))), interpolation=cv2.INTER_AREA))
    cell_h = max(s.shape[0] for s in scaled)
    rows = math.ceil(len(scaled) / cols)
    canvas = np.full((rows * cell_h, cols * cell_w, 3), 255, np.uint8)
    for i, s in enumerate(scaled):
        r, c = divmod(i, cols)
        canvas[r * cell_h:r * cell_h + s.shape[0], c * cell_w:(c + 1) * cell_w] = s
    return canvas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results",
                        help="folder of open_quality.json/.md and open_quality_montage.png")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tto", default="metahmr", help="TTO schedule (default: the default)")
    parser.add_argument("--frames", type=int, default=None, help="use only the first N frames of the clip")
    args = parser.parse_args(argv)

    from metahmr_cli.io.writers import load_result_npz
    from metahmr_cli.pipeline import Pipeline, ProcessConfig
    from metahmr_cli.tto import TTOConfig

    work = Path(tempfile.mkdtemp(prefix="open_quality_"))
    inputs = work / "inputs"
    inputs.mkdir(parents=True)
    for name in PHOTOS:
        shutil.copy(EXAMPLES / name, inputs / name)
    frames = extract_frames(EXAMPLES / CLIP, inputs)
    if args.frames is not None:
        for p in frames[args.frames:]:
            p.unlink()
        frames = frames[:args.frames]

    cfg = ProcessConfig(inputs=[str(inputs)], out=work / "results", model="open", device=args.device,
                        tto=TTOConfig(schedule=args.tto))
    t0 = time.perf_counter()
    report = Pipeline(cfg, progress=False).run()
    wall = time.perf_counter() - t0

    rows = []
    all_before, all_after = [], []
    for path in sorted(inputs.iterdir()):
        res = work / "results" / f"{path.stem}.npz"
        if not res.is_file():
            rows.append({"input": path.name, "people": 0, "before_pct": None, "after_pct": None})
            continue
        d = load_result_npz(res)
        heights = d["bbox"][:, 3] - d["bbox"][:, 1]
        before = 100.0 * d["reproj_error_before"] / np.maximum(heights, 1.0)
        after = 100.0 * d["reproj_error_after"] / np.maximum(heights, 1.0)
        good = np.isfinite(before) & np.isfinite(after)
        all_before += before[good].tolist()
        all_after += after[good].tolist()
        rows.append({"input": path.name, "people": int(len(heights)),
                     "before_pct": float(np.median(before[good])) if good.any() else None,
                     "after_pct": float(np.median(after[good])) if good.any() else None,
                     "steps": float(np.mean(d["tto_steps"])) if len(heights) else 0.0})

    overlays = [cv2.cvtColor(cv2.imread(str(work / "results" / f"{Path(n).stem}_overlay.png")), cv2.COLOR_BGR2RGB)
                for n in (*PHOTOS, *(p.name for p in frames[::4]))
                if (work / "results" / f"{Path(n).stem}_overlay.png").is_file()]
    args.out.mkdir(parents=True, exist_ok=True)
    montage_path = args.out / "open_quality_montage.png"
    if overlays:
        cv2.imwrite(str(montage_path), cv2.cvtColor(montage(overlays, cols=3), cv2.COLOR_RGB2BGR))

    summary = {
        "inputs": len(rows), "people": int(sum(r["people"] for r in rows)),
        "median_before_pct": float(np.median(all_before)) if all_before else None,
        "median_after_pct": float(np.median(all_after)) if all_after else None,
        "frames_with_3_or_more": int(sum(r["people"] >= 3 for r in rows if r["input"].startswith(Path(CLIP).stem))),
        "frames": len(frames), "wall_s": wall, "device": args.device, "tto": args.tto,
        "counts": report.counts, "montage": montage_path.name,
    }
    (args.out / "open_quality.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=2))
    lines = ["| input | people | median 2D error before TTO (% box h) | after TTO | mean TTO steps |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        lines.append(f"| {r['input']} | {r['people']} | {fmt(r['before_pct'])} | {fmt(r['after_pct'])} | "
                     f"{r.get('steps', 0):.1f} |")
    lines.append("")
    lines.append(f"All {summary['people']} people: median {summary['median_before_pct']:.2f} % before, "
                 f"{summary['median_after_pct']:.2f} % after TTO; clip frames with >= 3 people: "
                 f"{summary['frames_with_3_or_more']}/{summary['frames']}; {wall:.1f} s on {args.device}.")
    text = "\n".join(lines)
    (args.out / "open_quality.md").write_text(text + "\n")
    print(text)
    print(f"montage: {montage_path}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
