"""The world frame of a static camera's video: floor and gravity from the people's foot contacts.

The synthetic walk is laid out on a known floor (every frame's lowest vertex on it) and seen by a camera 2 m up,
pitched 12 degrees down, so that the floor's plane in the camera frame is known exactly. The tracks are the
ground truth with estimation-like noise (root rotation, depth along the viewing ray, lateral position), fixed by
a seed. The checks use only the scene's floor and independent geometry, never the estimator's own numbers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from metahmr_cli.body.layout import BUNDLED_DIR
from metahmr_cli.body.smpl import load_body_model
from metahmr_cli.geometry.rotation import axis_angle_to_rotmat
from metahmr_cli.video.sequences import TrackSequence, write_amass
from metahmr_cli.video.synthetic import make_walking_scene
from metahmr_cli.video.world import camera_world, estimate_world, foot_soles, sole_contacts

FPS = 30.0
HEIGHT, PITCH = 2.0, 12.0


@pytest.fixture(scope="module")
def body():
    return load_body_model(BUNDLED_DIR, "neutral", dtype=torch.float64, with_h36m=False)


@pytest.fixture(scope="module")
def scene(body):
    return make_walking_scene(body, frames=40, fps=FPS, size=(480, 270), seed=4, camera_height=HEIGHT, pitch=PITCH,
                              feet_on_floor=True)


def _noisy_tracks(scene) -> list[TrackSequence]:
    rng = np.random.default_rng(7)
    tracks = []
    for p in range(scene.num_people):
        T = scene.num_frames
        poses = scene.poses[p].reshape(T, 72).copy()
        noise = Rotation.from_rotvec(rng.normal(0, np.deg2rad(2.0), (T, 3)))
        poses[:, :3] = (noise * Rotation.from_rotvec(poses[:, :3])).as_rotvec()
        trans = scene.transl[p] * (1 + rng.normal(0, 0.01, (T, 1))) + rng.normal(0, 0.01, (T, 3))
        tracks.append(TrackSequence(
            track_id=p + 1, frames=np.arange(T), poses=poses, trans=trans, betas=scene.betas[p],
            bbox=np.zeros((T, 4)), det_score=np.ones(T), keypoints2d=np.zeros((T, 49, 3)),
            report={k: np.zeros(T) for k in ("tto_steps", "reproj_error_before", "reproj_error_after",
                                             "tto_converged", "fell_back")}))
    return tracks


def _world(body, tracks, **kw):
    soles, up = zip(*(sole_contacts(body, t.poses, t.betas, t.trans) for t in tracks), strict=True)
    return estimate_world(np.concatenate(soles), np.concatenate(up), **kw)


def test_the_scene_stands_on_its_floor(body, scene):
    """The premise: the floor plane of the scene is where the people's lowest vertices are, in every frame."""
    n, d = scene.floor[:3], scene.floor[3]
    assert np.rad2deg(np.arccos(n @ [0, -1, 0])) == pytest.approx(PITCH)  # the camera is pitched
    soles, _ = sole_contacts(body, scene.poses.reshape(-1, 72), np.repeat(scene.betas, scene.num_frames, 0),
                             scene.transl.reshape(-1, 3))
    np.testing.assert_allclose((soles @ n + d).min(axis=1), 0.0, atol=1e-6)


