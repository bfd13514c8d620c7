"""Procrustes alignment against a known similarity and a slow per-sample numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from metahmr_cli.errors import InputError
from metahmr_cli.geometry import similarity_align, similarity_transform


def _slow_align(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Direct transcription of the published algorithm, one sample at a time."""
    out = np.empty_like(X)
    for i in range(X.shape[0]):
        A, B = X[i].T, Y[i].T  # (3, N)
        mu1 = A.mean(axis=1, keepdims=True)
        mu2 = B.mean(axis=1, keepdims=True)
        A1, B1 = A - mu1, B - mu2
        var1 = np.sum(A1**2)
        K = A1 @ B1.T
        U, _, Vt = np.linalg.svd(K)
        V = Vt.T
        Z = np.eye(3)
        Z[2, 2] *= np.sign(np.linalg.det(U @ V.T))
        R = V @ Z @ U.T
        scale = np.trace(R @ K) / var1
        t = mu2 - scale * (R @ mu1)
        out[i] = (scale * R @ A + t).T
    return out


def test_recovers_known_similarity():
    rng = np.random.default_rng(0)
    B, N = 6, 14
    X = rng.normal(size=(B, N, 3))
    R = Rotation.random(B, random_state=1).as_matrix()
    s = rng.uniform(0.5, 2.0, size=B)
    t = rng.normal(size=(B, 3))
    Y = s[:, None, None] * np.einsum("bij,bnj->bni", R, X) + t[:, None, :]
    s_hat, R_hat, t_hat = similarity_transform(torch.from_numpy(X), torch.from_numpy(Y))
    assert np.allclose(s_hat.numpy(), s, atol=1e-10)
    assert np.allclose(R_hat.numpy(), R, atol=1e-10)
    assert np.allclose(t_hat.numpy(), t, atol=1e-10)
    aligned = similarity_align(torch.from_numpy(X), torch.from_numpy(Y))
    assert torch.allclose(aligned, torch.from_numpy(Y), atol=1e-10)


def test_matches_slow_reference_with_noise_and_reflections():
    rng = np.random.default_rng(3)
    B, N = 8, 17
    X = rng.normal(size=(B, N, 3))
    Y = X @ Rotation.random(B, random_state=4).as_matrix().transpose(0, 2, 1) + rng.normal(size=(B, N, 3)) * 0.3
    Y[:4, :, 0] *= -1  # mirrored targets: the best proper rotation must still be returned
    ours = similarity_align(X, Y)  # numpy in, numpy out
    assert isinstance(ours, np.ndarray)
    assert np.allclose(ours, _slow_align(X, Y), atol=1e-9)
    _, R_hat, _ = similarity_transform(X, Y)
    assert np.allclose(np.linalg.det(R_hat), 1.0)
    # float32 torch path agrees too
    ours32 = similarity_align(torch.from_numpy(X).float(), torch.from_numpy(Y).float())
    assert ours32.dtype == torch.float32
    assert np.allclose(ours32.numpy(), _slow_align(X, Y), atol=1e-4)
    # single (N, 3) input
    assert similarity_align(X[0], Y[0]).shape == (N, 3)


def test_shape_mismatch_is_an_input_error():
    with pytest.raises(InputError, match="same shape"):
        similarity_align(np.zeros((2, 14, 3)), np.zeros((2, 13, 3)))
