"""How well the open tier reads real people: who is found, which way they face, and how its bodies compare with an
independent real-image 3D estimate, before and after TTO.

The evaluation set is defined in ``benchmarks/open_quality_set/`` (``annotations.json``; sources, licences and
labelling rules in its ``README.md``): openly licensed photos and surveillance frames plus images derived from them
(2x2 tiles of frames, half-body and head-and-shoulders crops, horizontal mirrors), every person whose head and torso
are visible labelled by eye with a box, whether the whole body is in the picture and which way they face (toward /
away / side-left / side-right), tiny or hidden people marked as ignore regions. The images are built here from the
sources; nothing but the annotations is stored. ``held-out`` images (``basketball2.png`` and the frames of
``vtest.avi`` from index 400 on, with everything derived from them) are a final check that nobody tunes on.

The open tier runs through the public ``Pipeline`` / ``ProcessConfig`` API with its default settings, twice: TTO
``none`` (the regression alone, "before") and the default schedule ("after"); only the ``.npz`` outputs are read.
Per image and in total (all / tuning / held-out) it reports:

- people found / counted (a box matching a labelled person with IoU >= 0.5, or lying on part of them: "partial")
  and false boxes (matching nobody and not on an ignore region; see :mod:`metahmr_cli.evaluation.people`);
- facing correct / labelled among the people found: the facing of the output body from its 3D joints (the torso
  normal against the line of sight, about the body's own vertical axis; :mod:`metahmr_cli.evaluation.facing`);
- the median 2D error of the fitted body's keypoints against the detected ones in percent of the box height;
- PA-MPJPE against BlazePose's metric world landmarks (mediapipe 0.10.21 ``solutions.pose``,
  ``static_image_mode=True, model_complexity=1``, on the labelled box enlarged by 25 % per side) over 12 body joints
  (shoulders, elbows, wrists, hips, knees, ankles), for people labelled whole-body with at least 10 of the 12
  landmarks at visibility >= 0.5, lying on the labelled person; and for how many of them TTO lowers that
  disagreement;
- how far the facing of a mirrored image is from the mirror of the original's, how much the knees of people cut
  off by the frame are bent (legs the picture does not show should come out straight), and how far the torsos
  pitch toward the camera against BlazePose's (a camera looking down sees upright people pitched toward it).

Writes ``open_quality.json`` / ``.md`` (``--name`` changes the stem) and a montage JPEG: per image the overlay with
the labels (green: found and facing right, orange: found and facing wrong or unlabelled, red: missed, grey: ignore,
magenta: false box; ``T/A/L/R`` label -> output facing), the side view, and a top view of the meshes with an arrow
along each torso's forward direction (camera at the bottom).

    python benchmarks/open_quality.py                          # the whole set -> benchmarks/results/open_quality*
    python benchmarks/open_quality.py --set held-out           # the final check only
    python benchmarks/open_quality.py --checkpoint runs/open/checkpoints/last.pt --out /tmp/oq
    python benchmarks/open_quality.py --show-labels /tmp/labels   # draw the labels on every image; no run
    python benchmarks/open_quality.py --quick --out /tmp/oq    # 3 images from examples/ (no download)

Sources: ``examples/`` and installed packages (ultralytics, matplotlib), plus ``basketball2.png`` and ``vtest.avi``
from Debian's ``opencv-doc`` sample data: found in ``--opencv-data DIR``, ``$METAHMR_OPENCV_DATA``,
``/usr/share/doc/opencv-doc/examples/data`` or the cache ``~/.cache/metahmr/opencv-doc``, else fetched into that
cache with ``apt-get download opencv-doc`` + ``dpkg-deb -x``. Every source is checked against its SHA-256.

Targets (printed beside the results): >= 90 % found, >= 95 % facing correct, TTO lowers the BlazePose
disagreement for most people, median PA-MPJPE against BlazePose <= 55 mm.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from metahmr_cli.evaluation.facing import FACING_CLASSES

REPO = Path(__file__).resolve().parents[1]
SET_DIR = REPO / "benchmarks" / "open_quality_set"
ANNOTATIONS = SET_DIR / "annotations.json"
SPLITS = ("tuning", "held-out")
KINDS = ("photo", "surveillance", "tile", "half-body", "head-and-shoulders", "mirror")
QUICK_IMAGES = ("messi5", "messi5_mirror", "basketball1_waist")
"""``--quick``: a photo, its mirror and a half-body crop, all from ``examples/`` (nothing to download)."""
OPENCV_DOC_DATA = Path("usr/share/doc/opencv-doc/examples/data")
SYSTEM_ROOT = Path("/")
"""Where an installed ``opencv-doc`` lives (its data under ``SYSTEM_ROOT / OPENCV_DOC_DATA``)."""
MATCH_IOU = 0.5
CUT_TOLERANCE = 0.02
"""A crop that removes more than this fraction of a person's box height or width cuts the body."""

BLAZE_MARGIN = 0.25
BLAZE_MIN_VISIBILITY = 0.5
BLAZE_MIN_VISIBLE = 10
"""A person has a BlazePose reference when at least this many of the 12 landmarks have visibility >= 0.5 (a
walker seen from the side hides a wrist or an elbow behind the body; BlazePose still places it in 3D)."""
BLAZE_MIN_ON_PERSON = 10
"""Of the 12 landmarks, at least this many must lie on the labelled box (grown by 20 %): the landmarks are of the
labelled person, not of a neighbour."""
PA_JOINTS: tuple[tuple[str, int], ...] = (
    ("Left Shoulder", 11), ("Right Shoulder", 12), ("Left Elbow", 13), ("Right Elbow", 14),
    ("Left Wrist", 15), ("Right Wrist", 16), ("Left Hip", 23), ("Right Hip", 24),
    ("Left Knee", 25), ("Right Knee", 26), ("Left Ankle", 27), ("Right Ankle", 28),
)
"""The 12 body joints: output joint name -> BlazePose landmark index (left/right are the subject's in both)."""
KNEES: tuple[tuple[str, str, str], ...] = (("Left Hip", "Left Knee", "Left Ankle"),
                                           ("Right Hip", "Right Knee", "Right Ankle"))

TARGETS: dict[str, tuple[str, float]] = {
    "found_pct": (">=", 90.0),
    "facing_pct": (">=", 95.0),
    "pa_lowered_pct": (">", 50.0),
    "pa_after_mm": ("<=", 55.0),
}
TARGET_TEXT = {
    "found_pct": ">= 90 % of the labelled people found",
    "facing_pct": ">= 95 % of the people found facing the labelled way",
    "pa_lowered_pct": "TTO lowers the BlazePose disagreement for most people",
    "pa_after_mm": "median PA-MPJPE against BlazePose <= 55 mm (after TTO)",
}


