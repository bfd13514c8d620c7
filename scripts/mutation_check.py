#!/usr/bin/env python
"""Mutation check: does the test suite notice when a detail that matters is changed?

Each mutation replaces one exact snippet of one source file and names the test files (or node ids) that are
expected to fail because of it. The check copies the repository (without .venv, .git and large folders) to a
temporary folder, applies one mutation at a time to the copy, runs ``pytest -x`` on the named tests from the
copy with the copy first on ``PYTHONPATH``, and restores the copy's file afterwards. The real working tree is
only read. A mutation is *killed* when pytest reports failing tests, *survived* when the tests pass.

Before each run a small pytest plugin (written into the copy) imports the mutated module and stops the run
unless the module is loaded from the copy and its source contains the replacement, so a survivor can never be
the result of testing the unmutated package.

    .venv/bin/python scripts/mutation_check.py               # all mutations
    .venv/bin/python scripts/mutation_check.py --list        # names, files and tests
    .venv/bin/python scripts/mutation_check.py rot6d-column-order adam-bias-correction-m

Exit code: 0 when every mutation is killed, 1 when any survives (or its run errors), 2 when the list no longer
matches the sources (a snippet is missing or ambiguous) or the unmutated tests fail.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IGNORED = (".venv", ".git", "weights", "runs", "results", "__pycache__", ".pytest_cache", ".ruff_cache",
           "*.egg-info", "*.pyc")
LINKED = ("weights",)
"""Folders the tests read (downloaded models) that are linked into the copy instead of copied."""


@dataclass(frozen=True)
class Mutation:
    """One change: in ``file`` (relative to the repository), ``original`` (must occur exactly once) becomes
    ``replacement``; ``tests`` are the pytest arguments (files or node ids) expected to fail."""

    name: str
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]
    why: str = ""


M = Mutation
MUTATIONS: tuple[Mutation, ...] = (
    # ---------------------------------------------------------------- evaluation
    M("eval-pa-mpjpe-is-plain-mpjpe", "metahmr_cli/evaluation/protocols.py",
      "pajerr = M.pa_joint_errors(pred_joints, gt_joints, mm=True)",
      "pajerr = M.joint_errors(pred_joints, gt_joints, mm=True)",
      ("tests/test_eval_protocols.py",), "the evaluation reports MPJPE under the PA-MPJPE name"),
    M("metric-pa-mpjpe-without-alignment", "metahmr_cli/evaluation/metrics.py",
      'dist = _distances(pred, gt, "pa_mpjpe", align=True)',
      'dist = _distances(pred, gt, "pa_mpjpe", align=False)',
      ("tests/test_eval_metrics.py",)),
    M("procrustes-no-reflection-fix", "metahmr_cli/geometry/procrustes.py",
      "sign = torch.where(det < 0, -torch.ones_like(det), torch.ones_like(det))",
      "sign = torch.ones_like(det)",
      ("tests/test_geometry_procrustes.py",), "PA alignment may mirror the prediction"),
    M("j14-selection-order", "metahmr_cli/body/joints.py",
      "H36M_TO_J17: list[int] = [6, 5, 4, 1, 2, 3,",
      "H36M_TO_J17: list[int] = [1, 2, 3, 6, 5, 4,",
      ("tests/test_body_joints.py", "tests/test_eval_protocols.py"), "left and right legs exchanged in J14"),
    M("gender-rule-other-is-male", "metahmr_cli/evaluation/protocols.py",
      'other = BODY_FEMALE if rule == "released" else BODY_NEUTRAL',
      'other = BODY_MALE if rule == "released" else BODY_NEUTRAL',
      ("tests/test_eval_protocols.py",), "3DPW gender values other than 'm' use the male mesh"),
    # ---------------------------------------------------------------- body joints and keypoint mapping
    M("openpose-rsmalltoe-vertex-is-heel", "metahmr_cli/body/joints.py",
      '"RSmallToe": 6624,', '"RSmallToe": 6787,',
      ("tests/test_body_joints.py",)),
    M("openpose-rsmalltoe-slot-is-heel", "metahmr_cli/body/joints.py",
      '"OP RSmallToe": 33,', '"OP RSmallToe": 34,',
      ("tests/test_body_joints.py", "tests/test_body_smpl.py")),
    M("openpose18-neck-dropped", "metahmr_cli/keypoints/formats.py",
      '"nose", "neck", "rshoulder", "relbow", "rwrist", "lshoulder", "lelbow", "lwrist", "rhip",',
      '"nose", "thorax", "rshoulder", "relbow", "rwrist", "lshoulder", "lelbow", "lwrist", "rhip",',
      ("tests/test_keypoints.py",), "the OpenPose-18 neck is replaced by the shoulders' midpoint"),
    M("coco-hips-swapped", "metahmr_cli/keypoints/formats.py",
      '"Right Hip": "rhip", "Left Hip": "lhip",', '"Right Hip": "lhip", "Left Hip": "rhip",',
      ("tests/test_keypoints.py",), "GT hip slots take the other side's COCO hip"),
    M("flip-perm-arms-not-mirrored", "metahmr_cli/body/joints.py",
      "J24_FLIP_PERM: list[int] = [5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6,",
      "J24_FLIP_PERM: list[int] = [5, 4, 3, 2, 1, 0, 6, 7, 8, 9, 10, 11,",
      ("tests/test_body_joints.py", "tests/test_data_augment.py")),
    M("flip-pose-z-not-negated", "metahmr_cli/data/augment.py",
      "    out[2::3] = -out[2::3]\n", "",
      ("tests/test_data_augment.py",)),
    # ---------------------------------------------------------------- geometry
    M("rot6d-column-order", "metahmr_cli/geometry/rotation.py",
      "m = x.reshape(-1, 3, 2)", "m = x.reshape(-1, 2, 3).transpose(1, 2)",
      ("tests/test_geometry_rotation.py",), "6D read column-major instead of the released row-major"),
    M("bbox-info-xy-factor", "metahmr_cli/constants.py",
      "BBOX_INFO_XY_FACTOR: float = 2.8", "BBOX_INFO_XY_FACTOR: float = 2.7",
      ("tests/test_geometry_camera.py",)),
    M("bbox-info-size-offset", "metahmr_cli/constants.py",
      "BBOX_INFO_SIZE_OFFSET: float = 0.24", "BBOX_INFO_SIZE_OFFSET: float = 0.25",
      ("tests/test_geometry_camera.py",)),
    M("bbox-info-size-divisor", "metahmr_cli/constants.py",
      "BBOX_INFO_SIZE_DIV: float = 0.06", "BBOX_INFO_SIZE_DIV: float = 0.07",
      ("tests/test_geometry_camera.py",)),
    M("cam-crop-to-full-sign", "metahmr_cli/geometry/camera.py",
      "tx = (2 * (center[:, 0] - img_hw[:, 1] / 2.0) / bs) + crop_cam[:, 1]",
      "tx = (2 * (center[:, 0] - img_hw[:, 1] / 2.0) / bs) - crop_cam[:, 1]",
      ("tests/test_geometry_camera.py",)),
    # ---------------------------------------------------------------- losses and test-time optimisation
    M("outer-loss-without-x60", "metahmr_cli/losses.py",
      "        total = total * w.outer_scale\n", "        total = total\n",
      ("tests/test_losses.py",)),
    M("adam-bias-correction-m", "metahmr_cli/tto/optim.py",
      "step_size = self.lr / bias_correction1", "step_size = self.lr",
      ("tests/test_tto_optim.py",)),
    M("adam-bias-correction-v", "metahmr_cli/tto/optim.py",
      "            denom = (v_new.sqrt() / bias_correction2_sqrt).add_(self.eps)\n            out[name]",
      "            denom = v_new.sqrt().add_(self.eps)\n            out[name]",
      ("tests/test_tto_optim.py",)),
    M("unitwise-adam-bias-correction-m", "metahmr_cli/tto/optim.py",
      "step_size = self.lr / (1 - beta1**step)", "step_size = self.lr",
      ("tests/test_tto_equivalence.py::test_paper_adam_and_early_stop_match",),
      "the in-place optimiser the engine uses on CPU"),
    M("early-stop-comparison-sign", "metahmr_cli/tto/engine.py",
      "conv = upd & ((loss_prev - total).abs() < sched.tol)",
      "conv = upd & ((loss_prev - total).abs() > sched.tol)",
      ("tests/test_tto_equivalence.py::test_paper_adam_and_early_stop_match",
       "tests/test_tto_behaviour.py::test_early_stopped_person_leaves_others_bit_identical")),
    M("eft-leg-term-knee-slot", "metahmr_cli/tto/eft.py",
      '"gt": ((GT_R_KNEE, GT_R_ANKLE), (GT_L_KNEE, GT_L_ANKLE)),',
      '"gt": ((GT_R_HIP, GT_R_ANKLE), (GT_L_KNEE, GT_L_ANKLE)),',
      ("tests/test_tto_eft.py",), "EFT's right-leg direction measured from the hip"),
    # ---------------------------------------------------------------- files and resume
    M("torch-save-straight-to-final-path", "metahmr_cli/models/checkpoints.py",
      "    with atomic_path(path) as tmp:\n        torch.save(obj, tmp)\n",
      "    torch.save(obj, path)\n",
      ("tests/test_atomic_writes.py",)),
    M("save-npz-straight-to-final-path", "metahmr_cli/data/npzio.py",
      'with atomic_path(p) as tmp, open(tmp, "wb") as f:', 'with open(p, "wb") as f:',
      ("tests/test_atomic_writes.py",)),
    M("eval-cache-straight-to-final-path", "metahmr_cli/evaluation/runner.py",
      'with atomic_path(path) as tmp, open(tmp, "wb") as fh:', 'with open(path, "wb") as fh:',
      ("tests/test_atomic_writes.py",)),
    M("atomic-rename-keeps-temp-on-error", "metahmr_cli/io/writers.py",
      "        with contextlib.suppress(OSError):\n            tmp.unlink()\n        raise\n",
      "        raise\n",
      ("tests/test_atomic_writes.py",)),
    M("atomic-writer-yields-final-path", "metahmr_cli/io/writers.py",
      "    try:\n        yield tmp\n        if not tmp.exists():",
      "    try:\n        yield path\n        if not tmp.exists():",
      ("tests/test_atomic_writes.py",), "the writer is handed the final path"),
    M("rng-restore-skips-numpy", "metahmr_cli/training/checkpointing.py",
      '    if "numpy" in state:\n', '    if "numpy" in state and False:\n',
      ("tests/test_train_checkpointing.py",)),
    M("rng-restore-skips-torch", "metahmr_cli/training/checkpointing.py",
      '    if "torch" in state:\n', '    if "torch" in state and False:\n',
      ("tests/test_train_checkpointing.py",)),
    M("rng-restore-skips-python", "metahmr_cli/training/checkpointing.py",
      '    if "python" in state:\n', '    if "python" in state and False:\n',
      ("tests/test_train_checkpointing.py",)),
    # ---------------------------------------------------------------- video
    M("warm-start-ignores-start-weights", "metahmr_cli/tto/engine.py",
      "            live[n] = torch.where(keep, w.to(base[n].dtype), base[n].unsqueeze(0))  # own storage\n",
      "            live[n] = base[n].unsqueeze(0).repeat(g, *[1] * base[n].ndim)\n",
      ("tests/test_tto_warm.py",), "warm-started TTO silently starts from the network's weights"),
    M("warm-start-keeps-backbone-features", "metahmr_cli/tto/engine.py",
      "            head_only=(False,) * len(sched.phases) if warm_backbone else _head_only_phases(main, sched),\n",
      "            head_only=_head_only_phases(main, sched),\n",
      ("tests/test_tto_warm.py",), "a warm start's backbone weights are ignored by head-only phases"),
    M("prefetch-runs-past-a-video", "metahmr_cli/pipeline.py",
      '            if kind == "video":\n                break\n',
      '            if kind == "video":\n                self.cursor += 1\n                continue\n',
      ("tests/test_prefetch.py",), "images after a video are detected while the video uses the detector"),
    M("renderer-uses-the-callers-thread", "metahmr_cli/render/overlay.py",
      "        if threading.get_ident() == self._gl_thread:\n",
      "        if True:\n",
      ("tests/test_render.py",), "an OpenGL context current in one thread is used from another (EGL_BAD_ACCESS)"),
    M("rotation-filter-ignores-speed", "metahmr_cli/video/smoothing.py",
      "        cutoff = self.s.min_cutoff + self.s.beta * np.linalg.norm(self.w, axis=-1)\n",
      "        cutoff = self.s.min_cutoff + 0 * np.linalg.norm(self.w, axis=-1)\n",
      ("tests/test_video_motion.py",), "One-Euro's speed-adaptive cut-off is lost on rotations"),
    # ---------------------------------------------------------------- process on Ray (the tests without Ray)
    M("ray-videos-split-with-images", "metahmr_cli/distributed/ray_backend.py",
      '    videos = [[i] for i in todo if items[i].kind == "video"]\n'
      '    images = [i for i in todo if items[i].kind != "video"]\n',
      "    videos = []\n    images = list(todo)\n",
      ("tests/test_ray_backend.py::test_units_keep_videos_whole_and_share_images_among_workers",),
      "a video's frames could go to a worker with other inputs, breaking its tracking"),
    M("ray-gpus-not-checked", "metahmr_cli/distributed/ray_backend.py",
      "    if gpw > 0 and n * gpw > gpus + 1e-9:\n", "    if False:\n",
      ("tests/test_ray_backend.py::test_worker_plan_fits_the_cluster_and_names_what_does_not",),
      "more GPU workers than GPUs would wait for ever instead of stopping with the numbers"),
    M("ray-any-folder-is-shared", "metahmr_cli/distributed/ray_backend.py",
      "    if text.strip() != nonce:\n", "    if False:\n",
      ("tests/test_ray_backend.py::test_a_worker_tells_a_shared_folder_from_another_one",),
      "a worker writing into another folder than the driver's is not noticed"),
)

_PROBE = '''"""pytest plugin of scripts/mutation_check.py: refuse to run unless the mutated module is the copy's."""
import importlib
import os
from pathlib import Path

