"""ResNet backbones: the torchvision-layout ResNet-50 of CLIFF/HMR and a tiny ResNet for tests and toy runs.

Key names follow torchvision (``conv1``, ``bn1``, ``layer1`` ... ``layer4``; no ``fc``), so the released
flat state dicts map onto ``backbone.<key>`` one to one. The forward pass uses no in-place operations, so
the backbone can run under ``torch.func.functional_call`` and ``torch.func.vmap``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BasicBlock", "Bottleneck", "ResNetBackbone", "resnet50", "resnet_tiny"]


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


def projection(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    """Shortcut projection ``downsample`` = (1x1 conv, BN); keys ``downsample.0`` / ``downsample.1``."""
    return nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (HRNet branches, tiny ResNet)."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_ch, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, planes, H/stride, W/stride)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (carries the stride) -> 1x1 bottleneck with 4x expansion (torchvision v1.5 layout)."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv1x1(in_ch, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, 4*planes, H/stride, W/stride)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


def make_layer(block: type[BasicBlock] | type[Bottleneck], in_ch: int, planes: int, blocks: int,
               stride: int = 1) -> tuple[nn.Sequential, int]:
    """A residual stage of ``blocks`` blocks; the first one projects the shortcut when needed.

    Returns the stage and its number of output channels.
    """
    out_ch = planes * block.expansion
    downsample = projection(in_ch, out_ch, stride) if stride != 1 or in_ch != out_ch else None
    layers = [block(in_ch, planes, stride, downsample)]
    layers += [block(out_ch, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers), out_ch


class ResNetBackbone(nn.Module):
    """ResNet without classifier: images (B, 3, H, W) -> pooled features (B, feature_dim).

    Stem: 7x7 stride-2 conv, BN, ReLU, 3x3 stride-2 max-pool; then ``layer1``..``layer4`` with strides
    1, 2, 2, 2 (total stride 32). Pooling is an average over a fixed (H/32, W/32) window with stride 1,
    i.e. AvgPool2d((8, 6)) for 256x192 crops and AvgPool2d(7) for 224x224 crops, exactly like the
    released networks. With ``global_pool=True`` the mean over all positions is used instead (any size).
    """

    last_stage_modules: tuple[str, ...] = ("layer4",)

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int],
                 widths: Sequence[int] = (64, 128, 256, 512), stem_width: int = 64,
                 img_hw: tuple[int, int] = (256, 192), global_pool: bool = False) -> None:
        super().__init__()
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError(f"ResNetBackbone needs 4 stages, got layers={layers} widths={widths}")
        self.conv1 = nn.Conv2d(3, stem_width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        ch = stem_width
        self.layer1, ch = make_layer(block, ch, widths[0], layers[0], stride=1)
        self.layer2, ch = make_layer(block, ch, widths[1], layers[1], stride=2)
        self.layer3, ch = make_layer(block, ch, widths[2], layers[2], stride=2)
        self.layer4, ch = make_layer(block, ch, widths[3], layers[3], stride=2)
        self.feature_dim = ch
        self.img_hw = (int(img_hw[0]), int(img_hw[1]))
        self.pool_kernel = (max(1, self.img_hw[0] // 32), max(1, self.img_hw[1] // 32))
        self.global_pool = global_pool

    def forward_maps(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> layer4 feature maps (B, feature_dim, H/32, W/32)."""
        x = F.relu(self.bn1(self.conv1(images)))
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) ImageNet-normalised crops -> (B, feature_dim)."""
        maps = self.forward_maps(images)
        if self.global_pool:
            return maps.mean(dim=(2, 3))
        return F.avg_pool2d(maps, kernel_size=self.pool_kernel, stride=1).flatten(1)


def resnet50(img_hw: tuple[int, int] = (256, 192)) -> ResNetBackbone:
    """ResNet-50 (Bottleneck [3, 4, 6, 3]), 2048-d features, torchvision key layout."""
    return ResNetBackbone(Bottleneck, (3, 4, 6, 3), img_hw=img_hw)


def resnet_tiny(img_hw: tuple[int, int] = (256, 192)) -> ResNetBackbone:
    """A few-channel ResNet (BasicBlock, one block per stage, widths 8/16/32/64) -> 64-d features.

    Same key layout as the big ResNets (``conv1``, ``bn1``, ``layer1``..``layer4``); for fast CPU tests
    and toy training. Global average pooling, so any crop size works.
    """
    return ResNetBackbone(BasicBlock, (1, 1, 1, 1), widths=(8, 16, 32, 64), stem_width=8, img_hw=img_hw,
                          global_pool=True)
