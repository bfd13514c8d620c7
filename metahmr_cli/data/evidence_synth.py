"""Simulated image evidence for the open model's synthetic people: BlazePose world landmarks and a face check.

At run time the open model reads, beside each person's 2D keypoints, what BlazePose and a face detector see in the
person's crop (:mod:`metahmr_cli.keypoints.evidence`). Training data has no pixels, so the evidence is simulated from
the ground-truth body with the errors those models make:

- **BlazePose world landmarks.** Measured by ``benchmarks/blazepose_errors.py``: BlazePose (mediapipe 0.10.21, full
  model) run on 116 rendered open bodies of random pose and view (:mod:`metahmr_cli.data.synth`) against their
  ground truth. Its world frame is the frame of the view, within a rotation of median 12.4 deg (mean 15.0); its scale
  within 7.4 % (s.d.); the per-joint error after that rotation is 3-5 cm at the head and shoulders, 7-9 cm at elbows
  and knees, 10-15 cm at wrists and ankles (more along the depth axis), with small systematic offsets (its knees and
  ankles sit 5-7 cm lower than the body's joints); 6 of 116 people (5 %) came out facing the other way, i.e. front
  and back exchanged with left and right relabelled. Renders are harder for it than photos, so every sample draws a
  noise multiplier around these values.
- **BlazePose's guesses** for joints outside the picture (low visibility, positions that say nothing: folded legs
  under a person cut at the waist).
- **BlazePose 2D landmarks** with visibilities (high in the image, low outside it or under an occluder), relabelled
  with the world landmarks when it turns the person around.
- **BlazePose misses** a person now and then (more often when the person is small or cut by the image border).
- **A face detector** finds the face when the head faces the camera (within ~55 deg) and is at least ~14 px tall,
  rarely at steeper angles, almost never from behind.

Everything is a function of the caller's random generator, so a sample stays a function of (seed, split, epoch,
index).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from ..keypoints.evidence import COCO17_FLIP, SLOTS_OF_COCO17, PersonEvidence

__all__ = ["EvidenceSimConfig", "ray_rotation", "simulate_evidence"]

GT_SLOTS = np.array([gt for _, gt in SLOTS_OF_COCO17])
"""Ground-truth slot (of the 49) of each COCO-17 keypoint."""

# measured errors (benchmarks/blazepose_errors.py): per COCO-17 joint, offset and s.d. in metres along the
# person's own axes (left, up, forward)
_BIAS = np.array([
    [-0.002, -0.013, 0.013], [-0.020, -0.006, 0.022], [0.007, -0.008, 0.013], [0.000, -0.028, 0.002],
    [-0.005, -0.029, -0.008], [0.001, 0.010, 0.007], [0.015, 0.019, 0.016], [-0.047, -0.017, 0.014],
    [0.035, -0.011, 0.010], [-0.011, -0.022, 0.030], [0.020, -0.037, 0.009], [0.009, -0.001, -0.003],
    [-0.009, 0.001, 0.003], [0.006, -0.074, -0.033], [0.020, -0.054, -0.041], [0.004, -0.047, 0.003],
    [0.035, -0.045, -0.005]])
_STD = np.array([
    [0.051, 0.051, 0.041], [0.045, 0.048, 0.043], [0.046, 0.050, 0.043], [0.034, 0.041, 0.046],
    [0.033, 0.042, 0.050], [0.034, 0.038, 0.055], [0.031, 0.037, 0.049], [0.068, 0.072, 0.094],
    [0.070, 0.069, 0.092], [0.145, 0.107, 0.121], [0.142, 0.097, 0.123], [0.016, 0.014, 0.030],
    [0.016, 0.014, 0.030], [0.083, 0.076, 0.096], [0.080, 0.081, 0.087], [0.129, 0.115, 0.165],
    [0.119, 0.111, 0.155]])
_ROT_SIGMA_DEG = 15.0   # half-normal s.d. of the frame's rotation error: median 0.67 x 15 = 10 deg at noise 1
_SCALE_SIGMA = 0.074


@dataclass(frozen=True)
class EvidenceSimConfig:
    """Settings of the simulated evidence (the defaults are the measured behaviour).

    Attributes:
        enabled: simulate evidence at all (off: every person without evidence, as when mediapipe is absent).
        noise: range of the per-sample multiplier of the measured BlazePose errors.
        turn_around: probability that BlazePose exchanges front and back (relabelling left and right).
        miss: probability that BlazePose finds nobody in a clear, large crop.
        miss_small: probability of a miss for a person under 80 px tall (and for one cut by the border).
        face_check: probability that the face detector ran.
        face_toward: detection probability of a face turned within 55 deg of the camera, at least 14 px tall.
        face_oblique: detection probability between 55 and 80 deg.
        face_false: probability of a face found at the head of a person turned further away.
    """

    enabled: bool = True
    noise: tuple[float, float] = (0.5, 1.4)
    turn_around: float = 0.05
    miss: float = 0.08
    miss_small: float = 0.3
    face_check: float = 0.97
    face_toward: float = 0.9
    face_oblique: float = 0.4
    face_false: float = 0.02


def ray_rotation(point: np.ndarray, f: float, w: int, h: int) -> np.ndarray:
    """The rotation (3, 3) that turns the optical axis onto the viewing ray through image point ``point`` (px).

    A model that sees only a crop perceives the person as if looked at along that ray; its 3D output is in the
    ray's frame: ``R.T @ X`` for camera-frame directions X.
    """
    ray = np.array([(point[0] - w / 2.0) / f, (point[1] - h / 2.0) / f, 1.0])
    ray /= np.linalg.norm(ray)
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(z, ray)
    s = np.linalg.norm(axis)
    if s < 1e-12:
        return np.eye(3)
    return Rotation.from_rotvec(axis / s * np.arctan2(s, float(z @ ray))).as_matrix()


def _person_axes(j17: np.ndarray) -> np.ndarray:
    """Rows: the person's left, up and forward directions from COCO-17 joints (17, 3) in camera axes."""
    across = (j17[5] - j17[6]) + (j17[11] - j17[12])
    up = 0.5 * (j17[5] + j17[6]) - 0.5 * (j17[11] + j17[12])
    a = across / max(np.linalg.norm(across), 1e-9)
    u = up - (up @ a) * a
    u /= max(np.linalg.norm(u), 1e-9)
    return np.stack([a, u, np.cross(a, u)])