import pytest


def pytest_sessionstart(session):
    module = importlib.import_module(os.environ["MUTATION_MODULE"])
    path = Path(module.__file__).resolve()
    copy = Path(os.environ["MUTATION_COPY"]).resolve()
    if copy not in path.parents:
        raise pytest.UsageError(f"mutation check: {module.__name__} was imported from {path}, not from {copy}")
    if os.environ["MUTATION_TEXT"] not in path.read_text():
        raise pytest.UsageError(f"mutation check: {path} does not contain the mutation")
'''


def _module_name(file: str) -> str:
    parts = list(Path(file).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def validate(mutations: tuple[Mutation, ...]) -> list[str]:
    """Problems of the list against the real sources (each snippet must occur exactly once)."""
    problems = []
    names = [m.name for m in mutations]
    problems += [f"duplicate name {n}" for n in sorted({n for n in names if names.count(n) > 1})]
    for m in mutations:
        path = REPO / m.file
        if not path.is_file():
            problems.append(f"{m.name}: {m.file} does not exist")
            continue
        count = path.read_text().count(m.original)
        if count != 1:
            problems.append(f"{m.name}: the original snippet occurs {count} times in {m.file}")
        if m.original == m.replacement:
            problems.append(f"{m.name}: the replacement equals the original")
        for t in m.tests:
            if not (REPO / t.split("::")[0]).is_file():
                problems.append(f"{m.name}: test file {t} does not exist")
    return problems


def make_copy(dest: Path) -> Path:
    """Copy the repository to ``dest/repo`` (sources, tests, examples...) and link the large read-only folders."""
    root = dest / "repo"
    shutil.copytree(REPO, root, ignore=shutil.ignore_patterns(*IGNORED), symlinks=True)
    for name in LINKED:
        if (REPO / name).exists():
            (root / name).symlink_to(REPO / name, target_is_directory=True)
    (root / "_mutation_probe.py").write_text(_PROBE)
    return root


def first_failure(output: str) -> str:
    """The node id of the first failing test in pytest's short summary ("" when there is none)."""
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" ", 1)[1].split(" - ", 1)[0]
    return ""


def run_tests(copy: Path, tests: tuple[str, ...], *, module: str, text: str, timeout: float,
              extra: list[str]) -> tuple[int | None, float, str]:
    """Run pytest in the copy; returns (exit code or None on timeout, seconds, output tail)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy), str(copy / "tests"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a mutated file and its restored original can share an mtime second
    env.update(MUTATION_MODULE=module, MUTATION_COPY=str(copy), MUTATION_TEXT=text)
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "_mutation_probe",
           *extra, *tests]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return None, time.monotonic() - start, out[-4000:]
    return proc.returncode, time.monotonic() - start, (proc.stdout + proc.stderr)[-4000:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="run only these mutations (default: all)")
    ap.add_argument("--list", action="store_true", help="print the mutations and exit")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per pytest run (default 900)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the run of the unmutated tests")
    ap.add_argument("--pytest-arg", action="append", default=[], help="extra pytest argument (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy (its path is printed)")
    args = ap.parse_args(argv)

    if args.list:
        for m in MUTATIONS:
            print(f"{m.name}\n    {m.file}: {m.original.strip()!r} -> {m.replacement.strip()!r}\n"
                  f"    tests: {' '.join(m.tests)}" + (f"\n    ({m.why})" if m.why else ""))
        return 0
    unknown = sorted(set(args.names) - {m.name for m in MUTATIONS})
    if unknown:
        print(f"unknown mutation(s): {', '.join(unknown)} (see --list)", file=sys.stderr)
        return 2
    chosen = tuple(m for m in MUTATIONS if not args.names or m.name in args.names)
    problems = validate(chosen)
    if problems:
        print("the mutation list does not match the sources:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="metahmr-mutation-"))
    try:
        copy = make_copy(tmp)
        print(f"copy of the repository: {copy}", flush=True)
        if not args.no_baseline:
            tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
            rc, secs, out = run_tests(copy, tests, module="metahmr_cli", text="", timeout=args.timeout * 2,
                                      extra=args.pytest_arg)
            print(f"baseline (unmutated, {len(tests)} test targets): exit {rc} in {secs:.0f}s", flush=True)
            if rc != 0:
                print(out, file=sys.stderr)
                return 2
        results: list[tuple[Mutation, str, float]] = []
        for i, m in enumerate(chosen, 1):
            target = copy / m.file
            original_text = target.read_text()
            target.write_text(original_text.replace(m.original, m.replacement, 1))
            try:
                rc, secs, out = run_tests(copy, m.tests, module=_module_name(m.file), text=m.replacement,
                                          timeout=args.timeout, extra=args.pytest_arg)
            finally:
                target.write_text(original_text)
            verdict = {0: "SURVIVED", 1: "killed", None: "killed (timeout)"}.get(rc, f"ERROR (pytest exit {rc})")
            results.append((m, verdict, secs))
            by = f"  <- {first_failure(out)}" if rc == 1 else ""
            print(f"[{i:2d}/{len(chosen)}] {verdict:<18} {secs:6.1f}s  {m.name}{by}", flush=True)
            if rc not in (0, 1, None):
                print("    " + out.strip().replace("\n", "\n    "), flush=True)
        killed = sum(v.startswith("killed") for _, v, _ in results)
        print(f"\n{killed} of {len(results)} mutations killed")
        bad = [(m, v) for m, v, _ in results if not v.startswith("killed")]
        for m, v in bad:
            print(f"  {v}: {m.name} ({m.file}; tests {' '.join(m.tests)})")
        return 1 if bad else 0
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
