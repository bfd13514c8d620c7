"""The real-photo quality benchmark's own pieces (benchmarks/open_quality.py), on hand-built inputs: the label
transforms of derived images (mirror, crop, tile), counting, knee bend, mirror agreement, the annotation file, and
a quick run. Facing and matching are tested in test_eval_facing.py and test_eval_people.py.

Expected values are derived by hand in the comments, never taken from the code."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metahmr_cli.body.joints import JOINT_NAMES

REPO = Path(__file__).resolve().parents[1]


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("open_quality_benchmark", REPO / "benchmarks" / "open_quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


oq = _load_benchmark()


# ---------------------------------------------------------------------------------------- derived labels


def _person(box, facing="toward", full=True, ref="img#0"):
    return oq.Person(np.asarray(box, float), facing, full, ref)


def test_mirror_labels_flip_boxes_and_side_facing():
    people = [_person([10, 20, 50, 120], "side-left"), _person([60, 0, 90, 40], "away", ref="img#1")]
    flipped, ign = oq.mirror_labels(people, np.array([[0, 0, 10, 10]]), width=100)
    assert flipped[0].box.tolist() == [50, 20, 90, 120] and flipped[0].facing == "side-right"
    assert flipped[1].box.tolist() == [10, 0, 40, 40] and flipped[1].facing == "away"
    assert ign.tolist() == [[90, 0, 100, 10]]
    assert [p.ref for p in flipped] == ["img#0", "img#1"]


def test_crop_labels_cut_people_and_turn_the_rest_into_ignore_boxes():
    people = [_person([10, 10, 50, 110]), _person([60, 10, 90, 50], ref="img#1"), _person([200, 0, 220, 50])]
    # crop x 0..100, y 0..60 (cuts person 0 at y = 60, half its height), scaled by 2; keep person 0 only
    kept, ign = oq.crop_labels(people, np.zeros((0, 4)), [0, 0, 100, 60], 2.0, [0])
    assert len(kept) == 1 and kept[0].box.tolist() == [20, 20, 100, 120] and kept[0].full_body is False
    assert ign.tolist() == [[120, 20, 180, 100]]  # person 1 became an ignore box; person 2 is outside
    # a crop that leaves the whole body keeps full_body
    kept, _ = oq.crop_labels(people, np.zeros((0, 4)), [5, 5, 95, 115], 1.0, [0, 1])
    assert [p.full_body for p in kept] == [True, True] and kept[0].box.tolist() == [5, 5, 45, 105]
    with pytest.raises(ValueError, match="does not show person 2"):
        oq.crop_labels(people, np.zeros((0, 4)), [0, 0, 100, 60], 1.0, [2])


def test_tile_labels_shift_each_part():
    a = ([_person([1, 2, 3, 4])], np.array([[0, 0, 1, 1]]), (0, 0))
    b = ([_person([1, 2, 3, 4], ref="b#0")], np.zeros((0, 4)), (768, 576))
    people, ign = oq.tile_labels([a, b])
    assert [p.box.tolist() for p in people] == [[1, 2, 3, 4], [769, 578, 771, 580]]
    assert ign.tolist() == [[0, 0, 1, 1]]


# ------------------------------------------------------------------------------------------ measurements


def test_knee_bend_by_hand():
    j = np.zeros((2, 49, 3))
    ids = {n: JOINT_NAMES.index(n) for n in ("Left Hip", "Left Knee", "Left Ankle", "Right Hip", "Right Knee",
                                            "Right Ankle")}
    for k, (knee, ankle) in enumerate((((0, 0.4, 0), (0, 0.8, 0)), ((0, 0.4, 0), (0, 0.4, 0.4)))):
        for side in ("Left", "Right"):
            j[k, ids[f"{side} Knee"]], j[k, ids[f"{side} Ankle"]] = knee, ankle
    # straight leg: 0 degrees; shank at a right angle to the thigh: 90
    np.testing.assert_allclose(oq.knee_bend(j, JOINT_NAMES), [[0, 0], [90, 90]], atol=1e-9)


def test_torso_pitch_by_hand():
    # camera frame, y down: an upright torso's up is -y (0 degrees); shoulders 30 degrees toward the camera (-z):
    # up = (0, -cos 30, -sin 30) -> +30; leaning back, away from the camera -> -30
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    np.testing.assert_allclose(oq.torso_pitch(np.array([[0, -1, 0], [0, -c, -s], [0, -c, s], [0.5, -1, 0]])),
                               [0, 30, -30, 0], atol=1e-9)


def test_summary_counts_by_hand():
    rows = [{"counted": 3, "false_boxes": 1}, {"counted": 1, "false_boxes": 0}]
    records = [
        {"found_after": True, "facing_ok_before": False, "facing_ok_after": True, "err2d_before_pct": 10.0,
         "err2d_after_pct": 4.0, "pa_mm_before": 80.0, "pa_mm_after": 70.0, "pitch_after": -20.0,
         "pitch_reference": 25.0},
        {"found_after": True, "facing_ok_before": True, "facing_ok_after": True, "err2d_before_pct": 20.0,
         "err2d_after_pct": 6.0, "pa_mm_before": 60.0, "pa_mm_after": 65.0, "knee_bend_after": [10.0, 30.0]},
        {"found_after": True, "facing_ok_before": None, "facing_ok_after": None, "err2d_before_pct": 30.0,
         "err2d_after_pct": 8.0, "pa_mm_before": 90.0, "pa_mm_after": 50.0, "knee_bend_after": [5.0, 1.0]},
        {"found_after": False},
    ]
    s = oq.summarize(records, rows)
    assert (s["counted"], s["found"], s["found_pct"], s["false_boxes"]) == (4, 3, 75.0, 1)
    assert (s["facing_labelled_after"], s["facing_correct_after"], s["facing_pct_after"]) == (2, 2, 100.0)
    assert (s["facing_correct_before"], s["facing_pct_before"]) == (1, 50.0)
    assert (s["err2d_before_pct"], s["err2d_after_pct"]) == (20.0, 6.0)
    # PA: before 80, 60, 90 -> median 80; after 70, 65, 50 -> 65; lowered for 2 of 3
    assert (s["pa_people"], s["pa_before_mm"], s["pa_after_mm"], s["pa_lowered"]) == (3, 80.0, 65.0, 2)
    assert s["pa_lowered_pct"] == pytest.approx(200 / 3)
    assert (s["cut_people"], s["cut_knee_bend_deg"]) == (2, 17.5)  # the worse knee of each: 30 and 5
    assert (s["pitch_people"], s["pitch_after_deg"], s["pitch_reference_deg"]) == (1, -20.0, 25.0)
    t = oq.targets(s)
    assert t["found_pct"]["met"] is False and t["facing_pct"]["met"] is True
    assert t["pa_lowered_pct"]["met"] is True and t["pa_after_mm"]["met"] is False


def test_mirror_agreement_by_hand():
    im = oq.SetImage("a_mirror", "tuning", "mirror", True, np.zeros((2, 2, 3), np.uint8),
                     [_person([0, 0, 1, 1], ref="a#0"), _person([0, 0, 1, 1], ref="a#1")], np.zeros((0, 4)), "",
                     mirror_of="a")
    records = [{"image": "a", "ref": "a#0", "facing_angle_after": 170.0},
               {"image": "a_mirror", "ref": "a#0", "facing_angle_after": 175.0},  # mirror of 170 is -170: 15 off
               {"image": "a", "ref": "a#1", "facing_angle_after": 30.0},
               {"image": "a_mirror", "ref": "a#1", "facing_angle_after": 40.0}]  # mirror of 30 is -30: 70 off
    m = oq.mirror_agreement(records, [im])
    assert m == {"mirror_pairs": 2, "mirror_facing_diff_deg": 42.5, "mirror_facing_diff_over_60": 1}


# ---------------------------------------------------------------------------------------------- the set


def test_the_annotation_file_is_consistent():
    doc = oq.load_annotations()
    entries = {e["id"]: e for e in doc["images"]}
    held = [i for i, e in entries.items() if e["split"] == "held-out" and e.get("evaluate", True)]
    assert "basketball2" in held and {"vtest_tile_b", "vtest_0550_mirror"} <= set(held)
    for e in entries.values():  # held-out: basketball2 and vtest frames >= 400, and what is made of them
        if "frame" in e:
            assert (e["split"] == "held-out") == (e["frame"] >= 400), e["id"]
    kinds = {e["kind"] for e in entries.values() if e.get("evaluate", True)}
    assert kinds == set(oq.KINDS)
    # at least one evaluated frame shows more than six people who count
    assert max(len(e["people"]) for e in entries.values() if "frame" in e and e.get("evaluate", True)) > 6
    assert oq.select_ids(doc, "held-out") == held
    assert oq.select_ids(doc, "all", ["messi5_mirror", "messi5"]) == ["messi5", "messi5_mirror"]
    with pytest.raises(ValueError, match="unknown image ids"):
        oq.select_ids(doc, "all", ["nope"])


def test_bad_annotation_files_are_refused(tmp_path):
    doc = oq.load_annotations()
    bad = json.loads(json.dumps(doc))
    bad["images"].append({"id": "x", "split": "tuning", "kind": "mirror", "mirror": "basketball2"})
    (tmp_path / "a.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="held-out basketball2 and must be held-out"):
        oq.load_annotations(tmp_path / "a.json")
    bad = json.loads(json.dumps(doc))
    bad["images"][0]["people"][0]["facing"] = "front"
    (tmp_path / "b.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="bad person"):
        oq.load_annotations(tmp_path / "b.json")


def test_sources_are_checked_by_content(tmp_path):
    spec = {"file": "examples/messi5.jpg", "sha256": "0" * 64}
    with pytest.raises(ValueError, match="not the file the labels were made on"):
        oq.source_file("messi5", spec, None)
    with pytest.raises(FileNotFoundError, match="--opencv-data"):
        oq.find_opencv_data(tmp_path, download=False)


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (Debian)")
def test_opencv_doc_is_fetched_into_the_cache_when_missing(tmp_path, monkeypatch):
    # a stand-in apt-get that "downloads" a small opencv-doc package built here with dpkg-deb
    pkg = tmp_path / "pkg"
    data = pkg / oq.OPENCV_DOC_DATA
    data.mkdir(parents=True)
    (data / "vtest.avi").write_bytes(b"v")
    (data / "basketball2.png").write_bytes(b"b")
    (pkg / "DEBIAN").mkdir()
    (pkg / "DEBIAN" / "control").write_text("Package: opencv-doc\nVersion: 1\nArchitecture: all\n"
                                             "Maintainer: x <x@example.org>\nDescription: stand-in\n")
    deb = tmp_path / "opencv-doc_1_all.deb"
    subprocess.run(["dpkg-deb", "--build", str(pkg), str(deb)], check=True, capture_output=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apt-get"
    fake.write_text(f"#!/bin/sh\n[ \"$1 $2\" = \"download opencv-doc\" ] && cp {deb} .\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("METAHMR_OPENCV_DATA", raising=False)
    monkeypatch.setattr(oq, "SYSTEM_ROOT", tmp_path / "no-system-copy")
    with pytest.raises(FileNotFoundError, match="install Debian's opencv-doc"):
        oq.find_opencv_data(None, download=False)
    found = oq.find_opencv_data(None, download=True)
    assert found == tmp_path / "cache" / "metahmr" / "opencv-doc" / oq.OPENCV_DOC_DATA
    assert (found / "vtest.avi").read_bytes() == b"v"
    assert oq.find_opencv_data(None, download=False) == found  # the cache is found next time
    monkeypatch.setenv("METAHMR_OPENCV_DATA", str(data))
    assert oq.find_opencv_data(None, download=False) == data


def test_built_images_carry_their_labels():
    doc = oq.load_annotations()
    images = {im.id: im for im in oq.build_set(doc, ["messi5", "messi5_mirror", "messi5_head"])}
    src, mir, head = images["messi5"], images["messi5_mirror"], images["messi5_head"]
    np.testing.assert_array_equal(mir.image, src.image[:, ::-1])
    assert mir.people[0].box[0] == src.image.shape[1] - src.people[0].box[2]
    # messi5_head: x 150..320, y 45..175 of messi5, x 3 -> 510 x 390 pixels; the player's box clipped to it
    assert head.image.shape == (390, 510, 3) and head.people[0].full_body is False
    np.testing.assert_allclose(head.people[0].box, [0, 13 * 3, 510, 390])


MOVENET = REPO / "weights" / "keypoints" / "movenet-multipose" / "movenet-multipose.json"


@pytest.mark.skipif(not MOVENET.is_file() and not os.environ.get("CI"),
                    reason="MoveNet is not installed here (scripts/bootstrap.sh fetches it)")
def test_quick_run_writes_the_reports(tmp_path):
    pytest.importorskip("mediapipe")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "open_quality.py"), "--quick", "--out",
                           str(tmp_path)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "COLUMNS": "40", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "open_quality.json").read_text())
    assert [r["image"] for r in report["images"]] == list(oq.QUICK_IMAGES)
    total = report["summary"]["all"]
    assert total["counted"] == 4 and 0 <= total["found"] <= 4  # messi5, its mirror, two people cut at the waist
    assert {r["image"] for r in report["people"]} == set(oq.QUICK_IMAGES)
    for rec in report["people"]:
        if rec["found_after"]:
            assert -180 <= rec["facing_angle_after"] <= 180
            assert rec["err2d_after_pct"] is None or rec["err2d_after_pct"] >= 0
        if rec["image"] == "basketball1_waist":  # cut at the waist: no BlazePose reference, knees measured
            assert rec["reference"] == "not whole-body" and "pa_mm_after" not in rec
            assert not rec["found_after"] or len(rec["knee_bend_after"]) == 2
    assert set(report["targets"]) == set(oq.TARGETS)
    assert report["runs"]["before"]["tto"] == "none" and report["runs"]["after"]["tto"] != "none"
    md = (tmp_path / "open_quality.md").read_text()
    assert "| messi5_mirror |" in md and "Targets" in md
    import cv2

    montage = cv2.imread(str(tmp_path / "open_quality_montage.jpg"))
    assert montage is not None and montage.shape[0] > 200
