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
    M("facing-forward-reversed", "metahmr_cli/evaluation/facing.py",
      "forward = np.cross(left - (left * up).sum(-1, keepdims=True) * up, up)",
      "forward = np.cross(up, left - (left * up).sum(-1, keepdims=True) * up)",
      ("tests/test_eval_facing.py",), "every body would be reported facing the other way"),
    M("facing-in-3d-not-about-the-body-axis", "metahmr_cli/evaluation/facing.py",
      "    to_camera = to_camera - (to_camera * up).sum(-1, keepdims=True) * up\n", "",
      ("tests/test_eval_facing.py",), "a person walking toward a high camera would not face it"),
    M("people-match-not-one-to-one", "metahmr_cli/evaluation/people.py",
      "if det_person[d] < 0 and person_det[p] < 0:", "if det_person[d] < 0:",
      ("tests/test_eval_people.py",), "a second box on a person would count as found"),
    M("people-crowd-excuses-duplicates", "metahmr_cli/evaluation/people.py",
      "excused = unmatched & (on_ignored | (in_region & ~on_person))", "excused = unmatched & (on_ignored | in_region)",
      ("tests/test_eval_people.py",), "a duplicate box on a player in front of the stands would be excused"),
    M("benchmark-mirror-keeps-side", "benchmarks/open_quality.py",
      'swap = {"side-left": "side-right", "side-right": "side-left"}', "swap = {}",
      ("tests/test_open_quality.py",), "mirrored images would keep the original's side labels"),
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
    M("early-stop-comparison-sign", "metahmr_cli/tto/steps.py",
      "conv = upd & ((loss_prev - total).abs() < sched.tol)",
      "conv = upd & ((loss_prev - total).abs() > sched.tol)",
      ("tests/test_tto_equivalence.py::test_paper_adam_and_early_stop_match",
       "tests/test_tto_behaviour.py::test_early_stopped_person_leaves_others_bit_identical")),
    M("eft-leg-term-knee-slot", "metahmr_cli/tto/eft.py",
      '"gt": ((GT_R_KNEE, GT_R_ANKLE), (GT_L_KNEE, GT_L_ANKLE)),',
      '"gt": ((GT_R_HIP, GT_R_ANKLE), (GT_L_KNEE, GT_L_ANKLE)),',
      ("tests/test_tto_eft.py",), "EFT's right-leg direction measured from the hip"),
    # ---------------------------------------------------------------- files and resume
    M("torch-save-straight-to-final-path", "metahmr_cli/files.py",
      "    with atomic_path(path) as tmp:\n        torch.save(obj, tmp)\n",
      "    torch.save(obj, path)\n",
      ("tests/test_atomic_writes.py",)),
    M("save-npz-straight-to-final-path", "metahmr_cli/files.py",
      'with atomic_path(path) as tmp, open(tmp, "wb") as fh:\n        (np.savez_compressed',
      'with open(path, "wb") as fh:\n        (np.savez_compressed',
      ("tests/test_atomic_writes.py",), "datasets, eval caches and tracks are written in place"),
    M("atomic-rename-keeps-temp-on-error", "metahmr_cli/files.py",
      "        with contextlib.suppress(OSError):\n            tmp.unlink()\n        raise\n",
      "        raise\n",
      ("tests/test_atomic_writes.py",)),
    M("atomic-writer-yields-final-path", "metahmr_cli/files.py",
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
    M("warm-start-ignores-start-weights", "metahmr_cli/tto/steps.py",
      "            live[n] = torch.where(keep, w.to(base[n].dtype), base[n].unsqueeze(0))  # own storage\n",
      "            live[n] = base[n].unsqueeze(0).repeat(g, *[1] * base[n].ndim)\n",
      ("tests/test_tto_warm.py",), "warm-started TTO silently starts from the network's weights"),
    M("warm-start-keeps-backbone-features", "metahmr_cli/tto/engine.py",
      "            head_only=(False,) * len(sched.phases) if warm_backbone else _head_only_phases(main, sched),\n",
      "            head_only=_head_only_phases(main, sched),\n",
      ("tests/test_tto_warm.py",), "a warm start's backbone weights are ignored by head-only phases"),
    M("prefetch-runs-past-a-video", "metahmr_cli/pipeline/threads.py",
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
    # ---------------------------------------------------------------- exports and the world frame
    M("animation-times-from-the-track-start", "metahmr_cli/video/export.py",
      "times = (frames / float(fps)).astype(np.float32)",
      "times = ((frames - frames[0]) / float(fps)).astype(np.float32)",
      ("tests/test_video_export.py",), "tracks that start later play from time 0: imported together, out of sync"),
    M("amass-poses-in-smpl-layout", "metahmr_cli/video/sequences.py",
      "poses = np.zeros((n, AMASS_POSE_SIZE))", "poses = np.zeros((n, 72))",
      ("tests/test_video_export.py",), "AMASS readers slice poses[:, 66:] as the hands of a (T, 156) layout"),
    M("floor-from-the-prior-alone", "metahmr_cli/video/world.py",
      "vals, vecs = np.linalg.eigh(scatter + lam * prior)", "vals, vecs = np.linalg.eigh(lam * prior + 1e-9 * scatter)",
      ("tests/test_video_world.py",), "gravity from the people's lean instead of their foot contacts"),
    M("rerun-drops-earlier-export-formats", "metahmr_cli/pipeline/resume.py",
      "        return asked + tuple(f for f in EXPORT_SUFFIX if f in earlier and f not in asked)",
      "        return asked",
      ("tests/test_video_pipeline.py",), "a re-run with another --export deletes what the earlier run wrote"),
    # ---------------------------------------------------------------- video: strides, tracking, resume
    M("bvh-frame-time-ignores-stride", "metahmr_cli/video/export.py",
      'f"Frame Time: {max(int(stride), 1) / float(fps):.8f}"', 'f"Frame Time: {1 / float(fps):.8f}"',
      ("tests/test_video_export.py::test_exports_of_a_video_processed_every_second_frame",),
      "a video processed every 2nd frame plays twice too fast as BVH"),
    M("amass-frame-rate-ignores-stride", "metahmr_cli/video/sequences.py",
      "rate = float(fps) / max(int(stride), 1)", "rate = float(fps)",
      ("tests/test_video_export.py::test_exports_of_a_video_processed_every_second_frame",)),
    M("exports-written-without-the-stride", "metahmr_cli/exports.py",
      "write_bvh(path, t, body, fps=fps, stride=stride, world=world)",
      "write_bvh(path, t, body, fps=fps, world=world)",
      ("tests/test_video_pipeline.py::test_every_second_frame_tracks_exports_and_redoes_with_another_stride",)),
    M("gap-count-ignores-stride", "metahmr_cli/video/motion.py",
      "missed = (frame - track.last_frame) / self.stride - 1", "missed = (frame - track.last_frame) - 1",
      ("tests/test_video_motion.py::test_gaps_are_counted_in_processed_frames_with_a_stride",
       "tests/test_video_pipeline.py::test_every_second_frame_tracks_exports_and_redoes_with_another_stride"),
      "with a stride every processed frame counts as a gap: no warm starts"),
    M("video-fingerprint-without-stride", "metahmr_cli/pipeline/fingerprints.py",
      'key = {"base": base, "stride": config.video_stride, "video": v, "warm": warm}',
      'key = {"base": base, "video": v, "warm": warm}',
      ("tests/test_video_pipeline.py::test_every_second_frame_tracks_exports_and_redoes_with_another_stride",),
      "the frames of another stride are taken over by a resumed run"),
    M("settings-fingerprint-without-det-conf", "metahmr_cli/pipeline/fingerprints.py",
      '"detector": cfg.detector, "det_conf": cfg.det_conf, "det_iou": cfg.det_iou,',
      '"detector": cfg.detector, "det_iou": cfg.det_iou,',
      ("tests/test_resume.py::test_another_detector_threshold_redoes_an_image",)),
    M("warm-reset-iou-default", "metahmr_cli/video/motion.py",
      "    reset_iou: float = 0.3\n", "    reset_iou: float = 0.5\n",
      ("tests/test_video_motion.py::test_a_box_that_jumps_resets_the_warm_start_at_the_default_iou",)),
    M("resumed-rotation-filter-without-speed", "metahmr_cli/video/motion.py",
      "t.rotation.seed(rotmat[i], prev_r if dt is not None else None, step)",
      "t.rotation.seed(rotmat[i], None, step)",
      ("tests/test_video_motion.py::test_resumed_filters_continue_with_the_speed_of_the_stored_frames",)),
    M("iou-tracker-velocity-per-gap", "metahmr_cli/video/tracking.py",
      't["vel"] = 0.5 * t["vel"] + 0.5 * (boxes[i] - t["box"]) / gap',
      't["vel"] = 0.5 * t["vel"] + 0.5 * (boxes[i] - t["box"])',
      ("tests/test_video_motion.py::test_iou_tracker_predicts_with_its_per_frame_velocity_across_a_missed_frame",)),
    M("iou-tracker-prediction-one-frame", "metahmr_cli/video/tracking.py",
      'self._tracks[t]["vel"] * (self._frame - self._tracks[t]["seen"])', 'self._tracks[t]["vel"]',
      ("tests/test_video_motion.py::test_iou_tracker_predicts_with_its_per_frame_velocity_across_a_missed_frame",)),
    M("tracker-low-threshold-is-the-detectors", "metahmr_cli/video/tracking.py",
      "track_low_thresh=th / 2", "track_low_thresh=th",
      ("tests/test_video_motion.py::test_detections_below_the_detectors_threshold_only_extend_tracks",),
      "people imported below det_conf lose their track"),
    M("glb-quaternions-any-hemisphere", "metahmr_cli/video/export.py",
      "quats[t, flip] *= -1", "quats[t, flip] *= 1",
      ("tests/test_video_export.py::test_glb_rotations_interpolate_the_short_way_between_keyframes",),
      "a viewer interpolating the keyframes turns a joint the long way round"),
    M("warm-starts-for-batch-grouping", "metahmr_cli/estimator.py",
      'return bool(sched.phases) and sched.grouping == "person"', "return bool(sched.phases)",
      ("tests/test_resume.py::test_a_schedule_sharing_weights_per_batch_runs_videos_without_warm_starts",)),
    M("eval-forces-person-grouping", "metahmr_cli/evaluation/runner.py",
      "grouping=c.grouping,", 'grouping=c.grouping or "person",',
      ("tests/test_eval_runner.py::test_each_schedule_runs_with_its_own_grouping_by_default",)),
    M("v110-rule-needs-three-files", "metahmr_cli/body/smpl.py",
      "    if len(found) > 1 and _is_v110(found[0]):", "    if len(found) > 2 and _is_v110(found[0]):",
      ("tests/test_defaults.py::test_a_converted_v110_neutral_beside_the_v100_file_alone_does_not_shadow_it",)),
    M("movenet-boxes-not-grown-to-keypoints", "metahmr_cli/keypoints/movenet.py",
      "            boxes[i, :2] = np.minimum(boxes[i, :2], pts.min(axis=0))\n"
      "            boxes[i, 2:] = np.maximum(boxes[i, 2:], pts.max(axis=0))\n", "",
      ("tests/test_movenet.py::test_detector_boxes_grow_to_the_confident_keypoints",)),
    M("keypoint-encoder-sees-zero-confidence", "metahmr_cli/models/backbones/keypoints.py",
      "vis = (conf > 0).to(kp.dtype)", "vis = (conf >= 0).to(kp.dtype)",
      ("tests/test_models_regressor.py::test_keypoint_networks_ignore_where_a_missing_keypoint_is",),
      "missing keypoints feed their coordinates to the open model (6 mm PA-MPJPE before TTO)"),
    M("keypoint-synth-shoulders-swapped", "metahmr_cli/data/keypoint_synth.py",
      '"lshoulder": 34, "rshoulder": 33,', '"lshoulder": 33, "rshoulder": 34,',
      ("tests/test_data_keypoint_synth.py::test_noise_free_detections_put_every_keypoint_on_its_own_side",)),
    M("camera-elevation-sign", "metahmr_cli/data/poses.py",
      '_rot("x", view.elevation) @ _rot("x", 180.0)', '_rot("x", -view.elevation) @ _rot("x", 180.0)',
      ("tests/test_data_poses.py::test_camera_elevation_is_the_camera_above_looking_down",)),
    M("anny-to-smpl-axes", "metahmr_cli/body/builders/anny_mesh.py",
      "_ANNY_TO_SMPL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])",
      "_ANNY_TO_SMPL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])",
      ("tests/test_body_open.py::test_anny_points_map_onto_the_smpl_frame",)),
    M("writer-does-not-overlap-the-next-batch", "metahmr_cli/pipeline/runner.py",
      "                errors = self.estimator.regress(pending)  # meanwhile the previous batch's outputs are "
      "written\n                settle()\n",
      "                settle()\n                errors = self.estimator.regress(pending)\n",
      ("tests/test_prefetch.py::test_a_batchs_outputs_are_written_while_the_next_batch_runs",),
      "outputs are written after their batch instead of during the next one (the test waits 120 s, then fails)"),
    M("writer-not-drained-before-a-video", "metahmr_cli/pipeline/runner.py",
      "flush(drain=True)  # the images before it are finished and recorded first",
      "flush()  # the images before it are finished and recorded first",
      ("tests/test_prefetch.py::test_images_before_a_video_are_finished_and_recorded_before_it_starts",)),
    # ---------------------------------------------------------------- robustness (issue 22)
    M("lock-file-followed-through-a-link", "metahmr_cli/io/outdir.py",
      "flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC",
      "flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC",
      ("tests/test_process_faults.py::test_a_planted_lock_file_is_refused_and_what_it_points_to_is_untouched",)),
    M("resume-ignores-the-input-file", "metahmr_cli/pipeline/resume.py",
      "        if input_changed(prev.identity, self.identities[item.stem]) is not None:\n            return None\n",
      "",
      ("tests/test_resume.py::test_a_replaced_input_is_redone_and_the_log_says_why",),
      "a photo replaced under the same name keeps the old photo's results"),
    M("video-resume-state-not-loaded", "metahmr_cli/pipeline/video.py",
      "book.load_state(*state, warm=self.warm_from_arrays)", "pass",
      ("tests/test_video_pipeline.py::test_a_resumed_video_equals_the_uninterrupted_run",),
      "a resumed video restarts its tracks' warm starts and filters from the stored results"),
    M("estimator-networks-without-lock", "metahmr_cli/estimator.py",
      "        with self._networks_lock:\n            return self._regress(frames)\n",
      "        return self._regress(frames)\n",
      ("tests/test_api_robustness.py::test_one_estimator_serves_several_threads_with_the_sequential_results",)),
    M("numpy-dtypes-by-prefix", "metahmr_cli/models/checkpoints.py",
      "if not names or not all(n in allowed for n in names):",
      'if not names or not all(n in allowed or n.startswith("numpy.dtypes.") for n in names):',
      ("tests/test_models_checkpoints.py::test_numpy_dtypes_private_helper_is_refused",)),
    M("config-bool-accepts-text", "metahmr_cli/config.py",
      "    if tp is bool:\n        if isinstance(value, bool):",
      "    if tp is bool:\n        if isinstance(value, bool | str):",
      ("tests/test_config_assets.py",), 'render = "no" renders'),
    M("api-focal-not-checked", "metahmr_cli/estimator.py",
      'K64, rule = intrinsics(check_focal(focal, (H, W)), W, H), "focal"',
      'K64, rule = intrinsics(focal, W, H), "focal"',
      ("tests/test_api_robustness.py",)),
    M("data-check-without-ranges", "metahmr_cli/data/check.py",
      "            elif key in VALUE_RANGES and n:", "            elif False:",
      ("tests/test_data_check.py::test_check_reports_values_out_of_range",)),
    M("train-run-folder-not-locked", "metahmr_cli/training/trainer.py",
      "        lock.__enter__()\n        self._lock = lock\n", "        self._lock = lock\n",
      ("tests/test_train_run.py::test_killed_and_resumed_run_is_identical",),
      "two train --resume of one run both write its log and checkpoints"),
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
