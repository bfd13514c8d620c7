"""The shipped open tier on real photos: what the picture does not show comes out plausible, and a mirrored photo
gives the mirrored body.

These run the whole open tier (MoveNet people and keypoints, BlazePose / face evidence, the shipped open model and
its default TTO) on the example photos; the expectations are geometric facts about the photos, not numbers of a
previous run.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from metahmr_cli.evaluation.facing import facing_angle
from metahmr_cli.io.sources import read_image

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

pytestmark = pytest.mark.skipif(
    not (REPO / "weights" / "keypoints" / "movenet-multipose" / "movenet-multipose.json").is_file()
    and not os.environ.get("CI"),
    reason="MoveNet is not installed here (scripts/bootstrap.sh or `metahmr weights fetch-open` fetches it)",
)

# SMPL joint indices of the knees in the 24-joint pose (body_pose holds joints 1..23)
_KNEES = (4, 5)


@pytest.fixture(scope="module")
def estimator():
    from metahmr_cli.estimator import Estimator

    return Estimator.from_config(model="open", device="cpu")


def _knee_angles(people) -> np.ndarray:
    """(P, 2) flexion of both knees in degrees: the rotation angle of the knee joints."""
    pose = np.asarray(people.body_pose).reshape(len(people), 23, 3)
    return np.degrees(np.linalg.norm(pose[:, [k - 1 for k in _KNEES]], axis=-1))


def test_people_cut_at_the_waist_get_standing_legs(estimator):
    """basketball1.png cut just under the belts: nothing of either man's legs is in the picture, so the legs must
    come out as a standing person's (straight knees), not the crouch a fit to guessed keypoints invents."""
    image = read_image(EXAMPLES / "basketball1.png")[:285]
    people = estimator(image)
    assert len(people) >= 1
    knees = _knee_angles(people)
    assert knees.max() < 25.0, knees
    assert np.isfinite(np.asarray(people.vertices)).all()


def test_a_mirrored_photo_gives_the_mirrored_facing(estimator):
    """messi5.jpg and its mirror image: the player's facing angle (0 = toward the camera, +90 = image right) changes
    sign, and he faces the camera's half-space in both."""
    image = read_image(EXAMPLES / "messi5.jpg")
    a = estimator(image)
    b = estimator(np.ascontiguousarray(image[:, ::-1]))
    assert len(a) == 1 and len(b) == 1
    angle_a = float(facing_angle(np.asarray(a.joints3d))[0])
    angle_b = float(facing_angle(np.asarray(b.joints3d))[0])
    assert abs(angle_a) < 90 and abs(angle_b) < 90, (angle_a, angle_b)
    assert abs(angle_a + angle_b) < 25.0, (angle_a, angle_b)
