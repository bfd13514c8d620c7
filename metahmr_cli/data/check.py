"""Validation of SPIN/CLIFF-format dataset files: keys, shapes, dtypes, values and image files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import DatasetError
from .npzio import load_npz
from .registry import DatasetSpec

__all__ = ["KEY_SPECS", "VALUE_RANGES", "CheckReport", "Issue", "check_dataset", "check_npz", "require_valid"]

KEY_SPECS: dict[str, tuple[tuple[int, ...], str, bool, str]] = {
    "imgname": ((), "str", True, "image path relative to the image root"),
    "center": ((2,), "num", True, "box centre (x, y) in pixels"),
    "scale": ((), "num", True, "box size / 200"),
    "part": ((24, 3), "num", True, "GT-24 keypoints [x, y, visibility]; the box is rebuilt from them"),
    "openpose": ((25, 3), "num", False, "OpenPose BODY_25 keypoints [x, y, conf]"),
    "S": ((24, 4), "num", False, "GT-24 3D joints in metres + conf"),
    "pose": ((72,), "num", False, "SMPL axis-angle pose"),
    "shape": ((10,), "num", False, "SMPL betas"),
    "has_smpl": ((), "num", False, "1 where pose/shape are valid"),
    "gender": ((), "str", False, "'m' / 'f'"),
    "focal_length": ((), "num", False, "full-image focal length in pixels"),
}
"""key -> (per-sample shape, kind, required, meaning)."""

MAX_PIXELS_COORD = 1e5
"""Largest |x| or |y| (pixels) of a keypoint or box centre."""
VALUE_RANGES: dict[str, tuple[str, float, str]] = {
    "center": ("abs", MAX_PIXELS_COORD, "pixel coordinates within +-1e5"),
    "part": ("xy", MAX_PIXELS_COORD, "pixel coordinates within +-1e5"),
    "openpose": ("xy", MAX_PIXELS_COORD, "pixel coordinates within +-1e5"),
    "scale": ("abs", 1e3, "|scale| <= 1000 (boxes up to 200,000 px)"),
    "S": ("xyz", 100.0, "joint coordinates within +-100 m"),
    "pose": ("rotvec", 4 * np.pi, "joint rotations of at most 4 pi rad (axis-angle)"),
    "shape": ("abs", 20.0, "|betas| <= 20"),
    "focal_length": ("positive", 1e6, "a focal length in (0, 1e6] px"),
}
"""key -> (how values are measured, bound, what is allowed): values outside are errors (``pose = 1e30`` would pass
every other check and only show up in training as skipped steps)."""


@dataclass
class Issue:
    """One finding. ``severity`` is "error" (the dataset cannot be used as is) or "warning"."""

    severity: str
    key: str | None
    message: str
    expected: str | None = None
    found: str | None = None

    def __str__(self) -> str:
        where = f"key '{self.key}': " if self.key else ""
        ef = ""
        if self.expected is not None or self.found is not None:
            ef = f" (expected {self.expected}, found {self.found})"
        return f"{self.severity}: {where}{self.message}{ef}"


@dataclass
class CheckReport:
    """Result of checking one dataset file.

    Attributes:
        name: dataset name; npz: the file; image_root: where images were looked up.
        n: number of samples (None when unreadable).
        keys: keys found in the file.
        issues: errors and warnings.
        images_checked / images_missing: counts over the checked (sampled or all) unique image names.
        missing_examples: the first missing image paths (absolute).
    """

    name: str
    npz: Path
    image_root: Path
    n: int | None = None
    keys: list[str] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    images_checked: int = 0
    images_missing: int = 0
    missing_examples: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there is no error."""
        return not self.errors

    def lines(self) -> list[str]:
        """Human-readable report lines."""
        head = f"{self.name}: {self.npz}"
        out = [head]
        if self.n is not None:
            out.append(f"  {self.n} samples; images under {self.image_root}: {self.images_checked} checked, "
                       f"{self.images_missing} missing")
        out += [f"  {i}" for i in self.issues]
        return out


def _err(rep: CheckReport, key: str | None, msg: str, expected: str | None = None, found: str | None = None) -> None:
    rep.issues.append(Issue("error", key, msg, expected, found))


def _warn(rep: CheckReport, key: str | None, msg: str, expected: str | None = None, found: str | None = None) -> None:
    rep.issues.append(Issue("warning", key, msg, expected, found))


def _shape_str(n: int | str, tail: tuple[int, ...]) -> str:
    return "(" + ", ".join([str(n), *map(str, tail)]) + ")"


