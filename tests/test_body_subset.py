"""SubsetBody against the full smplx-based body model, and farthest-point sampling by hand."""

from __future__ import annotations

import numpy as np
import torch

from metahmr_cli.body.fast_joints import SubsetBody, farthest_point_sample
from metahmr_cli.geometry.rotation import axis_angle_to_rotmat


def _random_pose(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    rot = axis_angle_to_rotmat(0.6 * torch.randn(batch * 24, 3, generator=g)).reshape(batch, 24, 3, 3)
    return rot, torch.randn(batch, 10, generator=g), torch.randn(batch, 3, generator=g)


def test_subset_body_matches_the_full_body(standin_body):
    sub = SubsetBody(standin_body, num_surface=300)
    rot, betas, transl = _random_pose(5, 0)
    full = standin_body(rot, betas, transl)
    out = sub(rot, betas, transl)
    # float32 rounding of two different summation orders; positions are O(1 m)
    torch.testing.assert_close(out.joints, full.joints, atol=2e-6, rtol=0)
    torch.testing.assert_close(out.smpl_joints, full.smpl_joints, atol=2e-6, rtol=0)
    torch.testing.assert_close(out.vertices, full.vertices[:, sub.vertex_index], atol=2e-6, rtol=0)
    assert sub.num_vertices == len(sub.vertex_index) >= 300


def test_subset_body_gradients_match_the_full_body(standin_body):
    sub = SubsetBody(standin_body, num_surface=50)
    rot, betas, _ = _random_pose(2, 1)
    w = torch.randn(2, 49, 3, generator=torch.Generator().manual_seed(2))
    grads = []
    for model in (standin_body, sub):
        b = betas.clone().requires_grad_(True)
        r = rot.clone().requires_grad_(True)
        (model(r, b).joints * w).sum().backward()
        grads.append((r.grad, b.grad))
    torch.testing.assert_close(grads[1][0], grads[0][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[1][1], grads[0][1], atol=1e-5, rtol=1e-5)


def test_joints_only_subset_is_small(standin_body):
    sub = SubsetBody(standin_body, num_surface=0)
    assert sub.num_vertices < standin_body.num_vertices / 5


def test_farthest_point_sample_on_a_line():
    pts = np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [10, 0, 0], [5, 0, 0]])
    # from 0: farthest is 10 (index 3), then the point farthest from both {0, 10} is 5 (index 4)
    np.testing.assert_array_equal(farthest_point_sample(pts, 3), [0, 3, 4])
    assert len(farthest_point_sample(pts, 10)) == 5
