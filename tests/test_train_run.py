"""End-to-end training runs on the synthetic dataset with the tiny backbone (CPU).

- a short run lowers the outer loss and its checkpoint loads through ``models.load_networks`` and runs TTO;
- a run killed hard (SIGKILL) and resumed continues with bit-identical losses (deterministic mode), and a
  second ``--resume`` of the run while it is live is refused;
- two gloo processes with batch b give the same update as one process with batch 2b.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from metahmr_cli.body.smpl import load_body_model
from metahmr_cli.config import config_to_dict
from metahmr_cli.errors import InputError
from metahmr_cli.models import load_networks, load_torch_file
from metahmr_cli.training import TrainConfig, config_for_resume, read_log, train
from metahmr_cli.tto import TTOConfig, TTOInputs, run_tto

TERMS = ["outer", "term/keypoint_2d", "term/keypoint_3d", "term/vertices", "term/pose", "term/betas",
         "term/camera", "grad_norm"]


def _cfg(synth_dataset: Path, standin_dir: Path, out: Path, **kw) -> TrainConfig:
    base = dict(backbone="resnet_tiny", body=str(standin_dir), data=str(synth_dataset / "synth_train.npz"),
                batch_size=2, epochs=None, max_steps=10, main_iters=1, aux_iters=1, syn_occ=False, num_workers=0,
                device="cpu", progress=False, deterministic=True, out=str(out), checkpoint_every=1000)
    base.update(kw)
    return TrainConfig(**base)


_PYCACHE: list[str] = []
"""The bytecode cache folder of this module's child processes (made once, removed when the module is done)."""


@pytest.fixture(scope="module", autouse=True)
def _child_pycache():
    folder = tempfile.mkdtemp(prefix="metahmr-test-pycache-")
    _PYCACHE.append(folder)
    yield
    _PYCACHE.remove(folder)
    shutil.rmtree(folder, ignore_errors=True)


