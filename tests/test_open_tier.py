"""The README's first command on a machine without licensed files: the open tier on the real examples.

People were counted by hand: messi5.jpg shows one player, basketball1.png two, and the pedestrian clip three
people walking through every frame (a fourth enters at the right edge from frame 10, a fifth around frame 16).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from metahmr_cli.cli.app import app
from metahmr_cli.io.writers import MANIFEST_NAME, load_result_npz

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
WEIGHTS = REPO / "weights"


def _movenet_installed() -> bool:
    """What `metahmr weights fetch-open` installs: MoveNet MultiPose, MoveNet Thunder and CenterNet."""
    return all((WEIGHTS / sub).is_file() for sub in ("keypoints/movenet-multipose/movenet-multipose.json",
                                                     "keypoints/movenet-thunder/movenet-thunder.json",
                                                     "detectors/centernet/centernet.json"))


needs_movenet = pytest.mark.skipif(
    not _movenet_installed() and not os.environ.get("CI"),
    reason="the open people models are not installed here (scripts/bootstrap.sh or `metahmr weights fetch-open` "
           "fetches them)",
)


@pytest.fixture(scope="module")
def open_run(tmp_path_factory) -> Path:
    """``metahmr process examples/ --out OUT`` with nothing but the open assets (no SMPL, no release)."""
    if not _movenet_installed():
        pytest.fail(f"the open people models are missing under {WEIGHTS}; CI must fetch them with "
                    "scripts/bootstrap.sh")
    root = tmp_path_factory.mktemp("open_tier")
    home = root / "home"
    for sub in ("keypoints/movenet-multipose", "keypoints/movenet-thunder", "detectors/centernet"):
        shutil.copytree(WEIGHTS / sub, home / sub)  # only what fetch-open installs: the rest must be the open tier
    inputs = root / "examples"
    shutil.copytree(EXAMPLES, inputs)
    out = root / "results"
    env = {"METAHMR_HOME": str(home), "XDG_DATA_HOME": str(root / "xdg"), "COLUMNS": "200"}
    old = Path.cwd()
    os.chdir(root)  # no ./weights here
    try:
        res = CliRunner().invoke(app, ["process", str(inputs), "--out", str(out), "--no-progress", "--device", "cpu"],
                                 env=env)
    finally:
        os.chdir(old)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())  # the console may wrap lines (COLUMNS set when the app was imported)
    assert "open tier" in text and "not SMPL" in text
    return out


@needs_movenet
def test_every_example_is_ok_with_the_people_counted_by_hand(open_run):
    lines = (open_run / MANIFEST_NAME).read_text().splitlines()
    records = {json.loads(line)["key"]: json.loads(line) for line in lines}
    assert {k: r["status"] for k, r in records.items()} == {"messi5": "ok", "basketball1": "ok", "pedestrians": "ok"}
    assert load_result_npz(open_run / "messi5.npz")["bbox"].shape[0] == 1
    assert load_result_npz(open_run / "basketball1.npz")["bbox"].shape[0] == 2
    frames = sorted((open_run / "pedestrians").glob("frame_*.npz"))
    counts = [load_result_npz(f)["bbox"].shape[0] for f in frames]
    assert len(frames) == 20
    assert sum(c >= 3 for c in counts) >= 15, counts  # at least 3 people in most frames


@needs_movenet
def test_outputs_name_the_open_assets_and_never_smpl(open_run):
    d = load_result_npz(open_run / "basketball1.npz")
    assert str(d["body_model"]) == "open-anny-v1" and str(d["model_tier"]) == "open"
    assert str(d["checkpoint"]).startswith("metahmr_open_keypoints.pt")
    assert str(d["tto_schedule"]) == "metahmr" and str(d["focal_rule"]) == "diagonal"
    assert d["vertices"].shape == (2, 7000, 3)
    assert "smpl" not in str(d["body_model"]).lower()


@needs_movenet
def test_tto_brings_the_body_onto_the_detected_keypoints(open_run):
    """The 2D error of the fitted body against MoveNet's keypoints, relative to each person's box height, over every
    person of the photos and the clip: TTO lowers it, and its median is at most 5 % afterwards."""
    before, after = [], []
    for path in [open_run / "messi5.npz", open_run / "basketball1.npz",
                 *sorted((open_run / "pedestrians").glob("frame_*.npz"))]:
        d = load_result_npz(path)
        h = d["bbox"][:, 3] - d["bbox"][:, 1]
        before += (d["reproj_error_before"] / h).tolist()
        after += (d["reproj_error_after"] / h).tolist()
    assert len(after) >= 60 and np.all(np.isfinite(after))
    assert np.median(after) < 0.8 * np.median(before)
    assert np.median(after) <= 0.05


@needs_movenet
def test_overlays_show_the_body_over_each_person(open_run):
    import cv2

    for stem, image in (("messi5", "messi5.jpg"), ("basketball1", "basketball1.png")):
        overlay = cv2.imread(str(open_run / f"{stem}_overlay.png"))
        source = cv2.imread(str(EXAMPLES / image))
        d = load_result_npz(open_run / f"{stem}.npz")
        changed = np.abs(overlay.astype(int) - source.astype(int)).sum(axis=2) > 30
        for x1, y1, x2, y2 in d["bbox"].astype(int):
            inside = changed[max(y1, 0):y2, max(x1, 0):x2]
            assert inside.mean() > 0.05, (stem, (x1, y1, x2, y2))  # the mesh covers part of every box
    assert (open_run / "pedestrians.mp4").is_file()
