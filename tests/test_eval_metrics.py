"""Evaluation metrics against hand-derived values and an independent SVD Procrustes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures.procrustes import umeyama_align

from metahmr_cli.evaluation import metrics as M


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _svd_procrustes_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean joint error of one sample (N, 3) after the textbook Umeyama alignment."""
    return float(np.linalg.norm(umeyama_align(pred, gt) - gt, axis=1).mean())


def test_mpjpe_constant_offset_equals_offset_norm():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(5, 14, 3))
    offset = np.array([0.03, -0.04, 0.12])  # norm 0.13 m
    pred = gt + offset
    out = M.mpjpe(pred, gt)
    assert isinstance(out, np.ndarray) and out.shape == (5,)
    np.testing.assert_allclose(out, 0.13, atol=1e-12)
    np.testing.assert_allclose(M.mpjpe(pred, gt, mm=True), 130.0, atol=1e-9)
    # torch in, torch out
    t = M.mpjpe(torch.from_numpy(pred).float(), torch.from_numpy(gt).float(), mm=True)
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), 130.0, atol=1e-3)


def test_joint_errors_hand_values():
    gt = np.zeros((1, 3, 3))
    pred = np.array([[[3.0, 4.0, 0.0], [0.0, 0.0, 0.0], [1.0, 2.0, 2.0]]])
    np.testing.assert_allclose(M.joint_errors(pred, gt), [[5.0, 0.0, 3.0]])
    np.testing.assert_allclose(M.mpjpe(pred, gt), [8.0 / 3.0])


def test_pa_mpjpe_zero_for_similarity_transformed_copy_and_invariant():
    rng = np.random.default_rng(1)
    B, N = 6, 14
    gt = rng.normal(size=(B, N, 3)) * 0.3
    pred = gt + rng.normal(size=(B, N, 3)) * 0.02
    # a transformed copy of the GT has zero PA error
    moved = np.stack([2.3 * gt[i] @ _random_rotation(rng).T + rng.normal(size=3) for i in range(B)])
    np.testing.assert_allclose(M.pa_mpjpe(moved, gt), 0.0, atol=1e-9)
    # the PA error of pred does not change when pred is moved by a random similarity transform
    base = M.pa_mpjpe(pred, gt)
    moved_pred = np.stack([0.7 * pred[i] @ _random_rotation(rng).T + rng.normal(size=3) for i in range(B)])
    np.testing.assert_allclose(M.pa_mpjpe(moved_pred, gt), base, rtol=1e-9, atol=1e-12)
    assert np.all(base > 0)


def test_pa_mpjpe_agrees_with_independent_svd_procrustes():
    rng = np.random.default_rng(2)
    B, N = 8, 17
    gt = rng.normal(size=(B, N, 3))
    pred = np.stack([1.4 * gt[i] @ _random_rotation(rng).T for i in range(B)]) + rng.normal(size=(B, N, 3)) * 0.3
    expected = np.array([_svd_procrustes_error(pred[i], gt[i]) for i in range(B)])
    np.testing.assert_allclose(M.pa_mpjpe(pred, gt), expected, rtol=1e-8)
    np.testing.assert_allclose(M.pa_mpjpe(pred, gt, mm=True), expected * 1000, rtol=1e-8)
    per_joint = M.pa_joint_errors(pred, gt)
    np.testing.assert_allclose(per_joint.mean(1), expected, rtol=1e-8)
    # float32 tensors give the same numbers (computed in float64 inside)
    t = M.pa_mpjpe(torch.from_numpy(pred).float(), torch.from_numpy(gt).float())
    np.testing.assert_allclose(t.numpy(), expected, rtol=1e-5)


