"""Checkpoint I/O: the released file forms of Meta-HMR, CLIFF and SPIN, our own checkpoints, and
backbone initialisations.

Internally a :class:`~metahmr_cli.models.regressor.Regressor` names its keys ``backbone.<...>`` plus head keys
(``fc1.weight`` ...) and ``init_*`` buffers at top level. The released files name the backbone keys
differently (flat for the ResNets, ``backbone.`` for the Meta-HMR pose-HRNet, ``encoder.`` for CLIFF-HR48
and the official CLIFF-Res50 file); :func:`export_state_dict` / :func:`import_state_dict` translate.

Every file is read with ``torch.load(..., weights_only=True)``: a checkpoint can never run code.
"""

from __future__ import annotations

import copy
import importlib
import logging
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..constants import IMG_H, IMG_W
from ..errors import AssetNotFoundError, CheckpointError, ConfigError
from ..files import file_sha256, save_torch_atomic
from ..inner_loop import InnerLoop
from .builders import LAYOUTS, build_regressor, layout_for
from .regressor import HEAD_DROPOUT, HEAD_MODULES, HEAD_WIDTH, NCAM, NPOSE, NSHAPE, Regressor

__all__ = [
    "CHECKPOINT_KINDS",
    "BackboneInitReport",
    "LoadedNetworks",
    "detect_network",
    "export_state_dict",
    "file_identifier",
    "import_state_dict",
    "load_backbone_init",
    "load_layout_state_dict",
    "load_networks",
    "load_torch_file",
    "network_spec",
    "recorded_body",
    "save_networks",
    "write_random_checkpoint",
]

logger = logging.getLogger(__name__)

INIT_KEYS: tuple[str, ...] = ("init_pose", "init_shape", "init_cam")
HEAD_KEYS: frozenset[str] = frozenset(f"{m}.{p}" for m in HEAD_MODULES for p in ("weight", "bias"))
_TOP_LEVEL_KEYS = HEAD_KEYS | frozenset(INIT_KEYS)
_BACKBONE_PREFIXES: tuple[str, ...] = ("backbone.", "encoder.")
_FEATURE_DIMS: dict[str, int] = {"resnet50": 2048, "hrnet_w48_cls": 2048, "hrnet_w48_pose": 720, "resnet_tiny": 64}
_HEAD_STATE = NPOSE + NSHAPE + NCAM

# kind -> (main layout, aux layout) of the Meta-HMR release files
_METAHMR_KINDS: dict[str, tuple[str, str]] = {
    "metahmr_cliff_hrnet": ("cliff_meta_hrnet", "cliff_aux_hrnet"),
    "metahmr_cliff_resnet": ("cliff_meta_resnet", "cliff_aux_resnet"),
    "metahmr_hmr_resnet": ("hmr_meta_resnet", "hmr_aux_resnet"),
}
CHECKPOINT_KINDS: tuple[str, ...] = (*_METAHMR_KINDS, "cliff_hr48", "cliff_res50", "spin_hmr")
"""File forms :func:`write_random_checkpoint` can write and :func:`load_networks` recognises."""

_EXPECTED_FORMS = (
    "a Meta-HMR checkpoint (dict with 'model' and 'model_aux'), an official CLIFF checkpoint "
    "(dict with 'model', keys possibly prefixed 'module.'), SPIN's hmr.pt (dict with 'model'), "
    "or a bare state dict of one network"
)

# numpy objects that may appear in older training checkpoints (e.g. a numpy dataset_perm). Allowing them
# keeps the loader weights-only: nested objects are still checked by the restricted unpickler.
_NUMPY_SAFE_GLOBALS: frozenset[str] = frozenset({
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.ndarray", "numpy.dtype",
})


# --------------------------------------------------------------------------------------------- file reading
def file_identifier(path: str | Path) -> str:
    """``<file name>@<first 12 hex digits of the file's sha256>``, e.g. ``cliff_hrnet_3dpw.pt@1a2b3c4d5e6f``."""
    path = Path(path)
    return f"{path.name}@{file_sha256(path)[:12]}"


