"""Sequences and animation exports of a track: the AMASS file, the skinned GLB and the BVH.

The expected values come from the body model run directly on the ground-truth motion of the synthetic walking
scene, converted to the export's axes by hand; the files are read back with independent readers (pygltflib +
a forward-kinematics/skinning written here, trimesh, the ``bvh`` package) rather than the writers' own code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from metahmr_cli.body.layout import BUNDLED_DIR
from metahmr_cli.body.smpl import load_body_model
from metahmr_cli.geometry.rotation import axis_angle_to_rotmat
from metahmr_cli.video.export import SMPL_JOINT_NAMES, write_bvh, write_glb_animation
from metahmr_cli.video.sequences import TrackSequence, collect_tracks, contiguous, write_amass, write_tracks_npz
from metahmr_cli.video.synthetic import make_walking_scene

FPS = 30.0
CAM_TO_YUP = np.diag([1.0, -1.0, -1.0])
CAM_TO_ZUP = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])
DROPPED = 5  # a frame the track misses (filled by interpolation in the exports)


@pytest.fixture(scope="module")
def body():
    return load_body_model(BUNDLED_DIR, "neutral", dtype=torch.float64, with_h36m=False)


@pytest.fixture(scope="module")
def scene(body):
    return make_walking_scene(body, frames=12, fps=FPS, size=(320, 180), seed=3)


def _forward(body, poses: np.ndarray, betas: np.ndarray, transl: np.ndarray):
    rot = axis_angle_to_rotmat(torch.as_tensor(poses.reshape(-1, 24, 3), dtype=torch.float64))
    b = torch.as_tensor(np.broadcast_to(betas, (len(rot), 10)).copy(), dtype=torch.float64)
    with torch.no_grad():
        out = body(rot, b, torch.as_tensor(transl, dtype=torch.float64))
    return out.vertices.numpy(), out.smpl_joints.numpy()


@pytest.fixture(scope="module")
def track(scene) -> TrackSequence:
    """Person 0 of the scene as a track that misses one frame."""
    keep = np.array([i for i in range(scene.num_frames) if i != DROPPED])
    T = len(keep)
    return TrackSequence(
        track_id=7, frames=keep, poses=scene.poses[0, keep].reshape(T, 72), trans=scene.transl[0, keep],
        betas=scene.betas[0], bbox=np.zeros((T, 4)), det_score=np.ones(T), keypoints2d=np.zeros((T, 49, 3)),
        report={"tto_steps": np.full(T, 3), "reproj_error_before": np.ones(T), "reproj_error_after": np.ones(T),
                "tto_converged": np.ones(T, bool), "fell_back": np.zeros(T, bool)})


def _truth(body, scene, frames: np.ndarray):
    """Ground-truth camera-frame vertices and joints of person 0 at ``frames``."""
    return _forward(body, scene.poses[0, frames], scene.betas[0], scene.transl[0, frames])


# ---------------------------------------------------------------------------------------------- sequences
def test_contiguous_fills_the_gap_with_the_geodesic_midpoint(track, scene):
    frames, rot, trans, interp = contiguous(track)
    assert frames.tolist() == list(range(scene.num_frames))
    assert interp.tolist() == [i == DROPPED for i in range(scene.num_frames)]
    # the missing frame lies halfway (by angle) on the shortest path between its neighbours, for every joint
    a = Rotation.from_rotvec(scene.poses[0, DROPPED - 1]).as_matrix()
    b = Rotation.from_rotvec(scene.poses[0, DROPPED + 1]).as_matrix()
    half = Rotation.from_matrix(np.swapaxes(a, 1, 2) @ b).magnitude() / 2
    to_mid = Rotation.from_matrix(np.swapaxes(a, 1, 2) @ rot[DROPPED]).magnitude()
    from_mid = Rotation.from_matrix(np.swapaxes(rot[DROPPED], 1, 2) @ b).magnitude()
    np.testing.assert_allclose(to_mid, half, atol=1e-9)
    np.testing.assert_allclose(from_mid, half, atol=1e-9)
    np.testing.assert_allclose(trans[DROPPED], (scene.transl[0, DROPPED - 1] + scene.transl[0, DROPPED + 1]) / 2,
                               atol=1e-12)


def test_collect_tracks_groups_people_and_keeps_each_pelvis(body, scene):
    # two people per frame, listed in a different order in odd frames; person 1 has per-frame betas noise
    rng = np.random.default_rng(0)
    frames = []
    for t in range(scene.num_frames):
        order = [0, 1] if t % 2 == 0 else [1, 0]
        betas = np.stack([scene.betas[p] + (rng.normal(0, 0.2, 10) if p == 1 else 0) for p in order])
        frames.append({
            "frame_index": np.int64(t), "track_id": np.array([10 + p for p in order]),
            "global_orient": scene.poses[order, t, 0], "body_pose": scene.poses[order, t, 1:].reshape(2, 69),
            "betas": betas, "transl": scene.transl[order, t], "bbox": np.zeros((2, 4)), "det_score": np.ones(2),
            "keypoints2d": np.zeros((2, 49, 3)), "tto_steps": np.zeros(2), "reproj_error_before": np.zeros(2),
            "reproj_error_after": np.zeros(2), "tto_converged": np.ones(2, bool), "fell_back": np.zeros(2, bool)})
    tracks = collect_tracks(frames[::-1], body)
    assert [t.track_id for t in tracks] == [10, 11]
    t0, t1 = tracks
    assert t0.frames.tolist() == list(range(scene.num_frames))
    np.testing.assert_allclose(t0.poses, scene.poses[0].reshape(-1, 72))
    np.testing.assert_allclose(t0.trans, scene.transl[0], atol=1e-9)
    # person 1: one mean shape, and the pelvis of every frame where that frame's own betas put it
    per_frame_betas = np.stack([f["betas"][list(f["track_id"]).index(11)] for f in frames])
    np.testing.assert_allclose(t1.betas, per_frame_betas.mean(0))
    _, j_own = _forward(body, t1.poses, per_frame_betas, np.stack([f["transl"][list(f["track_id"]).index(11)]
                                                                     for f in frames]))
    _, j_mean = _forward(body, t1.poses, t1.betas, t1.trans)
    np.testing.assert_allclose(j_mean[:, 0], j_own[:, 0], atol=1e-9)


def test_tracks_npz_layout(tmp_path, track):
    path = write_tracks_npz(tmp_path / "v_tracks.npz", [track], fps=FPS, stride=1, K=np.eye(3), image_size=(180, 320),
                            meta={"body_model": "open-anny-v1"})
    with np.load(path) as z:
        assert z["track_ids"].tolist() == [7]
        assert z["track_7/poses"].shape == (track.num_frames, 72)
        assert z["track_7/frames"].tolist() == track.frames.tolist()
        assert z["track_7/betas"].shape == (10,)
        assert z["track_7/tto_steps"].tolist() == [3] * track.num_frames
        assert float(z["fps"]) == FPS and str(z["body_model"]) == "open-anny-v1"


def _load_like_amass(path):
    """AMASS's own documented loading code (notebooks/01-AMASS_Visualization.ipynb of the AMASS repository, with
    human_body_prior's BodyModel(num_betas=16, num_dmpls=8)): the keys it reads and the slices it takes."""
    num_betas, num_dmpls = 16, 8
    bdata = np.load(path)
    subject_gender = bdata["gender"]
    time_length = len(bdata["trans"])
    body_parms = {
        "root_orient": torch.Tensor(bdata["poses"][:, :3]),  # controls the global root orientation
        "pose_body": torch.Tensor(bdata["poses"][:, 3:66]),  # controls the body
        "pose_hand": torch.Tensor(bdata["poses"][:, 66:]),  # controls the finger articulation
        "trans": torch.Tensor(bdata["trans"]),  # controls the global body position
        "betas": torch.Tensor(np.repeat(bdata["betas"][:num_betas][np.newaxis], repeats=time_length, axis=0)),
        "dmpls": torch.Tensor(bdata["dmpls"][:, :num_dmpls]),  # controls soft tissue dynamics
    }
    return bdata, str(subject_gender), time_length, body_parms, float(bdata["mocap_framerate"])