def test_floor_at_zero_and_gravity_within_two_degrees_under_a_pitched_camera(tmp_path, body, scene):
    tracks = _noisy_tracks(scene)
    world = _world(body, tracks)
    n_true, d_true = scene.floor[:3], scene.floor[3]
    # gravity: the estimated up against the true floor normal
    angle = np.rad2deg(np.arccos(np.clip(world.up_in_camera @ n_true, -1, 1)))
    assert angle < 2.0, angle
    # the floor at 0: points of the true floor (where the people walk, and under the camera) land at z = 0 +- 2 cm
    floor_points = [-d_true * n_true]  # below the camera
    for t in tracks:
        centre = t.trans.mean(0)
        floor_points.append(centre - (centre @ n_true + d_true) * n_true)  # projected onto the true floor
    z = world.apply(np.array(floor_points))[:, 2]
    assert np.abs(z).max() < 0.02, z
    assert world.camera_height == pytest.approx(HEIGHT, abs=0.02)
    assert world.source == "ground" and world.quality["level"] == "high"
    assert world.quality["contacts"] >= 0.9 * 2 * scene.num_frames
    # the AMASS file of a track is in that world: gravity along -z, the feet on z = 0 (the noisy soles within the
    # noise), the torso upright
    path = write_amass(tmp_path / "t.npz", tracks[0], body, fps=FPS, stride=1, gender="neutral", world=world)
    with np.load(path) as a:
        rot = axis_angle_to_rotmat(torch.as_tensor(a["poses_smpl"].reshape(-1, 24, 3)))
        with torch.no_grad():
            out = body(rot, torch.as_tensor(np.tile(a["betas"][:10], (len(rot), 1))), torch.as_tensor(a["trans"]))
    left, right = foot_soles(body)
    verts = out.vertices.numpy()
    lowest = verts[:, np.concatenate([left, right]), 2].min(axis=1)
    assert abs(np.median(lowest)) < 0.02 and np.percentile(np.abs(lowest), 90) < 0.06
    spine = out.smpl_joints.numpy()[:, 12] - out.smpl_joints.numpy()[:, 0]  # pelvis -> neck
    tilt = np.rad2deg(np.arccos(spine[:, 2] / np.linalg.norm(spine, axis=1)))
    assert np.median(tilt) < 6.0  # the camera's pitch (12 degrees) is gone


def test_the_contacts_decide_not_the_prior(body, scene):
    """People who all lean 8 degrees the same way: the prior (their mean up) is off, the floor is found anyway."""
    tracks = _noisy_tracks(scene)
    soles, up = zip(*(sole_contacts(body, t.poses, t.betas, t.trans) for t in tracks), strict=True)
    lean = Rotation.from_rotvec([np.deg2rad(8.0), 0, 0]).as_matrix()
    world = estimate_world(np.concatenate(soles), np.concatenate(up) @ lean.T)
    assert world.quality["prior_angle_deg"] > 6.0
    assert np.rad2deg(np.arccos(world.up_in_camera @ scene.floor[:3])) < 2.0


def test_without_people_the_exports_stay_in_the_camera_axes():
    world = estimate_world(np.zeros((0, 5, 3)), np.zeros((0, 3)))
    assert world.source == "camera" and world.camera_height == 0.0
    np.testing.assert_allclose(world.rotation, camera_world().rotation)
    np.testing.assert_allclose(world.apply(np.array([[1.0, 2.0, 3.0]])), [[1.0, 3.0, -2.0]])  # (x, z, -y)


def test_each_person_off_in_depth_by_a_factor_of_their_own_is_moved_onto_the_floor(tmp_path, body, scene):
    """A monocular estimate puts each person nearer or farther by a factor of their own (here 0.96 and 1.04): their
    contacts lie above and below the true floor, and the one plane through everyone's contacts tilts by a few
    degrees (the limit of the method, in the docs). Each track, moved along the camera's rays by its own factor,
    stands on that plane."""
    from metahmr_cli.video.sequences import rest_root
    from metahmr_cli.video.world import onto_floor

    tracks = _noisy_tracks(scene)
    factors = {1: 0.96, 2: 1.04}
    for t in tracks:
        j0 = rest_root(body, t.betas)
        t.trans = factors[t.track_id] * (t.trans + j0) - j0
    soles, up = zip(*(sole_contacts(body, t.poses, t.betas, t.trans) for t in tracks), strict=True)
    groups = np.concatenate([np.full(t.num_frames, t.track_id) for t in tracks])
    world = estimate_world(np.concatenate(soles), np.concatenate(up), groups)
    assert np.rad2deg(np.arccos(world.up_in_camera @ scene.floor[:3])) < 4.0
    assert set(world.quality["track_height_m"]) == {"1", "2"}
    scales = {}
    for t in tracks:
        moved, scales[t.track_id] = onto_floor(t, world, body)
        s, _ = sole_contacts(body, moved.poses, moved.betas, moved.trans)
        lowest = world.apply(s)[..., 2].min(axis=1)
        assert abs(np.median(lowest)) < 0.02, (t.track_id, np.median(lowest))
    assert all(0.9 < v < 1.1 for v in scales.values())
    # the camera frame (no floor) moves nothing
    assert onto_floor(tracks[0], camera_world(), body)[1] == 1.0
