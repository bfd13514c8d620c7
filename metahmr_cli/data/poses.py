"""A sampler of natural human body poses in SMPL's joint convention, without motion-capture data.

Poses are built from anatomical parameters (flexion, abduction, twist per joint; a target direction plus a
twist for the shoulders and hips) around a set of activity archetypes: standing, walking and running (a phase
of the gait cycle), sitting on a chair or on the ground, crouching, kneeling, reaching, arms raised, waving,
hands on hips, bending forward, lunging, kicking and throwing. Each draw picks an archetype, draws its
parameters from ranges, mirrors it left/right with probability 1/2, adds independent per-joint variation (so
the two sides differ) and clamps every parameter to anatomical joint limits.

Conventions (SMPL, rest pose = T-pose): y up, z forward (the subject faces +z), the subject's left on +x.
Local joint rotations act in the parent's frame, which at rest is aligned with these axes:

- spine, neck, head: flexion about +x bends forward, lateral bend about z (positive tilts toward the
  subject's right, i.e. the top moves to -x), twist about y;
- hips and shoulders: the limb's direction in the parent frame (at rest legs point -y, the left arm +x and
  the right arm -x) reached by the shortest rotation, followed by a twist about the limb;
- knees: flexion about +x (the shin swings backward); ankles: plantar flexion about +x (toes down);
- elbows: flexion about the axis that is -y for the left arm and +y for the right arm in the T-pose (the
  forearm swings forward when the arm hangs down).

All angles in this module are in degrees. The output is axis-angle (N, 24, 3) of the body joints with a zero
global orientation; :func:`camera_orientation` gives global orientations in the OpenCV camera frame
(y down, z away from the camera) as used by the regressors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

__all__ = [
    "ARCHETYPES",
    "JOINT_LIMITS",
    "PoseParams",
    "camera_orientation",
    "gait_params",
    "LEG_PARAMS",
    "with_standing_legs",
    "mean_pose_rotmats",
    "params_to_axis_angle",
    "params_to_rotmats",
    "sample_pose_params",
    "sample_poses",
]

# SMPL joint indices
PELVIS, L_HIP, R_HIP, SPINE1, L_KNEE, R_KNEE, SPINE2, L_ANKLE, R_ANKLE, SPINE3 = range(10)
L_FOOT, R_FOOT, NECK, L_COLLAR, R_COLLAR, HEAD, L_SHOULDER, R_SHOULDER = range(10, 18)
L_ELBOW, R_ELBOW, L_WRIST, R_WRIST, L_HAND, R_HAND = range(18, 24)

PARAM_NAMES: tuple[str, ...] = (
    # trunk (total over the three spine joints), neck and head
    "trunk_flex", "trunk_lat", "trunk_twist", "neck_flex", "neck_lat", "neck_twist", "head_flex", "head_lat",
    "head_twist",
    # legs: thigh direction (flexion forward, abduction outward), thigh twist (+ = toes outward), knee, ankle, toes
    "l_hip_flex", "l_hip_abd", "l_hip_twist", "r_hip_flex", "r_hip_abd", "r_hip_twist",
    "l_knee", "r_knee", "l_ankle", "r_ankle", "l_ankle_inv", "r_ankle_inv", "l_toe", "r_toe",
    # arms: upper-arm elevation from hanging down (0 = down, 90 = horizontal, 180 = up), its azimuth in the
    # horizontal plane (0 = sideways, 90 = forward, -45 = behind), twist, elbow flexion, forearm twist, wrist
    "l_sh_elev", "l_sh_azim", "l_sh_twist", "r_sh_elev", "r_sh_azim", "r_sh_twist",
    "l_elbow", "r_elbow", "l_forearm", "r_forearm", "l_wrist_flex", "r_wrist_flex", "l_wrist_dev", "r_wrist_dev",
    # collar bones: elevation (shrug) and protraction
    "l_collar_elev", "r_collar_elev", "l_collar_prot", "r_collar_prot",
)

JOINT_LIMITS: dict[str, tuple[float, float]] = {
    "trunk_flex": (-30, 100), "trunk_lat": (-40, 40), "trunk_twist": (-50, 50),
    "neck_flex": (-40, 50), "neck_lat": (-30, 30), "neck_twist": (-50, 50),
    "head_flex": (-30, 40), "head_lat": (-20, 20), "head_twist": (-30, 30),
    "l_hip_flex": (-30, 135), "r_hip_flex": (-30, 135), "l_hip_abd": (-25, 70), "r_hip_abd": (-25, 70),
    "l_hip_twist": (-40, 50), "r_hip_twist": (-40, 50),
    "l_knee": (0, 155), "r_knee": (0, 155), "l_ankle": (-25, 50), "r_ankle": (-25, 50),
    "l_ankle_inv": (-20, 25), "r_ankle_inv": (-20, 25), "l_toe": (-30, 40), "r_toe": (-30, 40),
    "l_sh_elev": (0, 180), "r_sh_elev": (0, 180), "l_sh_azim": (-60, 135), "r_sh_azim": (-60, 135),
    "l_sh_twist": (-100, 100), "r_sh_twist": (-100, 100), "l_elbow": (0, 150), "r_elbow": (0, 150),
    "l_forearm": (-80, 80), "r_forearm": (-80, 80), "l_wrist_flex": (-60, 60), "r_wrist_flex": (-60, 60),
    "l_wrist_dev": (-20, 30), "r_wrist_dev": (-20, 30),
    "l_collar_elev": (-10, 30), "r_collar_elev": (-10, 30), "l_collar_prot": (-15, 25), "r_collar_prot": (-15, 25),
}
"""Anatomical range of every parameter (degrees); draws are clamped to it."""

VARIATION: dict[str, float] = {
    "trunk_flex": 6, "trunk_lat": 4, "trunk_twist": 8, "neck_flex": 8, "neck_lat": 5, "neck_twist": 15,
    "head_flex": 6, "head_lat": 4, "head_twist": 8,
    "l_hip_flex": 6, "r_hip_flex": 6, "l_hip_abd": 4, "r_hip_abd": 4, "l_hip_twist": 10, "r_hip_twist": 10,
    "l_knee": 6, "r_knee": 6, "l_ankle": 6, "r_ankle": 6, "l_ankle_inv": 4, "r_ankle_inv": 4,
    "l_toe": 6, "r_toe": 6,
    "l_sh_elev": 8, "r_sh_elev": 8, "l_sh_azim": 12, "r_sh_azim": 12, "l_sh_twist": 15, "r_sh_twist": 15,
    "l_elbow": 10, "r_elbow": 10, "l_forearm": 20, "r_forearm": 20, "l_wrist_flex": 15, "r_wrist_flex": 15,
    "l_wrist_dev": 8, "r_wrist_dev": 8,
    "l_collar_elev": 4, "r_collar_elev": 4, "l_collar_prot": 4, "r_collar_prot": 4,
}
"""Standard deviation (degrees) of the independent per-joint variation added to every archetype."""

PoseParams = dict[str, float]

_SIGMA = np.array([VARIATION[n] for n in PARAM_NAMES])
_LOW = np.array([JOINT_LIMITS[n][0] for n in PARAM_NAMES])
_HIGH = np.array([JOINT_LIMITS[n][1] for n in PARAM_NAMES])

_REST_DIRECTION = {L_HIP: (0.0, -1.0, 0.0), R_HIP: (0.0, -1.0, 0.0), L_SHOULDER: (1.0, 0.0, 0.0),
                   R_SHOULDER: (-1.0, 0.0, 0.0)}


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _base(rng: np.random.Generator) -> PoseParams:
    """A relaxed stance: every parameter near its neutral value."""
    p = dict.fromkeys(PARAM_NAMES, 0.0)
    for side in "lr":
        p[f"{side}_sh_elev"] = _u(rng, 5, 25)
        p[f"{side}_sh_azim"] = _u(rng, 30, 80)
        p[f"{side}_elbow"] = _u(rng, 5, 30)
        p[f"{side}_hip_abd"] = _u(rng, 0, 8)
        p[f"{side}_hip_twist"] = _u(rng, 0, 15)
        p[f"{side}_knee"] = _u(rng, 0, 8)
    return p


def _stand(rng: np.random.Generator) -> PoseParams:
    p = _base(rng)
    p["trunk_lat"] = _u(rng, -5, 5)
    shift = _u(rng, -1, 1)  # weight on one leg
    p["l_hip_abd"] += 4 * max(shift, 0)
    p["r_hip_abd"] += 4 * max(-shift, 0)
    p["l_knee"] += 10 * max(-shift, 0)
    p["r_knee"] += 10 * max(shift, 0)
    return p


def gait_params(phase: float, *, run: bool = False, amp_hip: float = 24.0, knee_extra: tuple[float, float] = (5, 5),
                elbow: tuple[float, float] = (25, 25), trunk_flex: float = 3.0,
                base: PoseParams | None = None) -> PoseParams:
    """The pose at ``phase`` (radians; 0 = left heel strike) of a walking (or running) cycle.

    ``amp_hip``: thigh swing amplitude; ``knee_extra`` / ``elbow``: extra knee flexion and elbow flexion of the
    left and right side; ``base``: the stance the cycle is added to (arms hanging, legs straight when None).
    """
    p = dict(base) if base is not None else dict.fromkeys(PARAM_NAMES, 0.0)
    for i, (side, ph) in enumerate((("l", phase), ("r", phase + np.pi))):
        s = np.sin(ph)
        p[f"{side}_hip_flex"] = amp_hip * s + (15 if run else 3)
        swing = max(np.sin(ph - 0.6 * np.pi), 0.0)  # the knee bends most during the swing phase
        p[f"{side}_knee"] = 8 + (95 if run else 55) * swing + knee_extra[i]
        p[f"{side}_ankle"] = 10 * np.sin(ph + 0.5 * np.pi)
        # the arm swings against the leg of its side
        p[f"{side}_sh_elev"] = (25 if run else 12) + (30 if run else 18) * abs(s)
        p[f"{side}_sh_azim"] = 90 - 80 * s
        p[f"{side}_elbow"] = elbow[i]
    p["trunk_flex"] = trunk_flex
    p["trunk_twist"] = 8 * np.sin(phase)
    return p


def _gait(rng: np.random.Generator, run: bool) -> PoseParams:
    """A random point of the walking (or running) cycle with random amplitudes."""
    base = _base(rng)
    phase = _u(rng, 0, 2 * np.pi)
    amp_hip = _u(rng, 35, 60) if run else _u(rng, 18, 30)
    knee, elbow = [], []
    for _ in "lr":
        knee.append(_u(rng, 0, 10))
        elbow.append(_u(rng, 70, 110) if run else _u(rng, 10, 40))
    trunk = _u(rng, 5, 20) if run else _u(rng, -3, 8)
    return gait_params(phase, run=run, amp_hip=amp_hip, knee_extra=(knee[0], knee[1]), elbow=(elbow[0], elbow[1]),
                       trunk_flex=trunk, base=base)


def _sit_chair(rng: np.random.Generator) -> PoseParams:
    p = _base(rng)
    for side in "lr":
        p[f"{side}_hip_flex"] = _u(rng, 70, 100)
        p[f"{side}_knee"] = _u(rng, 60, 110)
        p[f"{side}_hip_abd"] = _u(rng, 0, 25)
        p[f"{side}_sh_elev"] = _u(rng, 10, 40)
        p[f"{side}_sh_azim"] = _u(rng, 60, 100)
        p[f"{side}_elbow"] = _u(rng, 30, 100)
    p["trunk_flex"] = _u(rng, -15, 25)
    return p


def _sit_ground(rng: np.random.Generator) -> PoseParams:
    p = _base(rng)
    crossed = rng.random() < 0.5
    for side in "lr":
        p[f"{side}_hip_flex"] = _u(rng, 70, 110)
        if crossed:
            p[f"{side}_hip_abd"] = _u(rng, 30, 55)
            p[f"{side}_hip_twist"] = _u(rng, 25, 45)
            p[f"{side}_knee"] = _u(rng, 110, 145)
        else:
            p[f"{side}_hip_abd"] = _u(rng, 0, 20)
            p[f"{side}_knee"] = _u(rng, 0, 60)
        p[f"{side}_sh_elev"] = _u(rng, 10, 40)
        p[f"{side}_sh_azim"] = _u(rng, 30, 100)
        p[f"{side}_elbow"] = _u(rng, 10, 90)
    p["trunk_flex"] = _u(rng, 0, 35)
    return p


def _crouch(rng: np.random.Generator) -> PoseParams:
    p = _base(rng)
    depth = _u(rng, 0.5, 1.0)
    for side in "lr":
        p[f"{side}_hip_flex"] = 60 + 65 * depth + _u(rng, -8, 8)
        p[f"{side}_knee"] = 70 + 75 * depth + _u(rng, -8, 8)
        p[f"{side}_ankle"] = -_u(rng, 5, 25)
        p[f"{side}_hip_abd"] = _u(rng, 5, 30)
        p[f"{side}_hip_twist"] = _u(rng, 5, 30)
        p[f"{side}_sh_elev"] = _u(rng, 20, 80)
        p[f"{side}_sh_azim"] = _u(rng, 60, 110)
        p[f"{side}_elbow"] = _u(rng, 10, 90)
    p["trunk_flex"] = _u(rng, 15, 50)
    p["neck_flex"] = -_u(rng, 0, 25)
    return p


def _kneel(rng: np.random.Generator) -> PoseParams:
    p = _base(rng)
    p["l_hip_flex"] = _u(rng, 60, 100)
    p["l_knee"] = _u(rng, 70, 110)
    p["l_ankle"] = -_u(rng, 0, 15)
    both = rng.random() < 0.4
    p["r_hip_flex"] = _u(rng, 0, 30) if both else _u(rng, -20, 10)
    p["r_knee"] = _u(rng, 80, 120) if both else _u(rng, 85, 115)
    if both:
        p["l_hip_flex"] = p["r_hip_flex"] + _u(rng, -5, 5)
        p["l_knee"] = p["r_knee"] + _u(rng, -5, 5)
    p["r_ankle"] = _u(rng, 20, 45)
    p["trunk_flex"] = _u(rng, -5, 25)
    return p


def _reach(rng: np.random.Generator) -> PoseParams:
    p = _stand(rng)
    p["l_sh_elev"] = _u(rng, 60, 150)
    p["l_sh_azim"] = _u(rng, 20, 120)
    p["l_elbow"] = _u(rng, 0, 40)
    if rng.random() < 0.4:  # both arms
        p["r_sh_elev"] = _u(rng, 50, 150)
        p["r_sh_azim"] = _u(rng, 20, 120)
        p["r_elbow"] = _u(rng, 0, 50)
    p["trunk_flex"] = _u(rng, -5, 40)
    p["trunk_twist"] = _u(rng, -10, 25)
    p["trunk_lat"] = _u(rng, -15, 5)
    return p


def _arms_up(rng: np.random.Generator) -> PoseParams:
    p = _stand(rng)
    for side in "lr":
        p[f"{side}_sh_elev"] = _u(rng, 120, 175)
        p[f"{side}_sh_azim"] = _u(rng, -10, 60)
        p[f"{side}_elbow"] = _u(rng, 0, 60)
    p["neck_flex"] = -_u(rng, 0, 20)
    return p


def _arms_out(rng: np.random.Generator) -> PoseParams:
    """T-pose and A-pose like stances (arms spread)."""
    p = _stand(rng)
    for side in "lr":
        p[f"{side}_sh_elev"] = _u(rng, 40, 100)
        p[f"{side}_sh_azim"] = _u(rng, -15, 30)
        p[f"{side}_elbow"] = _u(rng, 0, 25)
        p[f"{side}_hip_abd"] = _u(rng, 0, 25)
    return p


def _wave(rng: np.random.Generator) -> PoseParams:
    p = _stand(rng)
    p["l_sh_elev"] = _u(rng, 70, 110)
    p["l_sh_azim"] = _u(rng, 0, 60)
    p["l_elbow"] = _u(rng, 60, 130)
    p["l_sh_twist"] = _u(rng, -100, -70)  # forearm up
    return p


def _hands_on_hips(rng: np.random.Generator) -> PoseParams:
    p = _stand(rng)
    for side in "lr":
        p[f"{side}_sh_elev"] = _u(rng, 30, 50)
        p[f"{side}_sh_azim"] = _u(rng, -20, 20)
        p[f"{side}_elbow"] = _u(rng, 70, 100)
        p[f"{side}_sh_twist"] = _u(rng, 65, 95)  # forearm toward the hip
    return p


def _arms_crossed(rng: np.random.Generator) -> PoseParams:
    p = _stand(rng)
    for side in "lr":
        p[f"{side}_sh_elev"] = _u(rng, 20, 45)
        p[f"{side}_sh_azim"] = _u(rng, 85, 110)
        p[f"{side}_elbow"] = _u(rng, 95, 130)
        p[f"{side}_sh_twist"] = _u(rng, 45, 70)  # forearms across the chest
    return p


def _bend(rng: np.random.Generator) -> PoseParams:
    p = _base(rng)
    p["trunk_flex"] = _u(rng, 40, 95)
    for side in "lr":
        p[f"{side}_hip_flex"] = _u(rng, 20, 70)
        p[f"{side}_knee"] = _u(rng, 0, 50)
        p[f"{side}_sh_elev"] = _u(rng, 60, 110)
        p[f"{side}_sh_azim"] = _u(rng, 70, 110)
        p[f"{side}_elbow"] = _u(rng, 0, 40)
    p["neck_flex"] = -_u(rng, 10, 35)
    return p


def _lunge(rng: np.random.Generator) -> PoseParams:
    p = _stand(rng)
    p["l_hip_flex"] = _u(rng, 50, 95)
    p["l_knee"] = _u(rng, 60, 110)
    p["r_hip_flex"] = -_u(rng, 10, 28)
    p["r_knee"] = _u(rng, 0, 60)
    p["r_ankle"] = _u(rng, 0, 30)
    p["trunk_flex"] = _u(rng, -5, 30)
    return p


def _kick(rng: np.random.Generator) -> PoseParams:
    p = _stand(rng)
    p["l_hip_flex"] = _u(rng, 40, 110)
    p["l_knee"] = _u(rng, 0, 70)
    p["l_ankle"] = _u(rng, 10, 45)
    p["r_knee"] = _u(rng, 0, 25)
    p["trunk_flex"] = -_u(rng, 0, 20)
    for side in "lr":
        p[f"{side}_sh_elev"] = _u(rng, 30, 90)
        p[f"{side}_sh_azim"] = _u(rng, -30, 60)
    return p


def _throw(rng: np.random.Generator) -> PoseParams:
    p = _stand(rng)
    p["l_sh_elev"] = _u(rng, 80, 140)
    p["l_sh_azim"] = _u(rng, -50, 10)
    p["l_elbow"] = _u(rng, 40, 110)
    p["l_sh_twist"] = _u(rng, -100, -60)
    p["r_sh_elev"] = _u(rng, 60, 100)
    p["r_sh_azim"] = _u(rng, 60, 110)
    p["trunk_twist"] = _u(rng, -40, -10)
    p["trunk_flex"] = _u(rng, -15, 10)
    p["l_hip_flex"] = _u(rng, -15, 10)
    p["r_hip_flex"] = _u(rng, 15, 40)
    p["r_knee"] = _u(rng, 5, 30)
    return p


ARCHETYPES: dict[str, tuple[float, Callable[[np.random.Generator], PoseParams]]] = {
    "stand": (0.17, _stand),
    "walk": (0.17, lambda r: _gait(r, run=False)),
    "run": (0.07, lambda r: _gait(r, run=True)),
    "sit_chair": (0.10, _sit_chair),
    "sit_ground": (0.04, _sit_ground),
    "crouch": (0.06, _crouch),
    "kneel": (0.04, _kneel),
    "reach": (0.07, _reach),
    "arms_up": (0.04, _arms_up),
    "arms_out": (0.04, _arms_out),
    "wave": (0.03, _wave),
    "hands_on_hips": (0.03, _hands_on_hips),
    "arms_crossed": (0.03, _arms_crossed),
    "bend": (0.04, _bend),
    "lunge": (0.03, _lunge),
    "kick": (0.02, _kick),
    "throw": (0.02, _throw),
}
"""Archetype name -> (probability, parameter sampler)."""


def _mirror(p: PoseParams) -> PoseParams:
    """Swap left and right; the lateral bend and twists of the axial joints change sign."""
    out = {}
    for name, value in p.items():
        if name.startswith("l_"):
            out["r_" + name[2:]] = value
        elif name.startswith("r_"):
            out["l_" + name[2:]] = value
        elif name.endswith(("_lat", "_twist")):
            out[name] = -value
        else:
            out[name] = value
    return out


def sample_pose_params(rng: np.random.Generator, archetype: str | None = None) -> tuple[str, PoseParams]:
    """One draw: (archetype name, parameters in degrees, within :data:`JOINT_LIMITS`)."""
    names = list(ARCHETYPES)
    if archetype is None:
        probs = np.array([ARCHETYPES[n][0] for n in names])
        archetype = names[int(rng.choice(len(names), p=probs / probs.sum()))]
    elif archetype not in ARCHETYPES:
        raise ValueError(f"unknown archetype {archetype!r}; choose one of {', '.join(names)}")
    p = ARCHETYPES[archetype][1](rng)
    if rng.random() < 0.5:
        p = _mirror(p)
    values = np.array([p[name] for name in PARAM_NAMES]) + rng.normal(0.0, _SIGMA)
    values = np.minimum(np.maximum(values, _LOW), _HIGH)
    return archetype, dict(zip(PARAM_NAMES, values.tolist(), strict=True))


def _rot(axis: str, deg: float) -> np.ndarray:
    """3x3 rotation by ``deg`` degrees about the x, y or z axis."""
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    if axis == "x":
        return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    if axis == "y":
        return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _axis_rot(axis: np.ndarray, angle: float) -> np.ndarray:
    """3x3 rotation by ``angle`` radians about the unit vector ``axis`` (Rodrigues)."""
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def _swing_twist(rest: np.ndarray, target: np.ndarray, twist_deg: float) -> np.ndarray:
    """The shortest rotation taking ``rest`` to ``target``, then a twist about ``target``."""
    rest = rest / np.linalg.norm(rest)
    target = target / np.linalg.norm(target)
    axis = np.cross(rest, target)
    s = np.linalg.norm(axis)
    c = float(np.clip(np.dot(rest, target), -1.0, 1.0))
    if s < 1e-8:
        # parallel: identity; antiparallel: a half turn about a perpendicular (z for the arms, x for the legs)
        swing = np.eye(3) if c > 0 else _axis_rot(
            np.array([0.0, 0.0, 1.0]) if abs(rest[1]) < 0.9 else np.array([1.0, 0.0, 0.0]), np.pi)
    else:
        swing = _axis_rot(axis / s, float(np.arctan2(s, c)))
    return _axis_rot(target, np.radians(twist_deg)) @ swing


def _leg_direction(flex: float, abd: float, side: int) -> np.ndarray:
    """Thigh direction: flexion swings it forward (+z), abduction outward (side: +1 left, -1 right)."""
    f, a = np.radians(flex), np.radians(abd)
    d = np.array([side * np.sin(a) * np.cos(f), -np.cos(a) * np.cos(f), np.sin(f)])
    return d / np.linalg.norm(d)


def _arm_direction(elev: float, azim: float, side: int) -> np.ndarray:
    """Upper-arm direction from elevation (0 down, 90 horizontal, 180 up) and azimuth (0 sideways, 90 forward)."""
    e, a = np.radians(elev), np.radians(azim)
    horizontal = np.sin(e)
    return np.array([side * horizontal * np.cos(a), -np.cos(e), horizontal * np.sin(a)])


def params_to_rotmats(p: PoseParams) -> np.ndarray:
    """Anatomical parameters (degrees) -> (24, 3, 3) local joint rotations, identity global orientation."""
    rots = np.tile(np.eye(3), (24, 1, 1))
    for j, share in ((SPINE1, 0.35), (SPINE2, 0.35), (SPINE3, 0.30)):
        rots[j] = (_rot("y", share * p["trunk_twist"]) @ _rot("z", share * p["trunk_lat"])
                   @ _rot("x", share * p["trunk_flex"]))
    rots[NECK] = _rot("y", p["neck_twist"]) @ _rot("z", p["neck_lat"]) @ _rot("x", p["neck_flex"])
    rots[HEAD] = _rot("y", p["head_twist"]) @ _rot("z", p["head_lat"]) @ _rot("x", p["head_flex"])
    for side, sign, hip, knee, ankle, foot in (("l", 1, L_HIP, L_KNEE, L_ANKLE, L_FOOT),
                                               ("r", -1, R_HIP, R_KNEE, R_ANKLE, R_FOOT)):
        d = _leg_direction(p[f"{side}_hip_flex"], p[f"{side}_hip_abd"], sign)
        # a positive twist turns the toes outward: about the limb (pointing down) by -twist on the left
        rots[hip] = _swing_twist(np.array(_REST_DIRECTION[hip]), d, -sign * p[f"{side}_hip_twist"])
        rots[knee] = _rot("x", p[f"{side}_knee"])
        rots[ankle] = _rot("z", sign * p[f"{side}_ankle_inv"]) @ _rot("x", p[f"{side}_ankle"])
        rots[foot] = _rot("x", -p[f"{side}_toe"])
    for side, sign, collar, shoulder, elbow, wrist in (("l", 1, L_COLLAR, L_SHOULDER, L_ELBOW, L_WRIST),
                                                      ("r", -1, R_COLLAR, R_SHOULDER, R_ELBOW, R_WRIST)):
        rots[collar] = _rot("y", -sign * p[f"{side}_collar_prot"]) @ _rot("z", sign * p[f"{side}_collar_elev"])
        d = _arm_direction(p[f"{side}_sh_elev"], p[f"{side}_sh_azim"], sign)
        rots[shoulder] = _swing_twist(np.array(_REST_DIRECTION[shoulder]), d, sign * p[f"{side}_sh_twist"])
        # a turn about x is its own mirror image, so the forearm twist keeps its sign on both sides
        rots[elbow] = _rot("x", p[f"{side}_forearm"]) @ _rot("y", -sign * p[f"{side}_elbow"])
        rots[wrist] = _rot("z", -sign * p[f"{side}_wrist_dev"]) @ _rot("y", -sign * p[f"{side}_wrist_flex"])
    return rots


def params_to_axis_angle(p: PoseParams) -> np.ndarray:
    """Anatomical parameters (degrees) -> (24, 3) axis-angle, zero global orientation."""
    return Rotation.from_matrix(params_to_rotmats(p)).as_rotvec()


@dataclass(frozen=True)
class CameraView:
    """How a body is seen: yaw of the body about the vertical (0 = facing the camera), camera elevation
    (positive = camera above, looking down), and a small roll of the camera."""

    yaw: float
    elevation: float
    roll: float


def camera_orientation(view: CameraView, root_lean: np.ndarray | None = None) -> np.ndarray:
    """Global orientation (3,) axis-angle in the OpenCV camera frame for a body seen under ``view``.

    The body frame (y up, z forward) becomes the camera frame (y down, z away from the camera) by a half turn
    about x, so a body with yaw 0 faces the camera; a camera above the person (elevation > 0) then tilts the body's
    up direction toward the camera: (0, -cos e, -sin e), the head nearer than the feet. ``root_lean`` is an extra
    (3, 3) rotation of the body.
    """
    body = _rot("y", view.yaw) if root_lean is None else _rot("y", view.yaw) @ root_lean
    # a camera raised and pitched down by the elevation turns what it sees by +elevation about its x axis (the
    # body's up tilts toward the camera)
    cam = _rot("z", view.roll) @ _rot("x", view.elevation) @ _rot("x", 180.0)
    return Rotation.from_matrix(cam @ body).as_rotvec()


LEG_PARAMS: tuple[str, ...] = tuple(n for n in PARAM_NAMES if n[2:].startswith(("hip", "knee", "ankle", "toe")))
"""The parameters of the legs (hips, knees, ankles, toes)."""


def with_standing_legs(params: PoseParams, rng: np.random.Generator) -> PoseParams:
    """``params`` with the legs of a relaxed stance: what an unseen lower body is taken to be (a person framed from
    the waist up is standing unless the picture shows otherwise)."""
    stand = _stand(rng)
    out = dict(params)
    for name in LEG_PARAMS:
        lo, hi = JOINT_LIMITS[name]
        out[name] = float(np.clip(stand[name] + rng.normal(0.0, 0.5 * VARIATION[name]), lo, hi))
    return out


def sample_view(rng: np.random.Generator) -> CameraView:
    """Yaw uniform over the full circle, camera elevation mostly near eye level, small roll."""
    return CameraView(yaw=_u(rng, -180, 180), elevation=float(np.clip(rng.normal(8, 12), -25, 50)),
                      roll=float(np.clip(rng.normal(0, 4), -15, 15)))


def sample_poses(rng: np.random.Generator, n: int, *, archetype: str | None = None,
                 camera_frame: bool = True) -> tuple[np.ndarray, list[str]]:
    """Draw ``n`` poses.

    Args:
        rng: the random generator (the draws are a function of its state only).
        archetype: restrict to one archetype (None = the mixture of :data:`ARCHETYPES`).
        camera_frame: global orientation in the camera frame from :func:`sample_view` (True), or zero.
    Returns:
        (n, 24, 3) axis-angle poses (float64) and the archetype of each.
    """
    poses = np.zeros((n, 24, 3))
    kinds = []
    for i in range(n):
        kind, p = sample_pose_params(rng, archetype)
        poses[i] = params_to_axis_angle(p)
        if camera_frame:
            poses[i, 0] = camera_orientation(sample_view(rng))
        kinds.append(kind)
    return poses, kinds


def mean_pose_rotmats(n: int = 20000, seed: int = 0) -> np.ndarray:
    """The mean pose of the sampler as (24, 3, 3) rotations: the chordal mean (average of the rotation matrices
    projected back onto SO(3)) of ``n`` draws per joint, with the global orientation of an upright person facing
    the camera (the sampler's yaw is uniform, so its mean would say nothing).

    This is the starting pose of the regressor's iterations (``smpl_mean_params.npz`` ``pose``) for the open body.
    """
    rng = np.random.default_rng(seed)
    acc = np.zeros((24, 3, 3))
    for _ in range(n):
        acc += params_to_rotmats(sample_pose_params(rng)[1])
    acc /= n
    u, _, vt = np.linalg.svd(acc)
    det = np.sign(np.linalg.det(u @ vt))
    fix = np.ones((24, 3))
    fix[:, 2] = det
    mean = np.einsum("jab,jb,jbc->jac", u, fix, vt)
    mean[0] = Rotation.from_rotvec(camera_orientation(CameraView(yaw=0.0, elevation=0.0, roll=0.0))).as_matrix()
    return mean
