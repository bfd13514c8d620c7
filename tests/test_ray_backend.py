"""``metahmr process --backend ray``: the same outputs, manifest and resume as a local run, with the inputs spread
over Ray Data workers, and the faults around them (a killed worker, a killed driver, an unreachable cluster, an
output folder the workers cannot reach, more workers than CPUs).

The Ray tests share one local Ray instance (``num_cpus=2``) started once for this module (once per xdist worker
that runs some of them: xdist's ``loadgroup`` cannot keep them together under pytest 9, whose node ids it no longer
renames); its workers find the test stages (``tests/ray_stages.py``) through ``PYTHONPATH``. Nothing here depends
on timing: the runs that must be caught in flight are held by a file gate, and every wait ends on a condition (the
deadlines only stop a broken test from hanging).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from ray_stages import KillingKeypoints, LoggedKeypoints
from rich.console import Console
from test_pipeline_support import (  # noqa: F401  (fixtures)
    EXAMPLES,
    FixedDetector,
    TemplateKeypoints,
    assert_outputs_clean,
    tiny_checkpoint_fixture,
    write_boxes_json,
    write_synthetic_video,
)
from typer.testing import CliRunner

from metahmr_cli.distributed.ray_backend import RayRunner, check_shared_folder, init_ray, plan_units, worker_plan
from metahmr_cli.distributed.settings import RaySettings
from metahmr_cli.errors import ConfigError
from metahmr_cli.files import TEMP_MARKER
from metahmr_cli.io.sources import InputItem
from metahmr_cli.io.writers import MANIFEST_NAME, SUMMARY_NAME, read_manifest
from metahmr_cli.pipeline import Pipeline
from metahmr_cli.process_config import ProcessConfig
from metahmr_cli.tto import TTOConfig

TESTS = Path(__file__).resolve().parent
RECORD_FIELDS_COMPARED = ("input", "key", "kind", "status", "reason", "people", "no_keypoints", "frames", "outputs",
                          "settings", "identity", "previous_status", "schema_version")


# ---------------------------------------------------------------------------------------------- without Ray


def _items(kinds: str) -> list[InputItem]:
    return [InputItem(path=Path(f"/in/{i}"), kind="video" if k == "v" else "image", stem=f"s{i}", source="/in")
            for i, k in enumerate(kinds)]


def test_units_keep_videos_whole_and_share_images_among_workers():
    items = _items("iiviiiiv")
    todo = [0, 1, 2, 3, 4, 5, 7]  # input 6 is finished
    # 5 images over 2 workers: runs of ceil(5 / 2) = 3; videos alone, first
    assert plan_units(items, todo, workers=2, batch_size=32) == [[2], [7], [0, 1, 3], [4, 5]]
    # the batch size bounds a run; an explicit size wins
    assert plan_units(items, todo, workers=1, batch_size=2) == [[2], [7], [0, 1], [3, 4], [5]]
    assert plan_units(items, todo, workers=2, batch_size=32, images_per_unit=1) == [[2], [7], [0], [1], [3], [4],
                                                                                    [5]]
    assert plan_units(items, [], workers=2, batch_size=32) == []


def test_worker_plan_fits_the_cluster_and_names_what_does_not():
    cpu_box, gpu_box = {"CPU": 16.0}, {"CPU": 16.0, "GPU": 4.0}
    assert worker_plan(RaySettings(), "auto", cpu_box) == (16, 0.0, 1.0)
    assert worker_plan(RaySettings(cpus_per_worker=3), "auto", cpu_box) == (5, 0.0, 3.0)
    assert worker_plan(RaySettings(), "auto", gpu_box) == (4, 1.0, 1.0)  # one worker per GPU
    assert worker_plan(RaySettings(gpus_per_worker=0.5), "cuda", gpu_box) == (8, 0.5, 1.0)
    assert worker_plan(RaySettings(), "cpu", gpu_box) == (16, 0.0, 1.0)  # the GPUs are left alone
    assert worker_plan(RaySettings(workers=2), "auto", gpu_box) == (2, 1.0, 1.0)
    with pytest.raises(ConfigError, match=r"--workers 5 needs 5 GPUs .* has 16 CPUs and 4 GPUs; use --workers 4"):
        worker_plan(RaySettings(workers=5), "auto", gpu_box)
    with pytest.raises(ConfigError, match=r"--workers 9 needs 18 CPUs .*; use --workers 8 or fewer"):
        worker_plan(RaySettings(workers=9, cpus_per_worker=2), "cpu", cpu_box)
    with pytest.raises(ConfigError, match="needs GPUs for the workers, but the Ray cluster has none"):
        worker_plan(RaySettings(), "cuda", cpu_box)
    with pytest.raises(ConfigError, match="--device cuda:1 with --backend ray"):
        worker_plan(RaySettings(), "cuda:1", gpu_box)
    with pytest.raises(ConfigError, match="--device cpu with --gpus-per-worker 1"):
        worker_plan(RaySettings(gpus_per_worker=1), "cpu", gpu_box)


def test_settings_are_checked():
    for bad, needle in ((RaySettings(address="nohost"), "--ray-address 'nohost'"),
                        (RaySettings(workers=0), "--workers must be >= 1"),
                        (RaySettings(cpus_per_worker=0), "--cpus-per-worker must be > 0")):
        with pytest.raises(ConfigError, match=needle):
            bad.validate()
    for good in ("auto", "10.0.0.1:6379", "head.cluster:6379", "[::1]:6379"):
        RaySettings(address=good).validate()
    with pytest.raises(ConfigError, match="backend: expected one of 'local', 'ray', got 'spark'"):
        ProcessConfig(inputs=["x.jpg"], backend="spark").validate()


def test_without_ray_installed_the_fix_is_named(monkeypatch):
    from metahmr_cli.distributed import ray_backend

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError, match=r"--backend ray needs Ray Data.*pip install 'metahmr\[ray\]'"):
        ray_backend._import_ray()


def test_a_worker_tells_a_shared_folder_from_another_one(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "token").write_text("nonce-1")
    assert check_shared_folder(str(out), "token", "nonce-1") is None
    assert "another folder than the driver's (it holds another run's" in check_shared_folder(str(out), "token",
                                                                                             "nonce-2")
    assert "the file the driver wrote there is missing" in check_shared_folder(str(out), "absent", "nonce-1")
    assert "does not exist on" in check_shared_folder(str(tmp_path / "nowhere"), "token", "nonce-1")
    assert [p.name for p in out.iterdir()] == ["token"]  # its write check leaves nothing


# ---------------------------------------------------------------------------------------------- on Ray


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray instance for the module (2 CPUs); its workers import the test stages."""
    ray = pytest.importorskip("ray")
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    with pytest.MonkeyPatch.context() as mp:
        # Ray's memory monitor kills its own workers when the machine's memory is 95% used, whoever uses it: on a
        # shared test machine that is other processes, and the tests would fail for them (read by Ray at start)
        mp.setenv("RAY_memory_monitor_refresh_ms", "0")
        init_ray(ray, num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _config(inputs, out, standin_dir, checkpoint, **kw) -> ProcessConfig:
    kw.setdefault("tto", TTOConfig(max_steps=2))
    return ProcessConfig(inputs=[str(i) for i in inputs], out=out, body=str(standin_dir), checkpoint=checkpoint,
                         device="cpu", **kw)


def _photos(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    sources = [EXAMPLES / "messi5.jpg", EXAMPLES / "basketball1.png"]
    paths = []
    for i in range(n):
        src = sources[i % 2]
        p = folder / f"p{i}{src.suffix}"
        p.write_bytes(src.read_bytes())
        paths.append(p)
    return paths


def _files(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {MANIFEST_NAME, SUMMARY_NAME,
                                                                                     ".metahmr.lock"}


def _decoded_video(path: Path) -> np.ndarray:
    from metahmr_cli.io.sources import iter_video_frames

    return np.stack([f for _, f in iter_video_frames(path)]).astype(np.float64)


def _assert_close_json(x: object, y: object, where: str) -> None:
    """Equal JSON values, their floats within the tolerance of the result arrays."""
    if isinstance(x, dict) and isinstance(y, dict):
        assert sorted(x) == sorted(y), where
        for k in x:
            _assert_close_json(x[k], y[k], f"{where}.{k}")
    elif isinstance(x, list) and isinstance(y, list):
        assert len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            _assert_close_json(u, v, f"{where}[{i}]")
    elif isinstance(x, float) or isinstance(y, float):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5, err_msg=where)
    else:
        assert x == y, where


def _assert_same_outputs(a: Path, b: Path) -> None:
    """The same files; result arrays equal within float tolerance (people batched differently), text equal; renders
    within a grey level on average."""
    names = _files(a)
    assert names == _files(b)
    for name in sorted(names):
        pa, pb = a / name, b / name
        if name.endswith(".npz"):
            with np.load(pa, allow_pickle=False) as za, np.load(pb, allow_pickle=False) as zb:
                assert sorted(za.files) == sorted(zb.files), name
                for k in za.files:
                    x, y = za[k], zb[k]
                    if x.dtype.kind == "f":
                        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5, equal_nan=True, err_msg=f"{name}:{k}")
                    elif x.dtype.kind == "U" and x.ndim == 0 and str(x).startswith("{"):  # JSON (world_quality)
                        _assert_close_json(json.loads(str(x)), json.loads(str(y)), f"{name}:{k}")
                    else:
                        np.testing.assert_array_equal(x, y, err_msg=f"{name}:{k}")
        elif name.endswith(".png"):
            x, y = (cv2.imread(str(p)).astype(np.float64) for p in (pa, pb))
            assert x.shape == y.shape and np.abs(x - y).mean() < 1.0, name
        elif name.endswith(".mp4"):
            x, y = _decoded_video(pa), _decoded_video(pb)
            assert x.shape == y.shape and np.abs(x - y).mean() < 2.0, name
        else:
            assert pa.read_bytes() == pb.read_bytes(), name


def _records(out: Path) -> dict[str, dict]:
    records = read_manifest(out / MANIFEST_NAME)
    return {k: {f: getattr(r, f) for f in RECORD_FIELDS_COMPARED} for k, r in records.items()}


def test_ray_run_gives_the_files_and_records_of_a_local_run(tmp_path, ray_address, standin_dir, tiny_checkpoint):
    inputs = tmp_path / "inputs"
    _photos(inputs, 2)
    (inputs / "broken.jpg").write_bytes(b"not an image")
    write_synthetic_video(inputs / "clip.mp4", n_frames=6)
    stages = {"detector": FixedDetector(), "keypoints": TemplateKeypoints()}

    local = Pipeline(_config([inputs], tmp_path / "local", standin_dir, tiny_checkpoint), progress=False,
                     **stages).run()
    assert local.counts == {"ok": 3, "no_person": 0, "no_keypoints": 0, "failed": 1, "skipped": 0}

    console = Console(file=io.StringIO(), width=40)
    cfg = _config([inputs], tmp_path / "ray", standin_dir, tiny_checkpoint, backend="ray",
                  ray=RaySettings(workers=2))
    report = RayRunner(cfg, progress=True, console=console, **stages).run()
    assert (report.counts, report.exit_code) == (local.counts, 1)

    _assert_same_outputs(tmp_path / "local", tmp_path / "ray")
    records = _records(tmp_path / "ray")
    assert records == _records(tmp_path / "local")
    assert records["broken"]["status"] == "failed" and "broken.jpg" in records["broken"]["reason"]
    assert_outputs_clean(tmp_path / "ray")

    summary = json.loads((tmp_path / "ray" / SUMMARY_NAME).read_text())
    local_summary = local.summary
    assert summary["backend"] == "ray" and summary["counts"] == local_summary["counts"]
    assert summary["processed"] == local_summary["processed"] == {"images": 2, "frames": 6, "people": 8,
                                                                  "no_keypoints": 0}
    local_keys = set(json.loads((tmp_path / "local" / SUMMARY_NAME).read_text()))
    assert set(summary) - {"backend", "ray", "workers"} == local_keys  # every key of a local run
    assert summary["settings_fingerprint"] == local_summary["settings_fingerprint"]
    assert (summary["ray"]["workers"], summary["ray"]["units"], summary["ray"]["units_lost"]) == (2, 3, 0)
    assert (summary["config"]["backend"], summary["config"]["ray"]["workers"], summary["device"]) == ("ray", 2, "cpu")
    workers = summary["workers"]
    # units: the video, the two images in one run, the broken file with them or alone (2 images per unit)
    assert sum(w["units"] for w in workers) == 3 and sum(w["inputs"] for w in workers) == 4
    assert sum(w["images"] + w["frames"] for w in workers) == 8 and sum(w["people"] for w in workers) == 8
    assert all(w["busy_seconds"] > 0 and w["setup_seconds"] > 0 and w["stage_seconds"]["tto"] > 0
               for w in workers)
    # one progress display for the run, a local run's; on a file, a closing line (a line every 10 s before it):
    # 2 photos, the broken file and the video's 6 frames
    assert "process (ray): 9/9 images+frames" in " ".join(console.file.getvalue().split())


def test_a_killed_worker_is_replaced_and_an_always_dying_unit_fails(tmp_path, ray_address, standin_dir,
                                                                     tiny_checkpoint):
    _photos(tmp_path / "photos", 4)
    marker = tmp_path / "killed_once"
    keypoints = KillingKeypoints(tmp_path / "calls", marker, kill_once="p1.png", kill_always="p3.png")
    cfg = _config([tmp_path / "photos"], tmp_path / "out", standin_dir, tiny_checkpoint, backend="ray",
                  render=False, ray=RaySettings(workers=2, images_per_unit=1, max_retries=1))
    report = RayRunner(cfg, progress=False, detector=FixedDetector(), keypoints=keypoints).run()

    assert marker.exists()  # p1's first worker did die
    records = read_manifest(tmp_path / "out" / MANIFEST_NAME)
    assert sorted(records) == ["p0", "p1", "p2", "p3"]
    assert [records[k].status for k in ("p0", "p1", "p2")] == ["ok"] * 3
    assert records["p3"].status == "failed" and "died 2 times" in records["p3"].reason
    assert (report.exit_code, report.summary["ray"]["units_lost"]) == (1, 1)
    # every manifest line is one input (the retried unit is recorded once)
    lines = (tmp_path / "out" / MANIFEST_NAME).read_text().splitlines()
    assert sorted(json.loads(line)["key"] for line in lines) == ["p0", "p1", "p2", "p3"]
    assert_outputs_clean(tmp_path / "out")
    assert not list((tmp_path / "out").glob("p3*"))


def test_a_rerun_adds_exports_from_stored_results_and_redoes_a_replaced_input(tmp_path, ray_address, standin_dir,
                                                                              tiny_checkpoint):
    """The resume check of a local run: an input whose results are finished but lack a mesh format asked for now
    gets it from those results (no network runs on it), and a photo replaced under the same name is redone."""
    from metahmr_cli.io.sources import input_identity

    photos = tmp_path / "photos"
    p0, p1 = _photos(photos, 2)
    out = tmp_path / "out"
    ray_settings = RaySettings(workers=2, images_per_unit=1)
    kw = dict(backend="ray", render=False, ray=ray_settings)
    first = RayRunner(_config([photos], out, standin_dir, tiny_checkpoint, save_mesh="ply", **kw), progress=False,
                      detector=FixedDetector(), keypoints=LoggedKeypoints(tmp_path / "calls1")).run()
    assert first.counts["ok"] == 2
    records = read_manifest(out / MANIFEST_NAME)
    before = {p.stem: input_identity(p, "image") for p in (p0, p1)}
    assert {k: r.identity for k, r in records.items()} == before
    stamp = (out / "p0.npz").stat().st_mtime_ns

    flipped = cv2.imread(str(p1))[:, ::-1]
    cv2.imwrite(str(p1), flipped)  # another photo under the same name
    report = RayRunner(_config([photos], out, standin_dir, tiny_checkpoint, save_mesh="ply,obj", **kw),
                       progress=False, detector=FixedDetector(), keypoints=LoggedKeypoints(tmp_path / "calls2")).run()
    processed = {p.name.split(".")[0] for p in (tmp_path / "calls2").iterdir()}
    assert processed == {"p1"}  # p0's meshes come from its stored results
    records = read_manifest(out / MANIFEST_NAME)
    assert (records["p0"].status, records["p1"].status) == ("skipped", "ok")
    assert "export file(s) added" in records["p0"].reason
    assert (out / "p0.npz").stat().st_mtime_ns == stamp
    for fmt in ("ply", "obj"):
        assert f"p0_person00.{fmt}" in records["p0"].outputs and (out / f"p0_person00.{fmt}").is_file()
        assert f"p1_person00.{fmt}" in records["p1"].outputs
    assert records["p1"].identity == input_identity(p1, "image") != before["p1"]
    assert records["p0"].identity == before["p0"]
    assert report.summary["processed"]["images"] == 1 and report.exit_code == 0

    again = RayRunner(_config([photos], out, standin_dir, tiny_checkpoint, save_mesh="ply,obj", **kw),
                      progress=False, detector=FixedDetector(), keypoints=LoggedKeypoints(tmp_path / "calls3")).run()
    assert again.counts["skipped"] == 2 and again.summary["ray"]["units"] == 0
    assert not (tmp_path / "calls3").exists()
    assert_outputs_clean(out)


_DRIVER = """
import sys, ray
from pathlib import Path
from ray_stages import GatedKeypoints
from test_pipeline_support import FixedDetector
from metahmr_cli.distributed import RaySettings
from metahmr_cli.distributed.ray_backend import RayRunner
from metahmr_cli.distributed.ray_backend import init_ray
from metahmr_cli.process_config import ProcessConfig
from metahmr_cli.tto import TTOConfig
address, photos, out, body, ckpt, calls, gate = sys.argv[1:]
init_ray(ray, address=address, log_to_driver=False,
         runtime_env={"env_vars": {"PYTHONPATH": %r, "OMP_NUM_THREADS": "1"}})
cfg = ProcessConfig(inputs=[photos], out=Path(out), body=body, checkpoint=Path(ckpt), device="cpu", render=False,
                    tto=TTOConfig(max_steps=2), backend="ray", ray=RaySettings(workers=2, images_per_unit=1))
RayRunner(cfg, progress=False, detector=FixedDetector(), keypoints=GatedKeypoints(Path(calls), Path(gate), 2)).run()
"""


def _manifest_keys(out: Path) -> list[str]:
    path = out / MANIFEST_NAME
    if not path.is_file():
        return []
    keys = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):  # a line being written
            keys.append(json.loads(line)["key"])
    return keys


