"""Defaults that decide what a user gets without flags: TTO schedule, focal length, SMPL file, eval protocol."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from metahmr_cli.geometry.camera import focal_for_image
from metahmr_cli.losses import LossWeights
from metahmr_cli.tto import TTOConfig, resolve_schedule
from metahmr_cli.tto.eft import eft_loss

# ---------------------------------------------------------------------------------------------- TTO schedule


def test_default_schedule_is_the_released_procedure_per_person():
    sched = resolve_schedule(TTOConfig())
    assert sched.name == "metahmr" and sched.grouping == "person"
    first, second = sched.phases
    # step 0: SGD 1e-5 on the head with the pseudo loss; then Adam 1e-5 on all weights with the 2D loss, 14 steps
    assert (first.scope, first.optimizer, first.lr, first.loss, first.steps) == ("head", "sgd", 1e-5, "expl", 1)
    assert (second.scope, second.optimizer, second.lr, second.loss, second.steps) == ("all", "adam", 1e-5, "2d", 14)
    assert (sched.stop_rule, sched.tol) == ("delta", 2e-5)
    # the released evaluation differs only in its grouping: one copy per batch of 20
    ref = resolve_schedule(TTOConfig(schedule="reference"))
    assert ref.phases == sched.phases and (ref.grouping, ref.group_size) == ("batch", 20)


def test_paper_schedule_keeps_eq9_with_settable_optimizer_and_lr():
    sched = resolve_schedule(TTOConfig(schedule="paper"))
    (phase,) = sched.phases
    assert (phase.scope, phase.optimizer, phase.lr, phase.loss, phase.steps) == ("head", "sgd", 1e-5, "expl", 14)
    (phase,) = resolve_schedule(TTOConfig(schedule="paper", optimizer="adam", lr=3e-4)).phases
    assert (phase.optimizer, phase.lr) == ("adam", 3e-4)


def test_eft_stops_at_its_test_time_threshold():
    assert resolve_schedule(TTOConfig(schedule="eft")).tol == 2e-4


# ---------------------------------------------------------------------------------------------- focal length


def test_focal_is_the_image_diagonal_unless_exif_is_asked_for():
    w, h = 4032, 3024
    exif = 0.6 * math.hypot(w, h)  # a phone's EXIF focal
    assert focal_for_image(w, h, exif_focal=exif) == (math.hypot(w, h), "diagonal")
    assert focal_for_image(w, h, focal="diagonal", exif_focal=exif) == (math.hypot(w, h), "diagonal")
    assert focal_for_image(w, h, focal="exif", exif_focal=exif) == (exif, "exif")
    assert focal_for_image(w, h, focal="exif", exif_focal=None) == (math.hypot(w, h), "diagonal")
    assert focal_for_image(w, h, focal=1000.0, exif_focal=exif) == (1000.0, "focal")


def test_process_with_an_exif_photo_uses_the_diagonal_by_default(tmp_path, standin_body):
    """A JPEG whose EXIF says 26 mm (35 mm equivalent): K holds sqrt(W^2 + H^2) and says so; --focal exif gives
    26 mm on the 36x24 mm frame diagonal: 26 * 500 / hypot(36, 24) = 300.46 px."""
    from PIL import Image

    from metahmr_cli.detect.base import Detections
    from metahmr_cli.pipeline import Pipeline
    from metahmr_cli.process_config import ProcessConfig

    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 26  # FocalLengthIn35mmFilm
    Image.new("RGB", (400, 300), (90, 120, 150)).save(path, exif=exif)

    class Nobody:
        def detect(self, image):
            return Detections.empty()

    for focal, want_f, want_rule in ((None, 500.0, "diagonal"), ("exif", 26 * 500 / math.hypot(36, 24), "exif")):
        cfg = ProcessConfig(inputs=[str(path)], out=tmp_path / "out", focal=focal, render=False)
        pipe = Pipeline(cfg, detector=Nobody(), keypoints=lambda *a, **k: None, networks=_tiny_networks(),
                        body=standin_body)
        pipe.setup()
        from metahmr_cli.io.sources import expand_inputs

        (item,) = expand_inputs([str(path)])
        frame = pipe._prepare_image(item)
        assert frame.K[0, 0] == pytest.approx(want_f, rel=1e-6) and frame.K[1, 1] == pytest.approx(want_f, rel=1e-6)
        assert frame.focal_rule == want_rule


def _tiny_networks(kind: str = "metahmr"):
    import copy
    from types import SimpleNamespace

    from fixtures.models import make_tiny_regressor

    net = make_tiny_regressor("cliff")
    return SimpleNamespace(main=net, aux=copy.deepcopy(net), kind=kind, identifier="tiny.pt@abc")


# ---------------------------------------------------------------------------------------------- SMPL files


def _fake_smpl_arrays(components: int) -> dict[str, np.ndarray]:
    from metahmr_cli.body.joints import SMPL_PARENTS

    v = 6890
    rng = np.random.default_rng(0)
    jreg = np.zeros((24, v))
    jreg[np.arange(24), np.arange(24)] = 1.0
    weights = np.zeros((v, 24))
    weights[:, 0] = 1.0
    kintree = np.array([[4294967295 if p < 0 else p for p in SMPL_PARENTS], list(range(24))], np.int64)
    return {"v_template": rng.normal(size=(v, 3)), "shapedirs": rng.normal(size=(v, 3, components)) * 1e-3,
            "posedirs": np.zeros((v, 3, 207)), "J_regressor": jreg, "weights": weights,
            "kintree_table": kintree, "f": rng.integers(0, v, size=(100, 3))}


def test_v110_neutral_is_recognised_by_content_and_imported_with_a_warning(tmp_path, caplog):
    from metahmr_cli.body.builders.pkl import import_smpl_files
    from metahmr_cli.body.smpl_pkl import smpl_release

    src = tmp_path / "src"
    src.mkdir()
    np.savez(src / "my_neutral_model.npz", **_fake_smpl_arrays(300), gender=np.array("neutral"))
    np.savez(src / "my_male_model.npz", **_fake_smpl_arrays(10), gender=np.array("male"))
    with caplog.at_level(logging.WARNING):
        written = import_smpl_files([src / "my_neutral_model.npz", src / "my_male_model.npz"], tmp_path / "smpl")
    assert "v1.1.0's neutral model" in caplog.text and "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl" in caplog.text
    assert caplog.text.count("v1.1.0's neutral") == 1  # the male file (10 components) does not warn
    with np.load(written[0]) as d:
        assert str(d["smpl_release"]) == "v1.1.0"
    assert smpl_release(_fake_smpl_arrays(10)) == "v1.0.0"


def test_smplify_neutral_wins_over_v110(tmp_path):
    from metahmr_cli.body.smpl import find_model_file

    folder = tmp_path / "smpl"
    folder.mkdir()
    for name in ("basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl", "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"):
        (folder / name).write_bytes(b"x")
    assert find_model_file(folder).name == "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    # a converted SMPL_NEUTRAL.npz made from v1.1.0 does not shadow the v1.0.0 file either
    np.savez(folder / "SMPL_NEUTRAL.npz", smpl_release=np.array("v1.1.0"))
    assert find_model_file(folder).name == "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    np.savez(folder / "SMPL_NEUTRAL.npz", smpl_release=np.array("v1.0.0"))
    assert find_model_file(folder).name == "SMPL_NEUTRAL.npz"


def test_a_converted_v110_neutral_beside_the_v100_file_alone_does_not_shadow_it(tmp_path):
    """Two neutral files only: SMPL_NEUTRAL.npz converted from v1.1.0 (first in the lookup order) and SMPLify's
    v1.0.0 .pkl: the v1.0.0 file is the body, recognised by the npz's recorded release or, without it, by its 300
    shape components."""
    from metahmr_cli.body.smpl import find_model_file

    for marker in ({"smpl_release": np.array("v1.1.0")}, {"shapedirs": np.zeros((4, 3, 300))}):
        folder = tmp_path / f"smpl_{len(marker['shapedirs']) if 'shapedirs' in marker else 'tag'}"
        folder.mkdir()
        np.savez(folder / "SMPL_NEUTRAL.npz", **marker)
        (folder / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl").write_bytes(b"x")
        assert find_model_file(folder).name == "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
        (folder / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl").unlink()
        assert find_model_file(folder).name == "SMPL_NEUTRAL.npz"  # alone, it is still used (with a warning)


# ---------------------------------------------------------------------------------------------- EFT leak


def test_eft_leg_term_reads_only_openpose_keypoints_under_openpose_weights():
    gen = torch.Generator().manual_seed(0)
    joints = 0.3 * torch.randn(2, 49, 3, generator=gen)
    cam = torch.tensor([[0.9, 0.05, -0.1], [1.1, 0.0, 0.1]])
    betas = torch.randn(2, 10, generator=gen)
    kp = torch.cat([torch.rand(2, 49, 2, generator=gen) * 1.6 - 0.8, torch.ones(2, 49, 1)], dim=-1)
    openpose = LossWeights(openpose_2d=1.0, gt_2d=0.0)
    noisy = kp.clone()
    noisy[:, 25:, :2] = torch.rand(2, 24, 2, generator=gen) * 1.6 - 0.8  # GT slots replaced by noise
    total, terms = eft_loss(joints, cam, betas, kp, openpose, reduction="sample")
    total_n, terms_n = eft_loss(joints, cam, betas, noisy, openpose, reduction="sample")
    torch.testing.assert_close(terms_n["leg_orientation"], terms["leg_orientation"], atol=0, rtol=0)
    torch.testing.assert_close(total_n, total, atol=0, rtol=0)
    # and the leg term does read the OpenPose knees and ankles
    moved = kp.clone()
    moved[:, [11, 14], :2] += 0.3
    assert not torch.equal(eft_loss(joints, cam, betas, moved, openpose, reduction="sample")[1]["leg_orientation"],
                           terms["leg_orientation"])


# ---------------------------------------------------------------------------------------------- eval grouping


def test_eval_uses_each_schedules_own_grouping_by_default():
    from metahmr_cli.evaluation.runner import EvalConfig

    cfg = EvalConfig()
    assert cfg.grouping is None and cfg.batch_size == 20
    ref = TTOConfig(schedule="reference", grouping=cfg.grouping, group_size=cfg.batch_size)
    assert (resolve_schedule(ref).grouping, resolve_schedule(ref).group_size) == ("batch", 20)
    meta = TTOConfig(schedule="metahmr", grouping=cfg.grouping, group_size=cfg.batch_size)
    assert resolve_schedule(meta).grouping == "person"


# ---------------------------------------------------------------------------------------------- CLIFF-only files


def test_single_network_checkpoint_refuses_meta_hmr_schedules(tmp_path, standin_body):
    from metahmr_cli.detect.base import Detections
    from metahmr_cli.errors import ConfigError
    from metahmr_cli.pipeline import Pipeline
    from metahmr_cli.process_config import ProcessConfig

    class Nobody:
        def detect(self, image):
            return Detections.empty()

    def pipeline(schedule: str, self_aux: bool = False) -> Pipeline:
        cfg = ProcessConfig(inputs=["x.jpg"], out=tmp_path / "out", render=False, self_aux=self_aux,
                            tto=TTOConfig(schedule=schedule))
        return Pipeline(cfg, detector=Nobody(), keypoints=lambda *a, **k: None,
                        networks=_tiny_networks("cliff_res50"), body=standin_body)

    for schedule in ("metahmr", "reference", "paper"):
        with pytest.raises(ConfigError, match="auxiliary network"):
            pipeline(schedule).setup()
    for schedule in ("eft", "none"):
        pipeline(schedule).setup()  # fine: no pseudo mesh needed
    allowed = pipeline("metahmr", self_aux=True)
    allowed.setup()
    assert allowed.estimator.schedule_label == "metahmr+self-aux"


def test_set_up_keeps_the_tto_it_runs_with_and_leaves_the_callers_tto(standin_body):
    """The networks' inner loop and camera go into the estimator's own TTO settings and schedule, resolved once;
    the caller's TTO settings and focal are not written to."""
    import dataclasses

    from metahmr_cli.estimator import Estimator
    from metahmr_cli.process_config import ProcessConfig
    from metahmr_cli.tto import InnerLoop, inner_phase

    inner = InnerLoop(optimizer="adam", lr=1e-4, scope="head", loss="expl")
    networks = _tiny_networks()
    networks.inner_loop = inner  # the record of a meta-trained checkpoint
    networks.main.arch = "hmr"  # a network that predicts the crop camera
    cfg = ProcessConfig(focal="500", device="cpu")
    before = dataclasses.replace(cfg.tto)
    est = Estimator(cfg, networks=networks, body=standin_body, detector=object(), keypoints=object())
    est.setup()
    assert cfg.tto == before and cfg.tto.inner_loop is None and cfg.focal == "500"
    assert (est.tto.inner_loop, est.tto.camera) == (inner, "hmr") and est.config.tto is est.tto
    assert est.schedule.phases[0] == inner_phase(inner) and est.camera_settings.focal == 500.0