def _resolve_global(name: str) -> Any:
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _numpy_globals_if_safe(path: Path) -> list[Any] | None:
    """The numpy globals a refused file needs, if they are all on the numpy allow-list (else None)."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # legacy (non-zip) format or unreadable: do not retry
        return None
    dtype_classes = _numpy_dtype_classes()
    allowed = _NUMPY_SAFE_GLOBALS | {f"numpy.dtypes.{n}" for n in dtype_classes}
    if not names or not all(n in allowed for n in names):
        return None
    try:
        found = [_resolve_global(n) for n in names]
    except (ImportError, AttributeError):
        return None
    # numpy dtypes are rebuilt through their DType classes, which the scan above does not list
    return found + list(dtype_classes.values())


def _numpy_dtype_classes() -> dict[str, type]:
    """The DType classes of ``numpy.dtypes`` by name (exact names only: the module also holds private helpers,
    e.g. one that rebinds its attributes, which a file must never be allowed to call)."""
    try:
        dtypes = importlib.import_module("numpy.dtypes")
    except ImportError:
        return {}
    out = {}
    for n in dir(dtypes):
        obj = getattr(dtypes, n)
        if not n.startswith("_") and n.endswith("DType") and isinstance(obj, type) and issubclass(obj, np.dtype):
            out[n] = obj
    return out


def load_torch_file(path: str | Path) -> Any:
    """Read a PyTorch file on the CPU with ``weights_only=True``.

    Raises:
        AssetNotFoundError: the file does not exist.
        CheckpointError: the file is not a PyTorch file, is truncated, or holds Python objects other than
            tensors and plain containers (refused, never executed).
    """
    path = Path(path)
    if not path.is_file():
        raise AssetNotFoundError(f"checkpoint file {path} does not exist; check the path, or download the "
                                 "weights with `metahmr weights` / set METAHMR_CHECKPOINT.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (damaged or not a torch file): "
                                  f"{_first_line(exc)}") from None
        safe = _numpy_globals_if_safe(path)
        if safe is not None:
            try:
                with torch.serialization.safe_globals(safe):
                    return torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc2:
                raise CheckpointError(f"{path} could not be read: {_first_line(exc2)}") from None
        raise CheckpointError(
            f"refused to load {path}: it contains Python objects other than tensors and plain containers "
            f"({_first_line(exc)}). Loading it could execute code, so metahmr only reads weights-only files; "
            "re-save the state dicts alone (torch.save({'model': model.state_dict()}, ...)) from a trusted copy."
        ) from None
    except Exception as exc:  # truncated zip, random bytes, EOF ...
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (truncated, damaged or not a torch "
                              f"file): {type(exc).__name__}: {_first_line(exc)}. Download it again.") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# --------------------------------------------------------------------------------------------- key mapping
def _strip_prefix(sd: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Remove ``prefix`` from the keys that carry it (others unchanged)."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in sd.items()}


def _layout_key(internal: str, prefix: str) -> str:
    return prefix + internal[len("backbone."):] if internal.startswith("backbone.") else internal


def export_state_dict(model: Regressor, layout: str) -> dict[str, Tensor]:
    """Our internal state dict in the key layout of a released network.

    Args:
        model: a Regressor whose architecture and backbone match ``layout``.
        layout: one of the six layout names (``cliff_meta_hrnet`` ...).
    Returns:
        {released key: tensor} (detached; shares storage with the model).
    """
    spec = layout_for(layout)
    if model.arch != spec.arch or model.backbone_name != spec.backbone:
        raise CheckpointError(f"cannot export a {model.arch}/{model.backbone_name} network as layout "
                              f"'{layout}' ({spec.description}).")
    return {_layout_key(k, spec.backbone_prefix): v for k, v in model.state_dict().items()}


def import_state_dict(state_dict: Mapping[str, Tensor], layout: str | None = None, *,
                      prefix: str | None = None) -> dict[str, Tensor]:
    """Translate a released (or flat / prefixed) state dict to our internal key names.

    Head keys and ``init_*`` stay at top level; the backbone keys lose ``prefix`` (default: the layout's
    prefix; "" = flat) and gain ``backbone.``. Keys with another prefix are kept unchanged (they will show up
    as unexpected when loading).
    """
    if prefix is None:
        prefix = "" if layout is None else layout_for(layout).backbone_prefix
    out: dict[str, Tensor] = {}
    for k, v in state_dict.items():
        if k in _TOP_LEVEL_KEYS:
            out[k] = v
        elif prefix == "" or k.startswith(prefix):
            out["backbone." + k[len(prefix):]] = v
        else:
            out[k] = v
    return out


def _fmt_keys(keys: list[str], limit: int = 10) -> str:
    shown = ", ".join(keys[:limit])
    more = f", ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return f"{shown}{more}"


@dataclass
class _KeyDiff:
    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]


def _diff(expected: Mapping[str, Tensor], given: Mapping[str, Any], prefix: str) -> _KeyDiff:
    missing = [_layout_key(k, prefix) for k in expected if k not in given]
    unexpected = [_layout_key(k, prefix) for k in given if k not in expected]
    mismatched = []
    for k, v in given.items():
        if k in expected:
            shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            if shape != tuple(expected[k].shape):
                mismatched.append(f"{_layout_key(k, prefix)}: file {shape} vs network {tuple(expected[k].shape)}")
    return _KeyDiff(missing, unexpected, mismatched)


def _diff_message(diff: _KeyDiff, source: str, what: str) -> str:
    parts = [f"{source} does not match the expected layout: {what}."]
    if diff.missing:
        parts.append(f"missing keys ({len(diff.missing)}): {_fmt_keys(diff.missing)}.")
    if diff.unexpected:
        parts.append(f"unexpected keys ({len(diff.unexpected)}): {_fmt_keys(diff.unexpected)}.")
    if diff.mismatched:
        parts.append(f"shape mismatches ({len(diff.mismatched)}): {_fmt_keys(diff.mismatched)}.")
    parts.append("Check that the file is one of " + _EXPECTED_FORMS + ", for the network you selected.")
    return " ".join(parts)


def load_layout_state_dict(model: Regressor, state_dict: Mapping[str, Tensor], layout: str | None = None, *,
                           prefix: str | None = None, strict: bool = True,
                           allow_missing: tuple[str, ...] = (), source: str = "state dict",
                           assign: bool = False) -> list[str]:
    """Load a released-layout state dict into ``model`` after checking every key and shape.

    Args:
        model: the target network.
        state_dict: keys in the file's naming.
        layout: the layout name (gives the backbone prefix and the message); None with ``prefix``.
        prefix: backbone prefix used in the file (overrides the layout's).
        strict: raise on missing or unexpected keys (shape mismatches always raise).
        allow_missing: internal keys that may be absent even when strict (e.g. the init_* buffers).
        source: how to name the input in messages (file name and entry).
        assign: adopt the given tensors instead of copying into the model's (needed for a model built on
            the meta device; requires every key to be present).
    Returns:
        human-readable notes on what was tolerated (non-strict loads), empty when everything matched.
    Raises:
        CheckpointError: listing missing / unexpected / shape-mismatched keys (first 10 of each, with counts)
            and the layout that was expected.
    """
    if prefix is None:
        prefix = "" if layout is None else layout_for(layout).backbone_prefix
    internal = import_state_dict(state_dict, prefix=prefix)
    expected = model.state_dict()
    diff = _diff(expected, internal, prefix)
    diff.missing = [k for k in diff.missing if k not in allow_missing]
    what = (f"'{layout}' ({LAYOUTS[layout].description})" if layout in LAYOUTS
            else f"{model.arch}/{model.backbone_name} with backbone keys under '{prefix or '(flat)'}'")
    if diff.mismatched or (strict and (diff.missing or diff.unexpected)):
        raise CheckpointError(_diff_message(diff, source, what))
    notes = []
    if diff.missing:
        notes.append(f"{source}: {len(diff.missing)} keys missing, left at their initial values: "
                     f"{_fmt_keys(diff.missing)}")
    if diff.unexpected:
        notes.append(f"{source}: {len(diff.unexpected)} unexpected keys ignored: {_fmt_keys(diff.unexpected)}")
    usable = {k: v for k, v in internal.items() if k in expected}
    model.load_state_dict(usable, strict=False, assign=assign)
    for note in notes:
        logger.warning(note)
    return notes


# --------------------------------------------------------------------------------------------- detection
@dataclass(frozen=True)
class NetworkPlan:
    """What a state dict holds: enough to build the network and load it."""

    arch: str
    backbone: str
    n_iter: int
    layout: str | None  # one of LAYOUTS, or None for networks without a released layout
    prefix: str  # backbone prefix used in the file
    img_hw: tuple[int, int] = (IMG_H, IMG_W)
    hidden: int = HEAD_WIDTH
    dropout: float = HEAD_DROPOUT

    @property
    def layout_name(self) -> str:
        return self.layout if self.layout is not None else f"custom:{self.arch}/{self.backbone}"


def _strip_module(sd: Mapping[str, Any]) -> dict[str, Any]:
    return _strip_prefix(sd, "module.") if any(k.startswith("module.") for k in sd) else dict(sd)


def _backbone_prefix(keys: Iterable[str]) -> str:
    """The first of ``backbone.`` / ``encoder.`` that some key starts with, else "" (flat keys)."""
    keys = list(keys)
    return next((p for p in _BACKBONE_PREFIXES if any(k.startswith(p) for k in keys)), "")


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def detect_network(state_dict: Mapping[str, Any], role: str = "single", source: str = "state dict") -> NetworkPlan:
    """Recognise architecture, backbone and layout of a state dict.

    A DataParallel ``module.`` prefix is ignored; the returned ``prefix`` is the backbone prefix after it.

    Args:
        role: "main" (Meta-HMR main net: the meta layouts, 10 iterations), "aux" or "single" (auxiliary /
            official CLIFF / SPIN: the aux layouts, 3 iterations).
    """
    state_dict = _strip_module(state_dict)
    keys = list(state_dict)
    prefix = _backbone_prefix(keys)

    def has(sub: str) -> bool:
        return any(k.startswith(prefix + sub) for k in keys)

    if has("embed.") and has("blocks."):
        return _keypoint_plan(state_dict, prefix, role, source)
    if has("incre_modules."):
        backbone = "hrnet_w48_cls"
    elif has("downsample_stage_1.") or has("stage4."):
        backbone = "hrnet_w48_pose"
    elif has("layer4.") and has("conv1."):
        backbone = "resnet50" if has("layer4.0.conv3.") else "resnet_tiny"
    else:
        raise CheckpointError(f"{source}: no known backbone found (expected ResNet keys conv1/layer1..layer4, "
                              f"or HRNet keys stage2..stage4, flat or under 'backbone.'/'encoder.'); first keys: "
                              f"{_fmt_keys(keys, 5)}. It should be {_EXPECTED_FORMS}.")
    fc1 = state_dict.get("fc1.weight")
    if not isinstance(fc1, Tensor) or fc1.ndim != 2:
        raise CheckpointError(f"{source}: the regressor head key 'fc1.weight' is missing; this is not a full "
                              f"HMR/CLIFF network (it should be {_EXPECTED_FORMS}).")
    extra = int(fc1.shape[1]) - _FEATURE_DIMS[backbone] - _HEAD_STATE
    if extra == 3:
        arch = "cliff"
    elif extra == 0:
        arch = "hmr"
    else:
        raise CheckpointError(f"{source}: fc1 takes {int(fc1.shape[1])} inputs, which fits neither a CLIFF "
                              f"({_FEATURE_DIMS[backbone] + _HEAD_STATE + 3}) nor an HMR "
                              f"({_FEATURE_DIMS[backbone] + _HEAD_STATE}) head on a {backbone} backbone.")
    layout: str | None = None
    if backbone == "resnet50":
        layout = f"{arch}_{'meta' if role == 'main' else 'aux'}_resnet"
    elif backbone == "hrnet_w48_pose" and arch == "cliff":
        layout = "cliff_meta_hrnet"
    elif backbone == "hrnet_w48_cls" and arch == "cliff":
        layout = "cliff_aux_hrnet"
    n_iter = LAYOUTS[layout].n_iter if layout is not None else (10 if role == "main" else 3)
    return NetworkPlan(arch, backbone, n_iter, layout, prefix)


def _keypoint_plan(state_dict: Mapping[str, Any], prefix: str, role: str, source: str) -> NetworkPlan:
    """The plan of a keypoint-encoder network (the open model) from its keys and shapes."""
    fc1 = state_dict.get("fc1.weight")
    embed = state_dict.get(prefix + "embed.weight")
    if not isinstance(fc1, Tensor) or not isinstance(embed, Tensor):
        raise CheckpointError(f"{source}: a keypoint network needs 'fc1.weight' and '{prefix}embed.weight'.")
    extra = int(fc1.shape[1]) - int(embed.shape[0]) - _HEAD_STATE
    if extra not in (0, 3):
        raise CheckpointError(f"{source}: fc1 takes {int(fc1.shape[1])} inputs, which fits no head on a "
                              f"{int(embed.shape[0])}-wide keypoint encoder.")
    widths = {384: "kpnet", 256: "kpnet_small"}
    width = int(embed.shape[0])
    if width not in widths:
        raise CheckpointError(f"{source}: keypoint encoder of width {width}; known widths: {sorted(widths)}.")
    # the embedding's input tells keypoints only (49 x 4 values) from keypoints + image evidence
    inputs = {4 * 49: "", 4 * 49 + 4 * 17 + 3: "_ev"}
    if int(embed.shape[1]) not in inputs:
        raise CheckpointError(f"{source}: keypoint encoder reading {int(embed.shape[1])} values; known inputs: "
                              f"{sorted(inputs)} (keypoints, keypoints + image evidence).")
    backbone = widths[width] + inputs[int(embed.shape[1])]
    return NetworkPlan("cliff" if extra == 3 else "hmr", backbone, 10 if role == "main" else 3, None, prefix,
                       hidden=int(fc1.shape[0]))


def network_spec(model: Regressor, layout: str | None = None) -> dict[str, Any]:
    """A small JSON-able description of a network, stored next to its weights in our checkpoints."""
    return {"arch": model.arch, "backbone": model.backbone_name, "n_iter": model.n_iter,
            "img_hw": list(model.img_hw), "layout": layout, "hidden": model.hidden, "dropout": model.dropout}


def _plan_from_spec(spec: Mapping[str, Any], state_dict: Mapping[str, Any], source: str) -> NetworkPlan:
    try:
        arch, backbone, n_iter = str(spec["arch"]), str(spec["backbone"]), int(spec["n_iter"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{source}: 'network_specs' entry is malformed: {spec!r}") from None
    img_hw = tuple(int(v) for v in spec.get("img_hw", (IMG_H, IMG_W)))
    layout = spec.get("layout")
    layout = layout if layout in LAYOUTS else None
    prefix = LAYOUTS[layout].backbone_prefix if layout is not None else _backbone_prefix(state_dict)
    try:
        hidden, dropout = int(spec.get("hidden", HEAD_WIDTH)), float(spec.get("dropout", HEAD_DROPOUT))
    except (TypeError, ValueError):
        raise CheckpointError(f"{source}: 'network_specs' entry is malformed: {spec!r}") from None
    return NetworkPlan(arch, backbone, n_iter, layout, prefix, img_hw, hidden, dropout)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- load_networks
@dataclass
class LoadedNetworks:
    """Networks read from one checkpoint file (eval mode, on the requested device/dtype).

    kind: "metahmr" (release or our training checkpoint), "cliff_res50", "cliff_hr48", "spin_hmr" or
    "state_dict" (a bare state dict of one network). For single-network files ``aux`` is a separate copy of
    ``main``. ``messages`` lists tolerated deviations (e.g. keys absent from SPIN's hmr.pt); ``metadata``
    holds the file's scalar entries (epoch, total_step_count ...). ``inner_loop``: the
    :class:`metahmr_cli.tto.InnerLoop` the networks were meta-trained with, from the file's ``inner_loop`` record
    (written by ``metahmr train``); None for files without one (the releases: the released inner loop applies).
    """

    main: Regressor
    aux: Regressor | None
    kind: str
    layout_main: str
    layout_aux: str | None
    identifier: str
    path: Path
    messages: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    inner_loop: InnerLoop | None = None


def _inner_loop_record(obj: Mapping[str, Any], source: str) -> Any:
    """The InnerLoop of a checkpoint's ``inner_loop`` entry, None without one."""
    if obj.get("inner_loop") is None:
        return None
    try:
        return InnerLoop.from_record(obj["inner_loop"], source)
    except ConfigError as exc:
        raise CheckpointError(f"{exc} The file was not written by metahmr train, or is damaged.") from None


def _build_and_load(plan: NetworkPlan, sd: Mapping[str, Tensor], mean_params: Mapping[str, Any] | None,
                    source: str, *, strict: bool = True,
                    allow_missing: tuple[str, ...] = ()) -> tuple[Regressor, list[str]]:
    fast = strict and not allow_missing
    if fast:
        # Every tensor comes from the file: build without storage or initialisation, then adopt the tensors.
        with torch.device("meta"):
            model = build_regressor(plan.arch, plan.backbone, plan.n_iter, mean_params=mean_params,
                                    img_hw=plan.img_hw, init_weights=False, hidden=plan.hidden,
                                    dropout=plan.dropout)
    else:
        model = build_regressor(plan.arch, plan.backbone, plan.n_iter, mean_params=mean_params, img_hw=plan.img_hw,
                                hidden=plan.hidden, dropout=plan.dropout)
    notes = load_layout_state_dict(model, sd, plan.layout, prefix=plan.prefix, strict=strict,
                                   allow_missing=allow_missing, source=source, assign=fast)
    return model, notes


def recorded_body(path: str | Path) -> str | None:
    """The body model a checkpoint of ours was trained with (its stored ``config["body"]``: "open", "smpl", a
    folder ...), or None when it records none (a release, an official file) or cannot be read here (loading it
    later reports why). The file is memory-mapped, weights-only: its tensors are not read."""
    try:
        obj = torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - legacy format, damaged or refused: the real load says why
        return None
    config = obj.get("config") if isinstance(obj, Mapping) else None
    body = config.get("body") if isinstance(config, Mapping) else None
    return body if isinstance(body, str) and body else None


def load_networks(path: str | Path, *, device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float32,
                  mean_params: Mapping[str, Any] | None = None) -> LoadedNetworks:
    """Load the main (and auxiliary) network from a checkpoint file, detecting its form.

    Recognised forms:
      * Meta-HMR release / our training checkpoints: dict with ``model`` and ``model_aux`` (plus optimizer,
        epoch, ...). Layouts are detected from the keys (backbone keys, fc1 input width 880/2208/2205);
        both networks load strictly. Our own checkpoints may add ``network_specs``.
      * official CLIFF (``res50-*.pt``, ``hr48-*.pt``): ``{'model': ...}``, keys possibly ``module.``-prefixed;
        main = aux = the CLIFF network with 3 iterations (aux is a separate copy).
      * SPIN ``hmr.pt``: ``{'model': ...}`` flat HMR keys without ``init_*`` (taken from ``mean_params``);
        loaded non-strictly, other deviations are reported in ``messages``.
      * a bare state dict of one network.

    Args:
        path: the checkpoint file.
        device: target device (default CPU).
        dtype: floating-point dtype of the networks.
        mean_params: pose/shape/cam arrays used where the file has no ``init_*`` buffers.
    Raises:
        AssetNotFoundError: no such file. CheckpointError: unreadable, unsafe, or of an unknown layout.
    """
    path = Path(path)
    obj = load_torch_file(path)
    source = path.name
    messages: list[str] = []
    metadata: dict[str, Any] = {}
    aux: Regressor | None
    if isinstance(obj, Mapping) and "model" in obj and "model_aux" in obj:
        kind = "metahmr"
        specs = obj.get("network_specs") if isinstance(obj.get("network_specs"), Mapping) else {}
        main_sd = _require_state_dict(obj["model"], f"{source}['model']")
        plan_main = (_plan_from_spec(specs["main"], main_sd, source) if specs.get("main")
                     else detect_network(main_sd, "main", f"{source}['model']"))
        main, _ = _build_and_load(plan_main, main_sd, mean_params, f"{source}['model']")
        aux = None
        layout_aux = None
        if obj["model_aux"] is not None:
            aux_sd = _require_state_dict(obj["model_aux"], f"{source}['model_aux']")
            plan_aux = (_plan_from_spec(specs["aux"], aux_sd, source) if specs.get("aux")
                        else detect_network(aux_sd, "aux", f"{source}['model_aux']"))
            aux, _ = _build_and_load(plan_aux, aux_sd, mean_params, f"{source}['model_aux']")
            layout_aux = plan_aux.layout_name
        layout_main = plan_main.layout_name
        metadata = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, (int, float, str, bool))}
        inner_loop = _inner_loop_record(obj, source)
    else:
        if isinstance(obj, Mapping) and "model" in obj:
            sd = _require_state_dict(obj["model"], f"{source}['model']")
            entry = f"{source}['model']"
            wrapped = True
        elif _is_state_dict(obj):
            sd, entry, wrapped = _strip_module(obj), source, False
        elif isinstance(obj, Mapping) and "state_dict" in obj:
            raise CheckpointError(f"{source} looks like a backbone initialisation file ('state_dict' entry), not "
                                  "a regressor checkpoint; use it as a backbone init for training instead.")
        else:
            found = list(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
            raise CheckpointError(f"{source} is not a recognised checkpoint (top level: {found}); "
                                  f"expected {_EXPECTED_FORMS}.")
        plan = detect_network(sd, "single", entry)
        if plan.arch == "hmr" and plan.backbone == "resnet50":
            kind = "spin_hmr" if wrapped else "state_dict"
            if not any(k in sd for k in INIT_KEYS) and mean_params is None:
                msg = (f"{source} has no init_* buffers and no mean_params were given: the head starts from the "
                       "identity pose; pass the smpl_mean_params.npz arrays for the released behaviour.")
                logger.warning(msg)
                messages.append(msg)
            main, notes = _build_and_load(plan, sd, mean_params, entry, strict=False, allow_missing=INIT_KEYS)
            messages += notes
        else:
            if wrapped:
                kind = {"resnet50": "cliff_res50", "hrnet_w48_cls": "cliff_hr48"}.get(plan.backbone, "state_dict")
            else:
                kind = "state_dict"
            main, _ = _build_and_load(plan, sd, mean_params, entry)
        aux = copy.deepcopy(main)
        layout_main = layout_aux = plan.layout_name
        inner_loop = None
    main = main.to(device=device, dtype=dtype).eval()
    if aux is not None:
        aux = aux.to(device=device, dtype=dtype).eval()
    info = LoadedNetworks(main=main, aux=aux, kind=kind, layout_main=layout_main, layout_aux=layout_aux,
                          identifier=file_identifier(path), path=path, messages=messages, metadata=metadata,
                          inner_loop=inner_loop)
    logger.info("loaded %s (%s: main %s, aux %s)", info.identifier, kind, layout_main, layout_aux)
    return info


def _require_state_dict(obj: Any, source: str) -> dict[str, Tensor]:
    if not _is_state_dict(obj):
        raise CheckpointError(f"{source} is not a state dict of tensors (got {type(obj).__name__}); "
                              f"expected {_EXPECTED_FORMS}.")
    return _strip_module(obj)


# --------------------------------------------------------------------------------------------- backbone init
@dataclass
class BackboneInitReport:
    """What :func:`load_backbone_init` did. Key names are the backbone's own (no ``backbone.`` prefix)."""

    path: Path
    loaded: list[str]
    skipped: list[str]  # keys of the file that were not used
    not_initialised: list[str]  # backbone keys the file did not provide


def load_backbone_init(model: Regressor | nn.Module, path: str | Path) -> BackboneInitReport:
    """Initialise a backbone from a pretrained file (non-strict; reports what was used).

    * ``pose_resnet.pth``: ``{'state_dict': ...}`` with ResNet keys under ``backbone.`` (the keypoint head
      is skipped).
    * ``pose_hrnet_w48_256x192.pth``: a plain state dict of the COCO pose-HRNet; for HRNet backbones only
      conv1, bn1, conv2, bn2, layer1, transition1-3 and stage2-4 are loaded.

    Args:
        model: a Regressor (its ``backbone`` is initialised) or a bare backbone module.
    Raises:
        CheckpointError: unreadable file, shape mismatches, or no key of the file fits the backbone.
    """
    path = Path(path)
    obj = load_torch_file(path)
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not _is_state_dict(obj):
        raise CheckpointError(f"{path.name} is not a backbone state dict (expected a plain state dict or "
                              "{'state_dict': ...} as in pose_resnet.pth / pose_hrnet_w48_256x192.pth).")
    sd = _strip_prefix(_strip_module(obj), "backbone.")
    backbone = model.backbone if isinstance(model, Regressor) else model
    wanted = getattr(backbone, "pretrained_layers", None)
    target = backbone.state_dict()
    loadable: dict[str, Tensor] = {}
    skipped: list[str] = []
    mismatched: list[str] = []
    for k, v in sd.items():
        if k not in target or (wanted is not None and k.split(".")[0] not in wanted):
            skipped.append(k)
        elif tuple(v.shape) != tuple(target[k].shape):
            mismatched.append(f"{k}: file {tuple(v.shape)} vs network {tuple(target[k].shape)}")
        else:
            loadable[k] = v
    name = getattr(model, "backbone_name", type(backbone).__name__)
    if mismatched:
        raise CheckpointError(f"{path.name} does not fit the {name} backbone: shape mismatches "
                              f"({len(mismatched)}): {_fmt_keys(mismatched)}.")
    if not loadable:
        raise CheckpointError(f"no key of {path.name} fits the {name} backbone (file keys: {_fmt_keys(list(sd), 5)};"
                              f" backbone keys: {_fmt_keys(list(target), 5)}); is it the right init file?")
    backbone.load_state_dict(loadable, strict=False)
    not_init = [k for k in target if k not in loadable]
    logger.info("initialised %d/%d backbone tensors from %s (%d file keys skipped)", len(loadable), len(target),
                path.name, len(skipped))
    return BackboneInitReport(path=path, loaded=sorted(loadable), skipped=skipped, not_initialised=not_init)


# --------------------------------------------------------------------------------------------- writing
def _matching_layout(model: Regressor, role: str) -> str | None:
    want = "meta" if role == "main" else "aux"
    candidates = [s for s in LAYOUTS.values() if s.arch == model.arch and s.backbone == model.backbone_name]
    for spec in candidates:
        if want in spec.name:
            return spec.name
    return candidates[0].name if candidates else None


def save_networks(path: str | Path, main: Regressor, aux: Regressor | None, *,
                  extra: Mapping[str, Any] | None = None) -> Path:
    """Write main (+ aux) networks in the Meta-HMR release form, atomically.

    Networks with a released layout are stored in that layout (so the authors' code can read them); others
    keep our internal keys. ``network_specs`` records architecture, backbone, n_iter and crop size, and
    ``extra`` adds further entries (epoch, optimizer state, config ...) that must be weights-only safe.
    """
    layout_main = _matching_layout(main, "main")
    obj: dict[str, Any] = {
        "model": export_state_dict(main, layout_main) if layout_main else main.state_dict(),
        "model_aux": None,
        "network_specs": {"main": network_spec(main, layout_main), "aux": None},
    }
    if aux is not None:
        layout_aux = _matching_layout(aux, "aux")
        obj["model_aux"] = export_state_dict(aux, layout_aux) if layout_aux else aux.state_dict()
        obj["network_specs"]["aux"] = network_spec(aux, layout_aux)
    for key in ("optimizer", "epoch", "batch_idx", "batch_size", "dataset_perm", "total_step_count"):
        obj.setdefault(key, {} if key == "optimizer" else ([] if key == "dataset_perm" else 0))
    if extra:
        obj.update(extra)
    return save_torch_atomic(obj, path)


def _randomise_bn_stats(model: nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))