# ------------------------------------------------------------------------------------------------------ the set


@dataclass
class Person:
    """A labelled person: ``box`` (4,) x1, y1, x2, y2 px; ``facing`` one of FACING_CLASSES or None (not labelled);
    ``full_body``: the whole body lies inside the picture; ``ref``: ``<labelled image id>#<index>``, the same
    person in every image derived from that one."""

    box: np.ndarray
    facing: str | None
    full_body: bool
    ref: str


@dataclass
class SetImage:
    """One image of the set: ``image`` (H, W, 3) uint8 RGB, the labelled people, ignore boxes (M, 4)."""

    id: str
    split: str
    kind: str
    evaluate: bool
    image: np.ndarray
    people: list[Person]
    ignore: np.ndarray
    recipe: str
    mirror_of: str | None = None


def _box_array(boxes: Any) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def mirror_labels(people: list[Person], ignore: np.ndarray, width: int) -> tuple[list[Person], np.ndarray]:
    """Labels of the horizontally mirrored image: boxes flipped about the vertical centre line, side-left and
    side-right swapped (toward and away stay)."""
    swap = {"side-left": "side-right", "side-right": "side-left"}
    flipped = [replace(p, box=np.array([width - p.box[2], p.box[1], width - p.box[0], p.box[3]]),
                       facing=swap.get(p.facing, p.facing)) for p in people]
    ign = _box_array(ignore)
    return flipped, np.stack([width - ign[:, 2], ign[:, 1], width - ign[:, 0], ign[:, 3]], axis=1)


def _clip(box: np.ndarray, region: np.ndarray) -> np.ndarray | None:
    x1, y1 = max(box[0], region[0]), max(box[1], region[1])
    x2, y2 = min(box[2], region[2]), min(box[3], region[3])
    return np.array([x1, y1, x2, y2]) if x2 > x1 and y2 > y1 else None


def crop_labels(people: list[Person], ignore: np.ndarray, region: list[float] | np.ndarray, scale: float,
                keep: list[int]) -> tuple[list[Person], np.ndarray]:
    """Labels of ``image[y1:y2, x1:x2]`` resized by ``scale``: the people listed in ``keep`` (indices) stay counted,
    their boxes clipped to the crop (``full_body`` false once the crop cuts more than CUT_TOLERANCE of the box);
    every other person the crop still shows becomes an ignore box, as do the clipped ignore boxes."""
    region = np.asarray(region, dtype=np.float64)
    origin = np.array([region[0], region[1], region[0], region[1]])
    kept, ign = [], []
    for i, p in enumerate(people):
        clipped = _clip(p.box, region)
        if clipped is None:
            if i in keep:
                raise ValueError(f"crop {region.tolist()} does not show person {i} ({p.ref})")
            continue
        if i in keep:
            size = np.array([p.box[2] - p.box[0], p.box[3] - p.box[1]] * 2)
            cut = bool((np.abs(clipped - p.box) > CUT_TOLERANCE * size).any())
            kept.append(replace(p, box=(clipped - origin) * scale, full_body=p.full_body and not cut))
        else:
            ign.append((clipped - origin) * scale)
    for box in _box_array(ignore):
        clipped = _clip(box, region)
        if clipped is not None:
            ign.append((clipped - origin) * scale)
    return kept, _box_array(ign)


def tile_labels(parts: list[tuple[list[Person], np.ndarray, tuple[int, int]]]) -> tuple[list[Person], np.ndarray]:
    """Labels of images placed side by side: each part's people and ignore boxes shifted by its (dx, dy)."""
    people: list[Person] = []
    ign = []
    for part_people, part_ignore, (dx, dy) in parts:
        shift = np.array([dx, dy, dx, dy], dtype=np.float64)
        people += [replace(p, box=p.box + shift) for p in part_people]
        ign += list(_box_array(part_ignore) + shift)
    return people, _box_array(ign)


def load_annotations(path: Path = ANNOTATIONS) -> dict[str, Any]:
    """Read and check the annotation file; raises ValueError naming the image and field at fault."""
    doc = json.loads(Path(path).read_text())
    ids: dict[str, dict[str, Any]] = {}
    for entry in doc["images"]:
        iid = entry.get("id")
        if not iid or iid in ids:
            raise ValueError(f"{path}: image id {iid!r} missing or repeated")
        if entry.get("split") not in SPLITS or entry.get("kind") not in KINDS:
            raise ValueError(f"{path}: image {iid}: split must be one of {SPLITS} and kind one of {KINDS}")
        recipes = [k for k in ("source", "tile", "mirror", "crop") if k in entry]
        if len(recipes) != 1:
            raise ValueError(f"{path}: image {iid} needs exactly one of source / tile / mirror / crop")
        if "source" in entry:
            if entry["source"] not in doc["sources"]:
                raise ValueError(f"{path}: image {iid}: unknown source {entry['source']!r}")
            for p in entry["people"]:
                box = p["box"]
                if p.get("facing") not in (*FACING_CLASSES, None) or not (box[0] < box[2] and box[1] < box[3]):
                    raise ValueError(f"{path}: image {iid}: bad person {p}")
        parents = entry.get("tile") or [entry.get("mirror") or entry.get("crop", {}).get("from")]
        for parent in parents:
            if parent is not None and parent not in ids:
                raise ValueError(f"{path}: image {iid} is made from {parent!r}, which must be defined before it")
            # what is derived from a held-out image is held out as well
            if parent is not None and ids[parent]["split"] == "held-out" and entry["split"] != "held-out":
                raise ValueError(f"{path}: image {iid} is made from held-out {parent} and must be held-out")
        ids[iid] = entry
    return doc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "metahmr" / "opencv-doc"