def test_a_3dpw_file_given_by_path_is_halved_like_the_named_split(tmp_path):
    from metahmr_cli.data.registry import load_datasets_config

    cfg = load_datasets_config(None)
    for name, want in (("3dpw_test_w2d_smpl3d_gender_openpose.npz", 2), ("pw3d_val.npz", 2),
                       ("h36m_mosh_val_p2.npz", 1), ("my_3dpw_copy.npz", 1)):
        path = tmp_path / name
        path.write_bytes(b"")
        assert cfg.resolve(str(path)).downsample == want, name
    assert cfg.resolve(str(tmp_path / "3dpw_test_w2d_smpl3d_gender_openpose.npz"), downsample=1).downsample == 1


def test_tier_resolution_fills_the_runs_settings_and_leaves_the_callers(standin_body):
    """`auto` choices (body, detector, keypoints, detector thresholds) are made concrete in the run's own copy of
    the settings, which the runner reads; the settings the caller passed are never written."""
    import copy

    from metahmr_cli.pipeline import Pipeline
    from metahmr_cli.process_config import ProcessConfig

    cfg = ProcessConfig(inputs=["x.jpg"], render=False, device="cpu")
    given = copy.deepcopy(cfg)
    assert (cfg.body, cfg.det_conf, cfg.min_box) == ("auto", None, None)
    pipe = Pipeline(cfg, detector=None, keypoints=lambda *a, **k: None, networks=_tiny_networks(),
                    body=standin_body)
    pipe.resolve_tier()
    assert cfg == given  # nothing written into the caller's settings
    run = pipe.config
    assert run is pipe.estimator.config and run is not cfg
    assert run.body == "smpl"  # injected networks and body: the paper-tier body label
    assert run.detector not in ("auto", None) and run.det_conf is not None and run.min_box is not None
    assert run.inputs == cfg.inputs and run.tto == cfg.tto


