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


# ---------------------------------------------------------------------------------------------- strides, resets, seeds


def _shift(box: np.ndarray, dx: float) -> np.ndarray:
    return box + np.array([dx, 0.0, dx, 0.0])


def test_gaps_are_counted_in_processed_frames_with_a_stride():
    """With --video-stride 2 the processed frames are 0, 2, 4 ...: consecutive processed frames are no gap, and a
    track missed in one processed frame (frame 4) has a gap of one: max_gap 0 restarts it, max_gap 1 does not."""
    box = np.array([[100, 100, 200, 300.0]])
    for max_gap, expect in ((0, [None, "state0", None]), (1, [None, "state0", "state2"])):
        book = TrackBook(VideoSettings(tracker="iou", smooth=0, max_gap=max_gap), fps=30, stride=2)
        got = []
        for f in (0, 2, 6):
            if f == 6:
                book.assign(np.zeros((0, 4)), np.zeros(0))  # frame 4: nobody detected
            ids = book.assign(box, np.ones(1))
            got.append(book.warm_states(ids, box, f)[0])
            book.smooth_outputs(ids, box, np.tile(np.eye(3), (1, 24, 1, 1)), np.zeros((1, 3)), np.zeros((1, 10)), f)
            book.store_warm(ids, [f"state{f}"], f)
        assert got == expect, (max_gap, got)


def test_a_box_that_jumps_resets_the_warm_start_at_the_default_iou():
    """The default reset_iou is 0.3: a box overlapping the track's last box with IoU 0.38 keeps the warm start,
    one with IoU 0.23 restarts from the pretrained weights (IoU of two 100 x 200 boxes shifted by d: (100 - d) /
    (100 + d))."""
    book = TrackBook(VideoSettings(tracker="iou", smooth=0), fps=30)
    book.tracker.min_iou = 0.05  # the tracker keeps the id: the warm-start rule alone decides
    box = np.array([[100, 100, 200, 300.0]])
    boxes = [box, _shift(box, 45.0), _shift(box, 45.0 + 62.0)]
    assert abs((100 - 45) / (100 + 45) - 0.379) < 1e-3 and abs((100 - 62) / (100 + 62) - 0.235) < 1e-3
    got = []
    for f, b in enumerate(boxes):
        ids = book.assign(b, np.ones(1))
        assert ids.tolist() == [1]
        got.append(book.warm_states(ids, b, f)[0])
        book.smooth_outputs(ids, b, np.tile(np.eye(3), (1, 24, 1, 1)), np.zeros((1, 3)), np.zeros((1, 10)), f)
        book.store_warm(ids, [f"state{f}"], f)
    assert got == [None, "state0", None] and book.resets == 1


def test_resumed_filters_continue_with_the_speed_of_the_stored_frames():
    """Seeding a track from two stored (already smoothed) frames sets the filters' value to the last one and their
    speed to the finite difference of the two: an angle about z from 0.10 to 0.16 rad at 30 fps is 1.8 rad/s, a
    translation from 2.0 to 2.03 m is 0.9 m/s."""
    book = TrackBook(VideoSettings(tracker="iou", smooth=1.0), fps=30)
    box = np.array([[100, 100, 200, 300.0]])
    for f, (angle, z) in enumerate(((0.10, 2.0), (0.16, 2.03))):
        ids = book.assign(box, np.ones(1))
        rot = np.tile(Rotation.from_rotvec([0.0, 0.0, angle]).as_matrix(), (1, 24, 1, 1))
        book.seed_from_result(ids, box, rot, np.array([[0.0, 0.0, z]]), np.zeros((1, 10)), np.zeros((1, 49, 3)), f)
    t = book.tracks[1]
    np.testing.assert_allclose(t.rotation.R[0], Rotation.from_rotvec([0.0, 0.0, 0.16]).as_matrix(), atol=1e-12)
    np.testing.assert_allclose(t.rotation.w, np.tile([0.0, 0.0, 1.8], (24, 1)), atol=1e-9)
    np.testing.assert_allclose(t.translation.x, [0.0, 0.0, 2.03], atol=1e-12)
    np.testing.assert_allclose(t.translation.dx, [0.0, 0.0, 0.9], atol=1e-9)
    assert t.warm is None  # the adapted weights of a stored frame are not in the frame file


def test_iou_tracker_predicts_with_its_per_frame_velocity_across_a_missed_frame():
    """A box moving 40 px per frame is missed once. The tracker predicts it from its last box and its velocity per
    frame (0, 20, 30, 35 px after frames 0-3: v <- (v + step / gap) / 2): at frame 5 the prediction is 70 px on,
    so the box 80 px on keeps the id rather than a decoy 40 px on; the velocity after the gap is 37.5 px per
    frame, so at frame 6 the box 40 px on keeps it rather than a decoy 60 px on."""
    from metahmr_cli.video.tracking import IoUTracker

    t = IoUTracker()
    base = np.array([0.0, 100.0, 200.0, 300.0])
    for f in range(4):
        assert t.update(_shift(base, 40.0 * f)[None], np.ones(1)).tolist() == [1]
    t.update(np.zeros((0, 4)), np.zeros(0))  # frame 4: missed
    b3 = _shift(base, 120.0)
    ids5 = t.update(np.stack([_shift(b3, 80.0), _shift(b3, 40.0)]), np.ones(2))
    assert ids5[0] == 1
    b5 = _shift(b3, 80.0)
    ids6 = t.update(np.stack([_shift(b5, 40.0), _shift(b5, 60.0)]), np.ones(2))
    assert ids6[0] == 1 and ids6[1] != 1


@pytest.mark.parametrize("tracker", ["iou", "bytetrack"])
def test_detections_below_the_detectors_threshold_only_extend_tracks(tracker):
    """Tracker thresholds follow the detector's (det_conf 0.5 here): a person once seen confidently keeps their id
    through frames where their score is between det_conf / 2 and det_conf (imported keypoints are not filtered by
    det_conf), but such a detection never starts a track, and one below det_conf / 2 does not extend one."""
    from metahmr_cli.video.tracking import TrackerSettings, build_tracker

    if tracker == "bytetrack":
        pytest.importorskip("ultralytics")
        pytest.importorskip("lap")
    settings = TrackerSettings.for_detector(0.5, fps=30.0)
    assert (settings.track_high_thresh, settings.new_track_thresh, settings.track_low_thresh) == (0.5, 0.5, 0.25)
    t = build_tracker(tracker, settings)
    box = np.array([[100.0, 100.0, 200.0, 300.0]])
    other = np.array([[400.0, 100.0, 500.0, 300.0]])
    seen = []
    for f in range(6):
        score = 0.9 if f < 2 else 0.3  # frames 2-5: a weak but still matching detection
        b = _shift(box, 2.0 * f)
        seen.append(t.update(np.concatenate([b, other]), np.array([score, 0.3])).tolist())
    assert all(ids[0] == seen[1][0] != -1 for ids in seen[1:]), seen  # kept through the weak frames
    assert all(ids[1] == -1 for ids in seen), seen  # a weak detection alone never starts a track
    lost = t.update(_shift(box, 12.0), np.array([0.2]))  # below det_conf / 2: not matched
    assert lost.tolist() == [-1]