def test_amass_file_loads_with_amass_code_and_poses_the_body_in_a_z_up_world(tmp_path, body, scene, track):
    path = write_amass(tmp_path / "t.npz", track, body, fps=FPS, stride=1, gender="neutral")
    bdata, gender, n, parms, fps = _load_like_amass(path)
    assert n == scene.num_frames and gender == "neutral" and fps == FPS
    shapes = {k: tuple(v.shape) for k, v in parms.items()}
    assert shapes == {"root_orient": (n, 3), "pose_body": (n, 63), "pose_hand": (n, 90), "trans": (n, 3),
                      "betas": (n, 16), "dmpls": (n, 8)}
    assert (parms["pose_hand"] == 0).all() and (parms["dmpls"] == 0).all() and (parms["betas"][:, 10:] == 0).all()
    # the body the numbers belong to is named: this is not SMPL+H, and for the open body not SMPL either
    assert str(bdata["surface_model_type"]) == str(bdata["body_model"]) == body.name == "open-anny-v1"
    assert int(bdata["num_betas"]) == 10 and bdata["poses_smpl"].shape == (n, 72)
    # posing the body with what the AMASS code read: joints 0..21 (SMPL+H's body) as the truth, z up
    keep = [i for i in range(n) if i != DROPPED]
    aa = np.concatenate([parms["root_orient"].numpy(), parms["pose_body"].numpy(), np.zeros((n, 6))], axis=1)
    _, joints = _forward(body, aa[keep].astype(np.float64), parms["betas"][0, :10].numpy().astype(np.float64),
                         parms["trans"].numpy()[keep].astype(np.float64))
    gt_verts, gt_joints = _truth(body, scene, np.array(keep))
    np.testing.assert_allclose(joints[:, :22], gt_joints[:, :22] @ CAM_TO_ZUP.T, atol=1e-5)
    # the full SMPL pose (with SMPL's hand joints) gives the mesh itself
    verts, _ = _forward(body, bdata["poses_smpl"][keep], bdata["betas"][:10], bdata["trans"][keep])
    np.testing.assert_allclose(verts, gt_verts @ CAM_TO_ZUP.T, atol=1e-6)
    assert (joints[:, 15, 2] > joints[:, 7, 2] + 1.0).all()  # head above the left ankle along +z
    assert float(bdata["start_time"]) == 0.0 and str(bdata["world_source"]) == "camera"


