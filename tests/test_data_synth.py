"""The synthetic dataset writer and its small rasteriser."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from metahmr_cli.data.check import check_npz
from metahmr_cli.data.raster import rasterize
from metahmr_cli.data.synth import BODY_JOINT_LIMITS, SynthConfig, write_synth_dataset
from metahmr_cli.errors import InputError


def test_rasterize_single_triangle_matches_pixel_centres() -> None:
    # a triangle in the plane z = 2 with f = 100, c = (0, 0): pixel (x, y) <-> point (x/50, y/50, 2)
    tri2d = np.array([[5.2, 3.1], [30.7, 8.4], [12.3, 25.9]])
    verts = np.concatenate([tri2d * 2 / 100, np.full((3, 1), 2.0)], axis=1)
    ras = rasterize(verts, np.array([[0, 1, 2]]), 100.0, 0.0, 0.0, 40, 32)

    def inside(px: float, py: float) -> bool:  # same-side test with the three edges
        signs = []
        for k in range(3):
            a, b = tri2d[k], tri2d[(k + 1) % 3]
            signs.append((b[0] - a[0]) * (py - a[1]) - (b[1] - a[1]) * (px - a[0]))
        return all(s >= 0 for s in signs) or all(s <= 0 for s in signs)

    expected = np.array([[inside(x, y) for x in range(40)] for y in range(32)])
    np.testing.assert_array_equal(ras.mask, expected)
    np.testing.assert_allclose(ras.depth[ras.mask], 2.0)


def test_rasterize_nearest_face_wins() -> None:
    sq = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)
    near = np.concatenate([sq * 0.5, np.full((4, 1), 2.0)], 1)  # small square in front
    far = np.concatenate([sq * 2.0, np.full((4, 1), 4.0)], 1)
    verts = np.concatenate([far, near])
    faces = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    ras = rasterize(verts, faces, 20.0, 20.0, 20.0, 41, 41)
    assert set(np.unique(ras.face_id[20, 16:25])) <= {2, 3}  # centre: the near square
    assert ras.depth[20, 20] == pytest.approx(2.0)
    assert set(np.unique(ras.face_id[20, 11:14])) <= {0, 1}  # beside it: the far square
    assert ras.depth[20, 12] == pytest.approx(4.0)


def test_joint_limits_mirror_left_right() -> None:
    lim = BODY_JOINT_LIMITS  # joints 1..23 -> rows 0..22
    left, right = 16 - 1, 17 - 1  # shoulders
    np.testing.assert_allclose(lim[right, 0], lim[left, 0])
    np.testing.assert_allclose(lim[right, 1], -lim[left, 1][::-1])
    np.testing.assert_allclose(lim[right, 2], -lim[left, 2][::-1])


def test_synth_dataset_passes_check(synth_dataset) -> None:
    for split, n in (("train", 24), ("test", 8)):
        rep = check_npz(synth_dataset / f"synth_{split}.npz", all_images=True)
        assert rep.ok, rep.lines()
        assert rep.n == n and rep.images_checked == n and rep.images_missing == 0
        assert not rep.warnings, rep.lines()
    meta = json.loads((synth_dataset / "dataset.json").read_text())
    assert meta["body"] == "standin" and "SMPL" not in meta["body"]
    assert meta["n_train"] == 24 and meta["n_test"] == 8
    z = np.load(synth_dataset / "synth_train.npz")
    # S is pelvis(mid-hip)-relative, in metres
    np.testing.assert_allclose(0.5 * (z["S"][:, 2, :3] + z["S"][:, 3, :3]), 0, atol=1e-5)
    assert np.all(np.abs(z["S"][..., :3]) < 1.5)
    assert np.all(z["transl"][:, 2] >= 2.5 * 0.99) and np.all(z["transl"][:, 2] < 30)


def test_keypoints_land_on_rendered_body(tmp_path, standin_dir) -> None:
    bg = np.array([255, 0, 255])
    cfg = SynthConfig(n=12, image_size=(160, 160), test_fraction=0.0, seed=4, background="solid:255,0,255")
    res = write_synth_dataset(tmp_path, cfg, body=standin_dir)
    z = np.load(res.train_npz)
    # joints inside the body (ankles ... head(H36M)); the face landmarks and the head top lie on the surface
    # and may round to a pixel just beside a small head, so they are checked with a 1-pixel neighbourhood
    interior = set(range(13)) | set(range(14, 19))
    on_body, n_interior, total, in_frame = 0, 0, 0, 0
    for i in range(len(z["imgname"])):
        img = cv2.cvtColor(cv2.imread(str(tmp_path / z["imgname"][i])), cv2.COLOR_BGR2RGB).astype(int)
        body = np.abs(img - bg).sum(-1) > 30
        for j, (x, y, v) in enumerate(z["part"][i]):
            total += 1
            if v <= 0:
                continue
            in_frame += 1
            xi, yi = int(round(x)), int(round(y))
            if j in interior:
                n_interior += 1
                on_body += bool(body[yi, xi])
            assert body[max(yi - 1, 0) : yi + 2, max(xi - 1, 0) : xi + 2].any(), (i, j, x, y)
    assert in_frame >= 0.95 * total
    assert on_body >= 0.98 * n_interior


def test_synth_is_deterministic_and_refuses_overwrite(tmp_path, standin_dir) -> None:
    cfg = SynthConfig(n=3, image_size=(64, 64), test_fraction=0.0, seed=9)
    a = write_synth_dataset(tmp_path / "a", cfg, body=standin_dir)
    b = write_synth_dataset(tmp_path / "b", SynthConfig(n=3, image_size=(64, 64), test_fraction=0.0, seed=9,
                                                         batch_size=2), body=standin_dir)
    za, zb = np.load(a.train_npz), np.load(b.train_npz)
    for k in ("part", "pose", "shape", "S", "focal_length"):
        np.testing.assert_allclose(za[k], zb[k], atol=1e-5)
    with pytest.raises(InputError, match="already holds"):
        write_synth_dataset(tmp_path / "a", cfg, body=standin_dir)
