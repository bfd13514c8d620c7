"""The training loop: networks, initialisation, optimiser, data order, checkpoints, resume, logs, evaluation.

Exact resume: the data order is a function of (seed, epoch) and the batch position (see
:mod:`.distributed`), augmentation a function of (seed, epoch, sample index) (see :mod:`metahmr_cli.data`),
and the torch generator is re-seeded from (seed, step, rank) before every step (dropout masks). A run killed
at any point and resumed from its last checkpoint therefore computes the same losses as an uninterrupted run
(bit for bit with ``deterministic = true`` on the same machine and thread count).

One run at a time per run folder: the main process holds the folder's lock (:class:`~metahmr_cli.io.outdir.OutputLock`,
as ``metahmr process`` does for its output folder) from before a resumed checkpoint is read until the run ends, so a
second ``train --resume`` of a live run stops with a message (or waits with ``wait=True``) instead of writing the
same log and checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from ..assets import ASSETS, body_dir, resolve_asset
from ..body.fast_joints import SubsetBody
from ..body.smpl import BodyModel, load_body_model, load_mean_params
from ..config import apply_overrides, config_to_dict
from ..data import AugmentConfig, DataConfig, build_train_dataset
from ..data.check import require_valid
from ..data.keypoint_synth import KeypointSynthConfig, SyntheticKeypointDataset
from ..devices import resolve_device
from ..errors import CheckpointError, ConfigError
from ..evaluation.runner import EvalConfig, run_evaluation
from ..io.outdir import OutputLock
from ..models import (
    Regressor,
    build_network,
    build_regressor,
    load_backbone_init,
    load_networks,
    save_networks,
)
from .checkpointing import (
    checkpoint_dir,
    clean_stale_temp_files,
    load_training_checkpoint,
    resolve_resume_path,
    restore_networks,
    restore_rng_state,
    save_training_checkpoint,
    unique_run_dir,
)
from .config import SYNTHETIC_KEYPOINTS, TrainConfig, needs_aux, network_layouts
from .distributed import (
    DistInfo,
    GlobalBatchSampler,
    all_reduce_mean,
    barrier,
    dist_info_from_env,
    init_process_group,
    launch,
)
from .meta_step import MetaStep, MetaStepConfig, prepare_batch
from .plan import dataset_specs
from .run_log import RunLogger

__all__ = [
    "TrainResult",
    "Trainer",
    "build_networks",
    "config_for_resume",
    "initialise_networks",
    "meta_step",
    "needs_aux",
    "network_layouts",
    "resolve_init_path",
    "run_folder_lock",
    "train",
    "training_body",
    "training_dataset",
]

log = logging.getLogger(__name__)

@dataclass
class TrainResult:
    """What a run produced (returned by the main process)."""

    run_dir: Path
    last_checkpoint: Path | None
    steps: int
    epoch: int
    log_csv: Path
    skipped_steps: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def build_networks(cfg: TrainConfig, mean_params: dict[str, np.ndarray] | None = None,
                   ) -> tuple[Regressor, Regressor | None]:
    """Fresh main (and aux) networks of the configuration (random weights)."""
    layout_main, layout_aux = network_layouts(cfg)
    head: dict[str, Any] = {}
    if cfg.head_hidden is not None:
        head["hidden"] = int(cfg.head_hidden)
    if cfg.head_dropout is not None:
        head["dropout"] = float(cfg.head_dropout)
    if layout_main is None:
        main_bb, aux_bb = ("kpnet", "kpnet_small") if cfg.backbone == "kpnet" else ("resnet_tiny", "resnet_tiny")
        if cfg.backbone == "kpnet" and cfg.keypoint_evidence:
            main_bb, aux_bb = f"{main_bb}_ev", f"{aux_bb}_ev"
        main = build_regressor(cfg.arch, main_bb, n_iter=cfg.main_iters or 10, mean_params=mean_params, **head)
        aux = build_regressor(cfg.arch, aux_bb, n_iter=cfg.aux_iters or 3, mean_params=mean_params, **head)
    else:
        if head:
            raise ConfigError("head_hidden / head_dropout change the released head; they apply to resnet_tiny and "
                              "kpnet networks only.")
        main = build_network(layout_main, mean_params)
        aux = build_network(layout_aux, mean_params) if layout_aux else None
        if cfg.main_iters:
            main.n_iter = int(cfg.main_iters)
        if aux is not None and cfg.aux_iters:
            aux.n_iter = int(cfg.aux_iters)
    return main, (aux if needs_aux(cfg) else None)


def training_body(cfg: TrainConfig, device: torch.device | str = "cpu") -> BodyModel:
    """The neutral body of a run (posed at its joints and ``train_vertices`` surface vertices when set)."""
    body = load_body_model(body_dir(cfg.body), "neutral", device=device, dtype=torch.float32, with_h36m=False)
    if cfg.train_vertices is not None:

        body = SubsetBody(body, num_surface=int(cfg.train_vertices)).to(device)
    return body


def training_dataset(cfg: TrainConfig) -> Any:
    """The training data of a run (a map-style dataset with ``set_epoch``); dataset files are validated first."""
    if cfg.data == SYNTHETIC_KEYPOINTS:

        return SyntheticKeypointDataset(body_dir(cfg.body), KeypointSynthConfig(
            length=cfg.synth_length, seed=cfg.seed, split="train"))

    require_valid(dataset_specs(cfg))  # before the run folder exists
    aug = AugmentConfig(enabled=cfg.augment, occlusion=cfg.syn_occ, occluders=cfg.occluders)
    return build_train_dataset(DataConfig(datasets_config=cfg.datasets_config, train=cfg.data, augment=aug,
                                          seed=cfg.seed))


def meta_step(cfg: TrainConfig, main: Regressor, aux: Regressor | None, body: BodyModel,
              device: torch.device | str = "cpu") -> MetaStep:
    """The training step of a run's settings (plain or meta, its inner loop, bf16 backbones on CUDA with amp)."""
    amp = torch.bfloat16 if (cfg.amp and torch.device(device).type == "cuda") else None
    step_cfg = MetaStepConfig(meta=cfg.meta, aux_mode=cfg.aux_mode, grouping=cfg.grouping,
                              group_size=cfg.group_size, inner=cfg.inner_loop(), weights=cfg.loss_weights,
                              camera=cfg.camera, amp_dtype=amp)
    return MetaStep(main, aux, body, step_cfg)