# ---------------------------------------------------------------------------------------------------- GLB
def _node_matrix(node, rotation=None, translation=None) -> np.ndarray:
    M = np.eye(4)
    q = rotation if rotation is not None else (node.rotation or [0, 0, 0, 1])
    M[:3, :3] = Rotation.from_quat(q).as_matrix()
    M[:3, 3] = translation if translation is not None else (node.translation or [0, 0, 0])
    return M


def _accessor(gltf, blob: bytes, index: int) -> np.ndarray:
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    dtype = {5126: np.float32, 5123: np.uint16, 5125: np.uint32, 5121: np.uint8}[acc.componentType]
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}[acc.type]
    start = view.byteOffset + (acc.byteOffset or 0)
    return np.frombuffer(blob, dtype, acc.count * width, start).reshape(acc.count, width) if width > 1 else \
        np.frombuffer(blob, dtype, acc.count, start)


def test_glb_animation_reproduces_the_motion(tmp_path, body, scene, track):
    import pygltflib
    import trimesh

    path = write_glb_animation(tmp_path / "t.glb", track, body, fps=FPS)
    # trimesh opens it as a scene holding the skinned mesh
    loaded = trimesh.load(path)
    meshes = list(loaded.geometry.values())
    assert len(meshes) == 1 and len(meshes[0].vertices) == body.num_vertices

    gltf = pygltflib.GLTF2().load(str(path))
    blob = gltf.binary_blob()
    skin = gltf.skins[0]
    names = [gltf.nodes[j].name for j in skin.joints]
    assert names == list(SMPL_JOINT_NAMES)
    parent_of = {c: i for i, n in enumerate(gltf.nodes) for c in (n.children or [])}
    parents = body.parents.numpy()
    for k, j in enumerate(skin.joints):
        expect = skin.joints[parents[k]] if k > 0 else None
        assert parent_of.get(j) == expect or (k == 0 and gltf.nodes[parent_of[j]].name == "track_7")

    anim = gltf.animations[0]
    n = scene.num_frames
    times = _accessor(gltf, blob, anim.samplers[0].input)
    assert len(times) == n
    np.testing.assert_allclose(times, np.arange(n) / FPS, atol=1e-6)
    rot = {}
    trans = {}
    for ch in anim.channels:
        out = _accessor(gltf, blob, anim.samplers[ch.sampler].output)
        (rot if ch.target.path == "rotation" else trans)[ch.target.node] = out
    assert sorted(rot) == sorted(skin.joints) and list(trans) == [skin.joints[0]]

    ibm = _accessor(gltf, blob, skin.inverseBindMatrices).reshape(24, 4, 4).transpose(0, 2, 1)
    prim = gltf.meshes[0].primitives[0]
    v_bind = _accessor(gltf, blob, prim.attributes.POSITION).astype(np.float64)
    jidx = np.concatenate([_accessor(gltf, blob, prim.attributes.JOINTS_0),
                           _accessor(gltf, blob, prim.attributes.JOINTS_1)], axis=1)
    wts = np.concatenate([_accessor(gltf, blob, prim.attributes.WEIGHTS_0),
                          _accessor(gltf, blob, prim.attributes.WEIGHTS_1)], axis=1).astype(np.float64)
    gt_verts, gt_joints = _truth(body, scene, np.arange(n))
    for f in (0, DROPPED - 1, n - 1):
        world = {}
        for k, j in enumerate(skin.joints):  # parents come before children in SMPL's order
            local = _node_matrix(gltf.nodes[j], rot[j][f], trans[j][f] if j in trans else None)
            world[k] = local if k == 0 else world[parents[k]] @ local
        joints = np.stack([world[k][:3, 3] for k in range(24)])
        np.testing.assert_allclose(joints, gt_joints[f] @ CAM_TO_YUP.T, atol=2e-5)
        assert joints[15, 1] > joints[7, 1] + 1.0 and joints[15, 1] > joints[8, 1] + 1.0  # head above the feet
        skinning = np.stack([world[k] @ ibm[k] for k in range(24)])                     # (24, 4, 4)
        vh = np.concatenate([v_bind, np.ones((len(v_bind), 1))], axis=1)
        posed = np.einsum("vk,vkij,vj->vi", wts, skinning[jidx], vh)[:, :3]
        np.testing.assert_allclose(posed, gt_verts[f] @ CAM_TO_YUP.T, atol=1e-4)


