"""Image evidence for the open model: facing, left/right swaps undone, unreliable keypoints dropped, the input layout,
and the simulated evidence and framings of the synthetic training people."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from metahmr_cli.body.joints import J49_FLIP_PERM
from metahmr_cli.data import poses as P
from metahmr_cli.data.evidence_synth import EvidenceSimConfig, ray_rotation, simulate_evidence
from metahmr_cli.data.keypoint_synth import KeypointSynthConfig, SyntheticKeypointDataset, _Scene
from metahmr_cli.keypoints.evidence import (
    INPUT_ROWS,
    PersonEvidence,
    drop_unreliable_keypoints,
    facing_belief,
    left_right_arrangement,
    pack_network_input,
    resolve_left_right,
)
from metahmr_cli.models.backbones import KeypointEncoder

# a person in camera axes (x right, y down, z away), facing the camera: their left is at +x, COCO-17 order
_TOWARD = np.array([
    [0.0, -0.55, -0.10], [0.03, -0.58, -0.08], [-0.03, -0.58, -0.08], [0.07, -0.56, 0.0], [-0.07, -0.56, 0.0],
    [0.18, -0.45, 0.0], [-0.18, -0.45, 0.0], [0.22, -0.2, 0.0], [-0.22, -0.2, 0.0], [0.24, 0.0, -0.05],
    [-0.24, 0.0, -0.05], [0.1, 0.0, 0.0], [-0.1, 0.0, 0.0], [0.1, 0.42, 0.0], [-0.1, 0.42, 0.0], [0.1, 0.85, 0.0],
    [-0.1, 0.85, 0.0]])


def _evidence(world: np.ndarray | None = None, face: float = 0.0) -> PersonEvidence:
    ev = PersonEvidence.empty(1)
    if world is not None:
        ev.world[0], ev.world_conf[0], ev.found[0] = world, 1.0, True
    ev.face[0], ev.face_checked[0] = face, True
    return ev


def _kp49(left_x: float, right_x: float) -> np.ndarray:
    """Shoulders at y=100 and hips at y=200 (torso height 100 px), left/right at the given x."""
    kp = np.zeros((1, 49, 3), np.float32)
    kp[0, 34], kp[0, 33] = (left_x, 100, 0.9), (right_x, 100, 0.9)       # left / right shoulder
    kp[0, 28], kp[0, 27] = (left_x, 200, 0.9), (right_x, 200, 0.9)       # left / right hip
    kp[0, 5], kp[0, 2] = kp[0, 34], kp[0, 33]
    kp[0, 12], kp[0, 9] = kp[0, 28], kp[0, 27]
    kp[0, 29], kp[0, 26] = (left_x, 300, 0.8), (right_x, 300, 0.8)       # knees
    return kp


def test_facing_belief_from_blazepose_and_the_face():
    assert facing_belief(_evidence(_TOWARD))[0] == pytest.approx(1.0)
    turned = _TOWARD @ Rotation.from_euler("y", 180, degrees=True).as_matrix().T   # the back to the camera
    assert facing_belief(_evidence(turned))[0] == pytest.approx(-1.0)
    side = _TOWARD @ Rotation.from_euler("y", 90, degrees=True).as_matrix().T
    assert abs(facing_belief(_evidence(side))[0]) < 1e-9
    # a face at 0.9 alone: 0.5 + 0.5 * (0.9 - 0.5) / 0.5 = 0.9; a face under 0.5 says nothing
    assert facing_belief(_evidence(None, face=0.9))[0] == pytest.approx(0.9)
    assert facing_belief(_evidence(None, face=0.4))[0] == 0.0
    assert facing_belief(PersonEvidence.empty(1))[0] == 0.0


def test_left_right_arrangement_is_signed_over_the_torso_height():
    # (120 - 80) + (120 - 80) over a 100 px torso
    assert left_right_arrangement(_kp49(120, 80))[0] == pytest.approx(0.8)
    assert left_right_arrangement(_kp49(80, 120))[0] == pytest.approx(-0.8)
    kp = _kp49(120, 80)
    kp[0, [27, 28, 33, 34], 2] = 0
    assert left_right_arrangement(kp)[0] == 0.0


def test_swaps_are_undone_only_when_the_evidence_is_sure_and_the_labels_clear():
    reversed_labels = _kp49(80, 120)   # the detector says "back to the camera"
    fixed, swapped = resolve_left_right(reversed_labels, _evidence(_TOWARD))
    assert swapped.tolist() == [True]
    np.testing.assert_array_equal(fixed[0], reversed_labels[0][J49_FLIP_PERM])
    assert left_right_arrangement(fixed)[0] > 0
    # the face alone is enough
    assert resolve_left_right(reversed_labels, _evidence(None, face=0.95))[1].tolist() == [True]
    # labels that agree, a side view, or no evidence: unchanged
    for kp, ev in ((_kp49(120, 80), _evidence(_TOWARD)), (_kp49(104, 96), _evidence(_TOWARD)),
                   (reversed_labels, PersonEvidence.empty(1))):
        out, swapped = resolve_left_right(kp, ev)
        assert swapped.tolist() == [False]
        np.testing.assert_array_equal(out, kp)


def test_keypoints_outside_the_image_or_barely_confident_are_dropped():
    kp = np.array([[[10, 10, 0.9], [-3, 10, 0.9], [10, 480, 0.9], [639, 479, 0.2], [50, 50, 0.1], [np.nan, 5, 1]]],
                  np.float32)
    out = drop_unreliable_keypoints(kp, (480, 640), 0.15)
    np.testing.assert_array_equal(out[0, [0, 3]], kp[0, [0, 3]])
    assert (out[0, [1, 2, 4, 5]] == 0).all()
    assert kp[0, 1, 2] == pytest.approx(0.9)  # the input is untouched


def test_network_input_layout():
    kp = np.random.default_rng(0).uniform(-1, 1, (2, 49, 3)).astype(np.float32)
    ev = PersonEvidence.empty(2)
    ev.world[1], ev.world_conf[1], ev.found[1] = _TOWARD, 0.7, True
    ev.world_conf[1, 3] = 0.0
    ev.face[:], ev.face_checked[1] = (0.0, 0.8), True
    x = pack_network_input(kp, ev)
    assert x.shape == (2, INPUT_ROWS, 4) == (2, 67, 4)
    np.testing.assert_array_equal(x[:, :49, :3], kp)
    assert (x[:, :49, 3] == 0).all()
    assert (x[0, 49:] == 0).all()                         # nobody found, no face check: all zero
    np.testing.assert_allclose(x[1, 49:66, :3][[0, 1, 2, 4]], _TOWARD[[0, 1, 2, 4]], atol=1e-7)
    assert (x[1, 49 + 3] == 0).all()                      # a landmark of visibility 0 carries no position
    np.testing.assert_allclose(x[1, 66], [0.8, 1.0, 1.0, 0.0])


def test_keypoints_only_encoder_reads_the_keypoint_rows_of_an_evidence_input():
    from metahmr_cli.models import build_regressor

    torch.manual_seed(0)
    net = build_regressor("cliff", "kpnet", n_iter=1).eval()
    ev_net = build_regressor("cliff", "kpnet_ev", n_iter=1).eval()
    assert isinstance(ev_net.backbone, KeypointEncoder) and ev_net.backbone.input_shape == (67, 4)
    x = torch.randn(3, 67, 4)
    bbox = torch.zeros(3, 3)
    with torch.no_grad():
        torch.testing.assert_close(net(x, bbox)["cam"], net(x[:, :49, :3].contiguous(), bbox)["cam"])
        a = ev_net(x, bbox)["cam"]
        y = x.clone()
        y[:, 49:] = 0
        assert not torch.allclose(a, ev_net(y, bbox)["cam"])  # the evidence rows matter


# ----------------------------------------------------------------------------------------------- synthetic data


def test_positive_elevation_is_a_camera_above_the_person():
    """Looking down at an upright person, their head is nearer the camera than their feet: the body's up
    direction in camera axes is (0, -cos e, -sin e)."""
    rot = Rotation.from_rotvec(P.camera_orientation(P.CameraView(yaw=0.0, elevation=30.0, roll=0.0))).as_matrix()
    np.testing.assert_allclose(rot @ [0, 1, 0], [0, -np.cos(np.radians(30)), -np.sin(np.radians(30))], atol=1e-12)
    # facing the camera, the body's forward points at it and down the image
    np.testing.assert_allclose(rot @ [0, 0, 1], [0, np.sin(np.radians(30)), -np.cos(np.radians(30))], atol=1e-12)


def test_a_raised_camera_stands_the_person_on_the_ground(standin_dir):
    ds = SyntheticKeypointDataset(standin_dir, KeypointSynthConfig(length=10, seed=2))
    item = ds[0]  # loads the body
    del item
    rng = np.random.default_rng(4)
    pitch, height = 35.0, 6.0
    scene = _Scene(768, 576, float(np.hypot(768, 576)), "full", P.CameraView(30.0, pitch, 0.0), height)
    joints = np.random.default_rng(1).normal(0, 0.3, (49, 3))
    pos = ds._place_on_ground(rng, joints, scene)
    assert pos is not None
    up = np.array([0.0, -np.cos(np.radians(pitch)), -np.sin(np.radians(pitch))])
    # the lowest point is on the plane 6 m below the camera, the body itself only moved
    assert (pos @ up).min() == pytest.approx(-height, abs=1e-9)
    np.testing.assert_allclose(pos - pos[0], joints - joints[0], atol=1e-12)


def test_people_framed_without_legs_stand_and_their_legs_carry_no_keypoints(standin_dir):
    ds = SyntheticKeypointDataset(standin_dir, KeypointSynthConfig(length=400, seed=5, split="test", half_body=0.5,
                                                                   head_shoulders=0.5, truncation=0.0))
    items = ds.__getitems__(list(range(40)))
    assert {it["framing"] for it in items} == {"half_body", "head_shoulders"}
    knees, ankles = [], []
    for it in items:
        pose = it["pose"].numpy().reshape(24, 3)
        knees += [np.degrees(np.linalg.norm(pose[4])), np.degrees(np.linalg.norm(pose[5]))]
        ankles += it["keypoints_obs"][[11, 14, 25, 30], 2].tolist()
    # the ankles are out of the picture: dropped, or at most a barely confident guess at the border
    assert max(ankles) <= 0.3 and np.mean(np.array(ankles) == 0) > 0.8
    # a relaxed stance: knees bent at most ~25 deg (the stance's 0-18 deg plus the variation)
    assert max(knees) < 30.0
    assert np.median(knees) < 12.0


def test_simulated_face_follows_the_facing():
    rng = np.random.default_rng(0)
    toward = back = 0
    for _ in range(200):
        joints = np.zeros((49, 3))
        joints[:, 2] = 4.0
        joints[44] = (0.0, -0.6, 3.9)                      # nose nearer the camera than the ears: facing it
        joints[47], joints[48] = (0.07, -0.6, 4.0), (-0.07, -0.6, 4.0)
        uv = joints[:, :2] / joints[:, 2:] * 800 + 400
        box = np.array([300.0, 250.0, 500.0, 600.0])
        ev = simulate_evidence(rng, joints, uv, box, 800.0, 800, 800, np.zeros(49, bool), EvidenceSimConfig())
        toward += ev.face[0] >= 0.6
        joints[44, 2] = 4.1                                # nose beyond the ears: the back of the head
        ev = simulate_evidence(rng, joints, uv, box, 800.0, 800, 800, np.zeros(49, bool), EvidenceSimConfig())
        back += ev.face[0] >= 0.6
    assert toward > 150 and back < 10


def test_ray_rotation_turns_the_optical_axis_onto_the_ray():
    r = ray_rotation(np.array([900.0, 100.0]), 1000.0, 1000, 800)
    ray = np.array([0.4, -0.3, 1.0])
    np.testing.assert_allclose(r @ [0, 0, 1], ray / np.linalg.norm(ray), atol=1e-12)
    np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(ray_rotation(np.array([500.0, 400.0]), 1000.0, 1000, 800), np.eye(3), atol=1e-12)
