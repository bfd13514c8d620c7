"""Offscreen overlays (pyrender/EGL) and MP4 output."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from metahmr_cli.render import MeshRenderer, RendererUnavailable, VideoWriter, person_colors
from metahmr_cli.render.video import count_video_frames


@pytest.fixture(scope="module")
def renderer():
    r = MeshRenderer(max_side=256)
    try:
        r.render_overlay(np.zeros((8, 8, 3), np.uint8), np.zeros((1, 3, 3)) + [0, 0, 1], np.array([[0, 1, 2]]),
                         np.eye(3))
    except RendererUnavailable as exc:
        pytest.skip(f"no offscreen OpenGL here: {exc}")
    yield r
    r.close()


def _sphere(center, radius):
    s = trimesh.creation.icosphere(subdivisions=3, radius=radius)
    return s.vertices + np.asarray(center), s.faces


def test_sphere_lands_where_the_pinhole_model_puts_it(renderer):
    # f = 200, principal point (80, 50); sphere of radius 0.3 m at (0.4, -0.2, 4): the silhouette centre is
    # (80 + 200*0.4/4, 50 - 200*0.2/4) = (100, 40) and its radius ~ f*r/sqrt(Z^2 - r^2) = 15.04 px.
    H, W = 100, 160
    K = np.array([[200.0, 0, 80], [0, 200, 50], [0, 0, 1]])
    v, f = _sphere((0.4, -0.2, 4.0), 0.3)
    img = np.full((H, W, 3), 7, np.uint8)
    out = renderer.render_overlay(img, v[None], f, K)
    assert out.shape == img.shape and out.dtype == np.uint8
    mask = (out != 7).any(-1)
    ys, xs = np.nonzero(mask)
    assert abs(xs.mean() + 0.5 - 100) < 1.0 and abs(ys.mean() + 0.5 - 40) < 1.0
    r_px = np.sqrt(mask.sum() / np.pi)
    assert abs(r_px - 200 * 0.3 / np.sqrt(16 - 0.09)) < 1.0
    # pixels away from the sphere keep the image
    assert (out[~mask] == 7).all()


def test_renders_from_several_threads_share_one_opengl_thread(renderer):
    """An OpenGL context is current in one thread only: calls from other threads run on the renderer's own."""
    import threading

    K = np.array([[200.0, 0, 80], [0, 200, 50], [0, 0, 1]])
    v, f = _sphere((0.1, 0.0, 4.0), 0.3)
    img = np.zeros((100, 160, 3), np.uint8)
    here = renderer.render_overlay(img, v[None], f, K)
    there: list[np.ndarray] = []
    errors: list[BaseException] = []

    def draw() -> None:
        try:
            there.append(renderer.render_overlay(img, v[None], f, K))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=draw) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(there) == 3 and all(np.array_equal(x, here) for x in there)
    assert (here != 0).any()
    assert renderer._gl_thread not in (None, threading.main_thread().ident)


def test_people_get_their_own_colours_and_occlude(renderer):
    K = np.array([[150.0, 0, 64], [0, 150, 48], [0, 0, 1]])
    front, f = _sphere((0.0, 0.0, 3.0), 0.4)
    back, _ = _sphere((0.0, 0.0, 6.0), 1.5)  # larger and behind: visible only around the front sphere
    out = renderer.render_overlay(np.zeros((96, 128, 3), np.uint8), np.stack([front, back]), f, K)
    centre = out[48, 64].astype(float)
    edge = out[48, 64 + 32].astype(float)  # outside the front sphere (r = 20 px), inside the back one (38 px)
    c0, c1 = person_colors(2)
    # hue of the centre pixel follows person 0's colour, the ring person 1's
    assert np.argmax(centre) == int(np.argmax(c0)) and np.argmax(edge) == int(np.argmax(c1))


