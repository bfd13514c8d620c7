"""The six released networks: exact key layouts (from the reference JSON), strict loading and forward shapes.

The big networks are built once per module (module-scoped fixture) and each runs one batch-1 forward.
"""

from __future__ import annotations

import pytest
import torch
from fixtures.models import random_state_dict

from metahmr_cli.errors import CheckpointError
from metahmr_cli.models import LAYOUTS, build_network, export_state_dict, import_state_dict
from metahmr_cli.models.checkpoints import load_layout_state_dict

LAYOUT_NAMES = sorted(LAYOUTS)
FC1_IN = {"cliff_meta_resnet": 2208, "cliff_aux_resnet": 2208, "hmr_meta_resnet": 2205, "hmr_aux_resnet": 2205,
          "cliff_meta_hrnet": 880, "cliff_aux_hrnet": 2208}
N_ITER = {"cliff_meta_resnet": 10, "cliff_aux_resnet": 3, "hmr_meta_resnet": 10, "hmr_aux_resnet": 3,
          "cliff_meta_hrnet": 10, "cliff_aux_hrnet": 3}


@pytest.fixture(scope="module")
def networks() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {name: build_network(name).eval() for name in LAYOUT_NAMES}


def test_layout_names_match_reference(released_layouts) -> None:
    assert set(released_layouts) == set(LAYOUTS)


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_export_has_exact_reference_keys_shapes_dtypes(layout, networks, released_layouts) -> None:
    exported = export_state_dict(networks[layout], layout)
    ref = released_layouts[layout]
    assert set(exported) == set(ref), (sorted(set(ref) - set(exported))[:5], sorted(set(exported) - set(ref))[:5])
    for key, (shape, dtype) in ref.items():
        assert list(exported[key].shape) == shape, key
        assert exported[key].dtype == getattr(torch, dtype), key


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_reference_state_dict_loads_strictly(layout, networks, released_layouts) -> None:
    model = networks[layout]
    original = {k: v.clone() for k, v in model.state_dict().items()}
    sd = random_state_dict(released_layouts[layout], seed=7)
    internal = import_state_dict(sd, layout)
    try:
        result = model.load_state_dict(internal, strict=True)
        assert not result.missing_keys and not result.unexpected_keys
        # the values really arrived, and export gives them back under the released names
        back = export_state_dict(model, layout)
        conv_key = next(k for k in sd if "conv" in k)
        for key in ("fc1.weight", "init_pose", conv_key):
            assert torch.equal(back[key], sd[key]), key
    finally:
        model.load_state_dict(original)  # keep the shared network usable for the forward tests
    assert model.fc1.in_features == FC1_IN[layout]
    assert model.n_iter == N_ITER[layout]


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_forward_shapes(layout, networks) -> None:
    model = networks[layout]
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(1, 3, 256, 192, generator=gen)
    bbox = torch.randn(1, 3, generator=gen)
    with torch.no_grad():
        feats = model.encode(images)
        out = model(images, bbox)
        head = model(bbox_info=bbox, features=feats)
    expected_dim = 720 if layout == "cliff_meta_hrnet" else 2048
    assert feats.shape == (1, expected_dim)
    assert out["pose6d"].shape == (1, 144) and out["rotmat"].shape == (1, 24, 3, 3)
    assert out["betas"].shape == (1, 10) and out["cam"].shape == (1, 3)
    assert all(torch.isfinite(v).all() for v in out.values())
    rot = out["rotmat"][0].double()
    assert torch.allclose(rot.transpose(-1, -2) @ rot, torch.eye(3, dtype=torch.float64).expand(24, 3, 3), atol=1e-5)
    for key in out:
        assert torch.equal(out[key], head[key]), key


def test_last_stage_scopes(networks) -> None:
    def prefixes(layout: str) -> set[str]:
        names = networks[layout].scope_parameter_names("last_stage")
        return {n.split(".")[1] for n in names if n.startswith("backbone.")}

    assert prefixes("cliff_meta_resnet") == {"layer4"}
    assert prefixes("cliff_meta_hrnet") == {"stage4", "downsample_stage_1", "downsample_stage_2", "downsample_stage_3"}
    assert prefixes("cliff_aux_hrnet") == {"stage4", "incre_modules", "downsamp_modules", "final_layer"}
    head = networks["cliff_meta_hrnet"].scope_parameter_names("head")
    assert len(head) == 10


def test_wrong_layout_is_reported_with_key_names(networks, released_layouts) -> None:
    # an HMR (2205) state dict offered to the CLIFF ResNet network: fc1 shape mismatch
    sd = random_state_dict(released_layouts["hmr_aux_resnet"], seed=1)
    with pytest.raises(CheckpointError, match=r"fc1\.weight: file \(1024, 2205\) vs network \(1024, 2208\)"):
        load_layout_state_dict(networks["cliff_aux_resnet"], sd, "cliff_aux_resnet", source="test.pt['model']")
    # missing keys are named (first ten) with their count
    sd = random_state_dict(released_layouts["cliff_aux_resnet"], seed=1)
    dropped = [k for k in sd if k.startswith("layer4.2.")]
    for k in dropped:
        del sd[k]
    with pytest.raises(CheckpointError) as info:
        load_layout_state_dict(networks["cliff_aux_resnet"], sd, "cliff_aux_resnet", source="test.pt['model']")
    msg = str(info.value)
    assert f"missing keys ({len(dropped)})" in msg and "layer4.2.conv1.weight" in msg
    assert "cliff_aux_resnet" in msg and "test.pt['model']" in msg
