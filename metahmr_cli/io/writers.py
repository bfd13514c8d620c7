"""Output files of ``metahmr process``: the versioned per-image ``.npz`` schema, the manifest and the run summary.

Every file is written atomically: the bytes go to a hidden temporary file in the destination folder, which is
renamed over the final name with :func:`os.replace` once complete. An interrupted run therefore leaves either the
old file, the new file, or a temporary file that :func:`metahmr_cli.files.clean_temp_files` removes at the start of
the next run.

Schema "1.3" of a result file (leading axis P = number of people with a mesh, possibly 0; R = people found
without one; camera frame in metres, OpenCV axes: x right, y down, z forward):

==========================  ===============  =========  ==========================================================
key                         shape            dtype      meaning
==========================  ===============  =========  ==========================================================
schema_version              ()               str        "1.3" (older files lack the keys their version added)
source                      ()               str        input path as given
frame_index                 ()               int64      video frame index, -1 for a still image
body_model                  ()               str        "smpl" | "open-anny-v1" | "standin" (+ ``gender``)
model_tier                  ()               str        "paper" | "open" | "custom" (assets chosen by ``--model``)
settings_fingerprint        ()               str        hash of the settings that made the file (resume checks it)
joint_names                 (49,)            str        names of the 49 joints of joints3d / keypoints2d
gender                      ()               str        "neutral" | "male" | "female"
checkpoint                  ()               str        checkpoint identifier (file name + short sha256)
tto_schedule                ()               str        "metahmr" | "reference" | "paper" | "eft" | "none"
tto_config                  ()               str        JSON of the test-time optimisation settings
image_size                  (2,)             int64      [H, W] of the (EXIF-upright) image in pixels
K                           (3, 3)           float32    intrinsics [[f,0,W/2],[0,f,H/2],[0,0,1]]
focal_rule                  ()               str        where f came from: "diagonal" (sqrt(W^2+H^2), default),
                                                        "exif", "focal" (--focal N) or "fov" (--fov)
global_orient               (P, 3)           float32    axis-angle of the root, camera frame
body_pose                   (P, 69)          float32    axis-angle of the 23 body joints
betas                       (P, 10)          float32    shape coefficients
transl                      (P, 3)           float32    body translation in the camera frame (m)
joints3d                    (P, 49, 3)       float32    the 49 joints, camera frame (m), transl included
keypoints2d                 (P, 49, 3)       float32    input 2D evidence in image px + confidence (0 = missing)
bbox                        (P, 4)           float32    detector box x1, y1, x2, y2 in image px
det_score                   (P,)             float32    detector confidence (1.0 for imported boxes)
tto_steps                   (P,)             int64      test-time optimisation steps taken
reproj_error_before         (P,)             float32    mean 2D keypoint error (px) of the plain regression
reproj_error_after          (P,)             float32    the same after test-time optimisation
tto_converged               (P,)             bool       early stop reached before the step budget
fell_back                   (P,)             bool       TTO was skipped (too few keypoints) or reverted
vertices (optional)         (P, V, 3)        float32    mesh vertices, camera frame (m), transl included
track_id (optional)         (P,)             int64      video frames: the person's track (-1 = untracked)
tto_warm_start (optional)   (P,)             bool       video frames: TTO started from the track's previous frame
dropped_bbox                (R, 4)           float32    people found but given no mesh: their boxes (1.3)
dropped_det_score           (R,)             float32    ... their detector confidences
dropped_keypoints2d         (R, 49, 3)       float32    ... their 2D evidence (px + confidence)
dropped_reason              (R,)             str        ... why: "no_keypoints" (fewer usable keypoints than
                                                        ``tto.min_keypoints``, see ``tto.usable_keypoints``)
==========================  ===============  =========  ==========================================================
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from metahmr_cli.body.joints import JOINT_NAMES
from metahmr_cli.files import jsonable, save_npz_atomic, write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "1.3"
READABLE_SCHEMAS: tuple[str, ...] = ("1.0", "1.1", "1.2", "1.3")
"""Schema versions this version reads (1.1 added string keys, 1.2 the optional ``track_id`` of video frames, 1.3 the
``dropped_*`` keys of people given no mesh)."""
MANIFEST_NAME = "manifest.jsonl"
SUMMARY_NAME = "summary.json"
NUM_OUTPUT_JOINTS = 49

Status = Literal["ok", "no_person", "no_keypoints", "failed", "skipped"]
STATUSES: tuple[str, ...] = ("ok", "no_person", "no_keypoints", "failed", "skipped")
DONE_STATUSES: tuple[str, ...] = ("ok", "no_person", "no_keypoints")
"""Statuses of an input that was processed to the end (its outputs are complete; a re-run may skip it)."""
NO_KEYPOINTS = "no_keypoints"
"""Why a person found in an image got no mesh: fewer usable keypoints than ``tto.min_keypoints``."""

# key -> (shape with "P"/"V" placeholders, numpy dtype kind(s))
_STR_KEYS = ("schema_version", "source", "body_model", "gender", "checkpoint", "tto_schedule", "tto_config")
_ARRAY_SPEC: dict[str, tuple[tuple[int | str, ...], str]] = {
    "frame_index": ((), "i"),
    "image_size": ((2,), "i"),
    "K": ((3, 3), "f"),
    "global_orient": (("P", 3), "f"),
    "body_pose": (("P", 69), "f"),
    "betas": (("P", 10), "f"),
    "transl": (("P", 3), "f"),
    "joints3d": (("P", NUM_OUTPUT_JOINTS, 3), "f"),
    "keypoints2d": (("P", NUM_OUTPUT_JOINTS, 3), "f"),
    "bbox": (("P", 4), "f"),
    "det_score": (("P",), "f"),
    "tto_steps": (("P",), "i"),
    "reproj_error_before": (("P",), "f"),
    "reproj_error_after": (("P",), "f"),
    "tto_converged": (("P",), "b"),
    "fell_back": (("P",), "b"),
}
_OPTIONAL_SPEC: dict[str, tuple[tuple[int | str, ...], str]] = {
    "vertices": (("P", "V", 3), "f"),
    "track_id": (("P",), "i"),
    "tto_warm_start": (("P",), "b"),
    "dropped_bbox": (("R", 4), "f"),
    "dropped_det_score": (("R",), "f"),
    "dropped_keypoints2d": (("R", NUM_OUTPUT_JOINTS, 3), "f"),
    "dropped_reason": (("R",), "U"),
}
_DROPPED_KEYS = ("dropped_bbox", "dropped_det_score", "dropped_keypoints2d", "dropped_reason")
_EXPECTED_DTYPES = {"f": np.float32, "i": np.int64, "b": np.bool_, "U": np.str_}
# Per-person values that may legitimately be NaN (no keypoints -> no reprojection error).
_NAN_ALLOWED = {"reproj_error_before", "reproj_error_after"}

REQUIRED_KEYS: tuple[str, ...] = _STR_KEYS + tuple(_ARRAY_SPEC)
OPTIONAL_KEYS: tuple[str, ...] = tuple(_OPTIONAL_SPEC)


# --------------------------------------------------------------------------------------------------------------
# result files


@dataclass
class FrameResult:
    """Everything written for one image or video frame. Arrays have leading axis P (people), see module doc."""

    source: str
    image_size: tuple[int, int]
    K: np.ndarray                      # (3, 3)
    global_orient: np.ndarray          # (P, 3)
    body_pose: np.ndarray              # (P, 69)
    betas: np.ndarray                  # (P, 10)
    transl: np.ndarray                 # (P, 3)
    joints3d: np.ndarray               # (P, 49, 3)
    keypoints2d: np.ndarray            # (P, 49, 3)
    bbox: np.ndarray                   # (P, 4)
    det_score: np.ndarray              # (P,)
    tto_steps: np.ndarray              # (P,)
    reproj_error_before: np.ndarray    # (P,)
    reproj_error_after: np.ndarray     # (P,)
    tto_converged: np.ndarray          # (P,)
    fell_back: np.ndarray              # (P,)
    body_model: str = "smpl"
    gender: str = "neutral"
    checkpoint: str = ""
    tto_schedule: str = "metahmr"
    tto_config: Mapping[str, Any] | str = field(default_factory=dict)
    frame_index: int = -1
    vertices: np.ndarray | None = None  # (P, V, 3)
    focal_rule: str = "diagonal"
    model_tier: str = "custom"
    settings_fingerprint: str = ""
    track_id: np.ndarray | None = None  # (P,) video frames: the person's track (-1 = untracked)
    tto_warm_start: np.ndarray | None = None  # (P,) video frames: TTO started from the track's previous frame
    dropped_bbox: np.ndarray | None = None         # (R, 4) people found but given no mesh
    dropped_det_score: np.ndarray | None = None    # (R,)
    dropped_keypoints2d: np.ndarray | None = None  # (R, 49, 3)
    dropped_reason: np.ndarray | None = None       # (R,) str, e.g. "no_keypoints"

    @property
    def num_people(self) -> int:
        return int(np.asarray(self.global_orient).shape[0])

    @classmethod
    def empty(cls, source: str, image_size: tuple[int, int], K: np.ndarray, *, num_vertices: int | None = None,
              **meta: Any) -> FrameResult:
        """A result with zero people (status ``no_person``)."""
        z = lambda *s: np.zeros((0, *s), np.float32)
        return cls(source=source, image_size=image_size, K=K, global_orient=z(3), body_pose=z(69), betas=z(10),
                   transl=z(3), joints3d=z(NUM_OUTPUT_JOINTS, 3), keypoints2d=z(NUM_OUTPUT_JOINTS, 3), bbox=z(4),
                   det_score=z(), tto_steps=np.zeros(0, np.int64), reproj_error_before=z(),
                   reproj_error_after=z(), tto_converged=np.zeros(0, bool), fell_back=np.zeros(0, bool),
                   vertices=None if num_vertices is None else z(num_vertices, 3), **meta)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The npz payload: every key of the schema with its canonical dtype."""
        cfg = self.tto_config if isinstance(self.tto_config, str) else json.dumps(jsonable(self.tto_config),
                                                                                sort_keys=True)
        out: dict[str, np.ndarray] = {
            "schema_version": np.array(SCHEMA_VERSION),
            "source": np.array(display_path(self.source)[0]),
            "body_model": np.array(str(self.body_model)),
            "gender": np.array(str(self.gender)),
            "checkpoint": np.array(str(self.checkpoint)),
            "tto_schedule": np.array(str(self.tto_schedule)),
            "tto_config": np.array(cfg),
            "focal_rule": np.array(str(self.focal_rule)),
            "model_tier": np.array(str(self.model_tier)),
            "settings_fingerprint": np.array(str(self.settings_fingerprint)),
            "joint_names": np.array(JOINT_NAMES),
            "frame_index": np.array(int(self.frame_index), np.int64),
            "image_size": np.asarray(self.image_size, np.int64).reshape(2),
        }
        for key, (_, kind) in {**_ARRAY_SPEC, **_OPTIONAL_SPEC}.items():
            if key in out:
                continue
            val = getattr(self, key)
            if val is None:
                continue
            out[key] = np.asarray(_to_numpy(val), dtype=_EXPECTED_DTYPES[kind])
        return out


