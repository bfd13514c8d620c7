"""``metahmr train --dry-run``: the resolved plan of a run and every missing file with how to fix it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..assets import ASSETS, body_dir, find_asset
from ..data import MIX_PRESETS, load_datasets_config, parse_mix
from ..errors import MetaHMRError
from .checkpointing import resolve_resume_path, unique_run_dir
from .config import SYNTHETIC_KEYPOINTS, TrainConfig, needs_aux, network_layouts

__all__ = ["RunPlan", "plan_run"]

README = "train/README.md"


@dataclass
class RunPlan:
    """What a run would do: (section, label, value) rows and the problems found."""

    rows: list[tuple[str, str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, section: str, label: str, value: object) -> None:
        self.rows.append((section, label, str(value)))

    @property
    def ok(self) -> bool:
        return not self.problems


def _npz_size(path: Path) -> int | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return int(z["imgname"].shape[0]) if "imgname" in z.files else None
    except Exception:
        return None


def _check_init(plan: RunPlan, label: str, value: str | None, fix: str) -> None:
    if not value:
        return
    if value in ASSETS:
        lookup = find_asset(value)
        if lookup.found is None:
            plan.problems.append(f"{label}: asset '{value}' not found. {lookup.message()}")
            plan.add("init", label, f"{value} (MISSING)")
        else:
            plan.add("init", label, lookup.found)
        return
    p = Path(value).expanduser()
    if p.is_file():
        plan.add("init", label, p)
    else:
        plan.problems.append(f"{label}: {p} does not exist. {fix}")
        plan.add("init", label, f"{p} (MISSING)")


def _mix_members(data: str) -> list[str]:

    if data in MIX_PRESETS or "=" in data:
        names: list[str] = []
        for group in parse_mix(data):
            names += [m.strip() for m in group.split("+") if m.strip() and m.strip() not in names]
        return names
    return [data]


def plan_run(cfg: TrainConfig) -> RunPlan:
    """Resolve a configuration without training: networks, init files, datasets with sizes, output folder."""
    plan = RunPlan()
    try:
        cfg.validate()
    except MetaHMRError as exc:
        plan.problems.append(str(exc))
    # networks
    try:
        lm, la = network_layouts(cfg)
        if cfg.backbone == "kpnet":
            lm, la = f"{cfg.arch}/kpnet (open keypoint model)", f"{cfg.arch}/kpnet_small"
        plan.add("networks", "main", lm or f"{cfg.arch}/resnet_tiny (toy, no released layout)")
        plan.add("networks", "aux", (la or f"{cfg.arch}/resnet_tiny") if needs_aux(cfg) else "none (not used)")
    except MetaHMRError as exc:
        plan.problems.append(str(exc))
    plan.add("networks", "inner step", "off (plain training)" if not cfg.meta else
             f"{cfg.grouping} grouping, scope {cfg.scope}, inner lr {cfg.inner_lr:g}, "
             f"{'pseudo + 2D' if cfg.pseudo else '2D only'} loss")
    plan.add("networks", "aux mode", cfg.aux_mode if needs_aux(cfg) else "-")
    plan.add("optimiser", cfg.optimizer,
             f"main lr {cfg.outer_lr:g}" + (f", aux lr {cfg.resolved_aux_lr():g}" if needs_aux(cfg) else ""))
    plan.add("optimiser", "batch / epochs / max steps",
             f"{cfg.batch_size} x {cfg.nproc} process(es) / {cfg.epochs} / {cfg.max_steps}")
    # body
    try:
        plan.add("body", cfg.body, body_dir(cfg.body, create_standin=False))
    except MetaHMRError as exc:
        plan.problems.append(f"body model: {exc}")
    # init files
    if cfg.resume:
        try:
            plan.add("init", "resume", resolve_resume_path(cfg.resume))
        except MetaHMRError as exc:
            plan.problems.append(str(exc))
    else:
        _check_init(plan, "init_from", cfg.init_from, "Give a Meta-HMR release or a metahmr training checkpoint.")
        if not cfg.init_from:
            _check_init(plan, "init_backbone (--init-main)", cfg.init_backbone,
                        f"Download the backbone initialisation (see {README}) or drop init_backbone.")
            if needs_aux(cfg):
                _check_init(plan, "init_aux (--init-aux)", cfg.init_aux,
                            f"Download the official CLIFF / SPIN checkpoint (see {README}).")
    # datasets

    if cfg.data == SYNTHETIC_KEYPOINTS:
        plan.add("data", "training data", f"{SYNTHETIC_KEYPOINTS}: {cfg.synth_length} people per epoch, generated "
                 f"on the fly on the {cfg.body} body (no files needed)")
    else:
        _plan_datasets(plan, cfg)
    # output
    if cfg.resume:
        plan.add("output", "run folder", f"{cfg.out} (resumed, appended)")
    else:
        plan.add("output", "run folder", unique_run_dir(cfg.out))
    plan.add("run", "device / amp / deterministic", f"{cfg.device} / {cfg.amp} / {cfg.deterministic}")
    plan.add("run", "checkpoint every", f"{cfg.checkpoint_every} steps and every epoch end")
    return plan


def _plan_datasets(plan: RunPlan, cfg: TrainConfig) -> None:
    """The datasets of a run on SPIN/CLIFF-format files: sizes, image folders, occluders, evaluation set."""

    try:
        reg = load_datasets_config(cfg.datasets_config)
        plan.add("data", "datasets config", reg.source or "built-in file map ($METAHMR_DATA)")
        members = _mix_members(cfg.data)
        plan.add("data", "training data", cfg.data)
        occlusion_needed = False
        for name in members:
            try:
                spec = reg.resolve(name)
            except MetaHMRError as exc:
                plan.problems.append(str(exc))
                continue
            size = _npz_size(spec.npz) if spec.npz.is_file() else None
            state = f"{size} samples" if size is not None else "MISSING"
            plan.add("data", name, f"{spec.npz} ({state}); images {spec.image_root}"
                     + ("" if spec.image_root.is_dir() else " (MISSING)"))
            if not spec.npz.is_file():
                plan.problems.append(f"dataset '{name}': annotation file {spec.npz} is missing; see {README} for "
                                     "where it comes from, and set root/npz_dir in the datasets config.")
            elif size is None:
                plan.problems.append(f"dataset '{name}': {spec.npz} has no 'imgname' (run `metahmr data check`).")
            if not spec.image_root.is_dir():
                plan.problems.append(f"dataset '{name}': image folder {spec.image_root} is missing; see {README}.")
            occlusion_needed |= spec.occlusion
        if cfg.syn_occ and cfg.augment and occlusion_needed:
            occ = Path(cfg.occluders).expanduser() if cfg.occluders else reg.occluders_path()
            if occ is None or not occ.exists():
                plan.problems.append(f"synthetic occlusion: occluder file {occ or '(not set)'} is missing; build "
                                     f"pascal_occluders.npy from Pascal VOC (see {README}) and set `occluders` in "
                                     "the datasets config, or pass --set syn_occ=false.")
                plan.add("data", "occluders", f"{occ} (MISSING)")
            else:
                plan.add("data", "occluders", occ)
        if cfg.eval_every:
            try:
                spec = reg.resolve(cfg.eval_dataset)
                plan.add("eval", cfg.eval_dataset, f"{spec.npz} every {cfg.eval_every} steps"
                         + ("" if spec.npz.is_file() else " (MISSING: evaluation will be skipped)"))
            except MetaHMRError as exc:
                plan.add("eval", cfg.eval_dataset, f"unavailable ({exc})")
    except MetaHMRError as exc:
        plan.problems.append(f"datasets config: {exc}")


def dataset_specs(cfg: TrainConfig) -> list:
    """The resolved dataset files of a run's training data (a mix, one name or one npz path)."""

    reg = load_datasets_config(cfg.datasets_config)
    return [reg.resolve(name) for name in _mix_members(cfg.data)]
