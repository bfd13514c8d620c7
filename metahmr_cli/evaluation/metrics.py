"""Per-sample 3D accuracy metrics: MPJPE, PA-MPJPE, PVE and per-joint errors.

Pure functions. Each accepts torch tensors or numpy arrays and returns the same kind (a numpy input gives
a numpy output, a tensor input a tensor on the same device). Values are in the input unit (metres for all
datasets used here) unless ``mm=True``, which multiplies by 1000 as the released evaluation reports them.
Nothing is averaged over samples: every function returns one value per sample (or per sample and joint),
so callers can cache, aggregate and break down results as they like.

The computations are done in float64: Procrustes alignment in float32 loses about 1e-3 mm, which is below
anything reported but makes cached and fresh numbers differ in the last digits.
"""

from __future__ import annotations

from typing import Literal, TypeVar

import numpy as np
import torch
from torch import Tensor

from metahmr_cli.geometry.procrustes import similarity_align

ArrayT = TypeVar("ArrayT", Tensor, np.ndarray)

PVEAlignment = Literal["none", "pelvis"]
"""How the two meshes are placed before the per-vertex distance is taken.

- ``"none"``: both meshes in SMPL model coordinates without translation, as the released Meta-HMR
  evaluation computes PVE (the numbers in the paper's tables);
- ``"pelvis"``: each mesh is translated so that its pelvis (the J_regressor_h36m joint 0) is at the
  origin, as many other papers do.
"""
PVE_ALIGNMENTS: tuple[str, ...] = ("none", "pelvis")
MM_PER_M: float = 1000.0


def _as_tensor(x: Tensor | np.ndarray, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.asarray(x, dtype=np.float64))
    if isinstance(x, Tensor):
        return x.detach().to(torch.float64)
    raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _check_points(pred: Tensor, gt: Tensor, what: str) -> None:
    if pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(f"{what}: predicted points must have shape (B, N, 3), got {tuple(pred.shape)}")
    if pred.shape != gt.shape:
        raise ValueError(
            f"{what}: predicted and ground-truth points differ in shape: {tuple(pred.shape)} vs {tuple(gt.shape)}"
        )


def _like(value: Tensor, ref: Tensor | np.ndarray, mm: bool) -> Tensor | np.ndarray:
    if mm:
        value = value * MM_PER_M
    if isinstance(ref, np.ndarray):
        return value.cpu().numpy()
    return value


def _distances(pred: Tensor | np.ndarray, gt: Tensor | np.ndarray, what: str, *, align: bool = False) -> Tensor:
    """(B, J) float64 joint distances, after per-sample Procrustes alignment of ``pred`` when ``align``."""
    p, g = _as_tensor(pred, "pred"), _as_tensor(gt, "gt")
    _check_points(p, g, what)
    if align:
        p = similarity_align(p, g)
    return torch.linalg.norm(p - g, dim=-1)


def joint_errors(pred: ArrayT, gt: ArrayT, *, mm: bool = False) -> ArrayT:
    """Euclidean distance of every joint.

    Args:
        pred: predicted joints (B, J, 3), already root-centred as the protocol requires.
        gt: ground-truth joints (B, J, 3), same frame.
        mm: multiply by 1000 (metres to millimetres).
    Returns:
        (B, J) distances.
    """
    return _like(_distances(pred, gt, "joint_errors"), pred, mm)  # type: ignore[return-value]


def mpjpe(pred: ArrayT, gt: ArrayT, *, mm: bool = False) -> ArrayT:
    """Mean per-joint position error of each sample.

    Args:
        pred: (B, J, 3) predicted joints (pelvis-centred by the protocol).
        gt: (B, J, 3) ground-truth joints.
        mm: report millimetres.
    Returns:
        (B,) mean over joints of ||pred - gt||_2.
    """
    return _like(_distances(pred, gt, "mpjpe").mean(dim=-1), pred, mm)  # type: ignore[return-value]


def procrustes_aligned(pred: ArrayT, gt: ArrayT) -> ArrayT:
    """The prediction after the per-sample similarity transform (rotation, scale, translation) that best
    maps it onto the ground truth (reference notes §3.2).

    Args:
        pred: (B, J, 3). gt: (B, J, 3).
    Returns:
        (B, J, 3) aligned prediction, float64.
    """
    p, g = _as_tensor(pred, "pred"), _as_tensor(gt, "gt")
    _check_points(p, g, "procrustes_aligned")
    return _like(similarity_align(p, g), pred, False)  # type: ignore[return-value]


def pa_joint_errors(pred: ArrayT, gt: ArrayT, *, mm: bool = False) -> ArrayT:
    """Per-joint distance after per-sample Procrustes (similarity) alignment.

    Args:
        pred: (B, J, 3). gt: (B, J, 3). mm: report millimetres.
    Returns:
        (B, J) distances.
    """
    return _like(_distances(pred, gt, "pa_joint_errors", align=True), pred, mm)  # type: ignore[return-value]


def pa_mpjpe(pred: ArrayT, gt: ArrayT, *, mm: bool = False) -> ArrayT:
    """Procrustes-aligned MPJPE of each sample: mean joint distance after the similarity transform that
    best maps the prediction onto the ground truth (computed per sample on the evaluated joints).

    Args:
        pred: (B, J, 3). gt: (B, J, 3). mm: report millimetres.
    Returns:
        (B,).
    """
    dist = _distances(pred, gt, "pa_mpjpe", align=True)
    return _like(dist.mean(dim=-1), pred, mm)  # type: ignore[return-value]