def write_random_checkpoint(path: str | Path, kind: str, seed: int = 0,
                            mean_params: Mapping[str, Any] | None = None, *,
                            module_prefix: bool = False) -> Path:
    """Write a randomly initialised checkpoint in exactly one of the released file forms (atomically).

    kinds: "metahmr_cliff_hrnet", "metahmr_cliff_resnet", "metahmr_hmr_resnet" (dict with model, model_aux,
    optimizer {}, epoch, batch_idx, batch_size, dataset_perm, total_step_count); "cliff_hr48" and
    "cliff_res50" ({'model': ...}; backbone under ``encoder.``; ``module_prefix=True`` adds ``module.`` like
    DataParallel); "spin_hmr" ({'model': flat HMR keys without init_*}).
    """
    if kind not in CHECKPOINT_KINDS:
        raise CheckpointError(f"unknown checkpoint kind {kind!r}; choose one of {list(CHECKPOINT_KINDS)}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)

    def net(layout: str) -> Regressor:
        spec = layout_for(layout)
        model = build_regressor(spec.arch, spec.backbone, spec.n_iter, mean_params=mean_params)
        _randomise_bn_stats(model, gen)
        return model

    obj: dict[str, Any]
    if kind in _METAHMR_KINDS:
        lm, la = _METAHMR_KINDS[kind]
        obj = {"model": export_state_dict(net(lm), lm), "model_aux": export_state_dict(net(la), la),
               "optimizer": {}, "epoch": 0, "batch_idx": 0, "batch_size": 20, "dataset_perm": [],
               "total_step_count": 0}
    else:
        if kind == "cliff_hr48":
            sd = export_state_dict(net("cliff_aux_hrnet"), "cliff_aux_hrnet")
        elif kind == "cliff_res50":
            model = net("cliff_aux_resnet")
            sd = {_layout_key(k, "encoder."): v for k, v in model.state_dict().items()}
        else:  # spin_hmr
            sd = {k: v for k, v in export_state_dict(net("hmr_aux_resnet"), "hmr_aux_resnet").items()
                  if k not in INIT_KEYS}
        if module_prefix:
            sd = {f"module.{k}": v for k, v in sd.items()}
        obj = {"model": sd}
    return save_torch_atomic(obj, path)
