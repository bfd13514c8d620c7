"""Import person boxes from a JSON file instead of running a detector.

Accepted formats (coordinates in full-image pixels, ``x2 > x1`` and ``y2 > y1``):

1. a mapping from image file name to a list of boxes, each ``[x1, y1, x2, y2]`` or
   ``[x1, y1, x2, y2, score]``::

       {"IMG_0001.jpg": [[10, 20, 110, 320, 0.98], [200, 30, 290, 310]],
        "sub/IMG_0002.jpg": []}

2. a list of records, one per box, with keys ``image`` (or ``file_name``), ``bbox`` (``[x1, y1, x2, y2]``),
   optional ``score`` and optional ``format`` (``"xyxy"``, the default, or ``"xywh"``)::

       [{"image": "IMG_0001.jpg", "bbox": [10, 20, 110, 320], "score": 0.98}]

A missing score means 1.0. An image listed with no boxes means "no person"; an image that is not listed
at all is reported as missing by the caller. Video frames use the key ``"<video file name>:<frame index>"``
(``"clip.mp4:12"``). Keys are matched to inputs by relative path, then file name, then file stem
(see :func:`lookup_key`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np

from metahmr_cli.config import parse_json_text, read_bounded
from metahmr_cli.detect.base import Detections
from metahmr_cli.errors import InputError

T = TypeVar("T")


def _normalize_key(key: str) -> str:
    key = key.replace("\\", "/").strip()
    while key.startswith("./"):
        key = key[2:]
    return key


def candidate_keys(path: str | os.PathLike[str], frame: int | None = None) -> list[str]:
    """Keys under which an input may be listed, most specific first.

    ``/data/run/sub/a.jpg`` -> ``["/data/run/sub/a.jpg", "data/run/sub/a.jpg", "run/sub/a.jpg", "sub/a.jpg",
    "a.jpg", "a"]``. With ``frame=12`` every key gets ``":12"`` appended, followed by OpenPose's video naming
    ``"a_000000000012"``.
    """
    p = Path(os.fspath(path))
    parts = p.parts
    keys = [p.as_posix()]
    start = 1 if p.is_absolute() else 0
    keys += ["/".join(parts[i:]) for i in range(start, len(parts))]
    keys.append(p.stem)
    seen: list[str] = []
    for k in keys:
        k = k if frame is None else f"{k}:{frame}"
        if k not in seen:
            seen.append(k)
    if frame is not None:
        seen.append(f"{p.stem}_{frame:012d}")
    return seen


def input_label(path: str | os.PathLike[str], frame: int | None = None) -> str:
    """How messages name an input: its file name, with ``":<frame>"`` for a video frame."""
    return Path(os.fspath(path)).name + ("" if frame is None else f":{frame}")


def lookup_key(mapping: Mapping[str, T], path: str | os.PathLike[str], frame: int | None = None) -> T | None:
    """Entry of ``mapping`` (keys as written in a JSON file) for an input path, or None.

    Matching tries the full path, then ever shorter trailing parts of it, the file name and the stem.
    """
    norm = {_normalize_key(k): v for k, v in mapping.items()}
    for key in candidate_keys(path, frame):
        if key in mapping:
            return mapping[key]
        nk = _normalize_key(key)
        if nk in norm:
            return norm[nk]
    return None


def _parse_box(value, where: str) -> tuple[list[float], float]:
    if not isinstance(value, (list, tuple)) or len(value) not in (4, 5):
        raise InputError(f"{where}: a box must be [x1, y1, x2, y2] or [x1, y1, x2, y2, score], got {value!r}")
    try:
        nums = [float(v) for v in value]
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: box values must be numbers, got {value!r}") from exc
    if not all(math.isfinite(v) for v in nums):
        raise InputError(f"{where}: box values must be finite, got {value!r}")
    score = nums[4] if len(nums) == 5 else 1.0
    return nums[:4], score


def _check_box(box: list[float], score: float, where: str) -> None:
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        raise InputError(
            f"{where}: box {box} has x2 <= x1 or y2 <= y1. Boxes are [x1, y1, x2, y2] corners; "
            "for [x, y, width, height] use a record with \"format\": \"xywh\"."
        )
    if not 0.0 <= score <= 1.0:
        raise InputError(f"{where}: score {score} is outside [0, 1]")


def load_boxes_json(path: str | os.PathLike[str]) -> dict[str, Detections]:
    """Read boxes from a JSON file (format in the module docstring).

    Returns:
        Mapping from the key written in the file (image name) to its :class:`Detections`
        (boxes in file order).

    Raises:
        InputError: unreadable JSON or any malformed entry (the message names the entry).
    """

    path = Path(path)
    if not path.is_file():
        raise InputError(f"Boxes file {path} does not exist.")
    data = parse_json_text(read_bounded(path, "Boxes file", InputError), f"Boxes file {path}", InputError)

    boxes: dict[str, list[list[float]]] = {}
    scores: dict[str, list[float]] = {}
    if isinstance(data, dict):
        for key, entries in data.items():
            where = f"{path} [{key!r}]"
            if not isinstance(entries, list):
                raise InputError(f"{where}: expected a list of boxes, got {type(entries).__name__}")
            boxes.setdefault(key, [])
            scores.setdefault(key, [])
            for i, value in enumerate(entries):
                box, score = _parse_box(value, f"{where} box {i}")
                _check_box(box, score, f"{where} box {i}")
                boxes[key].append(box)
                scores[key].append(score)
    elif isinstance(data, list):
        for i, rec in enumerate(data):
            where = f"{path} record {i}"
            if not isinstance(rec, dict):
                raise InputError(f"{where}: expected an object with 'image' and 'bbox', got {rec!r}")
            key = rec.get("image", rec.get("file_name"))
            if not isinstance(key, str) or not key:
                raise InputError(f"{where}: missing 'image' (the image file name)")
            if "bbox" not in rec:
                raise InputError(f"{where}: missing 'bbox' ([x1, y1, x2, y2])")
            box, score = _parse_box(rec["bbox"], where)
            fmt = rec.get("format", "xyxy")
            if fmt == "xywh":
                box = [box[0], box[1], box[0] + box[2], box[1] + box[3]]
            elif fmt != "xyxy":
                raise InputError(f"{where}: unknown box format {fmt!r}; use 'xyxy' or 'xywh'")
            if "score" in rec:
                try:
                    score = float(rec["score"])
                except (TypeError, ValueError) as exc:
                    raise InputError(f"{where}: score must be a number, got {rec['score']!r}") from exc
            _check_box(box, score, where)
            boxes.setdefault(key, []).append(box)
            scores.setdefault(key, []).append(score)
    else:
        raise InputError(
            f"Boxes file {path} must hold an object {{image name: [[x1, y1, x2, y2, score], ...]}} or a list of "
            "records {\"image\": ..., \"bbox\": [...]}."
        )
    return {k: Detections(np.asarray(boxes[k], np.float32).reshape(-1, 4), np.asarray(scores[k], np.float32))
            for k in boxes}


class ImportedBoxes:
    """Boxes imported from a JSON file, looked up per input.

    Use :meth:`get` to get the boxes of an input (None when the file does not list it), or :meth:`bind`
    to get a :class:`~metahmr_cli.detect.base.Detector` for one input.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.boxes = load_boxes_json(self.path)

    def get(self, image_path: str | os.PathLike[str], frame: int | None = None) -> Detections | None:
        """Detections listed for ``image_path`` (and video ``frame``), or None when it is not listed."""
        return lookup_key(self.boxes, image_path, frame)

    def bind(self, image_path: str | os.PathLike[str], frame: int | None = None) -> _BoundBoxes:
        """A detector that returns the boxes of this input (raises InputError when it is not listed)."""
        return _BoundBoxes(self, image_path, frame)


class _BoundBoxes:
    def __init__(self, source: ImportedBoxes, image_path, frame: int | None) -> None:
        self.source, self.image_path, self.frame = source, image_path, frame

    def detect(self, image: np.ndarray) -> Detections:
        dets = self.source.get(self.image_path, self.frame)
        if dets is None:
            name = input_label(self.image_path, self.frame)
            raise InputError(f"{self.source.path} lists no boxes for {name!r}; add an entry (may be empty).")
        return dets
