"""Export format lists (``--save-mesh glb,obj``, ``--export``) and the names of a video's sequence files."""

from __future__ import annotations

import pytest

from metahmr_cli.errors import ConfigError
from metahmr_cli.exports import MESH_FORMATS, mesh_names, parse_formats, sequence_names
from metahmr_cli.process_config import ProcessConfig


@pytest.mark.parametrize(("value", "expected"), [
    ("glb", ("glb",)), ("glb,obj", ("glb", "obj")), (" GLB , obj,glb ", ("glb", "obj")), ("none", ()), ("", ()),
    (None, ()), (("ply", "glb"), ("ply", "glb")), (["obj"], ("obj",)),
])
def test_mesh_format_lists(value, expected):
    assert parse_formats(value, MESH_FORMATS, "--save-mesh") == expected


def test_a_bad_format_is_named_with_the_choices():
    with pytest.raises(ConfigError, match=r"--save-mesh stl: choose from obj, ply, glb"):
        parse_formats("glb,stl", MESH_FORMATS, "--save-mesh")
    cfg = ProcessConfig(inputs=["x.jpg"], save_mesh="glb,obj")
    cfg.validate()
    assert cfg.save_mesh == ("glb", "obj")
    with pytest.raises(ConfigError, match="save_mesh"):
        ProcessConfig(inputs=["x.jpg"], save_mesh="fbx").validate()


def test_names():
    assert mesh_names("clip/frame_000003", 2, ("glb", "obj")) == [
        "clip/frame_000003_person00.glb", "clip/frame_000003_person01.glb",
        "clip/frame_000003_person00.obj", "clip/frame_000003_person01.obj"]
    assert sequence_names("walk", [1, 4], ("bvh", "glb")) == [
        "walk_tracks.npz", "walk_tracks/track_001.glb", "walk_tracks/track_004.glb", "walk_tracks/scene.glb",
        "walk_tracks/track_001.bvh", "walk_tracks/track_004.bvh"]
    assert sequence_names("walk", [], ("glb",)) == ["walk_tracks.npz"]
