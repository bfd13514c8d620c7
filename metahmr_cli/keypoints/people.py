"""The open tier's people finder and top-down keypoints: ``--detector finder`` and ``--keypoints movenet-thunder``.

MoveNet MultiPose alone (``--detector movenet``) runs once at one input size and returns at most six people; it
misses people much smaller or larger than it expects, and every seventh person. The finder works in four steps:

1. **Proposals.** CenterNet (a COCO box detector, MobileNetV3, 512 x 512 input; only its person class is kept) and
   MoveNet MultiPose at each input size of ``sizes`` run on the whole image and, when the image's longer side
   exceeds 1.2 x ``tile`` pixels, on overlapping tiles of ``tile`` pixels (small people in large frames).
2. **Grouping.** A proposal overlapping a higher-scoring one by ``merge_iou`` (IoU) or more joins its group
   (:func:`group_boxes`); each group is one candidate, with the box and the score of its best proposal.
3. **Check and keypoints, top-down.** MoveNet Thunder runs on each candidate's square crop
   (:class:`MoveNetTopDown`) and gives 17 COCO keypoints. A candidate is kept when the scores of its seen
   keypoints (score >= ``keypoint_conf``) add up to ``min_evidence`` or more: boxes on tripods, cones and signs
   do not reach it. The box grows to the seen keypoints; a box that does not agree with them (it fell between
   two people) is replaced by the keypoints' own box with margins, and Thunder runs again on a box that changed
   much (a tile cut the person, or the box fell between two people), so its keypoints come from a crop of the
   whole person.
4. **One box per person.** Two people whose keypoints coincide (:func:`keypoint_similarity`, COCO's OKS) are
   one person: the one with the better score keeps the box (:func:`dedupe_people`).

Keypoints are always those of MoveNet Thunder on the person's crop (the top-down scheme of the paper's pipeline,
YOLO boxes + a 2D pose model), cached per image and box so that ``--keypoints movenet-thunder`` does not run it
again. Keypoints that land outside the image get score 0: Thunder places every joint somewhere in its crop, and
the part of a crop outside the image is black padding, so such a joint was not seen.

Measured on real photos and frames counted by eye (``benchmarks/people_finder.py``, ``docs/people-finder.md``): 92
of 99 people found against 44 with MoveNet MultiPose at 384 px, with no duplicate, no box between two people and no
false box.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from metahmr_cli.detect.base import Detections, box_iou
from metahmr_cli.devices import resolve_device
from metahmr_cli.errors import ConfigError
from metahmr_cli.keypoints.base import check_boxes
from metahmr_cli.keypoints.movenet import (
    NUM_KEYPOINTS,
    MoveNetMultiPose,
    _nms,
    check_image,
    letterbox,
    resolve_tfjs_model,
)
from metahmr_cli.keypoints.tfjs_graph import TFJSGraph

if TYPE_CHECKING:
    from metahmr_cli.keypoints.tfjs_graph import TFJSGraph

FINDER_DETECTOR = "finder"
"""``--detector`` value of :class:`PeopleFinder`."""
CENTERNET_DETECTOR = "centernet"
"""``--detector`` value of :class:`CenterNetPersons`."""
THUNDER_BACKEND = "movenet-thunder"
"""``--keypoints`` value of :class:`MoveNetTopDown`."""
THUNDER_ASSET = "keypoints_movenet_thunder"
CENTERNET_ASSET = "detector_centernet"
THUNDER_JSON = "movenet-thunder.json"
CENTERNET_JSON = "centernet.json"
THUNDER_INPUT = 256
CENTERNET_INPUT = 512
CENTERNET_PERSON = 0
"""COCO class index of "person" in CenterNet's output."""

COCO_SIGMAS = np.array([0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
                        0.087, 0.087, 0.089, 0.089])
"""Per-keypoint spread of human annotators in COCO's keypoint similarity (OKS), COCO-17 order."""


# ------------------------------------------------------------------------------------------------- settings


