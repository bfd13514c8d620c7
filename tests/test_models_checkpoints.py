"""Checkpoint files: released forms through load_networks, safety, error messages and backbone inits."""

from __future__ import annotations

import builtins
import hashlib
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.models import compact_state_dict, make_tiny_regressor

from metahmr_cli.errors import AssetNotFoundError, CheckpointError
from metahmr_cli.models import (
    LAYOUTS,
    detect_network,
    export_state_dict,
    load_backbone_init,
    load_networks,
    load_torch_file,
    save_networks,
    write_random_checkpoint,
)
from metahmr_cli.models.backbones import PoseHRNet, hrnet_config


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Iterator[dict[str, Path]]:
    """Released file forms at their real size, written once per module by the product's writer (ResNet-based:
    the fastest real-size forms to write and read; 430 MB together, removed when the module is done)."""
    root = tmp_path_factory.mktemp("ckpts")
    yield {
        "metahmr_hmr_resnet": write_random_checkpoint(root / "hmr_resnet_3dpw.pt", "metahmr_hmr_resnet", seed=1),
        "cliff_res50": write_random_checkpoint(root / "res50-PA45.7.pt", "cliff_res50", seed=2, module_prefix=True),
        "spin_hmr": write_random_checkpoint(root / "hmr.pt", "spin_hmr", seed=3),
    }
    shutil.rmtree(root, ignore_errors=True)


