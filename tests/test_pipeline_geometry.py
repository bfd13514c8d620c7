"""What the pipeline feeds the networks and what it writes, checked against hand computations.

The crop, keypoints, bbox_info and full-image camera are recomputed here from the formulas of the released
CLIFF / Meta-HMR code (box margin 1.1 and 256:192 aspect, zoom 256 / (200 s), ImageNet normalisation,
bbox_info with 2.8 / 0.24 / 0.06, cam_crop2full), not with the library functions under test.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_pipeline_support import tiny_checkpoint_fixture  # noqa: F401  (fixture)

from metahmr_cli.body.smpl import load_body_model
from metahmr_cli.detect import Detections
from metahmr_cli.geometry.rotation import axis_angle_to_rotmat
from metahmr_cli.io.writers import load_result_npz
from metahmr_cli.pipeline import Pipeline
from metahmr_cli.process_config import ProcessConfig
from metahmr_cli.tto import TTOConfig

H, W = 300, 400
BOX = np.array([120.0, 40.0, 220.0, 260.0], np.float32)
FOCAL = 500.0


def _gradient_image(path: Path) -> Path:
    """R grows with x, G with y, B constant: a bilinear crop of it can be predicted exactly."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    img = np.stack([xx * 255 / (W - 1), yy * 255 / (H - 1), np.full_like(xx, 40.0)], -1)
    Image.fromarray(img.round().astype(np.uint8)).save(path)
    return path


class _Det:
    def detect(self, image):
        return Detections(BOX[None].copy(), np.array([0.9], np.float32))


def _keypoints() -> np.ndarray:
    kp = np.zeros((1, 49, 3), np.float32)
    rng = np.random.default_rng(0)
    kp[0, 25:, 0] = rng.uniform(125, 215, 24)
    kp[0, 25:, 1] = rng.uniform(45, 255, 24)
    kp[0, 25:, 2] = 1.0
    return kp


class _KP:
    def __call__(self, image, boxes, *, path, frame):
        return _keypoints()


def _run(tmp_path, standin_dir, checkpoint, monkeypatch, schedule="eft"):
    import metahmr_cli.tto as tto

    seen = {}
    real = tto.run_tto

    def spy(main, aux, body, inputs, config, **kw):
        res = real(main, aux, body, inputs, config, **kw)
        seen.update(inputs=inputs, config=config, res=res)
        return res

    monkeypatch.setattr(tto, "run_tto", spy)
    img = _gradient_image(tmp_path / "grad.png")
    out = tmp_path / "out"
    cfg = ProcessConfig(inputs=[str(img)], out=out, body=str(standin_dir), checkpoint=checkpoint, device="cpu",
                        keypoints="mediapipe", tto=TTOConfig(schedule=schedule, max_steps=2), render=False,
                        focal=FOCAL, dtype="float64")
    report = Pipeline(cfg, detector=_Det(), keypoints=_KP(), progress=False).run()
    assert report.exit_code == 0
    return seen, load_result_npz(out / "grad.npz")


def _hand_box():
    x1, y1, x2, y2 = (float(v) for v in BOX)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    b = max((x2 - x1) * 256 / 192, y2 - y1) * 1.1  # box height in pixels (= 200 * scale)
    return cx, cy, b


def _hand_transl(cam, cx, cy, b):
    s, tx, ty = cam
    bs = b * s
    return np.array([2 * (cx - W / 2) / bs + tx, 2 * (cy - H / 2) / bs + ty, 2 * FOCAL / bs])


def test_crop_keypoints_and_bbox_info_match_the_released_formulas(tmp_path, standin_dir, tiny_checkpoint,
                                                                   monkeypatch):
    seen, _ = _run(tmp_path, standin_dir, tiny_checkpoint, monkeypatch)
    inp = seen["inputs"]
    cx, cy, b = _hand_box()
    np.testing.assert_allclose(inp.crop.center[0].numpy(), [cx, cy], atol=1e-9)
    np.testing.assert_allclose(float(inp.crop.scale[0]), b / 200, rtol=1e-9)
    np.testing.assert_allclose(float(inp.crop.focal[0]), FOCAL)

    # crop pixel (u, v) shows image point centre + (u - 96, v - 128) * b / 256; RGB order, /255, ImageNet
    assert tuple(inp.images.shape) == (1, 3, 256, 192)
    mean = np.array([0.485, 0.456, 0.406])
    std = np.array([0.229, 0.224, 0.225])
    crop = (inp.images[0].permute(1, 2, 0).double().numpy() * std + mean) * 255
    for u, v in [(50, 70), (96, 128), (150, 200), (10, 240)]:
        xf, yf = cx + (u - 96) * b / 256, cy + (v - 128) * b / 256
        expected = [xf * 255 / (W - 1), yf * 255 / (H - 1), 40.0]
        np.testing.assert_allclose(crop[v, u], expected, atol=1.0)

    # keypoints: the same map, then [-1, 1] with x / 96 - 1 and y / 128 - 1; empty slots stay zero
    kp_full = _keypoints()[0]
    kp = inp.keypoints2d[0].numpy()
    xn = (96 + (kp_full[25:, 0] - cx) * 256 / b) / 96 - 1
    yn = (128 + (kp_full[25:, 1] - cy) * 256 / b) / 128 - 1
    np.testing.assert_allclose(kp[25:, 0], xn, atol=1e-6)
    np.testing.assert_allclose(kp[25:, 1], yn, atol=1e-6)
    np.testing.assert_array_equal(kp[25:, 2], 1.0)
    assert not kp[:25].any()

    bi = inp.crop.bbox_info()[0].numpy()
    np.testing.assert_allclose(
        bi, [(cx - W / 2) / FOCAL * 2.8, (cy - H / 2) / FOCAL * 2.8, (b - 0.24 * FOCAL) / (0.06 * FOCAL)],
        rtol=1e-9)