def resolve_init_path(value: str, what: str) -> Path:
    """An init file: a registered asset name (resolved through the weights root) or a path."""
    if value in ASSETS:
        return resolve_asset(value)
    p = Path(value).expanduser()
    if not p.is_file():
        raise CheckpointError(f"{what} file {p} does not exist; fix the path in the recipe or on the command line "
                              f"(or give an asset name such as {', '.join(a for a in ASSETS if 'cliff' in a)}).")
    return p


def _copy_weights(dst: Regressor, src: Regressor, what: str, source: str) -> None:
    if (dst.arch, dst.backbone_name) != (src.arch, src.backbone_name):
        raise CheckpointError(f"{what}: {source} holds a {src.arch}/{src.backbone_name} network but this run trains "
                              f"a {dst.arch}/{dst.backbone_name}; pick a matching file or change arch/backbone.")
    dst.load_state_dict(src.state_dict())


def initialise_networks(cfg: TrainConfig, main: Regressor, aux: Regressor | None,
                        mean_params: dict[str, np.ndarray] | None) -> list[str]:
    """Apply init_from / init_backbone / init_aux; returns human-readable notes of what was loaded."""
    notes: list[str] = []
    if cfg.init_from:
        path = resolve_init_path(cfg.init_from, "init_from")
        loaded = load_networks(path, mean_params=mean_params)
        _copy_weights(main, loaded.main, "init_from (main)", loaded.identifier)
        notes.append(f"main <- {loaded.identifier} ({loaded.kind}, {loaded.layout_main})")
        if aux is not None:
            if loaded.aux is None:
                raise CheckpointError(f"init_from {path} has no auxiliary network; set init_aux as well.")
            _copy_weights(aux, loaded.aux, "init_from (aux)", loaded.identifier)
            notes.append(f"aux <- {loaded.identifier} ({loaded.layout_aux})")
    else:
        if cfg.init_backbone:
            path = resolve_init_path(cfg.init_backbone, "init_backbone")
            rep = load_backbone_init(main, path)
            notes.append(f"main backbone <- {path.name} ({len(rep.loaded)} tensors; {len(rep.not_initialised)} "
                         "left random)")
        else:
            notes.append("main: random initialisation (no init_backbone)")
    if aux is not None and cfg.init_aux and not cfg.init_from:
        path = resolve_init_path(cfg.init_aux, "init_aux")
        loaded = load_networks(path, mean_params=mean_params)
        src = loaded.aux if (loaded.kind == "metahmr" and loaded.aux is not None) else loaded.main
        _copy_weights(aux, src, "init_aux", loaded.identifier)
        notes.append(f"aux <- {loaded.identifier} ({loaded.kind})")
    elif aux is not None and not cfg.init_from:
        notes.append("aux: random initialisation (no init_aux; the released recipe starts it from CLIFF/SPIN)")
    return notes


