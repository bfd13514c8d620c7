"""Result schema, atomic writes, manifest and mesh files."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import trimesh

from metahmr_cli.files import atomic_path, clean_temp_files, is_temp_file, temp_path_for
from metahmr_cli.io.meshes import write_mesh, write_person_meshes
from metahmr_cli.io.writers import (
    SCHEMA_VERSION,
    FrameResult,
    Manifest,
    ManifestRecord,
    load_result_npz,
    read_manifest,
    validate_result_npz,
    write_result_npz,
    write_summary,
)


def _result(P: int = 2, V: int | None = 30) -> FrameResult:
    rng = np.random.default_rng(0)
    f = lambda *s: rng.normal(size=s).astype(np.float32)
    return FrameResult(
        source="a/b.jpg", image_size=(48, 64), K=np.array([[80.0, 0, 32], [0, 80, 24], [0, 0, 1]]),
        global_orient=f(P, 3), body_pose=f(P, 69), betas=f(P, 10), transl=f(P, 3), joints3d=f(P, 49, 3),
        keypoints2d=f(P, 49, 3), bbox=f(P, 4), det_score=np.linspace(0.5, 0.9, P), tto_steps=np.arange(P),
        reproj_error_before=np.full(P, np.nan), reproj_error_after=f(P), tto_converged=np.ones(P, bool),
        fell_back=np.zeros(P, bool), body_model="standin", checkpoint="ck.pt@abcd", tto_schedule="metahmr",
        tto_config={"max_steps": 14, "lr": None}, vertices=None if V is None else f(P, V, 3),
    )


def test_roundtrip_keys_shapes_dtypes(tmp_path):
    r = _result()
    p = write_result_npz(tmp_path / "x.npz", r)
    assert validate_result_npz(p) == []
    d = load_result_npz(p)
    assert str(d["schema_version"]) == SCHEMA_VERSION == "1.3"
    assert str(d["focal_rule"]) == "diagonal" and str(d["model_tier"]) == "custom"
    assert d["body_pose"].shape == (2, 69) and d["body_pose"].dtype == np.float32
    assert d["vertices"].shape == (2, 30, 3)
    assert d["tto_steps"].dtype == np.int64 and d["tto_converged"].dtype == np.bool_
    assert d["image_size"].tolist() == [48, 64]
    assert int(d["frame_index"]) == -1
    assert json.loads(str(d["tto_config"])) == {"lr": None, "max_steps": 14}
    np.testing.assert_array_equal(d["betas"], r.betas)
    # only the final file remains
    assert [q.name for q in tmp_path.iterdir()] == ["x.npz"]


def test_empty_result_and_optional_vertices(tmp_path):
    e = FrameResult.empty("img.png", (10, 20), np.eye(3), body_model="smpl")
    assert e.num_people == 0
    assert validate_result_npz(write_result_npz(tmp_path / "e.npz", e)) == []
    assert validate_result_npz(write_result_npz(tmp_path / "nv.npz", _result(V=None))) == []
    assert "vertices" not in load_result_npz(tmp_path / "nv.npz")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d.pop("betas"), "missing key 'betas'"),
        (lambda d: d.update(betas=d["betas"].astype(np.float64)), "'betas' has dtype float64"),
        (lambda d: d.update(transl=d["transl"][:1]), "'transl' has P=1"),
        (lambda d: d.update(joints3d=d["joints3d"][:, :24]), "'joints3d' has shape (2, 24, 3)"),
        (lambda d: d.update(schema_version=np.array("0.9")), "schema_version is '0.9'"),
        (lambda d: d["transl"].__setitem__((0, 0), np.nan), "'transl' contains NaN"),
        (lambda d: d.update(tto_config=np.array("{nope")), "not valid JSON"),
        (lambda d: d.update(source=np.array([1, 2])), "'source' must be a string scalar"),
    ],
)
def test_validate_reports_each_problem(tmp_path, edit, expected):
    d = _result().to_arrays()
    edit(d)
    p = tmp_path / "bad.npz"
    np.savez(p, **d)
    problems = validate_result_npz(p)
    assert any(expected in q for q in problems), problems


def test_validate_damaged_or_missing_file(tmp_path):
    p = write_result_npz(tmp_path / "x.npz", _result())
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    problems = validate_result_npz(p)
    assert len(problems) == 1 and "cannot be read" in problems[0]
    assert "does not exist" in validate_result_npz(tmp_path / "none.npz")[0]
    # a pickled object array is refused (allow_pickle stays off)
    d = _result().to_arrays()
    d["source"] = np.array([{"a": 1}], dtype=object)
    np.savez(tmp_path / "obj.npz", **d)
    assert validate_result_npz(tmp_path / "obj.npz")


def test_write_refuses_invalid_result_and_leaves_nothing(tmp_path):
    r = _result()
    r.betas = r.betas[:, :5]
    with pytest.raises(ValueError, match="betas"):
        write_result_npz(tmp_path / "x.npz", r)
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [q.name for q in tmp_path.iterdir()] == ["out.txt"]
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".txt" and tmp.parent == tmp_path and is_temp_file(tmp)
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_clean_temp_files_only_removes_temporaries(tmp_path):
    (tmp_path / "sub").mkdir()
    keep = [tmp_path / "a.npz", tmp_path / ".hidden", tmp_path / "sub" / "b.png"]
    for k in keep:
        k.write_text("x")
    temps = [temp_path_for(tmp_path / "a.npz"), temp_path_for(tmp_path / "sub" / "v.mp4")]
    for t in temps:
        t.write_text("partial")
    removed = clean_temp_files(tmp_path)
    assert sorted(removed) == sorted(temps)
    assert all(k.exists() for k in keep) and not any(t.exists() for t in temps)


def test_manifest_append_damaged_line_and_finalize(tmp_path):
    m = Manifest(tmp_path, run_id="r1")
    m.add(ManifestRecord(input="a.jpg", key="a", status="ok", people=2, outputs=["a.npz"]))
    m.add(ManifestRecord(input="b.jpg", key="b", status="failed", reason="cannot decode"))
    with open(m.path, "a") as fh:  # a line cut short by a kill
        fh.write('{"input": "c.jpg", "key": "c", "sta')
    recs = read_manifest(m.path)
    assert sorted(recs) == ["a", "b"] and recs["b"].reason == "cannot decode"
    with pytest.raises(ValueError, match="unknown status"):
        m.add(ManifestRecord(input="d", key="d", status="weird"))

    m2 = Manifest(tmp_path, run_id="r2")
    m2.add(ManifestRecord(input="b.jpg", key="b", status="ok", people=1))
    m2.finalize()
    lines = [json.loads(x) for x in m2.path.read_text().splitlines()]
    assert [(x["key"], x["status"], x["run_id"]) for x in lines] == [("b", "ok", "r2"), ("a", "ok", "r1")]
    assert m2.counts()["ok"] == 1 and m2.counts()["failed"] == 0


def test_summary_json_handles_numpy_and_nan(tmp_path):
    p = write_summary(tmp_path, {"counts": {"ok": np.int64(3)}, "t": np.float32(0.5), "bad": float("nan"),
                                 "path": tmp_path})
    d = json.loads(p.read_text())
    assert d["counts"]["ok"] == 3 and d["bad"] is None and d["schema_version"] == SCHEMA_VERSION


@pytest.mark.parametrize("fmt", ["obj", "ply", "glb"])
def test_mesh_files_roundtrip(tmp_path, fmt):
    box = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    verts = np.stack([box.vertices + [0, 0, 5], box.vertices + [1, 0, 6]])
    paths = write_person_meshes(tmp_path / "img", verts, box.faces, fmt, colors=[(1, 0, 0), (0, 1, 0)])
    assert [p.name for p in paths] == [f"img_person00.{fmt}", f"img_person01.{fmt}"]
    loaded = trimesh.load(paths[1], force="mesh", process=False)
    assert loaded.faces.shape == box.faces.shape
    # glTF / Blender axes: (x, y, z) -> (x, -y, -z)
    expected = verts[1] * [1, -1, -1]
    np.testing.assert_allclose(np.sort(loaded.vertices, axis=0), np.sort(expected, axis=0), atol=1e-5)
    raw = write_person_meshes(tmp_path / "raw", verts, box.faces, fmt, frame="opencv")
    loaded = trimesh.load(raw[1], force="mesh", process=False)
    np.testing.assert_allclose(np.sort(loaded.vertices, axis=0), np.sort(verts[1], axis=0), atol=1e-5)
    if fmt == "glb":
        assert zipfile.is_zipfile(paths[0]) is False and paths[0].read_bytes()[:4] == b"glTF"


def test_mesh_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unsupported mesh format"):
        write_mesh(tmp_path / "a.stl", np.zeros((3, 3)), np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match="faces index"):
        write_mesh(tmp_path / "a.obj", np.zeros((3, 3)), np.array([[0, 1, 3]]))
    assert list(tmp_path.iterdir()) == []


def test_glb_of_a_standing_person_is_upright_and_faces_plus_z(tmp_path, standin_body):
    """A person standing upright and facing the camera (OpenCV frame: head at -y, front toward -z): in the GLB
    the head is above the feet along +y and the body faces +z."""
    import torch

    from metahmr_cli.geometry.rotation import axis_angle_to_rotmat

    rot = torch.eye(3).repeat(1, 24, 1, 1)
    rot[0, 0] = axis_angle_to_rotmat(torch.tensor([[np.pi, 0.0, 0.0]]))[0]  # upright, facing the camera
    out = standin_body(rot, torch.zeros(1, 10), torch.tensor([[0.0, 0.0, 4.0]]))
    verts, joints = out.vertices[0].numpy(), out.joints[0].numpy()
    (path,) = write_person_meshes(tmp_path / "person", verts[None], standin_body.faces, "glb")
    mesh = trimesh.load(path, force="mesh", process=False)
    v = np.asarray(mesh.vertices)
    # head top = highest vertex, feet = lowest: along +y
    assert v[:, 1].max() - v[:, 1].min() > 1.4
    head = v[np.argmax(v[:, 1])]
    feet = v[np.argmin(v[:, 1])]
    assert head[1] > feet[1] + 1.4
    # facing +z: the nose (joint 0, OpenPose nose) lies in front (+z) of the mid-hip line in the file's frame
    nose = joints[0] * [1, -1, -1]
    neck = joints[1] * [1, -1, -1]
    assert nose[2] > neck[2] + 0.02
    # and the person is 4 m in front of the camera, i.e. at z = -4 in the file
    assert v[:, 2].mean() == pytest.approx(-4.0, abs=0.2)


def test_glb_mesh_has_smooth_normals_and_a_material(tmp_path, standin_body):
    """Without normals Blender shades the body faceted; the GLB carries per-vertex normals (close to the area-weighted
    mean of the adjacent face normals, computed here independently; trimesh weighs by angle) and a material in the
    person's colour."""
    import pygltflib
    import torch

    out = standin_body(torch.eye(3).repeat(1, 24, 1, 1), torch.zeros(1, 10), torch.tensor([[0.0, 0.0, 4.0]]))
    verts = out.vertices[0].numpy().astype(np.float64)
    (path,) = write_person_meshes(tmp_path / "p", verts[None], standin_body.faces, "glb", colors=[(0.2, 0.4, 0.6)])
    gltf = pygltflib.GLTF2().load(str(path))
    prim = gltf.meshes[0].primitives[0]
    assert prim.attributes.NORMAL is not None and prim.material is not None
    assert gltf.materials[prim.material].pbrMetallicRoughness.baseColorFactor[:3] == pytest.approx([0.2, 0.4, 0.6])
    blob = gltf.binary_blob()

    def accessor(i):
        acc = gltf.accessors[i]
        view = gltf.bufferViews[acc.bufferView]
        return np.frombuffer(blob, np.float32, acc.count * 3, view.byteOffset + (acc.byteOffset or 0)).reshape(-1, 3)

    pos, nrm = accessor(prim.attributes.POSITION), accessor(prim.attributes.NORMAL)
    v = verts * [1, -1, -1]
    f = np.asarray(standin_body.faces)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    expect = np.zeros_like(v)
    for k in range(3):
        np.add.at(expect, f[:, k], fn)
    expect /= np.linalg.norm(expect, axis=1, keepdims=True)
    np.testing.assert_allclose(pos, v, atol=1e-5)  # same vertex order
    cos = np.sum(nrm * expect, axis=1)
    assert cos.min() > 0.95 and np.median(cos) > 0.999
    ply = write_mesh(tmp_path / "p.ply", verts, standin_body.faces)
    assert b"property float nx" in ply.read_bytes()[:400]
    obj = write_mesh(tmp_path / "p.obj", verts, standin_body.faces)
    assert "\nvn " in obj.read_text()