def test_written_results_are_consistent_with_k_and_the_body(tmp_path, standin_dir, tiny_checkpoint, monkeypatch):
    seen, d = _run(tmp_path, standin_dir, tiny_checkpoint, monkeypatch)
    res = seen["res"]
    cx, cy, b = _hand_box()
    assert seen["config"].camera == "cliff"
    np.testing.assert_allclose(d["K"], [[FOCAL, 0, W / 2], [0, FOCAL, H / 2], [0, 0, 1]])
    np.testing.assert_allclose(d["transl"][0], _hand_transl(res.cam_crop[0].numpy(), cx, cy, b), rtol=1e-5)

    # joints3d are in the camera frame with transl: K projects them; their mean distance to the 24 given
    # keypoints is the reported reprojection error
    J = d["joints3d"][0].astype(np.float64)
    uv = (J / J[:, 2:]) @ d["K"].astype(np.float64).T
    err = np.linalg.norm(uv[25:, :2] - _keypoints()[0, 25:, :2], axis=1).mean()
    np.testing.assert_allclose(err, float(d["reproj_error_after"][0]), rtol=1e-4)

    # axis-angle -> rotation matrices gives back the network's rotations; the body + transl gives the vertices
    aa = np.concatenate([d["global_orient"], d["body_pose"]], 1).reshape(24, 3)
    R = axis_angle_to_rotmat(torch.from_numpy(aa).double())[None]
    np.testing.assert_allclose(R.numpy(), res.rotmat.double().numpy(), atol=1e-5)
    body = load_body_model(standin_dir, "neutral", dtype=torch.float64)
    out = body(R, torch.from_numpy(d["betas"]).double(), torch.from_numpy(d["transl"]).double())
    np.testing.assert_allclose(out.vertices.numpy(), d["vertices"], atol=1e-5)
    np.testing.assert_allclose(out.joints.numpy(), d["joints3d"], atol=1e-5)


@pytest.fixture(scope="module")
def tiny_hmr_checkpoint(standin_dir, tmp_path_factory) -> Path:
    from metahmr_cli.body.smpl import load_mean_params
    from metahmr_cli.models import build_regressor, save_networks

    mean = load_mean_params(standin_dir)
    torch.manual_seed(0)
    main = build_regressor("hmr", "resnet_tiny", n_iter=3, mean_params=mean)
    aux = build_regressor("hmr", "resnet_tiny", n_iter=3, mean_params=mean)
    return save_networks(tmp_path_factory.mktemp("ckpt") / "tiny_hmr.pt", main, aux)


@pytest.mark.parametrize("schedule", ["none", "metahmr"])
def test_hmr_checkpoint_uses_the_crop_camera_and_writes_full_image_transl(tmp_path, standin_dir,
                                                                          tiny_hmr_checkpoint, monkeypatch,
                                                                          schedule):
    seen, d = _run(tmp_path, standin_dir, tiny_hmr_checkpoint, monkeypatch, schedule=schedule)
    assert seen["config"].camera == "hmr"
    assert json.loads(str(d["tto_config"]))["camera"] == "hmr"
    cx, cy, b = _hand_box()
    cam = seen["res"].cam_crop[0].numpy()
    np.testing.assert_allclose(d["transl"][0], _hand_transl(cam, cx, cy, b), rtol=1e-5)
    # the model-frame origin lands on the same pixel through the SPIN crop camera (focal 5000, 256 px box,
    # principal point at the crop centre, mapped back to the image) and through K with transl
    s, tx, ty = cam
    u_crop, v_crop = 96 + 5000 * tx / (2 * 5000 / (256 * s)), 128 + 5000 * ty / (2 * 5000 / (256 * s))
    T = d["transl"][0].astype(np.float64)
    np.testing.assert_allclose([FOCAL * T[0] / T[2] + W / 2, FOCAL * T[1] / T[2] + H / 2],
                               [cx + (u_crop - 96) * b / 256, cy + (v_crop - 128) * b / 256], rtol=1e-4)


def test_progress_bar_shows_file_names_verbatim(tmp_path, standin_dir, tiny_checkpoint):
    """Without a terminal the progress is plain lines; names with brackets are printed as they are."""
    from rich.console import Console

    from metahmr_cli.progress import WorkProgress

    buf = io.StringIO()
    console = Console(file=buf, width=200, force_terminal=False, color_system=None)
    with WorkProgress(label="process", unit="images+frames", console=console, every=0.0) as progress:
        progress.add_work("shot", 1, "image")
        progress.add_work("clip", 2, "frame")
        progress.advance("shot", 1, people=1, name="[red]shot.jpg")
        progress.advance("clip", 2, people=2, name="clip.mp4 frame 1")
    text = buf.getvalue()
    assert "[red]shot.jpg" in text and "1/3 images+frames" in text and "ETA" in text
    assert "3/3 images+frames" in text
