"""Read official SMPL ``.pkl`` files safely (no chumpy, no pickled code) and tell their SMPL release apart.

The official files are Python-2 pickles holding numpy arrays, a ``scipy.sparse`` joint regressor and chumpy
objects. :class:`SafeSMPLUnpickler` resolves only an allow-list of globals: numpy array reconstruction, a
few harmless builtins, stand-ins for chumpy and scipy sparse matrices that merely record their pickled state.
Anything else (``os.system``, ``subprocess``, ``builtins.eval``...) is refused with :class:`BodyModelError`
before it can run.

This is the runtime side (:func:`metahmr_cli.body.smpl.load_body_model` reads ``.pkl`` files directly); converting
them into a body folder (``metahmr weights import-smpl``) is :mod:`metahmr_cli.body.builders.pkl`.
"""

from __future__ import annotations

import codecs
import importlib
import io
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np

from metahmr_cli.body.layout import MODEL_KEYS, check_model_arrays
from metahmr_cli.errors import BodyModelError

logger = logging.getLogger(__name__)

_MAX_CHUMPY_DEPTH = 64


class ChumpyStandin:
    """Stands in for any chumpy class: keeps the pickled state, evaluates simple array expressions."""

    class_name = "Ch"

    def __new__(cls, *args: Any, **kwargs: Any) -> ChumpyStandin:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise BodyModelError(f"unexpected state of a chumpy {self.class_name} object: {type(state).__name__}")
        self.__dict__["state"] = state

    @property
    def state(self) -> dict:
        return self.__dict__.get("state", {})


class SparseStandin:
    """Stands in for ``scipy.sparse`` matrices: keeps the pickled state (data, indices, indptr, shape)."""

    class_name = "csc_matrix"

    def __new__(cls, *args: Any, **kwargs: Any) -> SparseStandin:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise BodyModelError(f"unexpected state of a sparse {self.class_name}: {type(state).__name__}")
        self.__dict__["state"] = state

    @property
    def state(self) -> dict:
        return self.__dict__.get("state", {})

    def to_dense(self) -> np.ndarray:
        """Dense (rows, cols) float64 array."""
        st = self.state
        shape = st.get("_shape", st.get("shape"))
        try:
            data = np.asarray(st["data"], dtype=np.float64)
            indices = np.asarray(st["indices"], dtype=np.int64)
            indptr = np.asarray(st["indptr"], dtype=np.int64)
            rows, cols = (int(s) for s in shape)
        except (KeyError, TypeError, ValueError) as exc:
            raise BodyModelError(f"incomplete sparse {self.class_name} in the file ({exc})") from exc
        out = np.zeros((rows, cols), dtype=np.float64)
        compressed, other = (cols, rows) if self.class_name == "csc_matrix" else (rows, cols)
        if indptr.shape != (compressed + 1,) or indptr[-1] != len(data) or len(indices) != len(data):
            raise BodyModelError(f"inconsistent sparse {self.class_name} in the file")
        if len(indices) and (indices.min() < 0 or indices.max() >= other):
            raise BodyModelError(f"sparse {self.class_name} index out of range")
        major = np.repeat(np.arange(compressed), np.diff(indptr))
        if self.class_name == "csc_matrix":
            np.add.at(out, (indices, major), data)
        else:
            np.add.at(out, (major, indices), data)
        return out


def _chumpy_class(name: str) -> type:
    return type(f"Chumpy_{name}", (ChumpyStandin,), {"class_name": name})


def _sparse_class(name: str) -> type:
    return type(f"Sparse_{name}", (SparseStandin,), {"class_name": name})


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """Replacement of ``copyreg._reconstructor`` limited to the stand-in classes."""
    if not (isinstance(cls, type) and issubclass(cls, ChumpyStandin | SparseStandin)) or base is not object:
        raise BodyModelError(f"refusing to rebuild {cls!r} from {base!r}: unsafe object")
    return cls.__new__(cls)


_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric")


