"""BodyModel on the stand-in body, checked against geometry computed by hand from the files."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from metahmr_cli.body.joints import JOINT_IDS, SMPL_VERTEX_IDS
from metahmr_cli.body.smpl import (
    BodyModel,
    load_body_model,
    load_mean_params,
    model_file_candidates,
)
from metahmr_cli.errors import AssetNotFoundError, BodyModelError, ConfigError


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rot_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _npz(standin_dir: Path, name: str = "STANDIN_NEUTRAL.npz") -> dict[str, np.ndarray]:
    with np.load(standin_dir / name) as data:
        return {k: data[k] for k in data.files}


def _rest(batch: int = 1, dtype=torch.float32):
    return torch.eye(3, dtype=dtype).expand(batch, 24, 3, 3).clone(), torch.zeros(batch, 10, dtype=dtype)


def test_rest_pose_is_template(standin_body: BodyModel, standin_dir: Path):
    data = _npz(standin_dir)
    rot, betas = _rest()
    out = standin_body(rot, betas)
    assert out.vertices.shape == (1, data["v_template"].shape[0], 3)
    assert out.joints.shape == (1, 49, 3) and out.smpl_joints.shape == (1, 24, 3)
    v = out.vertices[0].numpy()
    np.testing.assert_allclose(v, data["v_template"], atol=1e-5)
    np.testing.assert_allclose(out.smpl_joints[0].numpy(), data["J_regressor"] @ data["v_template"], atol=1e-5)
    height = v[:, 1].max() - v[:, 1].min()
    assert 1.5 < height < 1.9
    assert standin_body.name == "standin" and standin_body.gender == "neutral"
    assert standin_body.faces.dtype == np.int64 and standin_body.faces.shape[1] == 3
    assert standin_body.num_vertices == v.shape[0]


def test_joint_layout_smpl_convention(standin_body: BodyModel):
    out = standin_body(*_rest())
    j = out.smpl_joints[0].numpy()
    assert j[1, 0] > 0 > j[2, 0]  # SMPL's left hip is on +x
    assert j[15, 1] > j[0, 1] + 0.4  # head well above pelvis
    assert j[20, 0] > j[18, 0] > j[16, 0] > 0  # left arm extends along +x
    assert j[21, 0] < j[19, 0] < j[17, 0] < 0
    v = out.vertices[0].numpy()
    assert abs(j[20, 0] - v[:, 0].max()) < 0.3 and abs(j[21, 0] - v[:, 0].min()) < 0.3


def test_49_joints(standin_body: BodyModel, standin_dir: Path):
    out = standin_body(*_rest())
    joints, smpl_j, v = out.joints[0].numpy(), out.smpl_joints[0].numpy(), out.vertices[0].numpy()
    np.testing.assert_allclose(joints[JOINT_IDS["OP MidHip"]], smpl_j[0], atol=1e-6)
    np.testing.assert_allclose(joints[JOINT_IDS["Left Wrist"]], smpl_j[20], atol=1e-6)
    np.testing.assert_allclose(joints[JOINT_IDS["OP RKnee"]], smpl_j[5], atol=1e-6)
    extra = np.load(standin_dir / "J_regressor_extra.npy")
    np.testing.assert_allclose(joints[JOINT_IDS["Right Hip"]], extra[0] @ v, atol=1e-5)
    np.testing.assert_allclose(joints[JOINT_IDS["Head (H36M)"]], extra[8] @ v, atol=1e-5)
    ids = standin_body.vertex_ids
    # every joint that is a single vertex, written out by name (slot name -> vertex name)
    vertex_joints = {
        "OP Nose": "nose", "OP REye": "reye", "OP LEye": "leye", "OP REar": "rear", "OP LEar": "lear",
        "OP LBigToe": "LBigToe", "OP LSmallToe": "LSmallToe", "OP LHeel": "LHeel",
        "OP RBigToe": "RBigToe", "OP RSmallToe": "RSmallToe", "OP RHeel": "RHeel",
        "Nose": "nose", "Left Eye": "leye", "Right Eye": "reye", "Left Ear": "lear", "Right Ear": "rear",
    }
    for slot, vertex in vertex_joints.items():
        # a copy of one vertex: equal up to float32 rounding of coordinates of ~1 m
        np.testing.assert_allclose(joints[JOINT_IDS[slot]], v[ids[vertex]], atol=1e-6, err_msg=slot)
    feet = ("LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel")
    assert min(np.linalg.norm(v[ids[a]] - v[ids[b]]) for a in feet for b in feet if a != b) > 0.01
    assert np.linalg.norm(joints[JOINT_IDS["Pelvis (MPII)"]] - smpl_j[0]) < 0.1
    assert joints[JOINT_IDS["Top of Head (LSP)"], 1] > joints[JOINT_IDS["Head (H36M)"], 1] > smpl_j[12, 1]
    assert joints[JOINT_IDS["Left Hip"], 0] > 0 > joints[JOINT_IDS["Right Hip"], 0]
    assert ids != SMPL_VERTEX_IDS


def test_first_beta_changes_height_monotonically(standin_body: BodyModel):
    values = [-3.0, -1.5, 0.0, 1.0, 2.5]
    rot, _ = _rest(len(values))
    betas = torch.zeros(len(values), 10)
    betas[:, 0] = torch.tensor(values)
    v = standin_body(rot, betas).vertices
    heights = (v[..., 1].max(1).values - v[..., 1].min(1).values).tolist()
    assert all(b > a for a, b in zip(heights, heights[1:], strict=False))
    assert heights[-1] - heights[0] > 0.1


def test_global_rotation_about_root(standin_body: BodyModel):
    rot, betas = _rest()
    rest = standin_body(rot, betas)
    R = _rot_x(0.7) @ _rot_z(-0.3)
    rot[0, 0] = torch.as_tensor(R, dtype=torch.float32)
    posed = standin_body(rot, betas)
    j0 = rest.smpl_joints[0, 0].numpy()
    expect = (rest.vertices[0].numpy() - j0) @ R.T + j0
    np.testing.assert_allclose(posed.vertices[0].numpy(), expect, atol=1e-5)


def test_left_elbow_rotation_skinning(standin_body: BodyModel, standin_dir: Path):
    data = _npz(standin_dir)
    v0 = data["v_template"].astype(np.float64)
    elbow = (data["J_regressor"] @ v0)[18]
    R = _rot_z(1.0)  # forearm bends upwards
    rot, betas = _rest()
    rot[0, 18] = torch.as_tensor(R, dtype=torch.float32)
    v = standin_body(rot, betas).vertices[0].numpy()
    hand_side = v0[:, 0] > elbow[0] + 0.05
    expect = (v0[hand_side] - elbow) @ R.T + elbow
    np.testing.assert_allclose(v[hand_side], expect, atol=1e-5)
    assert np.abs(v[hand_side] - v0[hand_side]).max() > 0.2
    still = v0[:, 0] < 0.3  # torso, right side, left shoulder
    np.testing.assert_allclose(v[still], v0[still], atol=1e-6)


def test_batch_transl_and_h36m(standin_body: BodyModel, standin_dir: Path):
    torch.manual_seed(0)
    rot, betas = _rest(3)
    rot[1, 4] = torch.as_tensor(_rot_x(0.8), dtype=torch.float32)
    rot[2, 0] = torch.as_tensor(_rot_z(0.5), dtype=torch.float32)
    betas[2] = torch.randn(10)
    transl = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [-0.5, 0.1, 7.0]])
    out = standin_body(rot, betas, transl)
    for i in range(3):
        single = standin_body(rot[i : i + 1], betas[i : i + 1])
        np.testing.assert_allclose(out.vertices[i].numpy(), (single.vertices[0] + transl[i]).numpy(), atol=1e-5)
        np.testing.assert_allclose(out.joints[i].numpy(), (single.joints[0] + transl[i]).numpy(), atol=1e-5)
        np.testing.assert_allclose(out.smpl_joints[i].numpy(), (single.smpl_joints[0] + transl[i]).numpy(), atol=1e-5)
    h36m = standin_body.regress_h36m(out.vertices)
    reg = np.load(standin_dir / "J_regressor_h36m.npy").astype(np.float64)
    np.testing.assert_allclose(h36m.numpy(), np.einsum("jv,bvc->bjc", reg, out.vertices.numpy()), atol=1e-4)


def test_float64_and_gradients(standin_dir: Path):
    body = load_body_model(standin_dir, "female", dtype=torch.float64, with_h36m=False)
    rot, betas = _rest(2, torch.float64)
    betas.requires_grad_(True)
    out = body(rot, betas)
    assert out.vertices.dtype == torch.float64 and out.joints.dtype == torch.float64
    out.joints.sum().backward()
    assert betas.grad is not None and torch.isfinite(betas.grad).all()
    with pytest.raises(BodyModelError, match="J_regressor_h36m"):
        body.regress_h36m(out.vertices)


def test_genders_differ(standin_dir: Path):
    heights = {}
    for g in ("male", "female"):
        body = load_body_model(standin_dir, g, with_h36m=False)
        v = body(*_rest()).vertices[0]
        heights[g] = float(v[:, 1].max() - v[:, 1].min())
    assert heights["male"] > heights["female"] + 0.05


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda(standin_dir: Path):
    body = load_body_model(standin_dir, device="cuda")
    rot, betas = _rest(2)
    out = body(rot.cuda(), betas.cuda(), torch.zeros(2, 3, device="cuda"))
    cpu = load_body_model(standin_dir)(rot, betas)
    np.testing.assert_allclose(out.vertices.cpu().numpy(), cpu.vertices.numpy(), atol=1e-5)


def test_lookup_order_and_errors(tmp_path: Path, standin_dir: Path):
    assert model_file_candidates("male")[0] == "SMPL_MALE.npz"
    assert model_file_candidates("female")[-1] == "STANDIN_FEMALE.npz"
    with pytest.raises(AssetNotFoundError) as err:
        load_body_model(tmp_path)
    msg = str(err.value)
    assert "SMPL_NEUTRAL.npz" in msg and "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl" in msg
    assert "smpl.is.tue.mpg.de" in msg and "make-standin" in msg
    with pytest.raises(AssetNotFoundError):
        load_body_model(tmp_path / "nope")
    with pytest.raises(ConfigError):
        load_body_model(standin_dir, "other")

    d = tmp_path / "body"
    d.mkdir()
    shutil.copy(standin_dir / "STANDIN_NEUTRAL.npz", d)
    with pytest.raises(AssetNotFoundError, match="J_regressor_extra"):
        load_body_model(d)
    shutil.copy(standin_dir / "J_regressor_extra.npy", d)
    with pytest.raises(AssetNotFoundError, match="J_regressor_h36m"):
        load_body_model(d)
    assert load_body_model(d, with_h36m=False).name == "standin"
    with pytest.raises(AssetNotFoundError, match="smpl_mean_params"):
        load_mean_params(d)

    # a damaged file that comes first in the lookup order is reported by name
    (d / "SMPL_NEUTRAL.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(BodyModelError, match="SMPL_NEUTRAL.npz"):
        load_body_model(d, with_h36m=False)
    (d / "SMPL_NEUTRAL.npz").unlink()

    # a regressor of the wrong size
    np.save(d / "J_regressor_extra.npy", np.zeros((9, 10), dtype=np.float32))
    with pytest.raises(BodyModelError, match="J_regressor_extra"):
        load_body_model(d, with_h36m=False)


def test_missing_key_reported(tmp_path: Path, standin_dir: Path):
    data = _npz(standin_dir)
    del data["weights"]
    np.savez(tmp_path / "SMPL_NEUTRAL.npz", **data)
    shutil.copy(standin_dir / "J_regressor_extra.npy", tmp_path)
    with pytest.raises(BodyModelError, match="weights"):
        load_body_model(tmp_path, with_h36m=False)


def test_mean_params(standin_dir: Path):
    mean = load_mean_params(standin_dir)
    assert mean["pose"].dtype == np.float32 and mean["pose"].shape == (144,)
    assert mean["shape"].shape == (10,) and mean["cam"].shape == (3,)
    assert mean["cam"][0] > 0
