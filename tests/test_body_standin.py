"""The generated stand-in body: files, determinism, mesh closure, regressors and shape directions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from metahmr_cli.body.builders.standin import build_standin_body, standin_mean_params, write_standin_assets
from metahmr_cli.body.joints import SMPL_PARENTS, VERTEX_ID_NAMES


def _edge_counts(faces: np.ndarray) -> dict[tuple[int, int], int]:
    counts: dict[tuple[int, int], int] = {}
    for a, b, c in faces.tolist():
        for e in ((a, b), (b, c), (c, a)):
            key = (min(e), max(e))
            counts[key] = counts.get(key, 0) + 1
    return counts


def test_files_written(standin_dir: Path):
    names = {
        "STANDIN_NEUTRAL.npz",
        "STANDIN_MALE.npz",
        "STANDIN_FEMALE.npz",
        "J_regressor_extra.npy",
        "J_regressor_h36m.npy",
        "smpl_mean_params.npz",
        "body.json",
    }
    present = {p.name for p in standin_dir.iterdir()}
    assert names <= present
    assert not [n for n in present if n.startswith(".")]  # no temporary files left
    for name in names:
        assert (standin_dir / name).stat().st_size < 2_000_000
    info = json.loads((standin_dir / "body.json").read_text())
    assert info["name"] == "standin"
    assert "not SMPL" in info["licence"]
    assert set(info["vertex_ids"]) == set(VERTEX_ID_NAMES)
    with np.load(standin_dir / "STANDIN_NEUTRAL.npz") as data:
        v = data["v_template"]
        assert info["num_vertices"] == v.shape[0]
        assert 1000 < v.shape[0] < 10000
        assert data["shapedirs"].shape == (v.shape[0], 3, 10)
        assert data["posedirs"].shape == (v.shape[0], 3, 207)
        assert data["J_regressor"].shape == (24, v.shape[0])
        assert data["weights"].shape == (v.shape[0], 24)
        assert data["kintree_table"][0].tolist() == SMPL_PARENTS
        assert data["kintree_table"][1].tolist() == list(range(24))
    assert np.load(standin_dir / "J_regressor_extra.npy").shape == (9, v.shape[0])
    assert np.load(standin_dir / "J_regressor_h36m.npy").shape == (17, v.shape[0])


def test_deterministic(tmp_path: Path, standin_dir: Path):
    write_standin_assets(tmp_path)
    for name in ("STANDIN_NEUTRAL.npz", "STANDIN_FEMALE.npz"):
        with np.load(tmp_path / name) as a, np.load(standin_dir / name) as b:
            assert a.files == b.files
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key])
    other = build_standin_body("neutral", seed=3)
    base = build_standin_body("neutral", seed=0)
    assert other.v_template.shape == base.v_template.shape
    assert not np.allclose(other.v_template, base.v_template)


def test_mesh_closed_and_outward():
    body = build_standin_body("neutral")
    v, f = body.v_template, body.faces
    counts = _edge_counts(f)
    assert set(counts.values()) == {2}, "every edge must be shared by exactly two triangles"
    # signed volume of each part is positive (outward normals) and the body volume is human-like (m^3)
    tri = v[f]
    vol = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0
    assert 0.04 < vol < 0.12
    for lo, hi in body.part_ranges.values():
        pf = f[(f >= lo).all(1) & (f < hi).all(1)]
        pt = v[pf]
        assert np.einsum("ij,ij->i", pt[:, 0], np.cross(pt[:, 1], pt[:, 2])).sum() > 0


def test_regressors_and_weights_are_averages():
    body = build_standin_body("male")
    for reg in (body.J_regressor, body.J_regressor_extra, body.J_regressor_h36m):
        assert (reg >= 0).all()
        np.testing.assert_allclose(reg.sum(1), 1.0, atol=1e-9)
    assert (body.weights >= 0).all()
    np.testing.assert_allclose(body.weights.sum(1), 1.0, atol=1e-9)


@pytest.mark.parametrize("gender", ["neutral", "male", "female"])
def test_skeleton_layout(gender: str):
    body = build_standin_body(gender)
    j = body.J_regressor @ body.v_template
    # left side is +x; knees below hips, ankles below knees, head above neck above pelvis
    for left, right in ((1, 2), (4, 5), (7, 8), (16, 17), (18, 19), (20, 21), (22, 23)):
        assert j[left, 0] > 0.05 and j[right, 0] < -0.05
        assert abs(j[left, 0] + j[right, 0]) < 1e-9
    assert j[1, 1] > j[4, 1] > j[7, 1]
    assert j[15, 1] > j[12, 1] > j[9, 1] > j[6, 1] > j[3, 1] > j[0, 1]
    # T-pose arms: shoulder -> elbow -> wrist -> hand outwards at about shoulder height
    assert j[16, 0] < j[18, 0] < j[20, 0] < j[22, 0]
    assert abs(j[20, 1] - j[16, 1]) < 0.05
    # feet forward of ankles
    assert j[10, 2] > j[7, 2] + 0.05


def test_heights_by_gender():
    h = {g: np.ptp(build_standin_body(g).v_template[:, 1]) for g in ("neutral", "male", "female")}
    assert 1.5 < h["neutral"] < 1.9
    assert h["male"] > h["neutral"] > h["female"]


def test_vertex_ids_on_the_right_parts():
    body = build_standin_body("neutral")
    v, ids = body.v_template, body.vertex_ids
    j = body.J_regressor @ v
    assert v[ids["nose"], 2] > j[15, 2] + 0.05
    assert v[ids["leye"], 0] > 0 > v[ids["reye"], 0]
    assert v[ids["lear"], 0] > 0 > v[ids["rear"], 0]
    for tip in ("thumb", "index", "middle", "ring", "pinky"):
        assert v[ids["l" + tip], 0] > j[20, 0] and v[ids["r" + tip], 0] < j[21, 0]
    assert v[ids["LBigToe"], 2] > j[7, 2] + 0.1 and v[ids["LHeel"], 2] < j[7, 2]
    assert v[ids["LBigToe"], 0] > 0 > v[ids["RBigToe"], 0]
    assert len(set(ids.values())) == len(ids)


def test_shape_directions_move_regressed_joints():
    body = build_standin_body("neutral")
    v0 = body.v_template
    for k in range(10):
        d = body.shapedirs[:, :, k]
        assert np.abs(d).max() > 1e-3, f"shape direction {k} is empty"
    # height direction: J_regressor of the deformed mesh equals deformed joint positions (linear)
    d0 = body.shapedirs[:, :, 0]
    j_plus = body.J_regressor @ (v0 + d0)
    j0 = body.J_regressor @ v0
    assert j_plus[15, 1] - j_plus[7, 1] > j0[15, 1] - j0[7, 1]


def test_mean_params_layout():
    mean = standin_mean_params()
    assert mean["pose"].shape == (144,) and mean["shape"].shape == (10,) and mean["cam"].shape == (3,)
    pose = mean["pose"].reshape(24, 3, 2).astype(np.float64)
    # root: 180 degrees about x, so columns are (1,0,0) and (0,-1,0)
    np.testing.assert_allclose(pose[0], [[1, 0], [0, -1], [0, 0]])
    # every joint's two columns are orthonormal
    for p in pose:
        np.testing.assert_allclose(p.T @ p, np.eye(2), atol=1e-6)
