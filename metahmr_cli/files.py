"""Files written safely and identified by content: the project's one atomic writer, file hash and fingerprint.

Every file the project writes (result files, manifests, checkpoints, datasets, caches, body assets, reports) goes
through :func:`atomic_path`: the bytes go to a hidden temporary file beside the destination, which is renamed over
the final name with :func:`os.replace` once complete and flushed. An interrupted write therefore leaves the old
file, the new file, or a temporary file that :func:`clean_temp_files` removes at the start of the next run.

Identity: :func:`file_sha256` hashes a file's bytes, :func:`fingerprint` hashes a
JSON-able value (settings, keys of caches) into a short hex string.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

TEMP_MARKER = ".metahmr-tmp-"
"""Part of every temporary file's name (see :func:`temp_path_for`)."""


def temp_path_for(path: str | Path) -> Path:
    """A unique hidden temporary name beside ``path`` that keeps its suffix (writers pick formats by suffix)."""
    path = Path(path)
    return path.with_name(f".{path.stem}{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")


def is_temp_file(path: str | Path) -> bool:
    """True for temporary files made by :func:`temp_path_for`."""
    name = Path(path).name
    return name.startswith(".") and TEMP_MARKER in name


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``path``, on error it is removed.

    The one atomic writer of the project (result files, checkpoints, datasets, caches, reports). The temporary
    file sits beside ``path`` (same file system, so the rename is atomic), keeps its suffix (writers that pick
    a format by suffix, such as ``np.savez``, write exactly there), and is flushed to disk before the rename.
    If the body raises (or the process dies), ``path`` keeps its previous content; a temporary file left by a
    killed process is recognised by :func:`is_temp_file`.

    Example::

        with atomic_path(out / "a.png") as tmp:
            cv2.imwrite(str(tmp), image)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        yield tmp
        if not tmp.exists():
            raise OSError(f"writer produced no file for {path}")
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (fsync before the rename)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (NaN/inf become null)."""
    return write_text_atomic(path, json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n")


def write_image_atomic(path: str | Path, image_rgb: np.ndarray) -> Path:
    """Write an RGB uint8 image (H, W, 3) to ``path`` (format from the suffix) atomically."""
    import cv2

    path = Path(path)
    image_rgb = np.ascontiguousarray(image_rgb)
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image_rgb.shape} {image_rgb.dtype}")
    with atomic_path(path) as tmp:
        ok = cv2.imwrite(str(tmp), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise OSError(f"could not encode image {path}")
    return path


def clean_temp_files(out_dir: str | Path) -> list[Path]:
    """Remove temporary files left by an interrupted run anywhere below ``out_dir``; returns what was removed."""
    out_dir = Path(out_dir)
    removed: list[Path] = []
    if not out_dir.is_dir():
        return removed
    for p in out_dir.rglob(f".*{TEMP_MARKER}*"):
        if p.is_file() and is_temp_file(p):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    if removed:
        logger.info("removed %d temporary file(s) left by an interrupted run in %s", len(removed), out_dir)
    return removed


def save_npz_atomic(path: str | Path, arrays: Mapping[str, Any], compressed: bool = False) -> Path:
    """Write an ``.npz`` of ``arrays`` atomically (``np.savez``, or ``np.savez_compressed`` with ``compressed``)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        (np.savez_compressed if compressed else np.savez)(fh, **arrays)
    return path


def save_torch_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through the atomic writer: a failed or interrupted save keeps the old file."""
    import torch  # the file layer stays importable without torch (set-up checks, bootstrap)

    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


# --------------------------------------------------------------------------------------------------------------
# identity


def file_sha256(path: str | Path) -> str:
    """The hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(obj: Any, length: int = 16) -> str:
    """The first ``length`` hex digits of the sha256 of ``obj`` as sorted JSON (other values by ``str``)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


# --------------------------------------------------------------------------------------------------------------
# JSON


def jsonable(obj: Any) -> Any:
    """Convert numpy/pathlib/dataclass values into plain JSON types; non-finite floats become None."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "__dataclass_fields__"):
        return jsonable({k: getattr(obj, k) for k in obj.__dataclass_fields__})
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)
