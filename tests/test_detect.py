"""Person detection: detections container, the YOLO adapter (offline), imported boxes."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")

from metahmr_cli.detect import (  # noqa: E402
    Detections,
    Detector,
    ImportedBoxes,
    YoloDetector,
    box_iou,
    candidate_keys,
    filter_detections,
    load_boxes_json,
    lookup_key,
    resolve_yolo_model,
)
from metahmr_cli.errors import AssetNotFoundError, InputError  # noqa: E402


@pytest.fixture
def isolated_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty weights root; the current folder and the user data folder hold nothing either."""
    home = tmp_path / "home"
    (home / "detectors").mkdir(parents=True)
    monkeypatch.setenv("METAHMR_HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    return home


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list:
    """Record (and refuse) every outgoing connection."""
    attempts: list = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(None, address))
    return attempts


# ------------------------------------------------------------------------------------------- containers


def test_detections_shapes_and_indexing() -> None:
    d = Detections([[0, 0, 10, 20], [5, 5, 6, 6]], [0.9, 0.1])
    assert d.xyxy.shape == (2, 4) and d.xyxy.dtype == np.float32
    assert len(d) == 2 and len(Detections.empty()) == 0
    assert d[np.array([False, True])].scores.tolist() == pytest.approx([0.1])
    with pytest.raises(ValueError):
        Detections([[0, 0, 1, 1]], [0.5, 0.4])


def test_filter_detections_hand_values() -> None:
    d = Detections(
        [[-10, -5, 50, 60], [10, 10, 12, 80], [20, 20, 90, 100], [0, 0, 30, 30], [1, 1, 2, 2]],
        [0.6, 0.9, 0.95, 0.3, 0.99],
    )
    out = filter_detections(d, min_score=0.5, min_box_size=5, max_people=2, image_size=(80, 90))
    # box 1 is 2 px wide, box 3 below the score, box 4 is 1 px; the rest sorted by score, clamped to 80x90
    np.testing.assert_allclose(out.xyxy, [[20, 20, 80, 90], [0, 0, 50, 60]])
    np.testing.assert_allclose(out.scores, [0.95, 0.6])


def test_box_iou_hand_values() -> None:
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]]))
    np.testing.assert_allclose(iou, [[50 / 150, 0.0, 1.0]])


# ------------------------------------------------------------------------------------------- YOLO


def test_missing_model_name_is_a_clear_error_without_network(isolated_weights: Path, no_network: list) -> None:
    with pytest.raises(AssetNotFoundError) as info:
        YoloDetector("yolo11n.pt")
    msg = str(info.value)
    assert "yolo11n.pt" in msg and "detectors" in msg and "download" in msg
    assert str(isolated_weights / "detectors" / "yolo11n.pt") in msg
    with pytest.raises(AssetNotFoundError, match="does not exist"):
        YoloDetector(str(isolated_weights / "nowhere" / "model.pt"))
    with pytest.raises(AssetNotFoundError):
        YoloDetector("yolo11x")  # suffix-less name: looks for yolo11x.pt
    assert no_network == []


def test_model_name_found_in_weights_folder(isolated_weights: Path) -> None:
    target = isolated_weights / "detectors" / "custom.pt"
    target.write_bytes(b"x")
    assert Path(resolve_yolo_model("custom.pt")) == target
    assert Path(resolve_yolo_model("custom")) == target
    assert resolve_yolo_model("yolo11n.yaml") == "yolo11n.yaml"


@pytest.fixture(scope="module")
def tiny_yolo_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp("yolo") / "tiny_random.pt"
    YOLO("yolo11n.yaml").save(str(path))
    return path


def test_yolo_from_config_returns_well_formed_detections(no_network: list) -> None:
    det = YoloDetector("yolo11n.yaml", conf=0.0, max_people=3, min_box_size=0, imgsz=64)
    assert isinstance(det, Detector)
    img = np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    out = det.detect(img)
    assert out.xyxy.shape == (len(out), 4) and out.scores.shape == (len(out),)
    assert len(out) <= 3
    assert (out.xyxy[:, [0, 2]] >= 0).all() and (out.xyxy[:, [0, 2]] <= 90).all()
    assert (out.xyxy[:, [1, 3]] >= 0).all() and (out.xyxy[:, [1, 3]] <= 60).all()
    assert (np.diff(out.scores) <= 0).all()
    assert no_network == []


