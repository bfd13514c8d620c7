"""The estimator at its boundary: bad numbers are clear errors (never non-finite bodies), 16-bit images keep their
range, and one estimator serves several threads with the results of sequential calls."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from test_pipeline_support import (  # noqa: F401  (fixtures)
    EXAMPLES,
    FixedDetector,
    TemplateKeypoints,
    tiny_checkpoint_fixture,
)

import metahmr
from metahmr_cli.estimator import check_image
from metahmr_cli.io.sources import read_image
from metahmr_cli.tto import TTOConfig

BOX = [65.0, 55.0, 460.0, 340.0]


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return read_image(EXAMPLES / "messi5.jpg")


@pytest.fixture(scope="module")
def estimator(standin_dir, tiny_checkpoint):
    cfg = metahmr.ProcessConfig(body=str(standin_dir), checkpoint=tiny_checkpoint, device="cpu",
                                tto=TTOConfig(max_steps=2))
    return metahmr.Estimator(cfg, detector=FixedDetector(), keypoints=TemplateKeypoints()).setup()


def _keypoints(box=BOX) -> np.ndarray:
    return TemplateKeypoints()(None, np.asarray([box], np.float32), path=None, frame=None)


def test_the_error_classes_are_exported():
    from metahmr_cli import errors

    for name in ("MetaHMRError", "InputError", "ConfigError", "AssetNotFoundError", "CheckpointError",
                 "BodyModelError", "DatasetError"):
        assert getattr(metahmr, name) is getattr(errors, name)
        assert name in dir(metahmr)
    assert issubclass(metahmr.InputError, metahmr.MetaHMRError)


@pytest.mark.parametrize("focal", [0, 0.0, float("nan"), -500.0, float("inf"), 1e30, "500", True])
def test_bad_focal_lengths_are_input_errors(estimator, photo, focal):
    with pytest.raises(metahmr.InputError, match="focal"):
        estimator(photo, focal=focal)


@pytest.mark.parametrize(("boxes", "match"), [
    ([1.0, 2.0, 3.0], r"\(N, 4\)"),
    ([[1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0]], r"\(N, 4\)"),  # 10 numbers: not 2.5 boxes
    (np.zeros((2, 2, 4)), r"\(N, 4\)"),
    ([[100.0, 50.0, 40.0, 300.0]], r"x2 > x1"),
    ([[10.0, 10.0, float("nan"), 300.0]], r"boxes\[0\]"),
    ([[1e30, 10.0, 2e30, 300.0]], r"boxes\[0\]"),
    ([["a", "b", "c", "d"]], "numbers"),
])
def test_bad_boxes_are_input_errors(estimator, photo, boxes, match):
    with pytest.raises(metahmr.InputError, match=match):
        estimator(photo, boxes=boxes)


def test_bad_scores_and_keypoints_without_boxes_are_input_errors(estimator, photo):
    with pytest.raises(metahmr.InputError, match="one value per box"):
        estimator(photo, boxes=[BOX], scores=[0.5, 0.5])
    with pytest.raises(metahmr.InputError, match=r"\[0, 1\]"):
        estimator(photo, boxes=[BOX], scores=[float("nan")])
    with pytest.raises(metahmr.InputError, match="without boxes"):
        estimator(photo, keypoints=_keypoints())


@pytest.mark.parametrize(("edit", "match"), [
    (lambda k: k.__setitem__((0, 30, 0), 1e30), "far outside"),
    (lambda k: k.__setitem__((0, 30, 1), float("nan")), "not finite"),
    (lambda k: k.__setitem__((0, 30, 0), float("inf")), "not finite"),
    (lambda k: k.__setitem__((0, 30, 2), -1.0), "confidence"),
    (lambda k: k.__setitem__((0, 30, 2), 2.0), "confidence"),
])
def test_bad_keypoints_are_input_errors(estimator, photo, edit, match):
    kp = _keypoints()
    edit(kp)
    with pytest.raises(metahmr.InputError, match=match):
        estimator(photo, boxes=[BOX], keypoints=kp)
    with pytest.raises(metahmr.InputError, match=r"shape \(1, 49, 3\)"):
        estimator(photo, boxes=[BOX], keypoints=_keypoints()[:, :17])


def test_far_keypoints_of_a_missing_joint_are_ignored(estimator, photo):
    """A keypoint with confidence 0 is missing: its coordinates do not matter (here 1e30, as some tools write)."""
    kp = _keypoints()
    ref = estimator(photo, boxes=[BOX], keypoints=kp)
    kp[0, 30] = [1e30, -1e30, 0.0]
    kp_ref = _keypoints()
    kp_ref[0, 30] = [0.0, 0.0, 0.0]
    a, b = estimator(photo, boxes=[BOX], keypoints=kp), estimator(photo, boxes=[BOX], keypoints=kp_ref)
    np.testing.assert_array_equal(a.vertices, b.vertices)
    assert np.isfinite(a.vertices).all() and not np.array_equal(a.vertices, ref.vertices)


def test_given_keypoints_follow_their_boxes_when_the_scores_reorder_them(estimator, photo):
    """Boxes are sorted by decreasing score; the keypoints given with them are sorted with them."""
    small = [300.0, 100.0, 420.0, 330.0]
    kp = np.concatenate([_keypoints(small), _keypoints(BOX)])
    people = estimator(photo, boxes=[small, BOX], scores=[0.4, 0.9], keypoints=kp)
    np.testing.assert_allclose(people.boxes, [BOX, small])
    np.testing.assert_allclose(people.keypoints2d, kp[[1, 0]])


def test_uint16_images_are_scaled_not_clipped(estimator, photo):
    wide = photo.astype(np.uint16) * 257  # the same picture in 16 bits
    np.testing.assert_array_equal(check_image(wide), photo)
    assert check_image(np.full((4, 4, 3), 32768, np.uint16))[0, 0, 0] == 128
    a, b = estimator(photo), estimator(wide)
    assert len(a) == len(b) == 1
    np.testing.assert_array_equal(a.vertices, b.vertices)
    with pytest.raises(metahmr.InputError, match=r"values -5\.\.300, outside 0\.\.255"):
        estimator(np.array([[[-5, 300, 0]] * 4] * 4, np.int32))


def test_non_finite_results_are_never_returned(estimator, photo, monkeypatch):
    import metahmr_cli.tto as tto

    real = tto.run_tto

    def broken(*args, **kwargs):
        res = real(*args, **kwargs)
        res.vertices[0, 0, 0] = float("nan")
        return res

    monkeypatch.setattr(tto, "run_tto", broken)
    with pytest.raises(metahmr.InputError, match="person 0 got non-finite vertices"):
        estimator(photo)


@pytest.mark.parametrize(("content", "match"), [
    ({"messi5.jpg": [{"keypoints": [1e308, 1e308, 0.9] * 17}]}, "keypoint 0 lies at"),
    ({"messi5.jpg": [{"keypoints": [100.0, 100.0, -0.5] * 17}]}, "keypoint 0 has confidence -0.5"),
    ({"messi5.jpg": [{"keypoints": [100.0, 100.0, 0.5] * 16 + [100.0, 100.0, 1.5]}]},
     "keypoint 16 has confidence 1.5"),
    ('{"messi5.jpg": [{"keypoints": [' + ", ".join(["Infinity, 1, 0.5"] * 17) + "]}]}", "not finite"),
    ('{"messi5.jpg": [{"keypoints": [' + ", ".join(["1e999, 1, 0.5"] * 17) + "]}]}", "not finite"),
])
def test_keypoint_files_with_bad_numbers_say_what_is_wrong(tmp_path, standin_dir, tiny_checkpoint, content, match):
    from metahmr_cli.pipeline import Pipeline

    path = tmp_path / "kp.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    cfg = metahmr.ProcessConfig(inputs=[str(EXAMPLES / "messi5.jpg")], out=tmp_path / "out", body=str(standin_dir),
                                checkpoint=tiny_checkpoint, device="cpu", render=False, keypoints="coco-json",
                                keypoints_json=path)
    with pytest.raises(metahmr.InputError, match=rf"kp.json \['messi5.jpg'\] person 0.*{match}"):
        Pipeline(cfg, progress=False).run()


def test_openpose_files_with_bad_numbers_say_what_is_wrong(tmp_path):
    from metahmr_cli.keypoints import load_keypoints

    (tmp_path / "messi5_keypoints.json").write_text(json.dumps(
        {"people": [{"pose_keypoints_2d": [10.0, 10.0, 0.5] * 24 + [10.0, 10.0, -3.0]}]}))
    with pytest.raises(metahmr.InputError, match="messi5_keypoints.json person 0: keypoint 24 has confidence -3.0"):
        load_keypoints(tmp_path)


# ---------------------------------------------------------------------------------------------- threads


def test_one_estimator_serves_several_threads_with_the_sequential_results(standin_dir, tiny_checkpoint, photo):
    """N threads x M calls on one estimator (a server's thread pool) give exactly the results of the same calls
    made one after another, and the estimator still works alone afterwards."""
    cfg = metahmr.ProcessConfig(body=str(standin_dir), checkpoint=tiny_checkpoint, device="cpu",
                                tto=TTOConfig(max_steps=3))
    est = metahmr.Estimator(cfg, detector=FixedDetector(), keypoints=TemplateKeypoints())
    # different people per call: boxes of several sizes, some calls with two people and given keypoints
    calls = []
    for k in range(6):
        box = [60.0 + 9 * k, 50.0 + 4 * k, 400.0 + 7 * k, 340.0 - 3 * k]
        if k % 3 == 2:
            two = [box, [300.0, 80.0, 440.0, 320.0]]
            calls.append({"boxes": two, "keypoints": np.concatenate([_keypoints(b) for b in two])})
        else:
            calls.append({"boxes": [box], "focal": 700.0 + 50 * k})
    sequential = [est(photo, **c) for c in calls]
    n_threads, rounds = 3, 2
    results: dict[tuple[int, int, int], metahmr.People] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(n_threads)

    def worker(t: int) -> None:
        try:
            start.wait()
            for r in range(rounds):
                for i in range(t, len(calls), n_threads):
                    results[(t, r, i)] = est(photo, **calls[i])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert len(results) == rounds * len(calls)
    for (_, _, i), people in results.items():
        for key in ("vertices", "joints3d", "global_orient", "body_pose", "betas", "transl", "tto_steps"):
            np.testing.assert_array_equal(getattr(people, key), getattr(sequential[i], key), err_msg=key)
    after = est(photo, **calls[0])  # still sound for a single caller
    np.testing.assert_array_equal(after.vertices, sequential[0].vertices)