def _allowed_global(module: str, name: str) -> Any:
    """Resolve an allowed global or return None."""
    if module in _NUMPY_MODULES and name in ("_reconstruct", "scalar", "_frombuffer"):
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            alt = (
                module.replace("numpy._core", "numpy.core")
                if "_core" in module
                else module.replace("numpy.core", "numpy._core")
            )
            return getattr(importlib.import_module(alt), name)
    if module == "numpy" and name in ("ndarray", "dtype"):
        return getattr(np, name)
    if module in ("__builtin__", "builtins") and name in ("set", "frozenset", "object", "slice", "complex"):
        return {"set": set, "frozenset": frozenset, "object": object, "slice": slice, "complex": complex}[name]
    if module in ("copy_reg", "copyreg") and name == "_reconstructor":
        return _safe_reconstructor
    if module == "_codecs" and name == "encode":
        return codecs.encode
    if module.split(".")[0] == "chumpy":
        return _CHUMPY_CLASSES.setdefault(name, _chumpy_class(name))
    if module.split(".")[0] == "scipy" and module.startswith("scipy.sparse") and name in ("csc_matrix", "csr_matrix"):
        return _SPARSE_CLASSES.setdefault(name, _sparse_class(name))
    return None


_CHUMPY_CLASSES: dict[str, type] = {}
_SPARSE_CLASSES: dict[str, type] = {}


class SafeSMPLUnpickler(pickle.Unpickler):
    """Unpickler that only builds numpy arrays, plain containers and inert chumpy/scipy stand-ins."""

    def find_class(self, module: str, name: str) -> Any:
        obj = _allowed_global(module, name)
        if obj is None:
            raise BodyModelError(f"unsafe object {module}.{name}")
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise BodyModelError("unsafe object: persistent id")


def safe_unpickle(data: bytes | io.BufferedIOBase, source: str = "<bytes>") -> Any:
    """Unpickle with :class:`SafeSMPLUnpickler` (``encoding='latin1'`` for Python-2 files).

    Raises:
        BodyModelError: unsafe content ("refusing to load ... unsafe object ...") or a damaged file.
    """
    fh = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    try:
        return SafeSMPLUnpickler(fh, encoding="latin1").load()
    except BodyModelError as exc:
        if "unsafe" in str(exc):
            raise BodyModelError(
                f"refusing to load {source}: {exc}. Only official SMPL model files are accepted."
            ) from None
        raise BodyModelError(f"{source}: {exc}") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        UnicodeDecodeError,
        MemoryError,
        ImportError,
    ) as exc:
        raise BodyModelError(
            f"{source} is damaged or not a SMPL model pickle ({type(exc).__name__}: {exc}). "
            "Download it again from https://smpl.is.tue.mpg.de."
        ) from None


def _evaluate(obj: Any, key: str, depth: int = 0) -> np.ndarray:
    """Turn a value of the pickle (array, chumpy stand-in, sparse stand-in, list) into a numpy array."""
    if depth > _MAX_CHUMPY_DEPTH:
        raise BodyModelError(f"{key}: chumpy expression nested too deeply")
    if isinstance(obj, SparseStandin):
        return obj.to_dense()
    if isinstance(obj, ChumpyStandin):
        st, name = obj.state, obj.class_name
        try:
            if name == "Ch" or (name not in _CHUMPY_OPS and "x" in st and "a" not in st):
                return np.asarray(_evaluate(st["x"], key, depth + 1))
            if name in _CHUMPY_OPS:
                return _CHUMPY_OPS[name](st, lambda v: _evaluate(v, key, depth + 1))
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise BodyModelError(f"{key}: cannot evaluate chumpy {name} object ({exc})") from exc
        raise BodyModelError(f"{key}: unsupported chumpy object {name}; convert the file with chumpy installed")
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise BodyModelError(f"{key}: object arrays are not supported")
        return obj
    try:
        arr = np.asarray(obj)
    except (ValueError, TypeError) as exc:
        raise BodyModelError(f"{key}: not an array ({type(obj).__name__})") from exc
    if arr.dtype == object:
        raise BodyModelError(f"{key}: not a numeric array ({type(obj).__name__})")
    return arr


def _op_reshape(st: dict, ev: Any) -> np.ndarray:
    return ev(st["a"]).reshape(st["newshape"])


