"""Safe npz reading (no arbitrary unpickling) and atomic npz writing."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import DatasetError

__all__ = ["load_npz", "read_npy_restricted"]

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays, dtypes and builtin containers/strings."""

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle protocol
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_npy_restricted(f: BinaryIO) -> Any:
    """Read one ``.npy`` stream positioned at its start; object arrays go through :class:`ArrayOnlyUnpickler`.

    Returns the array, or for object arrays whatever the (array-only) pickle holds, e.g. a list of arrays.
    """
    version = np.lib.format.read_magic(f)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version in readers:
        _shape, _fortran, dtype = readers[version](f)
    else:
        _shape, _fortran, dtype = np.lib.format._read_array_header(f, version)
    if dtype.hasobject:
        return ArrayOnlyUnpickler(f).load()
    f.seek(0)
    return np.load(f, allow_pickle=False)


def _read_npy_member(data: bytes) -> np.ndarray:
    return np.asarray(read_npy_restricted(io.BytesIO(data)))


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` into memory.

    Object arrays (e.g. ``imgname`` stored as Python strings) are read with a restricted unpickler that can
    only rebuild numpy arrays and plain Python values, so a hostile file cannot run code.

    Raises:
        DatasetError: missing or unreadable file.
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"dataset file {p} does not exist.")
    out: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(p) as zf:
            for member in zf.namelist():
                if not member.endswith(".npy"):
                    continue
                out[member[:-4]] = _read_npy_member(zf.read(member))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise DatasetError(f"cannot read dataset file {p}: {exc}") from exc
    return out
