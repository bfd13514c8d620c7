"""Rotation conversions against hand-worked numbers and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from metahmr_cli.errors import InputError
from metahmr_cli.geometry import (
    axis_angle_to_rotmat,
    rot6d_to_rotmat,
    rotmat_to_axis_angle,
    rotmat_to_rot6d,
)


def _assert_proper(R: torch.Tensor, tol: float) -> None:
    eye = torch.eye(3, dtype=R.dtype).expand_as(R)
    assert torch.allclose(R.transpose(-1, -2) @ R, eye, atol=tol)
    assert torch.allclose(torch.linalg.det(R), torch.ones(R.shape[:-2], dtype=R.dtype), atol=tol)


def test_rot6d_hand_example():
    # x = [1, 0, 1, 1, 0, 1] read as the 3x2 row-major matrix [[1, 0], [1, 1], [0, 1]]:
    # a1 = (1, 1, 0), a2 = (0, 1, 1)
    # b1 = (1, 1, 0)/sqrt2; a2 - (b1.a2) b1 = (-1/2, 1/2, 1) -> b2 = (-1, 1, 2)/sqrt6
    # b3 = b1 x b2 = (2, -2, 2)/sqrt12 = (1, -1, 1)/sqrt3; R = [b1 b2 b3] as columns.
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0, 1.0]], dtype=torch.float64)
    r2, r3, r6 = math.sqrt(2), math.sqrt(3), math.sqrt(6)
    expected = torch.tensor(
        [
            [1 / r2, -1 / r6, 1 / r3],
            [1 / r2, 1 / r6, -1 / r3],
            [0.0, 2 / r6, 1 / r3],
        ],
        dtype=torch.float64,
    )
    R = rot6d_to_rotmat(x)
    assert R.shape == (1, 3, 3)
    assert torch.allclose(R[0], expected, atol=1e-12)


def test_rot6d_shapes_and_orthonormal():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 144, generator=g)
    R = rot6d_to_rotmat(x)
    assert R.shape == (5, 24, 3, 3)
    _assert_proper(R, 1e-5)
    # (..., 6) input keeps its leading dims
    assert rot6d_to_rotmat(x.reshape(5, 24, 6)).shape == (5, 24, 3, 3)
    assert torch.equal(rot6d_to_rotmat(x.reshape(5, 24, 6)), R)
    # rotmat -> 6D -> rotmat is the identity on rotations
    assert torch.allclose(rot6d_to_rotmat(rotmat_to_rot6d(R)), R, atol=1e-6)
    # the first two columns are the (normalised) 6D columns
    assert torch.allclose(rotmat_to_rot6d(R)[..., 0::2], R[..., :, 0], atol=0)


def test_rot6d_rejects_bad_input():
    with pytest.raises(InputError, match="divisible by 6"):
        rot6d_to_rotmat(torch.zeros(2, 5))
    with pytest.raises(InputError, match="torch.Tensor"):
        rot6d_to_rotmat(np.zeros((2, 6)))


def test_axis_angle_hand_example_and_zero():
    aa = torch.tensor([[0.0, 0.0, math.pi / 2], [0.0, 0.0, 0.0]], dtype=torch.float64)
    R = axis_angle_to_rotmat(aa)
    rz90 = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(R[0], rz90, atol=1e-7)  # 1e-8 epsilon shifts the axis very slightly
    assert torch.allclose(R[1], torch.eye(3, dtype=torch.float64), atol=1e-12)


def test_axis_angle_matches_scipy():
    rng = np.random.default_rng(1)
    aa = rng.normal(size=(200, 3)) * rng.uniform(0.0, 3.0, size=(200, 1))
    R = axis_angle_to_rotmat(torch.from_numpy(aa)).numpy()
    ref = Rotation.from_rotvec(aa).as_matrix()
    assert np.abs(R - ref).max() < 1e-7
    _assert_proper(torch.from_numpy(R), 1e-10)


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-4, 0.5, 2.0, math.pi - 1e-3, math.pi - 1e-6, math.pi])
def test_axis_angle_round_trip(angle: float):
    rng = np.random.default_rng(2)
    axis = rng.normal(size=(50, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    aa = axis * angle
    # reference matrices from scipy, so the round trip does not depend on our forward map
    R = torch.from_numpy(Rotation.from_rotvec(aa).as_matrix())
    back = rotmat_to_axis_angle(R).numpy()
    assert np.isfinite(back).all()
    assert np.abs(Rotation.from_rotvec(back).as_matrix() - R.numpy()).max() < 1e-9
    if angle < math.pi - 1e-5:
        assert np.abs(back - aa).max() < 1e-8
    else:
        # at pi the axis sign is ambiguous
        err = np.minimum(np.abs(back - aa).max(axis=1), np.abs(back + aa).max(axis=1))
        assert err.max() < 1e-5
    assert np.all(np.linalg.norm(back, axis=1) <= math.pi + 1e-9)


def test_round_trip_float32_batched_shape():
    g = torch.Generator().manual_seed(3)
    aa = torch.randn(4, 24, 3, generator=g)
    R = axis_angle_to_rotmat(aa)
    assert R.shape == (4, 24, 3, 3) and R.dtype == torch.float32
    _assert_proper(R, 1e-5)
    assert torch.allclose(axis_angle_to_rotmat(rotmat_to_axis_angle(R)), R, atol=1e-5)
