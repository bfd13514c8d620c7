"""The ETA of ``process`` and ``eval``: priced from the finished work (units, people, class), shown from the first
finished unit on, and plain lines when the output is not a terminal. A fake clock makes every number exact."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from metahmr_cli.progress import CostModel, WorkProgress, format_duration


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _plain(every: float = 0.0):
    buf = io.StringIO()
    return buf, Console(file=buf, width=40, force_terminal=False, color_system=None)


def test_photos_then_a_crowded_video_are_priced_by_people():
    """The examples: two photos (2 people, 1 person) that took 120 s and 60 s, then a 20-frame video of 4 people.
    Per person 60 s: before any frame, the frames are priced from the photos' fit at the video's expected people
    (the photos' 1.5 per image): 20 * 90 s, not a few seconds. After the first frame (4 people, 100 s) the frames'
    own rate counts: 19 * 100 s."""
    clock = Clock()
    p = WorkProgress(label="process", unit="images+frames", enabled=False, clock=clock)
    with p:
        p.add_work("basketball1", 1, "image")
        p.add_work("messi5", 1, "image")
        p.add_work("pedestrians", 20, "frame")
        assert p.eta() is None  # nothing finished: "estimating", never a made-up number
        clock.t = 120.0
        p.advance("basketball1", 1, people=2)
        # one photo: one rate (120 s per image); the second photo and the frames at it
        assert p.eta() == pytest.approx(21 * 120.0)
        clock.t = 180.0
        p.advance("messi5", 1, people=1)
        # two photos: 60 s per person and nothing per image (exact fit); frames expect 1.5 people each
        assert p.eta() == pytest.approx(20 * 1.5 * 60.0)
        clock.t = 280.0
        p.advance("pedestrians", 1, people=4)
        assert p.eta() == pytest.approx(19 * 100.0)
        assert format_duration(p.eta()) == "31:40"


def test_skipped_and_resumed_work_takes_no_time_and_leaves_the_rate_alone():
    clock = Clock()
    p = WorkProgress(label="process", unit="images+frames", enabled=False, clock=clock)
    with p:
        p.add_work("old", 1, "image")
        p.add_work("new", 2, "image")
        p.add_work("clip", 4, "frame")
        clock.t = 500.0  # checking the earlier run's files
        p.skip("old")
        clock.t = 530.0
        p.advance("new", 1, people=1)
        assert p.eta() == pytest.approx(30.0 + 4 * 30.0)  # the 500 s of the skip are not work
        clock.t = 531.0
        p.advance("clip", 2, name="clip frame 1 (resumed)", timed=False)
        assert p.done == 4 and p.total == 7
        assert p.eta() == pytest.approx(30.0 + 2 * 30.0)


def test_eval_methods_have_their_own_rates():
    """eval: one class per method; a method that has not run yet borrows the others' mean rate."""
    m = CostModel()
    m.add("none", 20, None, 2.0)
    m.add("eft", 20, None, 60.0)
    assert m.rate("none", 1.0) == pytest.approx(0.1)
    assert m.rate("eft", 1.0) == pytest.approx(3.0)
    assert m.rate("metahmr", 1.0) == pytest.approx(62.0 / 40)
    assert CostModel().rate("eft", 1.0) is None


def test_plain_lines_name_the_eta_from_the_first_unit_and_notes_show():
    clock = Clock()
    buf, console = _plain()
    with WorkProgress(label="eval", unit="samples", console=console, every=10.0, clock=clock) as p:
        p.add_work("none", 40, "none")
        p.add_work("eft", 40, "eft")
        p.note("eft: up to 20 adam steps")
        clock.t = 12.0
        p.advance("none", 20)
        clock.t = 13.0
        p.advance("eft", 20)  # within 10 s of the last line: no new line
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    assert lines[0] == "eval: eft: up to 20 adam steps"
    # 20 of "none" and 40 of "eft" (which borrows the 0.6 s per sample of "none") are left
    assert lines[1].startswith("eval: 20/80 samples, 0:12 elapsed, ETA 0:36")
    assert lines[-1].startswith("eval: 40/80 samples, 0:13 elapsed")
    assert len(lines) == 3
