"""The natural pose sampler: conventions checked by forward kinematics against hand-derived geometry."""

from __future__ import annotations

import numpy as np
import torch

from metahmr_cli.body.joints import SMPL_PARENTS
from metahmr_cli.data import poses as P
from metahmr_cli.geometry.rotation import axis_angle_to_rotmat

# SMPL joint indices used below
PELVIS, L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE, HEAD = 0, 1, 2, 4, 5, 7, 8, 15
L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = 16, 17, 18, 19, 20, 21


def _rest_joints() -> np.ndarray:
    """A T-pose skeleton in SMPL's axes (y up, z forward, subject's left on +x), metres."""
    j = np.zeros((24, 3))
    j[PELVIS] = [0, 0.95, 0]
    j[L_HIP], j[R_HIP] = [0.09, 0.87, 0], [-0.09, 0.87, 0]
    j[3], j[6], j[9] = [0, 1.05, 0], [0, 1.18, 0], [0, 1.24, 0]
    j[L_KNEE], j[R_KNEE] = [0.1, 0.5, 0], [-0.1, 0.5, 0]
    j[L_ANKLE], j[R_ANKLE] = [0.1, 0.08, -0.02], [-0.1, 0.08, -0.02]
    j[10], j[11] = [0.1, 0.02, 0.12], [-0.1, 0.02, 0.12]
    j[12], j[HEAD] = [0, 1.45, 0], [0, 1.55, 0.02]
    j[13], j[14] = [0.08, 1.38, 0], [-0.08, 1.38, 0]
    j[L_SHOULDER], j[R_SHOULDER] = [0.18, 1.40, 0], [-0.18, 1.40, 0]
    j[L_ELBOW], j[R_ELBOW] = [0.45, 1.40, 0], [-0.45, 1.40, 0]
    j[L_WRIST], j[R_WRIST] = [0.70, 1.40, 0], [-0.70, 1.40, 0]
    j[22], j[23] = [0.78, 1.40, 0], [-0.78, 1.40, 0]
    return j


def _fk(aa: np.ndarray) -> np.ndarray:
    """Joint positions of the rest skeleton posed with (24, 3) axis-angle (plain recursive kinematics)."""
    rest = _rest_joints()
    rot = axis_angle_to_rotmat(torch.as_tensor(aa, dtype=torch.float64)).numpy()
    glob = [np.eye(3)] * 24
    pos = np.zeros((24, 3))
    for j in range(24):
        p = SMPL_PARENTS[j]
        if p < 0:
            glob[j] = rot[j]
            pos[j] = rest[j]
        else:
            glob[j] = glob[p] @ rot[j]
            pos[j] = pos[p] + glob[p] @ (rest[j] - rest[p])
    return pos


def _pose(**changes: float) -> np.ndarray:
    params = dict.fromkeys(P.PARAM_NAMES, 0.0)
    params.update(changes)
    return _fk(P.params_to_axis_angle(params))


def test_zero_parameters_hang_the_arms_and_keep_the_legs_straight():
    x = _pose()
    rest = _rest_joints()
    # arms straight down from the shoulders: the elbow 0.27 m below the shoulder
    np.testing.assert_allclose(x[L_ELBOW], rest[L_SHOULDER] + [0, -0.27, 0], atol=1e-6)
    np.testing.assert_allclose(x[R_WRIST], rest[R_SHOULDER] + [0, -0.52, 0], atol=1e-6)
    np.testing.assert_allclose(x[L_ANKLE], rest[L_ANKLE], atol=1e-6)


def test_hip_and_knee_flexion_give_a_sitting_leg():
    x = _pose(l_hip_flex=90, l_knee=90)
    rest = _rest_joints()
    # the thigh (0.01, -0.37, 0) swings forward by a quarter turn about -x: (0.01, 0, 0.37)
    np.testing.assert_allclose(x[L_KNEE], rest[L_HIP] + [0.01, 0.0, 0.37], atol=1e-6)
    # the shin (0, -0.42, -0.02) turns a quarter back about x at the knee, then forward with the thigh
    np.testing.assert_allclose(x[L_ANKLE], x[L_KNEE] + [0.0, -0.42, -0.02], atol=1e-6)


def test_elbow_flexion_brings_the_forearm_forward_on_both_sides():
    x = _pose(l_elbow=90, r_elbow=90)
    for elbow, wrist in ((L_ELBOW, L_WRIST), (R_ELBOW, R_WRIST)):
        d = x[wrist] - x[elbow]
        np.testing.assert_allclose(d, [0, 0, 0.25], atol=1e-6)


def test_arm_direction_parameters():
    up = _pose(l_sh_elev=180)
    np.testing.assert_allclose(up[L_WRIST] - up[L_SHOULDER], [0, 0.52, 0], atol=1e-6)
    fwd = _pose(r_sh_elev=90, r_sh_azim=90)
    np.testing.assert_allclose(fwd[R_WRIST] - fwd[R_SHOULDER], [0, 0, 0.52], atol=1e-6)
    side = _pose(l_sh_elev=90, l_sh_azim=0)
    np.testing.assert_allclose(side[L_WRIST] - side[L_SHOULDER], [0.52, 0, 0], atol=1e-6)


