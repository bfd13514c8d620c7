"""Per-person image evidence for what 2D keypoints cannot tell: which way a person faces, and depth.

A detector's 17 keypoints leave two things open that a photo shows plainly: whether the person faces the camera or
turns their back to it (the 2D skeleton of one is the mirror image of the other, and detectors' left/right labels
flip on small or distant people), and which limbs are nearer the camera. Models trained on real photos answer both:

- **BlazePose** (MediaPipe Pose, bundled with the ``mediapipe`` 0.10.21 wheel, Apache-2.0) on each person's crop:
  33 landmarks with visibilities and *world landmarks*, metric 3D positions centred between the hips in the axes of
  the view (x right, y down, z away from the camera), which carry front/back and depth learned from real images;
- **a face detector** (MediaPipe's full-range BlazeFace, same wheel) on the same crop: a face found at the person's
  head means the person faces the camera.

:class:`PersonEvidence` holds both per person; :func:`resolve_left_right` uses them to undo a detector's left/right
swap before the body is fitted, and :func:`pack_network_input` appends them to the keypoint input of the open
model (with their confidences, so the model still works where they are missing). The synthetic training data
(:mod:`metahmr_cli.data.keypoint_synth`) simulates the same evidence with errors measured on this model
(``benchmarks/blazepose_errors.py``) and goes through the same two functions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from metahmr_cli.body.joints import J49_FLIP_PERM
from metahmr_cli.errors import MetaHMRError
from metahmr_cli.keypoints.base import check_boxes
from metahmr_cli.native_logs import native_stderr_silenced, quiet_native_logs

logger = logging.getLogger(__name__)

__all__ = [
    "COCO17_NAMES",
    "EVIDENCE_ROWS",
    "INPUT_ROWS",
    "OPEN_KEYPOINT_MIN_CONF",
    "BlazePoseEvidence",
    "PersonEvidence",
    "drop_unreliable_keypoints",
    "facing_belief",
    "left_right_arrangement",
    "pack_network_input",
    "resolve_left_right",
]

COCO17_NAMES = ("nose", "leye", "reye", "lear", "rear", "lshoulder", "rshoulder", "lelbow", "relbow", "lwrist",
                "rwrist", "lhip", "rhip", "lknee", "rknee", "lankle", "rankle")
"""Order of the 17 world landmarks kept from BlazePose's 33 (the COCO-17 order)."""

BLAZEPOSE_OF_COCO17 = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
"""BlazePose landmark index of each COCO-17 keypoint."""

COCO17_FLIP = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
"""Index of the left/right partner of each COCO-17 keypoint."""

SLOTS_OF_COCO17 = ((0, 44), (16, 45), (15, 46), (18, 47), (17, 48), (5, 34), (2, 33), (6, 35), (3, 32), (7, 36),
                   (4, 31), (12, 28), (9, 27), (13, 29), (10, 26), (14, 30), (11, 25))
"""The slots of the 49-joint convention (OpenPose slot, ground-truth slot) that hold each COCO-17 keypoint."""


NUM_SLOTS = 49
EVIDENCE_ROWS = 18
"""Rows the evidence adds to the network input: 17 world landmarks and one row of flags."""
INPUT_ROWS = NUM_SLOTS + EVIDENCE_ROWS
"""Rows of the open model's input with evidence: (INPUT_ROWS, 4)."""

OPEN_KEYPOINT_MIN_CONF = 0.15
"""The open tier drops detector keypoints below this confidence (see :func:`drop_unreliable_keypoints`)."""
FACE_MIN_SCORE = 0.5
"""A face detection at the person's head from this score on counts as a face seen."""
SWAP_MIN_ARRANGEMENT = 0.25
"""A detector's left/right arrangement counts as clear from this magnitude (see :func:`left_right_arrangement`)."""
SWAP_MIN_BELIEF = 0.35
"""The facing evidence must be at least this sure (see :func:`facing_belief`) before labels are swapped."""


@dataclass
class PersonEvidence:
    """Image evidence per person (leading axis N). Missing evidence is zero with its flag off.

    Attributes:
        world: (N, 17, 3) BlazePose world landmarks (metres, centred between the hips, view axes: x right, y down,
            z away from the camera), COCO-17 order (:data:`COCO17_NAMES`).
        world_conf: (N, 17) their visibilities in [0, 1] (0 where BlazePose found nobody).
        landmarks: (N, 17, 3) BlazePose's 2D landmarks in image pixels + visibility, COCO-17 order.
        face: (N,) score of the face found at the person's head (0 = none found).
        found: (N,) BlazePose found this person.
        face_checked: (N,) the face detector ran on this person.
    """

    world: np.ndarray
    world_conf: np.ndarray
    landmarks: np.ndarray
    face: np.ndarray
    found: np.ndarray
    face_checked: np.ndarray

    @classmethod
    def empty(cls, n: int) -> PersonEvidence:
        """No evidence for ``n`` people."""
        return cls(np.zeros((n, 17, 3), np.float32), np.zeros((n, 17), np.float32), np.zeros((n, 17, 3), np.float32),
                   np.zeros(n, np.float32), np.zeros(n, bool), np.zeros(n, bool))

    def __len__(self) -> int:
        return int(self.face.shape[0])

    def __getitem__(self, idx: object) -> PersonEvidence:
        return PersonEvidence(*(np.asarray(getattr(self, k))[idx] for k in
                                ("world", "world_conf", "landmarks", "face", "found", "face_checked")))


