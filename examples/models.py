"""Small model definitions used by the example recipes and the tests (plain PyTorch, loaded by file path).

Every model here has the structures that make channel pruning non-trivial: residual adds (coupled
channels), a channel concatenation (index mapping) and a depthwise convolution (in = out channels), so a
recipe that prunes them exercises the whole dependency graph.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(
    cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, relu: bool = True
) -> nn.Sequential:
    """Conv (no bias) + BatchNorm (+ ReLU)."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs and a residual add (1x1 projection when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv_bn(cin, cout, 3, stride)
        self.conv2 = _conv_bn(cout, cout, 3, relu=False)
        self.shortcut = (
            _conv_bn(cin, cout, 1, stride, relu=False) if stride != 1 or cin != cout else nn.Identity()
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """conv1 -> conv2, plus the (projected) input."""
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class MixBlock(nn.Module):
    """Two branches concatenated along channels, added back to the input.

    Branch a: depthwise 3x3 -> pointwise 1x1 to half the channels; branch b: 1x1 to the other half.
    `cat([a, b]) + x` couples the input's channels to both branches through the concatenation.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.depthwise = _conv_bn(channels, channels, 3, groups=channels)
        self.pointwise = _conv_bn(channels, half, 1, relu=False)
        self.branch = _conv_bn(channels, channels - half, 1, relu=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(cat(pointwise(depthwise(x)), branch(x)) + x)."""
        mixed = torch.cat([self.pointwise(self.depthwise(x)), self.branch(x)], dim=1)
        return self.relu(mixed + x)


class SmallResNet(nn.Module):
    """stem (stride 2) -> residual block -> residual block (stride 2, wider) -> mix block -> pool -> linear."""

    def __init__(self, num_classes: int, in_channels: int, width: int) -> None:
        super().__init__()
        self.stem = _conv_bn(in_channels, width, 3, stride=2)
        self.layer1 = BasicBlock(width, width)
        self.layer2 = BasicBlock(width, 2 * width, stride=2)
        self.mix = MixBlock(2 * width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, num_classes)."""
        x = self.mix(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def quickstart_cnn(num_classes: int = 10, in_channels: int = 1, width: int = 32) -> nn.Module:
    """ResNet-style CNN for 32x32 digits: 8.8 M MACs and 82 k parameters at width 32.

    Trains to about 99 % test accuracy on scikit-learn digits in 15 epochs from scratch (about 0.6 s
    per epoch on two CPU cores). MACs scale with width squared (width 16: 2.2 M).
    """
    return SmallResNet(num_classes, in_channels, width)


def tiny_cnn(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """The same structure at width 8 for fast tests: 0.57 M MACs at 32x32 (0.14 M at 16x16), 5.6 k parameters."""
    return SmallResNet(num_classes, in_channels, 8)


class SEGate(nn.Module):
    """Squeeze-excitation: global mean -> 1x1 reduce (ReLU) -> 1x1 expand -> hardsigmoid gate -> scale."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.relu = nn.ReLU()
        self.expand = nn.Conv2d(reduced, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x scaled per channel by a gate computed from its own global mean."""
        return x * self.gate(self.expand(self.relu(self.reduce(x.mean((2, 3), keepdim=True)))))


class MobileV3Block(nn.Module):
    """1x1 expand (hardswish) -> depthwise 3x3 (hardswish) -> SE -> two 1x1 branches concatenated, one of
    them a grouped conv -> residual add."""

    def __init__(self, channels: int, expand: int) -> None:
        super().__init__()
        hidden = channels * expand
        self.expand = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.Hardswish()
        )
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.Hardswish(),
        )
        self.se = SEGate(hidden, max(8, hidden // 4))
        half = channels // 2
        self.project = nn.Sequential(nn.Conv2d(hidden, half, 1, bias=False), nn.BatchNorm2d(half))
        self.grouped = nn.Sequential(
            nn.Conv2d(hidden, channels - half, 1, groups=2, bias=False), nn.BatchNorm2d(channels - half)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x + cat(project(y), grouped(y)), y the SE-gated depthwise output of the expanded x."""
        y = self.se(self.depthwise(self.expand(x)))
        return x + torch.cat([self.project(y), self.grouped(y)], dim=1)


class MobileV3CNN(nn.Module):
    """A MobileNetV3-style CNN as a user would write one: hardswish, squeeze-excitation with a hardsigmoid
    gate, a grouped conv, a channel concatenation and residual adds."""

    def __init__(self, num_classes: int, in_channels: int, width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.Hardswish(),
        )
        self.block1 = MobileV3Block(width, 3)
        self.down = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.Hardswish(),
        )
        self.block2 = MobileV3Block(2 * width, 4)
        self.head = nn.Sequential(nn.Conv2d(2 * width, 4 * width, 1), nn.Hardswish())
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, num_classes)."""
        x = self.head(self.block2(self.down(self.block1(self.stem(x)))))
        return self.classifier(x.mean((2, 3)))


def mobile_v3_cnn(num_classes: int = 10, in_channels: int = 1, width: int = 32) -> nn.Module:
    """MobileNetV3-style CNN for 32x32 digits: about 5 M MACs at width 32."""
    return MobileV3CNN(num_classes, in_channels, width)


def tiny_mobile_v3(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """The same structure at width 8 for fast tests."""
    return MobileV3CNN(num_classes, in_channels, 8)
