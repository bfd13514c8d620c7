"""Numbers reported in the Meta-HMR paper (NeurIPS 2024), for side-by-side comparison in eval reports.

Values are millimetres as printed in the paper. ``keypoints`` names the 2D joints used by the test-time
optimisation: "openpose" (the paper's dagger), "rsn" (RSN detections), "gt" (the paper's star, ground-truth
2D joints) or "none" (regression without optimisation). The paper reports no MPI-INF-3DHP numbers, and no
numbers for the Figure 3 step curves (they are plots only).

Sources:
- Table 1: comparison with the state of the art (3DPW MPJPE/PA-MPJPE/PVE, Human3.6M MPJPE/PA-MPJPE).
- Table 2: regression model (HMR/CLIFF) x source of the 2D joints (OpenPose / GT).
- Table 9: CLIFF Res-50 with and without the pseudo-SMPL terms (3DPW).
The released checkpoints (README names) correspond to the rows as listed in ``RELEASED_CHECKPOINTS``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class PaperResult:
    """One row of a paper table for one dataset."""

    method: str
    backbone: str
    dataset: str  # "3dpw" | "h36m"
    keypoints: str  # "openpose" | "rsn" | "gt" | "none"
    values: dict[str, float] = field(default_factory=dict)  # metric name ("mpjpe", "pa_mpjpe", "pve") -> mm
    source: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _values(names: tuple[str, ...], values: tuple) -> dict[str, float]:
    return {k: v for k, v in zip(names, values, strict=True) if v is not None}


def _row(method: str, backbone: str, kp: str, source: str, pw3d: tuple, h36m: tuple | None) -> list[PaperResult]:
    rows = [PaperResult(method, backbone, "3dpw", kp, _values(("mpjpe", "pa_mpjpe", "pve"), pw3d), source)]
    if h36m is not None:
        rows.append(PaperResult(method, backbone, "h36m", kp, _values(("mpjpe", "pa_mpjpe"), h36m), source))
    return rows


PAPER_RESULTS: tuple[PaperResult, ...] = tuple(
    # Meta-HMR rows (Tables 1 and 2).
    _row("Meta-HMR (CLIFF)", "HR-W48", "openpose", "Table 1/2", (62.9, 39.7, 80.1), (43.9, 30.3))
    + _row("Meta-HMR (CLIFF)", "HR-W48", "rsn", "Table 1", (62.4, 39.5, 78.1), (42.0, 29.1))
    + _row("Meta-HMR (CLIFF)", "HR-W48", "gt", "Table 2", (57.8, 35.3, 74.4), (39.4, 27.5))
    + _row("Meta-HMR (HMR)", "Res-50", "openpose", "Table 2", (73.3, 44.3, 90.3), (55.8, 36.4))
    + _row("Meta-HMR (HMR)", "Res-50", "gt", "Table 2", (68.9, 39.6, 85.5), (53.7, 33.8))
    + _row("Meta-HMR (CLIFF)", "Res-50", "openpose", "Table 9", (66.0, 42.1, 83.6), None)
    # Baselines quoted in Table 1 (best numbers of their own papers).
    + _row("HMR", "Res-50", "none", "Table 1", (130.0, 81.3, None), (88.0, 56.8))
    + _row("CLIFF", "HR-W48", "none", "Table 1", (69.0, 43.0, 81.2), (47.1, 32.7))
    + _row("SPIN", "Res-50", "none", "Table 1", (96.9, 59.2, 116.4), (62.5, 41.1))
    + _row("EFT", "Res-50", "unspecified", "Table 1", (85.1, 52.2, 98.7), (63.2, 43.8))
    + _row("ReFit", "HR-W48", "none", "Table 1", (65.8, 41.0, None), (48.4, 32.2))
    + _row("PLIKS", "HR-W48", "none", "Table 1", (66.9, 42.8, 82.6), (49.3, 34.7))
    + _row("NIKI", "HR-W48", "none", "Table 1", (71.3, 40.6, 86.6), None)
    + _row("ProPose", "HR-W48", "none", "Table 1", (68.3, 40.6, 79.4), (45.7, 29.1))
)

RELEASED_CHECKPOINTS: dict[str, dict[str, str]] = {
    # Meta-HMR README checkpoints: (dataset they were evaluated on, paper row).
    "cliff_hrnet_3dpw.pt": {"dataset": "3dpw", "method": "Meta-HMR (CLIFF)", "backbone": "HR-W48", "kind": "metahmr"},
    "cliff_hrnet_h36m.pt": {"dataset": "h36m", "method": "Meta-HMR (CLIFF)", "backbone": "HR-W48", "kind": "metahmr"},
    "hmr_resnet_3dpw.pt": {"dataset": "3dpw", "method": "Meta-HMR (HMR)", "backbone": "Res-50", "kind": "metahmr"},
    "hmr_resnet_h36m.pt": {"dataset": "h36m", "method": "Meta-HMR (HMR)", "backbone": "Res-50", "kind": "metahmr"},
    # Official CLIFF HR-W48 checkpoint: the CLIFF row of Table 1 (plain regression).
    "hr48-PA43.0_MJE69.0_MVE81.2_3dpw.pt": {"dataset": "3dpw", "method": "CLIFF", "backbone": "HR-W48",
                                            "kind": "regression"},
}
"""Released checkpoint file names mapped to the paper rows they produced."""

TTO_METHODS = ("metahmr", "reference")
RELEASED_EVAL_NOTE = (
    "produced by the released evaluation, i.e. the `reference` schedule with one shared weight copy per batch "
    "of 20 (`--tto reference --steps 14`, the default batch of 20); `metahmr` (per person) and other settings "
    "are not expected "
    "to reproduce them exactly"
)


def paper_rows(dataset: str | None = None) -> list[PaperResult]:
    """All stored rows, optionally only those of one dataset ('3dpw' or 'h36m')."""
    return [r for r in PAPER_RESULTS if dataset is None or r.dataset == dataset]


def match_paper_result(dataset_family: str | None, checkpoint: str | Path | None, method: str,
                       keypoints: str) -> PaperResult | None:
    """The paper row that an evaluation of ``checkpoint`` on ``dataset_family`` with ``method`` reproduces.

    Only released (checkpoint, dataset) pairs match, recognised by the checkpoint's file name:
    - a Meta-HMR checkpoint with method "metahmr" or "reference" and keypoints "openpose" or "gt"
      (the released numbers were produced by the "reference" schedule, per batch of 20);
    - the official CLIFF HR-W48 checkpoint with method "none" (any keypoints: no optimisation).
    Returns None otherwise.
    """
    if dataset_family is None or checkpoint is None:
        return None
    info = RELEASED_CHECKPOINTS.get(Path(str(checkpoint)).name)
    if info is None or info["dataset"] != dataset_family:
        return None
    if info["kind"] == "metahmr":
        if method not in TTO_METHODS or keypoints not in ("openpose", "gt"):
            return None
        want_kp = keypoints
    else:
        if method != "none":
            return None
        want_kp = "none"
    for row in PAPER_RESULTS:
        if (row.method == info["method"] and row.backbone == info["backbone"] and row.dataset == dataset_family
                and row.keypoints == want_kp):
            return row
    return None
