"""Progress of long commands (``process``, ``eval``) with an ETA estimated from the work itself.

The time a unit of work takes depends on what it holds, not on how many inputs there are: a photo of four people
costs about four times the test-time optimisation of a photo of one, a video frame whose people start from their
previous frame's weights costs less than a photo, and EFT's 20 steps cost more than a plain regression. So the
estimate keeps, per *class* of work (``image`` and ``frame`` for ``process``, one per method for ``eval``), the
seconds spent, the units done and the people in them, fits ``seconds = a * units + b * people`` to the finished
work of the class (non-negative least squares over the intervals between updates), and prices every input still
to do with its class's fit and its expected people per unit (those seen so far in that input, else in its class,
else overall). A class with no finished work yet borrows the mean rate of the others. There is an ETA from the
first finished unit on; before it the line says "estimating".

A terminal gets a rich bar; logs and CI get a plain line every ``every`` seconds (and whatever :meth:`note`
adds).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CostModel", "WorkProgress", "format_duration"]

logger = logging.getLogger(__name__)


def format_duration(seconds: float | None) -> str:
    """``h:mm:ss`` (``m:ss`` under an hour); "estimating" for None."""
    if seconds is None or not np.isfinite(seconds):
        return "estimating"
    s = int(round(max(seconds, 0.0)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


@dataclass
class _Work:
    cls: str
    units: float          # planned units of the input
    done: float = 0.0     # units finished by work
    free: float = 0.0     # units finished without work (skipped, resumed)
    people: float = 0.0   # people seen in the units finished by work

    @property
    def left(self) -> float:
        return max(self.units - self.done - self.free, 0.0)


class CostModel:
    """Seconds per unit of work, per class, from the finished work (see the module docstring)."""

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[float, float, float]]] = {}  # class -> (units, people, seconds)

    def add(self, cls: str, units: float, people: float | None, seconds: float) -> None:
        """One interval of finished work: ``units`` of class ``cls`` holding ``people`` (None: not counted)."""
        if units <= 0 or seconds < 0:
            return
        self.rows.setdefault(cls, []).append((float(units), -1.0 if people is None else float(people),
                                              float(seconds)))

    def fit(self, cls: str) -> tuple[float, float] | None:
        """(seconds per unit, seconds per person) of a class; None without finished work."""
        rows = self.rows.get(cls)
        if not rows:
            return None
        a = np.array(rows, np.float64)
        units, people, secs = a[:, 0], a[:, 1], a[:, 2]
        if (people < 0).any() or len(rows) < 2 or np.ptp(people / units) < 1e-9:
            return float(secs.sum() / units.sum()), 0.0  # one rate: people not counted or never varied
        from scipy.optimize import nnls

        (per_unit, per_person), _ = nnls(np.stack([units, people], axis=1), secs)
        if per_unit == 0 and per_person == 0:
            return float(secs.sum() / units.sum()), 0.0
        return float(per_unit), float(per_person)

    def rate(self, cls: str, people_per_unit: float) -> float | None:
        """Expected seconds per unit of ``cls`` with ``people_per_unit``; a class without finished work gets the
        mean rate of the others (None when nothing has finished at all)."""
        fit = self.fit(cls)
        if fit is not None:
            return fit[0] + fit[1] * people_per_unit
        total = [(sum(r[0] for r in rows), sum(r[2] for r in rows)) for rows in self.rows.values()]
        units = sum(u for u, _ in total)
        return sum(s for _, s in total) / units if units > 0 else None


class WorkProgress:
    """Progress over units (images and video frames, or evaluated samples) with an ETA from a :class:`CostModel`.

    Args:
        label: the command ("process", "eval").
        unit: what a unit is, for the plain lines ("images+frames", "samples").
        enabled: show anything at all.
        console: rich console (None: plain lines through logging).
        every: seconds between plain lines when the output is not a terminal.
        clock: time source (tests give their own).
    """

    def __init__(self, *, label: str, unit: str, enabled: bool = True, console: Any = None, every: float = 10.0,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.label, self.unit, self.enabled, self.console, self.every = label, unit, enabled, console, every
        self.clock = clock
        self.model = CostModel()
        self.work: dict[str, _Work] = {}
        self.t0 = clock()
        self.last = self.t0
        self.last_line = self.t0
        self.bar: Any = None
        self.task: Any = None
        self.name = ""

    # ---------------------------------------------------------------------------------------------- the plan
    def add_work(self, key: str, units: float, cls: str) -> None:
        """Plan ``units`` of work for input ``key`` of class ``cls``."""
        self.work[key] = _Work(cls=cls, units=max(float(units), 0.0))
        if self.bar is not None:
            self.bar.update(self.task, total=self.total)

    @property
    def total(self) -> float:
        return sum(w.units for w in self.work.values())

    @property
    def done(self) -> float:
        return sum(min(w.done + w.free, w.units) for w in self.work.values())

    # ---------------------------------------------------------------------------------------------- updates
    def __enter__(self) -> WorkProgress:
        self.t0 = self.last = self.last_line = self.clock()
        if self.enabled and self._isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            columns = (TextColumn(f"[bold]{self.label}[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TextColumn("ETA {task.fields[eta]}", markup=False),
                       TextColumn("{task.fields[name]}", markup=False))
            self.bar = Progress(*columns, console=self.console, transient=False)
            self.bar.__enter__()
            self.task = self.bar.add_task(self.label, total=max(self.total, 1), name="", eta=format_duration(None))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
        elif self.enabled and self.done:
            self._line(final=True)

    def _isatty(self) -> bool:
        stream = getattr(self.console, "file", None) or sys.stderr
        return bool(getattr(stream, "isatty", lambda: False)())

    def current(self, name: str) -> None:
        """Name what is being worked on."""
        self.name = name
        if self.bar is not None:
            self.bar.update(self.task, name=name)

    def advance(self, key: str, units: float = 1, *, people: float | None = None, name: str = "",
                timed: bool = True) -> None:
        """``units`` of input ``key`` are finished (with ``people`` in them, when counted); ``timed`` False: they
        took no real work (e.g. frames resumed from an earlier run) and say nothing about the rate."""
        if timed:
            self.advance_many([(key, units, people)], name=name)
            return
        w = self.work.get(key)
        if w is None:
            w = self.work[key] = _Work(cls=key, units=units)
        w.free += units
        self.last = self.clock()
        self._show(name)

    def advance_many(self, parts: list[tuple[str, float, float | None]], *, name: str = "") -> None:
        """Several inputs finished together (e.g. a unit of work that came back from another process): ``parts``
        holds (key, units, people or None) per input; the time since the last update is one interval of work per
        class, shared between the classes by their units."""
        now = self.clock()
        per_class: dict[str, list[Any]] = {}  # class -> [units, people, people counted]
        for key, units, people in parts:
            w = self.work.get(key)
            if w is None:
                w = self.work[key] = _Work(cls=key, units=units)
            w.done += units
            if people is not None:
                w.people += people
            c = per_class.setdefault(w.cls, [0.0, 0.0, True])
            c[0] += units
            c[1] += people or 0.0
            c[2] = c[2] and people is not None
        total = sum(c[0] for c in per_class.values())
        for cls, (units, people, counted) in per_class.items():
            seconds = (now - self.last) * units / total if total > 0 else 0.0
            self.model.add(cls, units, people if counted else None, seconds)
        self.last = now
        self._show(name)

    def skip(self, key: str, name: str = "") -> None:
        """Input ``key`` needs no work (done by an earlier run): its units count as done, and take no time."""
        w = self.work.get(key)
        if w is not None:
            w.free = w.units - w.done
        self.last = self.clock()  # the time of the check is not work of the next unit
        self._show(name)

    def note(self, text: str) -> None:
        """A line of its own when the output is not a terminal (e.g. which method starts); nothing on a bar."""
        if self.enabled and self.bar is None:
            self._print(f"{self.label}: {text}")

    def _show(self, name: str) -> None:
        if name:
            self.name = name
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, total=max(self.total, 1), name=self.name,
                            eta=format_duration(self.eta()))
        elif self.enabled and self.clock() - self.last_line >= self.every:
            self._line()

    # ---------------------------------------------------------------------------------------------- estimate
    def eta(self) -> float | None:
        """Seconds left (None before any unit has finished)."""
        people_units = [(w.people, w.done) for w in self.work.values() if w.done > 0]
        overall = sum(p for p, _ in people_units) / max(sum(u for _, u in people_units), 1e-9)
        left = 0.0
        for w in self.work.values():
            rest = w.left
            if rest <= 0:
                continue
            if w.done > 0:
                ppu = w.people / w.done
            else:
                same = [(v.people, v.done) for v in self.work.values() if v.cls == w.cls and v.done > 0]
                ppu = sum(p for p, _ in same) / sum(u for _, u in same) if same else overall
            rate = self.model.rate(w.cls, ppu)
            if rate is None:
                return None
            left += rest * rate
        return left

    def _line(self, final: bool = False) -> None:
        now = self.clock()
        self.last_line = now
        elapsed = now - self.t0
        done, total = self.done, self.total
        text = f"{self.label}: {done:.0f}/{total:.0f} {self.unit}, {format_duration(elapsed)} elapsed"
        if not final:
            text += f", ETA {format_duration(self.eta())}"
        if self.name and not final:
            text += f", at {self.name}"
        self._print(text)

    def _print(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)  # one line, whatever the width
        else:
            logger.info(text)
