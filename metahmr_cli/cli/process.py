"""``metahmr process``: photos and videos in, SMPL meshes (.npz), overlays and a manifest out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from metahmr_cli.cli.common import print_error
from metahmr_cli.config import apply_overrides, load_config_file
from metahmr_cli.errors import MetaHMRError
from metahmr_cli.io.outdir import DiskFullError, check_output_folder
from metahmr_cli.io.sources import expand_inputs

EPILOG = """\
Examples:

  metahmr process ./photos --out results/                      # every image in the folder

  metahmr process ./photos --model open                        # the open tier, even with SMPL installed

  metahmr process clip.mp4 --out results/ --side-view          # overlay MP4 at the source frame rate

  metahmr process clip.mp4 --export glb,bvh --smooth 2          # tracked people as animations, smoother

  metahmr process ./photos --save-mesh glb,obj                  # again with meshes: written from the results

  metahmr process "shots/**/*.jpg" --tto reference --steps 14   # the released evaluation schedule

  metahmr process ./photos --tto none --no-render               # plain regression, result files only

  metahmr process ./photos --keypoints mediapipe --save-mesh obj

  metahmr process crowd.jpg --people-sizes 256,384 --people-tile 768   # smaller people in a large frame

  metahmr process ./photos --detector movenet --keypoints movenet     # MoveNet MultiPose alone (<= 6 people)

  metahmr process ./photos --boxes-json boxes.json --keypoints-json people.json --keypoints openpose-json

  metahmr process ./photos --config run.toml                    # any setting from a TOML/JSON file

  metahmr process ./videos --out results/ --backend ray         # every GPU of this machine, one worker each

  metahmr process /nfs/shots --out /nfs/results --backend ray --ray-address auto   # a Ray cluster; --out shared

