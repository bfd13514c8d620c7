"""Which way a body faces, from its 3D joints (metahmr_cli.evaluation.facing): hand-built torsos whose angles are
derived by hand in the comments, and the open body posed with known orientations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metahmr_cli.body.joints import JOINT_IDS, JOINT_NAMES
from metahmr_cli.errors import InputError
from metahmr_cli.evaluation.facing import facing_angle, facing_class, facing_matches, torso_frame


def _torso(shoulder_mid, hip_mid, left, half_shoulder=0.2, half_hip=0.1) -> np.ndarray:
    """49 joints (NaN except the four torso joints) of a torso with the given midpoints and left direction."""
    j = np.full((49, 3), np.nan)
    s, h, left = (np.asarray(v, float) for v in (shoulder_mid, hip_mid, left))
    j[JOINT_IDS["OP LShoulder"]] = s + half_shoulder * left
    j[JOINT_IDS["OP RShoulder"]] = s - half_shoulder * left
    j[JOINT_IDS["OP LHip"]] = h + half_hip * left
    j[JOINT_IDS["OP RHip"]] = h - half_hip * left
    return j


def test_facing_of_hand_built_torsos():
    # camera frame: x right, y down, z forward. Upright person 5 m ahead: hips at y = 0, shoulders 0.5 m above.
    # Facing the camera, their left side appears on the image's right: left = +x -> 0 degrees.
    toward = _torso([0, -0.5, 5], [0, 0, 5], [1, 0, 0])
    # turned to face image right (+x): left = up x forward = (0,-1,0) x (1,0,0) = (0,0,1) -> +90
    right = _torso([0, -0.5, 5], [0, 0, 5], [0, 0, 1])
    # back to the camera: left = -x -> 180
    away = _torso([0, -0.5, 5], [0, 0, 5], [-1, 0, 0])
    # facing image left: left = -z -> -90
    left = _torso([0, -0.5, 5], [0, 0, 5], [0, 0, -1])
    got = facing_angle(np.stack([toward, right, away, left]))
    np.testing.assert_allclose(got[[0, 1, 3]], [0.0, 90.0, -90.0], atol=1e-9)
    assert abs(abs(got[2]) - 180.0) < 1e-9
    assert [facing_class(a) for a in got] == ["toward", "side-right", "away", "side-left"]


def test_facing_is_measured_about_the_bodys_own_axis_not_the_3d_line_of_sight():
    # an upright person 8 m below the camera's axis and 4 m ahead, facing the camera horizontally (forward = -z,
    # left = +x): the line of sight rises atan(8 / 4) = 63 degrees, yet about the body's vertical axis they face
    # the camera: 0 degrees, "toward" (a surveillance camera looking down at someone walking toward it)
    below = _torso([0, 7.5, 4], [0, 8, 4], [1, 0, 0])
    assert abs(facing_angle(below)) < 1e-9
    # the same person turned 45 degrees toward image right: left = (cos 45, 0, sin 45), forward = left x up =
    # (sin 45, 0, -cos 45); about the body axis the camera lies straight behind -z: 45 degrees (measured along
    # the 3D line of sight the cosine part would shrink by cos 63 and give 65 degrees)
    turned = _torso([0, 7.5, 4], [0, 8, 4], [math.cos(math.pi / 4), 0, math.sin(math.pi / 4)])
    assert facing_angle(turned) == pytest.approx(45.0, abs=1e-9)
    # off to the side at x = 3, z = 5, facing straight along -z: to_camera = (-3, 0, -5), image right at the
    # person = up x to_camera = (0, -1, 0) x (-3, 0, -5) = (5, 0, -3); forward = (0, 0, -1) gives
    # forward . right = 3 and forward . to_camera = 5 (both over sqrt 34): atan2(3, 5) = +30.96 degrees
    side = _torso([3, -0.5, 5], [3, 0, 5], [1, 0, 0])
    assert facing_angle(side) == pytest.approx(math.degrees(math.atan2(3, 5)), abs=1e-9)
    # a leaning torso (shoulders 0.2 m toward the camera) still faces it
    lean = _torso([0, -0.5, 4.8], [0, 0, 5], [1, 0, 0])
    assert abs(facing_angle(lean)) < 1e-9


def test_mirrored_joints_give_the_opposite_angle():
    rng = np.random.default_rng(0)
    for _ in range(5):
        j = _torso(rng.normal([0, -0.5, 6], 0.3), rng.normal([0, 0, 6], 0.3), rng.normal(size=3))
        mirrored = j * [-1, 1, 1]  # the image flipped left-right: x -> -x, and the body's left becomes its right
        perm = {JOINT_IDS[a]: JOINT_IDS[b] for a, b in (("OP LShoulder", "OP RShoulder"), ("OP LHip", "OP RHip"))}
        perm |= {v: k for k, v in perm.items()}
        swapped = mirrored.copy()
        for a, b in perm.items():
            swapped[a] = mirrored[b]
        assert facing_angle(swapped) == pytest.approx(-facing_angle(j), abs=1e-9)


def test_facing_of_the_open_body_with_a_known_orientation():
    from metahmr_cli.body.layout import BUNDLED_DIR
    from metahmr_cli.body.smpl import load_body_model

    body = load_body_model(BUNDLED_DIR, "neutral", device="cpu", dtype=torch.float64)

    def rot(axis: int, deg: float) -> np.ndarray:
        c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
        i, k = [(1, 2), (2, 0), (0, 1)][axis]
        r = np.eye(3)
        r[i, i], r[i, k], r[k, i], r[k, k] = c, -s, s, c
        return r

    # The body's rest frame is y up, z forward (its feet point +z). Rotating by 180 degrees about x stands it up
    # in the camera frame (y down) facing -z, the camera: 0 degrees. A further turn by a about the camera's y axis
    # sends forward to R_y(a) (0, 0, -1) = (-sin a, 0, -cos a): a = 90 faces -x (image left) -> -90 degrees.
    # Then a camera looking down by 30 degrees (the body pitched about x) must not change the facing class.
    cases = [(0, 0.0), (30, -30.0), (90, -90.0), (-90, 90.0), (150, -150.0), (-45, 45.0)]
    rotmat = torch.eye(3, dtype=torch.float64).repeat(2 * len(cases), 24, 1, 1)
    for k, (a, _) in enumerate(cases):
        upright = rot(1, a) @ rot(0, 180)
        rotmat[2 * k, 0] = torch.from_numpy(upright)
        rotmat[2 * k + 1, 0] = torch.from_numpy(rot(0, -30) @ upright)
    out = body(rotmat, torch.zeros(len(rotmat), 10, dtype=torch.float64),
               torch.tensor([[0.0, 0.0, 6.0]], dtype=torch.float64).repeat(len(rotmat), 1))
    got = facing_angle(out.joints.numpy(), JOINT_NAMES)
    for k, (_, expected) in enumerate(cases):
        assert got[2 * k] == pytest.approx(expected, abs=1.0), cases[k]
        assert facing_class(got[2 * k + 1]) == facing_class(expected), cases[k]
    # the torso's forward is also where the feet point (toes ahead of the heels), an independent cue
    _, _, forward = torso_frame(out.joints.numpy())
    feet = out.joints.numpy()[:, JOINT_IDS["OP LBigToe"]] - out.joints.numpy()[:, JOINT_IDS["OP LHeel"]]
    assert ((forward * feet).sum(-1) > 0).all()


def test_facing_classes_and_labels():
    assert [facing_class(a) for a in (0, 59.9, -59.9, 60.1, -119.9, 120.1, -179, float("nan"))] == [
        "toward", "toward", "toward", "side-right", "side-left", "away", "away", None]
    assert facing_matches("side", -90) and facing_matches("side", 90) and not facing_matches("side", 10)
    assert facing_matches("side-left", -90) and not facing_matches("side-left", 90)
    assert not facing_matches("toward", float("nan"))
    with pytest.raises(InputError, match="facing label"):
        facing_matches("front", 0)
    with pytest.raises(InputError, match="49"):
        facing_angle(np.zeros((2, 17, 3)))
    assert np.isnan(facing_angle(np.zeros((49, 3))))  # a collapsed torso has no facing