def check_npz(
    npz: str | Path,
    image_root: str | Path | None = None,
    *,
    name: str | None = None,
    all_images: bool = False,
    sample_images: int = 50,
    max_examples: int = 5,
) -> CheckReport:
    """Validate one SPIN/CLIFF-format npz and the images it references.

    Checks: the file opens; required keys (imgname, center, scale, part) exist; every known key has N rows and
    the expected per-sample shape and a numeric/string dtype; values are finite and in range (:data:`VALUE_RANGES`:
    SMPL pose and betas, keypoints, 3D joints, boxes, focal lengths); visibilities/confidences are
    not negative; ``pose`` comes with ``shape``; every sample has a visible ``part`` keypoint or a valid
    center/scale; image files exist (an even sample of ``sample_images`` unique names, or all) and the first
    one decodes.

    Args:
        npz: the annotation file.
        image_root: folder of the images (default: the npz's folder).
        name: label for the report (default: the npz stem).
        all_images: check every unique image instead of a sample.
        sample_images: number of unique images checked when not ``all_images``.
        max_examples: number of missing image paths listed.
    """
    p = Path(npz)
    root = Path(image_root) if image_root is not None else p.parent
    rep = CheckReport(name=name or p.stem, npz=p, image_root=root)
    if not p.is_file():
        _err(rep, None, f"file {p} does not exist")
        return rep
    try:
        data = load_npz(p)
    except DatasetError as exc:
        _err(rep, None, str(exc))
        return rep
    rep.keys = sorted(data)
    if "imgname" not in data:
        _err(rep, "imgname", "required key is missing (" + KEY_SPECS["imgname"][3] + ")", "present", "absent")
        return rep
    n = int(np.asarray(data["imgname"]).shape[0]) if np.asarray(data["imgname"]).ndim >= 1 else 0
    rep.n = n
    if n == 0:
        _err(rep, "imgname", "the file holds no samples", "N >= 1", "N = 0")
    for key, (tail, kind, required, meaning) in KEY_SPECS.items():
        if key not in data:
            if required:
                _err(rep, key, f"required key is missing ({meaning})", _shape_str("N", tail), "absent")
            continue
        a = np.asarray(data[key])
        if a.ndim == 0 or a.shape[0] != n:
            _err(rep, key, f"row count differs from imgname's N={n}", _shape_str(n, tail), str(a.shape))
            continue
        if kind == "num":
            if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
                _err(rep, key, "must be numeric", "a float or int dtype", str(a.dtype))
                continue
            shape_ok = tuple(a.shape[1:]) == tail or (key == "shape" and a.ndim == 2 and a.shape[1] >= 10)
            shape_ok = shape_ok or (key in ("scale", "has_smpl", "focal_length") and a.shape[1:] in ((1,), (2,)))
            if not shape_ok:
                _err(rep, key, f"wrong shape ({meaning})", _shape_str(n, tail), str(a.shape))
                continue
            bad = ~np.isfinite(a.astype(np.float64))
            if bad.any():
                rows = np.nonzero(bad.reshape(n, -1).any(axis=1))[0]
                _err(rep, key, f"{len(rows)} sample(s) hold NaN/inf values, first rows {rows[:max_examples].tolist()}",
                     "finite values", "NaN/inf")
            elif key in VALUE_RANGES and n:
                _check_range(rep, key, a.astype(np.float64).reshape(n, -1), max_examples)
            if key in ("part", "openpose", "S") and (a[..., -1] < 0).any():
                _warn(rep, key, "negative visibility/confidence values (treated as invisible)", ">= 0", "< 0")
        else:
            if a.ndim != 1:
                _err(rep, key, f"wrong shape ({meaning})", _shape_str(n, ()), str(a.shape))
                continue
            if a.dtype.kind not in "USO":
                _err(rep, key, "must hold strings", "str/bytes", str(a.dtype))
                continue
    if "pose" in data and "shape" not in data:
        _err(rep, "shape", "'pose' is present but 'shape' (SMPL betas) is missing", _shape_str(n, (10,)), "absent")
    if "has_smpl" in data and "pose" not in data:
        _warn(rep, "has_smpl", "'has_smpl' without 'pose' is ignored (has_smpl becomes 0)")
    if "gender" in data:
        vals = {str(g.decode() if isinstance(g, bytes) else g) for g in np.asarray(data["gender"]).reshape(-1)}
        other = sorted(vals - {"m", "f", "n"})
        if other:
            _warn(rep, "gender", f"values {other[:5]} are neither 'm' nor 'f' (compared exactly): the released "
                  "evaluation rule poses them with the female body, --gender-rule neutral with the neutral body",
                  "'m', 'f' or 'n'", ", ".join(other[:5]))
    if "part" in data and "scale" in data and rep.ok:
        part = np.asarray(data["part"], dtype=np.float64)
        scale = np.asarray(data["scale"], dtype=np.float64).reshape(n, -1)[:, 0]
        no_vis = ~(part[..., 2] > 0).any(axis=1)
        unusable = no_vis & ~(scale > 0)
        if unusable.any():
            rows = np.nonzero(unusable)[0]
            _err(rep, "part", f"{len(rows)} sample(s) have no visible keypoint and no valid scale, first rows "
                 f"{rows[:max_examples].tolist()}", "a visible keypoint or scale > 0", "neither")
        elif no_vis.any():
            _warn(rep, "part", f"{int(no_vis.sum())} sample(s) have no visible keypoint; their npz center/scale "
                  "are used")
    _check_images(rep, data, root, all_images, sample_images, max_examples)
    return rep


