"""HRNet-W48 backbones: the classification variant of CLIFF-HR48 and the pose variant of Meta-HMR.

Both share a stem (two 3x3 stride-2 convs), ``layer1`` (4 Bottlenecks, 64 -> 256) and three
multi-resolution stages (``stage2``..``stage4``, joined by ``transition1``..``transition3``). They differ in
how the four branches become one vector:

* :class:`ClsHRNet` (2048-d): ``incre_modules`` (one Bottleneck per branch), ``downsamp_modules``
  (3x3 stride-2 conv with bias, BN, ReLU), ``final_layer`` (1x1 conv with bias to 2048, BN, ReLU) and a
  global average pool.
* :class:`PoseHRNet` (720-d): ``downsample_stage_1/2/3`` (3/2/1 x [3x3 stride-2 conv, BN, ReLU]) bring the
  first three branches to the resolution of the fourth, the four maps are concatenated
  (48+96+192+384 = 720 channels) and averaged. Its ``final_layer`` (1x1 conv 48 -> 24 joints) is unused but
  kept so that the released state dicts load strictly.

Networks are built from a plain config dict (see :func:`hrnet_config`). Key names follow the public
HRNet code so released weights load without renaming. No in-place operations in forward.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .resnet import BasicBlock, Bottleneck, make_layer

__all__ = ["ClsHRNet", "HRModule", "PoseHRNet", "hrnet_config", "hrnet_w48_cls", "hrnet_w48_pose"]

BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}

POSE_PRETRAINED_LAYERS: tuple[str, ...] = (
    "conv1", "bn1", "conv2", "bn2", "layer1", "transition1", "stage2", "transition2", "stage3",
    "transition3", "stage4",
)
"""Top-level modules initialised from the COCO pose-HRNet checkpoint (``pose_hrnet_w48_256x192.pth``)."""


def hrnet_config(width: int = 48) -> dict[str, Any]:
    """The standard HRNet stage configuration for a given base width (48 for W48).

    stage1: 4 Bottlenecks of 64; stage2/3/4: 1/4/3 modules of 2/3/4 branches with 4 BasicBlocks per branch
    and widths [w, 2w, 4w, 8w].
    """
    w = int(width)
    return {
        "stem_width": 64,
        "stage1": {"block": "bottleneck", "blocks": 4, "channels": 64},
        "stage2": {"modules": 1, "block": "basic", "blocks": [4, 4], "channels": [w, 2 * w]},
        "stage3": {"modules": 4, "block": "basic", "blocks": [4, 4, 4], "channels": [w, 2 * w, 4 * w]},
        "stage4": {"modules": 3, "block": "basic", "blocks": [4, 4, 4, 4],
                   "channels": [w, 2 * w, 4 * w, 8 * w]},
    }


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int, relu: bool, bias: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=bias),
        nn.BatchNorm2d(out_ch),
    ]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class HRModule(nn.Module):
    """One multi-resolution module: parallel residual branches followed by all-to-all fusion.

    Fusion into branch i: higher-resolution inputs j < i pass through (i - j) stride-2 3x3 conv+BN
    (ReLU between them, not after the last); lower-resolution inputs j > i through 1x1 conv+BN and
    nearest upsampling by 2^(j-i); the sum is ReLU'd. With ``multi_scale_output=False`` only branch 0 is
    produced.
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], num_blocks: list[int],
                 in_channels: list[int], channels: list[int], multi_scale_output: bool = True) -> None:
        super().__init__()
        n = len(channels)
        if not (len(num_blocks) == len(in_channels) == n):
            raise ValueError(f"HRModule: branch counts differ: blocks={num_blocks} in={in_channels} "
                             f"channels={channels}")
        branches = []
        out_channels = []
        for i in range(n):
            branch, out_ch = make_layer(block, in_channels[i], channels[i], num_blocks[i])
            branches.append(branch)
            out_channels.append(out_ch)
        self.branches = nn.ModuleList(branches)
        self.out_channels = out_channels
        self.num_branches = n
        self.fuse_layers: nn.ModuleList | None = None
        if n > 1:
            fuse = []
            for i in range(n if multi_scale_output else 1):
                row: list[nn.Module | None] = []
                for j in range(n):
                    if j > i:
                        row.append(nn.Sequential(
                            nn.Conv2d(out_channels[j], out_channels[i], 1, bias=False),
                            nn.BatchNorm2d(out_channels[i]),
                            nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"),
                        ))
                    elif j == i:
                        row.append(None)
                    else:
                        steps = []
                        for k in range(i - j):
                            last = k == i - j - 1
                            steps.append(_conv_bn(out_channels[j], out_channels[i] if last else out_channels[j],
                                                  3, 2, relu=not last))
                        row.append(nn.Sequential(*steps))
                fuse.append(nn.ModuleList(row))
            self.fuse_layers = nn.ModuleList(fuse)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        """list of n maps (B, C_i, H/2^i, W/2^i) -> list of n (or 1) fused maps."""
        ys = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        if self.fuse_layers is None:
            return ys
        out = []
        for i, row in enumerate(self.fuse_layers):
            acc = ys[i]
            for j in range(self.num_branches):
                if j != i:
                    acc = acc + row[j](ys[j])
            out.append(F.relu(acc))
        return out