def test_a_killed_driver_leaves_only_unfinished_inputs_for_the_same_command(tmp_path, ray_address, standin_dir,
                                                                             tiny_checkpoint):
    _photos(tmp_path / "photos", 6)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)}
    script = _DRIVER % env["PYTHONPATH"]
    log = tmp_path / "driver.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-c", script, ray_address, str(tmp_path / "photos"), str(out),
                                 str(standin_dir), str(tiny_checkpoint), str(tmp_path / "calls1"),
                                 str(tmp_path / "gate")], env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        # the gate lets two inputs through and holds the others: wait for the driver to record those two
        deadline = time.monotonic() + 900
        while len(_manifest_keys(out)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_manifest_keys(out)) == 2, log.read_text()[-3000:]
        assert proc.poll() is None, log.read_text()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = set(_manifest_keys(out))
    stamps = {k: (out / f"{k}.npz").stat().st_mtime_ns for k in finished}

    # the same command again (its stage logs what it processes, and holds nothing)
    cfg = _config([tmp_path / "photos"], out, standin_dir, tiny_checkpoint, backend="ray", render=False,
                  ray=RaySettings(workers=2, images_per_unit=1))
    report = RayRunner(cfg, progress=False, detector=FixedDetector(),
                       keypoints=LoggedKeypoints(tmp_path / "calls2")).run()
    processed = {p.name.split(".")[0] for p in (tmp_path / "calls2").iterdir()}
    assert processed == {f"p{i}" for i in range(6)} - finished
    records = read_manifest(out / MANIFEST_NAME)
    assert sorted(records) == [f"p{i}" for i in range(6)]
    assert {k for k, r in records.items() if r.status == "skipped"} == finished
    assert {k for k, r in records.items() if r.status == "ok"} == {f"p{i}" for i in range(6)} - finished
    assert report.exit_code == 0
    assert {k: (out / f"{k}.npz").stat().st_mtime_ns for k in finished} == stamps  # untouched
    assert_outputs_clean(out)


