"""Keypoints: the 49-joint mapping, matching, imports and the estimator backends."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")

from metahmr_cli.errors import AssetNotFoundError, InputError, MetaHMRError  # noqa: E402
from metahmr_cli.keypoints import (  # noqa: E402
    KeypointEstimator,
    boxes_from_keypoints,
    build_keypoint_estimator,
    load_keypoints,
    mapping_table,
    mapping_table_markdown,
    match_keypoints_to_boxes,
    to_49,
)

# ------------------------------------------------------------------------------------------- mapping

# Written by hand from the COCO keypoint order (nose, l/r eye, l/r ear, l/r shoulder, l/r elbow, l/r wrist,
# l/r hip, l/r knee, l/r ankle) and the 49-joint order (BODY_25, then the 24 GT joints).
COCO_TO_49_BY_HAND: dict[int, int | tuple[int, int] | None] = {
    0: 0,  # OP Nose
    1: (5, 6),  # OP Neck = mid shoulders
    2: 6, 3: 8, 4: 10,  # OP RShoulder, RElbow, RWrist
    5: 5, 6: 7, 7: 9,  # OP LShoulder, LElbow, LWrist
    8: (11, 12),  # OP MidHip = mid hips
    9: 12, 10: 14, 11: 16,  # OP RHip, RKnee, RAnkle
    12: 11, 13: 13, 14: 15,  # OP LHip, LKnee, LAnkle
    15: 2, 16: 1, 17: 4, 18: 3,  # OP REye, LEye, REar, LEar
    19: None, 20: None, 21: None, 22: None, 23: None, 24: None,  # feet: not in COCO
    25: 16, 26: 14, 27: 12,  # Right Ankle, Right Knee, Right Hip
    28: 11, 29: 13, 30: 15,  # Left Hip, Left Knee, Left Ankle
    31: 10, 32: 8, 33: 6,  # Right Wrist, Right Elbow, Right Shoulder
    34: 5, 35: 7, 36: 9,  # Left Shoulder, Left Elbow, Left Wrist
    37: None, 38: None, 39: None, 40: None, 41: None, 42: None, 43: None,  # LSP neck/head top, MPII, H36M
    44: 0, 45: 1, 46: 2, 47: 3, 48: 4,  # Nose, Left Eye, Right Eye, Left Ear, Right Ear
}


# Written by hand from the OpenPose COCO-18 order (nose, neck, r shoulder/elbow/wrist, l shoulder/elbow/wrist,
# r hip/knee/ankle, l hip/knee/ankle, r/l eye, r/l ear): the neck is a keypoint of its own here.
OPENPOSE18_TO_49_BY_HAND: dict[int, int | tuple[int, int] | None] = {
    0: 0, 1: 1,  # OP Nose, OP Neck (the detected neck, not mid shoulders)
    2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7,  # OP R/L shoulder, elbow, wrist
    8: (8, 11),  # OP MidHip = mid hips
    9: 8, 10: 9, 11: 10, 12: 11, 13: 12, 14: 13,  # OP RHip, RKnee, RAnkle, LHip, LKnee, LAnkle
    15: 14, 16: 15, 17: 16, 18: 17,  # OP REye, LEye, REar, LEar
    19: None, 20: None, 21: None, 22: None, 23: None, 24: None,  # feet
    25: 10, 26: 9, 27: 8, 28: 11, 29: 12, 30: 13,  # Right Ankle, Knee, Hip, Left Hip, Knee, Ankle
    31: 4, 32: 3, 33: 2, 34: 5, 35: 6, 36: 7,  # Right Wrist, Elbow, Shoulder, Left Shoulder, Elbow, Wrist
    37: None, 38: None, 39: None, 40: None, 41: None, 42: None, 43: None,  # LSP neck/head top, MPII, H36M
    44: 0, 45: 15, 46: 14, 47: 17, 48: 16,  # Nose, Left Eye, Right Eye, Left Ear, Right Ear
}


def _assert_slots(out: np.ndarray, kp: np.ndarray, table: dict[int, int | tuple[int, int] | None]) -> None:
    """Each 49-joint slot is empty, a copy of one keypoint, or the midpoint of two (confidence: the smaller)."""
    assert sorted(table) == list(range(49))
    for slot, src in table.items():
        if src is None:
            np.testing.assert_array_equal(out[:, slot], 0.0, err_msg=f"slot {slot}")
        elif isinstance(src, int):
            np.testing.assert_allclose(out[:, slot], kp[:, src], rtol=1e-6, err_msg=f"slot {slot}")
        else:
            a, b = kp[:, src[0]], kp[:, src[1]]
            np.testing.assert_allclose(out[:, slot, :2], (a[:, :2] + b[:, :2]) / 2, rtol=1e-6)
            np.testing.assert_allclose(out[:, slot, 2], np.minimum(a[:, 2], b[:, 2]), rtol=1e-6)


def _distinct_keypoints(n: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kp = np.zeros((n, k, 3), np.float32)
    kp[..., 0] = rng.uniform(10, 500, (n, k))
    kp[..., 1] = rng.uniform(10, 400, (n, k))
    kp[..., 2] = rng.uniform(0.2, 1.0, (n, k))
    return kp


def test_coco_to_49_slot_by_slot() -> None:
    kp = _distinct_keypoints(2, 17)
    out = to_49(kp, "coco17")
    assert out.shape == (2, 49, 3) and out.dtype == np.float32
    _assert_slots(out, kp, COCO_TO_49_BY_HAND)


def test_openpose18_to_49_slot_by_slot() -> None:
    kp = _distinct_keypoints(2, 18, seed=1)
    # the detected neck is far from the shoulders' midpoint, so a derived neck would not pass
    kp[:, 1, :2] = (kp[:, 2, :2] + kp[:, 5, :2]) / 2 + np.array([0.0, 60.0], np.float32)
    out = to_49(kp, "openpose18")
    assert out.shape == (2, 49, 3)
    _assert_slots(out, kp, OPENPOSE18_TO_49_BY_HAND)


def test_slot_groups_and_unbatched_input() -> None:
    kp = _distinct_keypoints(1, 17)
    gt_only = to_49(kp, "coco", slots="gt")
    op_only = to_49(kp, "coco17", slots="openpose")
    both = to_49(kp[0], "COCO17")
    assert both.shape == (49, 3)
    np.testing.assert_array_equal(gt_only[0, :25], 0.0)
    np.testing.assert_array_equal(op_only[0, 25:], 0.0)
    np.testing.assert_allclose(gt_only[0, 25:], both[25:])
    np.testing.assert_allclose(op_only[0, :25], both[:25])
    np.testing.assert_array_equal(gt_only[0] + op_only[0], both)  # the two groups partition the slots


def test_missing_evidence_and_nan() -> None:
    kp = _distinct_keypoints(1, 17)
    kp[0, 5, 2] = 0.0  # left shoulder unseen -> neck (mid shoulders) has no evidence
    kp[0, 0, 0] = np.nan  # nose position NaN -> no evidence
    kp[0, 9, 2] = 1.7  # confidence clipped to 1
    out = to_49(kp, "coco17")
    np.testing.assert_array_equal(out[0, 1], 0.0)
    np.testing.assert_array_equal(out[0, 5], 0.0)
    np.testing.assert_array_equal(out[0, 0], 0.0)
    np.testing.assert_array_equal(out[0, 44], 0.0)
    assert out[0, 7, 2] == 1.0 and out[0, 36, 2] == 1.0
    with pytest.raises(ValueError, match="coco17"):
        to_49(np.zeros((1, 18, 3)), "coco17")
    with pytest.raises(ValueError, match="known formats"):
        to_49(kp, "posenet")


def test_body25_fills_openpose_slots_verbatim() -> None:
    kp = _distinct_keypoints(3, 25)
    out = to_49(kp, "body25")
    np.testing.assert_allclose(out[:, :25], kp, rtol=1e-6)
    # GT slots from BODY_25 (by hand): R ankle 11, R knee 10, R hip 9, L hip 12, nose 0, right ear 17
    for slot, src in {25: 11, 26: 10, 27: 9, 28: 12, 33: 2, 36: 7, 44: 0, 48: 17}.items():
        np.testing.assert_allclose(out[:, slot], kp[:, src], rtol=1e-6)


def test_mediapipe_halpe_wholebody_spot_checks() -> None:
    mp = _distinct_keypoints(1, 33)
    out = to_49(mp, "mediapipe33")
    # BlazePose: 11/12 shoulders, 23/24 hips, 29/30 heels, 31/32 foot index (big toe), 7/8 ears
    np.testing.assert_allclose(out[0, 19], mp[0, 31], rtol=1e-6)  # OP LBigToe
    np.testing.assert_allclose(out[0, 24], mp[0, 30], rtol=1e-6)  # OP RHeel
    np.testing.assert_allclose(out[0, 2], mp[0, 12], rtol=1e-6)  # OP RShoulder
    np.testing.assert_allclose(out[0, 1, :2], (mp[0, 11, :2] + mp[0, 12, :2]) / 2, rtol=1e-6)
    np.testing.assert_allclose(out[0, 47], mp[0, 7], rtol=1e-6)  # Left Ear
    np.testing.assert_array_equal(out[0, 20], 0.0)  # no small toe in BlazePose
    halpe = _distinct_keypoints(1, 26)
    out = to_49(halpe, "halpe26")
    np.testing.assert_allclose(out[0, 38], halpe[0, 17], rtol=1e-6)  # head top
    np.testing.assert_allclose(out[0, 1], halpe[0, 18], rtol=1e-6)  # neck given, not derived
    np.testing.assert_allclose(out[0, 8], halpe[0, 19], rtol=1e-6)  # mid hip given
    wb = _distinct_keypoints(1, 133)
    out = to_49(wb, "coco_wholebody")
    np.testing.assert_allclose(out[0, 22], wb[0, 20], rtol=1e-6)  # right big toe = wholebody 20


def test_mapping_table_data() -> None:
    rows = mapping_table()
    assert len(rows) == 49
    assert rows[1]["coco17"].startswith("mid(5 lshoulder, 6 rshoulder")
    assert rows[37]["coco17"] == ""
    md = mapping_table_markdown()
    assert md.splitlines()[0].startswith("| slot | joint | coco17")
    assert len(md.splitlines()) == 51


# ------------------------------------------------------------------------------------------- matching


def test_boxes_from_keypoints_hand_values() -> None:
    kp = np.zeros((2, 4, 3), np.float32)
    kp[0] = [[10, 20, 0.9], [30, 60, 0.8], [500, 500, 0.01], [20, 40, 0.5]]  # low-confidence point ignored
    kp[1, 0] = [5, 5, 1.0]  # a single point: no box
    boxes, valid = boxes_from_keypoints(kp)
    np.testing.assert_allclose(boxes[0], [10, 20, 30, 60])
    assert valid.tolist() == [True, False]
    padded, _ = boxes_from_keypoints(kp, pad=0.1)
    np.testing.assert_allclose(padded[0], [8, 16, 32, 64])


def test_match_keypoints_to_boxes() -> None:
    def person(x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
        return np.array([[x1, y1, 1], [x2, y2, 1], [(x1 + x2) / 2, (y1 + y2) / 2, 1]], np.float32)

    kp = np.stack([person(200, 10, 260, 150), person(10, 10, 70, 150)])
    boxes = np.array([[5, 5, 75, 155], [500, 5, 560, 155], [195, 5, 265, 155]])
    matched, index = match_keypoints_to_boxes(kp, boxes)
    assert index.tolist() == [1, -1, 0]
    np.testing.assert_array_equal(matched[0], kp[1])
    np.testing.assert_array_equal(matched[1], 0.0)
    np.testing.assert_array_equal(matched[2], kp[0])
    empty, idx = match_keypoints_to_boxes(np.zeros((0, 3, 3)), boxes)
    assert empty.shape == (3, 3, 3) and (idx == -1).all()


# ------------------------------------------------------------------------------------------- imports


class FakeEstimator:
    """Deterministic keypoints spread inside each box (an in-process stand-in)."""

    def __init__(self, k: int, fmt: str) -> None:
        self.k, self.format = k, fmt

    def estimate(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        t = np.linspace(0.0, 1.0, self.k)
        out = np.zeros((len(boxes), self.k, 3), np.float32)
        for i, (x1, y1, x2, y2) in enumerate(boxes):
            out[i, :, 0] = x1 + (x2 - x1) * t
            out[i, :, 1] = y1 + (y2 - y1) * (1 - t) ** 2
            out[i, :, 2] = 0.5 + 0.5 * np.abs(np.sin(3 * t + x1 / 100))
        return out


BOXES = np.array([[10, 20, 110, 220], [300, 40, 380, 260], [150, 30, 240, 250]], np.float32)


def test_openpose_folder_import_reproduces_arrays(tmp_path: Path) -> None:
    est = FakeEstimator(25, "body25")
    image = np.zeros((300, 400, 3), np.uint8)
    kp = est.estimate(image, BOXES)
    folder = tmp_path / "op"
    folder.mkdir()
    people = [{"person_id": [-1], "pose_keypoints_2d": p.reshape(-1).tolist(), "face_keypoints_2d": []} for p in kp]
    (folder / "frame_a_keypoints.json").write_text(json.dumps({"version": 1.3, "people": people}))
    (folder / "frame_b_keypoints.json").write_text(json.dumps({"version": 1.3, "people": []}))
    imported = load_keypoints(folder)
    assert imported.format == "body25"
    got = imported.get(tmp_path / "images" / "frame_a.jpg")
    np.testing.assert_allclose(got.keypoints, kp, rtol=1e-6)
    assert imported.get("frame_b.png").keypoints.shape == (0, 25, 3)
    np.testing.assert_allclose(to_49(got.keypoints, imported.format)[:, :25], kp, rtol=1e-6)

    # bound to an image, the import answers like the in-process estimator, whatever the box order
    order = np.array([2, 0, 1])
    bound = imported.bind("frame_a.jpg")
    assert isinstance(bound, KeypointEstimator)
    np.testing.assert_allclose(bound.estimate(image, BOXES[order]), est.estimate(image, BOXES[order]), rtol=1e-6)
    # without boxes, the people come back with boxes around their keypoints (computed here by hand)
    dets = imported.detections("frame_a.jpg")
    expected = np.stack([kp[:, :, 0].min(1), kp[:, :, 1].min(1), kp[:, :, 0].max(1), kp[:, :, 1].max(1)], 1)
    np.testing.assert_allclose(dets.xyxy, expected, rtol=1e-6)
    with pytest.raises(InputError, match="lists no keypoints"):
        imported.bind("other.jpg").estimate(image, BOXES)


def test_openpose_single_file_and_coco18(tmp_path: Path) -> None:
    kp = _distinct_keypoints(1, 18)
    f = tmp_path / "x_keypoints.json"
    f.write_text(json.dumps({"people": [{"pose_keypoints_2d": kp[0].reshape(-1).tolist()}]}))
    imported = load_keypoints(f)
    assert imported.format == "openpose18"
    np.testing.assert_allclose(imported.get("x.jpg").keypoints, kp, rtol=1e-6)
    bad = tmp_path / "bad_keypoints.json"
    bad.write_text(json.dumps({"people": [{"pose_keypoints_2d": [1.0] * 30}]}))
    with pytest.raises(InputError, match="75 \\(BODY_25\\)"):
        load_keypoints(bad)


def test_coco_json_import_reproduces_estimator(tmp_path: Path) -> None:
    est = FakeEstimator(17, "coco17")
    image = np.zeros((300, 400, 3), np.uint8)
    kp = est.estimate(image, BOXES)
    scores = [0.9, 0.8, 0.7]
    data = {
        "sub/img1.jpg": [
            {"keypoints": p.reshape(-1).tolist(), "bbox": b.tolist(), "score": s}
            for p, b, s in zip(kp, BOXES, scores, strict=True)
        ],
        "img2.jpg": [],
    }
    (tmp_path / "kp.json").write_text(json.dumps(data))
    imported = load_keypoints(tmp_path / "kp.json")
    assert imported.format == "coco17"
    dets = imported.detections("/data/sub/img1.jpg")
    np.testing.assert_allclose(dets.xyxy, BOXES)
    np.testing.assert_allclose(dets.scores, scores, rtol=1e-6)
    order = np.array([1, 2, 0])
    np.testing.assert_allclose(imported.bind("/data/sub/img1.jpg").estimate(image, BOXES[order]),
                               est.estimate(image, BOXES[order]), rtol=1e-6)
    assert len(imported.detections("img2.jpg")) == 0
    assert imported.detections("img3.jpg") is None


def test_coco_json_records_and_visibility_flags(tmp_path: Path) -> None:
    kp = np.zeros((17, 3))
    kp[:, 0] = np.arange(17) * 3 + 10
    kp[:, 1] = np.arange(17) * 2 + 5
    kp[:, 2] = [2, 1, 0] * 5 + [2, 2]
    (tmp_path / "r.json").write_text(json.dumps([
        {"image": "a.jpg", "keypoints": kp.reshape(-1).tolist(), "bbox": [5, 0, 80, 50], "bbox_format": "xywh"},
    ]))
    imported = load_keypoints(tmp_path / "r.json")
    people = imported.get("a.jpg")
    np.testing.assert_allclose(people.boxes, [[5, 0, 85, 50]])
    np.testing.assert_array_equal(people.keypoints[0, :, 2], (kp[:, 2] > 0).astype(np.float32))


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (json.dumps({"a.jpg": [{"keypoints": [1, 2]}]}), "K\\*3"),
        (json.dumps({"a.jpg": [{"kp": []}]}), "'keypoints'"),
        (json.dumps({"a.jpg": [{"keypoints": [1.0] * 51, "bbox": [5, 5, 1, 1]}]}), "x2 <= x1"),
        (json.dumps({"a.jpg": [{"keypoints": [1.0] * 60}]}), "no known keypoint format has 20"),
        (json.dumps([{"keypoints": [1.0] * 51}]), "missing 'image'"),
        ("[1, 2", "not valid JSON"),
    ],
)
def test_coco_json_errors(tmp_path: Path, content: str, pattern: str) -> None:
    (tmp_path / "k.json").write_text(content)
    with pytest.raises(InputError, match=pattern):
        load_keypoints(tmp_path / "k.json")


def test_load_keypoints_missing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_keypoints(tmp_path / "none.json")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(InputError, match="no OpenPose"):
        load_keypoints(tmp_path / "emptydir")


# ------------------------------------------------------------------------------------------- backends


def test_unknown_backend_and_mmpose_message() -> None:
    with pytest.raises(ValueError, match="rtmpose"):
        build_keypoint_estimator("posenet")
    from metahmr_cli.keypoints.mmpose_pose import mmpose_available

    if mmpose_available():
        pytest.skip("mmpose is installed here; the missing-package message cannot be checked")
    with pytest.raises(MetaHMRError, match="mmpose"):
        build_keypoint_estimator("mmpose", "cfg.py,ckpt.pth")


# simcc peaks of the tiny RTMPose-like model, in model-input pixels (split ratio 2: bins = 2 * pixels)
PEAK_U = np.arange(17) * 10.0 + 5.0  # x in [0, 192)
PEAK_V = np.arange(17) * 14.0 + 7.0  # y in [0, 256)


@pytest.fixture(scope="module")
def tiny_rtmpose_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")

    class TinySimCC(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            sx = torch.zeros(1, 17, 384)
            sy = torch.zeros(1, 17, 512)
            for k in range(17):
                sx[0, k, int(PEAK_U[k] * 2)] = 0.9
                sy[0, k, int(PEAK_V[k] * 2)] = 0.7
            self.register_buffer("sx", sx)
            self.register_buffer("sy", sy)
            self.conv = torch.nn.Conv2d(3, 1, 3)

        def forward(self, x):
            zero = self.conv(x).mean() * 0.0  # keeps the image in the graph
            return self.sx + zero, self.sy + zero

    path = tmp_path_factory.mktemp("rtm") / "tiny_rtmpose.onnx"
    torch.onnx.export(TinySimCC(), torch.zeros(1, 3, 256, 192), str(path), input_names=["input"],
                      output_names=["simcc_x", "simcc_y"], dynamo=False, opset_version=17)
    return path


def test_rtmpose_backend_with_tiny_onnx(tiny_rtmpose_onnx: Path) -> None:
    est = build_keypoint_estimator("rtmpose", tiny_rtmpose_onnx)
    assert est.format == "coco17" and est.input_size == (192, 256)
    image = np.random.default_rng(0).integers(0, 256, (400, 500, 3), dtype=np.uint8)
    boxes = np.array([[100, 50, 250, 250], [300, 100, 360, 180]], np.float64)  # both 3:4 (model aspect)
    out = est.estimate(image, boxes)
    assert out.shape == (2, 17, 3) and out.dtype == np.float32
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        # the crop is the box enlarged 1.25x around its centre, resized to 192x256
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * 1.25, (y2 - y1) * 1.25
        np.testing.assert_allclose(out[i, :, 0], cx - w / 2 + PEAK_U / 192 * w, atol=1e-3)
        np.testing.assert_allclose(out[i, :, 1], cy - h / 2 + PEAK_V / 256 * h, atol=1e-3)
        np.testing.assert_allclose(out[i, :, 2], 0.8, atol=1e-6)  # mean of the x and y peak values
    assert est.estimate(image, np.zeros((0, 4))).shape == (0, 17, 3)


def test_rtmpose_name_not_available(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METAHMR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AssetNotFoundError, match="keypoints") as info:
        build_keypoint_estimator("rtmpose", "rtmpose-m")
    assert "rtmlib cache" in str(info.value)
    with pytest.raises(MetaHMRError, match="does not download"):
        build_keypoint_estimator("rtmpose", "https://example.org/model.zip")
    cached = tmp_path / "torch" / "hub" / "checkpoints"
    cached.mkdir(parents=True)
    from metahmr_cli.keypoints.rtmpose import RTMPOSE_RELEASES, resolve_rtmpose_model

    (cached / (RTMPOSE_RELEASES["rtmpose-m"] + ".onnx")).write_bytes(b"x")
    assert resolve_rtmpose_model("rtmpose-m").parent == cached


def test_ultralytics_pose_matches_people_to_boxes() -> None:
    est = build_keypoint_estimator("yolo-pose", "yolo11n-pose.yaml", imgsz=64)
    assert est.format == "coco17"
    image = np.zeros((120, 160, 3), np.uint8)
    real = est.estimate(image, BOXES[:2] / 3)
    assert real.shape == (2, 17, 3) and np.isfinite(real).all()

    pose_boxes = np.array([[150, 30, 240, 250], [12, 22, 108, 218]], np.float32)
    pose_kp = np.stack([np.full((17, 3), 1.0), np.full((17, 3), 2.0)]).astype(np.float32)
    pose_kp[..., 2] = [[0.9], [0.6]]

    def fake_predict(source, **kwargs):
        return [SimpleNamespace(boxes=SimpleNamespace(xyxy=pose_boxes),
                                keypoints=SimpleNamespace(data=pose_kp))]

    est.model.predict = fake_predict
    out = est.estimate(image, BOXES)  # box 0 ~ pose 1, box 1 unmatched, box 2 == pose 0
    np.testing.assert_array_equal(out[0], pose_kp[1])
    np.testing.assert_array_equal(out[1], 0.0)
    np.testing.assert_array_equal(out[2], pose_kp[0])


OPENCV_DATA = "usr/share/doc/opencv-doc/examples/data"


@pytest.fixture(scope="session")
def opencv_samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    examples = Path(__file__).resolve().parent.parent / "examples"
    if (examples / "messi5.jpg").is_file():
        return examples
    for root in (Path("/"), Path("/tmp/opencvdoc")):
        if (root / OPENCV_DATA / "messi5.jpg").is_file():
            return root / OPENCV_DATA
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("OpenCV sample photos not available (needs apt-get download opencv-doc)")
    work = tmp_path_factory.mktemp("opencvdoc")
    try:
        subprocess.run(["apt-get", "download", "opencv-doc"], cwd=work, check=True, capture_output=True, timeout=120)
        deb = next(work.glob("opencv-doc_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "x")], check=True, capture_output=True, timeout=120)
    except (subprocess.SubprocessError, StopIteration, OSError) as exc:
        pytest.skip(f"could not fetch OpenCV sample photos (apt-get download opencv-doc failed: {exc})")
    return work / "x" / OPENCV_DATA


# Messi in messi5.jpg (548x342), measured by eye on a 50 px grid: whole body incl. hand and shoe.
MESSI_BOX = np.array([[60.0, 55.0, 465.0, 342.0]])
MESSI_NOSE = np.array([245.0, 112.0])


def test_mediapipe_on_real_photo(opencv_samples: Path) -> None:
    pytest.importorskip("mediapipe")
    from metahmr_cli.io.sources import read_image

    image = read_image(opencv_samples / "messi5.jpg")
    assert image.shape == (342, 548, 3)
    est = build_keypoint_estimator("mediapipe")
    kp = est.estimate(image, MESSI_BOX)
    est.close()
    assert kp.shape == (1, 33, 3)
    body = kp[0, [0, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28]]
    assert body[:, 2].mean() > 0.8
    sure = kp[0, kp[0, :, 2] > 0.5]
    x1, y1, x2, y2 = MESSI_BOX[0]
    assert ((sure[:, 0] >= x1) & (sure[:, 0] <= x2) & (sure[:, 1] >= y1) & (sure[:, 1] <= y2)).all()
    assert np.linalg.norm(kp[0, 0, :2] - MESSI_NOSE) < 20
    j49 = to_49(kp, est.format)
    assert (j49[0, [2, 5, 9, 12], 2] > 0.8).all()
