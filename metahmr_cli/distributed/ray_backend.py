"""``metahmr process --backend ray``: the inputs spread over the workers of a Ray cluster with Ray Data, and the same
outputs as a local run (result files, renders, exports, ``manifest.jsonl``, ``summary.json``) and the same resume.

The design is Ray Data's batch-inference pattern::

    driver: list inputs -> resume check (manifest + settings fingerprint) -> units of work (rows of paths)
        -> ray.data.from_items(units).map_batches(_UnitWorker, ActorPoolStrategy(size=workers))
    worker (an actor): loads the models once (Pipeline.setup in __init__), then per unit Pipeline.process_units:
        the runner's own per-input code writes the result files atomically under --out and returns the records
    driver: each unit's records -> manifest.jsonl (only the driver writes it and summary.json, under the output
        lock), one progress display, per-worker timings in summary.json

- A unit is a batch of images or one whole video (a video stays on one worker, so tracking, warm starts and
  smoothing are those of a local run; its per-frame resume covers a retry). Rows carry paths, never pixels.
- ``--out`` must be the same folder on every machine of the cluster (a shared file system): the driver writes a
  token there and every node checks it sees it before any work starts.
- Faults: a worker that dies (killed, out of memory, crashed) is restarted by Ray and its unit retried
  (``max_task_retries``); after ``RaySettings.max_retries`` retries the unit's inputs are recorded as failed. An
  input that fails (a bad file) is recorded as failed as in a local run and never retried. A killed driver leaves
  only finished inputs in the manifest: the same command processes what is missing. Temporary files of workers that
  died are removed when the run ends.
- CUDA is touched only inside the workers: the driver resolves the settings on the CPU, and the settings
  fingerprint (which names the workers' device type) comes from a probe task on a worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import secrets
import socket
import time
import uuid
import warnings as warnings_module
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from metahmr_cli import __version__
from metahmr_cli.config import config_to_dict
from metahmr_cli.distributed.settings import RaySettings
from metahmr_cli.errors import ConfigError, InputError, MetaHMRError
from metahmr_cli.files import clean_temp_files, temp_path_for
from metahmr_cli.io.outdir import DiskFullError, OutputLock, check_output_folder
from metahmr_cli.io.sources import InputItem, expand_inputs
from metahmr_cli.io.writers import DONE_STATUSES, Manifest, ManifestRecord, write_summary
from metahmr_cli.pipeline import Pipeline, RunReport, count_processed, new_totals
from metahmr_cli.pipeline.records import _reason, progress_units
from metahmr_cli.process_config import STAGES, ProcessConfig
from metahmr_cli.progress import WorkProgress

logger = logging.getLogger(__name__)

__all__ = ["RayRunner", "check_shared_folder", "init_ray", "plan_units", "worker_plan"]

_INSTALL_HINT = "pip install 'metahmr[ray]' (scripts/bootstrap.sh --dev installs it)"
_RAY_LOGS = "/tmp/ray/session_latest/logs"


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is the part this backend needs
    except ImportError as exc:
        raise ConfigError(f"--backend ray needs Ray Data, which is not installed ({exc}): {_INSTALL_HINT}.") from exc
    return ray


# ------------------------------------------------------------------------------------------------ plan


def plan_units(items: list[Any], todo: list[int], *, workers: int, batch_size: int,
               images_per_unit: int | None = None) -> list[list[int]]:
    """Units of work: each video alone, the images in runs of ``images_per_unit`` (default: ``batch_size``, fewer
    when there are too few images to give each of the ``workers`` some), in input order.

    Args:
        items: the inputs of the run (:class:`~metahmr_cli.io.sources.InputItem`).
        todo: indices into ``items`` of the inputs to process.
    Returns:
        Lists of indices into ``items``; videos first, so that the longest units start first.
    """
    videos = [[i] for i in todo if items[i].kind == "video"]
    images = [i for i in todo if items[i].kind != "video"]
    size = images_per_unit or max(1, min(batch_size, math.ceil(len(images) / max(workers, 1))))
    return videos + [images[k:k + size] for k in range(0, len(images), size)]


def worker_plan(settings: RaySettings, device: str, cluster: dict[str, float]) -> tuple[int, float, float]:
    """Workers, GPUs per worker and CPUs per worker for a cluster with ``cluster`` resources ({"CPU": n, "GPU": m}).

    Raises:
        ConfigError: the settings ask for more than the cluster has, or contradict ``device``.
    """
    cpus, gpus = float(cluster.get("CPU", 0.0)), float(cluster.get("GPU", 0.0))
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device {device} with --backend ray: every worker uses the GPU Ray assigns to it; use "
                          "--device auto or cuda (or cpu), and --gpus-per-worker to say how many.")
    gpw = settings.gpus_per_worker
    if gpw is None:
        gpw = 1.0 if gpus >= 1 and device != "cpu" else 0.0
    if device == "cpu" and gpw > 0:
        raise ConfigError(f"--device cpu with --gpus-per-worker {gpw:g}: the workers would hold GPUs they do not use; "
                          "drop one of the two.")
    if device == "cuda" and gpw == 0:
        raise ConfigError("--device cuda with --backend ray needs GPUs for the workers, but "
                          + ("the Ray cluster has none" if gpus == 0 else "--gpus-per-worker is 0")
                          + "; use --device auto or cpu, or a cluster with GPUs.")
    cpw = float(settings.cpus_per_worker)
    fit = math.floor(cpus / cpw + 1e-9)
    if gpw > 0:
        fit = min(fit, math.floor(gpus / gpw + 1e-9))
    where = f"the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs"
    if settings.workers is None:
        if fit < 1:
            raise ConfigError(f"one worker needs {cpw:g} CPUs and {gpw:g} GPUs, but {where}; lower --cpus-per-worker "
                              "or --gpus-per-worker, or add machines to the cluster.")
        return fit, gpw, cpw
    n = settings.workers
    if n * cpw > cpus + 1e-9:
        raise ConfigError(f"--workers {n} needs {n * cpw:g} CPUs ({n} x --cpus-per-worker {cpw:g}), but {where}; use "
                          f"--workers {max(fit, 1)} or fewer, or a smaller --cpus-per-worker.")
    if gpw > 0 and n * gpw > gpus + 1e-9:
        raise ConfigError(f"--workers {n} needs {n * gpw:g} GPUs ({n} x --gpus-per-worker {gpw:g}), but {where}; use "
                          f"--workers {max(fit, 1)} or fewer, or a smaller --gpus-per-worker.")
    return n, gpw, cpw


# ------------------------------------------------------------------------------------------------ rows


def _encode_items(items: list[Any], previous: dict[str, ManifestRecord] | None = None) -> str:
    """A unit's inputs, each with its earlier run's record (or null), as one ASCII JSON string (a Ray Data column);
    paths that are not UTF-8 survive as escapes."""
    previous = previous or {}
    return json.dumps([[str(it.path), it.kind, it.stem, it.source,
                        previous[it.stem].to_dict() if it.stem in previous else None] for it in items],
                      ensure_ascii=True, default=str)


def _decode_items(text: str) -> tuple[list[Any], dict[str, ManifestRecord]]:
    """The inputs of a unit and the earlier records of those that have one (:func:`_encode_items`)."""
    items, previous = [], {}
    for p, k, s, src, prev in json.loads(text):
        items.append(InputItem(path=Path(p), kind=k, stem=s, source=src))
        if prev is not None:
            previous[s] = ManifestRecord.from_dict(prev)
    return items, previous


# ------------------------------------------------------------------------------------------------ worker side


def check_shared_folder(out: str, token: str, nonce: str) -> str | None:
    """Whether ``out`` on this machine is the driver's output folder: None when it holds the file ``token`` with
    ``nonce`` in it (the driver wrote it there) and takes a new file, else the reason, naming the machine."""
    host = socket.gethostname()
    folder = Path(out)
    if not folder.is_dir():
        return f"{out} does not exist on {host}"
    try:
        text = (folder / token).read_text(encoding="ascii")
    except FileNotFoundError:
        return f"{out} on {host} is another folder than the driver's (the file the driver wrote there is missing)"
    except OSError as exc:
        return f"{out} cannot be read on {host} ({exc.strerror or exc})"
    if text.strip() != nonce:
        return f"{out} on {host} is another folder than the driver's (it holds another run's check file)"
    probe = temp_path_for(folder / "ray-write-check")
    try:
        probe.write_bytes(b"metahmr")
        probe.unlink()
    except OSError as exc:
        return f"{out} is not writable on {host} ({exc.strerror or exc})"
    return None


def _probe(config: ProcessConfig, stages: dict[str, Any]) -> dict[str, Any]:
    """Load the models as a worker does and return what the driver needs: the settings fingerprints (they name the
    workers' device type), the model identities, or the error a worker would raise."""
    try:
        pipe = Pipeline(config, progress=False, **stages)
        pipe.setup()
    except Exception as exc:  # noqa: BLE001 - reported by the driver, naming the machine
        return {"error": _reason(exc), "host": socket.gethostname()}
    est = pipe.estimator
    return {"settings": pipe.settings_fingerprint(), "video": pipe.video_fingerprint(), "device": str(pipe.device),
            "prefetch": pipe.prefetch_depth, "tier": est.tier, "body_model": est.body_name,
            "checkpoint": est.checkpoint_id, "metahmr_version": __version__, "host": socket.gethostname()}


class _UnitWorker:
    """A Ray Data actor: loads the models once, then processes units of work (rows ``unit``, ``items``) into the
    shared output folder and returns each unit's records and timings as JSON (rows ``unit``, ``result``)."""

    def __init__(self, config: ProcessConfig, stages: dict[str, Any], out: str, token: str, nonce: str) -> None:
        problem = check_shared_folder(out, token, nonce)
        if problem is not None:
            raise InputError(f"--out must be a folder every Ray worker can reach: {problem}.")
        t0 = time.perf_counter()
        self.out = out
        self.pipeline = Pipeline(config, progress=False, **stages)
        self.pipeline.setup()
        self.setup_seconds = time.perf_counter() - t0
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.warnings_sent = 0

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        units, results = [], []
        for unit, payload in zip(batch["unit"], batch["items"], strict=True):
            units.append(int(unit))
            results.append(json.dumps(self._process(*_decode_items(str(payload))), ensure_ascii=True, default=str))
        return {"unit": units, "result": results}

    def _process(self, items: list[Any], previous: dict[str, ManifestRecord]) -> dict[str, Any]:
        t0 = time.perf_counter()
        started_at = time.time()
        records: list[ManifestRecord] = []
        fatal = None
        try:
            self.pipeline.process_units(items, self.out, records, previous)
        except DiskFullError as exc:
            fatal = str(exc)
        except Exception as exc:  # noqa: BLE001 - a unit that raises fails its unfinished inputs, never retried
            logger.warning("unit of %d inputs failed", len(items), exc_info=True)
            done = {r.key for r in records}
            records += [ManifestRecord(input=str(it.path), key=it.stem, kind=it.kind, status="failed",
                                       reason=_reason(exc)) for it in items if it.stem not in done]
        pipe = self.pipeline
        warnings = pipe.warnings[self.warnings_sent:]
        self.warnings_sent = len(pipe.warnings)
        return {"records": [r.to_dict() for r in records], "worker": self.worker, "seconds": time.perf_counter() - t0,
                "setup_seconds": self.setup_seconds, "started_at": started_at, "finished_at": time.time(),
                "warnings": warnings,
                "renders_disabled": pipe.render_disabled_reason, "fatal": fatal}


# ------------------------------------------------------------------------------------------------ driver


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail at once, with the fix, when nothing accepts connections at ``HOST:PORT`` (Ray would retry for a minute)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
    raise InputError(f"--ray-address {address}: no Ray cluster answers there ({why}). Start its head with "
                     "`ray start --head --port PORT` on that machine (and `ray start --address=HEAD:PORT` on the "
                     "others), check the address, or leave out --ray-address to run on this machine.")


def init_ray(ray: Any, attempts: int = 5, **kwargs: Any) -> None:
    """``ray.init(**kwargs)``, tried again when a local instance's processes did not register in time: Ray waits 30 s
    for them, which a heavily loaded machine can exceed."""
    for attempt in range(1, attempts + 1):
        try:
            ray.init(**kwargs)
            return
        except Exception as exc:
            if "timed out during startup" not in str(exc) or attempt == attempts:
                raise
            logger.warning("Ray did not start in time (%s); starting it again (%d of %d)", exc, attempt + 1, attempts)
            ray.shutdown()


def _connect(ray: Any, address: str | None) -> bool:
    """Connect this process to Ray (a new local instance without ``address``); False when it already was, in which
    case that connection is used and left open."""
    if address not in (None, "auto"):
        _check_reachable(address)
    if ray.is_initialized():
        return False
    try:
        if address is None:
            init_ray(ray, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError or plain Exception here
        where = "a local Ray instance could not be started" if address is None else \
            f"--ray-address {address}: could not join the Ray cluster"
        raise InputError(f"{where} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}). With "
                         "--ray-address auto, start Ray on this machine first (`ray start --head`, or `ray start "
                         "--address=HEAD:PORT` to join a cluster); without --ray-address, metahmr starts one here."
                         ) from exc
    return True


def _user_error(exc: BaseException) -> BaseException:
    """The metahmr error inside an exception Ray raised for a worker (RayTaskError wraps it), else ``exc``."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, MetaHMRError):
            return e
        stack += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return exc


class RayRunner:
    """Runs ``metahmr process`` on a Ray cluster (``config.backend == "ray"``, settings in ``config.ray``).

    Args:
        config: the run settings, as for :class:`~metahmr_cli.pipeline.Pipeline`.
        detector, keypoints, networks, body, renderer: injected stages (see :class:`Pipeline`); they are pickled to
            every worker.
        progress: show the run's progress (images and frames done / total, ETA), one display for the run.
        console: rich console for progress and messages.

    Example::

        cfg = ProcessConfig(inputs=["photos/"], out=Path("/shared/results"), backend="ray",
                            ray=RaySettings(address="auto", workers=8))
        report = RayRunner(cfg).run()
    """

    def __init__(self, config: ProcessConfig, *, detector: Any = None, keypoints: Any = None, networks: Any = None,
                 body: Any = None, renderer: Any = None, progress: bool = True, console: Any = None) -> None:
        # the driver's own device is not the workers': only they need CUDA (checked by worker_plan)
        dataclasses.replace(config, device="cpu").validate()
        self.config = config
        self.stages = {k: v for k, v in {"detector": detector, "keypoints": keypoints, "networks": networks,
                                         "body": body, "renderer": renderer}.items() if v is not None}
        self.progress = progress
        self.console = console

    def _say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            logger.info(text)

    def run(self) -> RunReport:
        """Process every input on the cluster; returns the counts per status and the exit code (0 all ok, 1 some
        failed), as :meth:`Pipeline.run`.

        Raises:
            ConfigError: Ray is not installed, or the worker settings do not fit the cluster.
            InputError: no usable input, an output folder that cannot be written or that some worker cannot
                reach, an unreachable ``--ray-address``.
            DiskFullError: the disk filled up: finished inputs are kept and recorded, the rest is not started.
        """
        cfg = self.config
        ray = _import_ray()
        items = expand_inputs(cfg.inputs, recursive=cfg.recursive, report_problems=True)
        # the driver resolves the tier and checks the files on the CPU (CUDA is for the workers)
        driver = Pipeline(dataclasses.replace(cfg, device="cpu", backend="local"), progress=False,
                          console=self.console, **{k: v for k, v in self.stages.items() if k != "renderer"})
        driver.check_assets()
        out = Path(os.path.abspath(check_output_folder(cfg.out)))
        connected_here = _connect(ray, cfg.ray.address)
        try:
            workers, gpw, cpw = worker_plan(cfg.ray, cfg.device, ray.cluster_resources())
            with OutputLock(out, wait=cfg.wait, say=self._say):
                return self._run_locked(ray, driver, items, out, workers, gpw, cpw)
        finally:
            if connected_here:
                ray.shutdown()

    def _worker_config(self, driver: Pipeline, out: Path) -> ProcessConfig:
        """The workers' settings: the driver's tier, body, detector and keypoint choices (so that every machine makes
        the same ones), the user's device, and paths made absolute (a worker does not run in the driver's folder).
        A checkpoint left to the tier stays unset: each machine finds it where it is installed (its identity, name
        and content hash, is what the settings fingerprint records)."""
        cfg = self.config
        resolved = driver.config

        def absolute(p: Any) -> Any:
            return None if p is None else Path(os.path.abspath(Path(p).expanduser()))

        def absolute_if_file(name: str | None) -> str | None:
            return str(absolute(name)) if name is not None and Path(name).expanduser().exists() else name

        return dataclasses.replace(
            cfg, out=out, model=driver.tier if driver.tier in ("open", "paper") else cfg.model,
            body=resolved.body if resolved.body in ("smpl", "open", "standin") else str(absolute(resolved.body)),
            detector=absolute_if_file(resolved.detector), keypoints=resolved.keypoints,
            keypoints_model=absolute_if_file(cfg.keypoints_model), det_conf=resolved.det_conf,
            min_box=resolved.min_box, checkpoint=absolute(cfg.checkpoint), weights=absolute(cfg.weights),
            boxes_json=absolute(cfg.boxes_json), keypoints_json=absolute(cfg.keypoints_json), backend="local",
            wait=False)

    def _check_nodes(self, ray: Any, out: Path, token: str, nonce: str) -> None:
        """Every alive node of the cluster sees the driver's output folder (the token file in it)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # retried like a unit of work when its process dies (Ray's memory monitor kills tasks on a node that runs low)
        check = ray.remote(num_cpus=0, max_retries=self.config.ray.max_retries)(check_shared_folder)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        refs = [check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(out), token, nonce) for n in nodes]
        try:
            answers = ray.get(refs)
        except Exception as exc:  # noqa: BLE001 - a node whose check died every time
            raise MetaHMRError(f"the Ray cluster could not check that it sees --out {out}: {type(exc).__name__}: "
                               f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from exc
        problems = [p for p in answers if p is not None]
        if problems:
            raise InputError(f"--out {out} must be one folder that every machine of the Ray cluster reaches at the "
                             f"same path (a shared file system such as NFS): {'; '.join(problems)}. Mount it there on "
                             "every machine, or choose a shared --out.")

    def _run_locked(self, ray: Any, driver: Pipeline, items: list[Any], out: Path, workers: int, gpw: float,
                    cpw: float) -> RunReport:
        clean_temp_files(out)  # no other run writes here (the lock): every temporary file is a leftover
        token_path = temp_path_for(out / "ray-shared-check")  # a temporary name: a killed driver's is cleaned up
        nonce = secrets.token_hex(16)
        token_path.write_text(nonce, encoding="ascii")
        try:
            self._check_nodes(ray, out, token_path.name, nonce)
            worker_cfg = self._worker_config(driver, out)
            try:
                probe_task = ray.remote(num_cpus=cpw, num_gpus=gpw, max_retries=self.config.ray.max_retries)(_probe)
                probe = ray.get(probe_task.remote(worker_cfg, self.stages))
            except Exception as exc:  # noqa: BLE001 - e.g. the worker could not unpickle an injected stage
                raise MetaHMRError(f"a Ray worker could not start: {type(exc).__name__}: "
                                   f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}") from exc
            if "error" in probe:
                raise MetaHMRError(f"a Ray worker on {probe['host']} cannot load the models: {probe['error']}")
            driver.use_fingerprints(probe["settings"], probe["video"])
            return self._execute(ray, driver, worker_cfg, probe, items, out, workers, gpw, cpw, token_path.name,
                                 nonce)
        finally:
            with contextlib.suppress(OSError):
                token_path.unlink()

    def _execute(self, ray: Any, driver: Pipeline, worker_cfg: ProcessConfig, probe: dict[str, Any],
                 items: list[Any], out: Path, workers: int, gpw: float, cpw: float, token: str,
                 nonce: str) -> RunReport:
        """Resume check, units of work, the workers, then the manifest and ``summary.json``."""
        cfg = self.config
        run_id = uuid.uuid4().hex[:12]
        manifest = Manifest(out, run_id=run_id)
        started = time.time()
        order = [it.stem for it in items]
        tally = _Tally(time.perf_counter())
        # the run's one progress display, priced as a local run's (images and frames, people per unit)
        progress = WorkProgress(label="process (ray)", unit="images+frames", enabled=self.progress,
                                console=self.console)
        for it in items:
            progress.add_work(it.stem, progress_units(it, driver.config), "frame" if it.kind == "video" else "image")
        # finished inputs are skipped here; an input whose results only lack exports goes to a worker with its
        # earlier record, and the worker writes them from the stored results (the driver loads no model)
        resolved = driver.resume_records(items, manifest.previous, out)
        for rec in resolved:
            if rec is not None:
                manifest.add(rec)
        todo = [i for i, it in enumerate(items) if it.stem not in manifest.records]
        units = plan_units(items, todo, workers=workers, batch_size=cfg.batch_size,
                           images_per_unit=cfg.ray.images_per_unit)
        pool = min(workers, len(units))
        lost: list[int] = []
        if units:
            self._say(f"ray: {len(units)} units of work ({len(todo)} inputs) on {pool} workers "
                      f"({cpw:g} CPUs, {gpw:g} GPUs each); {len(items) - len(todo)} inputs need no work")
        with progress:
            for it, rec in zip(items, resolved, strict=True):
                if rec is not None:
                    progress.skip(it.stem, name=Path(str(it.path)).name)
            if units:
                try:
                    lost = self._run_units(ray, worker_cfg, items, units, out, pool, gpw, cpw, token, nonce, manifest,
                                           tally, progress)
                except BaseException:
                    with contextlib.suppress(OSError):
                        manifest.finalize(order=order)
                    raise
            for u in lost:
                for i in units[u]:
                    if items[i].stem in manifest.records:
                        continue
                    reason = (f"the Ray worker processing it died {cfg.ray.max_retries + 1} times (killed, out of "
                              f"memory or crashed; see {_RAY_LOGS} on its machine); run again to retry")
                    logger.warning("%s: %s", items[i].path, reason)
                    manifest.add(ManifestRecord(input=str(items[i].path), key=items[i].stem, kind=items[i].kind,
                                                status="failed", reason=reason))
                    progress.skip(items[i].stem)
        clean_temp_files(out)  # of workers that died mid-write (their units were redone elsewhere)
        manifest.finalize(order=order)
        wall = time.perf_counter() - tally.t0
        counts = manifest.counts()
        driver.warnings[:] = tally.warnings
        driver.render_disabled_reason = tally.renders_disabled
        summary = driver.run_summary(run_id=run_id, started=started, wall=wall, inputs=len(items), counts=counts,
                                     processed=tally.totals)
        summary.update({
            # the settings the workers ran with (the driver's own copy runs on the CPU and loads no model)
            "config": config_to_dict(dataclasses.replace(worker_cfg, backend="ray", wait=cfg.wait)),
            "stage_seconds": {s: tally.stage_seconds.get(s, 0.0) for s in STAGES},
            "device": probe["device"], "prefetch": probe["prefetch"], "tier": probe["tier"],
            "body_model": probe["body_model"], "checkpoint": probe["checkpoint"],
            "backend": "ray",
            "ray": {"address": cfg.ray.address or "local", "workers": pool, "gpus_per_worker": gpw,
                    "cpus_per_worker": cpw, "max_retries": cfg.ray.max_retries, "units": len(units),
                    "units_lost": len(lost), "startup_seconds": tally.startup},
            "workers": tally.worker_entries(),
        })
        write_summary(out, summary)
        return RunReport(counts=counts, exit_code=summary["exit_code"], out_dir=out, summary=summary)

    def _run_units(self, ray: Any, worker_cfg: ProcessConfig, items: list[Any], units: list[list[int]], out: Path,
                   pool: int, gpw: float, cpw: float, token: str, nonce: str, manifest: Manifest,
                   tally: _Tally, progress: WorkProgress) -> list[int]:
        """Hand ``units`` to an actor pool of ``pool`` workers and record each unit's inputs as it comes back;
        returns the units that never came back (their worker died more than ``max_retries`` times)."""
        from ray.data import ActorPoolStrategy, DataContext

        cfg = self.config
        ctx = DataContext.get_current()
        saved = (ctx.max_errored_blocks, ctx.enable_progress_bars, ctx.print_on_execution_start)
        data_logger = logging.getLogger("ray.data")
        saved_level = data_logger.level
        # a unit whose worker died more than max_retries times is an errored block: the run goes on and the driver
        # records its inputs as failed instead of Ray Data stopping the whole dataset
        ctx.max_errored_blocks, ctx.enable_progress_bars, ctx.print_on_execution_start = -1, False, False
        data_logger.setLevel(logging.CRITICAL)  # its per-block tracebacks: the manifest says what failed
        pending = set(range(len(units)))
        try:
            rows = [{"unit": u, "items": _encode_items([items[i] for i in unit], manifest.previous)}
                    for u, unit in enumerate(units)]
            with warnings_module.catch_warnings():
                # Ray 2.60 (pinned) bounds task retries only through these remote args, which it marks as
                # deprecated; without the bound a unit that always kills its worker would be retried forever
                warnings_module.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
                results = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
                    _UnitWorker, batch_size=1, batch_format="numpy",
                    # one unit at a time per worker: a video never waits behind another on a busy worker
                    compute=ActorPoolStrategy(size=pool, max_tasks_in_flight_per_actor=1),
                    fn_constructor_kwargs={"config": worker_cfg, "stages": self.stages, "out": str(out),
                                           "token": token, "nonce": nonce},
                    num_cpus=cpw, num_gpus=gpw, max_restarts=-1, max_task_retries=cfg.ray.max_retries)
            # each result as soon as its unit is done: iter_rows() prefetches, which holds a finished unit back until
            # the next one is done (a late manifest, a progress display one unit behind)
            batches = results.iter_batches(batch_size=None, prefetch_batches=0, batch_format="numpy")
            for batch in batches:
                for unit, text in zip(batch["unit"], batch["result"], strict=True):
                    if int(unit) not in pending:  # a retried unit that had already come back
                        continue
                    pending.discard(int(unit))
                    res = json.loads(str(text))
                    records = [ManifestRecord.from_dict(d) for d in res["records"]]
                    for rec in records:
                        manifest.add(rec)
                        if rec.status == "failed":
                            logger.warning("%s: %s", rec.input, rec.reason)
                    tally.add(res, records, len(units[int(unit)]))
                    if res["fatal"]:
                        raise DiskFullError(res["fatal"])
                    _advance(progress, records)
        except (DiskFullError, KeyboardInterrupt):
            raise
        except Exception as exc:
            user = _user_error(exc)
            if isinstance(user, MetaHMRError):
                raise type(user)(str(user)) from exc
            raise MetaHMRError(f"the Ray workers stopped: {type(exc).__name__}: {str(exc).splitlines()[0]} "
                               f"(their logs: {_RAY_LOGS} on each machine). Finished inputs are kept; run the same "
                               "command again to continue.") from exc
        finally:
            ctx.max_errored_blocks, ctx.enable_progress_bars, ctx.print_on_execution_start = saved
            data_logger.setLevel(saved_level)
        return sorted(pending)


