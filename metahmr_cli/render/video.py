"""MP4 output through imageio-ffmpeg's bundled ffmpeg (H.264, yuv420p), written atomically."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from metahmr_cli.files import temp_path_for


class VideoWriter:
    """Write RGB frames to an MP4 at a given frame rate.

    Frames go to a temporary file beside ``path``; :meth:`close` renames it to ``path``, :meth:`abort` (or an
    exception inside a ``with`` block) deletes it. All frames must have the size of the first; odd sizes are
    padded by one pixel (H.264 with yuv420p needs even sizes).

    Example::

        with VideoWriter(out / "clip.mp4", fps=10.0) as vw:
            for frame in frames:
                vw.write(frame)
    """

    def __init__(self, path: str | Path, fps: float, *, quality: float = 7.0) -> None:
        if not fps or not np.isfinite(fps) or fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.fps = float(fps)
        self.quality = quality
        self.frames_written = 0
        self._tmp = temp_path_for(self.path)
        self._gen: Any = None
        self._size: tuple[int, int] | None = None  # (H, W) of the input frames

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame."""
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 frame, got {frame.shape} {frame.dtype}")
        if self._gen is None:
            import imageio_ffmpeg

            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._size = frame.shape[:2]
            h, w = (s + s % 2 for s in self._size)
            self._gen = imageio_ffmpeg.write_frames(
                str(self._tmp), (w, h), fps=self.fps, codec="libx264", pix_fmt_out="yuv420p",
                quality=self.quality, macro_block_size=1, ffmpeg_log_level="error",
            )
            self._gen.send(None)
        elif frame.shape[:2] != self._size:
            raise ValueError(f"frame size {frame.shape[:2]} differs from the first frame {self._size}")
        H, W = frame.shape[:2]
        if H % 2 or W % 2:
            frame = np.pad(frame, ((0, H % 2), (0, W % 2), (0, 0)), mode="edge")
        self._gen.send(np.ascontiguousarray(frame))
        self.frames_written += 1

    def close(self) -> Path | None:
        """Finish the file and move it into place; returns its path (None when no frame was written)."""
        if self._gen is None:
            return None
        gen, self._gen = self._gen, None
        try:
            gen.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                self._tmp.unlink()
            raise
        return self.path

    def abort(self) -> None:
        """Stop writing and delete the partial file."""
        if self._gen is not None:
            gen, self._gen = self._gen, None
            with contextlib.suppress(Exception):
                gen.close()
        with contextlib.suppress(OSError):
            self._tmp.unlink()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def count_video_frames(path: str | Path) -> int:
    """Number of decodable frames of a video (decodes the whole file; for checks and tests)."""
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path))
    next(gen)  # metadata
    return sum(1 for _ in gen)
