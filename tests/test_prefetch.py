"""Images prepared ahead in a background thread (and video frames decoded ahead) while the networks run.

The reference is the same run with ``prefetch=0`` (every stage in turn, one thread): the outputs must be the same
bits, and the detector and keypoint models must never run on two threads at once.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from test_pipeline_support import (  # noqa: F401  (fixtures)
    EXAMPLES,
    FixedDetector,
    TemplateKeypoints,
    assert_outputs_clean,
    tiny_checkpoint_fixture,
    write_synthetic_video,
)

from metahmr_cli.io.writers import MANIFEST_NAME, load_result_npz, read_manifest
from metahmr_cli.pipeline import Pipeline
from metahmr_cli.pipeline.threads import read_ahead as _read_ahead
from metahmr_cli.process_config import ProcessConfig
from metahmr_cli.tto import TTOConfig

KEYS = ("global_orient", "body_pose", "betas", "transl", "vertices", "keypoints2d", "bbox", "reproj_error_after")


class _Exclusive:
    """Fails when two threads are inside a stage at once; records which threads ran it (with a short sleep, so
    that an overlap would be caught)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.threads: list[str] = []
        self.inputs: list[str] = []  # keypoint calls in order: "<file name>:<frame>"
        self.overlaps = 0

    def enter(self, what: str | None = None) -> None:
        if not self.lock.acquire(blocking=False):
            self.overlaps += 1
            raise RuntimeError("stage used by two threads at once")
        self.threads.append(threading.current_thread().name)
        if what is not None:
            self.inputs.append(what)
        time.sleep(0.01)

    def leave(self) -> None:
        self.lock.release()


class _WatchedDetector(FixedDetector):
    def __init__(self, guard: _Exclusive) -> None:
        super().__init__()
        self.guard = guard

    def detect(self, image):
        self.guard.enter()
        try:
            return super().detect(image)
        finally:
            self.guard.leave()


class _WatchedKeypoints(TemplateKeypoints):
    def __init__(self, guard: _Exclusive) -> None:
        self.guard = guard

    def __call__(self, image, boxes, *, path, frame):
        self.guard.enter(f"{path.name}:{frame}")
        try:
            return super().__call__(image, boxes, path=path, frame=frame)
        finally:
            self.guard.leave()


def _photos(folder):
    folder.mkdir()
    sources = [EXAMPLES / "messi5.jpg", EXAMPLES / "basketball1.png"]
    for i in range(5):
        src = sources[i % 2]
        (folder / f"img{i}{src.suffix}").write_bytes(src.read_bytes())
    return folder