# ---------------------------------------------------------------------------------------------------- BVH
def test_bvh_parses_and_its_forward_kinematics_match_the_body(tmp_path, body, scene, track):
    from bvh import Bvh

    path = write_bvh(tmp_path / "t.bvh", track, body, fps=FPS)
    doc = Bvh(path.read_text())
    n = scene.num_frames
    assert doc.nframes == n and abs(doc.frame_time - 1 / FPS) < 1e-7
    assert doc.get_joints_names() == [SMPL_JOINT_NAMES[j] for j in _dfs(body.parents.numpy())]
    gt_verts, gt_joints = _truth(body, scene, np.arange(n))
    parents = body.parents.numpy()
    for f in (0, DROPPED, n - 1):
        world: dict[int, np.ndarray] = {}
        for j in range(24):
            name = SMPL_JOINT_NAMES[j]
            chans = doc.joint_channels(name)
            vals = doc.frame_joint_channels(f, name, chans)
            ang = dict(zip(chans, vals, strict=True))
            R = Rotation.from_euler("ZXY", [ang["Zrotation"], ang["Xrotation"], ang["Yrotation"]],
                                    degrees=True).as_matrix()
            M = np.eye(4)
            M[:3, :3] = R
            if j == 0:
                M[:3, 3] = [ang["Xposition"], ang["Yposition"], ang["Zposition"]]
                world[j] = M
            else:
                M[:3, 3] = doc.joint_offset(name)
                world[j] = world[parents[j]] @ M
        joints = np.stack([world[j][:3, 3] for j in range(24)])
        tol = 1e-4 if f != DROPPED else 0.05  # the missing frame is interpolated
        np.testing.assert_allclose(joints, gt_joints[f] @ CAM_TO_YUP.T, atol=tol)


def _dfs(parents: np.ndarray) -> list[int]:
    order: list[int] = []

    def visit(j: int) -> None:
        order.append(j)
        for c in np.flatnonzero(parents == j):
            visit(int(c))

    visit(0)
    return order


# ------------------------------------------------------------------------------------------------- timing
def _late_track(scene, person: int, first: int, stride: int, track_id: int) -> TrackSequence:
    frames = np.arange(first, scene.num_frames, stride)
    T = len(frames)
    return TrackSequence(
        track_id=track_id, frames=frames, poses=scene.poses[person, frames].reshape(T, 72),
        trans=scene.transl[person, frames], betas=scene.betas[person], bbox=np.zeros((T, 4)), det_score=np.ones(T),
        keypoints2d=np.zeros((T, 49, 3)), report={"tto_steps": np.zeros(T), "reproj_error_before": np.zeros(T),
                                                  "reproj_error_after": np.zeros(T),
                                                  "tto_converged": np.ones(T, bool), "fell_back": np.zeros(T, bool)})