def test_yolo_weights_loaded_by_name_from_weights_folder(isolated_weights: Path, tiny_yolo_pt: Path) -> None:
    (isolated_weights / "detectors" / "tiny.pt").write_bytes(tiny_yolo_pt.read_bytes())
    det = YoloDetector("tiny.pt", imgsz=64)
    assert det.name == "tiny.pt"
    out = det.detect(np.zeros((48, 64, 3), np.uint8))
    assert out.xyxy.shape[1] == 4


class _FakeBoxes:
    def __init__(self, rows: list[list[float]]) -> None:
        arr = np.asarray(rows, np.float32).reshape(-1, 6)
        self.xyxy, self.conf, self.cls = arr[:, :4], arr[:, 4], arr[:, 5]


def test_yolo_thresholds_with_fake_predictor(no_network: list) -> None:
    det = YoloDetector("yolo11n.yaml", conf=0.4, iou=0.3, max_people=2, min_box_size=10)
    seen: dict = {}
    rows = [
        [10, 10, 50, 90, 0.90, 0],  # kept
        [12, 12, 52, 92, 0.95, 1],  # not a person
        [60, 10, 70, 50, 0.80, 0],  # 10 px wide: kept (>= min_box_size)
        [80, 10, 85, 50, 0.99, 0],  # 5 px wide: too small
        [0, 0, 200, 40, 0.50, 0],  # clamped to the 100 px image, kept but lowest score -> cut by max_people
        [20, 20, 40, 60, 0.30, 0],  # below conf
    ]

    def fake_predict(source, **kwargs):
        seen["source"] = source
        seen.update(kwargs)
        return [SimpleNamespace(boxes=_FakeBoxes(rows))]

    det.model.predict = fake_predict
    img = np.zeros((100, 100, 3), np.uint8)
    img[..., 0] = 200  # red in RGB
    out = det.detect(img)
    np.testing.assert_allclose(out.xyxy, [[10, 10, 50, 90], [60, 10, 70, 50]])
    np.testing.assert_allclose(out.scores, [0.90, 0.80])
    assert seen["conf"] == 0.4 and seen["iou"] == 0.3 and seen["classes"] == [0]
    assert seen["source"][0, 0, 2] == 200 and seen["source"][0, 0, 0] == 0  # handed over as BGR

    det.max_people = None
    out = det.detect(img)
    np.testing.assert_allclose(out.xyxy[-1], [0, 0, 100, 40])
    rows.clear()
    assert len(det.detect(img)) == 0


def test_detector_rejects_non_rgb() -> None:
    det = YoloDetector("yolo11n.yaml")
    with pytest.raises(InputError):
        det.detect(np.zeros((10, 10), np.uint8))


# ------------------------------------------------------------------------------------------- boxes JSON


def test_boxes_json_mapping_format(tmp_path: Path) -> None:
    p = tmp_path / "boxes.json"
    p.write_text(json.dumps({
        "a.jpg": [[10, 20, 110, 320, 0.98], [200, 30, 290, 310]],
        "sub/b.jpg": [],
    }))
    boxes = load_boxes_json(p)
    np.testing.assert_allclose(boxes["a.jpg"].xyxy, [[10, 20, 110, 320], [200, 30, 290, 310]])
    np.testing.assert_allclose(boxes["a.jpg"].scores, [0.98, 1.0])
    assert len(boxes["sub/b.jpg"]) == 0