def pve(
    pred_vertices: ArrayT,
    gt_vertices: ArrayT,
    *,
    alignment: PVEAlignment = "none",
    pred_pelvis: ArrayT | None = None,
    gt_pelvis: ArrayT | None = None,
    mm: bool = False,
) -> ArrayT:
    """Per-vertex error of each sample: mean over vertices of ||V_pred - V_gt||_2.

    Args:
        pred_vertices: (B, V, 3) predicted mesh (SMPL model frame, no translation).
        gt_vertices: (B, V, 3) ground-truth mesh, same frame.
        alignment: ``"none"`` (released Meta-HMR) or ``"pelvis"`` (subtract each mesh's pelvis first).
        pred_pelvis: (B, 3) pelvis of the prediction; required for ``"pelvis"``.
        gt_pelvis: (B, 3) pelvis of the ground truth; required for ``"pelvis"``.
        mm: report millimetres.
    Returns:
        (B,).
    """
    p, g = _as_tensor(pred_vertices, "pred_vertices"), _as_tensor(gt_vertices, "gt_vertices")
    _check_points(p, g, "pve")
    if alignment == "pelvis":
        if pred_pelvis is None or gt_pelvis is None:
            raise ValueError("pve(alignment='pelvis') needs pred_pelvis and gt_pelvis, each of shape (B, 3)")
        pp, gp = _as_tensor(pred_pelvis, "pred_pelvis"), _as_tensor(gt_pelvis, "gt_pelvis")
        if pp.shape != (p.shape[0], 3) or gp.shape != (p.shape[0], 3):
            raise ValueError(
                f"pve: pelvis positions must have shape (B, 3) = ({p.shape[0]}, 3), "
                f"got {tuple(pp.shape)} and {tuple(gp.shape)}"
            )
        p = p - pp[:, None, :]
        g = g - gp[:, None, :]
    elif alignment != "none":
        raise ValueError(f"pve: unknown alignment {alignment!r}; choose one of {PVE_ALIGNMENTS}")
    return _like(torch.linalg.norm(p - g, dim=-1).mean(dim=-1), pred_vertices, mm)  # type: ignore[return-value]


def summarize(values: np.ndarray) -> dict[str, float]:
    """Mean, median, standard deviation and count of the finite entries of a per-sample array (N,).

    NaN marks samples a metric does not apply to (e.g. PVE where the ground truth has no mesh).
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return {"mean": float("nan"), "median": float("nan"), "std": float("nan"), "count": 0}
    return {
        "mean": float(finite.mean()),
        "median": float(np.median(finite)),
        "std": float(finite.std()),
        "count": int(finite.size),
    }


def paired_difference(a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """Mean of the per-sample differences a − b with its two-sided t confidence interval.

    The two methods were run on the same samples, so the interval is the one of the paired differences
    (mean ± t_{n−1} · sd / √n, sd with n − 1 degrees of freedom), much narrower than comparing two means when
    the samples' difficulty dominates the spread. Samples where either value is not finite are left out.

    Args:
        a, b: (N,) per-sample values of the two methods, in the same sample order.
        confidence: coverage of the interval (0 < c < 1).
    Returns:
        {"mean", "lo", "hi", "count"}: the mean difference, the interval bounds (NaN below two samples).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"paired_difference needs two arrays of one length, got {x.shape} and {y.shape}")
    d = (x - y)[np.isfinite(x) & np.isfinite(y)]
    n = int(d.size)
    if n == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "count": 0}
    mean = float(d.mean())
    if n < 2:
        return {"mean": mean, "lo": float("nan"), "hi": float("nan"), "count": n}
    from scipy.stats import t

    half = float(t.ppf(0.5 + confidence / 2.0, n - 1)) * float(d.std(ddof=1)) / np.sqrt(n)
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "count": n}


def accel_error(pred: np.ndarray, gt: np.ndarray, *, mm: bool = False) -> np.ndarray:
    """Acceleration error of a joint sequence (as in HMMR / VIBE): the mean over joints of
    ``|a_pred - a_gt|`` with ``a[t] = x[t-1] - 2 x[t] + x[t+1]`` (unit per frame squared).

    Args:
        pred, gt: (T, J, 3) joints of consecutive frames (T >= 3), usually root-relative.
    Returns:
        (T - 2,) one value per inner frame.
    """
    p = np.asarray(pred, np.float64)
    g = np.asarray(gt, np.float64)
    if p.shape != g.shape or p.ndim != 3 or p.shape[0] < 3:
        raise ValueError(f"accel_error needs two (T >= 3, J, 3) arrays of one shape, got {p.shape} and {g.shape}")
    ap = p[:-2] - 2 * p[1:-1] + p[2:]
    ag = g[:-2] - 2 * g[1:-1] + g[2:]
    err = np.linalg.norm(ap - ag, axis=-1).mean(axis=-1)
    return err * MM_PER_M if mm else err


def id_switches(assigned: list[dict[int, int]]) -> int:
    """Identity switches of a tracker (as in the CLEAR MOT metrics): ``assigned[t]`` maps each ground-truth person
    matched in frame t to the track id it was matched with; a switch is a ground-truth person matched to another
    track id than at its previous match."""
    last: dict[int, int] = {}
    switches = 0
    for frame in assigned:
        for person, track in frame.items():
            if person in last and last[person] != track:
                switches += 1
            last[person] = track
    return switches