def find_opencv_data(explicit: Path | None = None, *, download: bool = True,
                     names: tuple[str, ...] = ("vtest.avi", "basketball2.png")) -> Path:
    """The folder of OpenCV's sample data (Debian's ``opencv-doc``): ``explicit``, ``$METAHMR_OPENCV_DATA``,
    the system copy, the cache; else ``apt-get download opencv-doc`` + ``dpkg-deb -x`` into the cache."""
    if explicit is not None:  # an explicit folder is the only one looked at
        if all((Path(explicit) / n).is_file() for n in names):
            return Path(explicit)
        raise FileNotFoundError(f"--opencv-data {explicit} lacks {', '.join(names)}; give the folder "
                                f"usr/share/doc/opencv-doc/examples/data of an unpacked opencv-doc package.")
    candidates = [Path(os.environ["METAHMR_OPENCV_DATA"])] if os.environ.get("METAHMR_OPENCV_DATA") else []
    candidates += [SYSTEM_ROOT / OPENCV_DOC_DATA, _cache_dir() / OPENCV_DOC_DATA]
    for folder in candidates:
        if all((folder / n).is_file() for n in names):
            return folder
    if not download:
        raise FileNotFoundError("OpenCV's sample data (vtest.avi, basketball2.png) was not found; install Debian's "
                                "opencv-doc or pass --opencv-data DIR.")
    cache = _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        try:
            subprocess.run(["apt-get", "download", "opencv-doc"], cwd=tmp, check=True, capture_output=True)
            deb = next(Path(tmp).glob("opencv-doc_*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), str(cache)], check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError, StopIteration) as exc:
            raise FileNotFoundError(
                "OpenCV's sample data was not found and `apt-get download opencv-doc` failed "
                f"({exc}); install opencv-doc, or unpack it and pass --opencv-data DIR.") from exc
    return find_opencv_data(None, download=False, names=names)


def source_file(name: str, spec: dict[str, str], opencv_data: Path | None) -> Path:
    """Path of a source of the set, checked against its SHA-256."""
    if "opencv_data" in spec:
        if opencv_data is None:
            raise FileNotFoundError(f"source {name} needs OpenCV's sample data (--opencv-data)")
        path = opencv_data / spec["opencv_data"]
    elif "package" in spec:
        found = importlib.util.find_spec(spec["package"])
        if found is None or found.origin is None:
            raise FileNotFoundError(f"source {name} ships with the Python package {spec['package']}, which is not "
                                    f"installed; install it (pip install {spec['package']}).")
        path = Path(found.origin).parent / spec["file"]
    else:
        path = REPO / spec["file"]
    if not path.is_file():
        raise FileNotFoundError(f"source {name}: {path} is missing")
    if _sha256(path) != spec["sha256"]:
        raise ValueError(f"source {name}: {path} is not the file the labels were made on (SHA-256 differs from "
                         f"{spec['sha256']}); use that exact file.")
    return path


def _needed(doc: dict[str, Any], wanted: set[str]) -> set[str]:
    """``wanted`` ids and every image they are made from."""
    entries = {e["id"]: e for e in doc["images"]}
    out: set[str] = set()
    todo = list(wanted)
    while todo:
        iid = todo.pop()
        if iid in out:
            continue
        out.add(iid)
        e = entries[iid]
        todo += e.get("tile", []) + [p for p in (e.get("mirror"), e.get("crop", {}).get("from")) if p]
    return out


def _read_frames(path: Path, indices: set[int]) -> dict[int, np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames: dict[int, np.ndarray] = {}
    try:
        for index in range(max(indices) + 1):
            if index in indices:
                ok, frame = cap.read()
                if not ok:
                    break
                frames[index] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            elif not cap.grab():
                break
    finally:
        cap.release()
    missing = indices - set(frames)
    if missing:
        raise ValueError(f"{path} has no frames {sorted(missing)}")
    return frames


def select_ids(doc: dict[str, Any], which: str, images: list[str] | None = None) -> list[str]:
    """Ids of the evaluated images of a split (``all``, ``tuning``, ``held-out``) or the given ids, in file order."""
    entries = [e for e in doc["images"] if e.get("evaluate", True)]
    if images:
        known = {e["id"] for e in entries}
        unknown = [i for i in images if i not in known]
        if unknown:
            raise ValueError(f"unknown image ids {unknown}; known: {', '.join(sorted(known))}")
        return [e["id"] for e in entries if e["id"] in images]
    return [e["id"] for e in entries if which == "all" or e["split"] == which]


def build_set(doc: dict[str, Any], ids: list[str], *, opencv_data: Path | None = None, download: bool = True
              ) -> list[SetImage]:
    """Build the images ``ids`` (and what they are made from) with their labels; returns them in file order."""
    needed = _needed(doc, set(ids))
    entries = [e for e in doc["images"] if e["id"] in needed]
    sources = {e["source"] for e in entries if "source" in e}
    names = tuple(sorted(doc["sources"][s]["opencv_data"] for s in sources if "opencv_data" in doc["sources"][s]))
    if names:
        opencv_data = find_opencv_data(opencv_data, download=download, names=names)
    paths = {s: source_file(s, doc["sources"][s], opencv_data) for s in sources}
    frames: dict[str, dict[int, np.ndarray]] = {}
    for s in sources:
        wanted = {int(e["frame"]) for e in entries if e.get("source") == s and "frame" in e}
        if wanted:
            frames[s] = _read_frames(paths[s], wanted)
    built: dict[str, SetImage] = {}
    for e in entries:
        iid = e["id"]
        common = dict(id=iid, split=e["split"], kind=e["kind"], evaluate=bool(e.get("evaluate", True)))
        if "source" in e:
            if "frame" in e:
                image = frames[e["source"]][int(e["frame"])]
                recipe = f"{doc['sources'][e['source']].get('opencv_data', e['source'])} frame {e['frame']}"
            else:
                bgr = cv2.imread(str(paths[e["source"]]), cv2.IMREAD_COLOR)
                image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                recipe = paths[e["source"]].name
            people = [Person(np.asarray(p["box"], np.float64), p.get("facing"), bool(p["full_body"]), f"{iid}#{i}")
                      for i, p in enumerate(e["people"])]
            built[iid] = SetImage(**common, image=image, people=people, ignore=_box_array(e.get("ignore", [])),
                                  recipe=recipe)
        elif "mirror" in e:
            src = built[e["mirror"]]
            people, ign = mirror_labels(src.people, src.ignore, src.image.shape[1])
            built[iid] = SetImage(**common, image=np.ascontiguousarray(src.image[:, ::-1]), people=people,
                                  ignore=ign, recipe=f"{src.id} mirrored left-right", mirror_of=src.id)
        elif "crop" in e:
            c = e["crop"]
            src = built[c["from"]]
            x1, y1, x2, y2 = (int(v) for v in c["box"])
            scale = float(c.get("scale", 1.0))
            image = np.ascontiguousarray(src.image[y1:y2, x1:x2])
            if scale != 1.0:
                size = (round((x2 - x1) * scale), round((y2 - y1) * scale))
                image = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)
            people, ign = crop_labels(src.people, src.ignore, [x1, y1, x2, y2], scale, list(c["people"]))
            built[iid] = SetImage(**common, image=image, people=people, ignore=ign,
                                  recipe=f"{src.id}[{y1}:{y2}, {x1}:{x2}] x {scale:g}")
        else:
            parts = [built[t] for t in e["tile"]]
            h, w = parts[0].image.shape[:2]
            if len(parts) != 4 or any(p.image.shape[:2] != (h, w) for p in parts):
                raise ValueError(f"tile {iid} needs four images of one size")
            image = np.vstack([np.hstack([parts[0].image, parts[1].image]), np.hstack([parts[2].image,
                                                                                      parts[3].image])])
            offsets = [(0, 0), (w, 0), (0, h), (w, h)]
            people, ign = tile_labels([(p.people, p.ignore, o) for p, o in zip(parts, offsets, strict=True)])
            built[iid] = SetImage(**common, image=image, people=people, ignore=ign,
                                  recipe="2x2 tile of " + ", ".join(e["tile"]))
    return [built[i] for i in ids]


# --------------------------------------------------------------------------------------------- the reference


class BlazePoseReference:
    """BlazePose's metric world landmarks of a labelled person: the independent 3D estimate the output is
    compared with. Settings are fixed here on purpose (not taken from the project's own mediapipe backend), so the
    reference does not move when the pipeline changes."""

    def __init__(self) -> None:
        from metahmr_cli.native_logs import native_stderr_silenced, quiet_native_logs

        quiet_native_logs()
        import mediapipe as mp

        self._silenced = native_stderr_silenced
        with native_stderr_silenced():
            self._pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1,
                                                enable_segmentation=False, min_detection_confidence=0.5)

    def close(self) -> None:
        self._pose.close()

    def __call__(self, image: np.ndarray, person: Person) -> tuple[np.ndarray | None, str]:
        """(12, 3) world landmarks in metres (PA_JOINTS order) and "ok", or None and why there is none."""
        if not person.full_body:
            return None, "not whole-body"
        h, w = image.shape[:2]
        x1, y1, x2, y2 = person.box
        bw, bh = x2 - x1, y2 - y1
        cx1, cy1 = int(max(0, math.floor(x1 - BLAZE_MARGIN * bw))), int(max(0, math.floor(y1 - BLAZE_MARGIN * bh)))
        cx2, cy2 = int(min(w, math.ceil(x2 + BLAZE_MARGIN * bw))), int(min(h, math.ceil(y2 + BLAZE_MARGIN * bh)))
        crop = np.ascontiguousarray(image[cy1:cy2, cx1:cx2])
        with self._silenced():
            result = self._pose.process(crop)
        if result.pose_world_landmarks is None or result.pose_landmarks is None:
            return None, "no BlazePose landmarks"
        idx = [b for _, b in PA_JOINTS]
        lm = result.pose_landmarks.landmark
        visible = int(sum(lm[i].visibility >= BLAZE_MIN_VISIBILITY for i in idx))
        if visible < BLAZE_MIN_VISIBLE:
            return None, f"{visible}/12 landmarks visible"
        xy = np.array([[cx1 + lm[i].x * (cx2 - cx1), cy1 + lm[i].y * (cy2 - cy1)] for i in idx])
        grow = 0.2 * np.array([-bw, -bh, bw, bh])
        lo, hi = person.box[:2] + grow[:2], person.box[2:] + grow[2:]
        on_person = int(((xy >= lo) & (xy <= hi)).all(axis=1).sum())
        if on_person < BLAZE_MIN_ON_PERSON:
            return None, f"landmarks off the person ({on_person}/12)"
        world = result.pose_world_landmarks.landmark
        return np.array([[world[i].x, world[i].y, world[i].z] for i in idx]), "ok"


# ---------------------------------------------------------------------------------------------- measurements


def knee_bend(joints3d: np.ndarray, joint_names: list[str]) -> np.ndarray:
    """Knee flexion in degrees (0 = straight leg) of the left and right leg: (..., J, 3) -> (..., 2)."""
    index = {n: i for i, n in enumerate(joint_names)}
    out = []
    for hip, knee, ankle in KNEES:
        thigh = joints3d[..., index[knee], :] - joints3d[..., index[hip], :]
        shank = joints3d[..., index[ankle], :] - joints3d[..., index[knee], :]
        cos = (thigh * shank).sum(-1) / (np.linalg.norm(thigh, axis=-1) * np.linalg.norm(shank, axis=-1))
        out.append(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    return np.stack(out, axis=-1)


def torso_pitch(up: np.ndarray) -> np.ndarray:
    """How far a torso's up direction (..., 3) (camera frame) leans toward the camera, in degrees: 0 = upright in
    the image's vertical plane, positive = shoulders toward the camera. A camera looking down at upright people
    sees their torsos pitched toward it by about its own tilt."""
    up = np.asarray(up, dtype=np.float64)
    return np.degrees(np.arctan2(-up[..., 2], -up[..., 1]))


def wrap_degrees(a: float | np.ndarray) -> float | np.ndarray:
    """Angles wrapped into [-180, 180)."""
    return (np.asarray(a) + 180.0) % 360.0 - 180.0


def _names(result: dict[str, np.ndarray]) -> list[str]:
    return [str(n) for n in result["joint_names"]]


def _people_of(result: dict[str, np.ndarray] | None) -> int:
    return 0 if result is None else int(len(result["bbox"]))


def evaluate_image(im: SetImage, runs: dict[str, dict[str, np.ndarray] | None],
                   references: list[tuple[np.ndarray | None, str]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per-image row and per-person records for one image.

    Args:
        im: the image and its labels.
        runs: ``{"before": result, "after": result}``: the ``.npz`` contents of the TTO-``none`` and default runs
            (None: no result file).
        references: per labelled person, BlazePose's (12, 3) world joints or None, and the reason.
    """
    from metahmr_cli.evaluation.facing import facing_angle, facing_matches, torso_frame
    from metahmr_cli.evaluation.metrics import pa_mpjpe
    from metahmr_cli.evaluation.people import match_people

    people_boxes = np.array([p.box for p in im.people]).reshape(-1, 4)
    per_run: dict[str, dict[str, Any]] = {}
    for name, res in runs.items():
        boxes = np.zeros((0, 4)) if res is None else res["bbox"].astype(np.float64)
        match = match_people(boxes, people_boxes, im.ignore, min_iou=MATCH_IOU)
        angles = (facing_angle(res["joints3d"], _names(res)) if res is not None and len(boxes)
                  else np.zeros(0))
        per_run[name] = {"result": res, "match": match, "angles": angles}
    records = []
    for i, p in enumerate(im.people):
        rec: dict[str, Any] = {"image": im.id, "split": im.split, "kind": im.kind, "person": i, "ref": p.ref,
                               "box": [round(float(v), 1) for v in p.box], "facing_label": p.facing,
                               "full_body": p.full_body, "reference": references[i][1]}
        ref = references[i][0]
        if ref is not None:  # shoulders are rows 0-1 of PA_JOINTS, hips rows 6-7
            rec["pitch_reference"] = round(float(torso_pitch(ref[:2].mean(0) - ref[6:8].mean(0))), 1)
        for name, run in per_run.items():
            d = int(run["match"].person_det[i])
            rec[f"found_{name}"] = d >= 0
            if d < 0:
                continue
            res = run["result"]
            names = _names(res)
            angle = float(run["angles"][d])
            rec[f"det_{name}"] = d
            rec[f"partial_{name}"] = bool(run["match"].person_partial[i])
            rec[f"facing_angle_{name}"] = round(angle, 1) if math.isfinite(angle) else None
            rec[f"facing_ok_{name}"] = None if p.facing is None else bool(facing_matches(p.facing, angle))
            pitch = float(torso_pitch(torso_frame(res["joints3d"][d], names)[1]))
            rec[f"pitch_{name}"] = round(pitch, 1) if math.isfinite(pitch) else None
            if not p.full_body:
                rec[f"knee_bend_{name}"] = [round(float(v), 1) for v in knee_bend(res["joints3d"][d], names)]
            if ref is not None:
                pred = res["joints3d"][d][[names.index(n) for n, _ in PA_JOINTS]].astype(np.float64)
                rec[f"pa_mm_{name}"] = round(float(pa_mpjpe(pred[None], ref[None], mm=True)[0]), 2)
            if name == "after":
                h = max(float(res["bbox"][d, 3] - res["bbox"][d, 1]), 1.0)
                for when in ("before", "after"):
                    err = float(res[f"reproj_error_{when}"][d])
                    rec[f"err2d_{when}_pct"] = round(100.0 * err / h, 2) if math.isfinite(err) else None
        records.append(rec)
    after = per_run["after"]["match"]
    row = {"image": im.id, "split": im.split, "kind": im.kind, "recipe": im.recipe,
           "size": [int(im.image.shape[1]), int(im.image.shape[0])], "counted": len(im.people),
           "found": after.found, "false_boxes": after.false_boxes, "ignored_boxes": int(after.excused.sum()),
           "output_people": _people_of(per_run["after"]["result"]),
           "found_before": per_run["before"]["match"].found}
    row.update(summarize(records, [row]))
    return row, records


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def summarize(records: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over per-person records and per-image rows (found, false boxes, facing, 2D error, PA, knees)."""
    counted = sum(r["counted"] for r in rows)
    found = sum(bool(r.get("found_after")) for r in records)
    out: dict[str, Any] = {"images": len(rows), "counted": counted, "found": found,
                           "found_pct": 100.0 * found / counted if counted else None,
                           "found_partial": sum(bool(r.get("partial_after")) for r in records),
                           "false_boxes": sum(r.get("false_boxes", 0) for r in rows)}
    for when in ("before", "after"):
        judged = [r[f"facing_ok_{when}"] for r in records if r.get(f"facing_ok_{when}") is not None]
        out[f"facing_labelled_{when}"] = len(judged)
        out[f"facing_correct_{when}"] = int(sum(judged))
        out[f"facing_pct_{when}"] = 100.0 * sum(judged) / len(judged) if judged else None
        out[f"err2d_{when}_pct"] = _median([r[f"err2d_{when}_pct"] for r in records
                                            if r.get(f"err2d_{when}_pct") is not None])
    out["facing_pct"] = out["facing_pct_after"]
    pairs = [(r["pa_mm_before"], r["pa_mm_after"]) for r in records if "pa_mm_before" in r and "pa_mm_after" in r]
    out["pa_people"] = len(pairs)
    out["pa_before_mm"] = _median([b for b, _ in pairs])
    out["pa_after_mm"] = _median([a for _, a in pairs])
    out["pa_lowered"] = int(sum(a < b for b, a in pairs))
    out["pa_lowered_pct"] = 100.0 * out["pa_lowered"] / len(pairs) if pairs else None
    pitches = [(r["pitch_after"], r["pitch_reference"]) for r in records
               if r.get("pitch_after") is not None and "pitch_reference" in r]
    out["pitch_people"] = len(pitches)
    out["pitch_after_deg"] = _median([a for a, _ in pitches])
    out["pitch_reference_deg"] = _median([b for _, b in pitches])
    bends = [max(r["knee_bend_after"]) for r in records if "knee_bend_after" in r]
    out["cut_people"] = len(bends)
    out["cut_knee_bend_deg"] = _median(bends)
    return out


def mirror_agreement(records: list[dict[str, Any]], images: list[SetImage]) -> dict[str, Any]:
    """How far the output facing on a mirrored image is from the mirror (negated angle) of the original's."""
    by_key = {(r["image"], r["ref"]): r for r in records}
    diffs = []
    for im in images:
        if im.mirror_of is None:
            continue
        for p in im.people:
            a, b = by_key.get((im.id, p.ref)), by_key.get((im.mirror_of, p.ref))
            if a and b and a.get("facing_angle_after") is not None and b.get("facing_angle_after") is not None:
                diffs.append(abs(float(wrap_degrees(a["facing_angle_after"] + b["facing_angle_after"]))))
    return {"mirror_pairs": len(diffs), "mirror_facing_diff_deg": _median(diffs),
            "mirror_facing_diff_over_60": int(sum(d > 60 for d in diffs))}


def targets(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target with the measured value and whether it is met."""
    out = {}
    for key, (op, limit) in TARGETS.items():
        value = summary.get(key)
        met = None if value is None else {">=": value >= limit, ">": value > limit, "<=": value <= limit}[op]
        out[key] = {"target": f"{op} {limit:g}", "value": value, "met": met, "text": TARGET_TEXT[key]}
    return out


# ------------------------------------------------------------------------------------------------------- runs


def run_open_tier(images: list[SetImage], work: Path, name: str, *, schedule: str | None, checkpoint: Path | None,
                  device: str, render: bool) -> tuple[dict[str, dict[str, np.ndarray] | None], dict[str, Any]]:
    """``metahmr process`` (open tier, default settings but the TTO schedule) on the set's images; the results
    by image id (None: no result file) and the run's summary."""
    from metahmr_cli.io.writers import load_result_npz
    from metahmr_cli.pipeline import Pipeline
    from metahmr_cli.process_config import ProcessConfig
    from metahmr_cli.tto import TTOConfig

    inputs = work / "inputs"
    if not inputs.is_dir():
        inputs.mkdir(parents=True)
        for im in images:
            cv2.imwrite(str(inputs / f"{im.id}.png"), cv2.cvtColor(im.image, cv2.COLOR_RGB2BGR))
    out = work / name
    tto = TTOConfig() if schedule is None else TTOConfig(schedule=schedule)
    cfg = ProcessConfig(inputs=[str(inputs)], out=out, model="open", device=device, checkpoint=checkpoint, tto=tto,
                        render=render, side_view=render)
    t0 = time.perf_counter()
    report = Pipeline(cfg, progress=False).run()
    wall = time.perf_counter() - t0
    results = {im.id: load_result_npz(out / f"{im.id}.npz") if (out / f"{im.id}.npz").is_file() else None
               for im in images}
    return results, {"wall_s": round(wall, 1), "counts": report.counts, "tto": tto.schedule}


# ---------------------------------------------------------------------------------------------------- drawing

GREEN, ORANGE, RED, GREY, MAGENTA = (40, 170, 40), (235, 140, 0), (220, 30, 30), (150, 150, 150), (200, 0, 200)
LETTER = {"toward": "T", "away": "A", "side-left": "L", "side-right": "R", None: "-"}


def _text(img: np.ndarray, text: str, org: tuple[int, int], color: tuple[int, int, int], scale: float = 0.45) -> None:
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def draw_labels(image: np.ndarray, im: SetImage, records: list[dict[str, Any]] | None = None,
                result: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """The labels over ``image`` (RGB, the image's size): people (numbered, with facing), ignore boxes, and with
    ``records`` / ``result`` what was found (colours in the module docstring)."""
    from metahmr_cli.evaluation.facing import facing_class

    out = image.copy()
    thick = max(1, round(max(out.shape[:2]) / 700))
    for box in im.ignore:
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), GREY, thick)
    used = set()
    for i, p in enumerate(im.people):
        rec = records[i] if records is not None else None
        color, text = GREEN, f"{i} {LETTER[p.facing]}"
        if rec is not None:
            if not rec.get("found_after"):
                color = RED
            else:
                used.add(rec["det_after"])
                got = rec.get("facing_angle_after")
                text += ">" + LETTER[facing_class(got) if got is not None else None]
                color = GREEN if rec.get("facing_ok_after") else ORANGE
        x1, y1, x2, y2 = (int(round(v)) for v in p.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thick)
        _text(out, text, (x1 + 2, max(12, y1 + 12 * thick)), color, 0.35 * thick)
    if result is not None:
        for d, box in enumerate(result["bbox"]):
            if d not in used:
                x1, y1, x2, y2 = (int(round(v)) for v in box)
                cv2.rectangle(out, (x1, y1), (x2, y2), MAGENTA, thick)
    return out


def top_view(result: dict[str, np.ndarray] | None, size: int = 240) -> np.ndarray:
    """The meshes seen from above (x right, depth up the panel: the camera lies below), one colour per person as on
    the overlay, an arrow along each torso's forward direction (seen from above), numbered by output person."""
    from metahmr_cli.evaluation.facing import torso_frame
    from metahmr_cli.render.overlay import person_colors

    panel = np.full((size, size, 3), 250, np.uint8)
    _text(panel, "top view, camera below", (3, size - 6), (90, 90, 90), 0.35)
    if result is None or not len(result["bbox"]) or "vertices" not in result:
        return panel
    verts = result["vertices"].astype(np.float64)
    centre, _, forward = torso_frame(result["joints3d"], _names(result))
    xs, zs = verts[..., 0], verts[..., 2]
    # framed on the people (the camera may lie far below the panel); at least 1.5 m across
    span = max(float(np.ptp(xs)), float(np.ptp(zs)), 1.5) * 1.2
    x0, z0 = 0.5 * (float(xs.min()) + float(xs.max())), 0.5 * (float(zs.min()) + float(zs.max()))

    def to_px(x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (size / 2 + (x - x0) / span * size).astype(int), (size / 2 - (z - z0) / span * size).astype(int)

    colors = person_colors(len(verts))
    for k in range(len(verts)):
        u, v = to_px(xs[k, ::5], zs[k, ::5])
        ok = (u >= 0) & (u < size) & (v >= 0) & (v < size)
        panel[v[ok], u[ok]] = (np.array(colors[k]) * 200).astype(np.uint8)
        flat = np.array([forward[k, 0], forward[k, 2]])
        if np.isfinite(flat).all() and np.linalg.norm(flat) > 1e-6:
            # a fixed on-screen length: people far apart in a wide scene still show which way they face
            us, vs = to_px(np.array([centre[k, 0]]), np.array([centre[k, 2]]))
            tip = (int(us[0] + 22 * flat[0] / np.linalg.norm(flat)), int(vs[0] - 22 * flat[1] / np.linalg.norm(flat)))
            cv2.arrowedLine(panel, (int(us[0]), int(vs[0])), tip, (0, 0, 0), 1, tipLength=0.35)
            _text(panel, str(k), (int(us[0]) + 4, int(vs[0]) + 12), (0, 0, 0), 0.35)
    return panel


def _content(img: np.ndarray, margin: int = 10) -> np.ndarray:
    """``img`` cropped to what differs from its corner colour (the side view's plain background), plus a margin."""
    mask = (np.abs(img.astype(np.int16) - img[0, 0].astype(np.int16)).sum(-1) > 10)
    if not mask.any():
        return img
    ys, xs = np.nonzero(mask)
    return img[max(0, ys.min() - margin):ys.max() + margin + 1, max(0, xs.min() - margin):xs.max() + margin + 1]


def _around_people(img: np.ndarray, im: SetImage, result: dict[str, np.ndarray] | None) -> np.ndarray:
    """``img`` cropped to the labelled and found boxes (plus 15 % of their extent), so small people stay visible."""
    boxes = [p.box for p in im.people] + ([] if result is None else list(result["bbox"])) + list(im.ignore)
    if not boxes:
        return img
    b = np.array(boxes, np.float64)
    lo, hi = b[:, :2].min(0), b[:, 2:].max(0)
    pad = 0.15 * (hi - lo) + 10
    h, w = img.shape[:2]
    x1, y1 = (max(0, int(v)) for v in lo - pad)
    x2, y2 = min(w, int(hi[0] + pad[0])), min(h, int(hi[1] + pad[1]))
    return img[y1:y2, x1:x2] if x2 > x1 and y2 > y1 else img


def _fit(img: np.ndarray, height: int) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.resize(img, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_AREA)


def image_panel(im: SetImage, row: dict[str, Any], records: list[dict[str, Any]], result: dict[str, np.ndarray] | None,
                overlay: np.ndarray | None, side: np.ndarray | None, height: int = 210) -> np.ndarray:
    """One image's montage cell: labelled overlay, side view, top view, a caption line."""
    base = overlay if overlay is not None and overlay.shape[:2] == im.image.shape[:2] else im.image
    parts = [_fit(_around_people(draw_labels(base, im, records, result), im, result), height)]
    if side is not None:
        parts.append(_fit(_content(side), height))
    parts.append(top_view(result, height))
    gap = np.full((height, 4, 3), 255, np.uint8)
    body = np.hstack([x for p in parts for x in (p, gap)][:-1])
    caption = np.full((20, body.shape[1], 3), 255, np.uint8)
    fo, fl = row.get("facing_correct_after", 0), row.get("facing_labelled_after", 0)
    _text(caption, f"{im.id} ({im.split}, {im.kind}): found {row['found']}/{row['counted']}, false "
                   f"{row['false_boxes']}, facing {fo}/{fl}", (3, 14), (0, 0, 0), 0.42)
    return np.vstack([caption, body])


def montage(cells: list[np.ndarray], width: int = 1800) -> np.ndarray:
    """Cells packed left to right into rows of at most ``width`` pixels, on white."""
    rows, cur, cur_w = [], [], 0
    for c in cells:
        if cur and cur_w + c.shape[1] > width:
            rows.append(cur)
            cur, cur_w = [], 0
        cur.append(c)
        cur_w += c.shape[1] + 10
    if cur:
        rows.append(cur)
    width = max(width, max(c.shape[1] for c in cells))
    lines = []
    for r in rows:
        h = max(c.shape[0] for c in r)
        line = np.full((h + 10, width, 3), 255, np.uint8)
        x = 0
        for c in r:
            line[:c.shape[0], x:x + c.shape[1]] = c
            x += c.shape[1] + 10
        lines.append(line)
    return np.vstack(lines)


# ---------------------------------------------------------------------------------------------------- reports


def _fmt(v: Any, digits: int = 1, unit: str = "") -> str:
    return "-" if v is None else f"{v:.{digits}f}{unit}"


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: totals with the targets, then one line per image."""
    lines = [f"# Open tier on real photos ({report['settings']['set']} set)", "",
             f"Checkpoint `{report['settings']['checkpoint']}`, code `{report['settings'].get('code')}`, device "
             f"{report['settings']['device']}; "
             f"TTO `none` (before) and `{report['settings'].get('tto', 'metahmr')}` (after). Labels and sources: "
             f"`benchmarks/open_quality_set/`.", "",
             "| subset | found / counted | false boxes | facing correct / labelled (before → after) | "
             "2D error % box h (before → after) | PA-MPJPE vs BlazePose mm (before → after, people) | "
             "TTO lowers PA | knee bend of cut-off people (deg, median) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in report["summary"].items():
        if not s.get("images"):
            continue
        lines.append(
            f"| {name} | {s['found']} / {s['counted']} ({_fmt(s['found_pct'], 0, ' %')}; {s['found_partial']} partial)"
            f" | {s['false_boxes']} | "
            f"{s['facing_correct_before']} → {s['facing_correct_after']} / {s['facing_labelled_after']} "
            f"({_fmt(s['facing_pct_after'], 0, ' %')}) | {_fmt(s['err2d_before_pct'])} → {_fmt(s['err2d_after_pct'])}"
            f" | {_fmt(s['pa_before_mm'])} → {_fmt(s['pa_after_mm'])} ({s['pa_people']}) | {s['pa_lowered']} / "
            f"{s['pa_people']} | {_fmt(s['cut_knee_bend_deg'], 0)} ({s['cut_people']}) |")
    lines += ["", "| kind | found / counted | facing correct / labelled (after) | 2D error % (after) | PA mm (after) | "
                  "torso pitch toward the camera, deg: output / BlazePose (people) |", "|---|---:|---:|---:|---:|---:|"]
    for kind, s in report["kinds"].items():
        if s.get("images"):
            lines.append(f"| {kind} | {s['found']} / {s['counted']} | {s['facing_correct_after']} / "
                         f"{s['facing_labelled_after']} | {_fmt(s['err2d_after_pct'])} | {_fmt(s['pa_after_mm'])} | "
                         f"{_fmt(s['pitch_after_deg'])} / {_fmt(s['pitch_reference_deg'])} ({s['pitch_people']}) |")
    m = report["mirror"]
    lines += ["", f"Mirrored images: output facing vs the mirror of the original's, median "
                  f"{_fmt(m['mirror_facing_diff_deg'])} degrees over {m['mirror_pairs']} people "
                  f"({m['mirror_facing_diff_over_60']} more than 60 degrees off).", "", "Targets (all images):", ""]
    for t in report["targets"].values():
        state = "-" if t["met"] is None else ("met" if t["met"] else "NOT met")
        lines.append(f"- {t['text']}: {_fmt(t['value'])} ({state})")
    lines += ["", "| image | split | kind | found / counted | false | facing ok / labelled | 2D err % (before → after)"
                  " | PA mm (before → after, n) | TTO lowers PA |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in report["images"]:
        lines.append(f"| {r['image']} | {r['split']} | {r['kind']} | {r['found']} / {r['counted']} | "
                     f"{r['false_boxes']} | {r['facing_correct_after']} / {r['facing_labelled_after']} | "
                     f"{_fmt(r['err2d_before_pct'])} → {_fmt(r['err2d_after_pct'])} | {_fmt(r['pa_before_mm'])} → "
                     f"{_fmt(r['pa_after_mm'])} ({r['pa_people']}) | {r['pa_lowered']} / {r['pa_people']} |")
    s = report["settings"]
    lines += ["", f"{s['images']} images, wall time {_fmt(s['wall_s'], 0)} s ({s['device']}); runs: "
                  + ", ".join(f"{k} {v['wall_s']:.0f} s" for k, v in report["runs"].items()) + "."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------- main


@dataclass
class Evaluation:
    """Everything one evaluation produced (the report and, for the montage, the images and results)."""

    report: dict[str, Any]
    images: list[SetImage]
    results: dict[str, dict[str, dict[str, np.ndarray] | None]] = field(default_factory=dict)
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def evaluate(images: list[SetImage], work: Path, *, checkpoint: Path | None, device: str, set_name: str,
             schedule: str | None = None) -> Evaluation:
    """Run the open tier before/after TTO (``schedule``, None: the default) on ``images`` (their evaluated subset)
    and measure it."""
    t0 = time.perf_counter()
    evaluated = [im for im in images if im.evaluate]
    before, run_before = run_open_tier(evaluated, work, "before", schedule="none", checkpoint=checkpoint,
                                       device=device, render=False)
    after, run_after = run_open_tier(evaluated, work, "after", schedule=schedule, checkpoint=checkpoint,
                                     device=device, render=True)
    ckpt = "the shipped open model" if checkpoint is None else str(checkpoint)
    settings = {"set": set_name, "checkpoint": ckpt, "device": device, "code": _code_version(),
                "tto": run_after["tto"]}
    ev = measure(evaluated, before, after, settings, {"before": run_before, "after": run_after})
    ev.report["settings"]["wall_s"] = round(time.perf_counter() - t0, 1)
    return ev


def _code_version() -> str | None:
    """``git describe --always --dirty`` of the checkout (which code made the numbers), or None outside git."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True,
                             check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def measure(images: list[SetImage], before: dict[str, dict[str, np.ndarray] | None],
            after: dict[str, dict[str, np.ndarray] | None], settings: dict[str, Any], runs: dict[str, Any]
            ) -> Evaluation:
    """The report of the two runs' results (by image id) on ``images``, with BlazePose run on every person."""
    try:
        blaze: BlazePoseReference | None = BlazePoseReference()
    except ImportError:
        blaze = None
    rows, records_all = [], []
    per_image: dict[str, list[dict[str, Any]]] = {}
    for im in images:
        refs = [blaze(im.image, p) if blaze is not None else (None, "mediapipe not installed") for p in im.people]
        row, recs = evaluate_image(im, {"before": before[im.id], "after": after[im.id]}, refs)
        rows.append(row)
        records_all += recs
        per_image[im.id] = recs
    if blaze is not None:
        blaze.close()
    summary = {}
    for name in ("all", *SPLITS):
        keep = [r for r in rows if name == "all" or r["split"] == name]
        summary[name] = summarize([r for r in records_all if name == "all" or r["split"] == name], keep)
    kinds = {k: summarize([r for r in records_all if r["kind"] == k], [r for r in rows if r["kind"] == k])
             for k in KINDS}
    report = {"summary": summary, "kinds": kinds, "targets": targets(summary["all"]),
              "mirror": mirror_agreement(records_all, images),
              "settings": {**settings, "images": len(images), "match_iou": MATCH_IOU,
                           "blazepose": "mediapipe solutions.pose, static_image_mode=True, model_complexity=1, box "
                                        "+ 25 % per side, 12 joints, >= 10 with visibility >= 0.5",
                           "wall_s": None},
              "runs": runs, "images": rows, "people": records_all}
    return Evaluation(report, images, {"before": before, "after": after}, per_image)


def write_outputs(ev: Evaluation, work: Path, out: Path, name: str) -> list[Path]:
    """``<name>.json``, ``<name>.md`` and ``<name>_montage.jpg`` in ``out`` (each written atomically)."""
    from metahmr_cli.files import write_bytes_atomic, write_json_atomic, write_text_atomic

    cells = []
    for im, row in zip(ev.images, ev.report["images"], strict=True):
        res = ev.results["after"][im.id]

        def read(suffix: str, stem: str = im.id) -> np.ndarray | None:
            path = work / "after" / f"{stem}_{suffix}.png"
            return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB) if path.is_file() else None

        cells.append(image_panel(im, row, ev.records[im.id], res, read("overlay"), read("side")))
    paths = [write_json_atomic(out / f"{name}.json", ev.report),
             write_text_atomic(out / f"{name}.md", markdown(ev.report))]
    if cells:
        # JPEG: a photo montage of 30 images is 4 MB as PNG and under 1 MB at this quality
        ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(montage(cells), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
        if not ok:
            raise OSError("could not encode the montage")
        paths.append(write_bytes_atomic(out / f"{name}_montage.jpg", jpg.tobytes()))
    return paths


def show_labels(images: list[SetImage], out: Path) -> list[Path]:
    """Every image with its labels drawn, as ``<id>.png`` in ``out`` (for checking the labels by eye)."""
    from metahmr_cli.files import write_image_atomic

    return [write_image_atomic(out / f"{im.id}.png", draw_labels(im.image, im)) for im in images]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results",
                        help="folder of <name>.json / .md / _montage.jpg (default: benchmarks/results)")
    parser.add_argument("--name", default="open_quality", help="stem of the report files (default: open_quality)")
    parser.add_argument("--set", dest="set_name", choices=("all", *SPLITS), default="all",
                        help="which images: all (default), tuning, or the held-out final check")
    parser.add_argument("--images", default=None, help="comma-separated image ids instead of --set")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="an open Meta-HMR checkpoint to evaluate (default: the one shipped with metahmr)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    parser.add_argument("--tto", default=None, help="TTO schedule of the 'after' run (default: the default one)")
    parser.add_argument("--opencv-data", type=Path, default=None,
                        help="folder with vtest.avi and basketball2.png (usr/share/doc/opencv-doc/examples/data)")
    parser.add_argument("--no-download", action="store_true", help="never run apt-get download for opencv-doc")
    parser.add_argument("--quick", action="store_true",
                        help=f"only {', '.join(QUICK_IMAGES)} (from examples/, nothing to download)")
    parser.add_argument("--show-labels", type=Path, default=None, metavar="DIR",
                        help="draw the labels on the selected images into DIR and stop (no run)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (inputs, .npz, overlays)")
    args = parser.parse_args(argv)

    if args.checkpoint is not None and not args.checkpoint.is_file():
        parser.error(f"--checkpoint {args.checkpoint} does not exist")
    doc = load_annotations()
    wanted = list(QUICK_IMAGES) if args.quick else (args.images.split(",") if args.images else None)
    try:
        ids = select_ids(doc, args.set_name, wanted)
        if args.show_labels is not None:
            ids = [e["id"] for e in doc["images"] if e["id"] in _needed(doc, set(ids))]
        images = build_set(doc, ids, opencv_data=args.opencv_data, download=not args.no_download)
    except (ValueError, FileNotFoundError) as exc:  # a bad --images id, a missing or different source file
        parser.error(str(exc))
    if args.show_labels is not None:
        for path in show_labels(images, args.show_labels):
            print(path)
        return 0
    work = Path(tempfile.mkdtemp(prefix="open_quality_"))
    try:
        set_name = "quick" if args.quick else ("selected" if args.images else args.set_name)
        ev = evaluate(images, work, checkpoint=args.checkpoint, device=args.device, set_name=set_name,
                      schedule=args.tto)
        paths = write_outputs(ev, work, args.out, args.name)
    finally:
        if args.keep:
            print(f"working folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(markdown(ev.report))
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
