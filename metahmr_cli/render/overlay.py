"""Mesh overlays with pyrender (offscreen, EGL by default).

Conventions follow the CLIFF demo renderer: a pinhole camera at the origin with the full-image intrinsics
(focal f, principal point W/2, H/2), meshes given in the OpenCV camera frame (x right, y down, z forward) and
turned 180 degrees about x into OpenGL's frame, two white directional lights, one colour per person
(hue n/P, saturation 0.5), and the render composited over the image where it has depth.
"""

from __future__ import annotations

import colorsys
import importlib
import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from metahmr_cli.errors import MetaHMRError

logger = logging.getLogger(__name__)

_GL_FROM_CV = np.array([1.0, -1.0, -1.0], dtype=np.float32)  # 180 degrees about x


_INTERRUPTS = [0]


def note_interrupt() -> None:
    """Record a SIGINT (called by the runner's signal handler). A KeyboardInterrupt raised inside an OpenGL call
    through ctypes can come back as another exception (ArgumentError, TypeError); the renderer checks this count so
    that such an error stops the run instead of switching renders off."""
    _INTERRUPTS[0] += 1


def interrupt_count() -> int:
    """Number of interrupts recorded by :func:`note_interrupt`."""
    return _INTERRUPTS[0]


class RendererUnavailable(MetaHMRError):
    """No offscreen OpenGL context could be created (pyrender missing, or no EGL/OSMesa on this machine)."""


def person_colors(num_people: int) -> list[tuple[float, float, float]]:
    """One RGB colour in [0, 1] per person: hsv(n / P, 0.5, 1) as in the CLIFF demo."""
    n = max(num_people, 1)
    return [colorsys.hsv_to_rgb(i / n, 0.5, 1.0) for i in range(num_people)]


def track_colors(track_ids: np.ndarray | list[int]) -> list[tuple[float, float, float]]:
    """One RGB colour in [0, 1] per track id, the same for an id in every frame: hues spaced by the golden ratio
    (ids 1, 2, 3, ... get well separated colours). An untracked person (id < 0) is grey."""
    out = []
    for tid in np.asarray(track_ids, np.int64).reshape(-1):
        if tid < 0:
            out.append((0.7, 0.7, 0.7))
        else:
            out.append(colorsys.hsv_to_rgb((0.1 + 0.61803398875 * int(tid)) % 1.0, 0.55, 1.0))
    return out


def _colors(colors: list[tuple[float, float, float]] | None, num_people: int) -> list[tuple[float, float, float]]:
    if colors is None:
        return person_colors(num_people)
    if len(colors) != num_people:
        raise ValueError(f"{len(colors)} colours for {num_people} people")
    return [tuple(float(c) for c in rgb) for rgb in colors]  # type: ignore[misc]


def _preload_llvm_users() -> None:
    """Load triton (shipped with CUDA builds of torch) before the first OpenGL context.

    Mesa's software rasteriser (llvmpipe) and triton each bring their own LLVM; when triton's library is
    loaded after llvmpipe has initialised, the process crashes (segmentation fault) as soon as torch imports
    triton, e.g. through torchvision.ops or torch.compile. Loaded in the other order they coexist.
    """
    if "triton" in sys.modules or importlib.util.find_spec("triton") is None:
        return
    try:
        importlib.import_module("triton")
    except Exception:  # pragma: no cover - a broken triton only matters to its own users
        logger.debug("could not preload triton", exc_info=True)


def _import_pyrender() -> Any:
    """Import pyrender for offscreen use (EGL unless PYOPENGL_PLATFORM is set); RendererUnavailable on failure."""
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    _preload_llvm_users()
    if not hasattr(np, "infty"):  # removed in numpy 2, still used by pyrender
        np.infty = np.inf  # type: ignore[attr-defined]
    try:
        import pyrender
    except Exception as exc:
        raise RendererUnavailable(
            f"pyrender cannot be imported ({type(exc).__name__}: {exc}); install it with "
            "`pip install 'metahmr[render]'`, or run with --no-render"
        ) from exc
    return pyrender


_T = TypeVar("_T")


