"""Settings of ``metahmr train`` (one dataclass; the recipes in ``train/*.toml`` fill it).

Every choice in which the paper and the released code differ is a named setting (defaults = released code):

=================  ===============================  ===============================================
setting            released code (default)          paper
=================  ===============================  ===============================================
grouping           "batch": one adapted copy w' per  "sample": one w' per training image (Fig. 1,
                   batch (group_size = batch)        Eq. 7)
aux_mode           "released": the aux net gets no   "paper": the aux net is trained on the ground
                   loss (frozen by first-order       truth by L_train(f_u) (Eq. 5/8)
                   MAML, only its BN stats drift)
scope              "head" (fc1, fc2, decoders)       all of f (not specified)
=================  ===============================  ===============================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..config import check_types
from ..errors import ConfigError
from ..losses import LossWeights
from ..tto.config import PAPER_TTO_LR, InnerLoop

__all__ = ["BACKBONES", "SYNTHETIC_KEYPOINTS", "TrainConfig", "needs_aux", "network_layouts"]

BACKBONES = ("resnet", "hrnet", "resnet_tiny", "kpnet")
SYNTHETIC_KEYPOINTS = "synthetic-keypoints"
"""``data`` value of the open model: people generated on the fly (:mod:`metahmr_cli.data.keypoint_synth`)."""


@dataclass
class TrainConfig:
    """Everything one training run needs (saved into every checkpoint; ``--resume`` restores it).

    Networks:
        arch: "cliff" (bbox_info in the head) or "hmr" (crop camera, no bbox_info).
        backbone: "hrnet" (main: pose-HRNet-W48, aux: cls-HRNet-W48, as released), "resnet" (ResNet-50 both),
            "resnet_tiny" (a few-channel ResNet for toy runs and tests; no released layout), "kpnet" (the open
            model: keypoint encoders instead of image backbones, main "kpnet", aux "kpnet_small"; needs
            ``data = "synthetic-keypoints"``).
        main_iters, aux_iters: head iterations (None = released: main 10, aux 3).
        head_hidden, head_dropout: width of the head's fc1/fc2 and its dropout (None = released 1024 / 0.5).
        body: body model: "smpl", "open", "standin" or a body-model folder.
        train_vertices: pose only the joints and this many surface vertices of the body in training (the vertex
            loss then runs on that even sample of the surface; ~10x faster steps on a CPU); None = every vertex.
        keypoint_evidence: the keypoint model also reads each person's image evidence (BlazePose world
            landmarks, a face check: :mod:`metahmr_cli.keypoints.evidence`; backbones "kpnet_ev" /
            "kpnet_small_ev"); kpnet only.
    Initialisation (paths; None = random):
        init_backbone: backbone file for the main net (pose_resnet.pth / pose_hrnet_w48_256x192.pth).
        init_aux: checkpoint of the auxiliary net (official CLIFF res50/hr48 file, SPIN hmr.pt for HMR, or
            a Meta-HMR release / our checkpoint whose ``model_aux`` is used).
        init_from: Meta-HMR release or our checkpoint to start both nets from (fine-tuning; overrides the two
            above). resume: checkpoint (or run folder) to continue exactly; set by ``--resume``.
    Optimisation:
        batch_size: samples per optimiser step *per process* (released: 30 HRNet, 40 ResNet).
        epochs, max_steps: stop after this many epochs or optimiser steps (whichever first; None = no limit).
        optimizer: "adam" (released, betas 0.9/0.999, eps 1e-8, no weight decay) or "sgd" (plain, for checks).
        clip_grad: clip the global gradient norm of every step to this value (None = released: no clipping). A
            single huge gradient (a person projected through the camera plane while the weights are still
            far off) otherwise fills Adam's moment estimates and stalls a run trained from scratch.
        outer_lr: learning rate of the main net (1e-4); inner_lr: α of the inner step (1e-5);
        inner_optimizer: optimiser of the inner loop, "sgd" (released) or "adam" (a fresh state per unit);
        inner_steps: updates of the inner loop per unit (released: 1). ``inner_optimizer``, ``inner_lr``,
            ``inner_steps``, ``scope`` and ``pseudo`` make the :class:`metahmr_cli.tto.InnerLoop` of the run
            (:meth:`inner_loop`): the training inner loop, recorded in every checkpoint, and the first updates of
            the test-time optimisation that ``process`` and ``eval`` run with the trained networks.
        aux_lr: learning rate of the aux net (None = 1e-6 with aux_mode "released", outer_lr with "paper").
        meta: False = plain CLIFF/HMR training of the main net (no inner step; ablation row 1).
        meta_warmup_steps: the first N steps are plain steps (no inner step; with aux_mode "paper" the aux net is
            trained as well), then meta steps follow: networks trained from scratch first learn to regress, at a
            third of the cost of a meta step (the released runs start from pretrained networks instead; 0).
        pseudo: False = inner loss from the 2D keypoints only (the unweighted L_2D of test-time optimisation; no
            auxiliary net; ablation row 2).
        aux_mode: "released" or "paper" (see the module docstring).
        aux_net_mode: "train" (released: dropout on, BN statistics drift) or "eval" for the aux forward.
        net_mode: "train" (released) or "eval" for the main net: "eval" runs BatchNorm on running statistics
            (frozen) and switches dropout off; used for small-batch fine-tuning and exact equivalence checks.
        grouping: "batch" (released: one w' shared by each group of ``group_size`` samples) or "sample" (paper).
        group_size: samples per shared w' with grouping "batch" (None = the whole per-process batch).
        scope: weights the inner step adapts: "head" (released), "last_stage" or "all".
        loss_weights: term weights (released values); ``outer_scale`` = 60 multiplies the outer loss only.
    Data:
        datasets_config: datasets TOML (see train/datasets.example.toml); None = $METAHMR_DATASETS_CONFIG etc.
        data: mix preset "wo3dpw" (released), "w3dpw" (with 3DPW), a custom mix "h36m=0.5,coco+mpii=0.5", one
            dataset name, a path to an npz, or "synthetic-keypoints" (the open model's generated people).
        synth_length: samples per epoch of the synthetic keypoint stream.
        augment: flip / colour / rotation / scale augmentation (released: on).
        syn_occ: paste Pascal-VOC occluders on h36m and mpi-inf-3dhp crops (released: on); occluders: the
            occluder file (None = the datasets config's ``occluders``).
        num_workers: data-loader workers per process.
    Run:
        seed (2023 released), deterministic: deterministic kernels (bit-identical resume), amp: bf16 autocast of
        the backbones on CUDA, device: "auto" | "cpu" | "cuda" | "cuda:N", nproc: processes (GPUs) on this
        machine, checkpoint_every: steps between checkpoints (and one at every epoch end), eval_every: steps
        between evaluations (0 = never), eval_dataset / eval_max_samples / eval_methods: what they run,
        out: run folder (runs/x -> runs/x2 ... when it exists), progress: rich progress display,
        log_every: steps between CSV rows, export: after the run, also write the two networks alone (no optimiser
        state; the form ``process`` and ``eval`` read) to this file.
    """

    # networks
    arch: Literal["cliff", "hmr"] = "cliff"
    backbone: Literal["resnet", "hrnet", "resnet_tiny", "kpnet"] = "hrnet"
    main_iters: int | None = None
    aux_iters: int | None = None
    head_hidden: int | None = None
    head_dropout: float | None = None
    body: str = "smpl"
    train_vertices: int | None = None
    keypoint_evidence: bool = False
    # initialisation
    init_backbone: str | None = None
    init_aux: str | None = None
    init_from: str | None = None
    resume: str | None = None
    # optimisation
    batch_size: int = 30
    epochs: int | None = 25
    max_steps: int | None = None
    optimizer: Literal["adam", "sgd"] = "adam"
    clip_grad: float | None = None
    outer_lr: float = 1e-4
    inner_lr: float = PAPER_TTO_LR
    inner_optimizer: Literal["sgd", "adam"] = "sgd"
    inner_steps: int = 1
    aux_lr: float | None = None
    meta: bool = True
    meta_warmup_steps: int = 0
    pseudo: bool = True
    aux_mode: Literal["released", "paper"] = "released"
    aux_net_mode: Literal["train", "eval"] = "train"
    net_mode: Literal["train", "eval"] = "train"
    grouping: Literal["batch", "sample"] = "batch"
    group_size: int | None = None
    scope: Literal["head", "last_stage", "all"] = "head"
    loss_weights: LossWeights = field(default_factory=LossWeights)
    # data
    datasets_config: str | None = None
    data: str = "wo3dpw"
    synth_length: int = 200_000
    augment: bool = True
    syn_occ: bool = True
    occluders: str | None = None
    num_workers: int = 4
    # run
    seed: int = 2023
    deterministic: bool = False
    amp: bool = True
    device: str = "auto"
    nproc: int = 1
    checkpoint_every: int = 1000
    eval_every: int = 0
    eval_dataset: str = "3dpw-test"
    eval_max_samples: int | None = 500
    eval_methods: tuple[str, ...] = ("none", "metahmr")
    out: str = "runs/train"
    progress: bool = True
    log_every: int = 1
    export: str | None = None

    @property
    def camera(self) -> Literal["cliff", "hmr"]:
        """Camera model of the decoder: CLIFF's full-image camera or HMR's crop camera."""
        return "cliff" if self.arch == "cliff" else "hmr"

    def inner_loop(self) -> InnerLoop:
        """The inner loop of the run's meta steps, which test-time optimisation of the trained networks repeats."""
        return InnerLoop(optimizer=self.inner_optimizer, lr=float(self.inner_lr), steps=int(self.inner_steps),
                         scope=self.scope, loss="expl" if self.pseudo else "2d")

    def resolved_aux_lr(self) -> float:
        """The aux net's learning rate (released 1e-6; paper mode defaults to ``outer_lr``)."""
        if self.aux_lr is not None:
            return float(self.aux_lr)
        return 1e-6 if self.aux_mode == "released" else float(self.outer_lr)

    def validate(self) -> None:
        """Raise ConfigError naming the bad setting and its valid values."""
        check_types(self)
        choices = [
            ("arch", self.arch, ("cliff", "hmr")),
            ("backbone", self.backbone, BACKBONES),
            ("optimizer", self.optimizer, ("adam", "sgd")),
            ("aux_mode", self.aux_mode, ("released", "paper")),
            ("aux_net_mode", self.aux_net_mode, ("train", "eval")),
            ("net_mode", self.net_mode, ("train", "eval")),
            ("grouping", self.grouping, ("batch", "sample")),
            ("scope", self.scope, ("head", "last_stage", "all")),
            ("inner_optimizer", self.inner_optimizer, ("sgd", "adam")),
        ]
        for name, value, valid in choices:
            if value not in valid:
                raise ConfigError(f"{name} = {value!r} is not valid; choose one of {', '.join(valid)}.")
        keypoint_model = self.backbone == "kpnet"
        if keypoint_model != (self.data == SYNTHETIC_KEYPOINTS):
            raise ConfigError("the keypoint model (--backbone kpnet) trains on data = 'synthetic-keypoints', and only "
                              f"it does (got backbone {self.backbone!r} with data {self.data!r}).")
        if self.head_hidden is not None and int(self.head_hidden) < 1:
            raise ConfigError(f"head_hidden must be >= 1 (or unset), got {self.head_hidden}.")
        if self.head_dropout is not None and not 0.0 <= float(self.head_dropout) < 1.0:
            raise ConfigError(f"head_dropout must be in [0, 1) (or unset), got {self.head_dropout}.")
        if self.meta_warmup_steps < 0:
            raise ConfigError(f"meta_warmup_steps must be >= 0, got {self.meta_warmup_steps}.")
        if self.clip_grad is not None and not float(self.clip_grad) > 0:
            raise ConfigError(f"clip_grad must be > 0 (or unset), got {self.clip_grad}.")
        if self.train_vertices is not None and int(self.train_vertices) < 0:
            raise ConfigError(f"train_vertices must be >= 0 (or unset), got {self.train_vertices}.")
        if self.synth_length < 1:
            raise ConfigError(f"synth_length must be >= 1, got {self.synth_length}.")
        if self.arch == "hmr" and self.backbone == "hrnet":
            raise ConfigError("arch 'hmr' is released with the ResNet-50 backbone only; use --backbone resnet "
                              "(or resnet_tiny for toy runs).")
        positive = [("batch_size", self.batch_size), ("checkpoint_every", self.checkpoint_every),
                    ("log_every", self.log_every), ("nproc", self.nproc)]
        for name, value in positive:
            if int(value) < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}.")
        if int(self.inner_steps) < 1:
            raise ConfigError(f"inner_steps must be >= 1, got {self.inner_steps}.")
        for name, value in (("epochs", self.epochs), ("max_steps", self.max_steps), ("group_size", self.group_size),
                            ("main_iters", self.main_iters), ("aux_iters", self.aux_iters)):
            if value is not None and int(value) < 1:
                raise ConfigError(f"{name} must be >= 1 (or unset), got {value}.")
        if self.epochs is None and self.max_steps is None:
            raise ConfigError("set epochs or max_steps (both are unset, the run would never stop).")
        for name, value in (("outer_lr", self.outer_lr), ("inner_lr", self.inner_lr)):
            if not float(value) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {value}.")
        if self.aux_lr is not None and not float(self.aux_lr) >= 0:
            raise ConfigError(f"aux_lr must be >= 0, got {self.aux_lr}.")
        if self.num_workers < 0 or self.eval_every < 0:
            raise ConfigError("num_workers and eval_every must be >= 0.")


_NETWORK_LAYOUTS: dict[tuple[str, str], tuple[str, str]] = {
    ("cliff", "hrnet"): ("cliff_meta_hrnet", "cliff_aux_hrnet"),
    ("cliff", "resnet"): ("cliff_meta_resnet", "cliff_aux_resnet"),
    ("hmr", "resnet"): ("hmr_meta_resnet", "hmr_aux_resnet"),
}


def network_layouts(cfg: TrainConfig) -> tuple[str | None, str | None]:
    """Released layout names (main, aux) of a configuration; (None, None) for resnet_tiny and kpnet."""
    if cfg.backbone in ("resnet_tiny", "kpnet"):
        return None, None
    key = (cfg.arch, cfg.backbone)
    if key not in _NETWORK_LAYOUTS:
        raise ConfigError(f"no released layout for arch {cfg.arch!r} with backbone {cfg.backbone!r}; "
                          "use cliff+hrnet, cliff+resnet or hmr+resnet.")
    return _NETWORK_LAYOUTS[key]


def needs_aux(cfg: TrainConfig) -> bool:
    """The auxiliary network is built, trained/used and saved by the meta step with pseudo terms, and in "paper" aux
    mode (where it learns from the ground truth, Eq. 5) by a meta run without them too: its inner loop then uses
    the 2D keypoints alone, and the run keeps the same networks and optimiser groups as one with pseudo terms
    (an ablation can fork both from one checkpoint)."""
    return cfg.meta and (cfg.pseudo or cfg.aux_mode == "paper")
