"""Who is there: people found, duplicates, boxes between two people and false boxes, per image, for the open tier's
people finder (``--detector finder``) against MoveNet MultiPose alone at 384 px (``--detector movenet``, the open
tier's detector before the finder), with the detector's CPU time per image.

The images (the tuning set of the finder; the final check images of ``benchmarks/open_quality.py``,
``basketball2.png`` and frames 400 and later of ``vtest.avi``, are never used here):

- ``examples/``: messi5.jpg (1 player; the blurred spectators behind him are neither required nor false),
  basketball1.png (2), frames 0, 10 and 19 of pedestrians.mp4 (3, 3 and 4; a walker entering at the right edge
  and one hidden behind the sign are neither required nor false);
- Debian's ``opencv-doc`` sample data (``--opencv-data``; ``apt-get download opencv-doc`` and ``dpkg-deb -x``):
  frames 0, 50, 100, 200 and 300 of vtest.avi (768 x 576 surveillance: 3, 6, 7, 7 and 6 pedestrians) and their
  2 x 2 tile of frames 0, 100, 200, 300 at full resolution (1536 x 1152, 23 people) and halved (768 x 576, people
  25-50 px tall);
- ultralytics' bus.jpg (3; a coat cut by the left border is neither) and zidane.jpg (2), matplotlib's
  grace_hopper.jpg (a head-and-shoulders portrait, 1), when those packages are installed;
- halved copies of messi5, basketball1 and zidane (a downscaled photo once got a duplicate box on one person).

People were counted by eye on zoomed views, and each was given a box by hand (``LABELS``). A box counts as
finding a person when it overlaps that person's box with an IoU of 0.3 or more (one box per person, Hungarian
matching); any other box is a duplicate when it overlaps a found or missed person by 0.1 or more, a box between
two people when it holds 30 % of each of two people's boxes, ignored when it lies in a region whose people are
neither required nor false, and false otherwise.

    python benchmarks/people_finder.py --opencv-data /path/to/usr/share/doc/opencv-doc/examples/data
    python benchmarks/people_finder.py --out /tmp/pf --configs movenet@384,finder,finder-no-tiles

Writes ``people_finder.{json,md}`` and an overlay contact sheet ``people_finder.png`` into ``--out``
(default ``benchmarks/results``). Times are CPU seconds of one thread (``time.process_time``), which depend less
on the load of a shared machine than wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
VTEST_FRAMES = (0, 50, 100, 200, 300)
"""Frames of vtest.avi used here; 400 and later belong to the final evaluation set."""

LABELS: dict[str, dict[str, list[list[float]]]] = {
    "messi5": {"people": [[60, 65, 459, 339]], "ignore": [[0, 0, 548, 268]]},
    "basketball1": {"people": [[34, 78, 169, 475], [423, 24, 637, 480]], "ignore": []},
    "pedestrians_00": {"people": [[319, 119, 343, 162], [250, 78, 265, 117], [126, 110, 141, 155]], "ignore": []},
    "pedestrians_10": {"people": [[233, 84, 251, 122], [157, 104, 177, 146], [275, 119, 291, 162]],
                       "ignore": [[368, 140, 384, 210]]},
    "pedestrians_19": {"people": [[229, 116, 244, 158], [179, 98, 196, 139], [349, 140, 369, 192],
                                  [365, 138, 384, 191]], "ignore": [[208, 88, 228, 128]]},
    "vtest_000": {"people": [[639, 238, 685, 324], [500, 156, 529, 234], [253, 221, 284, 310]], "ignore": []},
    "vtest_050": {"people": [[506, 216, 540, 305], [551, 218, 589, 302], [669, 257, 714, 369], [373, 180, 400, 256],
                             [434, 173, 458, 242], [413, 179, 449, 250]], "ignore": []},
    "vtest_100": {"people": [[587, 155, 618, 236], [347, 196, 379, 272], [493, 148, 516, 220], [377, 180, 409, 258],
                             [519, 151, 540, 220], [222, 62, 238, 97], [427, 178, 456, 250]], "ignore": []},
    "vtest_200": {"people": [[616, 265, 651, 369], [218, 190, 251, 266], [677, 96, 698, 155], [703, 253, 744, 354],
                             [489, 144, 518, 223], [82, 154, 109, 217], [702, 106, 721, 152]], "ignore": []},
    "vtest_300": {"people": [[583, 160, 612, 236], [185, 161, 220, 236], [313, 213, 346, 294], [618, 166, 644, 234],
                             [298, 158, 324, 232], [242, 159, 265, 222]], "ignore": []},
    "bus": {"people": [[49, 399, 216, 907], [225, 404, 346, 859], [671, 341, 808, 884]], "ignore": [[0, 540, 75, 880]]},
    "zidane": {"people": [[120, 200, 1150, 720], [750, 40, 1145, 720]], "ignore": []},
    "grace_hopper": {"people": [[0, 20, 512, 600]], "ignore": []},
}
"""Hand-made person boxes (x1, y1, x2, y2) per image, and regions whose people are neither required nor false."""

CONFIGS: dict[str, dict] = {
    "movenet@384": {"detector": "movenet"},
    "finder": {"detector": "finder"},
    "finder-no-tiles": {"detector": "finder", "people": {"tile": 0}},
    "finder-centernet-only": {"detector": "finder", "people": {"sizes": ()}},
    "finder-movenet-only": {"detector": "finder", "people": {"boxes": "none", "sizes": (256, 384, 512)}},
}


# ------------------------------------------------------------------------------------------------- images


def _rgb(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path))
    if bgr is None:
        raise FileNotFoundError(path)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _video_frames(path: Path, wanted: tuple[int, ...]) -> dict[int, np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    out: dict[int, np.ndarray] = {}
    index = 0
    while index <= max(wanted):
        ok, bgr = cap.read()
        if not ok:
            break
        if index in wanted:
            out[index] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        index += 1
    cap.release()
    return out


def _scaled(labels: dict, factor: float, dx: float = 0.0, dy: float = 0.0) -> dict:
    return {k: [[(b[0] + dx) * factor, (b[1] + dy) * factor, (b[2] + dx) * factor, (b[3] + dy) * factor] for b in v]
            for k, v in labels.items()}


def build_set(opencv_data: Path) -> tuple[dict[str, np.ndarray], dict[str, dict], list[str]]:
    """The images (RGB), their labels and notes on what could not be found."""
    import cv2

    images: dict[str, np.ndarray] = {}
    labels: dict[str, dict] = {}
    notes: list[str] = []
    for name in ("messi5", "basketball1"):
        images[name] = _rgb(REPO / "examples" / (name + (".jpg" if name == "messi5" else ".png")))
    for i, frame in _video_frames(REPO / "examples" / "pedestrians.mp4", (0, 10, 19)).items():
        images[f"pedestrians_{i:02d}"] = frame
    vtest = opencv_data / "vtest.avi"
    if vtest.is_file():
        frames = _video_frames(vtest, VTEST_FRAMES)
        for i in VTEST_FRAMES:
            images[f"vtest_{i:03d}"] = frames[i]
        tile = np.concatenate([np.concatenate([frames[0], frames[100]], axis=1),
                               np.concatenate([frames[200], frames[300]], axis=1)], axis=0)
        images["vtest_tile2x2"] = tile
        images["vtest_tile2x2_half"] = cv2.resize(tile, (768, 576), interpolation=cv2.INTER_AREA)
        for key, factor in (("vtest_tile2x2", 1.0), ("vtest_tile2x2_half", 0.5)):
            people: list = []
            for frame, (dx, dy) in zip((0, 100, 200, 300), ((0, 0), (768, 0), (0, 576), (768, 576)), strict=True):
                people += _scaled(LABELS[f"vtest_{frame:03d}"], factor, dx, dy)["people"]
            labels[key] = {"people": people, "ignore": []}
    else:
        notes.append(f"vtest.avi not found in {opencv_data}: pass --opencv-data (Debian's opencv-doc)")
    try:
        import ultralytics

        assets = Path(ultralytics.__file__).parent / "assets"
        images["bus"], images["zidane"] = _rgb(assets / "bus.jpg"), _rgb(assets / "zidane.jpg")
    except (ImportError, FileNotFoundError):
        notes.append("ultralytics' bus.jpg and zidane.jpg not found (pip install ultralytics)")
    try:
        import matplotlib

        images["grace_hopper"] = _rgb(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    except (ImportError, FileNotFoundError):
        notes.append("matplotlib's grace_hopper.jpg not found")
    for name in ("messi5", "basketball1", "zidane"):
        if name in images:
            img = images[name]
            images[f"{name}_half"] = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2),
                                                interpolation=cv2.INTER_AREA)
            labels[f"{name}_half"] = _scaled(LABELS[name], 0.5)
    for name in images:
        if name not in labels:
            labels[name] = LABELS[name]
    return images, labels, notes


# ------------------------------------------------------------------------------------------------ scoring


def _ios(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M): the fraction of each box of ``a`` that lies inside each box of ``b``."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    return inter / np.maximum(area[:, None], 1e-9)


def score_boxes(boxes: np.ndarray, label: dict) -> dict[str, int]:
    """found / counted, duplicates, boxes between two people, false and ignored boxes (see the module docstring)."""
    from scipy.optimize import linear_sum_assignment

    from metahmr_cli.detect.base import box_iou

    gt = np.asarray(label["people"], np.float64).reshape(-1, 4)
    ignore = np.asarray(label["ignore"], np.float64).reshape(-1, 4)
    det = np.asarray(boxes, np.float64).reshape(-1, 4)
    iou = box_iou(det, gt) if len(det) and len(gt) else np.zeros((len(det), len(gt)))
    matched: dict[int, int] = {}
    if iou.size:
        for r, c in zip(*linear_sum_assignment(-iou), strict=True):
            if iou[r, c] >= 0.3:
                matched[int(r)] = int(c)
    out = {"counted": len(gt), "found": len(matched), "duplicates": 0, "between": 0, "false": 0, "ignored": 0}
    for i in range(len(det)):
        if i in matched:
            continue
        if len(gt) and (_ios(gt, det[i:i + 1])[:, 0] >= 0.3).sum() >= 2 and iou[i].max() < 0.3:
            out["between"] += 1
        elif len(gt) and iou[i].max() >= 0.1:
            out["duplicates"] += 1
        elif len(ignore) and _ios(det[i:i + 1], ignore).max() >= 0.5:
            out["ignored"] += 1
        else:
            out["false"] += 1
    return out


# ------------------------------------------------------------------------------------------------ running


def build_detector(config: dict, weights: Path | None):
    from metahmr_cli.keypoints.movenet import MoveNetDetector, MoveNetMultiPose
    from metahmr_cli.keypoints.people import PeopleFinder, PeopleSettings
    from metahmr_cli.process_config import DETECTOR_DEFAULTS

    conf, min_box = DETECTOR_DEFAULTS[config["detector"]]
    if config["detector"] == "movenet":
        return MoveNetDetector(MoveNetMultiPose(weights=weights, input_size=384, cache_size=0), conf=conf,
                               min_box_size=min_box)
    return PeopleFinder(PeopleSettings(**config.get("people", {})), conf=conf, min_box_size=min_box, weights=weights)


def run(images: dict[str, np.ndarray], labels: dict[str, dict], configs: list[str],
        weights: Path | None) -> dict[str, dict]:
    import torch

    from metahmr_cli.detect import filter_detections

    torch.set_num_threads(1)  # CPU seconds of one thread: comparable between configurations and machines
    results: dict[str, dict] = {}
    for name in configs:
        det = build_detector(CONFIGS[name], weights)
        det.detect(next(iter(images.values())))  # warm-up: first-run allocations are not the detector's cost
        per_image: dict[str, dict] = {}
        for key, image in images.items():
            h, w = image.shape[:2]
            t0 = time.process_time()
            dets = filter_detections(det.detect(image), min_score=getattr(det, "conf", 0.0),
                                     min_box_size=getattr(det, "min_box_size", 0.0), image_size=(w, h))
            seconds = time.process_time() - t0
            row = score_boxes(dets.xyxy, labels[key])
            row["cpu_seconds"] = round(seconds, 3)
            row["boxes"] = np.round(dets.xyxy, 1).tolist()
            per_image[key] = row
        total = {k: sum(r[k] for r in per_image.values())
                 for k in ("counted", "found", "duplicates", "between", "false", "ignored")}
        # the median: on a shared machine a few images now and then take many times longer
        total["cpu_seconds_per_image"] = round(float(np.median([r["cpu_seconds"] for r in per_image.values()])), 3)
        results[name] = {"images": per_image, "total": total, "detector": getattr(det, "name", name)}
        print(f"{name}: found {total['found']}/{total['counted']}, duplicates {total['duplicates']}, between "
              f"{total['between']}, false {total['false']}, median {total['cpu_seconds_per_image']:.2f} CPU s per "
              "image", flush=True)
    return results


def write_markdown(results: dict[str, dict], notes: list[str], path: Path) -> None:
    names = list(results)
    keys = list(next(iter(results.values()))["images"])
    lines = ["# People found: the open people finder against MoveNet MultiPose alone", "",
             "Generated by `benchmarks/people_finder.py` (see its docstring for the images, the hand labels and the "
             "rules). Per cell: found/counted, then d = duplicates, b = boxes between two people, f = false boxes "
             "(only when non-zero), and the detector's CPU seconds on one thread (total: the median per image).", ""]
    lines.append("| image | " + " | ".join(names) + " |")
    lines.append("|---|" + "---|" * len(names))
    for key in keys:
        cells = []
        for name in names:
            r = results[name]["images"][key]
            extra = " ".join(f"{k[0]}{r[k]}" for k in ("duplicates", "between", "false") if r[k])
            cells.append(f"{r['found']}/{r['counted']} {extra} ({r['cpu_seconds']:.2f} s)".replace("  ", " "))
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    cells = []
    for name in names:
        t = results[name]["total"]
        cells.append(f"**{t['found']}/{t['counted']}**, d {t['duplicates']}, b {t['between']}, f {t['false']} "
                     f"(median {t['cpu_seconds_per_image']:.2f} s/image)")
    lines.append("| **total** | " + " | ".join(cells) + " |")
    lines += ["", *[f"- {n}" for n in notes]]
    path.write_text("\n".join(lines) + "\n")


def write_sheet(images: dict[str, np.ndarray], results: dict[str, dict], config: str, path: Path) -> None:
    """A contact sheet of the images with the boxes of one configuration."""
    import cv2

    tiles = []
    for key, image in images.items():
        canvas = cv2.cvtColor(image, cv2.COLOR_RGB2BGR).copy()
        for x1, y1, x2, y2 in results[config]["images"][key]["boxes"]:
            cv2.rectangle(canvas, (int(x1), int(y1)), (int(x2), int(y2)), (0, 255, 0), max(1, canvas.shape[0] // 300))
        scale = 240 / canvas.shape[0]
        tile = cv2.resize(canvas, (max(1, int(canvas.shape[1] * scale)), 240), interpolation=cv2.INTER_AREA)
        r = results[config]["images"][key]
        cv2.putText(tile, f"{key} {r['found']}/{r['counted']}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (0, 0, 255), 1)
        tiles.append(tile)
    rows, row, width = [], [], 0
    for tile in tiles:
        if width + tile.shape[1] > 1600 and row:
            rows.append(row)
            row, width = [], 0
        row.append(tile)
        width += tile.shape[1]
    rows.append(row)
    full = max(sum(t.shape[1] for t in r) for r in rows)
    sheet = np.concatenate([np.pad(np.concatenate(r, axis=1), ((0, 0), (0, full - sum(t.shape[1] for t in r)), (0, 0)))
                            for r in rows], axis=0)
    cv2.imwrite(str(path), sheet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--opencv-data", type=Path, default=OPENCV_DATA, help="opencv-doc's examples/data folder")
    parser.add_argument("--weights", type=Path, default=None, help="weights root (default: the usual lookup)")
    parser.add_argument("--configs", default="movenet@384,finder", help=f"comma-separated, of {', '.join(CONFIGS)}")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    images, labels, notes = build_set(args.opencv_data)
    for note in notes:
        print("note:", note)
    results = run(images, labels, configs, args.weights)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "people_finder.json").write_text(json.dumps({"results": results, "notes": notes}, indent=1) + "\n")
    write_markdown(results, notes, args.out / "people_finder.md")
    write_sheet(images, results, configs[-1], args.out / "people_finder.png")
    print(f"wrote {args.out / 'people_finder.md'}")


if __name__ == "__main__":
    main()