def _child_env() -> dict[str, str]:
    """Environment of child processes: one thread, and a private bytecode cache (fast start; ~60 MB, removed with
    the module)."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if _PYCACHE:
        env.setdefault("PYTHONPYCACHEPREFIX", _PYCACHE[-1])
    return env


@pytest.fixture(scope="module")
def short_run(synth_dataset, standin_dir, tmp_path_factory):
    """A 120-step run; its folder (11 checkpoints, about 260 MB) is removed when the module is done."""
    out = tmp_path_factory.mktemp("runs") / "short"
    cfg = _cfg(synth_dataset, standin_dir, out, max_steps=120, outer_lr=2e-4, augment=False, checkpoint_every=60,
               deterministic=False)
    threads = torch.get_num_threads()
    try:
        result = train(cfg)
    finally:
        torch.set_num_threads(threads)
    yield cfg, result
    shutil.rmtree(out.parent, ignore_errors=True)


def test_short_run_lowers_the_outer_loss(short_run):
    _, result = short_run
    losses = [r["outer"] for r in result.history]
    assert len(losses) == 120 and all(np.isfinite(losses))
    first, last = float(np.mean(losses[:20])), float(np.mean(losses[-20:]))
    assert last < 0.9 * first, (first, last)
    rows = read_log(result.log_csv)
    assert [int(r["step"]) for r in rows] == list(range(1, 121))
    assert rows[-1]["outer"] == pytest.approx(losses[-1])


def test_checkpoint_loads_and_runs(short_run, standin_dir):
    cfg, result = short_run
    ckpt = result.last_checkpoint
    assert ckpt is not None and ckpt.name == "step_00000120.pt"
    assert (ckpt.parent / "last.pt").samefile(ckpt)
    raw = load_torch_file(ckpt)
    for key in ("model", "model_aux", "optimizer", "epoch", "batch_idx", "total_step_count", "rng", "config",
                "sampler"):
        assert key in raw
    assert raw["total_step_count"] == 120 and raw["config"]["max_steps"] == 120
    assert len(raw["optimizer"]["param_groups"]) == 2
    assert raw["optimizer"]["param_groups"][1]["lr"] == pytest.approx(1e-6)

    nets = load_networks(ckpt, device="cpu")
    assert nets.kind == "metahmr" and nets.aux is not None
    assert nets.main.backbone_name == "resnet_tiny" and nets.main.n_iter == 1
    first = load_networks(ckpt.parent / "step_00000060.pt", device="cpu")
    moved = max(float((a - b).detach().abs().max()) for a, b in zip(nets.main.parameters(), first.main.parameters(),
                                                            strict=True))
    assert moved > 1e-5  # the two checkpoints hold different (trained) weights

    # the loaded networks run the Meta-HMR test-time optimisation on a few synthetic crops
    from metahmr_cli.data import HMRDataset
    from metahmr_cli.training.meta_step import prepare_batch

    body = load_body_model(standin_dir, "neutral")
    ds = HMRDataset(Path(cfg.data).parent / "synth_test.npz")
    items = torch.utils.data.default_collate([ds[i] for i in range(3)])
    batch = prepare_batch(items, body, "cpu")
    res = run_tto(nets.main, nets.aux, body, TTOInputs(batch.images, batch.crop, batch.keypoints2d), TTOConfig(
        max_steps=2))
    assert res.vertices.shape == (3, body.num_vertices, 3) and torch.isfinite(res.vertices).all()
    assert (res.steps >= 1).all()


_CHILD = (
    "import json, sys\n"
    "from metahmr_cli.config import apply_overrides\n"
    "from metahmr_cli.training import TrainConfig, config_for_resume, train\n"
    "arg = json.loads(sys.argv[1])\n"
    "cfg = config_for_resume(arg['run']) if 'run' in arg else apply_overrides(TrainConfig(), arg)\n"
    "train(cfg)\n"
)


def test_killed_and_resumed_run_is_identical(synth_dataset, standin_dir, tmp_path):
    kw = dict(max_steps=10, batch_size=4, checkpoint_every=3)  # 6 batches per epoch: crosses an epoch end
    ref_cfg = _cfg(synth_dataset, standin_dir, tmp_path / "ref", **kw)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = {int(r["step"]): r for r in train(ref_cfg).history}
    finally:
        torch.set_num_threads(threads)

    cfg = _cfg(synth_dataset, standin_dir, tmp_path / "killed", **kw)
    env = _child_env()
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(config_to_dict(cfg))], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log_csv = tmp_path / "killed" / "train_log.csv"
    killed_after = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if log_csv.is_file():
            rows = read_log(log_csv)
            if rows and rows[-1]["step"] >= 4:
                killed_after = int(rows[-1]["step"])
                os.kill(proc.pid, signal.SIGSTOP)  # live (it holds the run folder), but writes nothing more
                try:
                    logged = len(read_log(log_csv))
                    # a second resume of the live run is refused before it reads or writes anything
                    with pytest.raises(InputError, match=r"Run folder .*killed is in use by another metahmr run "
                                                         rf"\(pid {proc.pid}\).*--wait"):
                        train(config_for_resume(tmp_path / "killed"))
                    assert len(read_log(log_csv)) == logged
                finally:
                    os.kill(proc.pid, signal.SIGKILL)
                break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    assert 4 <= killed_after < 10

    resumed_from = config_for_resume(tmp_path / "killed")
    start = int(load_torch_file(resumed_from.resume)["total_step_count"])
    assert 3 <= start <= killed_after
    done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps({"run": str(tmp_path / "killed")})],
                          env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]

    rows = read_log(log_csv)
    assert [int(r["step"]) for r in rows] == list(range(1, 11))  # rows after the checkpoint were replaced
    for r in rows:
        for k in TERMS:
            assert r[k] == reference[int(r["step"])][k], (int(r["step"]), k)


def test_two_processes_equal_one_process_with_the_global_batch(synth_dataset, standin_dir, tmp_path, monkeypatch):
    for k, v in _child_env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    kw = dict(max_steps=2, checkpoint_every=1, optimizer="sgd", outer_lr=1e-3, grouping="sample",
              aux_mode="paper", aux_lr=1e-3, net_mode="eval", aux_net_mode="eval")
    one = _cfg(synth_dataset, standin_dir, tmp_path / "one", batch_size=4, **kw)
    two = _cfg(synth_dataset, standin_dir, tmp_path / "two", batch_size=2, nproc=2, **kw)
    # the one-process run also starts in a fresh process with the workers' environment (one thread), so that both
    # sides use the same kernels whatever this test process was started with (OMP_NUM_THREADS, imports)
    done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(config_to_dict(one))], env=_child_env(),
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert train(two) is None  # the workers ran in their own processes

    def state(run: str, step: int) -> dict[str, torch.Tensor]:
        obj = load_torch_file(tmp_path / run / "checkpoints" / f"step_{step:08d}.pt")
        return {**{f"main.{k}": v for k, v in obj["model"].items()},
                **{f"aux.{k}": v for k, v in obj["model_aux"].items()}}

    a1, a2, b2 = state("one", 1), state("one", 2), state("two", 2)
    update = max(float((a2[k] - a1[k]).abs().max()) for k in a1 if a1[k].is_floating_point())
    assert update > 1e-4  # the compared update is not vacuous
    for k in a2:
        if a2[k].is_floating_point():
            # float32 reductions in another order (per-process batches, all-reduce, the thread count this test
            # started with) differ by up to ~n * 6e-8 relative to the summed terms, n ~ 1e4 for a conv weight
            # gradient: 1e-3 of the two steps' update. Averaging wrongly across processes would be off by ~100 %.
            tol = 1e-3 * float((a2[k] - a1[k]).abs().max()) + 1e-7
            torch.testing.assert_close(b2[k], a2[k], rtol=0, atol=tol, msg=k)
    la, lb = read_log(tmp_path / "one" / "train_log.csv"), read_log(tmp_path / "two" / "train_log.csv")
    for ra, rb in zip(la, lb, strict=True):
        # step 1 starts from identical weights; step 2 from weights equal up to the tolerance above
        rel = 1e-5 if int(ra["step"]) == 1 else 1e-3
        assert rb["outer"] == pytest.approx(ra["outer"], rel=rel)
        assert rb["aux"] == pytest.approx(ra["aux"], rel=rel)