def _guessed(rng: np.random.Generator, world: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """BlazePose's world landmarks for joints outside the picture (``outside``: (17,) bool): guesses that carry no
    information about the body. On photos cut at the waist its knees and ankles come out folded up toward the hips
    (knees 0.2-0.3 m and ankles 0.5 m under the hip centre instead of 0.45 m and 0.85 m) and scattered in depth;
    here each hidden joint is pulled toward the hip centre by a random factor and moved by ~10 cm, so the network
    learns that these rows say nothing (the ground truth of unseen legs is a standing pose)."""
    hip = 0.5 * (world[11] + world[12])
    pull = rng.uniform(0.2, 1.0)
    out = hip + (world[outside] - hip) * pull
    return out + rng.normal(0.0, 0.1, out.shape)


def simulate_evidence(rng: np.random.Generator, joints: np.ndarray, uv: np.ndarray, box: np.ndarray, f: float,
                      w: int, h: int, occluded: np.ndarray, cfg: EvidenceSimConfig) -> PersonEvidence:
    """Evidence for one synthetic person.

    Args:
        rng: the sample's generator.
        joints: (49, 3) camera-frame joints (metres, OpenCV axes).
        uv: (49, 2) their exact projections (px).
        box: (4,) the person's detector box (px).
        f, w, h: focal length and image size.
        occluded: (49,) bool, slots hidden by an occluder.
        cfg: the simulation settings.
    Returns:
        a :class:`PersonEvidence` for one person.
    """
    ev = PersonEvidence.empty(1)
    if not cfg.enabled:
        return ev
    j17 = joints[GT_SLOTS]
    p17 = uv[GT_SLOTS]
    inside = (p17[:, 0] >= 0) & (p17[:, 0] <= w - 1) & (p17[:, 1] >= 0) & (p17[:, 1] <= h - 1)
    box_h = float(box[3] - box[1])
    cut = not inside.all()
    miss = cfg.miss_small if (box_h < 80 or cut) else cfg.miss
    noise = rng.uniform(*cfg.noise)
    found = bool(rng.random() >= miss) and inside[[5, 6, 11, 12]].sum() >= 2
    # ---- BlazePose
    if found:
        centre = 0.5 * (box[:2] + box[2:])
        r_ray = ray_rotation(centre, f, w, h)
        hip = 0.5 * (j17[11] + j17[12])
        local = (j17 - hip) @ r_ray                       # the crop's view: R^T (X - hip) row-wise
        axes = _person_axes(local)
        world = local + _BIAS @ axes                      # offsets along the person's own axes
        world = world + (rng.normal(0.0, 1.0, (17, 3)) * _STD * noise) @ axes
        angle = np.radians(abs(rng.normal(0.0, _ROT_SIGMA_DEG * noise)))
        axis = rng.normal(size=3)
        world = world @ Rotation.from_rotvec(axis / np.linalg.norm(axis) * angle).as_matrix().T
        world *= 1.0 + rng.normal(0.0, _SCALE_SIGMA * noise)
        if cut:  # joints outside the picture: BlazePose still places them, as a guess, e.g. folded legs
            world[~inside] = _guessed(rng, world, ~inside)
        vis = np.where(inside, rng.uniform(0.85, 1.0, 17), rng.uniform(0.0, 0.3, 17))
        hidden = occluded[GT_SLOTS] & inside
        vis[hidden] = rng.uniform(0.2, 0.7, int(hidden.sum()))
        land = np.concatenate([p17 + rng.normal(0.0, 0.02 * noise * box_h, (17, 2)), vis[:, None]], axis=1)
        if rng.random() < cfg.turn_around:               # front and back exchanged: depth mirrored, labels swapped
            world[:, 2] = -world[:, 2]
            world = world[list(COCO17_FLIP)]
            land[:, :2] = land[list(COCO17_FLIP), :2]
        world -= 0.5 * (world[11] + world[12])            # BlazePose's origin: between its hips
        ev.world[0] = world
        ev.world_conf[0] = vis
        ev.landmarks[0] = land
        ev.found[0] = True
    # ---- the face detector
    ev.face_checked[0] = bool(rng.random() < cfg.face_check)
    if ev.face_checked[0]:
        nose, ear_mid = joints[44], 0.5 * (joints[47] + joints[48])
        forward = nose - ear_mid
        forward /= max(np.linalg.norm(forward), 1e-9)
        to_cam = -nose / max(np.linalg.norm(nose), 1e-9)
        angle = np.degrees(np.arccos(np.clip(forward @ to_cam, -1.0, 1.0)))
        head_px = f * 0.2 / max(float(nose[2]), 1e-6)
        head_in = 0 <= uv[44, 0] <= w - 1 and 0 <= uv[44, 1] <= h - 1
        if not head_in or head_px < 14 or occluded[44]:
            p, false = cfg.face_false, True
        elif angle < 55:
            p, false = cfg.face_toward, False
        elif angle < 80:
            p, false = cfg.face_oblique, False
        else:
            p, false = cfg.face_false, True
        if rng.random() < p:
            ev.face[0] = rng.uniform(0.5, 0.7) if false else rng.uniform(0.6, 0.98)
    return ev
