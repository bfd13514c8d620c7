"""The open stand-in body: a generated, SMPL-compatible mesh usable without the licensed SMPL files.

The body is a union of closed tubes (capsules with elliptical cross-sections) around SMPL's 24 kinematic
joints, in SMPL's rest frame (y up, z forward, the subject's left on +x, arms out in a T-pose). It is written in
SMPL's file format so that ``smplx.SMPL`` can drive it:

- ``STANDIN_{NEUTRAL,MALE,FEMALE}.npz``: ``v_template`` (V, 3), ``shapedirs`` (V, 3, 10), ``posedirs`` (V, 3, 207,
  zeros: no pose correctives), ``J_regressor`` (24, V), ``weights`` (V, 24), ``kintree_table`` (2, 24), ``f`` (F, 3),
  plus ``vertex_id_names``/``vertex_id_values`` (the vertices used as face, foot and fingertip joints);
- ``J_regressor_extra.npy`` (9, V) and ``J_regressor_h36m.npy`` (17, V);
- ``smpl_mean_params.npz`` (``pose`` (144,) in 6D, ``shape`` (10,), ``cam`` (3,));
- ``body.json`` (name, licence note, vertex ids, counts).

Every joint is regressed as the mean of a ring of vertices centred on it, so ``J_regressor @ v_template``
reproduces the skeleton exactly and the joints follow the shape directions. Skinning weights blend neighbouring
bones smoothly along each tube. Everything is deterministic for a given ``seed``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from metahmr_cli.body.builders.common import (
    EXTRA_TAGS,
    H36M_TAGS,
    model_arrays,
    nearest,
    ordered_vertex_ids,
    rot6d,
    write_atomic,
)
from metahmr_cli.constants import GENDERS, NUM_BETAS
from metahmr_cli.files import save_npz_atomic

logger = logging.getLogger(__name__)

STANDIN_VERSION = 1
LICENCE_NOTE = "generated, open; not SMPL"
MODEL_FILE_PATTERN = "STANDIN_{}.npz"

# Joint indices used below (SMPL order).
_PELVIS, _LHIP, _RHIP, _SPINE1, _LKNEE, _RKNEE, _SPINE2, _LANKLE, _RANKLE, _SPINE3 = range(10)
_LFOOT, _RFOOT, _NECK, _LCOLLAR, _RCOLLAR, _HEAD, _LSHOULDER, _RSHOULDER = range(10, 18)
_LELBOW, _RELBOW, _LWRIST, _RWRIST, _LHAND, _RHAND = range(18, 24)

@dataclass
class _Tube:
    """A closed tube around the axis p0 -> p1 (t = 0 at p0, 1 at p1).

    knots: (t, a, b, tags) rings with semi-axes a (along ``width_dir``) and b; radii interpolate linearly.
    fill: number of extra rings between consecutive knots.
    cap0/cap1: length of the elliptical end caps beyond the first/last knot (metres).
    skin: joints along the axis and the t values of the boundaries between them (len(joints) - 1).
    blend: half-width of the smooth blend at each skinning boundary (metres).
    """

    name: str
    p0: np.ndarray
    p1: np.ndarray
    knots: list[tuple[float, float, float, tuple[str, ...]]]
    fill: list[int]
    cap0: float
    cap1: float
    width_dir: np.ndarray
    n_around: int
    skin_joints: list[int]
    skin_bounds: list[float]
    blend: float
    n_cap: int = 3
    pole1_tags: tuple[str, ...] = ()


@dataclass
class _Mesh:
    vertices: list[np.ndarray] = field(default_factory=list)
    faces: list[np.ndarray] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)
    radial: list[np.ndarray] = field(default_factory=list)
    part_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    rings: dict[str, list[np.ndarray]] = field(default_factory=dict)
    count: int = 0


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _add_tube(mesh: _Mesh, tube: _Tube) -> None:
    """Append the rings, faces and skinning weights of one tube to ``mesh``."""
    p0 = np.asarray(tube.p0, dtype=np.float64)
    axis = np.asarray(tube.p1, dtype=np.float64) - p0
    length = float(np.linalg.norm(axis))
    u = axis / length
    w = np.asarray(tube.width_dir, dtype=np.float64)
    e1 = w - np.dot(w, u) * u
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(u, e1)

    # Ring list along the axis: (s in metres, a, b, tags).
    rings: list[tuple[float, float, float, tuple[str, ...]]] = []
    knots = tube.knots
    t_first, a_first, b_first, _ = knots[0]
    t_last, a_last, b_last, _ = knots[-1]
    s_first, s_last = t_first * length, t_last * length
    for i in range(tube.n_cap, 0, -1):
        phi = i / (tube.n_cap + 1) * (np.pi / 2)
        rings.append((s_first - tube.cap0 * np.sin(phi), a_first * np.cos(phi), b_first * np.cos(phi), ()))
    for k, (t, a, b, tags) in enumerate(knots):
        rings.append((t * length, a, b, tuple(tags)))
        if k + 1 < len(knots):
            t2, a2, b2, _ = knots[k + 1]
            n = tube.fill[k]
            for j in range(1, n + 1):
                f = j / (n + 1)
                rings.append(((t + f * (t2 - t)) * length, a + f * (a2 - a), b + f * (b2 - b), ()))
    for i in range(1, tube.n_cap + 1):
        phi = i / (tube.n_cap + 1) * (np.pi / 2)
        rings.append((s_last + tube.cap1 * np.sin(phi), a_last * np.cos(phi), b_last * np.cos(phi), ()))

    n = tube.n_around
    theta = 2.0 * np.pi * np.arange(n) / n
    cos_t, sin_t = np.cos(theta), np.sin(theta)
    start = mesh.count
    verts = [p0 + (s_first - tube.cap0) * u]
    axial = [s_first - tube.cap0]
    radial = [np.zeros(3)]
    for r, (s, a, b, tags) in enumerate(rings):
        centre = p0 + s * u
        offs = a * cos_t[:, None] * e1 + b * sin_t[:, None] * e2
        verts.extend(centre + offs)
        axial.extend([s] * n)
        radial.extend(offs)
        idx = start + 1 + r * n + np.arange(n)
        for tag in tags:
            mesh.rings.setdefault(tag, []).append(idx)
    verts.append(p0 + (s_last + tube.cap1) * u)
    axial.append(s_last + tube.cap1)
    radial.append(np.zeros(3))
    pole1 = start + 1 + len(rings) * n
    for tag in tube.pole1_tags:
        mesh.rings.setdefault(tag, []).append(np.array([pole1]))

    # Faces: fan, quads, fan (local indices, then offset).
    faces = []
    first = 1
    for k in range(n):
        faces.append((0, first + (k + 1) % n, first + k))
    for r in range(len(rings) - 1):
        a0 = 1 + r * n
        b0 = a0 + n
        for k in range(n):
            k1 = (k + 1) % n
            faces.append((a0 + k, a0 + k1, b0 + k1))
            faces.append((a0 + k, b0 + k1, b0 + k))
    last = 1 + (len(rings) - 1) * n
    top = 1 + len(rings) * n
    for k in range(n):
        faces.append((top, last + k, last + (k + 1) % n))
    faces_arr = np.asarray(faces, dtype=np.int64)
    verts_arr = np.asarray(verts)
    # Outward orientation: positive signed volume.
    tri = verts_arr[faces_arr]
    volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0
    if volume < 0:
        faces_arr = faces_arr[:, ::-1]

    # Skinning: smooth partition of unity along the axis.
    s_arr = np.asarray(axial)
    member = np.zeros((len(s_arr), len(tube.skin_joints)))
    steps = [_smoothstep((s_arr - (tb * length - tube.blend)) / (2 * tube.blend)) for tb in tube.skin_bounds]
    for j in range(len(tube.skin_joints)):
        lo = steps[j - 1] if j > 0 else np.ones_like(s_arr)
        hi = steps[j] if j < len(steps) else np.zeros_like(s_arr)
        member[:, j] = lo - hi
    weights = np.zeros((len(s_arr), 24))
    for j, joint in enumerate(tube.skin_joints):
        weights[:, joint] += member[:, j]

    mesh.vertices.append(verts_arr)
    mesh.faces.append(faces_arr + start)
    mesh.weights.append(weights)
    mesh.radial.append(np.asarray(radial))
    mesh.part_ranges[tube.name] = (start, start + len(verts_arr))
    mesh.count += len(verts_arr)


@dataclass(frozen=True)
class _Proportions:
    scale: float
    shoulders: float
    hips: float
    girth: float


_PROPORTIONS = {
    "neutral": _Proportions(1.0, 1.0, 1.0, 1.0),
    "male": _Proportions(1.05, 1.07, 0.97, 1.04),
    "female": _Proportions(0.955, 0.93, 1.07, 0.97),
}

_PELVIS_HEIGHT_IN_MODEL = -0.24
"""y of the pelvis joint in the model frame (SMPL's template sits roughly around its pelvis)."""


def _tubes(p: _Proportions) -> tuple[list[_Tube], dict[str, float]]:
    """All tubes of one body in floor coordinates (feet on y = 0), plus landmark heights."""
    s, g, sw, hw = p.scale, p.scale * p.girth, p.shoulders, p.hips
    X, Y, Z = np.eye(3)

    def pt(x: float, y: float, z: float) -> np.ndarray:
        return np.array([x, y * s, z * s])

    y = {
        "ankle": 0.08,
        "knee": 0.51,
        "hip": 0.89,
        "pelvis": 0.98,
        "spine1": 1.10,
        "spine2": 1.23,
        "spine3": 1.29,
        "neck": 1.50,
        "collar": 1.42,
        "arm": 1.445,
        "head": 1.57,
    }
    hip_x, knee_x, ankle_x = 0.08 * s * hw, 0.095 * s * hw, 0.09 * s * hw
    collar_x, shoulder_x = 0.075 * s * sw, 0.17 * s * sw
    elbow_x = shoulder_x + 0.25 * s
    wrist_x = elbow_x + 0.25 * s
    tip_x = wrist_x + 0.19 * s

    tubes: list[_Tube] = []
    torso_bottom, torso_top = 0.84, 1.46
    span = torso_top - torso_bottom

    def tt(yy: float) -> float:
        return (yy - torso_bottom) / span

    torso_knots = [
        (tt(0.84), 0.150 * hw, 0.100, ()),
        (tt(0.93), 0.160 * hw, 0.105, ("extra:pelvis", "h36m:pelvis")),
        (tt(0.98), 0.160 * hw, 0.105, ("joint:0",)),
        (tt(1.10), 0.135, 0.095, ("joint:3",)),
        (tt(1.17), 0.140, 0.098, ("extra:spine",)),
        (tt(1.23), 0.150, 0.100, ("joint:6",)),
        (tt(1.29), 0.160, 0.105, ("joint:9",)),
        (tt(1.36), 0.170 * sw, 0.105, ()),
        (tt(1.42), 0.175 * sw, 0.095, ("extra:thorax",)),
        (tt(1.46), 0.150 * sw, 0.080, ("h36m:thorax",)),
    ]
    tubes.append(
        _Tube(
            "torso",
            pt(0, torso_bottom, 0),
            pt(0, torso_top, 0),
            [(t, a * g, b * g, tags) for t, a, b, tags in torso_knots],
            [2, 1, 2, 1, 1, 1, 1, 1, 0],
            0.06 * s,
            0.05 * s,
            X,
            24,
            [_PELVIS, _SPINE1, _SPINE2, _SPINE3],
            [tt(1.10), tt(1.23), tt(1.29)],
            0.025 * s,
        )
    )
    neck0, head_joint = pt(0, y["neck"], 0), pt(0, y["head"], 0.015)
    tubes.append(
        _Tube(
            "neck",
            neck0,
            head_joint,
            [
                (0.0, 0.055 * g, 0.05 * g, ("joint:12",)),
                (0.5, 0.052 * g, 0.048 * g, ("extra:neck",)),
                (1.0, 0.05 * g, 0.045 * g, ("joint:15",)),
            ],
            [1, 1],
            0.07 * s,
            0.02 * s,
            X,
            16,
            [_SPINE3, _NECK, _HEAD],
            [0.0, 1.0],
            0.02 * s,
        )
    )
    h0, h1 = 1.53, 1.66

    def th(yy: float) -> float:
        return (yy - h0) / (h1 - h0)

    head_knots = [
        (0.0, 0.055, 0.070, ()),
        (th(1.545), 0.062, 0.078, ("extra:jaw",)),
        (th(1.57), 0.070, 0.088, ()),
        (th(1.62), 0.078, 0.097, ()),
        (th(1.63), 0.078, 0.097, ("extra:head",)),
        (th(1.645), 0.076, 0.095, ("h36m:head",)),
        (1.0, 0.070, 0.090, ()),
    ]
    tubes.append(
        _Tube(
            "head",
            pt(0, h0, 0.015),
            pt(0, h1, 0.015),
            [(t, a * s, b * s, tags) for t, a, b, tags in head_knots],
            [1, 1, 2, 0, 0, 1],
            0.03 * s,
            0.045 * s,
            X,
            20,
            [_NECK, _HEAD],
            [th(1.57)],
            0.02 * s,
            n_cap=4,
            pole1_tags=("extra:headtop",),
        )
    )
    for side in (1, -1):
        L = side > 0
        j = {
            "collar": _LCOLLAR if L else _RCOLLAR,
            "shoulder": _LSHOULDER if L else _RSHOULDER,
            "elbow": _LELBOW if L else _RELBOW,
            "wrist": _LWRIST if L else _RWRIST,
            "hand": _LHAND if L else _RHAND,
            "hip": _LHIP if L else _RHIP,
            "knee": _LKNEE if L else _RKNEE,
            "ankle": _LANKLE if L else _RANKLE,
            "foot": _LFOOT if L else _RFOOT,
        }
        pre = "l" if L else "r"
        arm_z = -0.02

        def tag(name: str, _j: dict = j) -> str:
            return f"joint:{_j[name]}"

        tubes.append(
            _Tube(
                f"{pre}collar",
                pt(side * collar_x, y["collar"], arm_z),
                pt(side * shoulder_x, y["arm"], arm_z),
                [(0.0, 0.05 * g, 0.045 * g, (tag("collar"),)), (1.0, 0.05 * g, 0.045 * g, ())],
                [1],
                0.03 * s,
                0.03 * s,
                Y,
                12,
                [_SPINE3, j["collar"], j["shoulder"]],
                [0.0, 1.0],
                0.02 * s,
            )
        )
        tubes.append(
            _Tube(
                f"{pre}upperarm",
                pt(side * shoulder_x, y["arm"], arm_z),
                pt(side * elbow_x, y["arm"] - 0.005, arm_z),
                [(0.0, 0.05 * g, 0.05 * g, (tag("shoulder"),)), (1.0, 0.04 * g, 0.04 * g, ())],
                [4],
                0.045 * s,
                0.035 * s,
                Z,
                16,
                [j["collar"], j["shoulder"], j["elbow"]],
                [0.0, 1.0],
                0.04 * s,
            )
        )
        tubes.append(
            _Tube(
                f"{pre}forearm",
                pt(side * elbow_x, y["arm"] - 0.005, arm_z),
                pt(side * wrist_x, y["arm"], arm_z),
                [(0.0, 0.042 * g, 0.04 * g, (tag("elbow"),)), (1.0, 0.032 * g, 0.027 * g, ())],
                [4],
                0.035 * s,
                0.03 * s,
                Z,
                16,
                [j["shoulder"], j["elbow"], j["wrist"]],
                [0.0, 1.0],
                0.04 * s,
            )
        )
        tubes.append(
            _Tube(
                f"{pre}hand",
                pt(side * wrist_x, y["arm"], arm_z),
                pt(side * tip_x, y["arm"], arm_z - 0.01),
                [
                    (0.0, 0.03 * g, 0.02 * g, (tag("wrist"),)),
                    (0.45, 0.045 * g, 0.016 * g, (tag("hand"),)),
                    (1.0, 0.04 * g, 0.012 * g, ()),
                ],
                [1, 2],
                0.02 * s,
                0.025 * s,
                Z,
                12,
                [j["elbow"], j["wrist"], j["hand"]],
                [0.0, 0.45],
                0.02 * s,
            )
        )
        tubes.append(
            _Tube(
                f"{pre}thigh",
                pt(side * hip_x, y["hip"], 0.0),
                pt(side * knee_x, y["knee"], 0.005),
                [
                    (0.0, 0.085 * g, 0.085 * g, (tag("hip"),)),
                    (0.1, 0.08 * g, 0.08 * g, (f"extra:{pre}hip",)),
                    (1.0, 0.055 * g, 0.055 * g, ()),
                ],
                [0, 4],
                0.06 * s,
                0.04 * s,
                X,
                16,
                [_PELVIS, j["hip"], j["knee"]],
                [0.0, 1.0],
                0.05 * s,
            )
        )
        tubes.append(
            _Tube(
                f"{pre}shin",
                pt(side * knee_x, y["knee"], 0.005),
                pt(side * ankle_x, y["ankle"], -0.01),
                [
                    (0.0, 0.052 * g, 0.055 * g, (tag("knee"),)),
                    (0.3, 0.05 * g, 0.055 * g, ()),
                    (1.0, 0.035 * g, 0.035 * g, (tag("ankle"),)),
                ],
                [1, 3],
                0.04 * s,
                0.03 * s,
                X,
                16,
                [j["hip"], j["knee"], j["ankle"]],
                [0.0, 1.0],
                0.04 * s,
            )
        )
        tubes.append(
            _Tube(
                f"{pre}foot",
                pt(side * ankle_x, 0.04, -0.045),
                pt(side * (ankle_x + 0.02 * s), 0.04, 0.15),
                [
                    (0.0, 0.035 * s, 0.035 * s, ()),
                    (0.8, 0.045 * s, 0.035 * s, (tag("foot"),)),
                    (1.0, 0.04 * s, 0.025 * s, ()),
                ],
                [3, 0],
                0.03 * s,
                0.04 * s,
                X,
                12,
                [j["ankle"], j["foot"]],
                [0.8],
                0.02 * s,
            )
        )
    marks = {k: v * s for k, v in y.items()}
    marks.update(hip_x=hip_x, shoulder_x=shoulder_x, wrist_x=wrist_x, tip_x=tip_x, top=1.705 * s)
    return tubes, marks


@dataclass
class StandinBody:
    """One generated body, in SMPL's file layout (arrays float64 until written)."""

    gender: str
    v_template: np.ndarray  # (V, 3)
    shapedirs: np.ndarray  # (V, 3, 10)
    J_regressor: np.ndarray  # (24, V)
    J_regressor_extra: np.ndarray  # (9, V)
    J_regressor_h36m: np.ndarray  # (17, V)
    weights: np.ndarray  # (V, 24)
    faces: np.ndarray  # (F, 3)
    vertex_ids: dict[str, int]
    part_ranges: dict[str, tuple[int, int]]

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    def model_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for the ``STANDIN_<G>.npz`` file (SMPL's keys plus the vertex ids)."""
        return model_arrays(v_template=self.v_template, shapedirs=self.shapedirs, J_regressor=self.J_regressor,
                            weights=self.weights, faces=self.faces, body_name="standin", vertex_ids=self.vertex_ids)


def _ring_regressor(mesh: _Mesh, tags: list[str], num_vertices: int) -> np.ndarray:
    reg = np.zeros((len(tags), num_vertices))
    for row, tag in enumerate(tags):
        rings = mesh.rings.get(tag)
        if not rings:
            raise RuntimeError(f"stand-in generator: no ring tagged {tag!r}")
        for ring in rings:
            reg[row, ring] += 1.0 / (len(ring) * len(rings))
    return reg


def _nearest(vertices: np.ndarray, part: tuple[int, int], target: np.ndarray) -> int:
    """The vertex of the part (a range of vertex indices) nearest to ``target``."""
    lo, hi = part
    return lo + nearest(vertices[lo:hi], target)


def _vertex_ids(v: np.ndarray, parts: dict[str, tuple[int, int]], joints: np.ndarray) -> dict[str, int]:
    """Vertices used as extra joints (face, fingertips, feet), found on the template."""
    ids: dict[str, int] = {}
    head = parts["head"]
    hv = v[head[0] : head[1]]
    front = float(hv[:, 2].max())
    head_y = joints[_HEAD, 1] + 0.03
    eye_y = joints[_HEAD, 1] + 0.055
    ids["nose"] = _nearest(v, head, np.array([0.0, head_y, front]))
    ids["reye"] = _nearest(v, head, np.array([-0.035, eye_y, front - 0.01]))
    ids["leye"] = _nearest(v, head, np.array([0.035, eye_y, front - 0.01]))
    ids["rear"] = _nearest(v, head, np.array([-0.5, head_y, 0.015]))
    ids["lear"] = _nearest(v, head, np.array([0.5, head_y, 0.015]))
    for pre, side in (("l", 1.0), ("r", -1.0)):
        hand = parts[f"{pre}hand"]
        lo, hi = hand
        tip = v[lo:hi][np.argmax(side * v[lo:hi, 0])]
        wrist_x = joints[_LWRIST if side > 0 else _RWRIST, 0]
        yy, z0 = tip[1], tip[2]
        ids[f"{pre}thumb"] = _nearest(v, hand, np.array([wrist_x + side * 0.06, yy, z0 + 0.3]))
        for name, dz in (("index", 0.03), ("middle", 0.0), ("ring", -0.02), ("pinky", -0.04)):
            ids[f"{pre}{name}"] = _nearest(v, hand, np.array([tip[0] + side * 0.3, yy, z0 + dz * 10]))
        foot = parts[f"{pre}foot"]
        fv = v[foot[0] : foot[1]]
        fx, fy = float(fv[:, 0].mean()), float(fv[:, 1].min())
        zmin, zmax = float(fv[:, 2].min()), float(fv[:, 2].max())
        side_name = "L" if side > 0 else "R"
        ids[f"{side_name}BigToe"] = _nearest(v, foot, np.array([fx - side * 0.03, fy + 0.015, zmax - 0.01]))
        ids[f"{side_name}SmallToe"] = _nearest(v, foot, np.array([fx + side * 0.04, fy + 0.015, zmax - 0.03]))
        ids[f"{side_name}Heel"] = _nearest(v, foot, np.array([fx, fy + 0.015, zmin]))
    return ordered_vertex_ids(ids)


def _shape_directions(
    v: np.ndarray, radial: np.ndarray, parts: dict[str, tuple[int, int]], joints: np.ndarray
) -> np.ndarray:
    """Ten linear shape directions (V, 3, 10); positive values make the body taller, heavier, longer..."""
    x, y = v[:, 0], v[:, 1]
    V = v.shape[0]
    dirs = np.zeros((V, 3, NUM_BETAS))
    pelvis, neck = joints[_PELVIS], joints[_NECK]
    hip_y = joints[_LHIP, 1]
    spine1_y, spine3_y = joints[_SPINE1, 1], joints[_SPINE3, 1]
    shoulder_x, shoulder_y = joints[_LSHOULDER, 0], joints[_LSHOULDER, 1]
    hip_x = joints[_LHIP, 0]

    def ramp(a: np.ndarray) -> np.ndarray:
        return np.clip(a, 0.0, 1.0)

    def part_mask(*names: str) -> np.ndarray:
        mask = np.zeros(V, dtype=bool)
        for name in names:
            lo, hi = parts[name]
            mask[lo:hi] = True
        return mask

    # 0: overall size (height) about the pelvis.
    dirs[:, :, 0] = 0.035 * (v - pelvis)
    # 1: girth (weight): radial growth of every tube.
    dirs[:, :, 1] = 0.08 * radial
    # 2: leg length (below the hips).
    dirs[:, 1, 2] = 0.06 * np.minimum(y - hip_y, 0.0)
    # 3: arm length (beyond the shoulders).
    dirs[:, 0, 3] = 0.08 * np.sign(x) * np.maximum(np.abs(x) - shoulder_x, 0.0)
    # 4: shoulder width (upper body above the chest moves outwards).
    up = ramp((y - spine3_y) / (0.5 * (shoulder_y - spine3_y)))
    dirs[:, 0, 4] = 0.025 * np.clip(x / shoulder_x, -1.0, 1.0) * up
    # 5: torso length (above the pelvis, up to the neck; head and arms move along).
    dirs[:, 1, 5] = 0.06 * np.clip(y - pelvis[1], 0.0, neck[1] - pelvis[1])
    # 6: hip width (lower body moves outwards).
    down = ramp((spine1_y - y) / (spine1_y - hip_y))
    dirs[:, 0, 6] = 0.025 * np.clip(x / hip_x, -1.0, 1.0) * down
    # 7: belly / chest depth (front of the torso).
    torso = part_mask("torso")
    belly = np.exp(-(((y - spine1_y) / 0.12) ** 2))
    dirs[torso, 2, 7] = 0.35 * np.maximum(radial[torso, 2], 0.0) * belly[torso]
    # 8: head size about the head joint.
    head = part_mask("head")
    dirs[head, :, 8] = 0.08 * (v[head] - joints[_HEAD])
    # 9: hand and foot size about the wrists and ankles.
    for part, joint in (("lhand", _LWRIST), ("rhand", _RWRIST), ("lfoot", _LANKLE), ("rfoot", _RANKLE)):
        mask = part_mask(part)
        dirs[mask, :, 9] = 0.1 * (v[mask] - joints[joint])
    return dirs


def build_standin_body(gender: str = "neutral", *, seed: int = 0) -> StandinBody:
    """Generate the stand-in body of one gender in memory (deterministic for a given seed).

    ``seed`` 0 gives the canonical body; other seeds jitter the proportions by a few percent.
    """
    if gender not in _PROPORTIONS:
        raise ValueError(f"gender must be one of {', '.join(GENDERS)}, got {gender!r}")
    prop = _PROPORTIONS[gender]
    if seed:
        rng = np.random.default_rng([seed, GENDERS.index(gender)])
        j = 1.0 + 0.03 * rng.uniform(-1.0, 1.0, size=4)
        prop = _Proportions(prop.scale * j[0], prop.shoulders * j[1], prop.hips * j[2], prop.girth * j[3])
    tubes, marks = _tubes(prop)
    mesh = _Mesh()
    for tube in tubes:
        _add_tube(mesh, tube)
    v = np.concatenate(mesh.vertices)
    faces = np.concatenate(mesh.faces)
    weights = np.concatenate(mesh.weights)
    radial = np.concatenate(mesh.radial)
    # Model frame: pelvis at a fixed height, SMPL-like.
    shift = np.array([0.0, _PELVIS_HEIGHT_IN_MODEL - marks["pelvis"], 0.0])
    v = v + shift
    V = v.shape[0]
    j_reg = _ring_regressor(mesh, [f"joint:{i}" for i in range(24)], V)
    j_extra = _ring_regressor(mesh, EXTRA_TAGS, V)
    j_h36m = _ring_regressor(mesh, H36M_TAGS, V)
    joints = j_reg @ v
    shapedirs = _shape_directions(v, radial, mesh.part_ranges, joints)
    vertex_ids = _vertex_ids(v, mesh.part_ranges, joints)
    return StandinBody(
        gender=gender,
        v_template=v,
        shapedirs=shapedirs,
        J_regressor=j_reg,
        J_regressor_extra=j_extra,
        J_regressor_h36m=j_h36m,
        weights=weights,
        faces=faces,
        vertex_ids=vertex_ids,
        part_ranges=dict(mesh.part_ranges),
    )


def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def standin_mean_params() -> dict[str, np.ndarray]:
    """Mean parameters for the stand-in: upright in the camera frame (180 degrees about x), arms lowered.

    Returns ``pose`` (144,) 6D, ``shape`` (10,), ``cam`` (3,), float32.
    """
    rot = np.tile(np.eye(3), (24, 1, 1))
    rot[0] = np.diag([1.0, -1.0, -1.0])
    rot[_LSHOULDER] = _rot_z(-0.55)
    rot[_RSHOULDER] = _rot_z(0.55)
    return {
        "pose": rot6d(rot).reshape(-1).astype(np.float32),
        "shape": np.zeros(NUM_BETAS, dtype=np.float32),
        "cam": np.array([0.9, 0.0, 0.0], dtype=np.float32),
    }


def write_standin_assets(out_dir: str | os.PathLike[str], *, seed: int = 0) -> dict[str, Path]:
    """Generate the stand-in body files into ``out_dir`` (each file written atomically).

    Returns a mapping ``{"neutral": Path, "male": Path, "female": Path, "J_regressor_extra": Path,
    "J_regressor_h36m": Path, "mean_params": Path, "body_json": Path}``.
    """
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    bodies = {g: build_standin_body(g, seed=seed) for g in GENDERS}
    for gender, body in bodies.items():
        path = out / MODEL_FILE_PATTERN.format(gender.upper())
        arrays = body.model_arrays()
        save_npz_atomic(path, arrays, compressed=True)
        written[gender] = path
    neutral = bodies["neutral"]
    for key, arr in (("J_regressor_extra", neutral.J_regressor_extra), ("J_regressor_h36m", neutral.J_regressor_h36m)):
        path = out / f"{key}.npy"
        write_atomic(path, lambda fh, a=arr: np.save(fh, a.astype(np.float32)))
        written[key] = path
    mean = standin_mean_params()
    path = out / "smpl_mean_params.npz"
    save_npz_atomic(path, mean)
    written["mean_params"] = path
    info = {
        "name": "standin",
        "licence": LICENCE_NOTE,
        "description": "Open stand-in body in SMPL's file format (capsule parts around SMPL's 24 joints).",
        "version": STANDIN_VERSION,
        "seed": seed,
        "num_vertices": neutral.num_vertices,
        "num_faces": int(neutral.faces.shape[0]),
        "num_betas": NUM_BETAS,
        "vertex_ids": neutral.vertex_ids,
        "heights_m": {g: round(float(np.ptp(b.v_template[:, 1])), 4) for g, b in bodies.items()},
        "files": {g: MODEL_FILE_PATTERN.format(g.upper()) for g in GENDERS},
    }
    path = out / "body.json"
    text = json.dumps(info, indent=2).encode()
    write_atomic(path, lambda fh: fh.write(text))
    written["body_json"] = path
    logger.info("wrote the stand-in body (%d vertices) to %s", neutral.num_vertices, out)
    return written


__all__ = [
    "GENDERS",
    "LICENCE_NOTE",
    "MODEL_FILE_PATTERN",
    "StandinBody",
    "build_standin_body",
    "standin_mean_params",
    "write_standin_assets",
]
