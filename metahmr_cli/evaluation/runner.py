"""Run an evaluation: dataset -> networks -> each TTO method -> per-sample metrics (cached) -> report.

The loader is deterministic (no shuffle, no augmentation, partial last batch kept). For every batch the
ground truth is prepared once (protocols), then every method runs through the one TTO engine
(:func:`metahmr_cli.tto.run_tto`) with a ``step_callback`` that records the metrics after every update, which
gives the stepwise curves of the paper's Figure 3.

Results are cached per batch: ``<cache_dir>/<method>-<key>/b<start>-<end>.npz`` where ``key`` hashes
everything that changes the numbers (checkpoint content id, dataset file, body, schedule settings, keypoints,
protocol, dtype, device type, seed). An interrupted run resumes from the batches already written; a batch is
written atomically, so a crash never leaves a half-written file behind.

2D keypoints for the test-time loss (``keypoints``):
- ``gt``: the dataset's GT 2D keypoints (``part``; released default);
- ``openpose``: the dataset's OpenPose detections (``openpose`` key; released ``--use_openpose2d``:
  OpenPose slots weighted 1, GT slots 0);
- ``detected``: keypoints stored in the npz under ``keypoints_detected`` ((N, 49, 3) in the 49-joint order or
  (N, 25, 3) OpenPose BODY_25, full-resolution image pixels, confidence 0 = missing), e.g. written by a
  keypoint estimator beforehand. Running an estimator inside the evaluation is not supported; a dataset
  without that key is a clear error.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from metahmr_cli.assets import body_dir, resolve_asset
from metahmr_cli.body.smpl import load_body_model, load_mean_params
from metahmr_cli.config import apply_overrides, check_types, config_to_dict, resolve_dtype
from metahmr_cli.data.check import require_valid
from metahmr_cli.data.datasets import HMRDataset
from metahmr_cli.data.keypoint_synth import KeypointSynthConfig, SyntheticKeypointDataset
from metahmr_cli.data.npzio import load_npz
from metahmr_cli.data.registry import load_datasets_config
from metahmr_cli.devices import resolve_device
from metahmr_cli.errors import AssetNotFoundError, ConfigError, DatasetError
from metahmr_cli.evaluation import protocols as P
from metahmr_cli.evaluation.paper_numbers import match_paper_result
from metahmr_cli.evaluation.reports import EvalReport, MethodResult, write_reports
from metahmr_cli.files import fingerprint, save_npz_atomic
from metahmr_cli.geometry.camera import CropInfo
from metahmr_cli.geometry.crop import apply_affine, normalize_crop_keypoints
from metahmr_cli.losses import LossWeights
from metahmr_cli.models.checkpoints import file_identifier, load_networks
from metahmr_cli.progress import WorkProgress
from metahmr_cli.tto import TTOConfig, TTOInputs, resolve_schedule, run_tto
from metahmr_cli.tto.config import InnerLoop

log = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("none", "eft", "metahmr", "reference", "paper")
AUX_METHODS: tuple[str, ...] = ("metahmr", "reference", "paper")
"""Methods that need the auxiliary network (pseudo mesh)."""
KEYPOINT_SOURCES: tuple[str, ...] = ("gt", "openpose", "detected")
EVAL_DATASET_NAMES: dict[str, str] = {
    "3dpw": "3dpw-test",
    "h36m": "h36m-p2",
    "mpi-inf-3dhp": "mpi-inf-3dhp-test",
}
"""Short names on the command line -> test-split entries of the datasets config (released test files)."""
CACHE_VERSION = 1


@dataclass
class EvalConfig:
    """Settings of ``metahmr eval``.

    Attributes:
        dataset: "3dpw", "h36m" (= h36m-p2), "h36m-p1", "mpi-inf-3dhp", any name of the datasets config, a
            path to a SPIN-format ``.npz`` (images relative to its folder unless ``image_root`` is given), or
            "synthetic-keypoints": the held-out synthetic people of the open keypoint model (``max_samples``
            of them, default 1000; ``keypoints`` "detected" = the simulated detector, "gt" = exact projections;
            either way the 2D loss weighs the GT slots, as ``process`` and training do).
        datasets_config: datasets config file (TOML/JSON); None = $METAHMR_DATASETS_CONFIG or built-ins.
        image_root: override of the dataset's image folder.
        checkpoint: network checkpoint (Meta-HMR release, official CLIFF, SPIN, or ours).
        body: "smpl", "standin" or a body-model folder.
        methods: any of "none", "eft", "metahmr", "reference", "paper", in report order (see
            :mod:`metahmr_cli.tto.schedules`).
        steps: most TTO updates per method (for "metahmr"/"reference"/"paper": Adam/SGD updates after the step-0
            update); None = each schedule's own maximum, as in ``process``: 14 for metahmr/reference/paper, 20 for
            eft (EFT's own maximum).
        scope: adapted weights ("head" | "last_stage" | "all"); None = each schedule's default.
        grouping: "person" (one weight copy per person, the paper) or "batch" (one copy per loader batch,
            the released evaluation when batch_size = 20); None = each schedule's own ("batch" for
            "reference", "person" for the others). Applies to every TTO method.
        optimizer, lr: optimiser and learning rate of the adapted phase (None = each schedule's default),
            as ``process --optimizer/--lr``.
        inner_loop: the :class:`metahmr_cli.tto.InnerLoop` the Meta-HMR schedules start with (None = the one the
            checkpoint records, else the released one); set it to evaluate networks under another inner loop.
        batch_size: loader batch (and group size with grouping "batch"); released 20.
        keypoints: 2D keypoints driving TTO: "gt", "openpose" or "detected" (see the module docstring).
        baseline_net: network used by "none" and "eft": "main" or "aux" (the auxiliary net; with a Meta-HMR
            checkpoint this is the CLIFF/HMR the paper's EFT baselines start from).
        h36m_gt: Human3.6M GT joints from the "mesh" (released Meta-HMR) or "S" (SPIN).
        gt_source: override of the GT source for any dataset ("mesh" | "S"); None = dataset default.
        pve_alignment: "none" (released) or "pelvis".
        gender_rule: GT body per sample, applied by :func:`protocols.gt_body_codes` to the dataset's gender item:
            "released" ('m' male, anything else female, no key male) or "neutral" ('m' male, 'f' female,
            anything else or no key neutral; for data made with the neutral body). None = "released" for the
            released test sets (3DPW, Human3.6M, MPI-INF-3DHP) and "neutral" for any other file (synthetic data
            marked 'n' keeps the neutral body).
        device: "auto", "cpu", "cuda", "cuda:N". dtype: "float32" or "float64".
        seed: seed of torch/numpy (released eval: 2023).
        out: output folder of the report files.
        max_samples: evaluate only the first N samples.
        cache_dir: per-batch result cache; None = ``<out>/cache``.
        resume: reuse cached batches.
        num_workers: data-loader workers.
        progress: show a progress bar.
        plots: write the stepwise and per-joint PNG figures (CSV files are always written).
        extra: free-form settings recorded in the report and in the cache key.
    """

    dataset: str = "3dpw"
    datasets_config: str | None = None
    image_root: str | None = None
    checkpoint: str | None = None
    body: str = "smpl"
    methods: tuple[str, ...] = ("none", "eft", "metahmr", "reference")
    steps: int | None = None
    scope: Literal["head", "last_stage", "all"] | None = None
    grouping: Literal["person", "batch"] | None = None
    optimizer: Literal["sgd", "adam"] | None = None
    lr: float | None = None
    inner_loop: InnerLoop | None = None
    batch_size: int = 20
    keypoints: Literal["gt", "openpose", "detected"] = "gt"
    baseline_net: Literal["main", "aux"] = "main"
    h36m_gt: Literal["mesh", "S"] = "mesh"
    gt_source: Literal["mesh", "S"] | None = None
    pve_alignment: Literal["none", "pelvis"] = "none"
    gender_rule: Literal["released", "neutral"] | None = None
    device: str = "auto"
    dtype: Literal["float32", "float64"] = "float32"
    seed: int = 2023
    out: str = "runs/eval"
    max_samples: int | None = None
    cache_dir: str | None = None
    resume: bool = True
    num_workers: int = 0
    progress: bool = True
    plots: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ConfigError naming the bad setting and its valid values."""

        check_types(self)
        methods = list(self.methods)
        if not methods:
            raise ConfigError("methods is empty; choose from none, eft, metahmr, reference (e.g. --tto none,metahmr)")
        for m in methods:
            if m not in METHODS:
                raise ConfigError(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
        if len(set(methods)) != len(methods):
            raise ConfigError(f"methods lists a method twice: {methods}")
        if self.grouping is not None and self.grouping not in ("person", "batch"):
            raise ConfigError(f"grouping = {self.grouping!r} is not valid; choose person or batch")
        if self.optimizer is not None and self.optimizer not in ("sgd", "adam"):
            raise ConfigError(f"optimizer = {self.optimizer!r} is not valid; choose sgd or adam")
        if self.lr is not None and not self.lr >= 0:
            raise ConfigError(f"lr must be >= 0, got {self.lr}")
        if self.inner_loop is not None:
            self.inner_loop.validate("inner_loop")
        checks = [("keypoints", self.keypoints, KEYPOINT_SOURCES),
                  ("baseline_net", self.baseline_net, ("main", "aux")), ("h36m_gt", self.h36m_gt, ("mesh", "S")),
                  ("pve_alignment", self.pve_alignment, ("none", "pelvis")),
                  ("gender_rule", self.gender_rule or "released", P.GENDER_RULES),
                  ("dtype", self.dtype, ("float32", "float64"))]
        for name, value, valid in checks:
            if value not in valid:
                raise ConfigError(f"{name} = {value!r} is not valid; choose one of {', '.join(valid)}")
        if self.scope is not None and self.scope not in ("head", "last_stage", "all"):
            raise ConfigError(f"scope = {self.scope!r} is not valid; choose head, last_stage or all")
        if self.gt_source is not None and self.gt_source not in ("mesh", "S"):
            raise ConfigError(f"gt_source = {self.gt_source!r} is not valid; choose mesh or S")
        if self.steps is not None and self.steps < 0:
            raise ConfigError(f"steps must be >= 0, got {self.steps}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ConfigError(f"max_samples must be >= 1, got {self.max_samples}")


# ---------------------------------------------------------------------------------------------- helpers


def _file_fingerprint(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def _forward_fill(arr: np.ndarray) -> np.ndarray:
    """Fill NaN columns of (B, S+1) from the left (a person that stopped keeps its last value)."""
    out = arr.copy()
    for k in range(1, out.shape[1]):
        missing = ~np.isfinite(out[:, k])
        out[missing, k] = out[missing, k - 1]
    return out


SYNTHETIC_KEYPOINTS = "synthetic-keypoints"
"""``--dataset`` of the open model's held-out synthetic people (:mod:`metahmr_cli.data.keypoint_synth`)."""
SYNTHETIC_EVAL_SAMPLES = 1000
"""People in the synthetic test split unless ``max_samples`` says otherwise."""

H36M_P1_NAMES: tuple[str, ...] = ("h36m-p1", "h36m_mosh_val_p1.npz")
"""Human3.6M protocol-1 split names (config name, released file): the paper's Human3.6M numbers are protocol 2."""


def default_checkpoint(family: str | None) -> Path:
    """The Meta-HMR release evaluated on a dataset family when no checkpoint is given (HRNet, CLIFF head):
    ``cliff_hrnet_h36m.pt`` for Human3.6M, ``cliff_hrnet_3dpw.pt`` otherwise.

    Raises:
        AssetNotFoundError: the release is not installed; the message says where it was looked for.
    """

    name = "metahmr_cliff_hrnet_h36m" if family == "h36m" else "metahmr_cliff_hrnet_3dpw"
    return resolve_asset(name)


def paper_family(protocol: P.EvalProtocol, family: str | None, split_name: str, npz_name: str, n_evaluated: int,
                 n_total: int) -> str | None:
    """The dataset family to look paper numbers up for, or None when the paper's numbers do not apply.

    They apply only to the released protocol of the dataset (GT source, joints, PVE without alignment,
    released gender rule), on the whole test set (no ``max_samples`` cut) and, for Human3.6M, on protocol 2
    (the split ``h36m`` names), not on protocol 1.
    """
    if family is None or not protocol.released or n_evaluated < n_total:
        return None
    if family == "h36m" and (split_name in H36M_P1_NAMES or npz_name in H36M_P1_NAMES):
        return None
    return family


def _detected_keypoints(npz: Path, n: int) -> np.ndarray:

    d = load_npz(npz)
    if "keypoints_detected" not in d:
        raise DatasetError(
            f"--keypoints detected: {npz} has no 'keypoints_detected' key. Detected keypoints are not available "
            "for this dataset; store them in the npz as 'keypoints_detected' ((N, 49, 3) or (N, 25, 3) in image "
            "pixels, confidence 0 = missing) or use --keypoints gt / --keypoints openpose."
        )
    kp = np.asarray(d["keypoints_detected"], dtype=np.float64)
    if kp.ndim != 3 or kp.shape[0] != n or kp.shape[1:] not in ((49, 3), (25, 3)):
        raise DatasetError(f"{npz}: 'keypoints_detected' has shape {kp.shape}; expected ({n}, 49, 3) or ({n}, 25, 3)")
    if kp.shape[1] == 25:
        kp = np.concatenate([kp, np.zeros((n, 24, 3))], axis=1)
    return kp


# ---------------------------------------------------------------------------------------------- runner


class _Evaluator:
    """State shared by the batches of one evaluation."""

    def __init__(self, config: EvalConfig) -> None:

        config.validate()
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype)
        torch.manual_seed(config.seed)
        np.random.seed(config.seed % (2**32))
        if self.device.type == "cuda":
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False

        self.synthetic = config.dataset == SYNTHETIC_KEYPOINTS
        if self.synthetic:
            self._init_synthetic(config)
        else:
            self._init_npz(config)
        self.config_dict = config_to_dict(config)
        self._finish_init(config)

    def _init_synthetic(self, config: EvalConfig) -> None:
        """The held-out split of the open model's synthetic people (neutral body, exact mesh ground truth)."""

        n = int(config.max_samples or SYNTHETIC_EVAL_SAMPLES)
        self.dataset = SyntheticKeypointDataset(self.body_dir, KeypointSynthConfig(length=n, seed=config.seed,
                                                                                   split="test"))
        self.spec = None
        self.n = n
        self.family = None
        self.has_mesh_gt = True
        self.has_S = True
        self.dataset_label = f"{SYNTHETIC_KEYPOINTS} (test split, {n} people, body {config.body})"
        self.dataset_id: Any = {"synthetic": self.dataset.fingerprint(), "n": n}
        self.imgnames = {i: f"{self.dataset.name}/{i:08d}" for i in range(n)}
        self.protocol = P.make_protocol(SYNTHETIC_KEYPOINTS, pve_alignment=config.pve_alignment, gt_source="mesh",
                                        gender_rule="neutral")
        self.detected = None

    def _init_npz(self, config: EvalConfig) -> None:

        dcfg = load_datasets_config(config.datasets_config)
        name = config.dataset
        # short names always mean the released test split (the datasets config also holds training entries
        # called "h36m" / "3dpw")
        name = EVAL_DATASET_NAMES.get(name, name)
        spec = dcfg.resolve(name, image_root=config.image_root)
        if not spec.npz.is_file():
            raise DatasetError(
                f"dataset {config.dataset!r}: annotation file {spec.npz} does not exist; set the data root in the "
                "datasets config (root = ...) or $METAHMR_DATA, or pass a path to an .npz"
            )

        require_valid([spec], what="evaluation")  # before any report or cache file is written
        self.spec = spec
        self.dataset = HMRDataset(spec, is_train=False, seed=config.seed)
        n_total = len(self.dataset)
        self.n = n_total if config.max_samples is None else min(n_total, config.max_samples)
        family = P.protocol_family(config.dataset) or P.protocol_family(spec.name) or \
            P.protocol_family(spec.npz.name)
        self.family = family
        ann = self.dataset.ann
        self.has_mesh_gt = bool((ann.has_smpl > 0).any())
        self.has_S = ann.S is not None
        self.dataset_label = str(spec.npz)
        self.dataset_id = {"file": _file_fingerprint(spec.npz), "image_root": str(spec.image_root),
                           "downsample": spec.downsample}
        self.imgnames = {i: str(ann.imgname[i]) for i in range(self.n)}
        gt_source = config.gt_source
        if gt_source is None and family is None:
            # a dataset of unknown family: compare meshes when it has SMPL ground truth, else its 3D joints
            if self.has_mesh_gt:
                gt_source = "mesh"
            elif ann.S is not None:
                gt_source = "S"
            else:
                raise DatasetError(f"dataset {config.dataset!r} ({spec.npz}) has neither SMPL ground truth "
                                   "('pose'/'shape') nor 3D joints ('S'): nothing to evaluate against")
        self.protocol = P.make_protocol(family or spec.name, h36m_gt=config.h36m_gt,
                                        pve_alignment=config.pve_alignment, gt_source=gt_source,
                                        gender_rule=config.gender_rule or ("released" if family else "neutral"))
        self.detected = _detected_keypoints(spec.npz, n_total) if config.keypoints == "detected" else None

    def _finish_init(self, config: EvalConfig) -> None:
        self._nets = None
        self._bodies = None
        if self.synthetic and not config.checkpoint:
            raise ConfigError(f"--dataset {SYNTHETIC_KEYPOINTS} needs --checkpoint (a keypoint model, e.g. the open "
                              "model's file shown by `metahmr weights status`).")
        self.checkpoint = default_checkpoint(self.family) if not config.checkpoint else \
            Path(config.checkpoint).expanduser()
        if not self.checkpoint.is_file():

            raise AssetNotFoundError(f"checkpoint {self.checkpoint} does not exist; pass --checkpoint PATH")

        self.checkpoint_id = file_identifier(self.checkpoint)
        self.out = Path(config.out).expanduser()
        self.cache_root = Path(config.cache_dir).expanduser() if config.cache_dir else self.out / "cache"

    # ---- lazily loaded heavy state
    @property
    def nets(self):  # -> LoadedNetworks
        if self._nets is None:

            self._nets = load_networks(self.checkpoint, device=self.device, dtype=self.dtype,
                                       mean_params=load_mean_params(self.body_dir))
            self._nets.main.eval()
            if self._nets.aux is not None:
                self._nets.aux.eval()
        return self._nets

    @property
    def body_dir(self) -> Path:

        return body_dir(self.config.body)

    @property
    def bodies(self) -> P.EvalBodies:
        if self._bodies is None:

            bd = self.body_dir
            kw = {"device": self.device, "dtype": self.dtype}
            neutral = load_body_model(bd, "neutral", **kw)
            male = female = None
            if self.protocol.gt_source == "mesh":
                male = load_body_model(bd, "male", **kw)
                female = load_body_model(bd, "female", **kw)
            self._bodies = P.EvalBodies(neutral=neutral, male=male, female=female)
        return self._bodies

    # ---- cache
    def method_key(self, method: str) -> str:
        c = self.config
        body = c.body if c.body in ("smpl", "standin", "open") else str(Path(c.body).expanduser().resolve())
        key = {
            "v": CACHE_VERSION,
            "method": method,
            "checkpoint": self.checkpoint_id,
            "dataset": self.dataset_id,
            "body": body,
            "steps": self.steps_of(method),
            "scope": c.scope if method != "none" else None,
            "grouping": self.grouping_of(method) if method != "none" else None,
            "optimizer": c.optimizer if method != "none" else None,
            "lr": c.lr if method != "none" else None,
            "inner_loop": self.inner_loop_record(method),
            "batch_size": c.batch_size,
            "keypoints": c.keypoints if method != "none" else None,
            "baseline_net": c.baseline_net if method in ("none", "eft") else None,
            "protocol": self.protocol.name,
            "dtype": c.dtype,
            "device": self.device.type,
            "seed": c.seed,
            "extra": c.extra,
        }
        return f"{method}-{fingerprint(key, 12)}"

    def inner_loop_of(self, method: str) -> InnerLoop | None:
        """The inner loop a method starts with: the setting, else the checkpoint's record (None: released)."""
        if method in ("none", "eft"):
            return None
        return self.config.inner_loop if self.config.inner_loop is not None else self.nets.inner_loop

    def inner_loop_record(self, method: str) -> dict[str, Any] | None:
        """The inner loop of a method as plain values (cache key, report); None for the released one."""
        inner = self.inner_loop_of(method)
        return None if inner is None else inner.to_record()

    def cache_path(self, method: str, start: int, end: int) -> Path:
        return self.cache_root / self.method_key(method) / f"b{start:07d}-{end:07d}.npz"

    # ---- per batch
    def tto_inputs(self, batch: dict[str, Any]):

        dev, dt = self.device, self.dtype
        kp_crop = batch["keypoints"].to(dev, dt)
        if self.synthetic and self.config.keypoints == "detected":
            kp_crop = batch["keypoints_obs"].to(dev, dt)  # what a detector would report (noise, dropout ...)
        if self.detected is not None:
            idx = batch["sample_index"].numpy()
            det = torch.as_tensor(self.detected[idx], dtype=dt, device=dev)
            det[..., :2] = det[..., :2] / float(self.spec.downsample)
            xy = apply_affine(det[..., :2], batch["crop_trans"].to(dev, dt))
            kp_crop = torch.cat([xy, det[..., 2:3]], dim=-1)
        keypoints2d = normalize_crop_keypoints(kp_crop)
        crop = CropInfo(
            center=batch["center"].to(dev, dt),
            scale=batch["scale"].to(dev, dt),
            img_hw=torch.stack([batch["img_h"], batch["img_w"]], dim=-1).to(dev, dt),
            focal=batch["focal_length"].to(dev, dt),
            crop_trans=batch["crop_trans"].to(dev, dt),
        )
        return TTOInputs(
            images=batch["img"].to(dev, dt),
            crop=crop,
            keypoints2d=keypoints2d,
            has_smpl=batch["has_smpl"].to(dev, dt),
            has_pose_3d=batch["has_pose_3d"].to(dev, dt),
        )

    def ground_truth(self, batch: dict[str, Any]) -> P.GroundTruth:
        dev, dt = self.device, self.dtype
        return P.GroundTruth(
            gender=batch["gender"].to(dev),  # dataset codes; the protocol's gender rule picks the bodies
            has_smpl=batch["has_smpl"].to(dev, dt),
            has_pose_3d=batch["has_pose_3d"].to(dev, dt),
            pose=batch["pose"].to(dev, dt) if self.has_mesh_gt else None,
            betas=batch["betas"].to(dev, dt) if self.has_mesh_gt else None,
            S=batch["pose_3d"].to(dev, dt) if self.has_S else None,
        )

    def tto_config(self, method: str):

        c = self.config
        if c.keypoints == "gt" or self.synthetic:
            # the synthetic detector fills both slot groups from the same keypoints (as process's estimators do):
            # the GT slots carry all of them, weighted as in process and in training's inner loop
            weights = LossWeights()
        elif c.keypoints == "openpose":
            weights = LossWeights(openpose_2d=1.0, gt_2d=0.0)
        else:
            weights = LossWeights(openpose_2d=1.0, gt_2d=1.0)
        net = self.nets.aux if (method in ("none", "eft") and c.baseline_net == "aux") else self.nets.main
        if net is None:
            raise ConfigError(f"--baseline-net aux: checkpoint {self.checkpoint.name} has no auxiliary network")
        return TTOConfig(
            schedule=method,  # type: ignore[arg-type]
            scope=c.scope if method != "none" else None,
            grouping=c.grouping,
            group_size=c.batch_size,
            optimizer=c.optimizer if method != "none" else None,
            lr=c.lr if method != "none" else None,
            max_steps=c.steps if method != "none" else None,
            loss_weights=weights,
            chunk_size=max(64, c.batch_size),
            camera=getattr(net, "arch", "cliff"),
            inner_loop=self.inner_loop_of(method),
        ), net

    def steps_of(self, method: str) -> int:
        """The step budget a method runs with (``steps`` of the config, else the schedule's own: 20 for eft, 14 for
        the others; for metahmr/reference the Adam steps after the step-0 update)."""

        phases = resolve_schedule(self.tto_config(method)[0]).phases
        return phases[-1].steps if phases else 0

    def grouping_of(self, method: str) -> str:
        """The grouping a method runs with (the explicit setting, else the schedule's own)."""

        return resolve_schedule(self.tto_config(method)[0]).grouping

    def protocol_of(self, method: str) -> str:
        """How a method's numbers were made, printed beside them (schedule, grouping, steps, keypoints)."""
        if method == "none":
            return "regression"
        grouping = self.grouping_of(method)
        group = f"batch of {self.config.batch_size}" if grouping == "batch" else "per person"
        text = f"{method}: {group}, <= {self.steps_of(method)} steps, {self.config.keypoints} keypoints"
        inner = self.inner_loop_of(method)
        if inner is not None:
            text += (f", inner loop {inner.steps} x {inner.optimizer} lr {inner.lr:g} on the {inner.scope} "
                     f"({inner.loss})")
        return text

    def run_method(self, method: str, inputs: Any, prepared: P.PreparedGT) -> dict[str, np.ndarray]:

        cfg, main = self.tto_config(method)
        # a network meta-trained without the auxiliary net starts its Meta-HMR schedules with a 2D-only inner loop
        needs_aux = method in AUX_METHODS and resolve_schedule(cfg).needs_aux
        aux = self.nets.aux if needs_aux else None
        if needs_aux and self.nets.kind != "metahmr":
            raise ConfigError(
                f"method {method!r} needs Meta-HMR's auxiliary network, but checkpoint {self.checkpoint.name} holds "
                f"a single network ({self.nets.kind}); with it only 'none' and 'eft' are meaningful (--tto none,eft)"
            )
        if needs_aux and aux is None:
            raise ConfigError(
                f"method {method!r} needs an auxiliary network but checkpoint {self.checkpoint.name} has none; "
                "use a Meta-HMR checkpoint or choose --tto none,eft"
            )
        body = self.bodies.neutral
        B = len(inputs)

        n_cols = resolve_schedule(cfg).max_steps + 1  # the value before any update, then one per update
        step_vals = {m: np.full((B, n_cols), np.nan) for m in P.METRICS}

        def callback(step: int, decoded: Any, active: Tensor) -> None:
            # decoded holds every person after min(step, steps_i) updates: a person that stopped early
            # keeps its last prediction, which is what the curve should show for it.
            del active
            if step >= n_cols:
                return
            vals = P.evaluate_vertices(decoded.vertices.detach(), prepared, self.protocol, body)
            for m in P.METRICS:
                step_vals[m][:, step] = vals[m]

        result = run_tto(main, aux, body, inputs, cfg, step_callback=callback)
        final = P.evaluate_vertices(result.vertices.detach(), prepared, self.protocol, body)
        steps = result.steps.detach().cpu().numpy().astype(np.int64)
        out: dict[str, np.ndarray] = {
            **final,  # mpjpe, pa_mpjpe, pve, joint_err, pa_joint_err
            "steps": steps,
            "reproj_before": result.reproj_before.detach().cpu().double().numpy(),
            "reproj_after": result.reproj_after.detach().cpu().double().numpy(),
            "converged": result.converged.detach().cpu().numpy().astype(bool),
            "fell_back": result.fell_back.detach().cpu().numpy().astype(bool),
            "reverted": result.reverted.detach().cpu().numpy().astype(bool),
        }
        # the final numbers are authoritative from the person's last update on
        last_col = np.clip(steps, 0, n_cols - 1)
        for m in P.METRICS:
            arr = step_vals[m]
            for i, k in enumerate(last_col):
                arr[i, k:] = final[m][i]
            out[f"step_{m}"] = _forward_fill(arr)
        return out


def run_evaluation(config: EvalConfig) -> EvalReport:
    """Evaluate ``config.methods`` on ``config.dataset``; writes the report files into ``config.out``.

    Returns:
        the :class:`EvalReport` (per-sample results of every method; ``files`` lists what was written).
    Raises:
        ConfigError, DatasetError, AssetNotFoundError, CheckpointError with a message naming the fix.
    """
    from rich.console import Console
    from torch.utils.data import DataLoader


    progress = WorkProgress(label="eval", unit="samples x methods", enabled=config.progress,
                            console=Console(stderr=True))
    progress.note(f"preparing {config.dataset} (data, body model, networks)")
    ev = _Evaluator(config)
    methods = list(config.methods)
    batches = _batches(ev.n, config.batch_size)

    cached: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    todo: list[int] = []
    for b, (s, e) in enumerate(batches):
        need = False
        for m in methods:
            path = ev.cache_path(m, s, e)
            if config.resume and path.is_file():
                try:
                    with np.load(path) as z:
                        cached[(m, b)] = {k: z[k] for k in z.files}
                    continue
                except (OSError, ValueError) as exc:
                    log.warning("ignoring unreadable cache file %s (%s)", path, exc)
            need = True
        if need:
            todo.append(b)
    from_cache = {m: sum(int(batches[b][1] - batches[b][0]) for (mm, b) in cached if mm == m) for m in methods}

    seconds = dict.fromkeys(methods, 0.0)
    imgnames = ev.imgnames

    t_start = time.perf_counter()
    computed_samples = 0
    if todo:
        loader = DataLoader(ev.dataset, batch_sampler=[list(range(*batches[b])) for b in todo],
                            num_workers=config.num_workers, shuffle=False)
        for m in methods:  # the ETA prices each method by its own samples per second
            progress.add_work(m, sum(batches[b][1] - batches[b][0] for b in todo if (m, b) not in cached), m)
        started: set[str] = set()
        with progress:
            for i, (b, batch) in enumerate(zip(todo, loader, strict=True)):
                s, e = batches[b]
                gt = ev.ground_truth(batch)
                prepared = P.prepare_ground_truth(gt, ev.protocol, ev.bodies)
                inputs = None
                for m in methods:
                    if (m, b) in cached:
                        continue
                    if m not in started:  # one line per method (without a terminal): what runs, and its budget
                        started.add(m)
                        what = ev.protocol_of(m)
                        what = what if what.startswith(f"{m}:") else f"{m}: {what}"
                        progress.note(f"{what} on {progress.work[m].units:.0f} samples")
                    progress.current(f"{m}, batch {i + 1}/{len(todo)}")
                    if inputs is None:
                        inputs = ev.tto_inputs(batch)
                    torch.manual_seed(config.seed + b)
                    t0 = time.perf_counter()
                    res = ev.run_method(m, inputs, prepared)
                    seconds[m] += time.perf_counter() - t0
                    res["sample_index"] = np.arange(s, e, dtype=np.int64)
                    save_npz_atomic(ev.cache_path(m, s, e), res)
                    cached[(m, b)] = res
                    progress.advance(m, e - s, name=f"{m}, batch {i + 1}/{len(todo)}")
                computed_samples += e - s
    elapsed = time.perf_counter() - t_start

    results: dict[str, MethodResult] = {}
    for m in methods:
        parts = [cached[(m, b)] for b in range(len(batches))]
        cat = {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]} if parts else {}
        results[m] = MethodResult(
            method=m,
            sample_index=cat["sample_index"].astype(np.int64),
            values={k: cat[k] for k in ("mpjpe", "pa_mpjpe", "pve", "steps", "reproj_before", "reproj_after",
                                        "converged", "fell_back", "reverted")},
            joint_err=cat["joint_err"],
            pa_joint_err=cat["pa_joint_err"],
            stepwise={mm: cat[f"step_{mm}"] for mm in P.METRICS},
            seconds=seconds[m],
            protocol=ev.protocol_of(m),
        )

    family = None if ev.spec is None else paper_family(ev.protocol, ev.family, ev.spec.name, ev.spec.npz.name,
                                                       ev.n, len(ev.dataset))
    paper = {m: match_paper_result(family, ev.checkpoint, m, config.keypoints) for m in methods}
    report = EvalReport(
        dataset=config.dataset,
        dataset_npz=ev.dataset_label,
        protocol=ev.protocol,
        checkpoint=ev.checkpoint_id,
        keypoints=config.keypoints,
        config=ev.config_dict,
        methods=results,
        joint_names=ev.protocol.joint_names(),
        imgnames=imgnames,
        paper=paper,
        samples_per_second=(computed_samples / elapsed) if computed_samples else float("nan"),
        from_cache=from_cache,
    )
    write_reports(report, ev.out, plots=config.plots)
    return report


def config_from_dict(values: dict[str, Any]) -> EvalConfig:
    """An EvalConfig from plain values (e.g. a config file), unknown keys rejected with the closest name."""

    return apply_overrides(EvalConfig(), values)


__all__ = ["EVAL_DATASET_NAMES", "METHODS", "SYNTHETIC_KEYPOINTS", "EvalConfig", "EvalReport", "config_from_dict",
           "paper_family", "run_evaluation"]
