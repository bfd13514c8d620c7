"""A body model that poses only the vertices it needs: the 49 joints and an even sample of the surface.

Training needs the joints and a vertex loss for thousands of bodies per second, not full meshes. The joints depend
on few vertices: the 24 kinematic joints come from the shaped rest joints (``J_regressor`` applied to the
template and to the shape directions, precomputed), the face/foot/fingertip joints are single vertices, and the 9
extra joints use the vertices that ``J_regressor_extra`` touches. :class:`SubsetBody` runs linear blend skinning
on those vertices plus ``num_surface`` vertices spread evenly over the body (farthest-point sampling on the
template), so a vertex loss on its output is a loss on a sample of the surface. Its joints equal
:meth:`BodyModel.forward`'s (up to floating-point rounding) and its vertices are the full body's
``vertices[:, SubsetBody.vertex_index]``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from metahmr_cli.body.smpl import BodyModel, BodyOutput

__all__ = ["SubsetBody", "farthest_point_sample"]


def farthest_point_sample(points: np.ndarray, count: int, start: int = 0) -> np.ndarray:
    """Indices of ``count`` points of (N, 3) ``points`` spread evenly (greedy farthest-point order)."""
    n = len(points)
    count = min(int(count), n)
    chosen = np.empty(count, np.int64)
    dist = np.full(n, np.inf)
    idx = int(start)
    for k in range(count):
        chosen[k] = idx
        dist = np.minimum(dist, ((points - points[idx]) ** 2).sum(1))
        idx = int(np.argmax(dist))
    return chosen


class SubsetBody(nn.Module):
    """``(rotmat (B, 24, 3, 3), betas (B, 10), transl) -> BodyOutput`` on a subset of ``body``'s vertices.

    Args:
        body: the full body model (its arrays are copied; device and dtype follow ``.to()``).
        num_surface: surface vertices besides those the joints need (0 = joints only).
    Attributes:
        vertex_index: (S,) indices into the full body's vertices of the returned vertices.
    """

    def __init__(self, body: BodyModel, num_surface: int = 1024) -> None:
        super().__init__()
        smpl = body.smpl
        dt = body.dtype
        template = smpl.v_template.detach().cpu().double().numpy()
        selector = smpl.vertex_joint_selector.extra_joints_idxs.long().cpu()
        extra = body.J_regressor_extra.detach().cpu().to(dt)
        support = torch.nonzero(extra.abs().sum(0) > 0).flatten()
        surface = torch.as_tensor(farthest_point_sample(template, num_surface)) if num_surface > 0 else \
            torch.zeros(0, dtype=torch.long)
        subset = torch.unique(torch.cat([selector, support, surface]))
        position = {int(v): i for i, v in enumerate(subset.tolist())}
        self.vertex_index = subset
        self.name = getattr(body, "name", "body")
        self.gender = getattr(body, "gender", "neutral")
        self.num_vertices = int(len(subset))
        self.parents = [int(p) for p in smpl.parents.long().tolist()]
        j_reg = smpl.J_regressor.detach().cpu().to(dt)
        shapedirs = smpl.shapedirs.detach().cpu().to(dt)
        self.register_buffer("selector", torch.tensor([position[int(v)] for v in selector.tolist()]))
        self.register_buffer("extra", extra[:, subset].contiguous())
        self.register_buffer("v_template", smpl.v_template.detach().cpu().to(dt)[subset].contiguous())
        self.register_buffer("shapedirs", shapedirs[subset].contiguous())
        posedirs = smpl.posedirs.detach().cpu().to(dt).reshape(207, -1, 3)[:, subset]
        self.register_buffer("posedirs", posedirs.reshape(207, -1).contiguous())
        self.register_buffer("weights", smpl.lbs_weights.detach().cpu().to(dt)[subset].contiguous())
        self.register_buffer("j_template", j_reg @ smpl.v_template.detach().cpu().to(dt))
        self.register_buffer("j_shapedirs", torch.einsum("jv,vcl->jcl", j_reg, shapedirs))
        self.register_buffer("selection", body.joint_selection.detach().cpu().long().clone())

    @property
    def dtype(self) -> torch.dtype:
        return self.v_template.dtype

    @property
    def device(self) -> torch.device:
        return self.v_template.device

    def forward(self, rotmat: Tensor, betas: Tensor, transl: Tensor | None = None) -> BodyOutput:
        """(B, 24, 3, 3) rotations, (B, 10) betas, optional (B, 3) translation -> vertices (B, S, 3), joints
        (B, 49, 3), smpl_joints (B, 24, 3)."""
        rotmat = rotmat.to(self.dtype)
        betas = betas.to(self.dtype)
        b = rotmat.shape[0]
        joints_rest = self.j_template + torch.einsum("jcl,bl->bjc", self.j_shapedirs, betas)
        verts = self.v_template + torch.einsum("vcl,bl->bvc", self.shapedirs, betas)
        eye = torch.eye(3, dtype=self.dtype, device=self.device)
        pose_feature = (rotmat[:, 1:] - eye).reshape(b, -1)
        verts = verts + (pose_feature @ self.posedirs).reshape(b, -1, 3)
        # forward kinematics: rotation and position of every joint in the body frame
        rel = torch.cat([joints_rest[:, :1], joints_rest[:, 1:] - joints_rest[:, self.parents[1:]]], dim=1)
        rots = [rotmat[:, 0]]
        pos = [rel[:, 0]]
        for j in range(1, 24):
            p = self.parents[j]
            rots.append(rots[p] @ rotmat[:, j])
            pos.append(pos[p] + (rots[p] @ rel[:, j, :, None])[..., 0])
        world_rot = torch.stack(rots, dim=1)                                           # (B, 24, 3, 3)
        posed_joints = torch.stack(pos, dim=1)                                         # (B, 24, 3)
        # skinning: x' = sum_j w_j (R_j (x - J_j) + P_j)
        offset = posed_joints - torch.einsum("bjrc,bjc->bjr", world_rot, joints_rest)  # (B, 24, 3)
        blend_rot = torch.einsum("vj,bjrc->bvrc", self.weights, world_rot)
        blend_off = torch.einsum("vj,bjr->bvr", self.weights, offset)
        posed = torch.einsum("bvrc,bvc->bvr", blend_rot, verts) + blend_off
        extra = torch.einsum("js,bsc->bjc", self.extra, posed)
        all_joints = torch.cat([posed_joints, posed[:, self.selector], extra], dim=1)
        joints = all_joints[:, self.selection]
        if transl is not None:
            t = transl.to(self.dtype)[:, None, :]
            return BodyOutput(vertices=posed + t, joints=joints + t, smpl_joints=posed_joints + t)
        return BodyOutput(vertices=posed, joints=joints, smpl_joints=posed_joints)