def _check_range(rep: CheckReport, key: str, a: np.ndarray, max_examples: int) -> None:
    """Error for the rows of ``a`` (N, D) (finite) whose values are outside :data:`VALUE_RANGES`."""
    how, bound, allowed = VALUE_RANGES[key]
    n = a.shape[0]
    if how == "abs":
        mag = np.abs(a)
    elif how == "xy":  # [x, y, visibility] rows
        mag = np.abs(a.reshape(n, -1, 3)[..., :2])
    elif how == "xyz":  # [x, y, z, conf] rows
        mag = np.abs(a.reshape(n, -1, 4)[..., :3])
    elif how == "rotvec":
        mag = np.linalg.norm(a[:, : a.shape[1] // 3 * 3].reshape(n, -1, 3), axis=-1)
    else:  # positive
        mag = np.where(a > 0, a, np.inf)
    bad = (mag > bound).reshape(n, -1).any(axis=1)
    if bad.any():
        rows = np.nonzero(bad)[0]
        found = f"values from {a.min():.4g} to {a.max():.4g}" if how == "positive" else f"up to {mag.max():.4g}"
        _err(rep, key, f"{len(rows)} sample(s) hold values out of range, first rows {rows[:max_examples].tolist()}",
             allowed, found)


def _check_images(
    rep: CheckReport, data: dict[str, np.ndarray], root: Path, all_images: bool, sample: int, max_examples: int
) -> None:
    names = np.asarray(data["imgname"]).reshape(-1)
    if names.dtype.kind not in "USO" or len(names) == 0:
        return
    uniq = list(dict.fromkeys(str(s.decode() if isinstance(s, bytes) else s) for s in names))
    if not root.is_dir():
        _err(rep, "imgname", f"image root {root} does not exist (set 'images' in the datasets config or --images)")
        return
    if all_images or len(uniq) <= sample:
        chosen = uniq
    else:
        idx = np.unique(np.linspace(0, len(uniq) - 1, sample).round().astype(int))
        chosen = [uniq[i] for i in idx]
    exists = {s: (root / s).is_file() for s in chosen}
    present = [s for s in chosen if exists[s]]
    missing = [str(root / s) for s in chosen if not exists[s]]
    rep.images_checked = len(chosen)
    rep.images_missing = len(missing)
    rep.missing_examples = missing[:max_examples]
    if missing:
        scope = "all" if len(chosen) == len(uniq) else f"a sample of {len(chosen)} of {len(uniq)}"
        _err(rep, "imgname", f"{len(missing)} image file(s) missing ({scope} checked); first: "
             + ", ".join(rep.missing_examples), "files present", f"{len(missing)} missing")
    if present and cv2.imread(str(root / present[0]), cv2.IMREAD_COLOR) is None:
        _err(rep, "imgname", f"image {root / present[0]} exists but cannot be decoded")


def check_dataset(spec: DatasetSpec, *, all_images: bool = False, sample_images: int = 50) -> CheckReport:
    """:func:`check_npz` for a resolved dataset spec."""
    return check_npz(spec.npz, spec.image_root, name=spec.name, all_images=all_images, sample_images=sample_images)


def require_valid(specs: list[DatasetSpec], *, what: str = "training") -> None:
    """Run :func:`check_dataset` on every file a run will read and stop before anything is written.

    Raises:
        DatasetError: listing, per failing file, every error with its key and the first bad rows, and the fix.
    """
    failing = [rep for rep in (check_dataset(spec) for spec in specs) if not rep.ok]
    if not failing:
        return
    lines = [f"{len(failing)} {what} dataset file(s) cannot be used; nothing was written:"]
    for rep in failing:
        lines.append(f"- {rep.name}: {rep.npz}")
        lines += [f"    {issue}" for issue in rep.errors]
    lines.append("Fix or regenerate the files (`metahmr data check FILE` prints the full report).")
    raise DatasetError("\n".join(lines))
