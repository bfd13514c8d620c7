"""Synthetic occlusion: paste random RGBA object patches over a crop (Sarandi et al. style).

The occluder file is supplied by the user (for example the Pascal VOC occluders
``pascal_occluders.npy``, a pickled list of RGBA uint8 patches). Pickled ``.npy`` files are read with a
restricted unpickler that only rebuilds numpy arrays, so a hostile file cannot run code. A folder of
RGBA ``.png`` files works as well.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import cv2
import numpy as np

from ..errors import DatasetError
from .npzio import read_npy_restricted

__all__ = ["load_occluders", "occlude"]

log = logging.getLogger(__name__)

def _load_npy_restricted(path: Path) -> list[np.ndarray]:
    with open(path, "rb") as f:
        arr = read_npy_restricted(f)
    if isinstance(arr, np.ndarray) and arr.dtype != object and arr.ndim == 4:
        return list(arr)
    return list(np.asarray(arr, dtype=object).reshape(-1)) if not isinstance(arr, list) else arr


def load_occluders(path: str | Path) -> list[np.ndarray]:
    """Read occluder patches.

    Args:
        path: a ``.npy`` holding a list/object array of (h, w, 4) uint8 RGBA patches (or one (K, h, w, 4)
            array), or a folder of RGBA ``.png`` files.
    Returns:
        list of (h, w, 4) uint8 RGBA arrays.
    Raises:
        DatasetError: missing or unreadable file, or patches that are not RGBA.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise DatasetError(
            f"occluder file {p} does not exist; pass a .npy list of RGBA patches (e.g. pascal_occluders.npy) "
            "or a folder of RGBA .png files, or switch synthetic occlusion off."
        )
    if p.is_dir():
        patches = []
        for f in sorted(p.glob("*.png")):
            im = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
            if im is not None and im.ndim == 3 and im.shape[2] == 4:
                patches.append(cv2.cvtColor(im, cv2.COLOR_BGRA2RGBA))
    else:
        try:
            patches = _load_npy_restricted(p)
        except (pickle.UnpicklingError, ValueError, OSError, EOFError) as exc:
            raise DatasetError(f"cannot read occluder file {p}: {exc}") from exc
    out = []
    for i, patch in enumerate(patches):
        a = np.asarray(patch)
        if a.ndim != 3 or a.shape[2] != 4 or min(a.shape[:2]) < 1:
            raise DatasetError(f"occluder {i} in {p} has shape {a.shape}; expected (h, w, 4) RGBA patches.")
        out.append(np.ascontiguousarray(a.astype(np.uint8)))
    if not out:
        raise DatasetError(f"no RGBA occluder patches found in {p}.")
    log.debug("loaded %d occluders from %s", len(out), p)
    return out


def _paste_over(src: np.ndarray, dst: np.ndarray, center: np.ndarray) -> None:
    """Alpha-blend RGBA ``src`` into RGB ``dst`` (in place) with its centre at ``center`` (x, y)."""
    h_s, w_s = src.shape[:2]
    h_d, w_d = dst.shape[:2]
    x0 = int(np.round(center[0] - w_s / 2.0))
    y0 = int(np.round(center[1] - h_s / 2.0))
    dx0, dy0 = max(x0, 0), max(y0, 0)
    dx1, dy1 = min(x0 + w_s, w_d), min(y0 + h_s, h_d)
    if dx1 <= dx0 or dy1 <= dy0:
        return
    patch = src[dy0 - y0 : dy1 - y0, dx0 - x0 : dx1 - x0].astype(np.float32)
    alpha = patch[..., 3:4] / 255.0
    region = dst[dy0:dy1, dx0:dx1].astype(np.float32)
    dst[dy0:dy1, dx0:dx1] = (alpha * patch[..., :3] + (1.0 - alpha) * region).astype(dst.dtype)


def occlude(
    img: np.ndarray,
    occluders: list[np.ndarray],
    rng: np.random.Generator,
    count: tuple[int, int] = (1, 8),
    size: tuple[float, float] = (0.2, 1.0),
) -> np.ndarray:
    """Paste randint(*count) random occluders over an image.

    Each occluder is resized by U(*size) * min(W, H) / 256 (bilinear when enlarging, area when shrinking) and
    centred uniformly over the image.

    Args:
        img: (H, W, 3) uint8 crop.
        occluders: RGBA patches from :func:`load_occluders`.
        rng: the sample's generator.
    Returns:
        (H, W, 3) uint8, a new array.
    """
    out = img.copy()
    if not occluders:
        return out
    h, w = img.shape[:2]
    base = min(w, h) / 256.0
    for _ in range(int(rng.integers(count[0], count[1]))):
        occ = occluders[int(rng.integers(len(occluders)))]
        factor = float(rng.uniform(size[0], size[1])) * base
        nw = max(1, int(round(occ.shape[1] * factor)))
        nh = max(1, int(round(occ.shape[0] * factor)))
        interp = cv2.INTER_LINEAR if factor > 1.0 else cv2.INTER_AREA
        occ_r = cv2.resize(occ, (nw, nh), interpolation=interp)
        center = rng.uniform([0.0, 0.0], [w, h])
        _paste_over(occ_r, out, center)
    return out
