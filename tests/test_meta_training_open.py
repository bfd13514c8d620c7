"""Meta-training of the open model: the recipe's inner loop adapts, and training and test time share it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from metahmr_cli.assets import body_dir
from metahmr_cli.body.smpl import load_mean_params
from metahmr_cli.estimator import Estimator
from metahmr_cli.evaluation import EvalConfig, run_evaluation
from metahmr_cli.models import load_networks
from metahmr_cli.process_config import ProcessConfig
from metahmr_cli.training import (
    Trainer,
    meta_step,
    prepare_batch,
    probe_inner_loop,
    recipe_config,
    training_body,
    training_dataset,
)
from metahmr_cli.tto import InnerLoop, inner_phase, resolve_schedule

REPO = Path(__file__).resolve().parents[1]
OPEN_MODEL = REPO / "metahmr_cli" / "models" / "open_data" / "metahmr_open_keypoints.pt"
MIN_REL_WEIGHT_CHANGE = 1e-3
"""The least relative change ‖w′ − w‖/‖w‖ of the head weights that the recipe's inner step must make (the
released SGD step of lr 1e-5 makes about 3e-7 on the open model: meta steps that are plain steps)."""


def test_the_recipes_inner_step_adapts_the_weights():
    """The open recipe's inner loop, on the shipped open model and a batch of its training people: the head
    weights move by at least MIN_REL_WEIGHT_CHANGE (over 1000x the released step), the outer loss at the adapted
    weights falls by over 1 % and the meta gradient points elsewhere than the plain one. The released step, for
    contrast, changes neither."""
    cfg, _ = recipe_config("open_keypoints", overrides={"batch_size": 16})
    assert cfg.inner_loop() == InnerLoop(optimizer="adam", lr=1e-4, steps=1, scope="head", loss="expl")
    nets = load_networks(OPEN_MODEL, mean_params=load_mean_params(body_dir(cfg.body)))
    body = training_body(cfg)
    data = training_dataset(dataclasses.replace(cfg, seed=cfg.seed + 11))  # people the model was not trained on
    batch = prepare_batch(next(iter(DataLoader(data, batch_size=16))), body, "cpu")
    recipe = probe_inner_loop(meta_step(cfg, nets.main.train(), nets.aux.train(), body), batch)
    released = probe_inner_loop(meta_step(dataclasses.replace(cfg, inner_optimizer="sgd", inner_lr=1e-5),
                                          nets.main, nets.aux, body), batch)
    assert recipe.rel_weight_change[0] >= MIN_REL_WEIGHT_CHANGE
    assert recipe.rel_weight_change[0] >= 1000 * released.rel_weight_change[0]
    assert recipe.rel_outer_change[0] <= -0.01
    assert recipe.grad_cosine < 0.95
    assert abs(released.rel_outer_change[0]) < 1e-3 and released.grad_cosine > 0.999
    assert recipe.outer[0] == pytest.approx(released.outer[0], rel=1e-6)  # the same starting point


def test_training_and_test_time_use_one_inner_loop(tmp_path):
    """The trainer's meta step runs the InnerLoop object it records; the checkpoints carry it; process (the
    estimator) and eval start their default TTO with it."""
    cfg, _ = recipe_config("open_keypoints", overrides={
        "max_steps": 2, "meta_warmup_steps": 1, "batch_size": 4, "synth_length": 8, "num_workers": 0,
        "progress": False, "log_every": 1, "checkpoint_every": 1000, "out": str(tmp_path / "run"),
        "export": str(tmp_path / "model.pt"), "device": "cpu"})
    trainer = Trainer(cfg)
    result = trainer.run()
    inner = trainer.inner_loop
    assert trainer.step_module.cfg.inner is inner  # the object the meta steps ran
    assert inner == cfg.inner_loop()
    exported = load_networks(tmp_path / "model.pt")
    assert exported.inner_loop == inner
    assert load_networks(result.last_checkpoint).inner_loop == inner

    # process: the estimator's TTO starts with the networks' own inner loop
    body = training_body(dataclasses.replace(cfg, train_vertices=None))
    est = Estimator(ProcessConfig(device="cpu"), networks=exported, body=body, detector=object(),
                    keypoints=object())
    est.setup()
    assert est.config.tto.inner_loop == inner
    phases = resolve_schedule(est.config.tto).phases
    assert phases[0] == inner_phase(inner)
    assert (phases[0].optimizer, phases[0].lr, phases[0].steps) == ("adam", 1e-4, 1)

    # eval: the Meta-HMR schedule runs with it and says so
    report = run_evaluation(EvalConfig(dataset="synthetic-keypoints", body="open",
                                       checkpoint=str(tmp_path / "model.pt"), methods=("metahmr",), steps=1,
                                       max_samples=2, batch_size=2, device="cpu", out=str(tmp_path / "eval"),
                                       progress=False, plots=False))
    assert "inner loop 1 x adam lr 0.0001 on the head (expl)" in report.methods["metahmr"].protocol