# ------------------------------------------------------------------------------------------ facing and left/right


def _torso_forward(world: np.ndarray, conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward direction (N, 3) of the torso of COCO-17 world landmarks and its weight (N,) in [0, 1].

    across = (left shoulder - right shoulder) + (left hip - right hip) points to the person's left, up = shoulder
    midpoint - hip midpoint, and forward = across x up (a person facing the camera: (+x) x (-y) = -z, toward it).
    """
    w = np.asarray(world, np.float64)
    across = (w[:, 5] - w[:, 6]) + (w[:, 11] - w[:, 12])
    up = 0.5 * (w[:, 5] + w[:, 6]) - 0.5 * (w[:, 11] + w[:, 12])
    fwd = np.cross(across, up)
    norm = np.linalg.norm(fwd, axis=1, keepdims=True)
    fwd = np.where(norm > 1e-9, fwd / np.maximum(norm, 1e-9), 0.0)
    weight = np.asarray(conf, np.float64)[:, [5, 6, 11, 12]].min(axis=1)
    return fwd, np.clip(weight, 0.0, 1.0)


def facing_belief(ev: PersonEvidence) -> np.ndarray:
    """How sure the evidence is that each person faces the camera: (N,) in [-1, 1], +1 toward, -1 away, 0 unknown.

    BlazePose's torso (its forward direction's component toward the camera, weighted by the torso landmarks'
    visibility) and a face found at the head (toward, 1 at a sure detection; no face says nothing: small faces are
    missed) are added and clipped.
    """
    fwd, weight = _torso_forward(ev.world, ev.world_conf)
    toward_bp = -fwd[:, 2] * weight * np.asarray(ev.found, np.float64)
    face = np.clip((np.asarray(ev.face, np.float64) - FACE_MIN_SCORE) / (1.0 - FACE_MIN_SCORE), 0.0, 1.0)
    face = np.where(np.asarray(ev.face, np.float64) >= FACE_MIN_SCORE, 0.5 + 0.5 * face, 0.0)
    return np.clip(toward_bp + face, -1.0, 1.0)


def left_right_arrangement(kp49: np.ndarray, min_conf: float = 0.05) -> np.ndarray:
    """Which way the detector's labels say each person faces: (N,) signed, > 0 toward the camera.

    For a person facing the camera their left shoulder and hip appear right of the right ones in the image. The
    value is ((x_Lsh - x_Rsh) + (x_Lhip - x_Rhip)) over the torso height (shoulder to hip midpoints), from the pairs
    both of whose keypoints are confident; 0 when neither pair is.
    """
    kp = np.asarray(kp49, np.float64)
    total = np.zeros(len(kp))
    pairs = ((34, 33), (28, 27))  # (left, right) shoulders and hips, ground-truth slots
    mids = []
    for left, right in pairs:
        ok = (kp[:, left, 2] > min_conf) & (kp[:, right, 2] > min_conf)
        total += np.where(ok, kp[:, left, 0] - kp[:, right, 0], 0.0)
        mids.append((ok, 0.5 * (kp[:, left, :2] + kp[:, right, :2])))
    (ok_s, mid_s), (ok_h, mid_h) = mids
    torso = np.where(ok_s & ok_h, np.linalg.norm(mid_s - mid_h, axis=1), 0.0)
    # without both pairs the torso height is unknown: use the box-free fallback of twice the pair's width
    width = np.abs(total)
    scale = np.where(torso > 1e-6, torso, np.maximum(2.0 * width, 1e-6))
    return np.where(ok_s | ok_h, total / scale, 0.0)


def resolve_left_right(kp49: np.ndarray, ev: PersonEvidence) -> tuple[np.ndarray, np.ndarray]:
    """Undo detector left/right swaps that the image evidence contradicts.

    A person's labels are swapped (every left/right pair of the 49 slots exchanged) when the evidence is sure which
    way they face (``|facing_belief| >= SWAP_MIN_BELIEF``) and the detector's arrangement is clear
    (``|left_right_arrangement| >= SWAP_MIN_ARRANGEMENT``) and says the opposite. People seen from the side, or
    without evidence, keep their labels.

    Args:
        kp49: (N, 49, 3) keypoints (image px + confidence).
        ev: the evidence of the same N people.
    Returns:
        (the keypoints with the swaps undone (a copy), (N,) bool which people were swapped).
    """
    kp = np.array(kp49, dtype=np.float32, copy=True)
    if len(kp) == 0:
        return kp, np.zeros(0, bool)
    belief = facing_belief(ev)
    arrangement = left_right_arrangement(kp)
    swap = ((np.abs(belief) >= SWAP_MIN_BELIEF) & (np.abs(arrangement) >= SWAP_MIN_ARRANGEMENT)
            & (np.sign(belief) != np.sign(arrangement)))
    if swap.any():
        kp[swap] = kp[swap][:, J49_FLIP_PERM]
    return kp, swap


def drop_unreliable_keypoints(kp49: np.ndarray, image_size: tuple[int, int], min_conf: float) -> np.ndarray:
    """Zero the keypoints a detector only guessed: outside the image, or with a confidence below ``min_conf``.

    Detectors still report a position for a joint cut off by the image border, with a confidence of a few percent;
    fitting a body to it invents limbs (a crouch under a person cut at the waist).

    Args:
        kp49: (..., 49, 3) keypoints (image px + confidence).
        image_size: (height, width) of the image.
        min_conf: lowest confidence kept.
    Returns:
        a copy with those keypoints set to 0 (position and confidence).
    """
    h, w = image_size
    kp = np.array(kp49, dtype=np.float32, copy=True)
    x, y, c = kp[..., 0], kp[..., 1], kp[..., 2]
    bad = (c < min_conf) | ~np.isfinite(x) | ~np.isfinite(y) | (x < 0) | (y < 0) | (x > w - 1) | (y > h - 1)
    kp[bad] = 0.0
    return kp


def pack_network_input(kp_crop: np.ndarray, ev: PersonEvidence) -> np.ndarray:
    """The open model's input with evidence: (N, 67, 4) float32.

    Rows 0-48: the normalised crop keypoints [x_n, y_n, confidence, 0] of the 49 slots (zero where missing);
    rows 49-65: the world landmarks [X, Y, Z, visibility] (metres; zero where BlazePose found nobody);
    row 66: [face score, face detector ran, BlazePose found the person, 0].

    Args:
        kp_crop: (N, 49, 3) normalised crop keypoints with confidences
            (:func:`metahmr_cli.geometry.crop.normalize_crop_keypoints`).
        ev: the evidence of the same people.
    """
    kp_crop = np.asarray(kp_crop, np.float32)
    n = len(kp_crop)
    if len(ev) != n:
        raise ValueError(f"evidence for {len(ev)} people, keypoints for {n}")
    out = np.zeros((n, INPUT_ROWS, 4), np.float32)
    out[:, :NUM_SLOTS, :3] = kp_crop
    found = np.asarray(ev.found, bool)
    conf = np.clip(np.asarray(ev.world_conf, np.float32), 0.0, 1.0) * found[:, None]
    out[:, NUM_SLOTS:NUM_SLOTS + 17, :3] = np.asarray(ev.world, np.float32) * (conf > 0)[..., None]
    out[:, NUM_SLOTS:NUM_SLOTS + 17, 3] = conf
    out[:, -1, 0] = np.clip(np.asarray(ev.face, np.float32), 0.0, 1.0)
    out[:, -1, 1] = np.asarray(ev.face_checked, np.float32)
    out[:, -1, 2] = found.astype(np.float32)
    return out


# --------------------------------------------------------------------------------------------- the image models


def square_crop(image: np.ndarray, box: np.ndarray, margin: float, size: int) -> tuple[np.ndarray, float, float,
                                                                                         float]:
    """A square ``size`` x ``size`` crop centred on ``box`` with side ``max(w, h) * (1 + 2 margin)`` (black outside
    the image); returns (crop, x0, y0, side) so that image point = (x0, y0) + crop point * side / size."""
    import cv2

    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 1.0) * (1.0 + 2.0 * margin)
    x0, y0 = 0.5 * (x1 + x2) - side / 2.0, 0.5 * (y1 + y2) - side / 2.0
    scale = size / side
    affine = np.array([[scale, 0.0, -x0 * scale], [0.0, scale, -y0 * scale]], np.float64)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    crop = cv2.warpAffine(np.ascontiguousarray(image), affine, (size, size), flags=interp,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return crop, x0, y0, side


def _head_centre(kp49: np.ndarray | None, box: np.ndarray, min_conf: float = 0.2) -> np.ndarray:
    """Where the person's head is: the mean of their confident nose/eye/ear keypoints, else near the box top."""
    if kp49 is not None:
        head = np.asarray(kp49, np.float64)[[0, 15, 16, 17, 18]]
        ok = head[:, 2] > min_conf
        if ok.any():
            return head[ok, :2].mean(axis=0)
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.array([0.5 * (x1 + x2), y1 + 0.1 * (y2 - y1)])