def test_animation_times_are_the_video_times(tmp_path, body, scene):
    """A person who appears at frame 4 of a video processed every 2nd frame: the GLB's keyframes sit at the frames'
    times in the video (4/30 s, 6/30 s, ...), the BVH starts at the video's first processed frame and holds the first
    pose until frame 4, and the AMASS file says when it starts."""
    from bvh import Bvh

    stride, first = 2, 4
    late = _late_track(scene, 1, first, stride, track_id=3)
    import pygltflib

    gltf = pygltflib.GLTF2().load(str(write_glb_animation(tmp_path / "t.glb", late, body, fps=FPS, stride=stride)))
    blob = gltf.binary_blob()
    times = _accessor(gltf, blob, gltf.animations[0].samplers[0].input)
    np.testing.assert_allclose(times, late.frames / FPS, atol=1e-6)
    assert times[0] == pytest.approx(first / FPS)

    doc = Bvh(write_bvh(tmp_path / "t.bvh", late, body, fps=FPS, stride=stride).read_text())
    assert abs(doc.frame_time - stride / FPS) < 1e-7
    lead = first // stride
    assert doc.nframes == lead + len(late.frames)  # BVH frame k = processed frame k = video time k * stride / fps
    held = [doc.frame_joint_channels(k, "pelvis", ["Xposition", "Yposition", "Zposition"]) for k in range(lead + 1)]
    assert all(h == held[-1] for h in held)
    _, joints = _forward(body, scene.poses[1, [first]], scene.betas[1], scene.transl[1, [first]])
    np.testing.assert_allclose(held[-1], joints[0, 0] * [1, -1, -1], atol=1e-4)  # person 1's pelvis, y up
    with np.load(write_amass(tmp_path / "t.npz", late, body, fps=FPS, stride=stride, gender="neutral")) as z:
        assert float(z["start_time"]) == pytest.approx(first / FPS)
        assert float(z["mocap_framerate"]) == pytest.approx(FPS / stride)


def test_scene_glb_holds_every_track_in_time_and_the_camera(tmp_path, body, scene):
    import pygltflib

    from metahmr_cli.video.export import write_scene_glb

    tracks = [_late_track(scene, 0, 0, 1, track_id=1), _late_track(scene, 1, 5, 1, track_id=2)]
    W, H = scene.size
    path = write_scene_glb(tmp_path / "scene.glb", tracks, body, fps=FPS, stride=1, K=scene.K, image_size=(H, W))
    gltf = pygltflib.GLTF2().load(str(path))
    blob = gltf.binary_blob()
    assert len(gltf.skins) == 2 and len(gltf.animations) == 1
    names = {n.name: i for i, n in enumerate(gltf.nodes)}
    anim = gltf.animations[0]
    per_node: dict[tuple[int, str], tuple[np.ndarray, np.ndarray, str]] = {}
    for ch in anim.channels:
        smp = anim.samplers[ch.sampler]
        per_node[(ch.target.node, ch.target.path)] = (_accessor(gltf, blob, smp.input),
                                                      _accessor(gltf, blob, smp.output), smp.interpolation)
    for t in tracks:
        root = gltf.nodes[names[f"track_{t.track_id}"]]
        pelvis = root.children[0]
        times, _, _ = per_node[(pelvis, "translation")]
        np.testing.assert_allclose(times, t.frames / FPS, atol=1e-6)  # both in the video's time
        k_times, scale, interp = per_node[(names[f"track_{t.track_id}"], "scale")]
        assert interp == "STEP"
        visible = [float(s[0]) for s in scale]
        # hidden before its first frame (when it starts later) and after its last, shown in between
        if t.frames[0] > 0:
            assert k_times[0] == 0 and visible[0] == 0
        assert visible[list(k_times).index(np.float32(t.frames[0] / FPS))] == 1.0
        assert visible[-1] == 0 and k_times[-1] > t.frames[-1] / FPS
    cam_node = gltf.nodes[names["video_camera"]]
    cam = gltf.cameras[cam_node.camera]
    assert cam.perspective.yfov == pytest.approx(2 * np.arctan(H / 2 / scene.K[1, 1]))
    assert cam.perspective.aspectRatio == pytest.approx(W / H)
    # camera axes: glTF cameras look along their -z; in the camera's own axes turned y-up it looks along -z too
    R = Rotation.from_quat(cam_node.rotation).as_matrix()
    np.testing.assert_allclose(R @ [0, 0, -1], [0, 0, -1], atol=1e-9)