@dataclass
class PeopleSettings:
    """Settings of the people finder (``--detector finder``); ``metahmr process`` flags ``--people-*``.

    Attributes:
        sizes: MoveNet MultiPose input sizes (multiples of 32) run on the whole image and on tiles; empty = none.
        boxes: the box detector: "centernet" or "none".
        box_conf: lowest CenterNet person score of a proposal.
        pose_conf: lowest MoveNet MultiPose pose score of a proposal.
        tile: side in pixels of the tiles that images with a longer side above 1.2 x ``tile`` are cut into
            (each also seen by the detectors at their input size); 0 = no tiles.
        tile_overlap: fraction of a tile shared with its neighbour (people on a seam appear whole in one tile).
        merge_iou: proposals overlapping a better one by this IoU or more are the same candidate.
        keypoint_conf: a keypoint counts as seen from this score.
        min_evidence: a candidate is a person when its seen keypoints' scores add up to this or more (measured: a
            clear head-and-shoulders view 4.6-5.8, a whole person 4-14, cones, signs, tripods and blurred crowds
            0-4).
        same_person: two people whose keypoint similarity (OKS) reaches this are one.
        crop_expand: the square crop Thunder sees is this many times the box's longer side.
    """

    sizes: tuple[int, ...] = (256,)
    boxes: str = "centernet"
    box_conf: float = 0.3
    pose_conf: float = 0.2
    tile: int = 1024
    tile_overlap: float = 0.25
    merge_iou: float = 0.5
    keypoint_conf: float = 0.3
    min_evidence: float = 4.0
    same_person: float = 0.5
    crop_expand: float = 1.25

    def validate(self) -> None:
        """Raise :class:`~metahmr_cli.errors.ConfigError` naming the bad setting and what is allowed."""

        if isinstance(self.sizes, str):
            self.sizes = parse_sizes(self.sizes)
        self.sizes = tuple(self.sizes)
        bad = [s for s in self.sizes if not isinstance(s, int) or s < 32 or s % 32]
        if bad:
            raise ConfigError(f"people.sizes {list(self.sizes)}: every MoveNet input size must be a positive "
                              "multiple of 32 (e.g. --people-sizes 256,384), or give none (--people-sizes none).")
        if self.boxes not in ("centernet", "none"):
            raise ConfigError(f"people.boxes = {self.boxes!r}; choose centernet or none.")
        if self.boxes == "none" and not self.sizes:
            raise ConfigError("people.boxes = none and no people.sizes: the finder would have no proposals; keep "
                              "--people-boxes centernet or give --people-sizes.")
        if self.tile != 0 and self.tile < 64:
            raise ConfigError(f"people.tile must be 0 (no tiles) or at least 64 pixels, got {self.tile}.")
        for name in ("box_conf", "pose_conf", "merge_iou", "keypoint_conf", "same_person"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"people.{name} must be in [0, 1], got {value}.")
        if not 0.0 <= self.tile_overlap < 1.0:
            raise ConfigError(f"people.tile_overlap must be in [0, 1), got {self.tile_overlap}.")
        if not self.min_evidence >= 0:
            raise ConfigError(f"people.min_evidence must be >= 0, got {self.min_evidence}.")
        if not self.crop_expand >= 1.0:
            raise ConfigError(f"people.crop_expand must be >= 1, got {self.crop_expand}.")


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"256,384"`` -> (256, 384); ``"none"`` or ``""`` -> (); raises ConfigError for anything else."""

    text = text.strip().lower()
    if text in ("", "none"):
        return ()
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--people-sizes {text!r}: give comma-separated pixel sizes such as 256,384, "
                          "or none.") from None


# --------------------------------------------------------------------------------------------- pure helpers


def tile_windows(width: int, height: int, tile: int, overlap: float = 0.25) -> list[tuple[int, int, int, int]]:
    """Overlapping windows ``(x1, y1, x2, y2)`` that cover an image, row by row.

    An axis longer than 1.2 x ``tile`` is cut into the fewest windows of ``tile`` pixels that overlap by at least
    ``overlap`` x ``tile``, spread evenly from one border to the other; a shorter axis is one window. ``tile`` 0
    or an image that fits gives no windows (the whole image is always seen anyway).
    """
    if tile <= 0 or max(width, height) <= 1.2 * tile:
        return []

    def spans(length: int) -> list[tuple[int, int]]:
        if length <= 1.2 * tile:
            return [(0, length)]
        step = tile * (1.0 - overlap)
        count = int(np.ceil((length - tile) / step)) + 1
        starts = [round(i * (length - tile) / (count - 1)) for i in range(count)]
        return [(s, s + tile) for s in starts]

    return [(x1, y1, x2, y2) for y1, y2 in spans(height) for x1, x2 in spans(width)]


def group_boxes(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[list[int]]:
    """Greedy grouping of boxes that show the same thing, best score first.

    Each box, in order of decreasing score (ties: lower index first), joins the group whose first (best) box it
    overlaps most, if that IoU is at least ``iou``; otherwise it starts a new group.

    Args:
        boxes: (N, 4) ``[x1, y1, x2, y2]``.
        scores: (N,).
        iou: lowest IoU with a group's best box.

    Returns:
        groups of indices into ``boxes``, each led by its best box, in order of their best score.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    groups: list[list[int]] = []
    for i in order:
        if groups:
            overlap = box_iou(boxes[i:i + 1], boxes[[g[0] for g in groups]])[0]
            j = int(np.argmax(overlap))
            if overlap[j] >= iou:
                groups[j].append(int(i))
                continue
        groups.append([int(i)])
    return groups