def _make_transition(pre: list[int], cur: list[int]) -> nn.ModuleList:
    """Map the branches of one stage onto the next: adapt widths; new branches come from the last one."""
    layers: list[nn.Module | None] = []
    for i, ch in enumerate(cur):
        if i < len(pre):
            layers.append(_conv_bn(pre[i], ch, 3, 1, relu=True) if ch != pre[i] else None)
        else:
            steps = []
            for k in range(i + 1 - len(pre)):
                out_ch = ch if k == i - len(pre) else pre[-1]
                steps.append(_conv_bn(pre[-1], out_ch, 3, 2, relu=True))
            layers.append(nn.Sequential(*steps))
    return nn.ModuleList(layers)


def _make_stage(cfg: dict[str, Any], in_channels: list[int]) -> tuple[nn.Sequential, list[int]]:
    block = BLOCKS[cfg["block"]]
    modules = []
    ch = list(in_channels)
    for _ in range(int(cfg["modules"])):
        module = HRModule(block, list(cfg["blocks"]), ch, list(cfg["channels"]), multi_scale_output=True)
        modules.append(module)
        ch = list(module.out_channels)
    return nn.Sequential(*modules), ch


def _apply_transition(transition: nn.ModuleList, ys: list[Tensor]) -> list[Tensor]:
    xs = []
    for i, layer in enumerate(transition):
        if i < len(ys):
            xs.append(ys[i] if layer is None else layer(ys[i]))
        else:
            xs.append(layer(ys[-1]))
    return xs