def _refusing_address() -> tuple[socket.socket, str]:
    """A local port that refuses connections while the returned socket stays open (bound, never listening)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s, f"127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("case", ["unreachable", "too_many_workers", "not_shared"])
def test_cluster_problems_are_named_and_exit_2(tmp_path, ray_address, standin_dir, tiny_checkpoint, monkeypatch,
                                               case):
    from metahmr_cli.cli.app import app
    from metahmr_cli.distributed import ray_backend

    photos = tmp_path / "photos"
    _photos(photos, 1)
    out = tmp_path / "out"
    args = ["process", str(photos), "--out", str(out), "--body", str(standin_dir), "--checkpoint",
            str(tiny_checkpoint), "--device", "cpu", "--no-progress", "--boxes-json",
            str(write_boxes_json(tmp_path / "boxes.json", {"p0.jpg": [[65, 55, 460, 340, 0.9]]})), "--keypoints",
            "mediapipe", "--backend", "ray"]
    sock = None
    if case == "unreachable":
        sock, address = _refusing_address()
        args += ["--ray-address", address]
        needles = [f"--ray-address {address}: no Ray cluster answers there", "ray start --head"]
    elif case == "too_many_workers":
        args += ["--workers", "3"]
        needles = ["--workers 3 needs 3 CPUs", "the Ray cluster has 2 CPUs", "use --workers 2 or fewer"]
    else:
        # the driver's check file goes elsewhere, as if the workers saw another folder under the same path
        elsewhere = tmp_path / "driver_only"
        elsewhere.mkdir()
        real = ray_backend.temp_path_for
        monkeypatch.setattr(ray_backend, "temp_path_for", lambda p: real(elsewhere / Path(p).name))
        needles = [f"--out {out} must be one folder that every machine", "the file the driver wrote there is missing"]
    try:
        res = CliRunner().invoke(app, args, env={"COLUMNS": "40"})
    finally:
        if sock is not None:
            sock.close()
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    for needle in needles:
        assert needle in text, text
    assert not (out / MANIFEST_NAME).exists()
    assert not [p for p in out.rglob("*") if TEMP_MARKER in p.name]
