"""How ground truth and predictions become the joints and meshes that the metrics compare.

The released Meta-HMR evaluation (reference notes §3.2) is the default for every dataset:

- predicted joints: ``J_regressor_h36m`` applied to the predicted neutral-SMPL vertices (model frame, no
  translation); the pelvis is regressor joint 0, taken *before* the joint subset is selected; then the
  14 LSP joints (``H36M_TO_J14``) or, for MPI-INF-3DHP, 17 joints (``H36M_TO_J17``) minus that pelvis;
- 3DPW ground truth: the GT pose/betas are posed with the *male* and the *female* body; the released rule
  (``gender = 0 if str(g) == 'm' else 1``, female mesh where ``gender == 1``) uses the male mesh for ``'m'``
  and for a file without a gender key, and the female mesh for ``'f'`` and any other value; the GT joints
  then go through the same regressor / pelvis / subset pipeline. The dataset only codes the npz value
  (:func:`metahmr_cli.data.datasets.gender_codes`); :func:`gt_body_codes` is the one place that applies the
  released or the optional neutral rule;
- Human3.6M ground truth: the same mesh path on the mosh SMPL parameters of the npz (``gt_source="mesh"``);
  the SPIN protocol on the GT 3D joints ``S[:, J24_TO_J14]`` is available as ``gt_source="S"``;
- MPI-INF-3DHP ground truth: ``S[:, J24_TO_J17]`` (17 joints; no mesh, so no PVE);
- PVE: mean vertex distance between the predicted neutral mesh and the gendered GT mesh, both in model
  coordinates with no alignment (``pve_alignment="none"``); ``"pelvis"`` subtracts each mesh's pelvis.

Every reported number carries the name of the protocol it was computed with (``EvalProtocol.metric_name``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from metahmr_cli.body import joints as J
from metahmr_cli.data.datasets import GENDER_FEMALE, GENDER_MALE, GENDER_MISSING, GENDER_OTHER
from metahmr_cli.errors import ConfigError, DatasetError
from metahmr_cli.evaluation import metrics as M
from metahmr_cli.geometry.rotation import axis_angle_to_rotmat

GTSource = Literal["mesh", "S"]
JointSet = Literal["J14", "J17"]
GenderRule = Literal["released", "neutral"]
GENDER_RULES: tuple[str, ...] = ("released", "neutral")
BODY_MALE, BODY_FEMALE, BODY_NEUTRAL = 0, 1, 2
"""GT body of a sample, as :func:`gt_body_codes` returns it (neutral only under the "neutral" rule)."""

DATASET_ALIASES: dict[str, str] = {
    "3dpw": "3dpw",
    "pw3d": "3dpw",
    "3dpw-test": "3dpw",
    "h36m": "h36m",
    "h36m-p1": "h36m",
    "h36m-p2": "h36m",
    "human36m": "h36m",
    "mpi-inf-3dhp": "mpi-inf-3dhp",
    "mpi_inf_3dhp": "mpi-inf-3dhp",
    "mpii3d": "mpi-inf-3dhp",
    "3dhp": "mpi-inf-3dhp",
}
"""Names (and spellings seen in the released code) mapped to the protocol family they are evaluated with."""

METRICS: tuple[str, ...] = ("mpjpe", "pa_mpjpe", "pve")
METRIC_LABELS: dict[str, str] = {"mpjpe": "MPJPE", "pa_mpjpe": "PA-MPJPE", "pve": "PVE"}


def protocol_family(dataset: str) -> str | None:
    """The canonical dataset family ('3dpw', 'h36m', 'mpi-inf-3dhp') of a dataset name or file name, or None.

    File names are matched on their stem: ``3dpw_test_w2d_smpl3d_gender_openpose.npz`` -> '3dpw',
    ``h36m_mosh_val_p2_fixname_openpose.npz`` -> 'h36m', ``mpi_inf_3dhp_valid_openpose.npz`` -> 'mpi-inf-3dhp'.
    """
    key = dataset.strip().lower()
    if key in DATASET_ALIASES:
        return DATASET_ALIASES[key]
    stem = key.replace("\\", "/").rsplit("/", 1)[-1]
    for prefix, family in (("3dpw", "3dpw"), ("pw3d", "3dpw"), ("h36m", "h36m"), ("mpi_inf_3dhp", "mpi-inf-3dhp"),
                           ("mpi-inf-3dhp", "mpi-inf-3dhp")):
        if stem.startswith(prefix):
            return family
    return None


@dataclass(frozen=True)
class EvalProtocol:
    """One evaluation protocol: where the GT joints come from, which joints are compared, how PVE aligns.

    Attributes:
        dataset: the dataset name as given (canonical name or file stem).
        gt_source: ``"mesh"`` = J_regressor_h36m on the GT SMPL mesh (gendered bodies);
            ``"S"`` = the GT 3D joints ``S`` of the npz (SPIN protocol; MPI-INF-3DHP always).
        joint_set: ``"J14"`` (LSP 14 joints) or ``"J17"`` (MPI-INF-3DHP).
        pve_alignment: ``"none"`` (released) or ``"pelvis"``.
        released: True when this is exactly the released Meta-HMR protocol for the dataset.
        gender_rule: ``"released"`` ('m' -> male, any other value -> female, no gender key -> male) or
            ``"neutral"`` ('m' -> male, 'f' -> female, anything else or no key -> the neutral body; for data
            whose GT was made with the neutral body, such as ``metahmr data synth``).
    """

    dataset: str
    gt_source: GTSource
    joint_set: JointSet
    pve_alignment: M.PVEAlignment
    released: bool
    gender_rule: GenderRule = "released"

    @property
    def num_joints(self) -> int:
        return 14 if self.joint_set == "J14" else 17

    @property
    def name(self) -> str:
        """Short identifier, e.g. ``mesh-J14/pve-noalign`` (``+released`` suffix when it matches the code)."""
        pve = "pve-noalign" if self.pve_alignment == "none" else "pve-pelvis"
        gt = "gtmesh" if self.gt_source == "mesh" else "gtS"
        if self.gt_source == "mesh" and self.gender_rule != "released":
            gt += f"({self.gender_rule})"
        return f"{gt}-{self.joint_set}/{pve}" + ("+released" if self.released else "")

    def metric_name(self, metric: str) -> str:
        """The protocol a reported metric was computed with, in words (stored beside every number)."""
        rule = "" if self.gender_rule == "released" else f" ({self.gender_rule} gender rule)"
        gt = (
            f"GT joints from J_regressor_h36m on the gendered GT SMPL mesh{rule}"
            if self.gt_source == "mesh"
            else f"GT joints S[:, J24_TO_{self.joint_set}]"
        )
        pred = f"pred J_regressor_h36m on neutral mesh, {self.joint_set}, pelvis (regressor joint 0) subtracted"
        if metric == "mpjpe":
            return f"MPJPE {self.joint_set}; {pred}; {gt}"
        if metric == "pa_mpjpe":
            return f"PA-MPJPE {self.joint_set}; per-sample similarity Procrustes; {pred}; {gt}"
        if metric == "pve":
            align = "no alignment (model frame, no translation)" if self.pve_alignment == "none" else \
                "pelvis-aligned (regressor joint 0)"
            return f"PVE all vertices; {align}; pred neutral mesh vs gendered GT mesh{rule}"
        raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")

    @property
    def has_pve(self) -> bool:
        return self.gt_source == "mesh"

    def joint_names(self) -> list[str]:
        """Names of the evaluated joints in order (from the 24 GT-joint names)."""
        subset = J.J24_TO_J14 if self.joint_set == "J14" else J.J24_TO_J17
        gt_names = list(J.JOINT_NAMES[25:49])
        return [gt_names[i] for i in subset]


def make_protocol(
    dataset: str,
    *,
    h36m_gt: GTSource = "mesh",
    pve_alignment: M.PVEAlignment = "none",
    gt_source: GTSource | None = None,
    joint_set: JointSet | None = None,
    gender_rule: GenderRule = "released",
) -> EvalProtocol:
    """The protocol to evaluate ``dataset`` with.

    Args:
        dataset: '3dpw', 'h36m' (also 'h36m-p1'/'h36m-p2'), 'mpi-inf-3dhp', or a file name/path of another
            SPIN-format npz (then ``gt_source`` defaults to "mesh" and ``joint_set`` to "J14").
        h36m_gt: for Human3.6M, "mesh" (released Meta-HMR) or "S" (SPIN).
        pve_alignment: "none" (released) or "pelvis".
        gt_source, joint_set: explicit overrides (e.g. for a custom dataset without SMPL ground truth).
        gender_rule: "released" or "neutral" (see :class:`EvalProtocol`).
    """
    if gender_rule not in GENDER_RULES:
        raise ConfigError(f"gender_rule={gender_rule!r} is not valid; choose one of {GENDER_RULES}")
    if pve_alignment not in M.PVE_ALIGNMENTS:
        raise ConfigError(f"pve_alignment={pve_alignment!r} is not valid; choose one of {M.PVE_ALIGNMENTS}")
    if h36m_gt not in ("mesh", "S"):
        raise ConfigError(f"h36m_gt={h36m_gt!r} is not valid; choose 'mesh' (released Meta-HMR) or 'S' (SPIN)")
    family = protocol_family(dataset)
    if family == "3dpw":
        src, js, released = "mesh", "J14", True
    elif family == "h36m":
        src, js, released = h36m_gt, "J14", h36m_gt == "mesh"
    elif family == "mpi-inf-3dhp":
        src, js, released = "S", "J17", True
    else:
        src, js, released = "mesh", "J14", False
    if gt_source is not None:
        if gt_source not in ("mesh", "S"):
            raise ConfigError(f"gt_source={gt_source!r} is not valid; choose 'mesh' or 'S'")
        released = released and gt_source == src
        src = gt_source
    if joint_set is not None:
        if joint_set not in ("J14", "J17"):
            raise ConfigError(f"joint_set={joint_set!r} is not valid; choose 'J14' or 'J17'")
        released = released and joint_set == js
        js = joint_set
    released = released and pve_alignment == "none" and (gender_rule == "released" or src == "S")
    return EvalProtocol(dataset=dataset, gt_source=src, joint_set=js, pve_alignment=pve_alignment,
                        released=released, gender_rule=gender_rule)


# ----------------------------------------------------------------------------------------------------------
# gender rule


def gt_body_codes(gender: Tensor | np.ndarray, rule: GenderRule = "released") -> Tensor:
    """The GT body of each sample from the dataset's gender codes: the one place a gender rule is applied.

    ``rule="released"`` (released Meta-HMR: ``gender = 0 if str(g) == 'm' else 1``, then the female mesh where
    ``gender == 1`` and the male mesh elsewhere): male for ``'m'`` and for a file without a gender key,
    female for ``'f'`` and for any other value. ``rule="neutral"``: male for ``'m'``, female for ``'f'``,
    neutral for any other value (e.g. ``'n'``) and for a file without the key.

    Args:
        gender: (B,) codes of :func:`metahmr_cli.data.datasets.gender_codes` (GENDER_MALE 0, GENDER_FEMALE 1,
            GENDER_OTHER 2, GENDER_MISSING -1), e.g. the ``gender`` item of an HMRDataset.
        rule: "released" or "neutral".
    Returns:
        (B,) int64: BODY_MALE (0), BODY_FEMALE (1) or BODY_NEUTRAL (2).
    """
    if rule not in GENDER_RULES:
        raise ConfigError(f"gender_rule={rule!r} is not valid; choose one of {GENDER_RULES}")
    g = torch.as_tensor(np.asarray(gender) if isinstance(gender, np.ndarray) else gender).reshape(-1).long()
    known = (g == GENDER_MALE) | (g == GENDER_FEMALE) | (g == GENDER_OTHER) | (g == GENDER_MISSING)
    if not bool(known.all()):
        bad = sorted(set(g[~known].tolist()))
        raise DatasetError(f"unknown gender codes {bad[:5]}; expected the codes of data.datasets.gender_codes "
                           f"({GENDER_MALE}, {GENDER_FEMALE}, {GENDER_OTHER}, {GENDER_MISSING})")
    other = BODY_FEMALE if rule == "released" else BODY_NEUTRAL
    missing = BODY_MALE if rule == "released" else BODY_NEUTRAL
    out = torch.full_like(g, BODY_MALE)
    out = torch.where(g == GENDER_FEMALE, torch.full_like(g, BODY_FEMALE), out)
    out = torch.where(g == GENDER_OTHER, torch.full_like(g, other), out)
    return torch.where(g == GENDER_MISSING, torch.full_like(g, missing), out)


# ----------------------------------------------------------------------------------------------------------
# joints


def _subset(joint_set: JointSet) -> list[int]:
    return list(J.H36M_TO_J14 if joint_set == "J14" else J.H36M_TO_J17)


def mesh_eval_joints(vertices: Tensor, body: object, joint_set: JointSet) -> tuple[Tensor, Tensor]:
    """Evaluation joints of meshes: J_regressor_h36m, pelvis = joint 0 (before selection), subset, centred.

    Args:
        vertices: (B, V, 3) meshes in model coordinates.
        body: a BodyModel with ``regress_h36m`` ((B, V, 3) -> (B, 17, 3)).
        joint_set: "J14" or "J17".
    Returns:
        joints (B, 14|17, 3) pelvis-centred, pelvis (B, 3).
    """
    h36m = body.regress_h36m(vertices)  # type: ignore[attr-defined]
    pelvis = h36m[:, 0, :]
    joints = h36m[:, _subset(joint_set), :] - pelvis[:, None, :]
    return joints, pelvis


def s_eval_joints(S: Tensor, joint_set: JointSet) -> Tensor:
    """GT joints from the npz ``S`` (B, 24, 3|4) in GT-24 order, as released: ``S[:, J24_TO_J1x, :3]``,
    not re-centred (the SPIN-format files store root-relative joints). Returns (B, 14|17, 3)."""
    if S.ndim != 3 or S.shape[1] != 24 or S.shape[2] not in (3, 4):
        raise DatasetError(f"GT 3D joints 'S' must have shape (N, 24, 4); got {tuple(S.shape)}")
    subset = list(J.J24_TO_J14 if joint_set == "J14" else J.J24_TO_J17)
    return S[:, subset, :3]


@dataclass
class GroundTruth:
    """The ground truth of one batch, as read from a SPIN-format dataset.

    pose (B, 72) axis-angle or None; betas (B, 10) or None; gender (B,) dataset codes (the ``gender`` item,
    :func:`metahmr_cli.data.datasets.gender_codes`); S (B, 24, 4) or None; has_smpl (B,) ; has_pose_3d (B,).
    """

    gender: Tensor
    has_smpl: Tensor
    has_pose_3d: Tensor
    pose: Tensor | None = None
    betas: Tensor | None = None
    S: Tensor | None = None


@dataclass
class PreparedGT:
    """GT joints/mesh of a batch ready for comparison (computed once, reused after every TTO step).

    joints (B, J, 3); vertices (B, V, 3) or None; pelvis (B, 3) or None; joints_valid (B,) bool;
    mesh_valid (B,) bool.
    """

    joints: Tensor
    joints_valid: Tensor
    vertices: Tensor | None
    pelvis: Tensor | None
    mesh_valid: Tensor


@dataclass
class EvalBodies:
    """Bodies used by the evaluation: neutral for predictions, male/female for the GT mesh."""

    neutral: object
    male: object | None = None
    female: object | None = None


def gt_mesh(gt: GroundTruth, bodies: EvalBodies, gender_rule: GenderRule = "released") -> Tensor:
    """Gendered GT mesh (B, V, 3): each sample posed with the body :func:`gt_body_codes` picks for its gender
    code under ``gender_rule`` (released: female for 'f' and any other value, male for 'm' and no key)."""
    if gt.pose is None or gt.betas is None:
        raise DatasetError("the protocol needs the GT SMPL mesh but the dataset has no 'pose'/'shape' keys; "
                           "use gt_source='S' (GT 3D joints) for this dataset")
    if bodies.male is None or bodies.female is None:
        raise ConfigError("the GT mesh needs the male and female body models; load them into EvalBodies")
    B = gt.pose.shape[0]
    rotmat = axis_angle_to_rotmat(gt.pose.reshape(B, 24, 3))
    betas = gt.betas[:, :10]
    code = gt_body_codes(gt.gender, gender_rule).to(gt.pose.device)
    if code.shape[0] != B:
        raise DatasetError(f"{code.shape[0]} gender codes for a batch of {B}")
    female = code == BODY_FEMALE
    neutral = code == BODY_NEUTRAL
    male = code == BODY_MALE
    verts: Tensor | None = None
    # Only pose the bodies that occur in the batch: the same result with less work on single-gender data.
    for mask, model in ((male, bodies.male), (female, bodies.female), (neutral, bodies.neutral)):
        if not bool(mask.any()):
            continue
        v = model(rotmat, betas).vertices  # type: ignore[operator]
        verts = v if verts is None else torch.where(mask.view(-1, 1, 1), v, verts)
    assert verts is not None
    return verts


def prepare_ground_truth(gt: GroundTruth, protocol: EvalProtocol, bodies: EvalBodies) -> PreparedGT:
    """Compute the GT evaluation joints (and mesh when the protocol uses it) of one batch."""
    B = gt.has_smpl.shape[0]
    device = gt.has_smpl.device
    if protocol.gt_source == "mesh":
        if gt.pose is None or gt.betas is None:
            raise DatasetError(
                f"dataset {protocol.dataset!r} has no SMPL ground truth ('pose'/'shape'), which protocol "
                f"{protocol.name} needs; evaluate it with --gt-source S"
            )
        with torch.no_grad():
            verts = gt_mesh(gt, bodies, protocol.gender_rule)
            joints, pelvis = mesh_eval_joints(verts, bodies.neutral, protocol.joint_set)
        valid = gt.has_smpl.reshape(-1) > 0
        return PreparedGT(joints=joints, joints_valid=valid, vertices=verts, pelvis=pelvis, mesh_valid=valid)
    if gt.S is None:
        raise DatasetError(
            f"dataset {protocol.dataset!r} has no GT 3D joints ('S'), which protocol {protocol.name} needs; "
            "evaluate it with --gt-source mesh"
        )
    joints = s_eval_joints(gt.S, protocol.joint_set)
    valid = gt.has_pose_3d.reshape(-1) > 0
    return PreparedGT(joints=joints, joints_valid=valid, vertices=None, pelvis=None,
                      mesh_valid=torch.zeros(B, dtype=torch.bool, device=device))


def evaluate_vertices(pred_vertices: Tensor, prepared: PreparedGT, protocol: EvalProtocol,
                      body: object) -> dict[str, np.ndarray]:
    """Per-sample metrics (millimetres) of predicted meshes against prepared ground truth.

    Args:
        pred_vertices: (B, V, 3) predicted neutral meshes in model coordinates (no translation).
        prepared: from ``prepare_ground_truth``.
        protocol: the protocol.
        body: the neutral BodyModel (its J_regressor_h36m).
    Returns:
        {"mpjpe": (B,), "pa_mpjpe": (B,), "pve": (B,), "joint_err": (B, J), "pa_joint_err": (B, J)}
        numpy float64; NaN where the sample has no ground truth for the metric.
    """
    with torch.no_grad():
        pred_joints, pred_pelvis = mesh_eval_joints(pred_vertices, body, protocol.joint_set)
        gt_joints = prepared.joints.to(pred_joints.device)
        jerr = M.joint_errors(pred_joints, gt_joints, mm=True)
        pajerr = M.pa_joint_errors(pred_joints, gt_joints, mm=True)
        B = pred_vertices.shape[0]
        pve = torch.full((B,), float("nan"), dtype=torch.float64, device=pred_vertices.device)
        if protocol.has_pve and prepared.vertices is not None:
            pve = M.pve(pred_vertices, prepared.vertices.to(pred_vertices.device),
                        alignment=protocol.pve_alignment, pred_pelvis=pred_pelvis,
                        gt_pelvis=prepared.pelvis, mm=True)
    jv = prepared.joints_valid.cpu().numpy()
    mv = prepared.mesh_valid.cpu().numpy()
    jerr_np = jerr.cpu().numpy()
    pajerr_np = pajerr.cpu().numpy()
    jerr_np[~jv] = np.nan
    pajerr_np[~jv] = np.nan
    pve_np = pve.cpu().numpy()
    pve_np[~mv] = np.nan
    return {
        "mpjpe": jerr_np.mean(axis=1),
        "pa_mpjpe": pajerr_np.mean(axis=1),
        "pve": pve_np,
        "joint_err": jerr_np,
        "pa_joint_err": pajerr_np,
    }
