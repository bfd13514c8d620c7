"""Regressor head behaviour on the tiny backbone: shapes, the iteration itself, scopes, torch.func."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.func import functional_call, vmap

from metahmr_cli.errors import InputError
from metahmr_cli.models import Regressor, build_regressor, default_mean_params
from metahmr_cli.models.backbones import ClsHRNet, PoseHRNet, hrnet_config

B = 2


def _inputs(batch: int = B, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 256, 192, generator=gen), torch.randn(batch, 3, generator=gen)


def _slow_head(model, feats: torch.Tensor, bbox: torch.Tensor | None, n_iter: int) -> dict[str, np.ndarray]:
    """The head iteration written out with numpy float64 matmuls (eval mode: dropout is identity)."""
    p = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
    f = feats.detach().double().numpy()
    n = f.shape[0]
    pose = np.repeat(p["init_pose"], n, 0)
    shape = np.repeat(p["init_shape"], n, 0)
    cam = np.repeat(p["init_cam"], n, 0)
    for _ in range(n_iter):
        parts = [f] + ([bbox.double().numpy()] if bbox is not None else []) + [pose, shape, cam]
        x = np.concatenate(parts, 1)
        h = x @ p["fc1.weight"].T + p["fc1.bias"]
        h = h @ p["fc2.weight"].T + p["fc2.bias"]  # no ReLU between fc1 and fc2
        pose = pose + h @ p["decpose.weight"].T + p["decpose.bias"]
        shape = shape + h @ p["decshape.weight"].T + p["decshape.bias"]
        cam = cam + h @ p["deccam.weight"].T + p["deccam.bias"]
    return {"pose6d": pose, "betas": shape, "cam": cam}


def _gram_schmidt(pose6d: np.ndarray) -> np.ndarray:
    """Independent rot6d -> rotmat for one (6,) vector (3x2 row-major, columns b1 b2 b3)."""
    a = pose6d.reshape(3, 2)
    b1 = a[:, 0] / np.linalg.norm(a[:, 0])
    a2 = a[:, 1] - (b1 @ a[:, 1]) * b1
    b2 = a2 / np.linalg.norm(a2)
    return np.stack([b1, b2, np.cross(b1, b2)], axis=1)


def test_output_shapes_and_dtypes(tiny_regressor) -> None:
    images, bbox = _inputs()
    out = tiny_regressor(images, bbox)
    assert set(out) == {"pose6d", "rotmat", "betas", "cam"}
    assert out["pose6d"].shape == (B, 144)
    assert out["rotmat"].shape == (B, 24, 3, 3)
    assert out["betas"].shape == (B, 10)
    assert out["cam"].shape == (B, 3)
    assert all(v.dtype == torch.float32 for v in out.values())
    assert tiny_regressor.feature_dim == 64 and tiny_regressor.uses_bbox_info
    assert tiny_regressor.fc1.in_features == 64 + 3 + 144 + 13


@pytest.mark.parametrize("arch", ["cliff", "hmr"])
def test_head_matches_slow_implementation(arch, tiny_regressor, tiny_hmr_regressor) -> None:
    model = tiny_regressor if arch == "cliff" else tiny_hmr_regressor
    images, bbox = _inputs()
    with torch.no_grad():
        feats = model.encode(images)
        out = model(images, bbox if arch == "cliff" else None, n_iter=4)
    ref = _slow_head(model, feats, bbox if arch == "cliff" else None, n_iter=4)
    for key in ("pose6d", "betas", "cam"):
        np.testing.assert_allclose(out[key].double().numpy(), ref[key], rtol=1e-5, atol=1e-5)
    rot = out["rotmat"].double().numpy()
    for b in range(B):
        for j in (0, 7, 23):
            np.testing.assert_allclose(rot[b, j], _gram_schmidt(ref["pose6d"][b, 6 * j:6 * j + 6]), atol=1e-5)


def test_rotmats_orthonormal(tiny_regressor) -> None:
    images, bbox = _inputs(3)
    with torch.no_grad():
        rot = tiny_regressor(images, bbox)["rotmat"].double()
    eye = torch.eye(3, dtype=torch.float64).expand_as(rot)
    assert torch.allclose(rot.transpose(-1, -2) @ rot, eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(3, 24, dtype=torch.float64), atol=1e-5)


def test_head_only_forward_equals_full_forward(tiny_regressor) -> None:
    images, bbox = _inputs()
    with torch.no_grad():
        full = tiny_regressor(images, bbox)
        feats = tiny_regressor.encode(images)
        head = tiny_regressor(bbox_info=bbox, features=feats)
    for key in full:
        assert torch.equal(full[key], head[key]), key


def test_default_init_buffers_and_weights() -> None:
    torch.manual_seed(0)
    model = build_regressor("cliff", "resnet_tiny", n_iter=3)
    assert model.init_pose.shape == (1, 144) and model.init_shape.shape == (1, 10) and model.init_cam.shape == (1, 3)
    assert torch.equal(model.init_pose[0, :6], torch.tensor([1.0, 0, 0, 1, 0, 0]))
    assert torch.equal(model.init_pose.reshape(24, 6), torch.tensor([[1.0, 0, 0, 1, 0, 0]]).repeat(24, 1))
    assert torch.equal(model.init_shape, torch.zeros(1, 10))
    assert torch.equal(model.init_cam, torch.tensor([[0.9, 0.0, 0.0]]))
    # xavier-uniform with gain 0.01: |w| <= 0.01 * sqrt(6 / (fan_in + fan_out))
    for dec in (model.decpose, model.decshape, model.deccam):
        bound = 0.01 * math.sqrt(6.0 / (dec.in_features + dec.out_features))
        assert dec.weight.abs().max() <= bound + 1e-12
        assert dec.weight.abs().max() > 0.5 * bound
    # conv init N(0, sqrt(2 / (k*k*out))): check the empirical std of the widest conv
    conv = model.backbone.layer4[0].conv2
    expected = math.sqrt(2.0 / (3 * 3 * conv.out_channels))
    assert abs(conv.weight.std().item() / expected - 1) < 0.05
    assert torch.equal(model.backbone.bn1.weight, torch.ones(8))
    assert torch.equal(model.backbone.bn1.bias, torch.zeros(8))


def test_mean_params_go_into_buffers() -> None:
    mp = default_mean_params()
    mp["pose"] = np.linspace(-1, 1, 144).astype(np.float64)
    mp["shape"] = np.arange(10, dtype=np.float64)
    mp["cam"] = np.array([0.8, 0.1, -0.2])
    model = build_regressor("hmr", "resnet_tiny", mean_params=mp)
    assert model.init_pose.dtype == torch.float32
    np.testing.assert_allclose(model.init_pose[0].numpy(), mp["pose"], rtol=1e-6)
    np.testing.assert_allclose(model.init_shape[0].numpy(), mp["shape"])
    np.testing.assert_allclose(model.init_cam[0].numpy(), mp["cam"], rtol=1e-6)
    with pytest.raises(InputError, match="pose"):
        build_regressor("hmr", "resnet_tiny", mean_params={"pose": np.zeros(10), "shape": np.zeros(10),
                                                           "cam": np.zeros(3)})


def test_n_iter_changes_result_and_default_is_used(tiny_regressor) -> None:
    images, bbox = _inputs()
    with torch.no_grad():
        feats = tiny_regressor.encode(images)
        default = tiny_regressor(bbox_info=bbox, features=feats)
        three = tiny_regressor(bbox_info=bbox, features=feats, n_iter=3)
        one = tiny_regressor(bbox_info=bbox, features=feats, n_iter=1)
    assert torch.equal(default["cam"], three["cam"])
    assert not torch.allclose(one["pose6d"], three["pose6d"])


def test_bad_inputs_give_clear_errors(tiny_regressor, tiny_hmr_regressor) -> None:
    images, bbox = _inputs()
    with pytest.raises(InputError, match="bbox_info"):
        tiny_regressor(images)
    with pytest.raises(InputError, match="256x192"):
        tiny_regressor(torch.zeros(1, 3, 224, 224), bbox[:1])
    with pytest.raises(InputError, match="features"):
        tiny_regressor(bbox_info=bbox, features=torch.zeros(B, 65))
    with pytest.raises(InputError, match="images"):
        tiny_regressor()
    # the HMR head ignores bbox_info
    with torch.no_grad():
        a = tiny_hmr_regressor(images)
        b = tiny_hmr_regressor(images, bbox)
    assert torch.equal(a["pose6d"], b["pose6d"])


def test_scope_parameter_names(tiny_regressor) -> None:
    head = tiny_regressor.scope_parameter_names("head")
    assert head == [f"{m}.{p}" for m in ("fc1", "fc2", "decpose", "decshape", "deccam") for p in ("weight", "bias")]
    last = tiny_regressor.scope_parameter_names("last_stage")
    assert set(head) <= set(last)
    backbone_last = [n for n in last if n.startswith("backbone.")]
    assert backbone_last and all(n.startswith("backbone.layer4.") for n in backbone_last)
    all_names = tiny_regressor.scope_parameter_names("all")
    assert all_names == [n for n, _ in tiny_regressor.named_parameters()]
    params = dict(tiny_regressor.named_parameters())
    assert all(n in params for n in last)
    with pytest.raises(ValueError):
        tiny_regressor.scope_parameter_names("everything")  # type: ignore[arg-type]


def test_vmap_functional_call_over_parameter_sets(tiny_regressor) -> None:
    """vmap over 3 stacked parameter sets == 3 separate forward passes (eval mode)."""
    model = tiny_regressor
    images, bbox = _inputs()
    base = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    sets = []
    for i in range(3):
        gen = torch.Generator().manual_seed(100 + i)
        sets.append({k: v * (1 + 0.1 * torch.randn(v.shape, generator=gen)) for k, v in base.items()})
    stacked = {k: torch.stack([s[k] for s in sets]) for k in base}

    def run(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return functional_call(model, {**params, **buffers}, (images, bbox))

    with torch.no_grad():
        batched = vmap(run)(stacked)
        for i, s in enumerate(sets):
            single = functional_call(model, {**s, **buffers}, (images, bbox))
            for key in single:
                assert batched[key].shape == (3, *single[key].shape)
                assert torch.allclose(batched[key][i], single[key], atol=1e-5, rtol=1e-5), key
        # the parameter sets really differ
        assert not torch.allclose(batched["pose6d"][0], batched["pose6d"][1])


def test_grad_through_functional_call_head_scope(tiny_regressor) -> None:
    """Gradients w.r.t. the head scope through functional_call agree with a finite difference."""
    model = tiny_regressor.double()
    images, bbox = _inputs()
    images, bbox = images.double(), bbox.double()
    with torch.no_grad():
        feats = model.encode(images)
    names = model.scope_parameter_names("head")
    params = {n: p.detach().clone() for n, p in model.named_parameters() if n in names}

    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        out = functional_call(model, p, (), {"bbox_info": bbox, "features": feats}, strict=False)
        return (out["cam"] ** 2).sum() + out["betas"].sum()

    leaves = {n: v.clone().requires_grad_(True) for n, v in params.items()}
    grads = dict(zip(leaves, torch.autograd.grad(loss(leaves), list(leaves.values())), strict=True))
    gen = torch.Generator().manual_seed(3)
    direction = {n: torch.randn(v.shape, generator=gen, dtype=torch.float64) for n, v in params.items()}
    eps = 1e-6
    plus = loss({n: params[n] + eps * direction[n] for n in params})
    minus = loss({n: params[n] - eps * direction[n] for n in params})
    fd = (plus - minus) / (2 * eps)
    analytic = sum((grads[n] * direction[n]).sum() for n in params)
    assert torch.allclose(analytic, fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("kind", ["pose", "cls"])
def test_small_hrnet_regressors_work_under_vmap(kind) -> None:
    """A width-4 HRNet of each kind: correct feature size, pose-HRNet init, vmap over 2 parameter sets."""
    torch.manual_seed(0)
    if kind == "pose":
        backbone = PoseHRNet(hrnet_config(4))
        assert backbone.feature_dim == 4 + 8 + 16 + 32
    else:
        backbone = ClsHRNet(hrnet_config(4), head_channels=(2, 4, 8, 16), out_dim=32)
    model = Regressor(backbone, backbone.feature_dim, arch="cliff", n_iter=2, backbone_name=f"hrnet4_{kind}",
                      img_hw=(128, 96)).eval()
    if kind == "pose":  # the pose-HRNet keeps its own N(0, 0.001) conv initialisation
        w = model.backbone.downsample_stage_1[0].weight
        assert abs(w.std().item() - 0.001) < 0.0002
    images, bbox = _inputs(1)
    images = images[:, :, ::2, ::2].contiguous()  # 128x96 keeps the test fast
    names = model.scope_parameter_names("last_stage")
    params = {n: p.detach() for n, p in model.named_parameters() if n in names}
    frozen = {n: p.detach() for n, p in model.named_parameters() if n not in names}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    sets = [{n: v * (1 + 0.1 * torch.randn(v.shape, generator=torch.Generator().manual_seed(i)))
             for n, v in params.items()} for i in range(2)]
    stacked = {n: torch.stack([s[n] for s in sets]) for n in params}
    with torch.no_grad():
        batched = vmap(lambda p: functional_call(model, {**p, **frozen, **buffers}, (images, bbox)))(stacked)
        for i in range(2):
            single = functional_call(model, {**sets[i], **frozen, **buffers}, (images, bbox))
            assert torch.allclose(batched["rotmat"][i], single["rotmat"], atol=1e-5)
            assert torch.allclose(batched["cam"][i], single["cam"], rtol=1e-4, atol=1e-5)


def test_keypoint_networks_ignore_where_a_missing_keypoint_is() -> None:
    """The open model's encoder reads the 49 keypoint slots: a keypoint with confidence 0 is missing, whatever its
    coordinates (tools write 0, 0, the box centre or anything), so in every slot its features equal those of
    (0, 0, 0) there, while a seen keypoint's position does change them. Checked on a fresh encoder and on the
    shipped open model's two networks."""
    from metahmr_cli.models import load_networks
    from metahmr_cli.models.backbones.keypoints import keypoint_encoder
    from metahmr_cli.tiers import open_checkpoint_path

    torch.manual_seed(0)
    nets = load_networks(open_checkpoint_path())
    encoders = [keypoint_encoder().eval(), nets.main.backbone, nets.aux.backbone]
    for enc in encoders:
        shape = tuple(enc.input_shape)
        assert shape[0] in (49, 67)  # the 49 keypoint slots (then, with image evidence, 18 evidence rows)
        gen = torch.Generator().manual_seed(1)
        base = torch.rand((1, *shape), generator=gen) * 1.6 - 0.8
        base[..., 2] = 0.3 + 0.6 * torch.rand((1, shape[0]), generator=gen)
        missing_at_origin = base.repeat(49, *[1] * len(shape))
        missing_elsewhere = missing_at_origin.clone()
        for slot in range(49):
            missing_at_origin[slot, slot, :3] = 0.0
            missing_elsewhere[slot, slot, :3] = torch.tensor([0.7, -0.45, 0.0])
        with torch.no_grad():
            a, b, seen = enc(missing_at_origin), enc(missing_elsewhere), enc(base)
        torch.testing.assert_close(b, a, atol=0, rtol=0)
        assert ((seen - a).abs().amax(dim=1) > 1e-6).all()  # each slot, seen, moves the features