def test_boxes_json_record_format(tmp_path: Path) -> None:
    p = tmp_path / "boxes.json"
    p.write_text(json.dumps([
        {"image": "a.jpg", "bbox": [10, 20, 110, 320], "score": 0.5},
        {"file_name": "a.jpg", "bbox": [5, 6, 10, 20], "format": "xywh"},
        {"image": "c.png", "bbox": [1, 2, 3, 4]},
    ]))
    boxes = load_boxes_json(p)
    np.testing.assert_allclose(boxes["a.jpg"].xyxy, [[10, 20, 110, 320], [5, 6, 15, 26]])
    np.testing.assert_allclose(boxes["a.jpg"].scores, [0.5, 1.0])
    assert len(boxes["c.png"]) == 1


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"a.jpg": [[10, 20, 5, 40]]}), "x2 <= x1"),
        (json.dumps({"a.jpg": [[1, 2, 3]]}), r"\[x1, y1, x2, y2\]"),
        (json.dumps({"a.jpg": [["a", 2, 3, 4]]}), "numbers"),
        (json.dumps({"a.jpg": [[1, 2, 3, 4, 7]]}), "outside"),
        (json.dumps({"a.jpg": {"x": 1}}), "list of boxes"),
        (json.dumps([{"bbox": [1, 2, 3, 4]}]), "missing 'image'"),
        (json.dumps([{"image": "a.jpg"}]), "missing 'bbox'"),
        (json.dumps([{"image": "a.jpg", "bbox": [1, 2, 3, 4], "format": "cxcywh"}]), "unknown box format"),
        (json.dumps(5), "must hold"),
    ],
)
def test_boxes_json_errors_name_the_entry(tmp_path: Path, content: str, pattern: str) -> None:
    p = tmp_path / "boxes.json"
    p.write_text(content)
    with pytest.raises(InputError, match=pattern):
        load_boxes_json(p)


def test_boxes_json_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_boxes_json(tmp_path / "none.json")


def test_lookup_keys() -> None:
    assert candidate_keys("/data/run/sub/a.jpg") == [
        "/data/run/sub/a.jpg", "data/run/sub/a.jpg", "run/sub/a.jpg", "sub/a.jpg", "a.jpg", "a",
    ]
    mapping = {"sub/a.jpg": 1, "a.jpg": 2, "b": 3, ".\\c.png": 4, "clip.mp4:12": 5, "clip_000000000003": 6}
    assert lookup_key(mapping, "/x/sub/a.jpg") == 1
    assert lookup_key(mapping, "/x/other/a.jpg") == 2
    assert lookup_key(mapping, "/x/b.png") == 3
    assert lookup_key(mapping, "/y/c.png") == 4
    assert lookup_key(mapping, "/v/clip.mp4", frame=12) == 5
    assert lookup_key(mapping, "/v/clip.mp4", frame=3) == 6
    assert lookup_key(mapping, "/v/clip.mp4", frame=4) is None
    assert lookup_key(mapping, "/x/zzz.jpg") is None


def test_imported_boxes_bind(tmp_path: Path) -> None:
    p = tmp_path / "boxes.json"
    p.write_text(json.dumps({"a.jpg": [[1, 2, 30, 40, 0.7]]}))
    imported = ImportedBoxes(p)
    det = imported.bind(tmp_path / "imgs" / "a.jpg")
    assert isinstance(det, Detector)
    np.testing.assert_allclose(det.detect(np.zeros((50, 50, 3), np.uint8)).xyxy, [[1, 2, 30, 40]])
    assert imported.get("b.jpg") is None
    with pytest.raises(InputError, match="lists no boxes for 'b.jpg'"):
        imported.bind("b.jpg").detect(np.zeros((50, 50, 3), np.uint8))


def test_ultralytics_keeps_its_settings_in_the_data_folder_and_stays_quiet(tmp_path):
    """The first video run (ByteTrack) used to write ~/.config/Ultralytics/settings.json with sync on and print
    three lines about it."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "XDG_"))}
    env.update(HOME=str(tmp_path / "home"), XDG_DATA_HOME=str(tmp_path / "data"))
    code = ("from metahmr_cli.video.tracking import build_tracker; import numpy as np; "
            "t = build_tracker('bytetrack'); print(t.name, t.update(np.array([[0, 0, 10, 20.]]), np.array([.9])))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=None)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("bytetrack")
    assert "Settings" not in proc.stdout + proc.stderr and "settings" not in proc.stdout + proc.stderr
    assert not (tmp_path / "home" / ".config").exists()
    settings = tmp_path / "data" / "metahmr" / "ultralytics" / "Ultralytics" / "settings.json"
    assert json.loads(settings.read_text())["sync"] is False