def test_a_shared_estimator_runs_the_runners_inputs_into_its_folder(tmp_path, standin_body):
    """`Pipeline(config, estimator=est)`: the runner's inputs, output folder and exports are its own settings, the
    estimator (built once, from other settings) keeps its own; neither is written."""
    import copy

    import cv2

    from metahmr_cli.detect import Detections
    from metahmr_cli.estimator import Estimator
    from metahmr_cli.pipeline import Pipeline
    from metahmr_cli.process_config import ProcessConfig

    class Nobody:
        def detect(self, image):
            return Detections.empty()

    photo = tmp_path / "street.png"
    cv2.imwrite(str(photo), np.full((40, 60, 3), 90, np.uint8))
    est_cfg = ProcessConfig(render=False, device="cpu")
    est = Estimator(est_cfg, detector=Nobody(), keypoints=lambda *a, **k: None, networks=_tiny_networks(),
                    body=standin_body)
    run_cfg = ProcessConfig(inputs=[str(photo)], out=tmp_path / "out", render=False, device="cpu")
    given = copy.deepcopy(run_cfg)
    report = Pipeline(run_cfg, estimator=est, progress=False).run()
    assert report.counts["no_person"] == 1 and report.out_dir == tmp_path / "out"
    records = (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()
    assert len(records) == 1 and '"street"' in records[0]
    assert run_cfg == given and est_cfg.inputs == [] and est_cfg.body == "auto"