def test_pve_hand_built_meshes_with_and_without_pelvis_alignment():
    # a 4-vertex "mesh"; the prediction is the GT shifted by (0, 0, 0.2) with one vertex moved a further 0.1 in x
    gt = np.array([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    pred = gt + np.array([0.0, 0.0, 0.2])
    pred[0, 1, 0] += 0.1
    # no alignment: three vertices at 0.2, one at sqrt(0.01 + 0.04)
    expected_none = (3 * 0.2 + np.sqrt(0.05)) / 4
    np.testing.assert_allclose(M.pve(pred, gt), [expected_none], atol=1e-12)
    np.testing.assert_allclose(M.pve(pred, gt, alignment="none", mm=True), [expected_none * 1000], atol=1e-9)
    # pelvis alignment removes the shift: only the moved vertex keeps an error of 0.1
    gt_pelvis = np.array([[0.0, 0.0, 0.0]])
    pred_pelvis = np.array([[0.0, 0.0, 0.2]])
    out = M.pve(pred, gt, alignment="pelvis", pred_pelvis=pred_pelvis, gt_pelvis=gt_pelvis)
    np.testing.assert_allclose(out, [0.1 / 4], atol=1e-12)
    with pytest.raises(ValueError, match="pelvis"):
        M.pve(pred, gt, alignment="pelvis")
    with pytest.raises(ValueError, match="alignment"):
        M.pve(pred, gt, alignment="centroid")  # type: ignore[arg-type]


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="differ in shape"):
        M.mpjpe(np.zeros((2, 14, 3)), np.zeros((2, 17, 3)))
    with pytest.raises(TypeError, match="torch.Tensor or numpy"):
        M.mpjpe([[0, 0, 0]], np.zeros((1, 1, 3)))  # type: ignore[arg-type]


def test_summarize_ignores_nan():
    s = M.summarize(np.array([1.0, np.nan, 3.0]))
    assert s["mean"] == 2.0 and s["count"] == 2 and s["median"] == 2.0
    assert M.summarize(np.array([np.nan]))["count"] == 0


def test_accel_error_by_hand():
    from metahmr_cli.evaluation.metrics import accel_error

    t = np.arange(5, dtype=np.float64)
    gt = np.zeros((5, 2, 3))
    gt[:, 0, 0] = t**2 / 2          # constant acceleration 1 per frame^2 along x for joint 0
    pred = gt.copy()
    pred[2, 1, 1] = 0.3             # a 0.3 blip on joint 1 at frame 2: accelerations -0.6 at t=2, +0.3 at t=1, 3
    err = accel_error(pred, gt)
    np.testing.assert_allclose(err, [0.15, 0.3, 0.15])
    np.testing.assert_allclose(accel_error(pred, gt, mm=True), [150, 300, 150])
    with pytest.raises(ValueError):
        accel_error(pred[:2], gt[:2])


def test_id_switches_counts_changes_of_a_persons_track():
    from metahmr_cli.evaluation.metrics import id_switches

    assert id_switches([{0: 1, 1: 2}, {0: 1, 1: 2}, {1: 2}, {0: 1, 1: 2}]) == 0   # a miss is no switch
    assert id_switches([{0: 1, 1: 2}, {0: 2, 1: 1}, {0: 2, 1: 1}]) == 2
    assert id_switches([{0: 1}, {0: 3}, {0: 1}]) == 2


def test_paired_difference_against_a_t_table():
    """Mean of a − b ± t_{0.975, n−1} · sd / √n with the t quantile read from a table (4 degrees of freedom:
    2.776445), samples with a NaN on either side left out."""
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0, np.nan, 7.0])
    b = np.array([0.0, 1.0, 1.0, 2.0, 6.0, 3.0, np.inf])
    got = M.paired_difference(a, b)
    d = np.array([1.0, 1.0, 2.0, 2.0, -1.0])  # by hand
    half = 2.776445105 * np.sqrt(((d - 1.0) ** 2).sum() / 4) / np.sqrt(5)
    assert got["count"] == 5 and got["mean"] == pytest.approx(1.0)
    assert (got["lo"], got["hi"]) == (pytest.approx(1.0 - half, rel=1e-8), pytest.approx(1.0 + half, rel=1e-8))
    one = M.paired_difference(np.array([2.0]), np.array([1.0]))
    assert one["mean"] == 1.0 and np.isnan(one["lo"]) and one["count"] == 1
    with pytest.raises(ValueError, match="one length"):
        M.paired_difference(np.zeros(3), np.zeros(4))
