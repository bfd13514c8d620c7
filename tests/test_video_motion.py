"""Tracking, One-Euro smoothing and the per-track bookkeeping of videos.

Expected values are derived by hand from the One-Euro equations (Casiez et al. 2012) or from closed forms
(rotations about one axis reduce to the scalar filter on the angle).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from metahmr_cli.errors import ConfigError
from metahmr_cli.video.motion import TrackBook, VideoSettings, smoothing_settings
from metahmr_cli.video.smoothing import OneEuro, RotationOneEuro, SmoothingSettings, so3_exp, so3_log
from metahmr_cli.video.tracking import ByteTrackTracker, IoUTracker


# ---------------------------------------------------------------------------------------------- One-Euro
def test_one_euro_matches_the_equations_by_hand():
    s = SmoothingSettings(min_cutoff=1.0, beta=0.5, d_cutoff=2.0)
    f = OneEuro(s)
    dt = 0.1
    xs = [0.0, 1.0, 1.5, 1.2]
    out = [float(f(np.array(x), dt)) for x in xs]

    def alpha(fc: float) -> float:
        tau = 1 / (2 * math.pi * fc)
        return 1 / (1 + tau / dt)

    x_hat, dx_hat = 0.0, 0.0
    expect = [0.0]
    for x in xs[1:]:
        dx = (x - x_hat) / dt
        dx_hat = dx_hat + alpha(2.0) * (dx - dx_hat)
        fc = 1.0 + 0.5 * abs(dx_hat)
        x_hat = x_hat + alpha(fc) * (x - x_hat)
        expect.append(x_hat)
    np.testing.assert_allclose(out, expect, rtol=1e-12)


def test_one_euro_keeps_a_constant_and_reaches_a_step():
    f = OneEuro(SmoothingSettings(min_cutoff=1.0, beta=0.0))
    for _ in range(5):
        assert float(f(np.array(3.0), 1 / 30)) == 3.0
    vals = [float(f(np.array(4.0), 1 / 30)) for _ in range(300)]
    assert all(b >= a for a, b in zip(vals, vals[1:], strict=False))  # monotone approach, no overshoot
    assert 3.0 < vals[0] < 3.5 and abs(vals[-1] - 4.0) < 1e-6


def test_one_euro_lags_less_on_fast_motion_with_beta():
    """On a ramp the steady lag of a plain low-pass is speed * tau; beta > 0 must shrink it."""
    dt, speed = 1 / 30, 2.0
    lags = {}
    for beta in (0.0, 1.0):
        f = OneEuro(SmoothingSettings(min_cutoff=1.0, beta=beta))
        for i in range(300):
            y = float(f(np.array(speed * i * dt), dt))
        lags[beta] = speed * 299 * dt - y
    tau = 1 / (2 * math.pi)
    # a first-order discrete low-pass follows a ramp with lag speed * (tau / dt) * dt = speed * tau
    assert lags[0.0] == pytest.approx(speed * tau, rel=1e-3)
    assert lags[1.0] < 0.5 * lags[0.0]


def test_rotation_filter_about_one_axis_is_the_scalar_filter_on_the_angle():
    s = SmoothingSettings(min_cutoff=1.5, beta=0.3)
    rng = np.random.default_rng(0)
    axis = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    angles = np.cumsum(rng.normal(0.05, 0.1, 40))
    R0 = Rotation.from_rotvec([0.2, 0.1, -0.4]).as_matrix()   # a fixed frame the rotations are taken in
    rf, af = RotationOneEuro(s), OneEuro(s)
    for a in angles:
        R = R0 @ Rotation.from_rotvec(axis * a).as_matrix()
        out = rf(R, 1 / 30)
        ref = float(af(np.array(a), 1 / 30))
        np.testing.assert_allclose(out, R0 @ Rotation.from_rotvec(axis * ref).as_matrix(), atol=1e-9)
        np.testing.assert_allclose(out @ out.T, np.eye(3), atol=1e-9)


def test_so3_log_exp_round_trip_including_half_turns():
    w = Rotation.random(200, random_state=2).as_rotvec()
    w[:3] = [[np.pi, 0, 0], [0, np.pi - 1e-6, 0], [1e-9, 0, 0]]
    R = so3_exp(w)
    np.testing.assert_allclose(R, Rotation.from_rotvec(w).as_matrix(), atol=1e-9)
    back = so3_exp(so3_log(R))
    np.testing.assert_allclose(back, R, atol=1e-6)


# ---------------------------------------------------------------------------------------------- trackers
def _crossing(frames: int = 14):
    """Two equally sized people crossing (the right one slightly lower), plus one appearing at frame 3."""
    for f in range(frames):
        a = np.array([10 + 20 * f, 100, 110 + 20 * f, 400.0])
        b = np.array([400 - 20 * f, 110, 500 - 20 * f, 410.0])
        boxes = [a, b] + ([np.array([600, 50, 700, 350.0])] if f >= 3 else [])
        yield np.stack(boxes), np.full(len(boxes), 0.9)


@pytest.mark.parametrize("tracker", [IoUTracker, ByteTrackTracker])
def test_trackers_keep_ids_through_a_crossing_and_name_newcomers(tracker):
    if tracker is ByteTrackTracker:
        pytest.importorskip("ultralytics")
        pytest.importorskip("lap")
    t = tracker()
    seen = [t.update(b, s).tolist() for b, s in _crossing()]
    assert seen[0] == [1, 2]
    assert all(ids[:2] == [1, 2] for ids in seen)
    # the newcomer of frame 3: ByteTrack names it once confirmed (its second frame), the IoU tracker at once
    first = 4 if tracker is ByteTrackTracker else 3
    assert all(ids[2] == 3 for ids in seen[first:])
    assert all(ids[2] == -1 for ids in seen[3:first])


# ---------------------------------------------------------------------------------------------- track book
def test_settings_are_checked():
    with pytest.raises(ConfigError, match="tracker"):
        VideoSettings(tracker="sort").validate()
    with pytest.raises(ConfigError, match="smooth"):
        VideoSettings(smooth=-1).validate()
    with pytest.raises(ConfigError, match="export"):
        VideoSettings(export=("fbx",)).validate()
    v = VideoSettings(export="glb, bvh")  # type: ignore[arg-type]
    v.validate()
    assert v.export == ("glb", "bvh")
    assert smoothing_settings(0) is None
    assert smoothing_settings(2)["rotation"].min_cutoff == pytest.approx(smoothing_settings(1)["rotation"].min_cutoff
                                                                         / 2)


def test_warm_start_needs_the_previous_frame_and_an_overlapping_box():
    book = TrackBook(VideoSettings(tracker="iou", smooth=0, max_gap=0, reset_iou=0.5), fps=30)
    box = np.array([[100, 100, 200, 300.0]])

    def frame(i: int, b: np.ndarray) -> list:
        ids = book.assign(b, np.ones(len(b)))
        states = book.warm_states(ids, b, i)
        book.smooth_outputs(ids, b, np.tile(np.eye(3), (len(b), 24, 1, 1)), np.zeros((len(b), 3)),
                            np.zeros((len(b), 10)), i)
        book.store_warm(ids, [f"state{i}"] * len(b), i)
        return states

    assert frame(0, box) == [None]                  # a new track starts cold
    assert frame(1, box + 5) == ["state0"]          # next frame, box overlaps: warm
    assert frame(3, box + 10) == [None]             # frame 2 missed and max_gap 0: cold again
    assert frame(4, box + 10) == ["state3"]
    moved = box + np.array([70, 0, 70, 0.0])        # same track (IoU 0.18 >= tracker floor) but a jump
    book.tracker.min_iou = 0.1                      # let the tracker keep the id so the warm-start rule decides
    assert frame(5, moved) == [None]
    assert book.resets == 1


def test_outputs_are_smoothed_per_track_and_the_shape_is_held():
    book = TrackBook(VideoSettings(tracker="iou", smooth=1.0), fps=30)
    rng = np.random.default_rng(0)
    boxes = np.array([[100, 100, 200, 300.0], [400, 100, 500, 300.0]])
    raw_t, out_t, out_b = [], [], []
    for i in range(60):
        ids = book.assign(boxes, np.ones(2))
        assert ids.tolist() == [1, 2]
        transl = np.array([[0, 0, 5.0], [1.0, 0, 6.0]]) + rng.normal(0, 0.02, (2, 3))
        betas = np.stack([np.full(10, 0.5), np.full(10, -0.3)]) + rng.normal(0, 0.1, (2, 10))
        rot = np.stack([Rotation.from_rotvec(rng.normal(0, 0.05, (24, 3))).as_matrix() for _ in range(2)])
        r, t, b = book.smooth_outputs(ids, boxes, rot, transl, betas, i)
        raw_t.append(transl)
        out_t.append(t)
        out_b.append(b)
        np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape), atol=1e-9)
        if i == 0:
            np.testing.assert_allclose(t, transl)   # a track starts at its first value
    raw_t, out_t, out_b = map(np.asarray, (raw_t, out_t, out_b))
    # jitter (frame-to-frame change) of the translation drops, and each track keeps its own mean
    assert np.abs(np.diff(out_t, axis=0)).mean() < 0.5 * np.abs(np.diff(raw_t, axis=0)).mean()
    np.testing.assert_allclose(out_t[20:].mean(0), raw_t[20:].mean(0), atol=0.01)
    # the shape is the running mean of the track's betas: it changes less and less
    assert np.abs(out_b[-1] - out_b[-2]).max() < 0.01
    np.testing.assert_allclose(out_b[-1, 0], 0.5, atol=0.05)
    np.testing.assert_allclose(out_b[-1, 1], -0.3, atol=0.05)


def test_keypoint_smoothing_skips_unseen_points_and_seeds_new_ones():
    book = TrackBook(VideoSettings(tracker="iou", smooth=1.0, smooth_keypoints=True), fps=30)
    box = np.array([[100, 100, 200, 300.0]])
    kp = np.zeros((1, 49, 3))
    kp[0, 0] = [150, 120, 0.9]       # seen from the start
    ids = book.assign(box, np.ones(1))
    np.testing.assert_allclose(book.smooth_keypoints(ids, box, kp, 0), kp)
    kp2 = kp.copy()
    kp2[0, 0, :2] += 10              # moves: smoothed, so it moves less than 10 px
    kp2[0, 1] = [170, 200, 0.8]      # appears: raw value
    ids = book.assign(box, np.ones(1))
    out = book.smooth_keypoints(ids, box, kp2, 1)
    off = TrackBook(VideoSettings(tracker="iou", smooth=1.0), fps=30)  # the default leaves keypoints raw
    off_ids = off.assign(box, np.ones(1))
    off.smooth_keypoints(off_ids, box, kp, 0)
    np.testing.assert_array_equal(off.smooth_keypoints(off.assign(box, np.ones(1)), box, kp2, 1), kp2)
    assert 0 < out[0, 0, 0] - 150 < 10
    np.testing.assert_allclose(out[0, 1], kp2[0, 1])
    np.testing.assert_allclose(out[0, 2:], 0)   # unseen stays as given
