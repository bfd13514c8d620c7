"""Import 2D keypoints computed elsewhere (OpenPose, COCO-style JSON).

OpenPose (``--write_json``): one file per image, ``<image stem>_keypoints.json``, holding
``{"people": [{"pose_keypoints_2d": [x0, y0, c0, x1, y1, c1, ...]}, ...]}`` with 25 (BODY_25) or
18 (COCO-18) keypoints per person. Pass the folder (or one file). Video frames written by OpenPose as
``<video stem>_<frame:012d>_keypoints.json`` are found for frame ``frame`` of ``<video>``.

COCO-style JSON (one file for all images), either a mapping from image file name to people::

    {"IMG_0001.jpg": [{"keypoints": [x0, y0, c0, ..., x16, y16, c16],   # 17*3 numbers (COCO order)
                       "bbox": [x1, y1, x2, y2],                       # optional
                       "score": 0.97}],                               # optional
     "IMG_0002.jpg": []}

or a list of records ``{"image": "IMG_0001.jpg", "keypoints": [...], "bbox": [...], "bbox_format": "xyxy"}``
(``bbox_format`` ``"xywh"`` for COCO's ``[x, y, width, height]``). The third value of each keypoint is a
confidence in [0, 1]; if the file uses COCO annotation visibility flags (integers 0/1/2 with at least one 2),
they are read as confidence 1 for labelled (1, 2) and 0 for unlabelled (0) keypoints. Other formats with
``K*3`` numbers (``halpe26``, ``body25`` ...) are read when ``fmt`` says so or the count is unambiguous.

Keys are matched to inputs as for imported boxes (:func:`metahmr_cli.detect.boxes_json.lookup_key`). Every number
is checked when the file is read: finite, coordinates within +-1e6 px, confidences in [0, 1] (or COCO flags); a
file that breaks this is an error naming the entry, person and keypoint, before anything is processed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metahmr_cli.config import parse_json_text, read_bounded
from metahmr_cli.detect.base import Detections, box_iou
from metahmr_cli.detect.boxes_json import input_label, lookup_key
from metahmr_cli.errors import InputError
from metahmr_cli.keypoints.base import (
    assign_by_iou,
    boxes_from_keypoints,
    check_boxes,
    match_keypoints_to_boxes,
)
from metahmr_cli.keypoints.formats import KEYPOINT_FORMATS, canonical_format, format_for_count

_OPENPOSE_COUNTS = {75: "body25", 54: "openpose18"}


@dataclass
class ImportedPeople:
    """People listed for one image: keypoints (M, K, 3), optional boxes (M, 4) and scores (M,)."""

    keypoints: np.ndarray
    boxes: np.ndarray | None = None
    scores: np.ndarray | None = None


def _read_json(path: Path):

    if not path.is_file():
        raise InputError(f"Keypoint file {path} does not exist.")
    return parse_json_text(read_bounded(path, "Keypoint file", InputError), f"Keypoint file {path}", InputError)


def _floats(values, where: str) -> np.ndarray:
    if not isinstance(values, (list, tuple)):
        raise InputError(f"{where}: expected a list of numbers, got {type(values).__name__}")
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: values must be numbers") from exc
    if arr.ndim != 1:
        raise InputError(f"{where}: expected a flat list [x0, y0, c0, x1, y1, c1, ...]")
    return arr


MAX_COORDINATE = 1e6
"""Largest |x| or |y| (pixels) of an imported keypoint: larger values are not pixels of any image."""


def _check_keypoint_values(kp: np.ndarray, where: str, max_conf: float = 1.0) -> None:
    """(K, 3) keypoints of one person: finite, coordinates within :data:`MAX_COORDINATE` px, confidences in
    [0, ``max_conf``]; otherwise an InputError naming the entry and keypoint (a file whose numbers are garbage must
    not read as "no person detected")."""
    bad = ~np.isfinite(kp).all(axis=1)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise InputError(f"{where}: keypoint {j} is {kp[j].tolist()}, not finite numbers; write 0 0 0 for a missing "
                         "keypoint.")
    far = (np.abs(kp[:, :2]) > MAX_COORDINATE).any(axis=1)
    if far.any():
        j = int(np.flatnonzero(far)[0])
        raise InputError(f"{where}: keypoint {j} lies at {kp[j, :2].tolist()}, beyond {MAX_COORDINATE:g} px; the "
                         "coordinates must be pixels of the image.")
    conf = kp[:, 2]
    off = (conf < 0) | (conf > max_conf)
    if off.any():
        j = int(np.flatnonzero(off)[0])
        allowed = "[0, 1]" if max_conf == 1.0 else "[0, 1] (or COCO visibility flags 0, 1, 2)"
        raise InputError(f"{where}: keypoint {j} has confidence {conf[j]!r}; confidences must be in {allowed}.")


def read_openpose_file(path: str | os.PathLike[str]) -> tuple[np.ndarray, str]:
    """Read one OpenPose ``*_keypoints.json`` file.

    Returns:
        keypoints (M, 25, 3) or (M, 18, 3) float32 and the format (``"body25"`` or ``"openpose18"``).
    """
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("people"), list):
        raise InputError(f"{path} is not an OpenPose keypoint file (no 'people' list).")
    people: list[np.ndarray] = []
    fmt: str | None = None
    for i, person in enumerate(data["people"]):
        where = f"{path} person {i}"
        if not isinstance(person, dict) or "pose_keypoints_2d" not in person:
            raise InputError(f"{where}: missing 'pose_keypoints_2d'")
        arr = _floats(person["pose_keypoints_2d"], where)
        if arr.size == 0:
            continue
        this = _OPENPOSE_COUNTS.get(arr.size)
        if this is None:
            raise InputError(
                f"{where}: pose_keypoints_2d has {arr.size} values; expected 75 (BODY_25) or 54 (COCO-18)"
            )
        if fmt is not None and this != fmt:
            raise InputError(f"{where}: mixes {fmt} and {this} people in one file")
        fmt = this
        _check_keypoint_values(arr.reshape(-1, 3), where)
        people.append(arr.reshape(-1, 3))
    if fmt is None:
        fmt = "body25"
    k = KEYPOINT_FORMATS[fmt][0]
    kp = np.stack(people).astype(np.float32) if people else np.zeros((0, k, 3), np.float32)
    return kp, fmt


def _openpose_key(path: Path) -> str:
    name = path.name
    return name[: -len("_keypoints.json")] if name.endswith("_keypoints.json") else path.stem


def _coco_people(entries, where: str, fmt: str | None) -> tuple[list[np.ndarray], list, list, str | None]:
    kps, boxes, scores = [], [], []
    for i, person in enumerate(entries):
        w = f"{where} person {i}"
        if not isinstance(person, dict) or "keypoints" not in person:
            raise InputError(f"{w}: expected an object with 'keypoints'")
        arr = _floats(person["keypoints"], f"{w} keypoints")
        if arr.size % 3:
            raise InputError(f"{w}: 'keypoints' must hold K*3 numbers, got {arr.size}")
        k = arr.size // 3
        if fmt is None:
            try:
                fmt = format_for_count(k)
            except ValueError as exc:
                raise InputError(f"{w}: {exc}") from exc
        if k != KEYPOINT_FORMATS[fmt][0]:
            raise InputError(f"{w}: {k} keypoints, but format {fmt} has {KEYPOINT_FORMATS[fmt][0]}")
        _check_keypoint_values(arr.reshape(k, 3), w, max_conf=2.0)
        kps.append(arr.reshape(k, 3))
        box = person.get("bbox")
        if box is not None:
            b = _floats(box, f"{w} bbox")
            if b.size != 4 or not np.isfinite(b).all():
                raise InputError(f"{w}: bbox must be 4 finite numbers")
            if person.get("bbox_format", "xyxy") == "xywh":
                b = np.array([b[0], b[1], b[0] + b[2], b[1] + b[3]])
            if b[2] <= b[0] or b[3] <= b[1]:
                raise InputError(f"{w}: bbox {b.tolist()} has x2 <= x1 or y2 <= y1 (expected [x1, y1, x2, y2])")
            boxes.append(b)
        else:
            boxes.append(None)
        score = person.get("score")
        if score is not None and (not isinstance(score, (int, float)) or not math.isfinite(score)):
            raise InputError(f"{w}: score must be a number")
        scores.append(score)
    return kps, boxes, scores, fmt


def _finish(kps: list[np.ndarray], boxes: list, scores: list, k: int) -> ImportedPeople:
    kp = np.stack(kps).astype(np.float64) if kps else np.zeros((0, k, 3))
    all_boxes = bool(boxes) and all(b is not None for b in boxes)
    all_scores = bool(scores) and all(s is not None for s in scores)
    return ImportedPeople(
        keypoints=kp.astype(np.float32),
        boxes=np.stack(boxes).astype(np.float32) if all_boxes else None,
        scores=np.asarray(scores, np.float32) if all_scores else None,
    )


def _apply_visibility_flags(entries: dict[str, ImportedPeople]) -> None:
    conf = [p.keypoints[..., 2] for p in entries.values() if p.keypoints.size]
    if not conf:
        return
    c = np.concatenate([x.ravel() for x in conf])
    if np.isin(c, (0.0, 1.0, 2.0)).all() and (c == 2.0).any():
        for p in entries.values():
            p.keypoints[..., 2] = (p.keypoints[..., 2] > 0).astype(np.float32)


def read_keypoints_json(path: str | os.PathLike[str], fmt: str | None = None) -> tuple[dict[str, ImportedPeople], str]:
    """Read a COCO-style keypoint JSON file (format in the module docstring).

    Args:
        path: the JSON file.
        fmt: keypoint format; None infers it from the keypoint count (17 -> coco17, 26 -> halpe26, ...).

    Returns:
        mapping from image key to :class:`ImportedPeople`, and the format.
    """
    path = Path(path)
    fmt = canonical_format(fmt) if fmt else None
    data = _read_json(path)
    grouped: dict[str, list] = {}
    if isinstance(data, dict):
        for key, entries in data.items():
            if not isinstance(entries, list):
                raise InputError(f"{path} [{key!r}]: expected a list of people, got {type(entries).__name__}")
            grouped[key] = entries
    elif isinstance(data, list):
        for i, rec in enumerate(data):
            if not isinstance(rec, dict):
                raise InputError(f"{path} record {i}: expected an object")
            key = rec.get("image", rec.get("file_name"))
            if not isinstance(key, str) or not key:
                raise InputError(f"{path} record {i}: missing 'image' (the image file name)")
            grouped.setdefault(key, []).append(rec)
    else:
        raise InputError(f"{path} must hold an object {{image name: [people]}} or a list of records.")
    parsed = {}
    for key, entries in grouped.items():
        kps, boxes, scores, fmt = _coco_people(entries, f"{path} [{key!r}]", fmt)
        parsed[key] = (kps, boxes, scores)
    fmt = fmt or "coco17"
    k = KEYPOINT_FORMATS[fmt][0]
    out = {key: _finish(*v, k) for key, v in parsed.items()}
    _apply_visibility_flags(out)
    for key, people in out.items():  # values above 1 that were not COCO visibility flags
        for i, person in enumerate(people.keypoints):
            _check_keypoint_values(person, f"{path} [{key!r}] person {i}")
    return out, fmt


class ImportedKeypoints:
    """Keypoints imported from OpenPose files or a COCO-style JSON file, looked up per input.

    Attributes:
        format: keypoint format of every entry.
        source: the file or folder read.
        entries: image key -> :class:`ImportedPeople`.
    """

    def __init__(self, entries: dict[str, ImportedPeople], fmt: str, source: Path) -> None:
        self.entries = entries
        self.format = canonical_format(fmt)
        self.source = source

    def get(self, image_path: str | os.PathLike[str], frame: int | None = None) -> ImportedPeople | None:
        """People listed for an input (None when the input is not listed)."""
        return lookup_key(self.entries, image_path, frame)

    def detections(self, image_path: str | os.PathLike[str], frame: int | None = None, *,
                   min_conf: float = 0.05, pad: float = 0.0) -> Detections | None:
        """Boxes of the listed people: from the file when it has them, else the keypoints' extents.

        People with fewer than two keypoints above ``min_conf`` are dropped when boxes come from
        keypoints. Scores: from the file, else the mean confidence of the confident keypoints.
        Returns None when the input is not listed.
        """
        people = self.get(image_path, frame)
        if people is None:
            return None
        kp = people.keypoints
        if people.boxes is not None:
            boxes, valid = people.boxes, np.ones(len(kp), bool)
        else:
            boxes, valid = boxes_from_keypoints(kp, min_conf=min_conf, pad=pad)
        if people.scores is not None:
            scores = people.scores
        else:
            conf = np.where(kp[..., 2] >= min_conf, kp[..., 2], np.nan)
            with np.errstate(invalid="ignore"):
                scores = np.nan_to_num(np.nanmean(conf, axis=1)) if len(kp) else np.zeros(0)
        return Detections(boxes[valid], np.asarray(scores, np.float32)[valid])

    def bind(self, image_path: str | os.PathLike[str], frame: int | None = None) -> BoundImportedKeypoints:
        """A :class:`~metahmr_cli.keypoints.base.KeypointEstimator` serving this input's people."""
        return BoundImportedKeypoints(self, image_path, frame)