def _compact(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same keys, shapes and dtypes in a few bytes each (for tests about keys, not values)."""
    return compact_state_dict(sd)


def _raw(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _sha12(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b), (sorted(set(a) - set(b))[:5], sorted(set(b) - set(a))[:5])
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_written_file_forms_are_exactly_the_released_ones(files) -> None:
    raw = _raw(files["metahmr_hmr_resnet"])
    assert set(raw) == {"model", "model_aux", "optimizer", "epoch", "batch_idx", "batch_size", "dataset_perm",
                        "total_step_count"}
    assert "fc1.weight" in raw["model"] and "conv1.weight" in raw["model"]
    assert not any(k.startswith(("module.", "backbone.")) for k in raw["model"])
    cliff = _raw(files["cliff_res50"])
    assert set(cliff) == {"model"}
    assert all(k.startswith("module.") for k in cliff["model"])
    assert "module.encoder.layer4.2.conv3.weight" in cliff["model"] and "module.fc1.weight" in cliff["model"]
    spin = _raw(files["spin_hmr"])
    assert set(spin) == {"model"} and "init_pose" not in spin["model"] and "layer1.0.conv1.weight" in spin["model"]
    assert spin["model"]["fc1.weight"].shape == (1024, 2205)
    assert not list(files["spin_hmr"].parent.glob(".*tmp*"))  # atomic write leaves nothing behind


def test_metahmr_release_form_loads_strictly(files) -> None:
    path = files["metahmr_hmr_resnet"]
    nets = load_networks(path, device="cpu")
    assert nets.kind == "metahmr"
    assert (nets.layout_main, nets.layout_aux) == ("hmr_meta_resnet", "hmr_aux_resnet")
    assert nets.main.n_iter == 10 and nets.aux is not None and nets.aux.n_iter == 3
    assert nets.main.arch == "hmr" and not nets.main.training and not nets.aux.training
    assert nets.identifier == f"{path.name}@{_sha12(path)}"
    assert nets.metadata["epoch"] == 0 and nets.messages == []
    raw = _raw(path)
    _assert_same(export_state_dict(nets.main, "hmr_meta_resnet"), raw["model"])
    _assert_same(export_state_dict(nets.aux, "hmr_aux_resnet"), raw["model_aux"])
    with torch.no_grad():
        out = nets.main(torch.zeros(1, 3, 256, 192))
    assert out["rotmat"].shape == (1, 24, 3, 3) and torch.isfinite(out["cam"]).all()


def test_metahmr_hrnet_release_form_loads(tmp_path, released_layouts) -> None:
    """The HRNet release form: pose-HRNet main under 'backbone.', cls-HRNet aux under 'encoder.'.

    The file has the released keys, shapes and dtypes (from the reference layouts) with one distinct constant per
    tensor stored once, so it takes 0.6 MB instead of 590 MB; the ResNet forms above are loaded at full size.
    """
    path = tmp_path / "cliff_hrnet_3dpw.pt"
    torch.save({"model": compact_state_dict(released_layouts["cliff_meta_hrnet"]),
                "model_aux": compact_state_dict(released_layouts["cliff_aux_hrnet"], start=10_000),
                "optimizer": {}, "epoch": 0, "batch_idx": 0, "batch_size": 20, "dataset_perm": [],
                "total_step_count": 0}, path)
    assert path.stat().st_size < 5_000_000
    nets = load_networks(path)
    assert nets.kind == "metahmr" and (nets.layout_main, nets.layout_aux) == ("cliff_meta_hrnet", "cliff_aux_hrnet")
    assert nets.main.feature_dim == 720 and nets.main.fc1.in_features == 880 and nets.main.n_iter == 10
    assert nets.aux.feature_dim == 2048 and nets.aux.n_iter == 3
    raw = _raw(path)
    _assert_same(export_state_dict(nets.main, "cliff_meta_hrnet"), raw["model"])
    _assert_same(export_state_dict(nets.aux, "cliff_aux_hrnet"), raw["model_aux"])


def test_official_cliff_form_with_module_and_encoder_prefix(files) -> None:
    path = files["cliff_res50"]
    nets = load_networks(path, device="cpu", dtype=torch.float64)
    assert nets.kind == "cliff_res50" and nets.layout_main == nets.layout_aux == "cliff_aux_resnet"
    assert nets.main.n_iter == 3 and nets.aux.n_iter == 3
    assert nets.main.fc1.weight.dtype == torch.float64
    assert nets.aux is not nets.main
    assert nets.aux.fc1.weight.data_ptr() != nets.main.fc1.weight.data_ptr()
    raw = {k[len("module."):]: v for k, v in _raw(path)["model"].items()}
    expected = {(k.replace("encoder.", "", 1) if k.startswith("encoder.") else k): v.double() if v.is_floating_point()
                else v for k, v in raw.items()}
    _assert_same(export_state_dict(nets.main, "cliff_aux_resnet"), expected)


def test_spin_form_takes_init_from_mean_params(files) -> None:
    mp = {"pose": np.linspace(-1, 1, 144, dtype=np.float32), "shape": np.full(10, 0.5, np.float32),
          "cam": np.array([0.8, 0.0, 0.1], np.float32)}
    nets = load_networks(files["spin_hmr"], device="cpu", mean_params=mp)
    assert nets.kind == "spin_hmr" and nets.layout_main == "hmr_aux_resnet" and nets.main.n_iter == 3
    assert nets.messages == []
    np.testing.assert_allclose(nets.main.init_pose[0].numpy(), mp["pose"])
    np.testing.assert_allclose(nets.aux.init_cam[0].numpy(), mp["cam"])
    raw = _raw(files["spin_hmr"])["model"]
    assert torch.equal(nets.main.fc1.weight, raw["fc1.weight"])
    assert torch.equal(nets.main.backbone.layer3[5].conv3.weight, raw["layer3.5.conv3.weight"])


def test_spin_form_reports_other_deviations(files, tmp_path) -> None:
    raw = {"model": _compact(_raw(files["spin_hmr"])["model"])}
    raw["model"]["fc.weight"] = torch.zeros(()).expand(1000, 2048)  # an extra classifier, tolerated but reported
    del raw["model"]["layer4.2.bn3.running_var"]
    path = tmp_path / "hmr_modified.pt"
    torch.save(raw, path)
    nets = load_networks(path, device="cpu")
    text = " ".join(nets.messages)
    assert "fc.weight" in text and "layer4.2.bn3.running_var" in text and "init_" in text


def test_truncated_and_corrupt_files_are_refused(files, tmp_path) -> None:
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(files["cliff_res50"].read_bytes()[: 1 << 20])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_networks(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_networks(garbage)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError, match="notes.pt"):
        load_networks(text)
    with pytest.raises(AssetNotFoundError, match="missing.pt"):
        load_networks(tmp_path / "missing.pt")


def test_wrong_layout_file_names_missing_keys_and_expected_layout(files, tmp_path) -> None:
    raw = {k: _compact(v) for k, v in _raw(files["metahmr_hmr_resnet"]).items() if k in ("model", "model_aux")}
    dropped = sorted(k for k in raw["model_aux"] if k.startswith("layer2.1."))
    for k in dropped:
        del raw["model_aux"][k]
    path = tmp_path / "broken.pt"
    torch.save({"model": raw["model"], "model_aux": raw["model_aux"]}, path)
    with pytest.raises(CheckpointError) as info:
        load_networks(path)
    msg = str(info.value)
    assert "broken.pt['model_aux']" in msg and f"missing keys ({len(dropped)})" in msg
    assert "layer2.1.conv1.weight" in msg and "hmr_aux_resnet" in msg
    other = tmp_path / "other.pt"
    torch.save({"weights": {"a": torch.zeros(1)}}, other)
    with pytest.raises(CheckpointError, match="not a recognised checkpoint"):
        load_networks(other)


class _Payload:
    """Unpickling this would create a file (stand-in for arbitrary code execution)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (str(self.marker), "w"))