class BlazePoseEvidence:
    """BlazePose world landmarks and a face check on each person's crop (see the module docstring).

    Args:
        margin: crop margin on every side, relative to the box's longer side.
        crop_size: side of the square crop given to the models (pixels).
        min_detection_confidence: MediaPipe's person/face detection thresholds.
        max_landmark_distance: BlazePose's landmarks must lie within this fraction of the box height of the
            detector's keypoints (either label order), else BlazePose followed someone else in the crop.
    """

    def __init__(self, *, margin: float = 0.25, crop_size: int = 256, min_detection_confidence: float = 0.3,
                 max_landmark_distance: float = 0.25) -> None:
        try:

            quiet_native_logs()
            import mediapipe as mp
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise MetaHMRError("the open model's image evidence needs mediapipe: pip install "
                               "'metahmr[keypoints]'") from exc
        with native_stderr_silenced():
            self._pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1,
                                                enable_segmentation=False,
                                                min_detection_confidence=min_detection_confidence)
            self._face = mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=min_detection_confidence)
            # the graphs start their models in their own threads, which log as they go: run them once here, while
            # the native log is silenced, instead of letting those lines out on the first person
            blank = np.zeros((64, 64, 3), np.uint8)
            self._pose.process(blank)
            self._face.process(blank)
        self.margin = float(margin)
        self.crop_size = int(crop_size)
        self.max_landmark_distance = float(max_landmark_distance)
        self.name = "blazepose-full+blazeface-full"

    def close(self) -> None:
        """Release MediaPipe's graphs."""
        self._pose.close()
        self._face.close()

    def __call__(self, image: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray | None = None) -> PersonEvidence:
        """Evidence for the people in ``boxes`` (N, 4) of an (H, W, 3) uint8 RGB image; ``keypoints`` (N, 49, 3)
        (image px) locate each head and check that BlazePose followed the right person."""
        boxes = check_boxes(boxes)
        n = len(boxes)
        ev = PersonEvidence.empty(n)
        for i, box in enumerate(boxes):
            kp = None if keypoints is None else np.asarray(keypoints[i], np.float64)
            crop, x0, y0, side = square_crop(image, box, self.margin, self.crop_size)
            with native_stderr_silenced():
                pose = self._pose.process(crop)
                faces = self._face.process(crop)
            if pose.pose_landmarks is not None and pose.pose_world_landmarks is not None:
                lm = pose.pose_landmarks.landmark
                wl = pose.pose_world_landmarks.landmark
                idx = BLAZEPOSE_OF_COCO17
                land = np.array([[x0 + lm[j].x * side, y0 + lm[j].y * side, np.clip(lm[j].visibility, 0, 1)]
                                 for j in idx], np.float32)
                if self._same_person(land, kp, box):
                    ev.landmarks[i] = land
                    ev.world[i] = np.array([[wl[j].x, wl[j].y, wl[j].z] for j in idx], np.float32)
                    ev.world_conf[i] = land[:, 2]
                    ev.found[i] = True
            ev.face_checked[i] = True
            head = _head_centre(kp, box)
            radius = 0.15 * float(box[3] - box[1])
            for det in faces.detections or []:
                rel = det.location_data.relative_bounding_box
                fx = x0 + (rel.xmin + 0.5 * rel.width) * side
                fy = y0 + (rel.ymin + 0.5 * rel.height) * side
                size = max(rel.width, rel.height) * side
                if np.hypot(fx - head[0], fy - head[1]) <= radius + 0.5 * size:
                    ev.face[i] = max(float(ev.face[i]), float(det.score[0]))
        return ev

    def _same_person(self, land: np.ndarray, kp49: np.ndarray | None, box: np.ndarray) -> bool:
        """Whether BlazePose's landmarks (17, 3) lie on the detector's person (either label order)."""
        if kp49 is None:
            return True
        det = np.array([kp49[gt] for _, gt in SLOTS_OF_COCO17])
        ok = (det[:, 2] > 0.2) & (land[:, 2] > 0.3)
        if ok.sum() < 3:
            return True  # too little to compare: trust the crop
        height = max(float(box[3] - box[1]), 1.0)
        direct = np.linalg.norm(land[ok, :2] - det[ok, :2], axis=1).mean()
        flipped_land = land[list(COCO17_FLIP)]
        ok_f = ok & (flipped_land[:, 2] > 0.3)
        swapped = (np.linalg.norm(flipped_land[ok_f, :2] - det[ok_f, :2], axis=1).mean() if ok_f.sum() >= 3
                   else np.inf)
        return min(direct, swapped) <= self.max_landmark_distance * height