class _MarkRenderer:
    """A renderer that paints each person's projected mean vertex (deterministic, no OpenGL); records the threads
    it ran on and can raise KeyboardInterrupt on a given call (a Ctrl-C while an overlay is drawn)."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.threads: list[str] = []
        self.calls = 0
        self.interrupt_at = interrupt_at

    def render_overlay(self, image, vertices, faces, K, colors=None):
        self.threads.append(threading.current_thread().name)
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        out = np.array(image, copy=True)
        for v in np.asarray(vertices):
            x, y, z = v.mean(0)
            u, w = int(K[0, 0] * x / z + K[0, 2]), int(K[1, 1] * y / z + K[1, 2])
            out[max(w - 2, 0):w + 3, max(u - 2, 0):u + 3] = (255, 0, 0)
        return out

    def render_side_view(self, image_hw, vertices, faces, K, colors=None):
        return np.zeros((*image_hw, 3), np.uint8)


def _run(inputs, out, standin_dir, checkpoint, prefetch, guard=None, renderer=None, **kw):
    guard = guard or _Exclusive()
    cfg = ProcessConfig(inputs=[str(i) for i in inputs], out=out, body=str(standin_dir), checkpoint=checkpoint,
                        device="cpu", keypoints="mediapipe", tto=TTOConfig(max_steps=2), render=renderer is not None,
                        batch_size=2, prefetch=prefetch, **kw)
    report = Pipeline(cfg, progress=False, detector=_WatchedDetector(guard), keypoints=_WatchedKeypoints(guard),
                      renderer=renderer).run()
    return report, guard


def test_prefetching_gives_the_outputs_of_the_sequential_run(tmp_path, standin_dir, tiny_checkpoint):
    photos = _photos(tmp_path / "photos")
    (photos / "img2_broken.jpg").write_bytes(b"not an image")
    results = {}
    for prefetch in (0, 3):
        out = tmp_path / f"out{prefetch}"
        report, guard = _run([photos], out, standin_dir, tiny_checkpoint, prefetch)
        assert report.exit_code == 1 and guard.overlaps == 0
        manifest = read_manifest(out / MANIFEST_NAME)
        assert manifest["img2_broken"].status == "failed" and "img2_broken.jpg" in manifest["img2_broken"].reason
        assert all(manifest[f"img{i}"].status == "ok" for i in range(5))
        results[prefetch] = {i: load_result_npz(out / f"img{i}.npz") for i in range(5)}
        assert_outputs_clean(out)
        if prefetch:  # the images were really prepared on the background thread
            assert set(guard.threads) == {"metahmr-prefetch_0"}
        else:
            assert set(guard.threads) == {threading.main_thread().name}
    for i in range(5):
        for key in KEYS:
            np.testing.assert_array_equal(results[3][i][key], results[0][i][key], err_msg=f"img{i} {key}")


def test_models_are_never_used_by_two_threads_around_a_video(tmp_path, standin_dir, tiny_checkpoint):
    photos = _photos(tmp_path / "photos")
    write_synthetic_video(photos / "img2clip.mp4", n_frames=5)  # sorted between img2 and img3
    out = tmp_path / "out"
    report, guard = _run([photos], out, standin_dir, tiny_checkpoint, 4)
    assert report.exit_code == 0 and guard.overlaps == 0
    manifest = read_manifest(out / MANIFEST_NAME)
    assert manifest["img2clip"].frames == 5 and all(manifest[f"img{i}"].status == "ok" for i in range(5))
    # 5 images on the prefetch thread (twice each: detector and keypoints), the video's 5 frames on the main one
    assert guard.threads.count("metahmr-prefetch_0") == 10
    assert guard.threads.count(threading.main_thread().name) == 10
    # nothing after the video is prepared before the video is done
    order = [name.split(".")[0] for name in guard.inputs]
    last_video = max(i for i, name in enumerate(order) if name == "img2clip")
    assert order[last_video + 1:] == ["img3", "img4"] and order.index("img3") > last_video


def test_read_ahead_keeps_order_raises_in_place_and_stops_its_thread():
    def numbers(n, fail_at=None, closed=None):
        try:
            for i in range(n):
                if i == fail_at:
                    raise ValueError(f"bad frame {i}")
                yield i
        finally:
            if closed is not None:
                closed.set()

    assert list(_read_ahead(numbers(20), 3)) == list(range(20))
    assert list(_read_ahead(numbers(5), 0)) == list(range(5))
    got = []
    with pytest.raises(ValueError, match="bad frame 4"):
        for x in _read_ahead(numbers(10, fail_at=4), 2):
            got.append(x)
    assert got == [0, 1, 2, 3]
    closed = threading.Event()
    it = _read_ahead(numbers(1000, closed=closed), 2)
    assert next(it) == 0
    it.close()  # the consumer stops early: the producer ends and closes its source
    assert closed.wait(timeout=120)
    deadline = time.monotonic() + 120
    while any(t.name == "metahmr-decode" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name == "metahmr-decode" for t in threading.enumerate())


def test_outputs_are_written_and_rendered_while_the_next_batch_runs(tmp_path, standin_dir, tiny_checkpoint):
    from metahmr_cli.io.sources import read_image

    photos = _photos(tmp_path / "photos")
    overlays = {}
    for prefetch in (0, 3):
        out = tmp_path / f"out{prefetch}"
        renderer = _MarkRenderer()
        report, _ = _run([photos], out, standin_dir, tiny_checkpoint, prefetch, renderer=renderer)
        assert report.exit_code == 0
        manifest = read_manifest(out / MANIFEST_NAME)
        assert [manifest[f"img{i}"].status for i in range(5)] == ["ok"] * 5
        assert all(f"img{i}_overlay.png" in manifest[f"img{i}"].outputs for i in range(5))
        overlays[prefetch] = {i: read_image(out / f"img{i}_overlay.png") for i in range(5)}
        expected = "metahmr-write_0" if prefetch else threading.main_thread().name
        assert renderer.threads == [expected] * 5
        assert_outputs_clean(out)
    for i in range(5):
        assert (overlays[0][i] == (255, 0, 0)).all(-1).any()  # the mark is drawn
        np.testing.assert_array_equal(overlays[3][i], overlays[0][i])


def test_an_interrupt_while_outputs_are_written_keeps_what_was_finished(tmp_path, standin_dir, tiny_checkpoint):
    photos = _photos(tmp_path / "photos")
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):  # the 4th overlay is interrupted
        _run([photos], out, standin_dir, tiny_checkpoint, 3, renderer=_MarkRenderer(interrupt_at=4))
    done = read_manifest(out / MANIFEST_NAME)
    assert {k: r.status for k, r in done.items()} == {"img0": "ok", "img1": "ok", "img2": "ok"}
    assert all((out / f"img{i}_overlay.png").is_file() for i in range(3))
    assert_outputs_clean(out)
    # the next run keeps them and does the rest
    report, _ = _run([photos], out, standin_dir, tiny_checkpoint, 3, renderer=_MarkRenderer())
    assert report.exit_code == 0
    manifest = read_manifest(out / MANIFEST_NAME)
    assert [manifest[f"img{i}"].status for i in range(5)] == ["skipped"] * 3 + ["ok"] * 2


class _BlockingRenderer(_MarkRenderer):
    """Draws the first image only once the networks have started on the next batch (records whether they did; the
    wait is bounded so that a runner that does not overlap fails instead of hanging)."""

    def __init__(self, next_batch_started: threading.Event) -> None:
        super().__init__()
        self.next_batch_started = next_batch_started
        self.overlapped: bool | None = None

    def render_overlay(self, image, vertices, faces, K, colors=None):
        if self.overlapped is None:
            self.overlapped = self.next_batch_started.wait(timeout=120)
        return super().render_overlay(image, vertices, faces, K, colors)


def test_a_batchs_outputs_are_written_while_the_next_batch_runs(tmp_path, standin_dir, tiny_checkpoint):
    """The overlap itself: the first batch's overlay is drawn (on the writer thread) while the networks already run
    on the second batch."""
    photos = _photos(tmp_path / "photos")
    started = threading.Event()
    renderer = _BlockingRenderer(started)
    guard = _Exclusive()
    cfg = ProcessConfig(inputs=[str(photos)], out=tmp_path / "out", body=str(standin_dir), checkpoint=tiny_checkpoint,
                        device="cpu", keypoints="mediapipe", tto=TTOConfig(max_steps=2), batch_size=2, prefetch=2)
    pipe = Pipeline(cfg, progress=False, detector=_WatchedDetector(guard), keypoints=_WatchedKeypoints(guard),
                    renderer=renderer)
    regress, calls = pipe.estimator.regress, []

    def watched(frames):
        calls.append([f.item.stem for f in frames])
        if len(calls) == 2:
            started.set()  # the second batch goes through the networks now
        return regress(frames)

    pipe.estimator.regress = watched
    assert pipe.run().exit_code == 0
    assert calls[:2] == [["img0", "img1"], ["img2", "img3"]]
    assert renderer.overlapped is True and renderer.threads[0] == "metahmr-write_0"


def test_images_before_a_video_are_finished_and_recorded_before_it_starts(tmp_path, standin_dir, tiny_checkpoint):
    """The writer is drained before a video: the records of every image before it are in the manifest when the video
    starts (and the renderer is never used by the writer thread and the video at once)."""
    photos = _photos(tmp_path / "photos")
    write_synthetic_video(photos / "img2clip.mp4", n_frames=3)  # sorted between img2 and img3
    out = tmp_path / "out"
    cfg = ProcessConfig(inputs=[str(photos)], out=out, body=str(standin_dir), checkpoint=tiny_checkpoint,
                        device="cpu", keypoints="mediapipe", tto=TTOConfig(max_steps=2), batch_size=2, prefetch=2)
    guard = _Exclusive()
    pipe = Pipeline(cfg, progress=False, detector=_WatchedDetector(guard), keypoints=_WatchedKeypoints(guard),
                    renderer=_MarkRenderer())
    seen_at_video: list[set[str]] = []
    video = pipe._process_video_safe

    def watched(item, out_dir, progress):
        seen_at_video.append(set(read_manifest(out_dir / MANIFEST_NAME)))
        return video(item, out_dir, progress)

    pipe._process_video_safe = watched
    assert pipe.run().exit_code == 0
    assert seen_at_video == [{"img0", "img1", "img2"}]
    assert read_manifest(out / MANIFEST_NAME)["img2clip"].frames == 3