@pytest.mark.parametrize("fmt", ["torch_zip", "legacy_pickle"])
def test_malicious_pickle_is_refused(fmt, tmp_path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"model": _Payload(marker)}
    if fmt == "torch_zip":
        torch.save(payload, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump(payload, fh, protocol=2)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_networks(path)
    assert not marker.exists()


class _DtypesHelperCall:
    """Unpickling this calls numpy.dtypes' private helper, which binds a new name in numpy.dtypes for the whole
    process (a weights-only file must not be able to rebind e.g. numpy.dtypes.Float32DType)."""

    def __reduce__(self):
        import numpy.dtypes

        return (numpy.dtypes._add_dtype_helper, (numpy.dtypes.Float32DType, "numpy.dtypes.MetahmrProbeDType"))


def test_numpy_dtypes_private_helper_is_refused(tmp_path) -> None:
    import numpy.dtypes

    path = tmp_path / "helper.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "extra": _DtypesHelperCall(), "dtype": np.dtype(np.float32)}, path)
    assert "numpy.dtypes._add_dtype_helper" in torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    try:
        with pytest.raises(CheckpointError, match="refused to load .*helper.pt"):
            load_torch_file(path)
        assert not hasattr(numpy.dtypes, "MetahmrProbeDType")  # the helper never ran
    finally:
        if hasattr(numpy.dtypes, "MetahmrProbeDType"):
            del numpy.dtypes.MetahmrProbeDType
    # the exact DType names stay allowed: a file holding a numpy dtype (a DType class global) still loads
    ok = tmp_path / "dtype.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "perm": np.arange(3, dtype=np.float32)}, ok)
    assert load_torch_file(ok)["perm"].tolist() == [0.0, 1.0, 2.0]


def test_save_networks_roundtrip_tiny_with_numpy_entry(tmp_path) -> None:
    main = make_tiny_regressor("cliff", seed=4, n_iter=2)
    aux = make_tiny_regressor("cliff", seed=5, n_iter=3)
    path = save_networks(tmp_path / "ours.pt", main, aux, extra={"epoch": 3, "dataset_perm": np.arange(6)})
    nets = load_networks(path)
    assert nets.kind == "metahmr" and nets.layout_main == "custom:cliff/resnet_tiny"
    assert nets.main.n_iter == 2 and nets.aux.n_iter == 3 and nets.metadata["epoch"] == 3
    gen = torch.Generator().manual_seed(0)
    images, bbox = torch.randn(2, 3, 256, 192, generator=gen), torch.randn(2, 3, generator=gen)
    with torch.no_grad():
        for orig, loaded in ((main, nets.main), (aux, nets.aux)):
            a, b = orig(images, bbox), loaded(images, bbox)
            assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_detect_network_on_reference_layouts(layout, released_layouts) -> None:
    # detection needs only the key names and shapes
    sd = {k: torch.empty(shape) for k, (shape, _) in released_layouts[layout].items()}
    sd = {f"module.{k}": v for k, v in sd.items()} if layout == "cliff_aux_hrnet" else sd
    spec = LAYOUTS[layout]
    role = "main" if "_meta_" in layout else "aux"
    plan = detect_network(sd, role)
    assert (plan.layout, plan.arch, plan.backbone, plan.n_iter, plan.prefix) == (
        layout, spec.arch, spec.backbone, spec.n_iter, spec.backbone_prefix)


def test_backbone_init_from_pose_resnet_style_file(tmp_path) -> None:
    donor = make_tiny_regressor("cliff", seed=11)
    target = make_tiny_regressor("cliff", seed=12)
    sd = {f"backbone.{k}": v for k, v in donor.backbone.state_dict().items()}
    sd["keypoint_head.final_layer.weight"] = torch.zeros(17, 64, 1, 1)
    path = tmp_path / "pose_resnet.pth"
    torch.save({"state_dict": sd, "meta": {"epoch": 210}}, path)
    report = load_backbone_init(target, path)
    assert set(report.loaded) == set(donor.backbone.state_dict())
    assert report.skipped == ["keypoint_head.final_layer.weight"] and report.not_initialised == []
    _assert_same(target.backbone.state_dict(), donor.backbone.state_dict())
    assert not torch.equal(target.fc1.weight, donor.fc1.weight)  # the head is untouched


def test_backbone_init_from_pose_hrnet_file_loads_only_stem_and_stages(tmp_path) -> None:
    torch.manual_seed(0)
    donor = PoseHRNet(hrnet_config(4), num_joints=17)  # COCO heatmap head: 17 joints
    target = PoseHRNet(hrnet_config(4), num_joints=24)
    path = tmp_path / "pose_hrnet_w48_256x192.pth"
    torch.save(donor.state_dict(), path)
    report = load_backbone_init(target, path)
    tops = {k.split(".")[0] for k in report.loaded}
    assert tops == {"conv1", "bn1", "conv2", "bn2", "layer1", "transition1", "transition2", "transition3",
                    "stage2", "stage3", "stage4"}
    assert {k.split(".")[0] for k in report.not_initialised} == {"final_layer", "downsample_stage_1",
                                                                 "downsample_stage_2", "downsample_stage_3"}
    assert "final_layer.weight" in report.skipped
    assert torch.equal(target.stage4[2].fuse_layers[3][0][2][0].weight, donor.stage4[2].fuse_layers[3][0][2][0].weight)
    wrong = tmp_path / "unrelated.pth"
    torch.save({"foo.weight": torch.zeros(3)}, wrong)
    with pytest.raises(CheckpointError, match="unrelated.pth"):
        load_backbone_init(target, wrong)


def test_write_random_checkpoint_rejects_unknown_kind(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="metahmr_cliff_hrnet"):
        write_random_checkpoint(tmp_path / "x.pt", "cliff_hr32")