def seen_box(keypoints: np.ndarray, conf: float) -> np.ndarray | None:
    """``[x1, y1, x2, y2]`` around the keypoints (K, 3) with score >= ``conf``; None when fewer than two."""
    kp = np.asarray(keypoints, np.float64)
    seen = kp[:, 2] >= conf
    if seen.sum() < 2:
        return None
    return np.concatenate([kp[seen, :2].min(axis=0), kp[seen, :2].max(axis=0)])


def keypoint_similarity(a: np.ndarray, b: np.ndarray, conf: float = 0.3) -> float:
    """COCO's object keypoint similarity (OKS) of two people's COCO-17 keypoints (17, 3), in [0, 1].

    Over the keypoints both have seen (score >= ``conf``): the mean of exp(-d^2 / (2 s^2 k^2)), with d the
    distance between the two positions, s^2 the larger area of the two people's seen-keypoint boxes and
    k = 2 x the COCO sigma of the keypoint. Fewer than three keypoints seen by both: 0 (nothing to compare).
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    both = (a[:, 2] >= conf) & (b[:, 2] >= conf)
    if both.sum() < 3:
        return 0.0
    areas = [(bx[2] - bx[0]) * (bx[3] - bx[1]) for bx in (seen_box(a, conf), seen_box(b, conf)) if bx is not None]
    area = max(max(areas, default=1.0), 1.0)
    d2 = ((a[both, :2] - b[both, :2]) ** 2).sum(axis=1)
    k = 2.0 * COCO_SIGMAS[both]
    return float(np.mean(np.exp(-d2 / (2.0 * area * k * k))))


@dataclass
class Person:
    """One person found: box, score and COCO-17 keypoints (image pixels).

    Attributes:
        box: (4,) ``[x1, y1, x2, y2]``.
        score: the best proposal score of the person's group (CenterNet or MoveNet MultiPose).
        keypoints: (17, 3) ``[x, y, score]``.
        source: which proposal gave the box (``"centernet"``, ``"movenet@384"``...).
    """

    box: np.ndarray
    score: float
    keypoints: np.ndarray
    source: str = ""

    def seen_mean(self, conf: float) -> float:
        """Mean score of the keypoints seen (score >= ``conf``); 0 when none."""
        s = self.keypoints[:, 2]
        return float(s[s >= conf].mean()) if (s >= conf).any() else 0.0


def dedupe_people(people: Sequence[Person], same: float, conf: float) -> list[Person]:
    """Keep one box per person: best first (score + mean seen-keypoint score), dropping anyone whose keypoints
    coincide with a kept person's (:func:`keypoint_similarity` >= ``same``)."""
    ranked = sorted(people, key=lambda p: -(p.score + p.seen_mean(conf)))
    kept: list[Person] = []
    for person in ranked:
        if any(keypoint_similarity(person.keypoints, k.keypoints, conf) >= same for k in kept):
            continue
        kept.append(person)
    return kept