class BoundImportedKeypoints:
    """Keypoint estimator returning the imported people of one input, matched to the requested boxes."""

    def __init__(self, source: ImportedKeypoints, image_path, frame: int | None, *, min_iou: float = 0.1) -> None:
        self.source, self.image_path, self.frame, self.min_iou = source, image_path, frame, min_iou
        self.format = source.format

    def estimate(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(N, K, 3) imported keypoints of the person matching each box (zeros when none matches).

        Matching is one-to-one on IoU with the file's boxes when it lists them, else with the keypoint extents.
        """
        boxes = check_boxes(boxes)
        people = self.source.get(self.image_path, self.frame)
        k = KEYPOINT_FORMATS[self.format][0]
        if people is None:
            name = input_label(self.image_path, self.frame)
            raise InputError(f"{self.source.source} lists no keypoints for {name!r}.")
        if people.boxes is None:
            return match_keypoints_to_boxes(people.keypoints, boxes, min_iou=self.min_iou)[0]
        out = np.zeros((len(boxes), k, 3), np.float32)
        if len(boxes) == 0 or len(people.boxes) == 0:
            return out
        for r, c in assign_by_iou(box_iou(boxes, people.boxes), self.min_iou):
            out[r] = people.keypoints[c]
        return out


def load_keypoints(path: str | os.PathLike[str], fmt: str | None = None) -> ImportedKeypoints:
    """Import keypoints from an OpenPose folder / file or a COCO-style JSON file.

    Args:
        path: a folder of OpenPose ``*_keypoints.json`` files, one OpenPose file, or a COCO-style JSON file.
        fmt: keypoint format of a COCO-style file (None: from the keypoint count); OpenPose files carry theirs.

    Raises:
        InputError: a missing or malformed file (the message names the entry).
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*_keypoints.json")) or sorted(path.glob("*.json"))
        if not files:
            raise InputError(f"Folder {path} holds no OpenPose *_keypoints.json files.")
        entries: dict[str, ImportedPeople] = {}
        formats: set[str] = set()
        for f in files:
            kp, f_fmt = read_openpose_file(f)
            if len(kp):
                formats.add(f_fmt)
            entries[_openpose_key(f)] = ImportedPeople(kp)
        if len(formats) > 1:
            raise InputError(f"Folder {path} mixes OpenPose formats {sorted(formats)}; use one model's output.")
        fmt_out = formats.pop() if formats else "body25"
        for key, people in entries.items():
            if people.keypoints.shape[1] != KEYPOINT_FORMATS[fmt_out][0]:
                entries[key] = ImportedPeople(np.zeros((0, KEYPOINT_FORMATS[fmt_out][0], 3), np.float32))
        return ImportedKeypoints(entries, fmt_out, path)
    if not path.is_file():
        raise InputError(f"Keypoint file or folder {path} does not exist.")
    data = _read_json(path)
    if isinstance(data, dict) and isinstance(data.get("people"), list):
        kp, fmt_out = read_openpose_file(path)
        return ImportedKeypoints({_openpose_key(path): ImportedPeople(kp)}, fmt_out, path)
    entries, fmt_out = read_keypoints_json(path, fmt)
    return ImportedKeypoints(entries, fmt_out, path)