class MeshRenderer:
    """Draws all people of one image with pyrender.

    The OpenGL context is created on first use; if that fails, every call raises :class:`RendererUnavailable`.
    An OpenGL context is current in one thread at a time, so every OpenGL call runs on the renderer's own thread
    (``metahmr-gl``): the renderer may be called from any thread, one call at a time per thread.
    Images whose longer side exceeds ``max_side`` are rendered at a reduced size (intrinsics scaled to match).

    Args:
        max_side: largest rendered side in pixels.
        side_bg: background colour (RGB 0..255) of side views.
    """

    def __init__(self, *, max_side: int = 2048, side_bg: tuple[int, int, int] = (255, 255, 255)) -> None:
        self.max_side = int(max_side)
        self.side_bg = side_bg
        self._pyrender: Any = None
        self._renderer: Any = None
        self._error: RendererUnavailable | None = None
        self._gl: ThreadPoolExecutor | None = None
        self._gl_thread: int | None = None
        self._gl_lock = threading.Lock()

    def _on_gl_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` run on the renderer's OpenGL thread (started on first use); waits for the result."""
        if threading.get_ident() == self._gl_thread:
            return fn(*args)
        with self._gl_lock:
            if self._gl is None:
                self._gl = ThreadPoolExecutor(1, thread_name_prefix="metahmr-gl", initializer=self._mark_gl_thread)
            pool = self._gl
        return pool.submit(fn, *args).result()

    def _mark_gl_thread(self) -> None:
        self._gl_thread = threading.get_ident()

    # ---------------------------------------------------------------------------------------------------- context
    def _ensure(self, width: int, height: int) -> Any:
        if self._error is not None:
            raise self._error
        mark = interrupt_count()
        try:
            if self._pyrender is None:
                self._pyrender = _import_pyrender()
            if self._renderer is None:
                self._renderer = self._pyrender.OffscreenRenderer(viewport_width=width, viewport_height=height)
            elif (self._renderer.viewport_width, self._renderer.viewport_height) != (width, height):
                self._renderer.viewport_width = width
                self._renderer.viewport_height = height
        except RendererUnavailable as exc:
            self._error = exc
            raise
        except Exception as exc:  # EGL/OSMesa context errors come in many types
            if interrupt_count() != mark:  # a Ctrl-C that ctypes turned into another error
                raise KeyboardInterrupt from exc
            platform = os.environ.get("PYOPENGL_PLATFORM", "")
            self._error = RendererUnavailable(
                f"no offscreen OpenGL context (PYOPENGL_PLATFORM={platform!r}): {type(exc).__name__}: {exc}. "
                "Install EGL (libegl1, with Mesa or the NVIDIA driver) or OSMesa, or run with --no-render"
            )
            raise self._error from exc
        return self._renderer

    def close(self) -> None:
        """Release the OpenGL context (on the thread it is current in) and stop the renderer's thread."""
        if self._renderer is not None:
            try:
                self._on_gl_thread(self._renderer.delete)
            except Exception:  # pragma: no cover - best effort at shutdown
                logger.debug("renderer cleanup failed", exc_info=True)
            self._renderer = None
        with self._gl_lock:
            pool, self._gl = self._gl, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __enter__(self) -> MeshRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------------------- drawing
    def _fit(self, height: int, width: int, K: np.ndarray) -> tuple[int, int, np.ndarray, float]:
        s = min(1.0, self.max_side / max(height, width))
        K = np.asarray(K, dtype=np.float64).copy()
        if s < 1.0:
            K[:2] *= s
        return max(1, round(height * s)), max(1, round(width * s)), K, s

    def _render_rgba(self, vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, height: int, width: int,
                     colors: list[tuple[float, float, float]]) -> tuple[np.ndarray, np.ndarray]:
        """Render meshes (P, V, 3) in the OpenCV camera frame; returns color (H, W, 3) uint8 and mask (H, W) bool."""
        return self._on_gl_thread(self._render_rgba_here, vertices, faces, K, height, width, colors)

    def _render_rgba_here(self, vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, height: int, width: int,
                          colors: list[tuple[float, float, float]]) -> tuple[np.ndarray, np.ndarray]:
        renderer = self._ensure(width, height)
        pyrender = self._pyrender
        import trimesh

        scene = pyrender.Scene(bg_color=[0.0, 0.0, 0.0, 0.0], ambient_light=(0.3, 0.3, 0.3))
        faces = np.asarray(faces, dtype=np.int64)
        for verts, rgb in zip(vertices, colors, strict=True):
            tm = trimesh.Trimesh(np.asarray(verts, np.float32) * _GL_FROM_CV, faces, process=False)
            material = pyrender.MetallicRoughnessMaterial(
                metallicFactor=0.2, alphaMode="OPAQUE", baseColorFactor=(*rgb, 1.0)
            )
            scene.add(pyrender.Mesh.from_trimesh(tm, material=material))
        camera = pyrender.IntrinsicsCamera(fx=K[0, 0], fy=K[1, 1], cx=K[0, 2], cy=K[1, 2], zfar=1e4)
        scene.add(camera, pose=np.eye(4))
        for axis, angle in (((1, 0, 0), -np.pi / 4), ((0, 1, 0), np.pi / 4)):
            light = pyrender.DirectionalLight(color=np.ones(3), intensity=3.0)
            scene.add(light, pose=trimesh.transformations.rotation_matrix(angle, axis))
        mark = interrupt_count()
        try:
            color, depth = renderer.render(scene, flags=pyrender.RenderFlags.RGBA)
        except Exception as exc:
            if interrupt_count() != mark or isinstance(exc.__context__, KeyboardInterrupt):
                raise KeyboardInterrupt from exc  # a Ctrl-C inside the OpenGL call: stop, do not disable renders
            self._error = RendererUnavailable(f"offscreen rendering failed: {type(exc).__name__}: {exc}")
            raise self._error from exc
        return np.ascontiguousarray(color[..., :3]), depth > 0

    def render_overlay(self, image: np.ndarray, vertices: np.ndarray, faces: np.ndarray, K: np.ndarray,
                       colors: list[tuple[float, float, float]] | None = None) -> np.ndarray:
        """Draw every person's mesh over the image.

        Args:
            image: (H, W, 3) uint8 RGB.
            vertices: (P, V, 3) camera-frame vertices in metres (translation included); P may be 0.
            faces: (F, 3) triangle indices.
            K: (3, 3) intrinsics of ``image``.
            colors: one RGB colour in [0, 1] per person (:func:`person_colors` when None).
        Returns:
            (h, w, 3) uint8 RGB; (h, w) = (H, W) unless the image is larger than ``max_side``.
        """
        image = np.asarray(image)
        H, W = image.shape[:2]
        h, w, Ks, s = self._fit(H, W, K)
        base = image if s == 1.0 else _resize(image, w, h)
        vertices = np.asarray(vertices)
        if len(vertices) == 0:
            return base.copy()
        color, mask = self._render_rgba(vertices, faces, Ks, h, w, _colors(colors, len(vertices)))
        out = base.copy()
        out[mask] = color[mask]
        return out

    def render_side_view(self, image_hw: tuple[int, int], vertices: np.ndarray, faces: np.ndarray,
                         K: np.ndarray, colors: list[tuple[float, float, float]] | None = None) -> np.ndarray:
        """Render the people seen from their right: vertices turned +90 degrees about the vertical axis through
        the group's centre (mean vertex with x = y = 0, as in the CLIFF demo), on a plain background, moved away
        from the camera as far as needed for everyone to stay in the frame, feet included.

        Returns (h, w, 3) uint8 RGB.
        """
        H, W = image_hw
        h, w, Ks, _ = self._fit(int(H), int(W), K)
        out = np.empty((h, w, 3), np.uint8)
        out[:] = np.asarray(self.side_bg, np.uint8)
        vertices = np.asarray(vertices, np.float64)
        if len(vertices) == 0:
            return out
        center = vertices.reshape(-1, 3).mean(0)
        center[:2] = 0.0
        c, s = np.cos(np.pi / 2), np.sin(np.pi / 2)
        rot_y = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
        turned = (vertices - center) @ rot_y + center
        turned[..., 2] += _fit_depth(turned.reshape(-1, 3), Ks, h, w)
        color, mask = self._render_rgba(turned, faces, Ks, h, w, _colors(colors, len(vertices)))
        out[mask] = color[mask]
        return out


def _fit_depth(points: np.ndarray, K: np.ndarray, height: int, width: int, margin: float = 0.04) -> float:
    """How far (m, >= 0) to push points (N, 3) away from the camera so that all of them project inside the image,
    ``margin`` of its size from every edge.

    Turned to the side, a person who stood near the camera's axis can come closer to it than before, and their
    feet (or a neighbour) would leave the frame: ``u = fx x / (z + dz) + cx`` stays within the limits once
    ``z + dz >= fx |x| / (room on that side)``."""
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    room_x = np.where(x < 0, cx - margin * width, width * (1 - margin) - cx)
    room_y = np.where(y < 0, cy - margin * height, height * (1 - margin) - cy)
    need = np.maximum(fx * np.abs(x) / np.maximum(room_x, 1.0), fy * np.abs(y) / np.maximum(room_y, 1.0))
    return float(max(0.0, np.max(need - z)))


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    import cv2

    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
