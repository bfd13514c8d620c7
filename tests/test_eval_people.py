"""Found person boxes against people labelled by eye (metahmr_cli.evaluation.people): matches, partial matches,
misses, false boxes and ignore regions on hand-built boxes, with the overlaps worked out in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from metahmr_cli.errors import InputError
from metahmr_cli.evaluation.people import box_cover, match_people


def test_box_cover_by_hand():
    # a 10 x 10 box half inside a 5-wide box: 50 / 100
    np.testing.assert_allclose(box_cover([[0, 0, 10, 10]], [[5, 0, 20, 10], [20, 20, 30, 30]]), [[0.5, 0.0]])


def test_matching_counts_found_missed_false_and_excused():
    people = np.array([[0, 0, 100, 200], [200, 0, 300, 200], [400, 0, 500, 200]], float)
    ignore = np.array([[600, 0, 640, 60], [0, 300, 1000, 400]], float)  # a small far person, a crowd strip
    dets = np.array([
        [5, 5, 100, 200],      # person 0, IoU 0.95
        [0, 0, 100, 100],      # upper half of person 0: IoU 0.5 with it, but person 0 is taken -> false
        [210, 0, 310, 200],    # person 1, IoU 90*200 / (110*200) = 0.818
        [600, 0, 640, 60],     # the ignored far person -> excused
        [100, 310, 150, 390],  # inside the crowd strip, on nobody -> excused
        [420, 300, 480, 399],  # in the crowd strip, below person 2 (no overlap with them) -> excused
        [300, 0, 400, 200],    # between persons 1 and 2, IoU 0 with both -> false
    ], float)
    m = match_people(dets, people, ignore)
    assert m.person_det.tolist() == [0, 2, -1]
    assert m.det_person.tolist() == [0, -1, 1, -1, -1, -1, -1]
    assert m.excused.tolist() == [False, False, False, True, True, True, False]
    assert (m.found, m.missed, m.false_boxes, m.partial) == (2, 1, 2, 0)
    np.testing.assert_allclose(m.person_iou, [95 * 195 / 20000, 90 / 110, 0.0])


def test_a_box_on_part_of_a_person_is_a_partial_match_and_one_between_two_is_false():
    # a portrait whose visible body runs to the bottom of the picture: the box on head and chest
    # ([10, 0, 90, 100]: IoU 8000 / 20000 = 0.4) lies wholly inside the labelled box and covers 40 % of it
    people = np.array([[0, 0, 100, 200], [300, 0, 400, 200], [400, 0, 500, 200]], float)
    dets = np.array([[10, 0, 90, 100], [350, 0, 450, 150]], float)  # the second straddles persons 1 and 2
    m = match_people(dets, people)
    assert m.person_det.tolist() == [0, -1, -1] and m.person_partial.tolist() == [True, False, False]
    assert (m.found, m.partial, m.false_boxes) == (1, 1, 1)
    # a box covering too little of the person (10 % of the area) is no match
    assert match_people(np.array([[10, 0, 50, 50]], float), people[:1]).found == 0


def test_a_second_box_on_a_counted_person_in_front_of_a_crowd_is_false():
    # Messi in front of the stands: the stands are an ignore region behind him, his duplicate box is still false
    people = np.array([[100, 50, 300, 400]], float)
    crowd = np.array([[0, 0, 640, 250]], float)
    dets = np.array([[100, 50, 300, 400], [150, 50, 250, 150]], float)
    m = match_people(dets, people, crowd)
    assert (m.found, m.false_boxes) == (1, 1)


def test_matching_prefers_the_best_overlap_and_is_one_to_one():
    # two detections on one person and a neighbour: the best IoU pairs first, whatever the order given
    people = np.array([[0, 0, 100, 100], [60, 0, 160, 100]], float)
    dets = np.array([[50, 0, 150, 100], [58, 0, 158, 100], [0, 0, 98, 100]], float)
    m = match_people(dets, people)
    # IoUs: det 2 - person 0 = 9800 / 10000 = 0.98, det 1 - person 1 = 9800 / 10200 = 0.96, det 0 - person 1 =
    # 9000 / 11000 = 0.82: the first two pair up, det 0 has nobody left -> false
    assert m.person_det.tolist() == [2, 1] and m.false_boxes == 1
    assert match_people(np.zeros((0, 4)), people).missed == 2
    assert match_people(dets, np.zeros((0, 4))).false_boxes == 3
    with pytest.raises(InputError, match="detections"):
        match_people(np.zeros((2, 3)), people)
