"""HMRDataset on the synthetic fixture: keys, determinism, configs, downsampling, occlusion, mixing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from metahmr_cli.data import (
    AugmentConfig,
    DatasetsConfig,
    HMRDataset,
    MixedDataset,
    load_datasets_config,
    parse_mix,
    resolve_partition,
)
from metahmr_cli.data.npzio import load_npz
from metahmr_cli.data.occlusion import load_occluders
from metahmr_cli.errors import ConfigError, DatasetError
from metahmr_cli.files import save_npz_atomic

ITEM_KEYS = {
    "img", "keypoints", "keypoints_full", "pose", "betas", "pose_3d", "has_smpl", "has_pose_3d", "scale", "center",
    "is_flipped", "rot_angle", "scale_factor", "gender", "img_h", "img_w", "orig_shape", "focal_length",
    "bbox_info", "crop_trans", "full_trans", "inv_trans", "imgname", "dataset_name", "sample_index",
}


def test_item_keys_shapes_and_values(synth_dataset) -> None:
    ds = HMRDataset(synth_dataset / "synth_test.npz")
    assert len(ds) == 8
    it = ds[0]
    assert set(it) == ITEM_KEYS
    shapes = {"img": (3, 256, 192), "keypoints": (49, 3), "keypoints_full": (49, 3), "pose": (72,),
              "betas": (10,), "pose_3d": (24, 4), "crop_trans": (2, 3), "bbox_info": (3,), "center": (2,)}
    for k, s in shapes.items():
        assert tuple(it[k].shape) == s, k
        assert it[k].dtype == torch.float32
    z = np.load(synth_dataset / "synth_test.npz")
    np.testing.assert_allclose(it["pose"].numpy(), z["pose"][0], atol=1e-6)
    np.testing.assert_allclose(it["pose_3d"].numpy(), z["S"][0], atol=1e-6)
    np.testing.assert_allclose(it["keypoints_full"][25:].numpy(), z["part"][0], atol=1e-4)
    assert it["focal_length"].item() == pytest.approx(float(z["focal_length"][0]))
    assert it["has_smpl"].item() == 1 and it["has_pose_3d"].item() == 1
    assert it["gender"].item() == 2  # synth value 'n': GENDER_OTHER (the eval gender rule picks the body)
    assert it["img_h"].item() == 128 and it["img_w"].item() == 128
    # bbox_info by hand: [(cx - W/2)/f * 2.8, (cy - H/2)/f * 2.8, (b - 0.24 f) / (0.06 f)]
    f, (cx, cy), b = it["focal_length"].item(), it["center"].tolist(), 200 * it["scale"].item()
    np.testing.assert_allclose(it["bbox_info"].numpy(),
                               [(cx - 64) / f * 2.8, (cy - 64) / f * 2.8, (b - 0.24 * f) / (0.06 * f)], rtol=1e-5)
    # inverse crop map takes crop keypoints back to the full image
    inv = it["inv_trans"].numpy()
    back = it["keypoints"][:, :2].numpy() @ inv[:, :2].T + inv[:, 2]
    np.testing.assert_allclose(back, it["keypoints_full"][:, :2].numpy(), atol=1e-3)


def test_augmentation_is_deterministic_per_seed_epoch_index(synth_dataset) -> None:
    ds = HMRDataset(synth_dataset / "synth_train.npz", is_train=True, seed=3)
    a = [ds[i] for i in range(6)]
    ds2 = HMRDataset(synth_dataset / "synth_train.npz", is_train=True, seed=3)
    for i in (5, 0, 3):  # order does not matter
        b = ds2[i]
        for k, v in a[i].items():
            if torch.is_tensor(v):
                assert torch.equal(v, b[k]), k
    ds2.set_epoch(1)
    changed = [not torch.equal(a[i]["img"], ds2[i]["img"]) for i in range(6)]
    assert any(changed)
    # worker processes give the same items as the main process
    ds.set_epoch(0)
    batch = next(iter(DataLoader(ds, batch_size=6, num_workers=2)))
    assert torch.equal(batch["img"], torch.stack([x["img"] for x in a]))


def test_downsample_halves_image_keypoints_focal(synth_dataset) -> None:
    cfg = DatasetsConfig()
    full = HMRDataset(cfg.resolve(str(synth_dataset / "synth_test.npz")))
    half = HMRDataset(cfg.resolve(str(synth_dataset / "synth_test.npz"), downsample=2))
    a, b = full[1], half[1]
    assert b["img_h"].item() == 64 and b["img_w"].item() == 64
    np.testing.assert_array_equal(b["orig_shape"].numpy(), [128, 128])
    np.testing.assert_allclose(b["keypoints_full"][:, :2].numpy(), a["keypoints_full"][:, :2].numpy() / 2, atol=1e-4)
    assert b["focal_length"].item() == pytest.approx(a["focal_length"].item() / 2)
    assert b["scale"].item() == pytest.approx(a["scale"].item() / 2, rel=1e-5)


def test_missing_pose_and_s_give_flags(synth_dataset, tmp_path) -> None:
    d = load_npz(synth_dataset / "synth_test.npz")
    d.pop("pose"), d.pop("S")
    save_npz_atomic(tmp_path / "x.npz", d)
    it = HMRDataset(DatasetsConfig().resolve(str(tmp_path / "x.npz"), image_root=synth_dataset))[0]
    assert it["has_smpl"].item() == 0 and it["has_pose_3d"].item() == 0
    assert torch.all(it["pose"] == 0) and torch.all(it["pose_3d"] == 0)


def test_gender_item_codes_the_npz_value(synth_dataset, tmp_path) -> None:
    d = load_npz(synth_dataset / "synth_test.npz")
    n = len(d["imgname"])
    d["gender"] = np.array(["m", "f", "n", "male"] + ["m"] * (n - 4))
    save_npz_atomic(tmp_path / "g.npz", d)
    ds = HMRDataset(DatasetsConfig().resolve(str(tmp_path / "g.npz"), image_root=synth_dataset))
    # exact comparison as released: 'm' 0, 'f' 1, anything else 2 (the eval gender rule picks the body)
    assert [ds[i]["gender"].item() for i in range(4)] == [0, 1, 2, 2]
    d.pop("gender")
    save_npz_atomic(tmp_path / "g.npz", d)
    ds = HMRDataset(DatasetsConfig().resolve(str(tmp_path / "g.npz"), image_root=synth_dataset))
    assert ds[0]["gender"].item() == -1


def test_dataset_from_config_file(synth_dataset, tmp_path, monkeypatch) -> None:
    cfg_path = tmp_path / "datasets.toml"
    cfg_path.write_text(
        f'root = "{synth_dataset}"\n\n[datasets.mysynth]\nnpz = "synth_train.npz"\nimages = "."\n\n'
        '[datasets.3dpw-test]\nnpz = "synth_test.npz"\n'
    )
    ds = HMRDataset.from_config("mysynth", cfg_path)
    assert len(ds) == 24 and ds.name == "mysynth"
    assert ds[0]["dataset_name"] == "mysynth"
    # a built-in name keeps its flags (3DPW: downsample 2) and takes the file's npz; images default to 'pw3d'
    spec = load_datasets_config(cfg_path).resolve("3dpw-test")
    assert spec.downsample == 2 and spec.npz == synth_dataset / "synth_test.npz"
    assert spec.image_root == synth_dataset / "pw3d"
    # root from the environment when the config has none
    monkeypatch.setenv("METAHMR_DATA", str(synth_dataset))
    assert DatasetsConfig().resolve("h36m").npz == synth_dataset / "h36m_mosh_train_fixname.npz"
    monkeypatch.delenv("METAHMR_DATA")
    with pytest.raises(ConfigError, match="METAHMR_DATA"):
        DatasetsConfig().resolve("h36m")
    with pytest.raises(ConfigError, match="3dpw-test"):
        DatasetsConfig().resolve("3dpw-tset")
    bad = tmp_path / "bad.toml"
    bad.write_text('[datasets.h36m]\nnpzz = "x.npz"\n')
    with pytest.raises(ConfigError, match="did you mean 'npz'"):
        load_datasets_config(bad)


def test_occluders_restricted_loading_and_use(synth_dataset, tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    patches = np.empty(2, dtype=object)
    patches[0] = rng.integers(0, 255, (40, 30, 4), dtype=np.uint8)
    patches[1] = np.full((20, 50, 4), 255, np.uint8)
    np.save(tmp_path / "occ.npy", patches, allow_pickle=True)
    occ = load_occluders(tmp_path / "occ.npy")
    assert len(occ) == 2 and occ[1].shape == (20, 50, 4)

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    evil = np.empty(1, dtype=object)
    evil[0] = Evil()
    np.save(tmp_path / "evil.npy", evil, allow_pickle=True)
    assert b"owned" in (tmp_path / "evil.npy").read_bytes()  # the payload is in the file
    capsys.readouterr()
    with pytest.raises(DatasetError, match="refusing"):
        load_occluders(tmp_path / "evil.npy")
    assert "owned" not in capsys.readouterr().out  # refused before anything was unpickled

    spec = DatasetsConfig().resolve(str(synth_dataset / "synth_train.npz"), occlusion=True)
    aug_on = AugmentConfig(occlusion=True, occluders=str(tmp_path / "occ.npy"), rot_zero_prob=1.0)
    aug_off = AugmentConfig(occlusion=False, rot_zero_prob=1.0)
    a = HMRDataset(spec, is_train=True, augment=aug_on, seed=1)[2]
    b = HMRDataset(spec, is_train=True, augment=aug_off, seed=1)[2]
    assert not torch.equal(a["img"], b["img"])
    assert torch.equal(a["keypoints"], b["keypoints"])
    # without the dataset flag occlusion is not applied
    plain = DatasetsConfig().resolve(str(synth_dataset / "synth_train.npz"))
    c = HMRDataset(plain, is_train=True, augment=aug_on, seed=1)[2]
    assert torch.equal(c["img"], b["img"])


class _Seq:
    def __init__(self, name: str, n: int) -> None:
        self.name, self.n = name, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[str, int]:
        return self.name, i


def test_mixing_ratios_determinism_and_modulo() -> None:
    sets = {"h36m": _Seq("h36m", 100), "coco": _Seq("coco", 300), "mpii": _Seq("mpii", 100),
            "mpi-inf-3dhp": _Seq("mpi-inf-3dhp", 50)}
    mixed = MixedDataset(sets, "wo3dpw", seed=0)
    assert len(mixed) == 300
    expected = {"h36m": 0.5, "coco": 0.3 * 300 / 400, "mpii": 0.3 * 100 / 400, "mpi-inf-3dhp": 0.2}
    big = MixedDataset(sets, "wo3dpw", seed=0, length=20000)
    names = [big[i][0] for i in range(20000)]
    for k, p in expected.items():
        frac = names.count(k) / 20000
        assert abs(frac - p) < 4 * np.sqrt(p * (1 - p) / 20000), (k, frac, p)
    for i in (0, 7, 299):
        name, j = mixed[i]
        assert j == i % sets[name].n
    again = MixedDataset(sets, "wo3dpw", seed=0)
    assert [mixed.choose(i) for i in range(300)] == [again.choose(i) for i in range(300)]
    other = MixedDataset(sets, "wo3dpw", seed=1)
    assert [mixed.choose(i) for i in range(300)] != [other.choose(i) for i in range(300)]

    with_3dpw = resolve_partition(parse_mix("w3dpw"), {"h36m": 10, "coco": 10, "mpii": 30, "mpi-inf-3dhp": 5,
                                                          "3dpw": 7})
    assert with_3dpw == pytest.approx({"h36m": 0.4, "coco": 0.075, "mpii": 0.225, "mpi-inf-3dhp": 0.1, "3dpw": 0.2})
    custom = resolve_partition(parse_mix("h36m=1,coco=3"), {"h36m": 1, "coco": 5})
    assert custom == pytest.approx({"h36m": 0.25, "coco": 0.75})
    with pytest.raises(ConfigError):
        parse_mix("h36m:0.5")