def _advance(progress: WorkProgress, records: list[ManifestRecord]) -> None:
    """A unit's inputs are done: those processed to the end are one interval of work (their images or frames and
    people); the others (failed, or skipped with exports added from earlier results) took none."""
    parts = [(r.key, float(r.frames or 0) if r.kind == "video" else 1.0, float(r.people)) for r in records
             if r.status in DONE_STATUSES]
    name = Path(records[-1].input).name if records else ""
    if parts:
        progress.advance_many(parts, name=name)
    for r in records:  # a video's planned frames were an estimate: what is left of it is done too
        progress.skip(r.key, name=name)


class _Tally:
    """What the driver adds up from the units that come back: the run's totals and stage seconds, Ray's start-up,
    the workers' warnings, and one ``summary.json`` entry per worker process."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.totals = new_totals()
        self.stage_seconds: dict[str, float] = defaultdict(float)
        self.startup: float | None = None
        self.warnings: list[str] = []
        self.renders_disabled: str | None = None
        self.workers: dict[str, dict[str, Any]] = {}
        self.last_finished: dict[str, float] = {}

    def add(self, res: dict[str, Any], records: list[ManifestRecord], inputs: int) -> dict[str, int]:
        """Count one unit (``res``: the worker's result, ``records``: its inputs' records); returns its totals."""
        if self.startup is None:  # Ray's start-up: workers started, models loaded
            self.startup = time.perf_counter() - self.t0 - res["seconds"]
        done = new_totals()
        stages: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        for rec in records:
            count_processed(done, rec.kind, rec)
            for k, v in rec.timings.items():
                if k in stages:
                    stages[k] += v
        name = res["worker"]
        w = self.workers.setdefault(name, {
            "worker": name, "units": 0, "inputs": 0, **new_totals(), "busy_seconds": 0.0,
            "waiting_seconds": 0.0, "setup_seconds": res["setup_seconds"], "stage_seconds": dict.fromkeys(STAGES, 0.0)})
        if name in self.last_finished:  # one unit at a time per worker: the gap is what Ray costs per unit
            w["waiting_seconds"] += max(res["started_at"] - self.last_finished[name], 0.0)
        self.last_finished[name] = res["finished_at"]
        w["units"] += 1
        w["inputs"] += inputs
        w["busy_seconds"] += res["seconds"]
        for k, v in done.items():
            w[k] += v
            self.totals[k] += v
        for k, v in stages.items():
            w["stage_seconds"][k] += v
            self.stage_seconds[k] += v
        self.warnings += [m for m in res["warnings"] if m not in self.warnings]
        self.renders_disabled = self.renders_disabled or res["renders_disabled"]
        return done

    def worker_entries(self) -> list[dict[str, Any]]:
        return [self.workers[k] for k in sorted(self.workers)]