def test_trunk_flexion_and_lateral_bend_directions():
    bent = _pose(trunk_flex=60)
    assert bent[HEAD][2] > 0.25 and bent[HEAD][1] < _rest_joints()[HEAD][1]
    lat = _pose(trunk_lat=30)
    assert lat[HEAD][0] < -0.1  # positive lateral bend tilts toward the subject's right (-x)


def test_hip_twist_turns_the_toes_outward_on_both_sides():
    for side, hip, sign in (("l", L_HIP, 1.0), ("r", R_HIP, -1.0)):
        aa = P.params_to_axis_angle({**dict.fromkeys(P.PARAM_NAMES, 0.0), f"{side}_hip_twist": 30.0})
        toes = axis_angle_to_rotmat(torch.as_tensor(aa[hip])[None]).numpy()[0] @ [0, 0, 1]
        np.testing.assert_allclose(toes, [sign * 0.5, 0, np.sqrt(3) / 2], atol=1e-6)


def test_mirror_swaps_sides_and_negates_axial_lateral_terms():
    rng = np.random.default_rng(3)
    _, p = P.sample_pose_params(rng, "reach")
    m = P._mirror(p)
    assert m["r_sh_elev"] == p["l_sh_elev"] and m["l_knee"] == p["r_knee"]
    assert m["trunk_twist"] == -p["trunk_twist"] and m["neck_lat"] == -p["neck_lat"]
    # mirrored pose = reflection x -> -x of the original joint positions (the rest skeleton is symmetric)
    x, xm = _pose(**p), _pose(**m)
    swap = [0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 23, 22]
    np.testing.assert_allclose(xm[swap] * [-1, 1, 1], x, atol=1e-6)


def test_draws_respect_the_joint_limits_and_cover_every_archetype():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(600):
        kind, p = P.sample_pose_params(rng)
        seen.add(kind)
        for name, value in p.items():
            lo, hi = P.JOINT_LIMITS[name]
            assert lo <= value <= hi, (kind, name, value)
    assert seen == set(P.ARCHETYPES)


def test_archetypes_look_like_their_names():
    rng = np.random.default_rng(1)
    for _ in range(20):
        x = _pose(**P.sample_pose_params(rng, "sit_chair")[1])
        for hip, knee in ((L_HIP, L_KNEE), (R_HIP, R_KNEE)):
            assert x[knee][2] - x[hip][2] > 0.2  # thighs point forward
        x = _pose(**P.sample_pose_params(rng, "arms_up")[1])
        assert x[L_WRIST][1] > x[L_SHOULDER][1] and x[R_WRIST][1] > x[R_SHOULDER][1]
        x = _pose(**P.sample_pose_params(rng, "crouch")[1])
        assert x[PELVIS][1] - min(x[L_ANKLE][1], x[R_ANKLE][1]) < 0.7  # hips lowered toward the feet


def test_camera_orientation_faces_the_camera_at_yaw_zero():
    aa = P.camera_orientation(P.CameraView(yaw=0.0, elevation=0.0, roll=0.0))
    r = axis_angle_to_rotmat(torch.as_tensor(aa)[None]).numpy()[0]
    np.testing.assert_allclose(r @ [0, 0, 1], [0, 0, -1], atol=1e-6)  # the front points at the camera
    np.testing.assert_allclose(r @ [0, 1, 0], [0, -1, 0], atol=1e-6)  # up is image-up (y down)
    side = P.camera_orientation(P.CameraView(yaw=90.0, elevation=0.0, roll=0.0))
    r = axis_angle_to_rotmat(torch.as_tensor(side)[None]).numpy()[0]
    np.testing.assert_allclose(r @ [0, 0, 1], [1, 0, 0], atol=1e-6)


def test_camera_elevation_is_the_camera_above_looking_down():
    """A camera above the body pitched down by e (the documented sign: positive = above, looking down) sees the
    body's up direction tilted toward it. In the OpenCV camera frame (y down, z away from the camera) the eye-level
    view is turned by e about x: up (0, -1, 0) becomes (0, -cos e, -sin e) (from straight above it points at the
    camera) and the front, (0, 0, -1) at eye level, becomes (0, sin e, -cos e) (from above: down the image)."""
    for e in (30.0, 90.0, -20.0):
        aa = P.camera_orientation(P.CameraView(yaw=0.0, elevation=e, roll=0.0))
        r = axis_angle_to_rotmat(torch.as_tensor(aa)[None]).numpy()[0]
        c, s = np.cos(np.radians(e)), np.sin(np.radians(e))
        np.testing.assert_allclose(r @ [0, 1, 0], [0, -c, -s], atol=1e-7)
        np.testing.assert_allclose(r @ [0, 0, 1], [0, s, -c], atol=1e-7)


def test_sample_poses_is_a_function_of_the_generator_state():
    a, ka = P.sample_poses(np.random.default_rng(5), 4)
    b, kb = P.sample_poses(np.random.default_rng(5), 4)
    assert ka == kb
    np.testing.assert_array_equal(a, b)
    assert a.shape == (4, 24, 3)