def config_for_resume(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The configuration stored in a checkpoint, with ``resume`` set and optional overrides applied.

    The run folder is the checkpoint's run (``<run>/checkpoints/x.pt``) unless ``out`` is overridden.
    """
    ckpt_path = resolve_resume_path(path)
    obj = load_training_checkpoint(ckpt_path)
    cfg = apply_overrides(TrainConfig(), _known(obj["config"]))
    run_dir = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
    cfg = dataclasses.replace(cfg, resume=str(ckpt_path), out=str(run_dir))
    extra = {k: v for k, v in (overrides or {}).items() if v is not None}
    return apply_overrides(cfg, extra)


def _known(d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in d.items() if k in names}


def _step_seed(seed: int, step: int, rank: int) -> int:
    return (int(seed) * 1_000_003 + int(step) * 7919 + int(rank) * 104_729 + 12_345) % (2**63 - 1)


def _set_determinism(deterministic: bool) -> None:
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.backends.cudnn.benchmark = True


def _set_modes(main: Regressor, aux: Regressor | None, cfg: TrainConfig) -> None:
    main.train(cfg.net_mode == "train")
    if aux is not None:
        aux.train(cfg.aux_net_mode == "train")


class Trainer:
    """One process of a training run (see :func:`train` for the entry point).

    Args:
        config: the settings (validated here).
        dist_info: this process's place in a multi-process run (default: from the environment).
        wait: when another run holds the run folder, wait for it instead of stopping with an error.
        locked: the run folder is already locked by the calling process (spawned workers of :func:`train`).
    """

    def __init__(self, config: TrainConfig, dist_info: DistInfo | None = None, *, wait: bool = False,
                 locked: bool = False) -> None:
        config.validate()
        self.cfg = config
        self.dist = dist_info or dist_info_from_env()
        self.device = self._device()
        self.history: list[dict[str, float]] = []
        self.wait = wait
        self.locked = locked
        self._lock: OutputLock | None = None

    def _lock_run_dir(self, run_dir: Path) -> None:
        """Take the run folder's lock (main process, once); see the module docstring."""
        if not self.dist.is_main or self.locked or self._lock is not None:
            return
        lock = run_folder_lock(run_dir, wait=self.wait)
        lock.__enter__()
        self._lock = lock

    def _unlock(self) -> None:
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None

    # ------------------------------------------------------------------ set-up
    def _device(self) -> torch.device:
        dev = resolve_device(self.cfg.device)
        if dev.type == "cuda" and self.dist.enabled:
            torch.cuda.set_device(self.dist.local_rank)
            return torch.device("cuda", self.dist.local_rank)
        return dev

    def _run_dir(self) -> Path:
        if self.cfg.resume:
            return Path(self.cfg.out)
        run_dir = unique_run_dir(self.cfg.out) if self.dist.is_main else Path(self.cfg.out)
        if self.dist.enabled:
            holder = [str(run_dir)]
            dist.broadcast_object_list(holder, src=0)
            run_dir = Path(holder[0])
        return run_dir

    def setup(self) -> None:
        cfg = self.cfg
        if cfg.resume and self.dist.is_main:  # before anything of the run is read or written
            Path(cfg.out).mkdir(parents=True, exist_ok=True)
            self._lock_run_dir(Path(cfg.out))
        init_process_group(self.dist, self.device)
        _set_determinism(cfg.deterministic)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % (2**32))
        torch.manual_seed(cfg.seed + self.dist.rank)

        self.body: BodyModel = training_body(cfg, self.device)
        self.mean_params = load_mean_params(body_dir(cfg.body))

        self.main, self.aux = build_networks(cfg, self.mean_params)
        resume_obj = None
        if cfg.resume:
            resume_path = resolve_resume_path(cfg.resume)
            resume_obj = load_training_checkpoint(resume_path)
            restore_networks(resume_obj, self.main, self.aux, source=resume_path.name)
            self.init_notes = [f"resumed from {resume_path} (step {int(resume_obj['total_step_count'])})"]
        else:
            self.init_notes = initialise_networks(cfg, self.main, self.aux, self.mean_params)
        self.main.to(self.device)
        if self.aux is not None:
            self.aux.to(self.device)

        self.step_module = meta_step(cfg, self.main, self.aux, self.body, self.device)
        # one object: the inner loop of the meta steps and the record that test-time optimisation starts from
        self.inner_loop = self.step_module.cfg.inner
        self.model: nn.Module = self.step_module
        if self.dist.enabled:
            self.model = DDP(self.step_module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                             find_unused_parameters=False)

        groups = [{"params": list(self.main.parameters()), "lr": cfg.outer_lr, "name": "main"}]
        if self.aux is not None:
            groups.append({"params": list(self.aux.parameters()), "lr": cfg.resolved_aux_lr(), "name": "aux"})
        if cfg.optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(groups, betas=(0.9, 0.999), eps=1e-8,
                                                                     weight_decay=0.0)
        else:
            self.optimizer = torch.optim.SGD(groups, lr=cfg.outer_lr)

        self._build_data()
        self.step = 0
        self.epoch = 0
        self.position = 0
        if resume_obj is not None:
            self.optimizer.load_state_dict(resume_obj["optimizer"])
            self.step = int(resume_obj["total_step_count"])
            self.epoch = int(resume_obj["epoch"])
            self.position = int(resume_obj["batch_idx"])
            world = int(resume_obj.get("world_size", 1))
            if world != self.dist.world_size:
                log.warning("checkpoint was written by %d process(es), resuming with %d: the data order of the "
                            "remaining epoch changes", world, self.dist.world_size)
            restore_rng_state(resume_obj["rng"])

        self.run_dir = self._run_dir()
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._lock_run_dir(self.run_dir)  # a new run: two runs that picked the same new folder cannot both go on
            for path in clean_stale_temp_files(checkpoint_dir(self.run_dir)):
                log.info("removed %s, left by an interrupted checkpoint write", path.name)
            self.cfg = dataclasses.replace(self.cfg, out=str(self.run_dir))
            (self.run_dir / "config.json").write_text(json.dumps(config_to_dict(self.cfg), indent=2))
        else:
            self.cfg = dataclasses.replace(self.cfg, out=str(self.run_dir))

    def _build_data(self) -> None:
        cfg = self.cfg
        self.dataset = training_dataset(cfg)
        self.sampler = GlobalBatchSampler(len(self.dataset), cfg.batch_size, seed=cfg.seed, rank=self.dist.rank,
                                          world_size=self.dist.world_size, shuffle=True)
        if self.sampler.batches_per_epoch < 1:
            raise ConfigError(f"the training data has {len(self.dataset)} samples, fewer than one global batch "
                              f"({cfg.batch_size} x {self.dist.world_size} processes); lower --batch-size.")
        # never more loader workers than this process's share of the CPU cores, and on a CPU leave the workers
        # their cores: torch's own threads would otherwise compete with them for every core
        share = max(1, (os.cpu_count() or 1) // self.dist.world_size)
        workers = min(cfg.num_workers, share)
        self._threads = None
        if self.device.type == "cpu" and workers and torch.get_num_threads() > max(1, share - workers):
            self._threads = torch.get_num_threads()  # restored when the run ends
            torch.set_num_threads(max(1, share - workers))
        self.loader = DataLoader(self.dataset, batch_sampler=self.sampler, num_workers=workers,
                                 pin_memory=self.device.type == "cuda", generator=torch.Generator(),
                                 persistent_workers=False)

    # ------------------------------------------------------------------ loop
    def total_steps(self) -> int | None:
        per_epoch = self.sampler.batches_per_epoch
        by_epochs = per_epoch * self.cfg.epochs if self.cfg.epochs is not None else None
        if self.cfg.max_steps is None:
            return by_epochs
        return self.cfg.max_steps if by_epochs is None else min(by_epochs, self.cfg.max_steps)

    def _done(self) -> bool:
        if self.cfg.max_steps is not None and self.step >= self.cfg.max_steps:
            return True
        return self.cfg.epochs is not None and self.epoch >= self.cfg.epochs

    def save(self) -> Path:
        """Write a checkpoint of the current state (main process only; others wait)."""
        path = checkpoint_dir(self.run_dir) / f"step_{self.step:08d}.pt"
        if self.dist.is_main:
            path = save_training_checkpoint(
                self.run_dir, self.main, self.aux, self.optimizer, step=self.step, epoch=self.epoch,
                batch_idx=self.position, batch_size=self.cfg.batch_size, world_size=self.dist.world_size,
                seed=self.cfg.seed, config=config_to_dict(self.cfg), inner_loop=self.inner_loop)
        barrier(self.dist)
        return path

    def _train_step(self, items: dict[str, Any]) -> dict[str, float]:
        cfg = self.cfg
        torch.manual_seed(_step_seed(cfg.seed, self.step, self.dist.rank))
        self.step_module.cfg.meta = cfg.meta and self.step >= cfg.meta_warmup_steps
        batch = prepare_batch(items, self.body, self.device)
        _set_modes(self.main, self.aux, cfg)
        self.optimizer.zero_grad(set_to_none=True)
        loss, stats = self.model(batch)
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        limit = float(cfg.clip_grad) if cfg.clip_grad is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, limit) if params else torch.zeros(())
        finite = bool(torch.isfinite(grad_norm))
        if finite:
            self.optimizer.step()
        else:
            self.skipped += 1
            log.warning("step %d: non-finite gradient (loss %s); update skipped", self.step + 1,
                        float(stats["outer"]))
        keys = sorted(stats)
        vec = torch.stack([stats[k].float().reshape(()) for k in keys] + [grad_norm.float().reshape(())])
        vec = all_reduce_mean(vec.to(self.device), self.dist).cpu()
        out = {k: float(v) for k, v in zip([*keys, "grad_norm"], vec.tolist(), strict=True)}
        return out

    def run(self) -> TrainResult:
        """Train until ``epochs`` / ``max_steps``; returns a :class:`TrainResult`."""
        try:
            self.setup()
            return self._run()
        finally:
            self._unlock()

    def _run(self) -> TrainResult:
        cfg = self.cfg
        self.skipped = 0
        logger = RunLogger(self.run_dir, total_steps=self.total_steps(), start_step=self.step,
                           progress=cfg.progress, enabled=self.dist.is_main)
        if self.dist.is_main:
            for note in self.init_notes:
                log.info(note)
        last_ckpt: Path | None = None
        saved_at = self.step if cfg.resume else -1
        global_batch = cfg.batch_size * self.dist.world_size
        try:
            while not self._done():
                self.dataset.set_epoch(self.epoch)
                self.sampler.set_epoch(self.epoch, start=self.position)
                t_prev = time.perf_counter()
                for items in self.loader:
                    stats = self._train_step(items)
                    self.step += 1
                    self.position += 1
                    now = time.perf_counter()
                    sps = global_batch / max(now - t_prev, 1e-9)
                    t_prev = now
                    row = {"step": self.step, "epoch": self.epoch, "batch": self.position, **stats,
                           "lr_main": float(self.optimizer.param_groups[0]["lr"]),
                           "lr_aux": (float(self.optimizer.param_groups[1]["lr"])
                                      if len(self.optimizer.param_groups) > 1 else None),
                           "samples_per_s": sps}
                    self.history.append({k: float(v) for k, v in row.items() if isinstance(v, int | float)})
                    if self.step % cfg.log_every == 0 or self._done():
                        logger.log_step(row)
                    if self.position >= self.sampler.batches_per_epoch:
                        self.epoch += 1
                        self.position = 0
                        last_ckpt = self.save()
                        saved_at = self.step
                    elif self.step % cfg.checkpoint_every == 0:
                        last_ckpt = self.save()
                        saved_at = self.step
                    if cfg.eval_every and self.step % cfg.eval_every == 0:
                        if saved_at != self.step:
                            last_ckpt = self.save()
                            saved_at = self.step
                        self._evaluate(last_ckpt, logger)
                    if self._done():
                        break
            if saved_at != self.step:
                last_ckpt = self.save()
            if cfg.export and self.dist.is_main:

                path = save_networks(Path(cfg.export).expanduser(), self.main, self.aux,
                                     extra={"total_step_count": self.step, "epoch": self.epoch,
                                            "config": config_to_dict(self.cfg),
                                            "inner_loop": self.inner_loop.to_record()})
                log.info("networks exported to %s", path)
        finally:
            logger.close()
            if getattr(self, "_threads", None):
                torch.set_num_threads(self._threads)
        return TrainResult(run_dir=self.run_dir, last_checkpoint=last_ckpt, steps=self.step, epoch=self.epoch,
                           log_csv=logger.path, skipped_steps=self.skipped, history=self.history)

    def _evaluate(self, checkpoint: Path | None, logger: RunLogger) -> None:
        """Periodic evaluation through ``metahmr_cli.evaluation`` (main process; failures only warn)."""
        if not self.dist.is_main or checkpoint is None:
            barrier(self.dist)
            return
        try:

            ecfg = EvalConfig(dataset=self.cfg.eval_dataset, datasets_config=self.cfg.datasets_config,
                              checkpoint=str(checkpoint), body=self.cfg.body, methods=tuple(self.cfg.eval_methods),
                              out=str(self.run_dir / "eval" / f"step_{self.step:08d}"),
                              max_samples=self.cfg.eval_max_samples, device=str(self.device), progress=False,
                              num_workers=0, resume=False, seed=self.cfg.seed)
            report = run_evaluation(ecfg)
            metrics: dict[str, float] = {}
            for method, result in report.methods.items():
                for metric, summary in result.summary().items():
                    value = summary.get("mean") if isinstance(summary, dict) else summary
                    if isinstance(value, int | float) and math.isfinite(float(value)):
                        metrics[f"{method}/{metric}"] = float(value)
            logger.log_eval(self.step, metrics)
        except Exception as exc:  # evaluation must never stop training
            log.warning("evaluation at step %d failed: %s", self.step, exc)
        finally:
            barrier(self.dist)


def run_folder_lock(run_dir: str | Path, *, wait: bool = False) -> OutputLock:
    """The lock of a training run folder (enter it to hold the folder)."""
    return OutputLock(Path(run_dir), wait=wait, say=log.info, what="Run folder",
                      fix="or stop it before resuming the run again")


def _worker_entry(config: TrainConfig, locked: bool = False) -> None:
    Trainer(config, locked=locked).run()


def train(config: TrainConfig, *, wait: bool = False) -> TrainResult | None:
    """Run training: in this process, or in ``config.nproc`` spawned processes (returns None then).

    Runs started by torchrun (WORLD_SIZE set) use this process as one rank. ``wait``: when another run holds the
    run folder (a second ``--resume`` of a live run), wait for it instead of stopping with an error.
    """
    config.validate()
    env = dist_info_from_env()
    if config.nproc > 1 and not env.enabled:
        if config.resume:  # the spawned workers run under this process's lock of the folder
            Path(config.out).mkdir(parents=True, exist_ok=True)
            with run_folder_lock(config.out, wait=wait):
                launch(_worker_entry, config.nproc, (config, True))
        else:
            launch(_worker_entry, config.nproc, (config,))
        return None
    return Trainer(config, env, wait=wait).run()