Outputs (see docs/output-schema.md): <stem>.npz per image (<stem>/frame_NNNNNN.npz per video frame),
<stem>_overlay.png / <stem>.mp4, optional meshes, manifest.jsonl (one status per input) and summary.json.
Videos also get <stem>_tracks.npz (every tracked person's motion) and <stem>_tracks/track_NNN.npz|glb|bvh.
Finished inputs are skipped on a re-run unless --overwrite is given (with either backend).
Exit codes: 0 all inputs ok or without people, 1 some inputs failed, 2 usage or setup error.
"""

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add the ``process`` command to the root app."""

    @app.command("process", epilog=EPILOG)
    def process(
        inputs: list[str] | None = typer.Argument(None, help="Images, videos, folders or quoted glob patterns "
                                                            "(or `inputs` in --config)."),
        out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default: results)."),
        config: Path | None = typer.Option(None, "--config", help="TOML/JSON file with any process setting."),
        recursive: bool = typer.Option(False, "--recursive", "-r", help="Scan sub-folders of folders."),
        weights: Path | None = typer.Option(None, "--weights", help="Weights root to look in first."),
        model: str | None = typer.Option(
            None, "--model", help="auto | paper | open (default: auto: the paper tier, SMPL + the Meta-HMR release, "
                                  "when installed, else the open tier: open body + open model + MoveNet)."),
        checkpoint: Path | None = typer.Option(
            None, "--checkpoint", help="Network checkpoint (default: the tier's: the Meta-HMR HRNet release, or "
                                       "the open model shipped with metahmr). With --model auto, a checkpoint "
                                       "trained on the open body runs the open tier."),
        body: str | None = typer.Option(None, "--body", help="smpl | open | standin | PATH to a body folder "
                                                             "(default: the tier's)."),
        gender: str | None = typer.Option(None, "--gender", help="neutral | male | female (default: neutral)."),
        detector: str | None = typer.Option(None, "--detector", help="YOLO weights name or path (yolo11m.pt), "
                                                 "'finder' (the open people finder: CenterNet boxes + MoveNet "
                                                 "MultiPose at several sizes and on tiles, each checked by MoveNet "
                                                 "Thunder), 'centernet' (its boxes alone), 'movenet' (MoveNet "
                                                 "MultiPose alone, one size, <= 6 people; the open models come from "
                                                 "`metahmr weights fetch-open`) or 'mediapipe' (one person per "
                                                 "image); default: YOLO when installed and the tier is paper, else "
                                                 "finder."),
        det_conf: float | None = typer.Option(None, "--det-conf", help="Detection score threshold (default: 0.5 "
                                                                       "for YOLO, 0.25 for the finder, 0.3 for "
                                                                       "CenterNet, 0.2 for MoveNet)."),
        det_iou: float | None = typer.Option(None, "--det-iou", help="Detection NMS IoU (default: 0.45)."),
        max_people: int | None = typer.Option(None, "--max-people", help="Most people per image (default: all)."),
        min_box: float | None = typer.Option(None, "--min-box", help="Smallest box side in pixels (default: 16, "
                                                                     "8 for the open detectors)."),
        people_sizes: str | None = typer.Option(
            None, "--people-sizes", help="Finder: MoveNet MultiPose input sizes, multiples of 32 (default: 256; "
                                         "'none' = CenterNet boxes only)."),
        people_tile: int | None = typer.Option(
            None, "--people-tile", help="Finder: images longer than 1.2x this are also cut into overlapping tiles "
                                        "of this many pixels, for small people (default: 1024; 0 = never)."),
        people_boxes: str | None = typer.Option(
            None, "--people-boxes", help="Finder: box detector, centernet | none (default: centernet)."),
        people_evidence: float | None = typer.Option(
            None, "--people-evidence", help="Finder: a box is a person when the scores of its seen keypoints add "
                                            "up to this (default: 4; a clear head-and-shoulders view gives 4.5-6)."),
        keypoints: str | None = typer.Option(
            None, "--keypoints",
            help="rtmpose | yolo-pose | mediapipe | movenet | movenet-thunder | openpose-json | coco-json | mmpose "
                 "(default: rtmpose when installed and the tier is paper, else movenet-thunder: MoveNet Thunder on "
                 "each person's crop)."),
        keypoints_model: str | None = typer.Option(
            None, "--keypoint-model", "--keypoints-model", help="Model file of the keypoint backend."),
        boxes_json: Path | None = typer.Option(None, "--boxes-json", help="Import person boxes from JSON."),
        keypoints_json: Path | None = typer.Option(None, "--keypoints-json", help="Import 2D keypoints (JSON)."),
        focal: str | None = typer.Option(None, "--focal", help="Focal length: pixels for every input, 'diagonal' "
                                                               "(default: sqrt(W^2 + H^2), as CLIFF/Meta-HMR were "
                                                               "trained) or 'exif' (the photo's EXIF focal)."),
        fov: float | None = typer.Option(None, "--fov", help="Horizontal field of view in degrees."),
        tto: str | None = typer.Option(None, "--tto", help="metahmr (default: the released refinement, per person, "
                                                           "starting with the inner loop the checkpoint records) "
                                                           "| reference (one copy per batch of 20) | paper (Eq. 9) "
                                                           "| eft | none."),
        steps: int | None = typer.Option(None, "--steps", help="Most TTO steps (default: schedule default, 14)."),
        scope: str | None = typer.Option(None, "--scope", help="head | last_stage | all (default: schedule default)."),
        grouping: str | None = typer.Option(None, "--grouping", help="person | batch (default: schedule default)."),
        lr: float | None = typer.Option(None, "--lr", help="TTO learning rate (default: schedule default)."),
        optimizer: str | None = typer.Option(None, "--optimizer", help="TTO optimiser: sgd | adam (default: "
                                                                       "schedule default)."),
        batch_size: int | None = typer.Option(None, "--batch-size", help="People per network batch (default: 32)."),
        device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N (default: auto)."),
        dtype: str | None = typer.Option(None, "--dtype", help="float32 | float64 (default: float32)."),
        render: bool | None = typer.Option(None, "--render/--no-render", help="Write overlays (default: on)."),
        side_view: bool = typer.Option(False, "--side-view", help="Also render a side view."),
        save_mesh: str | None = typer.Option(None, "--save-mesh", help="Per-person meshes, comma-separated: obj, "
                                                                       "ply, glb (e.g. glb,obj) or none (default). A "
                                                                       "re-run adds formats from the stored results."),
        save_vertices: bool | None = typer.Option(
            None, "--save-vertices/--no-save-vertices", help="Store vertices in the .npz (default: on)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Redo inputs that are already done."),
        video_stride: int | None = typer.Option(None, "--video-stride", help="Every n-th video frame (default: 1)."),
        max_frames: int | None = typer.Option(None, "--max-frames", help="Most frames per video (default: all)."),
        tracker: str | None = typer.Option(None, "--tracker", help="Video person tracking: auto | bytetrack | iou | "
                                                                  "none (default: auto: ByteTrack when installed)."),
        smooth: float | None = typer.Option(None, "--smooth", help="Video smoothing strength: 0 = off, 1 = default, "
                                                                 "2 = twice as smooth."),
        warm_start: bool | None = typer.Option(None, "--warm-start/--cold-start",
                                               help="Video TTO starts from the person's previous frame "
                                                    "(default: on where the schedule allows it)."),
        export: str | None = typer.Option(None, "--export", help="Per-track video exports, comma-separated: amass, "
                                                                "glb, bvh or none (default: amass). A re-run adds "
                                                                "formats and keeps earlier ones."),
        world: str | None = typer.Option(None, "--world", help="Axes of the video exports: ground (floor and gravity "
                                                              "from the people's foot contacts, static camera; "
                                                              "default) or camera."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
        max_pixels: int | None = typer.Option(None, "--max-pixels", help="Largest image decoded, width x height "
                                                                          "(default 100000000)."),
        wait: bool = typer.Option(False, "--wait", help="If another metahmr run writes to --out, wait for it instead "
                                                       "of stopping."),
        prefetch: int | None = typer.Option(None, "--prefetch", help="Images read, detected and given keypoints "
                                                                     "ahead, and outputs written, by background "
                                                                     "threads while TTO runs (default: 4 on a GPU, 0 "
                                                                     "on a CPU; 0 = one stage at a time)."),
        self_aux: bool = typer.Option(False, "--self-aux", help="With a single-network checkpoint (official "
                                                              "CLIFF/SPIN), use it as its own auxiliary net for "
                                                              "metahmr/reference/paper (labelled +self-aux)."),
        backend: str | None = typer.Option(None, "--backend", help="local (default: this process) | ray (Ray Data "
                                                                   "workers, the same outputs; needs the ray "
                                                                   "extra)."),
        ray_address: str | None = typer.Option(None, "--ray-address", help="With --backend ray: auto (the cluster "
                                                                           "this machine joined) or HOST:PORT of the "
                                                                           "Ray head (default: a local Ray instance "
                                                                           "with every CPU and GPU here)."),
        workers: int | None = typer.Option(None, "--workers", help="With --backend ray: workers, each loading the "
                                                                   "models once (default: one per GPU, or per "
                                                                   "--cpus-per-worker CPUs without GPUs)."),
        gpus_per_worker: float | None = typer.Option(None, "--gpus-per-worker", help="With --backend ray: GPUs per "
                                                                                     "worker (default: 1 when the "
                                                                                     "cluster has GPUs, else 0)."),
        cpus_per_worker: float | None = typer.Option(None, "--cpus-per-worker", help="With --backend ray: CPUs per "
                                                                                     "worker (default: 1)."),
    ) -> None:
        """Recover SMPL meshes of every person in photos and videos.

        Detects people, estimates 2D keypoints, regresses SMPL with the main network and refines each person
        with test-time optimisation guided by the auxiliary network.
        """
        inputs = list(inputs or [])
        if not inputs and config is None:  # one line, not the whole help
            print_error(console, "missing INPUTS: give images, videos, folders or glob patterns, e.g. `metahmr "
                                 "process ./photos --out results/` (`metahmr process --help` lists every option)")
            raise typer.Exit(code=2)
        try:  # a missing input or an unusable --out is reported at once, before torch and the models load
            if inputs:
                expand_inputs(inputs, recursive=recursive, report_problems=True)
            if out is not None:
                check_output_folder(out, create=False)  # created once the settings are valid
        except MetaHMRError as exc:
            print_error(console, exc)
            raise typer.Exit(code=2) from None

        from metahmr_cli.pipeline import Pipeline  # torch and the models' code: only once the inputs are usable
        from metahmr_cli.process_config import ProcessConfig

        overrides: dict[str, Any] = {
            "inputs": inputs or None, "out": out, "recursive": recursive or None, "weights": weights,
            "model": model, "checkpoint": checkpoint, "body": body, "gender": gender, "detector": detector,
            "det_conf": det_conf,
            "det_iou": det_iou, "max_people": max_people, "min_box": min_box, "keypoints": keypoints,
            "people.sizes": people_sizes, "people.tile": people_tile, "people.boxes": people_boxes,
            "people.min_evidence": people_evidence,
            "keypoints_model": keypoints_model, "boxes_json": boxes_json, "keypoints_json": keypoints_json,
            "focal": focal, "fov": fov, "batch_size": batch_size, "device": device, "dtype": dtype,
            "render": render, "side_view": side_view or None,
            "save_mesh": None if save_mesh is None else tuple(m.strip() for m in save_mesh.split(",")),
            "save_vertices": save_vertices,
            "overwrite": overwrite or None, "video_stride": video_stride, "max_frames": max_frames,
            "tto.schedule": tto, "tto.max_steps": steps, "tto.scope": scope, "tto.grouping": grouping,
            "tto.lr": lr, "tto.optimizer": optimizer, "self_aux": self_aux or None, "max_pixels": max_pixels,
            "wait": wait or None, "prefetch": prefetch, "video.tracker": tracker, "video.smooth": smooth,
            "video.warm_start": warm_start, "video.world": world,
            "video.export": None if export is None else tuple(e.strip() for e in export.split(",")
                                                            if e.strip() and e.strip() != "none"),
            "backend": backend, "ray.address": ray_address, "ray.workers": workers,
            "ray.gpus_per_worker": gpus_per_worker, "ray.cpus_per_worker": cpus_per_worker,
        }
        try:
            cfg = ProcessConfig()
            if config is not None:
                cfg = apply_overrides(cfg, load_config_file(config))
            cfg = apply_overrides(cfg, overrides)
            if cfg.backend == "ray":
                from metahmr_cli.distributed.ray_backend import RayRunner

                report = RayRunner(cfg, progress=progress, console=console).run()
            else:
                report = Pipeline(cfg, progress=progress, console=console).run()
        except DiskFullError as exc:
            print_error(console, exc)
            raise typer.Exit(code=1) from None
        except MetaHMRError as exc:
            print_error(console, exc)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            console.print("interrupted: the outputs of finished inputs are kept (and in manifest.jsonl); run the same "
                          "command again to continue", markup=False, highlight=False)
            raise typer.Exit(code=130) from None
        c = report.counts
        style = "red" if c["failed"] else "green"
        console.print(
            f"[{style}]done[/]: {c['ok']} ok, {c['no_person']} without people, {c['no_keypoints']} without usable "
            f"keypoints, {c['failed']} failed, "
            f"{c['skipped']} skipped -> {escape(str(report.out_dir))} (manifest.jsonl, summary.json)", highlight=False,
            soft_wrap=True)
        if c["failed"]:
            console.print("failed inputs and reasons are listed in manifest.jsonl", highlight=False)
        raise typer.Exit(code=report.exit_code)
