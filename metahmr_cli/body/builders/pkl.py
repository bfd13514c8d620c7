"""Import official SMPL model files into a body folder (``metahmr weights import-smpl``).

This module owns the conversion of the files downloaded from smpl.is.tue.mpg.de (``.pkl``, read with the safe
unpickler of :mod:`metahmr_cli.body.smpl_pkl`, or an already converted ``.npz``) into
``SMPL_{NEUTRAL,MALE,FEMALE}.npz``: the gender of each file, the checks of its arrays and skeleton, the SMPL release
recorded in the file, and the atomic write.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from metahmr_cli.body.joints import SMPL_PARENTS
from metahmr_cli.body.layout import MODEL_KEYS, SMPL_NUM_VERTICES, check_model_arrays
from metahmr_cli.body.smpl import load_model_arrays
from metahmr_cli.body.smpl_pkl import V110_NEUTRAL_WARNING, load_smpl_pkl, smpl_release
from metahmr_cli.constants import GENDERS
from metahmr_cli.errors import BodyModelError
from metahmr_cli.files import save_npz_atomic

logger = logging.getLogger(__name__)


_GENDER_PATTERNS = (
    ("neutral", re.compile(r"neutral")),
    ("female", re.compile(r"female|(^|[_\-. ])f([_\-. ]|$)")),
    ("male", re.compile(r"male|(^|[_\-. ])m([_\-. ]|$)")),
)


def detect_gender(path: str | os.PathLike[str], arrays: dict[str, np.ndarray] | None = None) -> str | None:
    """Gender from the file name (e.g. ``basicModel_f_lbs_...``, ``SMPL_NEUTRAL.pkl``) or a ``gender`` entry."""
    name = Path(path).name.lower()
    for gender, pattern in _GENDER_PATTERNS:
        if pattern.search(name):
            return gender
    if arrays is not None and "gender" in arrays:
        g = str(arrays["gender"]).lower()
        for gender in ("neutral", "female", "male"):
            if g.startswith(gender[0]) and (g == gender or len(g) == 1):
                return gender
    return None


def _read_source(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise BodyModelError(f"{path} does not exist or is not a file.")
    if path.suffix.lower() == ".npz":
        data = load_model_arrays(path)
        missing = [k for k in MODEL_KEYS if k not in data]
        if missing:
            raise BodyModelError(f"{path} is not a SMPL model file: missing {', '.join(missing)}.")
        return data
    return load_smpl_pkl(path)


def import_smpl_files(
    sources: Iterable[str | os.PathLike[str]],
    dest_dir: str | os.PathLike[str],
    *,
    gender: str | None = None,
    num_vertices: int | None = SMPL_NUM_VERTICES,
) -> list[Path]:
    """Convert official SMPL model files into ``dest_dir/SMPL_{NEUTRAL|MALE|FEMALE}.npz``.

    The release is recorded in each file (``smpl_release``: "v1.0.0" or "v1.1.0", told apart by content); a
    v1.1.0 neutral model is imported with a warning (:data:`V110_NEUTRAL_WARNING`): the released networks were
    trained with SMPLify's neutral v1.0.0.

    Args:
        sources: ``.pkl`` (official) or ``.npz`` files; the gender comes from each file name or contents.
        dest_dir: target folder (created); each file is written to a temporary name, then renamed.
        gender: force the gender (only with a single source).
        num_vertices: required vertex count (6890 for SMPL); None skips the check (tests).

    Returns:
        The written paths, in the order of ``sources``.

    Raises:
        BodyModelError: a file is unsafe, damaged, not SMPL, of unknown gender, or two files share a gender.
    """
    paths = [Path(s).expanduser() for s in sources]
    if not paths:
        raise BodyModelError("No SMPL files given. Pass the .pkl files downloaded from https://smpl.is.tue.mpg.de.")
    if gender is not None and len(paths) != 1:
        raise BodyModelError("gender can only be forced when importing a single file.")
    converted: list[tuple[str, Path, dict[str, np.ndarray]]] = []
    seen: dict[str, Path] = {}
    for path in paths:
        arrays = _read_source(path)
        g = gender.lower() if gender else detect_gender(path, arrays)
        if g not in GENDERS:
            raise BodyModelError(
                f"Cannot tell the gender of {path}; rename it to SMPL_NEUTRAL.pkl, SMPL_MALE.pkl or SMPL_FEMALE.pkl "
                "(or keep the official name, e.g. basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl)."
            )
        if g in seen:
            raise BodyModelError(f"Both {seen[g]} and {path} are {g} models; import only one of them.")
        seen[g] = path
        n = check_model_arrays(arrays, str(path), num_vertices=num_vertices)
        parents = np.asarray(arrays["kintree_table"])[0].astype(np.int64).copy()
        parents[0] = -1
        if parents.tolist() != SMPL_PARENTS:
            raise BodyModelError(f"{path}: kinematic tree differs from SMPL's; is this a SMPL (not SMPL-H/X) file?")
        logger.info("read %s model with %d vertices from %s", g, n, path)
        release = smpl_release(arrays)
        if g == "neutral" and release == "v1.1.0":
            logger.warning(V110_NEUTRAL_WARNING.format(path=path))
        out_arrays = {k: np.asarray(arrays[k]) for k in MODEL_KEYS}
        out_arrays["smpl_release"] = np.array(release)
        converted.append((g, path, out_arrays))
    dest = Path(dest_dir).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for g, _, arrays in converted:
        target = dest / f"SMPL_{g.upper()}.npz"
        save_npz_atomic(target, arrays, compressed=True)
        written.append(target)
    return written


__all__ = ["detect_gender", "import_smpl_files"]