def test_no_people_returns_image_and_large_images_are_reduced(renderer):
    img = np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8)
    out = renderer.render_overlay(img, np.zeros((0, 10, 3)), np.zeros((0, 3), int), np.eye(3))
    np.testing.assert_array_equal(out, img)
    big = np.zeros((300, 600, 3), np.uint8)  # max_side 256 -> 128 x 256
    K = np.array([[500.0, 0, 300], [0, 500, 150], [0, 0, 1]])
    v, f = _sphere((0, 0, 5.0), 0.5)
    out = renderer.render_overlay(big, v[None], f, K)
    assert out.shape == (128, 256, 3)
    ys, xs = np.nonzero(out.any(-1))
    assert abs(xs.mean() + 0.5 - 128) < 1.0 and abs(ys.mean() + 0.5 - 64) < 1.0


def test_side_view_turns_the_scene(renderer):
    # Two spheres side by side in x at the same depth; seen from the side they line up in depth, so their
    # silhouettes overlap around the image centre column.
    K = np.array([[100.0, 0, 64], [0, 100, 48], [0, 0, 1]])
    a, f = _sphere((-1.0, 0, 5.0), 0.3)
    b, _ = _sphere((1.0, 0, 5.0), 0.3)
    side = renderer.render_side_view((96, 128), np.stack([a, b]), f, K)
    assert side.shape == (96, 128, 3)
    ys, xs = np.nonzero((side != 255).any(-1))
    assert abs(xs.mean() + 0.5 - 64) < 2.0


def test_unavailable_renderer_raises_clear_error(monkeypatch):
    import metahmr_cli.render.overlay as overlay

    def broken():
        raise overlay.RendererUnavailable("no EGL")

    monkeypatch.setattr(overlay, "_import_pyrender", broken)
    r = MeshRenderer()
    v, f = _sphere((0, 0, 3.0), 0.3)
    for _ in range(2):  # the failure is remembered
        with pytest.raises(RendererUnavailable, match="no EGL"):
            r.render_overlay(np.zeros((8, 8, 3), np.uint8), v[None], f, np.eye(3))


def test_video_writer_frames_odd_size_and_abort(tmp_path):
    frames = [np.full((31, 45, 3), i * 20, np.uint8) for i in range(6)]
    with VideoWriter(tmp_path / "v.mp4", fps=7.0) as vw:
        for fr in frames:
            vw.write(fr)
    assert count_video_frames(tmp_path / "v.mp4") == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]
    with pytest.raises(RuntimeError), VideoWriter(tmp_path / "w.mp4", fps=5) as vw:
        vw.write(frames[0])
        raise RuntimeError("stop")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]
    with pytest.raises(ValueError, match="differs"):
        vw = VideoWriter(tmp_path / "x.mp4", fps=5)
        vw.write(frames[0])
        try:
            vw.write(np.zeros((32, 44, 3), np.uint8))
        finally:
            vw.abort()
    with pytest.raises(ValueError, match="fps"):
        VideoWriter(tmp_path / "y.mp4", fps=0)


def test_side_view_keeps_people_near_the_camera_in_the_frame(renderer):
    """A tall box standing low in the image (its bottom near the lower edge, as the feet of a person close to the
    camera) and another one 2 m to its right: turned to the side, the right one comes 2 m closer and its bottom
    used to leave the frame. Every part stays inside now, with the margin."""
    import trimesh

    K = np.array([[100.0, 0, 64], [0, 100, 48], [0, 0, 1]])
    box = trimesh.creation.box(extents=(0.4, 1.7, 0.3))
    a = box.vertices + [-1.0, 0.7, 4.0]
    b = box.vertices + [1.0, 0.7, 4.0]
    side = renderer.render_side_view((96, 128), np.stack([a, b]), box.faces, K)
    ys, xs = np.nonzero((side != 255).any(-1))
    assert ys.max() < 96 - 2 and ys.min() > 1 and xs.min() > 1 and xs.max() < 128 - 2
    assert ys.max() - ys.min() > 20  # still a figure, not a dot
