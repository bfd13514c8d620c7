"""Evaluation protocols: joint selection, pelvis, gendered ground truth, protocol names."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fixtures.procrustes import umeyama_align

from metahmr_cli.errors import ConfigError, DatasetError
from metahmr_cli.evaluation import protocols as P

H36M_TO_J17 = [6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10, 0, 7, 9]  # written out, not imported
J24_TO_J17 = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18, 14, 16, 17]


class PickBody:
    """A fake body: regress_h36m picks vertex i as H36M joint i; forward returns a constant-tagged mesh."""

    def __init__(self, tag: float = 0.0, num_vertices: int = 20):
        self.tag = tag
        self.num_vertices = num_vertices

    def regress_h36m(self, vertices: torch.Tensor) -> torch.Tensor:
        return vertices[:, :17, :]

    def __call__(self, rotmat: torch.Tensor, betas: torch.Tensor):
        B = rotmat.shape[0]
        # the mesh encodes the body's tag and the sample's first beta, so the selection is visible
        v = torch.full((B, self.num_vertices, 3), self.tag, dtype=betas.dtype) + betas[:, :1, None]
        return SimpleNamespace(vertices=v)


def test_gender_codes_and_gt_body_rules():
    from metahmr_cli.data.datasets import gender_codes

    # the dataset only codes the value, compared exactly as the released `str(g) == 'm'`
    assert gender_codes(np.array(["m", "f", "n", "male", "M"])).tolist() == [0, 1, 2, 2, 2]
    assert gender_codes([b"m", b"f"]).tolist() == [0, 1]
    codes = torch.tensor([0, 1, 2, -1])  # 'm', 'f', other ('n'), no gender key
    # released: `0 if str(g) == 'm' else 1` in the dataset (-1 without key), female mesh where == 1
    assert P.gt_body_codes(codes).tolist() == [0, 1, 1, 0]
    # neutral: other values and a missing key use the neutral body
    assert P.gt_body_codes(codes, "neutral").tolist() == [0, 1, 2, 2]
    with pytest.raises(DatasetError, match="gender codes"):
        P.gt_body_codes(torch.tensor([5]))
    with pytest.raises(ConfigError, match="gender_rule"):
        P.gt_body_codes(codes, "mixed")  # type: ignore[arg-type]


def test_gendered_gt_selection_on_hand_made_batch():
    male, female = PickBody(tag=100.0), PickBody(tag=200.0)
    gender = torch.tensor([0, 1, -1, 1, 0])  # m, f, missing, f, m
    betas = torch.arange(5, dtype=torch.float32)[:, None].repeat(1, 10)
    gt = P.GroundTruth(gender=gender, has_smpl=torch.ones(5), has_pose_3d=torch.zeros(5),
                       pose=torch.zeros(5, 72), betas=betas)
    verts = P.gt_mesh(gt, P.EvalBodies(neutral=PickBody(), male=male, female=female))
    tags = verts[:, 0, 0] - betas[:, 0]
    # female exactly where gender == 1; male for 0 and for a missing gender (-1)
    assert tags.tolist() == [100.0, 200.0, 100.0, 200.0, 100.0]
    # all-male and all-female batches
    gt_m = P.GroundTruth(gender=torch.full((2,), -1), has_smpl=torch.ones(2), has_pose_3d=torch.zeros(2),
                         pose=torch.zeros(2, 72), betas=torch.zeros(2, 10))
    assert P.gt_mesh(gt_m, P.EvalBodies(PickBody(), male, female))[:, 0, 0].tolist() == [100.0, 100.0]


def test_mesh_joints_subtract_pelvis_taken_before_selection():
    rng = np.random.default_rng(0)
    verts = torch.from_numpy(rng.normal(size=(3, 20, 3)))
    joints, pelvis = P.mesh_eval_joints(verts, PickBody(), "J14")
    v = verts.numpy()
    expected = v[:, H36M_TO_J17[:14]] - v[:, [0]]
    np.testing.assert_allclose(joints.numpy(), expected)
    np.testing.assert_allclose(pelvis.numpy(), v[:, 0])
    joints17, _ = P.mesh_eval_joints(verts, PickBody(), "J17")
    np.testing.assert_allclose(joints17.numpy(), v[:, H36M_TO_J17] - v[:, [0]])
    # J17 contains the pelvis itself (H36M row 0) at position 14 -> zero after centring
    np.testing.assert_allclose(joints17.numpy()[:, 14], 0.0)


def test_s_joints_use_j24_subsets_without_recentring():
    S = torch.arange(2 * 24 * 4, dtype=torch.float64).reshape(2, 24, 4)
    out = P.s_eval_joints(S, "J17")
    np.testing.assert_allclose(out.numpy(), S.numpy()[:, J24_TO_J17, :3])
    np.testing.assert_allclose(P.s_eval_joints(S, "J14").numpy(), S.numpy()[:, J24_TO_J17[:14], :3])
    with pytest.raises(DatasetError, match="S"):
        P.s_eval_joints(torch.zeros(2, 17, 4), "J14")


def test_protocol_choices_per_dataset():
    pw = P.make_protocol("3dpw")
    assert (pw.gt_source, pw.joint_set, pw.pve_alignment, pw.released) == ("mesh", "J14", "none", True)
    assert P.make_protocol("3dpw_test_w2d_smpl3d_gender_openpose.npz").released
    h = P.make_protocol("h36m-p2")
    assert (h.gt_source, h.joint_set, h.released) == ("mesh", "J14", True)
    spin = P.make_protocol("h36m", h36m_gt="S")
    assert (spin.gt_source, spin.released) == ("S", False)
    mpi = P.make_protocol("mpi-inf-3dhp")
    assert (mpi.gt_source, mpi.joint_set, mpi.has_pve) == ("S", "J17", False)
    assert P.make_protocol("/data/mpi_inf_3dhp_valid_openpose.npz").joint_set == "J17"
    other = P.make_protocol("synthetic_test.npz")
    assert (other.gt_source, other.joint_set, other.released) == ("mesh", "J14", False)
    assert not P.make_protocol("3dpw", pve_alignment="pelvis").released
    assert "no alignment" in pw.metric_name("pve")
    assert "pelvis-aligned" in P.make_protocol("3dpw", pve_alignment="pelvis").metric_name("pve")
    assert "J17" in mpi.metric_name("mpjpe") and "Procrustes" in mpi.metric_name("pa_mpjpe")
    assert len(pw.joint_names()) == 14 and len(mpi.joint_names()) == 17
    with pytest.raises(ConfigError, match="pve_alignment"):
        P.make_protocol("3dpw", pve_alignment="mean")  # type: ignore[arg-type]


def test_evaluate_vertices_offset_mesh():
    """A prediction equal to the GT mesh moved by a constant offset: zero joint errors (pelvis-centred),
    PVE = offset norm without alignment, zero with pelvis alignment; invalid samples are NaN."""
    rng = np.random.default_rng(3)
    gt_v = torch.from_numpy(rng.normal(size=(3, 20, 3)))
    offset = torch.tensor([0.0, 0.3, 0.4], dtype=torch.float64)
    body = PickBody()
    for align, expected in (("none", 500.0), ("pelvis", 0.0)):
        proto = P.make_protocol("3dpw", pve_alignment=align)
        joints, pelvis = P.mesh_eval_joints(gt_v, body, "J14")
        prepared = P.PreparedGT(joints=joints, joints_valid=torch.tensor([True, True, False]), vertices=gt_v,
                                pelvis=pelvis, mesh_valid=torch.tensor([True, True, False]))
        out = P.evaluate_vertices(gt_v + offset, prepared, proto, body)
        np.testing.assert_allclose(out["mpjpe"][:2], 0.0, atol=1e-9)
        np.testing.assert_allclose(out["pa_mpjpe"][:2], 0.0, atol=1e-6)
        np.testing.assert_allclose(out["pve"][:2], expected, atol=1e-6)
        assert np.isnan(out["mpjpe"][2]) and np.isnan(out["pve"][2])
        assert out["joint_err"].shape == (3, 14)


def test_gendered_gt_with_standin_bodies(standin_dir):
    from metahmr_cli.body.smpl import load_body_model
    from metahmr_cli.geometry.rotation import axis_angle_to_rotmat

    bodies = P.EvalBodies(*(load_body_model(standin_dir, g, device="cpu", dtype=torch.float64)
                            for g in ("neutral", "male", "female")))
    gen = torch.Generator().manual_seed(0)
    pose = 0.2 * torch.randn(4, 72, generator=gen, dtype=torch.float64)
    betas = torch.randn(4, 10, generator=gen, dtype=torch.float64)
    gender = torch.tensor([1, 0, -1, 1])
    gt = P.GroundTruth(gender=gender, has_smpl=torch.ones(4), has_pose_3d=torch.zeros(4), pose=pose, betas=betas)
    verts = P.gt_mesh(gt, bodies)
    rot = axis_angle_to_rotmat(pose.reshape(4, 24, 3))
    male_v = bodies.male(rot, betas).vertices
    female_v = bodies.female(rot, betas).vertices
    assert not torch.allclose(male_v, female_v)
    for i, expect in enumerate([female_v, male_v, male_v, female_v]):
        torch.testing.assert_close(verts[i], expect[i])
    # the prepared GT joints come from the regressor on that mesh, pelvis-centred
    prepared = P.prepare_ground_truth(gt, P.make_protocol("3dpw"), bodies)
    h36m = bodies.neutral.regress_h36m(verts)
    torch.testing.assert_close(prepared.joints, h36m[:, H36M_TO_J17[:14]] - h36m[:, [0]])


def test_neutral_gender_rule():
    gt = P.GroundTruth(gender=torch.tensor([2, 0, 1, -1]), has_smpl=torch.ones(4), has_pose_3d=torch.zeros(4),
                       pose=torch.zeros(4, 72), betas=torch.zeros(4, 10))
    bodies = P.EvalBodies(neutral=PickBody(300.0), male=PickBody(100.0), female=PickBody(200.0))
    assert P.gt_mesh(gt, bodies, "neutral")[:, 0, 0].tolist() == [300.0, 100.0, 200.0, 300.0]
    # the same codes under the released rule: 'n' -> female, no key -> male
    assert P.gt_mesh(gt, bodies)[:, 0, 0].tolist() == [200.0, 100.0, 200.0, 100.0]
    # prepare_ground_truth applies the protocol's rule
    body = PickBody(0.0)
    bodies_j = P.EvalBodies(neutral=body, male=PickBody(100.0), female=PickBody(200.0))
    for rule, tags in (("neutral", [0.0, 100.0, 200.0, 0.0]), ("released", [200.0, 100.0, 200.0, 100.0])):
        prep = P.prepare_ground_truth(gt, P.make_protocol("3dpw", gender_rule=rule), bodies_j)
        assert prep.vertices[:, 0, 0].tolist() == tags
    proto = P.make_protocol("3dpw", gender_rule="neutral")
    assert not proto.released and "neutral" in proto.name


def test_evaluate_vertices_pa_mpjpe_is_procrustes_aligned():
    """PA-MPJPE of the evaluation is the error after a per-sample similarity alignment, not plain MPJPE:
    a rotated, scaled and shifted copy of the GT mesh has PA-MPJPE 0 and a large MPJPE; noisy predictions
    agree with an independent Umeyama alignment."""
    rng = np.random.default_rng(7)
    gt_v = rng.normal(size=(3, 20, 3))
    angle = 0.7
    rot = np.array([[np.cos(angle), 0.0, np.sin(angle)], [0.0, 1.0, 0.0], [-np.sin(angle), 0.0, np.cos(angle)]])
    pred_v = 1.3 * gt_v @ rot.T + np.array([0.2, -0.1, 0.5])
    pred_v[1:] += 0.05 * rng.normal(size=(2, 20, 3))  # samples 1 and 2 are not exact copies
    body = PickBody()
    joints, pelvis = P.mesh_eval_joints(torch.from_numpy(gt_v), body, "J14")
    prepared = P.PreparedGT(joints=joints, joints_valid=torch.ones(3, dtype=torch.bool),
                            vertices=torch.from_numpy(gt_v), pelvis=pelvis, mesh_valid=torch.ones(3, dtype=torch.bool))
    out = P.evaluate_vertices(torch.from_numpy(pred_v), prepared, P.make_protocol("3dpw"), body)

    sel = H36M_TO_J17[:14]
    pj = pred_v[:, sel] - pred_v[:, [0]]
    gj = gt_v[:, sel] - gt_v[:, [0]]
    mpjpe = 1000 * np.linalg.norm(pj - gj, axis=-1).mean(1)
    pa_err = 1000 * np.stack([np.linalg.norm(umeyama_align(pj[i], gj[i]) - gj[i], axis=-1) for i in range(3)])
    # float64 throughout; the two alignments differ only by rounding of an SVD of O(1) coordinates
    # (~1e-15 relative), so 1e-9 relative (1e-9 mm absolute for the exact copy) is far above rounding and far
    # below any protocol difference (the prediction moved by ~100 mm)
    np.testing.assert_allclose(out["mpjpe"], mpjpe, rtol=1e-9)
    np.testing.assert_allclose(out["pa_joint_err"], pa_err, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(out["pa_mpjpe"], pa_err.mean(1), rtol=1e-9, atol=1e-9)
    assert out["pa_mpjpe"][0] < 1e-9 < 100.0 < out["mpjpe"][0]
    assert (out["pa_mpjpe"][1:] < out["mpjpe"][1:]).all()