class _HRNetTrunk(nn.Module):
    """Stem + layer1 + stages 2-4; returns the four branch maps."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        stem = int(config.get("stem_width", 64))
        self.conv1 = nn.Conv2d(3, stem, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.conv2 = nn.Conv2d(stem, stem, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem)
        s1 = config["stage1"]
        self.layer1, ch1 = make_layer(BLOCKS[s1["block"]], stem, int(s1["channels"]), int(s1["blocks"]))
        pre = [ch1]
        for k in (2, 3, 4):
            cfg = config[f"stage{k}"]
            cur = [c * BLOCKS[cfg["block"]].expansion for c in cfg["channels"]]
            setattr(self, f"transition{k - 1}", _make_transition(pre, cur))
            stage, pre = _make_stage(cfg, cur)
            setattr(self, f"stage{k}", stage)
        self.branch_channels = pre

    def forward_branches(self, images: Tensor) -> list[Tensor]:
        """(B, 3, H, W) -> [(B, C_k, H/4/2^k, W/4/2^k) for k = 0..3]."""
        x = F.relu(self.bn1(self.conv1(images)))
        x = F.relu(self.bn2(self.conv2(x)))
        ys = [self.layer1(x)]
        ys = self.stage2(_apply_transition(self.transition1, ys))
        ys = self.stage3(_apply_transition(self.transition2, ys))
        return self.stage4(_apply_transition(self.transition3, ys))


class PoseHRNet(_HRNetTrunk):
    """Pose HRNet with strided-conv downsampling of branches 0-2 to branch 3 -> (B, 720) for W48."""

    last_stage_modules: tuple[str, ...] = ("stage4", "downsample_stage_1", "downsample_stage_2",
                                           "downsample_stage_3")
    pretrained_layers: tuple[str, ...] = POSE_PRETRAINED_LAYERS

    def __init__(self, config: dict[str, Any] | None = None, num_joints: int = 24) -> None:
        config = hrnet_config(48) if config is None else config
        super().__init__(config)
        ch = self.branch_channels
        # Unused heatmap head, present in the released state dicts.
        self.final_layer = nn.Conv2d(ch[0], num_joints, kernel_size=1)
        n = len(ch)
        for k in range(1, n):
            steps: list[nn.Module] = []
            for _ in range(n - k):
                steps += [nn.Conv2d(ch[k - 1], ch[k - 1], 3, stride=2, padding=1, bias=False),
                          nn.BatchNorm2d(ch[k - 1]), nn.ReLU()]
            setattr(self, f"downsample_stage_{k}", nn.Sequential(*steps))
        self.feature_dim = sum(ch)

    def reset_weights(self) -> None:
        """The pose-HRNet's own initialisation (convs N(0, 0.001), conv biases 0, BN 1/0), which the released
        main net keeps for the layers its COCO initialisation does not cover (downsample_stage_*)."""
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    m.weight.normal_(0.0, 0.001)
                    if m.bias is not None:
                        m.bias.zero_()
                elif isinstance(m, nn.BatchNorm2d):
                    m.weight.fill_(1.0)
                    m.bias.zero_()

    def forward_maps(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> concatenated low-resolution maps (B, 720, H/32, W/32)."""
        ys = self.forward_branches(images)
        n = len(ys)
        maps = [getattr(self, f"downsample_stage_{k}")(ys[k - 1]) for k in range(1, n)]
        return torch.cat([*maps, ys[-1]], dim=1)

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 720)."""
        return self.forward_maps(images).mean(dim=(2, 3))


class ClsHRNet(_HRNetTrunk):
    """Classification HRNet (ImageNet head without the classifier) -> (B, 2048)."""

    last_stage_modules: tuple[str, ...] = ("stage4", "incre_modules", "downsamp_modules", "final_layer")
    pretrained_layers: tuple[str, ...] = POSE_PRETRAINED_LAYERS

    def __init__(self, config: dict[str, Any] | None = None,
                 head_channels: tuple[int, ...] = (32, 64, 128, 256), out_dim: int = 2048) -> None:
        config = hrnet_config(48) if config is None else config
        super().__init__(config)
        ch = self.branch_channels
        incre = []
        for c, h in zip(ch, head_channels, strict=True):
            layer, _ = make_layer(Bottleneck, c, h, 1)
            incre.append(layer)
        self.incre_modules = nn.ModuleList(incre)
        widths = [h * Bottleneck.expansion for h in head_channels]
        self.downsamp_modules = nn.ModuleList(
            [_conv_bn(widths[i], widths[i + 1], 3, 2, relu=True, bias=True) for i in range(len(widths) - 1)]
        )
        self.final_layer = _conv_bn(widths[-1], out_dim, 1, 1, relu=True, bias=True)
        self.feature_dim = out_dim

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 2048)."""
        ys = self.forward_branches(images)
        y = self.incre_modules[0](ys[0])
        for i, down in enumerate(self.downsamp_modules):
            y = self.incre_modules[i + 1](ys[i + 1]) + down(y)
        return self.final_layer(y).mean(dim=(2, 3))


def hrnet_w48_pose(img_hw: tuple[int, int] = (256, 192)) -> PoseHRNet:
    """Meta-HMR main-net backbone: pose HRNet-W48 with conv downsampling, 720-d."""
    del img_hw  # fully convolutional + global pooling
    return PoseHRNet(hrnet_config(48))


def hrnet_w48_cls(img_hw: tuple[int, int] = (256, 192)) -> ClsHRNet:
    """CLIFF-HR48 backbone: classification HRNet-W48, 2048-d."""
    del img_hw
    return ClsHRNet(hrnet_config(48))
