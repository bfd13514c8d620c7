"""The background threads of a run: images prepared ahead of the networks, video frames decoded ahead.

Neither changes results: :class:`Prefetch` never runs past a video (the detector and keypoint models are never used
by two threads at once), and :func:`read_ahead` hands the frames over in order, raising where the producer raised.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from metahmr_cli.estimator import Frame

__all__ = ["Prefetch", "read_ahead"]


class Prefetch:
    """Prepares the images of a run (read, detect, keypoints, crops) ahead of the networks, in one background
    thread, so that the next images are ready when TTO of the current batch ends.

    ``plan[i]`` says what item ``i`` is: "image" (prepared ahead), "pass" (needs no preparation: a failed scan
    entry, a skipped input) or "video" (processed on the calling thread). Preparation never runs past a video, so
    the detector and keypoint models are never used by two threads at once. ``depth`` 0 prepares each image when
    it is taken, on the calling thread.
    """

    def __init__(self, prepare: Callable[[Any], Frame], items: list[Any], plan: list[str], depth: int) -> None:
        self.prepare, self.items, self.plan, self.depth = prepare, items, plan, depth
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="metahmr-prefetch") if depth > 0 else None
        self.futures: dict[int, Future[Frame]] = {}
        self.cursor = 0

    def take(self, i: int) -> Frame:
        """The prepared frame of ``items[i]`` (raises what preparing it raised)."""
        if self.pool is None:
            return self.prepare(self.items[i])
        self._fill(i)
        fut = self.futures.pop(i)  # an "image" item at or after the cursor is always submitted by _fill
        try:
            return fut.result()
        finally:
            self._fill(i + 1)

    def _fill(self, start: int) -> None:
        assert self.pool is not None
        self.cursor = max(self.cursor, start)
        while self.cursor < len(self.items) and len(self.futures) < self.depth:
            kind = self.plan[self.cursor]
            if kind == "video":
                break
            if kind == "image":
                self.futures[self.cursor] = self.pool.submit(self.prepare, self.items[self.cursor])
            self.cursor += 1

    def close(self) -> None:
        """Cancel what has not started; wait for the image being prepared (it holds the detector)."""
        if self.pool is not None:
            for fut in self.futures.values():
                fut.cancel()
            self.futures.clear()
            self.pool.shutdown(wait=True, cancel_futures=True)


_END = object()


def read_ahead(frames: Iterator[Any], depth: int) -> Iterator[Any]:
    """The items of ``frames`` (decoded video frames), produced up to ``depth`` ahead by a background thread.

    Exceptions of the producer are raised where the item would have been. Closing the generator (or dropping it)
    stops the producer; ``depth`` 0 returns ``frames`` itself."""
    if depth <= 0:
        yield from frames
        return
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[bool, Any]) -> bool:
        """Hand ``entry`` to the consumer; False once the consumer has stopped."""
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for x in frames:
                if not put((True, x)):
                    return
            put((True, _END))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put((False, exc))
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="metahmr-decode", daemon=True)
    worker.start()
    try:
        while True:
            ok, x = q.get()
            if not ok:
                raise x
            if x is _END:
                return
            yield x
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                q.get_nowait()
        worker.join(timeout=5)