# ---------------------------------------------------------------------------------------------- strides, hemispheres


def test_exports_of_a_video_processed_every_second_frame(tmp_path, body, scene):
    """--video-stride 2: the track's frames are 0, 2, 4 ...; the exports hold one pose per processed frame (the missed
    frame 6 interpolated), the BVH frame time is 2 / fps, the AMASS frame rate fps / 2 and the GLB keys sit at
    frame / fps."""
    from bvh import Bvh

    keep = np.array([0, 2, 4, 8, 10])  # frame 6 missed
    T = len(keep)
    seq = TrackSequence(
        track_id=3, frames=keep, poses=scene.poses[0, keep].reshape(T, 72), trans=scene.transl[0, keep],
        betas=scene.betas[0], bbox=np.zeros((T, 4)), det_score=np.ones(T), keypoints2d=np.zeros((T, 49, 3)),
        report={"tto_steps": np.full(T, 3), "reproj_error_before": np.ones(T), "reproj_error_after": np.ones(T),
                "tto_converged": np.ones(T, bool), "fell_back": np.zeros(T, bool)})
    doc = Bvh(write_bvh(tmp_path / "t.bvh", seq, body, fps=FPS, stride=2).read_text())
    assert doc.nframes == 6 and abs(doc.frame_time - 2 / FPS) < 1e-7
    amass = np.load(write_amass(tmp_path / "t.npz", seq, body, fps=FPS, stride=2, gender="neutral"))
    assert float(amass["mocap_framerate"]) == FPS / 2 and amass["poses"].shape == (6, 156)  # AMASS SMPL+H layout
    assert amass["frames"].tolist() == [0, 2, 4, 6, 8, 10] and amass["interpolated"].tolist() == [0, 0, 0, 1, 0, 0]
    import pygltflib

    gltf = pygltflib.GLTF2().load(str(write_glb_animation(tmp_path / "t.glb", seq, body, fps=FPS, stride=2)))
    times = _accessor(gltf, gltf.binary_blob(), gltf.animations[0].samplers[0].input)
    np.testing.assert_allclose(times, np.arange(0, 11, 2) / FPS, atol=1e-6)


def test_glb_rotations_interpolate_the_short_way_between_keyframes(tmp_path, body, scene):
    """A person turning about the vertical through 180 degrees (10 degrees per frame from 150 to 240): a viewer
    interpolating the keyframes' quaternions linearly (normalised) must get the rotation half way between two
    frames, 5 degrees on, never a turn the long way round (q and -q are the same rotation at the keyframes)."""
    import pygltflib

    n = 10
    yaw = np.radians(150.0 + 10.0 * np.arange(n))
    poses = np.zeros((n, 72))
    poses[:, :3] = Rotation.from_euler("y", yaw[:, None]).as_rotvec()
    poses[:, 3:] = scene.poses[0, :n].reshape(n, 72)[:, 3:]
    seq = TrackSequence(
        track_id=1, frames=np.arange(n), poses=poses, trans=np.tile([0.0, 0.0, 4.0], (n, 1)), betas=scene.betas[0],
        bbox=np.zeros((n, 4)), det_score=np.ones(n), keypoints2d=np.zeros((n, 49, 3)),
        report={"tto_steps": np.full(n, 3), "reproj_error_before": np.ones(n), "reproj_error_after": np.ones(n),
                "tto_converged": np.ones(n, bool), "fell_back": np.zeros(n, bool)})
    gltf = pygltflib.GLTF2().load(str(write_glb_animation(tmp_path / "turn.glb", seq, body, fps=FPS)))
    blob = gltf.binary_blob()
    anim = gltf.animations[0]
    checked = 0
    for ch in anim.channels:
        if ch.target.path != "rotation":
            continue
        q = _accessor(gltf, blob, anim.samplers[ch.sampler].output).astype(np.float64)  # (n, 4) x, y, z, w
        for t in range(n - 1):
            mid = q[t] + q[t + 1]
            mid /= np.linalg.norm(mid)
            a, b = Rotation.from_quat(q[t]), Rotation.from_quat(q[t + 1])
            half = a * Rotation.from_rotvec((a.inv() * b).as_rotvec() / 2)  # the geodesic midpoint
            assert (Rotation.from_quat(mid) * half.inv()).magnitude() < 1e-3, (ch.target.node, t)
            checked += 1
    assert checked == 24 * (n - 1)