def box_from_keypoints(keypoints: np.ndarray, conf: float) -> np.ndarray | None:
    """A person box around the seen keypoints, with the margins a detector box has around the joints: 10 % of
    the longer side left and right, 15 % above (the top of the head lies above the eyes and ears) and 5 % below
    (the soles lie below the ankles). None when fewer than two keypoints are seen."""
    inner = seen_box(keypoints, conf)
    if inner is None:
        return None
    side = max(inner[2] - inner[0], inner[3] - inner[1])
    return inner + np.array([-0.10, -0.15, 0.10, 0.05]) * side


def zero_outside(keypoints: np.ndarray, width: int, height: int) -> np.ndarray:
    """Keypoints (..., 3) with score 0 where the position lies outside the image ``[0, width) x [0, height)``."""
    kp = np.array(keypoints, np.float32, copy=True)
    x, y = kp[..., 0], kp[..., 1]
    outside = ~((x >= 0) & (x < width) & (y >= 0) & (y < height) & np.isfinite(x) & np.isfinite(y))
    kp[..., 2][outside] = 0.0
    return kp


def _clamp(box: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.clip(np.asarray(box, np.float64), 0, [width, height, width, height])


def _image_key(image: np.ndarray) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((image.shape, image.dtype.str)).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.digest()




def resolve_thunder_json(model: str | os.PathLike[str] | None = None, *,
                         weights: str | os.PathLike[str] | None = None) -> Path:
    """Find ``movenet-thunder.json`` (a given file or folder, else the weights roots); never downloads.

    Raises:
        AssetNotFoundError: listing where it looked and naming ``metahmr weights fetch-open``.
    """
    return resolve_tfjs_model(THUNDER_ASSET, THUNDER_JSON, model, weights)


def resolve_centernet_json(model: str | os.PathLike[str] | None = None, *,
                           weights: str | os.PathLike[str] | None = None) -> Path:
    """Find ``centernet.json`` (a given file or folder, else the weights roots); never downloads.

    Raises:
        AssetNotFoundError: listing where it looked and naming ``metahmr weights fetch-open``.
    """
    return resolve_tfjs_model(CENTERNET_ASSET, CENTERNET_JSON, model, weights)


def _load_graph(path: Path, device: str) -> TFJSGraph:

    return TFJSGraph.load(path, device=device)


# ---------------------------------------------------------------------------------------------- CenterNet


class CenterNetPersons:
    """Person boxes from CenterNet (``--detector centernet``, and the box proposals of the people finder).

    The network (MobileNetV3 CenterNet trained on COCO's 80 classes) takes a 512 x 512 RGB float image with values
    0-255 and returns its 100 best objects as (x1, y1, x2, y2, score, class) in input pixels; the image is
    letterboxed into that square (aspect kept) and only class 0, person, is kept. Images with a longer side above
    1.2 x ``tile`` are also cut into overlapping tiles (:func:`tile_windows`), each letterboxed in turn, so that
    small people in large frames are seen at a useful size; boxes from the whole image and the tiles are merged
    by non-maximum suppression (``nms_iou``).

    Args:
        model: ``centernet.json`` or its folder (default: looked up in the weights roots).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        weights: explicit weights root for the lookup.
        conf: lowest person score kept.
        tile, tile_overlap: tiling of large images (``tile`` 0: never).
        nms_iou: IoU from which the lower-scoring of two boxes is dropped.
        min_box_size: boxes with a shorter side (pixels) are dropped.

    Raises:
        AssetNotFoundError: the model is not installed (run ``metahmr weights fetch-open``).
    """

    def __init__(self, model: str | os.PathLike[str] | None = None, *, device: str = "cpu",
                 weights: str | os.PathLike[str] | None = None, conf: float = 0.3, tile: int = 1024,
                 tile_overlap: float = 0.25, nms_iou: float = 0.5, min_box_size: float = 8.0) -> None:
        self.model_path = resolve_tfjs_model(CENTERNET_ASSET, CENTERNET_JSON, model, weights)
        self.device = str(resolve_device(device))
        self.graph = _load_graph(self.model_path, self.device)
        self.conf = float(conf)
        self.tile = int(tile)
        self.tile_overlap = float(tile_overlap)
        self.nms_iou = float(nms_iou)
        self.min_box_size = float(min_box_size)
        self.name = "centernet-mobilenetv3"
        self.calls = 0
        self._lock = threading.Lock()

    def run_view(self, view: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes (M, 4) in ``view`` pixels and their scores (M,), all of them (no threshold), best first."""
        import torch

        square, box = letterbox(view, CENTERNET_INPUT)
        x = torch.from_numpy(np.ascontiguousarray(square, dtype=np.float32))[None]
        with self._lock:
            out = self.graph.run({self.graph.input_names[0]: x}, outputs=["tower_0/detections"])
            self.calls += 1
        det = next(iter(out.values()))[0].float().cpu().numpy().astype(np.float64)
        det = det[(det[:, 5] == CENTERNET_PERSON) & np.isfinite(det[:, :5]).all(axis=1)]
        x1, y1 = box.to_image(det[:, 0] / CENTERNET_INPUT, det[:, 1] / CENTERNET_INPUT)
        x2, y2 = box.to_image(det[:, 2] / CENTERNET_INPUT, det[:, 3] / CENTERNET_INPUT)
        order = np.argsort(-det[:, 4], kind="stable")
        return np.stack([x1, y1, x2, y2], axis=1)[order], det[order, 4]

    def proposals(self, image: np.ndarray, min_score: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes (M, 4) in image pixels (clamped) and scores (M,) from the whole image and its tiles."""
        image = check_image(image)
        h, w = image.shape[:2]
        floor = self.conf if min_score is None else float(min_score)
        all_boxes, all_scores = [], []
        for x1, y1, x2, y2 in [(0, 0, w, h), *tile_windows(w, h, self.tile, self.tile_overlap)]:
            boxes, scores = self.run_view(image[y1:y2, x1:x2])
            keep = scores >= floor
            all_boxes.append(boxes[keep] + [x1, y1, x1, y1])
            all_scores.append(scores[keep])
        boxes = _clamp(np.concatenate(all_boxes).reshape(-1, 4), w, h)
        scores = np.concatenate(all_scores)
        size = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        keep = size > 0
        return boxes[keep], scores[keep]

    def detect(self, image: np.ndarray) -> Detections:
        """Person boxes of an RGB uint8 image (H, W, 3), sorted by decreasing score."""
        boxes, scores = self.proposals(image)
        order = np.argsort(-scores, kind="stable")
        boxes, scores = boxes[order], scores[order]
        kept = _nms(boxes, scores, self.nms_iou)
        size = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        kept = kept[size[kept] >= self.min_box_size]
        return Detections(boxes[kept], scores[kept])


# ---------------------------------------------------------------------------------------------- top-down


class MoveNetTopDown:
    """COCO-17 keypoints of each person on their own crop: MoveNet SinglePose Thunder (``--keypoints
    movenet-thunder``).

    Each box becomes a square crop centred on it, ``crop_expand`` times its longer side (black outside the
    image), resized to 256 x 256; Thunder returns 17 keypoints (y, x, score) normalised to the crop, mapped back
    to image pixels. Keypoints outside the image get score 0 (:func:`zero_outside`). Results are cached per image
    and box, so the people finder and the keypoint stage share one run.

    Args:
        model: ``movenet-thunder.json`` or its folder (default: looked up in the weights roots).
        device, weights: as for :class:`CenterNetPersons`.
        crop_expand: the crop's side over the box's longer side.
        cache_images: how many recent images keep their results (0 disables the cache).

    Attributes:
        calls: how many times the network has run.
    """

    format = "coco17"
    _shared: dict[tuple[str, str, float], MoveNetTopDown] = {}
    _shared_lock = threading.Lock()

    def __init__(self, model: str | os.PathLike[str] | None = None, *, device: str = "cpu",
                 weights: str | os.PathLike[str] | None = None, crop_expand: float = 1.25,
                 cache_images: int = 4) -> None:
        self.model_path = resolve_tfjs_model(THUNDER_ASSET, THUNDER_JSON, model, weights)
        self.device = str(resolve_device(device))
        self.graph = _load_graph(self.model_path, self.device)
        self.crop_expand = float(crop_expand)
        self.cache_images = int(cache_images)
        self.name = "movenet-thunder"
        self.calls = 0
        self._cache: OrderedDict[bytes, dict[tuple[float, ...], np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def shared(cls, model: str | os.PathLike[str] | None = None, *, device: str = "cpu",
               weights: str | os.PathLike[str] | None = None, crop_expand: float = 1.25) -> MoveNetTopDown:
        """The process-wide instance for this model file, device and crop size (created on first use)."""
        path = resolve_tfjs_model(THUNDER_ASSET, THUNDER_JSON, model, weights)
        key = (str(path.resolve()), str(resolve_device(device)), float(crop_expand))
        with cls._shared_lock:
            inst = cls._shared.get(key)
            if inst is None:
                inst = cls(path, device=key[1], crop_expand=key[2])
                cls._shared[key] = inst
            return inst

    def crop(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        """The network input of one box: (256, 256, 3) uint8, and the crop's left, top and side in image pixels."""
        import cv2

        h, w = image.shape[:2]
        box = np.asarray(box, np.float64)
        side = max(box[2] - box[0], box[3] - box[1], 1.0) * self.crop_expand
        n = max(int(round(side)), 1)
        left = int(round((box[0] + box[2]) / 2.0 - n / 2.0))
        top = int(round((box[1] + box[3]) / 2.0 - n / 2.0))
        canvas = np.zeros((n, n, 3), np.uint8)
        x1, y1, x2, y2 = max(left, 0), max(top, 0), min(left + n, w), min(top + n, h)
        if x2 > x1 and y2 > y1:
            canvas[y1 - top:y2 - top, x1 - left:x2 - left] = image[y1:y2, x1:x2]
        if n != THUNDER_INPUT:
            # INTER_AREA averages when shrinking (no aliasing on large people), INTER_LINEAR when enlarging.
            interp = cv2.INTER_AREA if n > THUNDER_INPUT else cv2.INTER_LINEAR
            canvas = cv2.resize(canvas, (THUNDER_INPUT, THUNDER_INPUT), interpolation=interp)
        return canvas, float(left), float(top), float(n)

    def run_box(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Keypoints (17, 3) ``[x, y, score]`` in image pixels of the person in one box (no cache)."""
        import torch

        crop, left, top, side = self.crop(image, box)
        x = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.int32))[None]
        with self._lock:
            out = self.graph(x)
            self.calls += 1
        yxs = out.reshape(NUM_KEYPOINTS, 3).float().cpu().numpy().astype(np.float64)
        kp = np.stack([left + yxs[:, 1] * side, top + yxs[:, 0] * side, np.clip(yxs[:, 2], 0.0, 1.0)], axis=1)
        h, w = image.shape[:2]
        return zero_outside(kp, w, h)

    @staticmethod
    def _box_key(box: np.ndarray) -> tuple[float, ...]:
        # float32 rounding: the boxes come back through Detections (float32) before the keypoint stage asks.
        return tuple(float(v) for v in np.asarray(box, np.float32).reshape(4))

    def remember(self, image_key: bytes, box: np.ndarray, keypoints: np.ndarray) -> None:
        """Store the keypoints of a box of the image with content key ``image_key`` (see :meth:`estimate`)."""
        if self.cache_images <= 0:
            return
        with self._lock:
            entry = self._cache.setdefault(image_key, {})
            self._cache.move_to_end(image_key)
            entry[self._box_key(box)] = np.asarray(keypoints, np.float32)
            while len(self._cache) > self.cache_images:
                self._cache.popitem(last=False)

    def estimate(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(N, 17, 3) keypoints ``[x, y, score]`` in image pixels for boxes (N, 4) ``[x1, y1, x2, y2]``."""
        image = check_image(image)
        boxes = check_boxes(boxes)
        out = np.zeros((len(boxes), NUM_KEYPOINTS, 3), np.float32)
        if len(boxes) == 0:
            return out
        key = _image_key(image)
        with self._lock:
            cached = dict(self._cache.get(key, {}))
        for i, box in enumerate(boxes):
            hit = cached.get(self._box_key(box))
            if hit is None:
                hit = self.run_box(image, box).astype(np.float32)
                self.remember(key, box, hit)
            out[i] = hit
        return out

    def clear_cache(self) -> None:
        """Forget cached results."""
        with self._lock:
            self._cache.clear()


# ------------------------------------------------------------------------------------------- the finder


@dataclass
class _Proposal:
    box: np.ndarray
    score: float
    source: str


@dataclass
class FinderReport:
    """What the finder did on its last image (for benchmarks and debugging).

    Attributes:
        proposals: proposals per source (``"centernet"``, ``"movenet@256"`` ...).
        candidates: groups checked with Thunder.
        people: people kept.
        rejected: candidates whose keypoints did not reach ``min_evidence``.
        duplicates: people dropped as another's duplicate.
    """

    proposals: dict[str, int] = field(default_factory=dict)
    candidates: int = 0
    people: int = 0
    rejected: int = 0
    duplicates: int = 0


class PeopleFinder:
    """Everyone in an image, with COCO-17 keypoints (``--detector finder``; the open tier's default).

    See the module docstring for the steps. ``detect`` returns the people's boxes and scores; their keypoints
    are in :attr:`topdown`'s cache, so ``--keypoints movenet-thunder`` (the same shared :class:`MoveNetTopDown`)
    returns them without running Thunder again.

    Args:
        settings: :class:`PeopleSettings` (default: its defaults).
        conf: lowest person score (the best proposal score of the person's group).
        min_box_size: people whose box has a shorter side (pixels) are dropped.
        device, weights: where the models run and an explicit weights root.
        centernet, multipose, topdown: model instances to use instead of loading them (tests, sharing).

    Attributes:
        last_report: :class:`FinderReport` of the last image.
    """

    def __init__(self, settings: PeopleSettings | None = None, *, conf: float = 0.25, min_box_size: float = 8.0,
                 device: str = "cpu", weights: str | os.PathLike[str] | None = None,
                 centernet: CenterNetPersons | None = None,
                 multipose: dict[int, MoveNetMultiPose] | None = None,
                 topdown: MoveNetTopDown | None = None) -> None:
        self.settings = settings if settings is not None else PeopleSettings()
        self.settings.validate()
        s = self.settings
        self.conf = float(conf)
        self.min_box_size = float(min_box_size)
        device = str(resolve_device(device))
        if s.boxes == "centernet":
            self.centernet: CenterNetPersons | None = centernet or CenterNetPersons(
                device=device, weights=weights, conf=s.box_conf, tile=s.tile, tile_overlap=s.tile_overlap)
        else:
            self.centernet = None
        multipose = dict(multipose or {})
        self.multipose: dict[int, MoveNetMultiPose] = {
            size: multipose.get(size) or MoveNetMultiPose.shared(input_size=size, device=device, weights=weights)
            for size in s.sizes}
        self.topdown = topdown or MoveNetTopDown.shared(device=device, weights=weights, crop_expand=s.crop_expand)
        parts = (["centernet"] if self.centernet is not None else []) + [f"movenet@{z}" for z in s.sizes]
        self.name = f"finder({'+'.join(parts)}; movenet-thunder)"
        self.last_report = FinderReport()

    # ------------------------------------------------------------------------------------------ proposals
    def _multipose_proposals(self, image: np.ndarray, views: list[tuple[int, int, int, int]]) -> list[_Proposal]:
        s = self.settings
        h, w = image.shape[:2]
        out: list[_Proposal] = []
        for size, model in self.multipose.items():
            for x1, y1, x2, y2 in views:
                people = model.predict(image[y1:y2, x1:x2]).select(s.pose_conf)
                for kp, box, score in zip(people.keypoints, people.boxes, people.scores, strict=True):
                    kp = kp.astype(np.float64) + [x1, y1, 0.0]
                    b = box.astype(np.float64) + [x1, y1, x1, y1]
                    inner = seen_box(kp, s.keypoint_conf)
                    if inner is not None:  # MultiPose's box can be tighter than its own keypoints
                        b = np.concatenate([np.minimum(b[:2], inner[:2]), np.maximum(b[2:], inner[2:])])
                    b = _clamp(b, w, h)
                    if np.isfinite(b).all() and b[2] > b[0] and b[3] > b[1]:
                        out.append(_Proposal(b, float(score), f"movenet@{size}"))
        return out

    def proposals(self, image: np.ndarray) -> list[_Proposal]:
        """Every proposal of an image: CenterNet's boxes and MoveNet MultiPose's people, whole image and tiles."""
        s = self.settings
        h, w = image.shape[:2]
        views = [(0, 0, w, h), *tile_windows(w, h, s.tile, s.tile_overlap)]
        out: list[_Proposal] = []
        if self.centernet is not None:
            boxes, scores = self.centernet.proposals(image, min_score=s.box_conf)
            out += [_Proposal(b, float(sc), "centernet") for b, sc in zip(boxes, scores, strict=True)]
        out += self._multipose_proposals(image, views)
        return out

    # ------------------------------------------------------------------------------------------ checking
    def _fit_box(self, box: np.ndarray, kp: np.ndarray, width: int, height: int) -> np.ndarray:
        """The person's box from a candidate box and the keypoints Thunder saw in it (clamped to the image)."""
        s = self.settings
        inner = seen_box(kp, s.keypoint_conf)
        if inner is None:
            return _clamp(box, width, height)
        own = _clamp(box_from_keypoints(kp, s.keypoint_conf), width, height)
        if box_iou(box[None], own[None])[0, 0] < 0.3:
            return own  # the box does not fit its own keypoints: it fell between people, or on part of one
        return _clamp(np.concatenate([np.minimum(box[:2], inner[:2]), np.maximum(box[2:], inner[2:])]), width, height)

    def _person(self, image: np.ndarray, proposal: _Proposal) -> Person | None:
        """Thunder on a candidate: a :class:`Person` with its final box and keypoints, or None (not a person)."""
        s = self.settings
        h, w = image.shape[:2]
        box = proposal.box
        for look in range(2):
            kp = self.topdown.run_box(image, box)
            if kp[kp[:, 2] >= s.keypoint_conf, 2].sum() < s.min_evidence:
                return None
            fitted = self._fit_box(box, kp, w, h)
            if look == 1 or box_iou(fitted[None], box[None])[0, 0] >= 0.7:
                break
            # The crop Thunder saw was not this person's (a tile cut them, or the box fell between two people):
            # look again at the person's own box, so that every keypoint comes from a crop of the whole person.
            box = fitted
        return Person(box=fitted, score=proposal.score, keypoints=kp.astype(np.float32), source=proposal.source)

    def find(self, image: np.ndarray) -> list[Person]:
        """Everyone in an RGB uint8 image (H, W, 3), best score first, with COCO-17 keypoints."""
        image = check_image(image)
        s = self.settings
        key = _image_key(image)
        props = self.proposals(image)
        report = FinderReport()
        for p in props:
            report.proposals[p.source] = report.proposals.get(p.source, 0) + 1
        groups = group_boxes(np.array([p.box for p in props]).reshape(-1, 4), np.array([p.score for p in props]),
                             s.merge_iou)
        report.candidates = len(groups)
        found: list[Person] = []
        for group in groups:
            lead = props[group[0]]
            if lead.score < self.conf:
                break  # groups come best first
            person = self._person(image, lead)
            if person is None:
                report.rejected += 1
                continue
            found.append(person)
        kept = dedupe_people(found, s.same_person, s.keypoint_conf)
        size_ok = [p for p in kept if min(p.box[2] - p.box[0], p.box[3] - p.box[1]) >= self.min_box_size]
        report.duplicates = len(found) - len(kept)
        report.people = len(size_ok)
        people = sorted(size_ok, key=lambda p: -p.score)
        for person in people:
            self.topdown.remember(key, person.box, person.keypoints)
        self.last_report = report
        return people

    def detect(self, image: np.ndarray) -> Detections:
        """Person boxes and scores of an RGB uint8 image (H, W, 3), sorted by decreasing score."""
        people = self.find(image)
        if not people:
            return Detections.empty()
        return Detections(np.array([p.box for p in people]), np.array([p.score for p in people]))


__all__ = [
    "CENTERNET_DETECTOR",
    "COCO_SIGMAS",
    "CenterNetPersons",
    "FINDER_DETECTOR",
    "FinderReport",
    "MoveNetTopDown",
    "PeopleFinder",
    "PeopleSettings",
    "Person",
    "THUNDER_BACKEND",
    "box_from_keypoints",
    "dedupe_people",
    "group_boxes",
    "keypoint_similarity",
    "parse_sizes",
    "resolve_centernet_json",
    "resolve_thunder_json",
    "seen_box",
    "tile_windows",
    "zero_outside",
]
