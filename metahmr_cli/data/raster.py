"""A small vectorised z-buffer triangle rasteriser (numpy) for the synthetic dataset.

Pixel (row i, column j) is sampled at its centre, the point (x=j, y=i) of the pixel coordinate system
used by the keypoints; so a keypoint at (u, v) lies in pixel (round(v), round(u)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Raster", "project_points", "rasterize", "shade_faces"]

_MAX_CANDIDATES = 4_000_000


@dataclass
class Raster:
    """Rasterisation result.

    Attributes:
        face_id: (H, W) int64, index of the visible face per pixel, -1 for background.
        depth: (H, W) float64 camera-space z of the visible surface, +inf for background.
    """

    face_id: np.ndarray
    depth: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool, pixels covered by the mesh."""
        return self.face_id >= 0


def project_points(points: np.ndarray, focal: float, cx: float, cy: float) -> np.ndarray:
    """Pinhole projection of camera-frame points (z forward, y down).

    Args:
        points: (N, 3).
    Returns:
        (N, 2) pixel coordinates u = f x / z + cx, v = f y / z + cy.
    """
    z = points[:, 2:3]
    return focal * points[:, :2] / z + np.array([cx, cy])


def rasterize(
    verts: np.ndarray, faces: np.ndarray, focal: float, cx: float, cy: float, width: int, height: int,
    near: float = 1e-3,
) -> Raster:
    """Rasterise a triangle mesh seen by a pinhole camera at the origin looking along +z.

    All (face, pixel-in-its-box) candidates are enumerated at once, tested with edge functions, given a
    perspective-correct depth, and the nearest candidate per pixel wins.

    Args:
        verts: (V, 3) camera-frame vertices (metres).
        faces: (F, 3) vertex indices.
        focal, cx, cy: intrinsics in pixels.
        width, height: image size.
        near: faces with a vertex closer than this are skipped.
    Returns:
        :class:`Raster`.
    """
    face_id = np.full(height * width, -1, dtype=np.int64)
    depth = np.full(height * width, np.inf)
    uv = project_points(verts, focal, cx, cy)
    z = verts[:, 2]
    tri_uv = uv[faces]  # (F, 3, 2)
    tri_z = z[faces]  # (F, 3)
    keep = (tri_z > near).all(axis=1)
    x0 = np.ceil(tri_uv[..., 0].min(axis=1) - 1e-9)
    x1 = np.floor(tri_uv[..., 0].max(axis=1) + 1e-9)
    y0 = np.ceil(tri_uv[..., 1].min(axis=1) - 1e-9)
    y1 = np.floor(tri_uv[..., 1].max(axis=1) + 1e-9)
    x0, y0 = np.maximum(x0, 0), np.maximum(y0, 0)
    x1, y1 = np.minimum(x1, width - 1), np.minimum(y1, height - 1)
    a, b, c = tri_uv[:, 0], tri_uv[:, 1], tri_uv[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    keep &= (x1 >= x0) & (y1 >= y0) & (np.abs(area) > 1e-12)
    fidx = np.nonzero(keep)[0]
    nx = (x1[fidx] - x0[fidx] + 1).astype(np.int64)
    ny = (y1[fidx] - y0[fidx] + 1).astype(np.int64)
    counts = nx * ny
    if len(fidx) == 0:
        return Raster(face_id=face_id.reshape(height, width), depth=depth.reshape(height, width))
    # process in chunks of faces so that very close (large) meshes stay within memory
    cum = np.cumsum(counts)
    cuts = np.searchsorted(cum, np.arange(1, int(cum[-1] // _MAX_CANDIDATES) + 1) * _MAX_CANDIDATES, side="right")
    edges = np.unique(np.concatenate([[0], cuts, [len(fidx)]]))
    for start, stop in zip(edges[:-1], edges[1:], strict=True):
        sel = slice(int(start), int(stop))
        f, cnt, nxs = fidx[sel], counts[sel], nx[sel]
        total = int(cnt.sum())
        if total == 0:
            continue
        owner = np.repeat(np.arange(len(f)), cnt)
        offs = np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        px = x0[f][owner] + offs % nxs[owner]
        py = y0[f][owner] + offs // nxs[owner]
        fa, fb, fc = a[f][owner], b[f][owner], c[f][owner]
        ar = area[f][owner]
        w0 = (fc[:, 0] - fb[:, 0]) * (py - fb[:, 1]) - (fc[:, 1] - fb[:, 1]) * (px - fb[:, 0])
        w1 = (fa[:, 0] - fc[:, 0]) * (py - fc[:, 1]) - (fa[:, 1] - fc[:, 1]) * (px - fc[:, 0])
        w2 = (fb[:, 0] - fa[:, 0]) * (py - fa[:, 1]) - (fb[:, 1] - fa[:, 1]) * (px - fa[:, 0])
        l0, l1, l2 = w0 / ar, w1 / ar, w2 / ar
        tol = -1e-9
        inside = (l0 >= tol) & (l1 >= tol) & (l2 >= tol)
        if not inside.any():
            continue
        zf = tri_z[f][owner][inside]
        inv_z = l0[inside] / zf[:, 0] + l1[inside] / zf[:, 1] + l2[inside] / zf[:, 2]
        zz = 1.0 / inv_z
        pid = (py[inside] * width + px[inside]).astype(np.int64)
        fid = f[owner][inside]
        order = np.lexsort((zz, pid))
        pid_s, zz_s, fid_s = pid[order], zz[order], fid[order]
        first = np.ones(len(pid_s), dtype=bool)
        first[1:] = pid_s[1:] != pid_s[:-1]
        pid_s, zz_s, fid_s = pid_s[first], zz_s[first], fid_s[first]
        closer = zz_s < depth[pid_s]
        depth[pid_s[closer]] = zz_s[closer]
        face_id[pid_s[closer]] = fid_s[closer]
    return Raster(face_id=face_id.reshape(height, width), depth=depth.reshape(height, width))


def shade_faces(
    verts: np.ndarray, faces: np.ndarray, face_colors: np.ndarray, light_dir: np.ndarray,
    ambient: float = 0.35, diffuse: float = 0.65,
) -> np.ndarray:
    """Per-face Lambert shading (two-sided).

    Args:
        verts: (V, 3) camera-frame vertices; faces: (F, 3).
        face_colors: (F, 3) base colours in [0, 255].
        light_dir: (3,) direction from the surface towards the light (camera frame).
    Returns:
        (F, 3) float64 shaded colours in [0, 255].
    """
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    n = np.cross(v1 - v0, v2 - v0)
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    ld = np.asarray(light_dir, dtype=np.float64)
    ld = ld / np.linalg.norm(ld)
    lam = np.abs(n @ ld)
    return np.clip(face_colors * (ambient + diffuse * lam)[:, None], 0.0, 255.0)
