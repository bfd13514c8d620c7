"""2D keypoint formats and their mapping onto the 49-joint convention.

The 49 slots are those of :data:`metahmr_cli.body.joints.JOINT_NAMES`: OpenPose BODY_25 in slots 0..24 and the
24 "ground-truth" joints in slots 25..48. :func:`to_49` fills, by default, BOTH groups from every source
joint with the same meaning (so the loss weights, which usually keep only the GT group, decide what is used):

- a source joint with a direct counterpart is copied with its confidence;
- ``OP Neck`` and ``OP MidHip`` are derived as the midpoint of the shoulders / hips when a format lacks
  them, with confidence ``min(conf_a, conf_b)``;
- slots without evidence (e.g. ``Neck (LSP)``, ``Pelvis (MPII)``, ``Thorax (MPII)``, ``Spine (H36M)``,
  ``Jaw (H36M)``, ``Head (H36M)``, toes/heels for COCO-17) get position 0 and confidence 0;
- NaN positions or confidences count as "no evidence"; confidences are clipped to [0, 1].

Formats (``fmt``): ``coco17`` (COCO / RTMPose / YOLO-pose / mmpose body), ``body25`` (OpenPose BODY_25),
``openpose18`` (OpenPose COCO-18), ``mediapipe33`` (BlazePose; ``*_foot_index`` used as big toe),
``halpe26`` (Halpe / RTMPose body8-26; ``head`` used as ``Top of Head (LSP)``) and ``coco_wholebody``
(133 keypoints; body and feet used). Source keypoint index per slot (``mid(a,b)`` = midpoint, derived):

| slot | joint | coco17 | body25 | openpose18 | mediapipe33 | halpe26 | coco_wholebody |
|---:|---|---|---|---|---|---|---|
| 0 | OP Nose | 0 | 0 | 0 | 0 | 0 | 0 |
| 1 | OP Neck | mid(5,6) | 1 | 1 | mid(11,12) | 18 | mid(5,6) |
| 2 | OP RShoulder | 6 | 2 | 2 | 12 | 6 | 6 |
| 3 | OP RElbow | 8 | 3 | 3 | 14 | 8 | 8 |
| 4 | OP RWrist | 10 | 4 | 4 | 16 | 10 | 10 |
| 5 | OP LShoulder | 5 | 5 | 5 | 11 | 5 | 5 |
| 6 | OP LElbow | 7 | 6 | 6 | 13 | 7 | 7 |
| 7 | OP LWrist | 9 | 7 | 7 | 15 | 9 | 9 |
| 8 | OP MidHip | mid(11,12) | 8 | mid(11,8) | mid(23,24) | 19 | mid(11,12) |
| 9 | OP RHip | 12 | 9 | 8 | 24 | 12 | 12 |
| 10 | OP RKnee | 14 | 10 | 9 | 26 | 14 | 14 |
| 11 | OP RAnkle | 16 | 11 | 10 | 28 | 16 | 16 |
| 12 | OP LHip | 11 | 12 | 11 | 23 | 11 | 11 |
| 13 | OP LKnee | 13 | 13 | 12 | 25 | 13 | 13 |
| 14 | OP LAnkle | 15 | 14 | 13 | 27 | 15 | 15 |
| 15 | OP REye | 2 | 15 | 14 | 5 | 2 | 2 |
| 16 | OP LEye | 1 | 16 | 15 | 2 | 1 | 1 |
| 17 | OP REar | 4 | 17 | 16 | 8 | 4 | 4 |
| 18 | OP LEar | 3 | 18 | 17 | 7 | 3 | 3 |
| 19 | OP LBigToe | - | 19 | - | 31 | 20 | 17 |
| 20 | OP LSmallToe | - | 20 | - | - | 22 | 18 |
| 21 | OP LHeel | - | 21 | - | 29 | 24 | 19 |
| 22 | OP RBigToe | - | 22 | - | 32 | 21 | 20 |
| 23 | OP RSmallToe | - | 23 | - | - | 23 | 21 |
| 24 | OP RHeel | - | 24 | - | 30 | 25 | 22 |
| 25 | Right Ankle | 16 | 11 | 10 | 28 | 16 | 16 |
| 26 | Right Knee | 14 | 10 | 9 | 26 | 14 | 14 |
| 27 | Right Hip | 12 | 9 | 8 | 24 | 12 | 12 |
| 28 | Left Hip | 11 | 12 | 11 | 23 | 11 | 11 |
| 29 | Left Knee | 13 | 13 | 12 | 25 | 13 | 13 |
| 30 | Left Ankle | 15 | 14 | 13 | 27 | 15 | 15 |
| 31 | Right Wrist | 10 | 4 | 4 | 16 | 10 | 10 |
| 32 | Right Elbow | 8 | 3 | 3 | 14 | 8 | 8 |
| 33 | Right Shoulder | 6 | 2 | 2 | 12 | 6 | 6 |
| 34 | Left Shoulder | 5 | 5 | 5 | 11 | 5 | 5 |
| 35 | Left Elbow | 7 | 6 | 6 | 13 | 7 | 7 |
| 36 | Left Wrist | 9 | 7 | 7 | 15 | 9 | 9 |
| 37 | Neck (LSP) | - | - | - | - | - | - |
| 38 | Top of Head (LSP) | - | - | - | - | 17 | - |
| 39 | Pelvis (MPII) | - | - | - | - | - | - |
| 40 | Thorax (MPII) | - | - | - | - | - | - |
| 41 | Spine (H36M) | - | - | - | - | - | - |
| 42 | Jaw (H36M) | - | - | - | - | - | - |
| 43 | Head (H36M) | - | - | - | - | - | - |
| 44 | Nose | 0 | 0 | 0 | 0 | 0 | 0 |
| 45 | Left Eye | 1 | 16 | 15 | 2 | 1 | 1 |
| 46 | Right Eye | 2 | 15 | 14 | 5 | 2 | 2 |
| 47 | Left Ear | 3 | 18 | 17 | 7 | 3 | 3 |
| 48 | Right Ear | 4 | 17 | 16 | 8 | 4 | 4 |

:func:`mapping_table` returns the same table as data.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np

from metahmr_cli.body.joints import JOINT_NAMES

Slots = Literal["both", "openpose", "gt"]

_COCO17 = [
    "nose", "leye", "reye", "lear", "rear", "lshoulder", "rshoulder", "lelbow", "relbow", "lwrist", "rwrist",
    "lhip", "rhip", "lknee", "rknee", "lankle", "rankle",
]
_BODY25 = [
    "nose", "neck", "rshoulder", "relbow", "rwrist", "lshoulder", "lelbow", "lwrist", "midhip", "rhip", "rknee",
    "rankle", "lhip", "lknee", "lankle", "reye", "leye", "rear", "lear", "lbigtoe", "lsmalltoe", "lheel",
    "rbigtoe", "rsmalltoe", "rheel",
]
_OPENPOSE18 = [
    "nose", "neck", "rshoulder", "relbow", "rwrist", "lshoulder", "lelbow", "lwrist", "rhip", "rknee", "rankle",
    "lhip", "lknee", "lankle", "reye", "leye", "rear", "lear",
]
_MEDIAPIPE33 = [
    "nose", "leye_inner", "leye", "leye_outer", "reye_inner", "reye", "reye_outer", "lear", "rear", "mouth_left",
    "mouth_right", "lshoulder", "rshoulder", "lelbow", "relbow", "lwrist", "rwrist", "lpinky", "rpinky",
    "lindex", "rindex", "lthumb", "rthumb", "lhip", "rhip", "lknee", "rknee", "lankle", "rankle", "lheel",
    "rheel", "lbigtoe", "rbigtoe",
]
_HALPE26 = _COCO17 + ["headtop", "neck", "midhip", "lbigtoe", "rbigtoe", "lsmalltoe", "rsmalltoe", "lheel", "rheel"]
_WHOLEBODY_BODY = _COCO17 + ["lbigtoe", "lsmalltoe", "lheel", "rbigtoe", "rsmalltoe", "rheel"]

KEYPOINT_FORMATS: dict[str, tuple[int, list[str]]] = {
    "coco17": (17, _COCO17),
    "body25": (25, _BODY25),
    "openpose18": (18, _OPENPOSE18),
    "mediapipe33": (33, _MEDIAPIPE33),
    "halpe26": (26, _HALPE26),
    "coco_wholebody": (133, _WHOLEBODY_BODY),
}
"""Format name -> (number of keypoints, semantic names of the leading keypoints used for the mapping)."""

FORMAT_ALIASES: dict[str, str] = {
    "coco": "coco17", "coco-17": "coco17", "coco_17": "coco17",
    "body_25": "body25", "openpose": "body25", "op25": "body25",
    "coco18": "openpose18", "openpose_coco18": "openpose18",
    "mediapipe": "mediapipe33", "blazepose": "mediapipe33",
    "halpe": "halpe26", "halpe_26": "halpe26", "body26": "halpe26",
    "wholebody": "coco_wholebody", "coco-wholebody": "coco_wholebody", "coco_wholebody133": "coco_wholebody",
}

# semantic name per 49-joint name; None = no keypoint format provides it
_TARGETS: dict[str, str | None] = {
    "OP Nose": "nose", "OP Neck": "neck", "OP RShoulder": "rshoulder", "OP RElbow": "relbow",
    "OP RWrist": "rwrist", "OP LShoulder": "lshoulder", "OP LElbow": "lelbow", "OP LWrist": "lwrist",
    "OP MidHip": "midhip", "OP RHip": "rhip", "OP RKnee": "rknee", "OP RAnkle": "rankle", "OP LHip": "lhip",
    "OP LKnee": "lknee", "OP LAnkle": "lankle", "OP REye": "reye", "OP LEye": "leye", "OP REar": "rear",
    "OP LEar": "lear", "OP LBigToe": "lbigtoe", "OP LSmallToe": "lsmalltoe", "OP LHeel": "lheel",
    "OP RBigToe": "rbigtoe", "OP RSmallToe": "rsmalltoe", "OP RHeel": "rheel",
    "Right Ankle": "rankle", "Right Knee": "rknee", "Right Hip": "rhip", "Left Hip": "lhip",
    "Left Knee": "lknee", "Left Ankle": "lankle", "Right Wrist": "rwrist", "Right Elbow": "relbow",
    "Right Shoulder": "rshoulder", "Left Shoulder": "lshoulder", "Left Elbow": "lelbow", "Left Wrist": "lwrist",
    "Neck (LSP)": None, "Top of Head (LSP)": "headtop", "Pelvis (MPII)": None, "Thorax (MPII)": None,
    "Spine (H36M)": None, "Jaw (H36M)": None, "Head (H36M)": None, "Nose": "nose", "Left Eye": "leye",
    "Right Eye": "reye", "Left Ear": "lear", "Right Ear": "rear",
}
_DERIVED: dict[str, tuple[str, str]] = {"neck": ("lshoulder", "rshoulder"), "midhip": ("lhip", "rhip")}

Source = tuple[int] | tuple[int, int]


def canonical_format(fmt: str) -> str:
    """Canonical format name (``"COCO"`` -> ``"coco17"``); raises ValueError naming the known formats."""
    key = fmt.strip().lower()
    key = FORMAT_ALIASES.get(key, key)
    if key not in KEYPOINT_FORMATS:
        known = ", ".join(sorted(KEYPOINT_FORMATS))
        raise ValueError(f"unknown keypoint format {fmt!r}; known formats: {known}")
    return key


def format_for_count(num_keypoints: int) -> str:
    """Format of a model or file with this many keypoints (17 -> coco17, 25 -> body25, ...)."""
    for name, (k, _) in KEYPOINT_FORMATS.items():
        if k == num_keypoints:
            return name
    raise ValueError(
        f"no known keypoint format has {num_keypoints} keypoints; known: "
        + ", ".join(f"{n} ({k})" for n, (k, _) in KEYPOINT_FORMATS.items())
    )


def slot_sources(fmt: str) -> list[Source | None]:
    """Source of each of the 49 slots for ``fmt``: ``(i,)`` copy keypoint i, ``(a, b)`` midpoint, None = empty."""
    fmt = canonical_format(fmt)
    names = KEYPOINT_FORMATS[fmt][1]
    index = {n: i for i, n in enumerate(names)}
    out: list[Source | None] = []
    for joint in JOINT_NAMES:
        sem = _TARGETS[joint]
        if sem is None:
            out.append(None)
        elif sem in index:
            out.append((index[sem],))
        elif sem in _DERIVED and joint.startswith("OP ") and all(s in index for s in _DERIVED[sem]):
            a, b = _DERIVED[sem]
            out.append((index[a], index[b]))
        else:
            out.append(None)
    return out


def to_49(kp: np.ndarray, fmt: str, *, slots: Slots = "both") -> np.ndarray:
    """Map keypoints of a known format onto the 49-joint convention.

    Args:
        kp: (N, K, 3) or (K, 3) keypoints ``[x, y, confidence]`` in pixels (any consistent unit).
        fmt: keypoint format (see :data:`KEYPOINT_FORMATS`; aliases such as ``"coco"`` accepted).
        slots: fill the OpenPose slots 0..24, the GT slots 25..48, or ``"both"``.

    Returns:
        (N, 49, 3) float32 (or (49, 3) for unbatched input); empty slots are all zero.
    """
    fmt = canonical_format(fmt)
    arr = np.asarray(kp, dtype=np.float64)
    single = arr.ndim == 2
    if single:
        arr = arr[None]
    k_expected = KEYPOINT_FORMATS[fmt][0]
    if arr.ndim != 3 or arr.shape[2] not in (2, 3) or arr.shape[1] != k_expected:
        raise ValueError(f"{fmt} keypoints must have shape (N, {k_expected}, 3), got {np.shape(kp)}")
    if arr.shape[2] == 2:
        arr = np.concatenate([arr, np.ones(arr.shape[:2] + (1,))], axis=2)
    arr = arr.copy()
    bad = ~np.isfinite(arr).all(axis=2)
    arr[bad] = 0.0
    arr[..., 2] = np.clip(arr[..., 2], 0.0, 1.0)
    arr[arr[..., 2] <= 0] = 0.0

    out = np.zeros((arr.shape[0], len(JOINT_NAMES), 3), dtype=np.float64)
    for slot, src in enumerate(slot_sources(fmt)):
        if src is None:
            continue
        if (slots == "openpose" and slot >= 25) or (slots == "gt" and slot < 25):
            continue
        if len(src) == 1:
            out[:, slot] = arr[:, src[0]]
        else:
            a, b = arr[:, src[0]], arr[:, src[1]]
            conf = np.minimum(a[:, 2], b[:, 2])
            mid = 0.5 * (a[:, :2] + b[:, :2])
            out[:, slot, :2] = np.where(conf[:, None] > 0, mid, 0.0)
            out[:, slot, 2] = conf
    out = out.astype(np.float32)
    return out[0] if single else out


def mapping_table() -> list[dict[str, str | int]]:
    """The mapping as data: one row per slot with ``slot``, ``joint`` and, per format, the source joint(s).

    Source cells read like ``"5 lshoulder"`` or ``"mid(5 lshoulder, 6 rshoulder)"``; ``""`` when empty.
    """
    rows: list[dict[str, str | int]] = [{"slot": i, "joint": name} for i, name in enumerate(JOINT_NAMES)]
    for fmt, (_, names) in KEYPOINT_FORMATS.items():
        for row, src in zip(rows, slot_sources(fmt), strict=True):
            if src is None:
                row[fmt] = ""
            elif len(src) == 1:
                row[fmt] = f"{src[0]} {names[src[0]]}"
            else:
                row[fmt] = f"mid({src[0]} {names[src[0]]}, {src[1]} {names[src[1]]})"
    return rows


def mapping_table_markdown(*, with_names: bool = True) -> str:
    """The mapping table as GitHub markdown (for the README); ``with_names=False`` gives indices only."""
    fmts = list(KEYPOINT_FORMATS)
    lines = ["| slot | joint | " + " | ".join(fmts) + " |", "|---:|---|" + "---|" * len(fmts)]
    for row in mapping_table():
        cells = [str(row[f]) or "-" for f in fmts]
        if not with_names:
            cells = [re.sub(r"(\d+) [a-z_]+", r"\1", c).replace(", ", ",") for c in cells]
        lines.append(f"| {row['slot']} | {row['joint']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