def _op_transpose(st: dict, ev: Any) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(ev(st["a"]), axes=st.get("axes")))


def _op_select(st: dict, ev: Any) -> np.ndarray:
    out = ev(st["a"]).ravel()[np.asarray(st["idxs"])].copy()
    return out.reshape(st["preferred_shape"]) if "preferred_shape" in st else out


def _op_concatenate(st: dict, ev: Any) -> np.ndarray:
    terms = st.get("dterms") or sorted((k for k in st if re.fullmatch(r"m\d+", k)), key=lambda k: int(k[1:]))
    return np.concatenate([ev(st[t]) for t in terms], axis=st.get("axis", 0))


_CHUMPY_OPS = {
    "Reshape": _op_reshape,
    "transpose": _op_transpose,
    "Select": _op_select,
    "Concatenate": _op_concatenate,
}


def smpl_arrays_from_pickled(obj: Any, source: str) -> dict[str, np.ndarray]:
    """Convert an unpickled SMPL dict into plain arrays with :data:`MODEL_KEYS` (J_regressor dense)."""
    if not isinstance(obj, dict):
        raise BodyModelError(f"{source} is not a SMPL model file (top level is {type(obj).__name__}, not a dict).")
    missing = [k for k in MODEL_KEYS if k not in obj]
    if missing:
        raise BodyModelError(f"{source} is not a SMPL model file: missing {', '.join(missing)}.")
    out: dict[str, np.ndarray] = {}
    for key in MODEL_KEYS:
        out[key] = _evaluate(obj[key], f"{source}:{key}")
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        out[key] = np.asarray(out[key], dtype=np.float64)
    kin = np.asarray(out["kintree_table"]).astype(np.int64)
    if kin.shape == (2, 24):
        kin[0, 0] = -1
    out["kintree_table"] = kin
    out["f"] = np.asarray(out["f"]).astype(np.int64)
    gender = obj.get("gender")
    if isinstance(gender, bytes):
        gender = gender.decode("latin1")
    if isinstance(gender, str):
        out["gender"] = np.asarray(gender)
    return out


def load_smpl_pkl(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read an official SMPL ``.pkl`` safely and return SMPL-format arrays (keys :data:`MODEL_KEYS`).

    Raises:
        BodyModelError: unsafe, damaged, or not a SMPL file (the message names the file).
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise BodyModelError(f"Cannot read {p}: {exc}") from exc
    obj = safe_unpickle(raw, str(p))
    arrays = smpl_arrays_from_pickled(obj, str(p))
    check_model_arrays(arrays, str(p))
    return arrays


SMPLIFY_NEUTRAL = "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
V110_NEUTRAL_WARNING = (
    "{path} is SMPL v1.1.0's neutral model (300 shape components). SPIN, CLIFF and Meta-HMR were trained and "
    "evaluated with another neutral body, SMPLify's basicModel_neutral_lbs_10_207_0_v1.0.0.pkl (SPIN's "
    "SMPL_NEUTRAL.pkl, 10 shape components): the released networks give different meshes and numbers with this "
    "one. Get that file from https://smplify.is.tue.mpg.de and import it instead."
)


def smpl_release(arrays: dict[str, np.ndarray]) -> str:
    """Which SMPL release model arrays come from, by content: "v1.1.0" (300 shape components, SMPL_python_v.1.1.0),
    "v1.0.0" (10 components: SMPL_python_v.1.0.0 and SMPLify's neutral) or "unknown"."""
    if "smpl_release" in arrays:
        return str(np.asarray(arrays["smpl_release"]))
    comps = int(np.asarray(arrays["shapedirs"]).shape[-1]) if "shapedirs" in arrays else -1
    return {300: "v1.1.0", 10: "v1.0.0"}.get(comps, "unknown")


__all__ = [
    "SMPLIFY_NEUTRAL",
    "V110_NEUTRAL_WARNING",
    "ChumpyStandin",
    "MODEL_KEYS",
    "SafeSMPLUnpickler",
    "SparseStandin",
    "load_smpl_pkl",
    "safe_unpickle",
    "smpl_arrays_from_pickled",
    "smpl_release",
]
