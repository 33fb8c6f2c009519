"""Standard architectures in plain torch (no torchvision, no downloaded weights).

`mobilenet_v2` (Sandler et al. 2018) and `resnet18` (He et al. 2016) at their ImageNet shape (224x224,
1000 classes) for latency benchmarks, and the same networks adapted to 32x32 digits (`*_digits`: stride-1
stem, no max-pool, fewer early downsamplings) for accuracy benchmarks and example recipes.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(
    cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU6
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def _make_divisible(value: float, divisor: int = 8) -> int:
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = [_conv_bn(cin, hidden, 1)] if expand != 1 else []
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), _conv_bn(hidden, cout, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2(nn.Module):
    """MobileNetV2; width 1.0 at 224x224 is about 300 M MACs."""

    #: expansion, output channels, repeats, stride of the first repeat
    SETTINGS = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(
        self, num_classes: int = 1000, in_channels: int = 3, width: float = 1.0, small_input: bool = False
    ) -> None:
        super().__init__()
        stem = _make_divisible(32 * width)
        layers: list[nn.Module] = [_conv_bn(in_channels, stem, 3, 1 if small_input else 2)]
        cin = stem
        for index, (expand, channels, repeats, stride) in enumerate(self.SETTINGS):
            cout = _make_divisible(channels * width)
            if small_input and index == 1:
                stride = 1  # 32x32 inputs: keep resolution one stage longer
            for i in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        last = _make_divisible(1280 * max(1.0, width))
        layers.append(_conv_bn(cin, last, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(cin, cout, 3, stride, act=nn.ReLU), _conv_bn(cout, cout, 3, act=None)
        )
        self.shortcut = (
            _conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18; about 1.8 G MACs at 224x224."""

    def __init__(
        self, num_classes: int = 1000, in_channels: int = 3, width: int = 64, small_input: bool = False
    ) -> None:
        super().__init__()
        if small_input:
            layers: list[nn.Module] = [_conv_bn(in_channels, width, 3, 1, act=nn.ReLU)]
        else:
            layers = [_conv_bn(in_channels, width, 7, 2, act=nn.ReLU), nn.MaxPool2d(3, 2, 1)]
        cin = width
        for mult, stride in ((1, 1), (2, 2), (4, 2), (8, 2)):
            cout = width * mult
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


def mobilenet_v2(num_classes: int = 1000, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """MobileNetV2 for 224x224 inputs."""
    return MobileNetV2(num_classes, in_channels, width)


def resnet18(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """ResNet-18 for 224x224 inputs."""
    return ResNet18(num_classes, in_channels)


def mobilenet_v2_digits(num_classes: int = 10, in_channels: int = 1, width: float = 0.5) -> nn.Module:
    """MobileNetV2-style CNN for 32x32 digits (stride-1 stem, one downsampling fewer)."""
    return MobileNetV2(num_classes, in_channels, width, small_input=True)


def resnet18_digits(num_classes: int = 10, in_channels: int = 1, width: int = 16) -> nn.Module:
    """ResNet-18-style CNN for 32x32 digits (3x3 stride-1 stem, no max-pool)."""
    return ResNet18(num_classes, in_channels, width, small_input=True)
