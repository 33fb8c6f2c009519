"""Standard architectures in plain torch (no torchvision, no downloaded weights).

`mobilenet_v2` (Sandler et al. 2018), `resnet18` (He et al. 2016), `mobilenet_v3_small` (Howard et al.
2019) and `efficientnet_b0` (Tan & Le 2019) at their ImageNet shape (224x224, 1000 classes) for latency
benchmarks, and the same networks adapted to 32x32 digits (`*_digits`: stride-1 stem, no max-pool, fewer
early downsamplings, 4x4 maps before pooling) for accuracy benchmarks and example recipes.

The 224x224 networks match torchvision's parameter counts (MobileNetV3-Small 2,542,856; EfficientNet-B0
5,288,548) but not its BatchNorm eps/momentum (torch defaults here) nor EfficientNet's stochastic depth
(left out). Activations are modules (nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.Sigmoid), so layer names
tell them apart; every forward is torch.export-able and prunable with Torch-Pruning's DepGraph.
"""

from __future__ import annotations

import math

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


class SqueezeExcitation(nn.Module):
    """Channel gate: spatial mean -> 1x1 reduce -> act -> 1x1 expand -> gate -> multiply the input.

    The squeeze is `x.mean((2, 3), keepdim=True)` (one aten mean, as in the networks' pooling), not
    AdaptiveAvgPool2d. The expand conv's outputs multiply the input channel for channel, so DepGraph couples
    them to the block's hidden channels; the reduce width is its own prunable group.
    """

    def __init__(
        self,
        channels: int,
        squeeze: int,
        act: type[nn.Module] = nn.ReLU,
        gate: type[nn.Module] = nn.Hardsigmoid,
    ) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.act = act()
        self.expand = nn.Conv2d(squeeze, channels, 1)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(x.mean((2, 3), keepdim=True)))))


class SEInvertedResidual(nn.Module):
    """MobileNetV3 bneck / EfficientNet MBConv: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project.

    `se` is the SE reduce width (0: no SE); the residual add is used when stride is 1 and cin == cout.
    """

    def __init__(
        self,
        cin: int,
        hidden: int,
        cout: int,
        kernel: int,
        stride: int,
        act: type[nn.Module],
        se: int = 0,
        se_act: type[nn.Module] = nn.ReLU,
        se_gate: type[nn.Module] = nn.Hardsigmoid,
    ) -> None:
        super().__init__()
        layers = [_conv_bn(cin, hidden, 1, act=act)] if hidden != cin else []
        layers.append(_conv_bn(hidden, hidden, kernel, stride, groups=hidden, act=act))
        if se:
            layers.append(SqueezeExcitation(hidden, se, se_act, se_gate))
        layers.append(_conv_bn(hidden, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV3Small(nn.Module):
    """MobileNetV3-Small; width 1.0 at 224x224 is about 2.5 M params and 57 M MACs."""

    #: kernel, expansion size, output channels, SE, activation ("RE" ReLU / "HS" hardswish), stride
    SETTINGS = (
        (3, 16, 16, True, "RE", 2),
        (3, 72, 24, False, "RE", 2),
        (3, 88, 24, False, "RE", 1),
        (5, 96, 40, True, "HS", 2),
        (5, 240, 40, True, "HS", 1),
        (5, 240, 40, True, "HS", 1),
        (5, 120, 48, True, "HS", 1),
        (5, 144, 48, True, "HS", 1),
        (5, 288, 96, True, "HS", 2),
        (5, 576, 96, True, "HS", 1),
        (5, 576, 96, True, "HS", 1),
    )

    def __init__(
        self, num_classes: int = 1000, in_channels: int = 3, width: float = 1.0, small_input: bool = False
    ) -> None:
        super().__init__()
        stem = _make_divisible(16 * width)
        layers: list[nn.Module] = [_conv_bn(in_channels, stem, 3, 1 if small_input else 2, act=nn.Hardswish)]
        cin = stem
        for index, (kernel, expansion, channels, se, act, stride) in enumerate(self.SETTINGS):
            hidden, cout = _make_divisible(expansion * width), _make_divisible(channels * width)
            if small_input and index == 0:
                stride = 1  # 32x32 inputs: keep resolution one block longer
            squeeze = _make_divisible(hidden // 4, 8) if se else 0
            activation = nn.ReLU if act == "RE" else nn.Hardswish
            layers.append(SEInvertedResidual(cin, hidden, cout, kernel, stride, activation, squeeze))
            cin = cout
        last = 6 * cin  # 576 at width 1.0
        layers.append(_conv_bn(cin, last, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        head = _make_divisible(1024 * max(1.0, width))  # kept at width < 1 (as Keras; torchvision narrows it)
        self.head = nn.Sequential(nn.Linear(last, head), nn.Hardswish(), nn.Dropout(0.2))
        self.classifier = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.features(x).mean((2, 3))))


class EfficientNetB0(nn.Module):
    """EfficientNet-B0 (no stochastic depth); about 5.3 M params and 390 M MACs at 224x224."""

    #: expansion, output channels, repeats, stride of the first repeat, kernel
    SETTINGS = (
        (1, 16, 1, 1, 3),
        (6, 24, 2, 2, 3),
        (6, 40, 2, 2, 5),
        (6, 80, 3, 2, 3),
        (6, 112, 3, 1, 5),
        (6, 192, 4, 2, 5),
        (6, 320, 1, 1, 3),
    )

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        width: float = 1.0,
        depth: float = 1.0,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        stem = _make_divisible(32 * width)
        layers: list[nn.Module] = [_conv_bn(in_channels, stem, 3, 1 if small_input else 2, act=nn.SiLU)]
        cin = stem
        for index, (expand, channels, repeats, stride, kernel) in enumerate(self.SETTINGS):
            cout = _make_divisible(channels * width)
            if small_input and index == 1:
                stride = 1  # 32x32 inputs: keep resolution one stage longer
            for i in range(math.ceil(repeats * depth)):
                squeeze = max(1, cin // 4)  # of the block's input channels
                layers.append(
                    SEInvertedResidual(
                        cin,
                        cin * expand,
                        cout,
                        kernel,
                        stride if i == 0 else 1,
                        nn.SiLU,
                        squeeze,
                        nn.SiLU,
                        nn.Sigmoid,
                    )
                )
                cin = cout
        last = 4 * cin  # 1280 at width 1.0
        layers.append(_conv_bn(cin, last, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(x).mean((2, 3))))


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


def mobilenet_v3_small(num_classes: int = 1000, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """MobileNetV3-Small for 224x224 inputs."""
    return MobileNetV3Small(num_classes, in_channels, width)


def efficientnet_b0(num_classes: int = 1000, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """EfficientNet-B0 for 224x224 inputs."""
    return EfficientNetB0(num_classes, in_channels, width)


def mobilenet_v3_small_digits(num_classes: int = 10, in_channels: int = 1, width: float = 0.5) -> nn.Module:
    """MobileNetV3-Small-style CNN for 32x32 digits (stride-1 stem and first block: 4x4 before pooling)."""
    return MobileNetV3Small(num_classes, in_channels, width, small_input=True)


def efficientnet_b0_digits(
    num_classes: int = 10, in_channels: int = 1, width: float = 0.5, depth: float = 0.5
) -> nn.Module:
    """EfficientNet-B0-style CNN for 32x32 digits (stride-1 stem and second stage: 4x4 before pooling)."""
    return EfficientNetB0(num_classes, in_channels, width, depth, small_input=True)
