"""Training recipes: one TOML file per paper run (``train/*.toml``) and their built-in copies.

A recipe is a TOML/JSON file of :class:`TrainConfig` fields (``[loss_weights]`` as a table). The built-in
copies below let ``metahmr train --backbone hrnet`` work from any folder; the files in ``train/`` are the
editable versions and hold the same values (a test checks this).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import apply_overrides, load_config_file
from ..errors import ConfigError
from .config import TrainConfig

__all__ = ["BUILTIN_RECIPES", "DEFAULT_RECIPE_FOR_BACKBONE", "find_recipe", "load_recipe", "recipe_config"]

BUILTIN_RECIPES: dict[str, dict[str, Any]] = {
    # Paper: CLIFF + HRNet-W48, batch 30, 25 epochs; main net from the COCO pose-HRNet, aux = official CLIFF-HR48.
    "cliff_hrnet": {
        "arch": "cliff", "backbone": "hrnet", "batch_size": 30, "epochs": 25, "data": "wo3dpw",
        "outer_lr": 1e-4, "inner_lr": 1e-5, "grouping": "batch", "scope": "head", "aux_mode": "released",
        "syn_occ": True, "seed": 2023, "checkpoint_every": 1000, "out": "runs/cliff_hrnet",
        "init_backbone": "pose_hrnet_w48",
        "init_aux": "cliff_hr48",
    },
    # Paper: CLIFF + ResNet-50, batch 40, 65 epochs; main net from pose_resnet, aux = official CLIFF-Res50.
    "cliff_resnet": {
        "arch": "cliff", "backbone": "resnet", "batch_size": 40, "epochs": 65, "data": "wo3dpw",
        "outer_lr": 1e-4, "inner_lr": 1e-5, "grouping": "batch", "scope": "head", "aux_mode": "released",
        "syn_occ": True, "seed": 2023, "checkpoint_every": 1000, "out": "runs/cliff_resnet",
        "init_backbone": "pose_resnet",
        "init_aux": "cliff_res50",
    },
    # Paper: HMR + ResNet-50 (crop camera), batch 40, 65 epochs; aux = SPIN's hmr.pt.
    "hmr_resnet": {
        "arch": "hmr", "backbone": "resnet", "batch_size": 40, "epochs": 65, "data": "wo3dpw",
        "outer_lr": 1e-4, "inner_lr": 1e-5, "grouping": "batch", "scope": "head", "aux_mode": "released",
        "syn_occ": True, "seed": 2023, "checkpoint_every": 1000, "out": "runs/hmr_resnet",
        "init_backbone": "pose_resnet",
        "init_aux": "spin_hmr",
    },
    # Paper: 5-epoch fine-tune with 3DPW in the mix, from the CLIFF-HRNet meta-training run.
    "finetune_3dpw": {
        "arch": "cliff", "backbone": "hrnet", "batch_size": 30, "epochs": 5, "data": "w3dpw",
        "outer_lr": 1e-4, "inner_lr": 1e-5, "grouping": "batch", "scope": "head", "aux_mode": "released",
        "syn_occ": True, "seed": 2023, "checkpoint_every": 1000, "out": "runs/finetune_3dpw",
        "init_from": "runs/cliff_hrnet/checkpoints/last.pt",
    },
    # The open model: keypoint encoders (main "kpnet", aux "kpnet_small") on the open body, people generated on
    # the fly; both nets are trained from scratch at once (the aux on the ground truth, paper Eq. 5): 2,500 plain
    # steps, then 2,500 meta steps. One adapted copy per group of 8 samples keeps a meta step at a sixth of the
    # per-sample cost on a CPU; the body is posed at its joints and 1,024 surface vertices only. The inner loop is
    # one Adam step of lr 1e-4 on the head: every head weight moves by about 1e-4 whatever the scale of a
    # person's loss (~0.4 % of the weights, ~10 % lower outer loss at the fork); the released SGD step of 1e-5
    # moves them by 1e-6 and leaves the outer loss as it is, and SGD steps large enough to matter overshoot on
    # the people with the largest gradients. Test-time optimisation starts with the same step (the InnerLoop
    # recorded in the checkpoint).
    "open_keypoints": {
        "arch": "cliff", "backbone": "kpnet", "body": "open", "train_vertices": 1024, "data": "synthetic-keypoints",
        "keypoint_evidence": True,
        "batch_size": 64, "max_steps": 5000, "meta_warmup_steps": 2500, "synth_length": 200000, "outer_lr": 3e-4,
        "inner_optimizer": "adam", "inner_lr": 1e-4, "inner_steps": 1, "clip_grad": 1000.0,
        "aux_lr": 3e-4, "grouping": "batch", "group_size": 8, "scope": "head", "aux_mode": "paper", "main_iters": 3,
        "aux_iters": 3, "head_hidden": 512, "head_dropout": 0.0, "augment": False, "syn_occ": False,
        "num_workers": 1, "seed": 2023, "checkpoint_every": 1000, "log_every": 50, "out": "runs/open_keypoints",
    },
}
"""Built-in recipes (the values of ``train/<name>.toml``)."""

DEFAULT_RECIPE_FOR_BACKBONE = {"hrnet": "cliff_hrnet", "resnet": "cliff_resnet", "resnet_tiny": None,
                               "kpnet": "open_keypoints"}


def _repo_train_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "train"


def find_recipe(name_or_path: str) -> tuple[str, dict[str, Any]]:
    """Resolve a recipe: a file path, a name in ``./train`` or the repository's ``train/``, or a built-in name.

    Returns:
        (where it came from, the raw settings).
    Raises:
        ConfigError: unknown recipe (the message lists the built-in names).
    """
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return str(p), load_config_file(p)
    stem = p.stem if p.suffix in (".toml", ".json") else p.name
    for folder in (Path.cwd() / "train", _repo_train_dir()):
        cand = folder / f"{stem}.toml"
        if cand.is_file() and (p.suffix == "" or p.name == cand.name):
            return str(cand), load_config_file(cand)
    if stem in BUILTIN_RECIPES:
        return f"built-in:{stem}", dict(BUILTIN_RECIPES[stem])
    raise ConfigError(f"recipe '{name_or_path}' not found (no such file); use a path to a TOML file or one of the "
                      f"built-in recipes: {', '.join(BUILTIN_RECIPES)}.")


def load_recipe(name_or_path: str) -> dict[str, Any]:
    """The raw settings of a recipe (see :func:`find_recipe`)."""
    return find_recipe(name_or_path)[1]


def recipe_config(recipe: str | None = None, backbone: str | None = None, overrides: dict[str, Any] | None = None,
                  ) -> tuple[TrainConfig, str]:
    """TrainConfig from defaults < recipe < overrides.

    With no recipe, ``backbone`` picks the paper recipe (hrnet -> cliff_hrnet, resnet -> cliff_resnet); with
    neither, the CLIFF-HRNet recipe is used.

    Returns:
        (config, recipe source).
    """
    if recipe is None:
        name = DEFAULT_RECIPE_FOR_BACKBONE.get(backbone or "hrnet", "cliff_hrnet")
        if name is None:  # resnet_tiny: toy runs start from the defaults
            cfg = TrainConfig()
            source = "defaults"
        else:
            source, raw = find_recipe(name)
            cfg = apply_overrides(TrainConfig(), raw)
    else:
        source, raw = find_recipe(recipe)
        cfg = apply_overrides(TrainConfig(), raw)
    extra = {k: v for k, v in (overrides or {}).items() if v is not None}
    if backbone is not None:
        extra.setdefault("backbone", backbone)
    cfg = apply_overrides(cfg, extra)
    return cfg, source