def write_result_npz(path: str | Path, result: FrameResult) -> Path:
    """Write ``result`` to ``path`` (a ``.npz``) atomically, after checking it against the schema.

    Raises ValueError naming every problem when the result does not match the schema (nothing is written then).
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"result files must end with .npz, got {path}")
    arrays = result.to_arrays()
    problems = validate_result_arrays(arrays)
    if problems:
        raise ValueError(f"result for {result.source} does not match schema {SCHEMA_VERSION}: " + "; ".join(problems))
    return save_npz_atomic(path, arrays)


def load_result_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Load a result file into a dict (strings become 0-d str arrays; ``allow_pickle`` stays off)."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def validate_result_arrays(arrays: Mapping[str, np.ndarray]) -> list[str]:
    """Check a result payload against schema "1.0"; returns a list of problems (empty when valid)."""
    problems: list[str] = []
    for key in _STR_KEYS:
        if key not in arrays:
            problems.append(f"missing key '{key}'")
            continue
        a = np.asarray(arrays[key])
        if a.shape != () or a.dtype.kind != "U":
            problems.append(f"'{key}' must be a string scalar, got shape {a.shape} dtype {a.dtype}")
    if "schema_version" in arrays and np.asarray(arrays["schema_version"]).dtype.kind == "U":
        version = str(arrays["schema_version"])
        if version not in READABLE_SCHEMAS:
            problems.append(f"schema_version is '{version}', expected one of {', '.join(READABLE_SCHEMAS)}")
    for key in ("focal_rule", "model_tier", "settings_fingerprint"):
        if key in arrays and (np.asarray(arrays[key]).shape != () or np.asarray(arrays[key]).dtype.kind != "U"):
            problems.append(f"'{key}' must be a string scalar")
    if "tto_config" in arrays and np.asarray(arrays["tto_config"]).dtype.kind == "U":
        try:
            json.loads(str(arrays["tto_config"]))
        except ValueError:
            problems.append("'tto_config' is not valid JSON")

    sizes: dict[str, int] = {}
    specs = [(k, s, True) for k, s in _ARRAY_SPEC.items()] + [(k, s, False) for k, s in _OPTIONAL_SPEC.items()]
    for key, (shape, kind), required in specs:
        if key not in arrays:
            if required:
                problems.append(f"missing key '{key}'")
            continue
        a = np.asarray(arrays[key])
        expected = _EXPECTED_DTYPES[kind]
        if kind == "U":
            if a.dtype.kind != "U":
                problems.append(f"'{key}' has dtype {a.dtype}, expected str")
        elif a.dtype != expected:
            problems.append(f"'{key}' has dtype {a.dtype}, expected {np.dtype(expected).name}")
        if a.ndim != len(shape):
            problems.append(f"'{key}' has shape {a.shape}, expected {_fmt_shape(shape)}")
            continue
        for dim, want in zip(a.shape, shape, strict=True):
            if isinstance(want, str):
                got = sizes.setdefault(want, dim)
                if got != dim:
                    problems.append(f"'{key}' has {want}={dim}, other keys have {want}={got}")
                    break
            elif dim != want:
                problems.append(f"'{key}' has shape {a.shape}, expected {_fmt_shape(shape)}")
                break
        if kind == "f" and a.size and key not in _NAN_ALLOWED and not np.all(np.isfinite(a)):
            problems.append(f"'{key}' contains NaN or inf")
    present = [k for k in _DROPPED_KEYS if k in arrays]
    if present and len(present) != len(_DROPPED_KEYS):
        problems.append(f"the dropped_* keys come together: missing {sorted(set(_DROPPED_KEYS) - set(present))}")
    if "image_size" in arrays:
        hw = np.asarray(arrays["image_size"])
        if hw.shape == (2,) and np.any(hw <= 0):
            problems.append(f"'image_size' must be positive, got {hw.tolist()}")
    verts = np.asarray(arrays.get("vertices", np.zeros((0, 1, 3))))
    if verts.ndim == 3 and verts.shape[1] < 1:
        problems.append("'vertices' has no vertices")
    return problems


def validate_result_npz(path: str | Path) -> list[str]:
    """Check one result file against schema "1.0"; returns a list of problems (empty when the file is valid).

    A missing, truncated or unreadable file is reported as a problem rather than raised.
    """
    path = Path(path)
    if not path.is_file():
        return [f"{path} does not exist"]
    try:
        arrays = load_result_npz(path)
    except Exception as exc:  # zipfile/pickle/OS errors of damaged files
        return [f"{path} cannot be read: {type(exc).__name__}: {exc}"]
    return validate_result_arrays(arrays)


def result_num_people(path: str | Path) -> int:
    """Number of people stored in a (valid) result file."""
    with np.load(path, allow_pickle=False) as data:
        return int(data["global_orient"].shape[0])


# --------------------------------------------------------------------------------------------------------------
# manifest and summary


@dataclass
class ManifestRecord:
    """One line of ``manifest.jsonl``: the outcome of one input (an image, or a whole video)."""

    input: str                       # the input path as found
    key: str                         # output name stem relative to the output folder (unique per input)
    kind: str = "image"              # "image" | "video"
    status: str = "ok"               # ok | no_person | no_keypoints | failed | skipped
    reason: str | None = None        # why failed / skipped / no_person / no_keypoints
    people: int = 0                  # people with a mesh (videos: summed over frames)
    no_keypoints: int | None = None  # people found without usable keypoints, given no mesh (videos: summed)
    frames: int | None = None        # videos: frames processed
    outputs: list[str] = field(default_factory=list)   # paths relative to the output folder
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    previous_status: str | None = None   # for "skipped": the status of the run that made the outputs
    settings: str | None = None          # fingerprint of the settings that made the outputs (see Pipeline)
    identity: dict[str, Any] | None = None   # the input file the outputs were made from (size, mtime_ns, sha256,
                                             # hashed: see metahmr_cli.io.sources.input_identity)
    input_hex: str | None = None         # the path's bytes in hex when it is not valid UTF-8 (``input`` shows it
                                         # with U+FFFD replacement characters)
    schema_version: str = SCHEMA_VERSION
    run_id: str | None = None
    finished_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return {k: v for k, v in d.items() if v is not None or k in ("reason",)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ManifestRecord:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def display_path(path: str | os.PathLike[str]) -> tuple[str, str | None]:
    """A path as valid UTF-8 text for JSON and npz files, and its exact bytes in hex when they are not UTF-8.

    Python represents undecodable file-name bytes as lone surrogates, which other JSON readers reject: such names
    are shown with U+FFFD replacement characters, and ``bytes.fromhex(hex)`` gives the original name back.
    """
    raw = os.fsencode(path)
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), raw.hex()


def read_manifest(path: str | Path) -> dict[str, ManifestRecord]:
    """Records of a manifest by input ``key`` (last record wins); damaged lines (an interrupted append) are skipped."""
    path = Path(path)
    records: dict[str, ManifestRecord] = {}
    if not path.is_file():
        return records
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            rec = ManifestRecord.from_dict(json.loads(line))
        except (ValueError, TypeError) as exc:
            logger.warning("ignoring damaged line %d of %s (%s)", n, path, exc)
            continue
        records[rec.key] = rec
    return records


class Manifest:
    """The manifest of an output folder.

    During a run, each record is appended as one JSON line and flushed to disk, so a killed run loses at most the
    line being written (damaged lines are ignored on reading). :meth:`finalize` rewrites the file atomically with
    one record per input: this run's inputs in their order, then inputs of earlier runs not seen this time.
    """

    def __init__(self, out_dir: str | Path, run_id: str | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / MANIFEST_NAME
        self.run_id = run_id
        self.previous: dict[str, ManifestRecord] = read_manifest(self.path)
        self.records: dict[str, ManifestRecord] = {}

    def add(self, record: ManifestRecord) -> None:
        """Record the outcome of one input and append it to the file."""
        if record.status not in STATUSES:
            raise ValueError(f"unknown status {record.status!r}; expected one of {STATUSES}")
        record.run_id = record.run_id or self.run_id
        record.finished_at = record.finished_at or _now()
        display, raw_hex = display_path(record.input)
        if raw_hex is not None:
            record.input, record.input_hex = display, raw_hex
        self.records[record.key] = record
        self.out_dir.mkdir(parents=True, exist_ok=True)
        line = json.dumps(jsonable(record.to_dict()), allow_nan=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def finalize(self, order: list[str] | None = None) -> Path:
        """Rewrite the manifest atomically with one record per input (this run's in ``order`` when given)."""
        merged: dict[str, ManifestRecord] = {}
        for key in order or []:
            if key in self.records:
                merged[key] = self.records[key]
        for key, rec in self.records.items():
            merged.setdefault(key, rec)
        for key, rec in self.previous.items():
            merged.setdefault(key, rec)
        text = "".join(json.dumps(jsonable(r.to_dict()), allow_nan=False) + "\n" for r in merged.values())
        return write_text_atomic(self.path, text)

    def counts(self) -> dict[str, int]:
        """Number of this run's inputs per status."""
        c = dict.fromkeys(STATUSES, 0)
        for r in self.records.values():
            c[r.status] += 1
        return c


def write_summary(out_dir: str | Path, summary: Mapping[str, Any]) -> Path:
    """Write ``summary.json`` (run counts, timings, config) atomically."""
    data = {"schema_version": SCHEMA_VERSION, **summary}
    return write_json_atomic(Path(out_dir) / SUMMARY_NAME, data)


# --------------------------------------------------------------------------------------------------------------
# helpers


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _fmt_shape(shape: tuple[int | str, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)
