"""Person boxes found against people labelled by eye: matches, misses and false boxes.

Used by ``benchmarks/open_quality.py`` on real photos where nobody has ground-truth meshes, only labelled boxes
of the people who count (head and torso visible) and *ignore* boxes for those who do not (tiny, heavily
occluded, crowds in the background).

Rules:

- a detection and a labelled person match when their boxes overlap with IoU >= ``min_iou``; pairs are taken
  greedily from the highest IoU down (ties: lower detection index, then lower person index), each detection and
  each person at most once;
- then, among the people and detections left, a *partial* match: a detection lying at least ``partial_cover``
  inside a person's box and covering at least ``partial_area`` of that box's area (a box on the head and chest of
  a person whose visible body runs to the bottom of a portrait, or on the head and pointing arm of a man leaning
  in): the person is found, with a poor box; pairs again greedily from the largest covered area down;
- an unmatched detection is *excused* (neither found nor false) when it overlaps an ignore box with
  IoU >= ``min_iou``, or when at least ``min_cover`` of its area lies inside one ignore box while less than
  ``min_cover`` of it lies inside every labelled person's box (a box on a background crowd is excused, a second
  box on a counted person is not, even where a crowd region lies behind that person);
- every other unmatched detection is a *false box* (between two people, a duplicate, a part of a person, an
  object).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metahmr_cli.detect.base import box_iou
from metahmr_cli.errors import InputError

__all__ = ["PeopleMatch", "box_cover", "match_people"]


def _boxes(value: np.ndarray | list | None, name: str) -> np.ndarray:
    arr = np.zeros((0, 4)) if value is None else np.asarray(value, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4))
    if arr.ndim != 2 or arr.shape[1] != 4 or not np.isfinite(arr).all():
        raise InputError(f"{name} must be finite boxes of shape (N, 4) [x1, y1, x2, y2], got shape {arr.shape}.")
    return arr


def box_cover(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Fraction of each box of ``a`` (N, 4) lying inside each box of ``b`` (M, 4), xyxy -> (N, M) in [0, 1]."""
    a = _boxes(a, "a")
    b = _boxes(b, "b")
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    return np.where(area[:, None] > 0, inter / np.maximum(area[:, None], 1e-12), 0.0)


@dataclass(frozen=True)
class PeopleMatch:
    """Result of :func:`match_people` for D detections and N labelled people.

    Attributes:
        det_person: (D,) index of the person each detection matched, -1 for none.
        person_det: (N,) index of the detection each person matched, -1 when missed.
        person_iou: (N,) IoU of each person's match (0 when missed).
        person_partial: (N,) the person's match is a partial one (a box on part of them).
        excused: (D,) unmatched detections on ignore regions (not counted as false).
    """

    det_person: np.ndarray
    person_det: np.ndarray
    person_iou: np.ndarray
    person_partial: np.ndarray
    excused: np.ndarray

    @property
    def found(self) -> int:
        """Labelled people with a matching detection."""
        return int((self.person_det >= 0).sum())

    @property
    def partial(self) -> int:
        """Labelled people found by a partial match only."""
        return int(self.person_partial.sum())

    @property
    def missed(self) -> int:
        """Labelled people without a matching detection."""
        return int((self.person_det < 0).sum())

    @property
    def false_boxes(self) -> int:
        """Detections that match nobody and are not excused by an ignore region."""
        return int(((self.det_person < 0) & ~self.excused).sum())


def match_people(detections: np.ndarray, people: np.ndarray, ignore: np.ndarray | None = None, *,
                 min_iou: float = 0.5, min_cover: float = 0.5, partial_cover: float = 0.7,
                 partial_area: float = 0.25) -> PeopleMatch:
    """Match detected person boxes to labelled ones (rules in the module docstring).

    Args:
        detections: (D, 4) detected boxes x1, y1, x2, y2 (pixels).
        people: (N, 4) boxes of the labelled people who count.
        ignore: (M, 4) ignore boxes / regions, or None.
        min_iou: lowest IoU of a match.
        min_cover: area fraction of a detection inside an ignore region that excuses it.
        partial_cover: area fraction of a detection inside a person's box for a partial match.
        partial_area: smallest detection area, as a fraction of the person's box area, for a partial match.

    Returns:
        A :class:`PeopleMatch`.
    """
    det = _boxes(detections, "detections")
    ppl = _boxes(people, "people")
    ign = _boxes(ignore, "ignore")
    det_person = np.full(len(det), -1, np.int64)
    person_det = np.full(len(ppl), -1, np.int64)
    person_iou = np.zeros(len(ppl))
    person_partial = np.zeros(len(ppl), bool)
    if len(det) and len(ppl):
        iou = box_iou(det, ppl)
        cover = box_cover(det, ppl)
        det_area = np.clip(det[:, 2:] - det[:, :2], 0, None).prod(axis=1)
        ppl_area = np.clip(ppl[:, 2:] - ppl[:, :2], 0, None).prod(axis=1)
        area_ratio = det_area[:, None] / np.maximum(ppl_area[None, :], 1e-12)
        partial_ok = (cover >= partial_cover) & (area_ratio >= partial_area)
        for score, ok, partial in ((iou, iou >= min_iou, False), (cover * area_ratio, partial_ok, True)):
            d_idx, p_idx = np.nonzero(ok)
            # best first; lexsort's last key is the primary one
            for k in np.lexsort((p_idx, d_idx, -score[d_idx, p_idx])):
                d, p = d_idx[k], p_idx[k]
                if det_person[d] < 0 and person_det[p] < 0:
                    det_person[d], person_det[p], person_iou[p] = p, d, iou[d, p]
                    person_partial[p] = partial
    excused = np.zeros(len(det), bool)
    unmatched = det_person < 0
    if len(ign) and unmatched.any():
        on_ignored = (box_iou(det, ign) >= min_iou).any(axis=1)
        in_region = (box_cover(det, ign) >= min_cover).any(axis=1)
        on_person = (box_cover(det, ppl) >= min_cover).any(axis=1) if len(ppl) else np.zeros(len(det), bool)
        excused = unmatched & (on_ignored | (in_region & ~on_person))
    return PeopleMatch(det_person, person_det, person_iou, person_partial, excused)
