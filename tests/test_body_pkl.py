"""Safe reading of SMPL pickles: chumpy stand-ins, sparse regressors, refusal of code, import to npz."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from metahmr_cli.body.builders.pkl import detect_gender, import_smpl_files
from metahmr_cli.body.smpl import load_body_model
from metahmr_cli.body.smpl_pkl import load_smpl_pkl, safe_unpickle
from metahmr_cli.errors import BodyModelError


class _FakeChumpy:
    """Registers a throw-away 'chumpy.ch' module with a Ch class, only while pickles are written."""

    def __enter__(self):
        pkg = types.ModuleType("chumpy")
        mod = types.ModuleType("chumpy.ch")

        class Ch:
            def __init__(self, x):
                self.x = np.asarray(x, dtype=np.float64)
                self._dirty_vars = {"x"}
                self._itr = None
                self._depends_on_deps = {}
                self._make_dense = False
                self._make_sparse = False

        Ch.__module__ = "chumpy.ch"
        Ch.__qualname__ = "Ch"
        mod.Ch = Ch
        pkg.ch = mod
        self.saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
        sys.modules["chumpy"] = pkg
        sys.modules["chumpy.ch"] = mod
        return Ch

    def __exit__(self, *exc):
        for key, value in self.saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value


def _smpl_like_pickle(standin_dir: Path, protocol: int = 2,
                      components: int = 10) -> tuple[bytes, dict[str, np.ndarray]]:
    """An official-style SMPL pickle of the stand-in body; ``components`` shape components (SMPL v1.0.0 has 10,
    v1.1.0 300: the extra ones are zero here)."""
    with np.load(standin_dir / "STANDIN_NEUTRAL.npz") as data:
        arrays = {k: data[k] for k in data.files}
    sd = arrays["shapedirs"]
    arrays["shapedirs"] = np.concatenate([sd, np.zeros((*sd.shape[:2], components - sd.shape[2]))], axis=2)
    ref = {
        "v_template": arrays["v_template"].astype(np.float64),
        "shapedirs": arrays["shapedirs"].astype(np.float64),
        "posedirs": arrays["posedirs"].astype(np.float64),
        "J_regressor": arrays["J_regressor"].astype(np.float64),
        "weights": arrays["weights"].astype(np.float64),
        "kintree_table": arrays["kintree_table"].astype(np.int64),
        "f": arrays["f"].astype(np.uint32),
    }
    kin = ref["kintree_table"].copy()
    kin[0, 0] = 4294967295  # as in the official files
    with _FakeChumpy() as Ch:
        obj = {
            "v_template": Ch(ref["v_template"]),
            "shapedirs": Ch(ref["shapedirs"]),
            "posedirs": ref["posedirs"],
            "J_regressor": sp.csc_matrix(ref["J_regressor"]),
            "weights": Ch(ref["weights"]),
            "kintree_table": kin,
            "f": ref["f"],
            "bs_type": "lrotmin",
            "bs_style": "lbs",
            "J": Ch(ref["J_regressor"] @ ref["v_template"]),
        }
        raw = pickle.dumps(obj, protocol=protocol)
    assert "chumpy" not in sys.modules
    return raw, ref


@pytest.mark.parametrize("protocol", [0, 2])
def test_chumpy_pickle_loads_without_chumpy(tmp_path: Path, standin_dir: Path, protocol: int):
    raw, ref = _smpl_like_pickle(standin_dir, protocol)
    path = tmp_path / "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl"
    path.write_bytes(raw)
    arrays = load_smpl_pkl(path)
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        np.testing.assert_array_equal(arrays[key], ref[key])
        assert arrays[key].dtype == np.float64
    assert arrays["kintree_table"][0, 0] == -1
    np.testing.assert_array_equal(arrays["kintree_table"][:, 1:], ref["kintree_table"][:, 1:])
    np.testing.assert_array_equal(arrays["f"], ref["f"].astype(np.int64))


class _Evil:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


@pytest.mark.parametrize("kind", ["os.system", "subprocess", "eval", "nested"])
def test_malicious_pickle_refused(tmp_path: Path, kind: str):
    marker = tmp_path / "pwned"
    if kind == "os.system":
        payload = _Evil(os.system, (f"touch {marker}",))
    elif kind == "subprocess":
        payload = _Evil(subprocess.call, (["touch", str(marker)],))
    elif kind == "eval":
        payload = _Evil(eval, (f"open({str(marker)!r}, 'w').close()",))
    else:
        payload = {"v_template": np.zeros((3, 3)), "f": [_Evil(os.system, (f"touch {marker}",))]}
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(BodyModelError, match="refusing to load .*unsafe object"):
        load_smpl_pkl(path)
    assert not marker.exists()


def test_truncated_and_garbage(tmp_path: Path, standin_dir: Path):
    raw, _ = _smpl_like_pickle(standin_dir)
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(BodyModelError, match="SMPL_NEUTRAL.pkl"):
        load_smpl_pkl(path)
    path.write_bytes(b"this is not a pickle at all")
    with pytest.raises(BodyModelError):
        load_smpl_pkl(path)
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(BodyModelError, match="not a SMPL model"):
        load_smpl_pkl(path)
    path.write_bytes(pickle.dumps({"v_template": np.zeros((5, 3))}, protocol=2))
    with pytest.raises(BodyModelError, match="missing"):
        load_smpl_pkl(path)


def test_safe_unpickle_plain_values():
    obj = {"a": np.arange(4, dtype=np.int32), "b": {1, 2}, "c": (1.5, "x"), "d": np.float32(2.0)}
    out = safe_unpickle(pickle.dumps(obj, protocol=2))
    np.testing.assert_array_equal(out["a"], obj["a"])
    assert out["b"] == {1, 2} and out["c"] == (1.5, "x") and out["d"] == 2.0
    out5 = safe_unpickle(pickle.dumps(obj, protocol=5))
    np.testing.assert_array_equal(out5["a"], obj["a"])


@pytest.mark.parametrize(
    ("name", "gender"),
    [
        ("basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl", "neutral"),
        ("basicModel_f_lbs_10_207_0_v1.0.0.pkl", "female"),
        ("basicmodel_m_lbs_10_207_0_v1.1.0.pkl", "male"),
        ("SMPL_FEMALE.pkl", "female"),
        ("SMPL_MALE.pkl", "male"),
        ("model.pkl", None),
    ],
)
def test_detect_gender(name: str, gender: str | None):
    assert detect_gender(Path(name)) == gender


def test_import_and_load(tmp_path: Path, standin_dir: Path):
    raw, ref = _smpl_like_pickle(standin_dir)
    src = tmp_path / "src"
    src.mkdir()
    pkl_path = src / "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl"
    pkl_path.write_bytes(raw)
    dest = tmp_path / "smpl"
    # the default check wants SMPL's 6890 vertices
    with pytest.raises(BodyModelError, match="6890"):
        import_smpl_files([pkl_path], dest)
    assert not (dest / "SMPL_NEUTRAL.npz").exists()
    written = import_smpl_files([pkl_path], dest, num_vertices=None)
    assert written == [dest / "SMPL_NEUTRAL.npz"]
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]  # no temporary files left
    with np.load(written[0], allow_pickle=False) as data:
        np.testing.assert_array_equal(data["v_template"], ref["v_template"])
        np.testing.assert_array_equal(data["J_regressor"], ref["J_regressor"])

    for name in ("J_regressor_extra.npy", "J_regressor_h36m.npy", "body.json", "smpl_mean_params.npz"):
        shutil.copy(standin_dir / name, dest)
    body = load_body_model(dest, "neutral")
    assert body.name == "smpl"
    rot = torch.eye(3).expand(1, 24, 3, 3)
    out = body(rot, torch.zeros(1, 10))
    np.testing.assert_allclose(out.vertices[0].numpy(), ref["v_template"], atol=1e-5)

    # the .pkl itself is also loadable through the lookup order
    pkl_dir = tmp_path / "pkl_dir"
    pkl_dir.mkdir()
    shutil.copy(pkl_path, pkl_dir)
    for name in ("J_regressor_extra.npy", "body.json"):
        shutil.copy(standin_dir / name, pkl_dir)
    body2 = load_body_model(pkl_dir, with_h36m=False)
    np.testing.assert_allclose(body2(rot, torch.zeros(1, 10)).vertices.numpy(), out.vertices.numpy(), atol=1e-6)


def test_import_refuses_garbage_and_duplicates(tmp_path: Path, standin_dir: Path):
    raw, _ = _smpl_like_pickle(standin_dir)
    a = tmp_path / "SMPL_MALE.pkl"
    b = tmp_path / "basicmodel_m_lbs_10_207_0_v1.1.0.pkl"
    a.write_bytes(raw)
    b.write_bytes(raw)
    with pytest.raises(BodyModelError, match="Both"):
        import_smpl_files([a, b], tmp_path / "out", num_vertices=None)
    unknown = tmp_path / "model.pkl"
    unknown.write_bytes(raw)
    with pytest.raises(BodyModelError, match="gender"):
        import_smpl_files([unknown], tmp_path / "out", num_vertices=None)
    assert import_smpl_files([unknown], tmp_path / "out", gender="female", num_vertices=None)[0].name == (
        "SMPL_FEMALE.npz"
    )
    junk = tmp_path / "SMPL_NEUTRAL.pkl"
    junk.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(BodyModelError, match="SMPL_NEUTRAL.pkl"):
        import_smpl_files([junk], tmp_path / "out", num_vertices=None)
    with pytest.raises(BodyModelError, match="does not exist"):
        import_smpl_files([tmp_path / "missing.pkl"], tmp_path / "out")


def test_renamed_v110_pkl_never_shadows_v100(tmp_path: Path, standin_dir: Path):
    """A v1.1.0 model renamed to SPIN's name is told apart by its content (300 shape components) and the v1.0.0
    file is used; for every gender v1.0.0 comes first (the released evaluation used SMPL v1.0.0's models)."""
    from metahmr_cli.body.smpl import find_model_file

    v100, _ = _smpl_like_pickle(standin_dir, components=10)
    v110, _ = _smpl_like_pickle(standin_dir, components=300)
    d = tmp_path / "smpl"
    d.mkdir()
    (d / "SMPL_NEUTRAL.pkl").write_bytes(v110)
    (d / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl").write_bytes(v100)
    assert find_model_file(d, "neutral").name == "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    # the same name holding v1.0.0 content stays first
    (d / "SMPL_NEUTRAL.pkl").write_bytes(v100)
    assert find_model_file(d, "neutral").name == "SMPL_NEUTRAL.pkl"
    for g, letter in (("male", "m"), ("female", "f")):
        (d / f"basicmodel_{letter}_lbs_10_207_0_v1.1.0.pkl").write_bytes(v110)
        (d / f"basicModel_{letter}_lbs_10_207_0_v1.0.0.pkl").write_bytes(v100)
        assert find_model_file(d, g).name == f"basicModel_{letter}_lbs_10_207_0_v1.0.0.pkl"
        (d / f"SMPL_{g.upper()}.pkl").write_bytes(v110)  # renamed v1.1.0 again
        assert find_model_file(d, g).name == f"basicModel_{letter}_lbs_10_207_0_v1.0.0.pkl"
    # alone, a v1.1.0 file is still used (with the import-time warning), not refused
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "SMPL_NEUTRAL.pkl").write_bytes(v110)
    assert find_model_file(alone, "neutral").name == "SMPL_NEUTRAL.pkl"
