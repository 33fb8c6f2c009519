"""examples/architectures.py: MobileNetV3-Small and EfficientNet-B0 build at their published size, export and prune."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
tp = pytest.importorskip("torch_pruning")
nn = torch.nn

from edgecompress.frameworks.torch import count_macs, count_params  # noqa: E402

ARCHITECTURES = Path(__file__).resolve().parents[2] / "examples" / "architectures.py"
IMAGENET = [1, 3, 224, 224]
DIGITS = [1, 1, 32, 32]


@pytest.fixture(scope="module")
def arch():
    spec = importlib.util.spec_from_file_location("example_architectures", ARCHITECTURES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


def se_blocks(model) -> list:
    return [m for m in model.modules() if type(m).__name__ == "SqueezeExcitation"]


@pytest.mark.parametrize(
    ("factory", "params", "macs", "blocks"),
    [
        # torchvision's mobilenet_v3_small: 2,542,856 params, 0.06 GFLOPS; the paper: 2.5 M, 56 M MACs
        ("mobilenet_v3_small", (2.45e6, 2.65e6), (54e6, 60e6), 9),
        # torchvision's efficientnet_b0: 5,288,548 params, 0.39 GFLOPS; the paper: 5.3 M, 0.39 G FLOPs (MACs)
        ("efficientnet_b0", (5.2e6, 5.4e6), (375e6, 400e6), 16),
    ],
)
def test_imagenet_size_matches_the_papers(arch, factory, params, macs, blocks) -> None:
    model = getattr(arch, factory)().eval()
    with torch.no_grad():
        assert model(torch.randn(IMAGENET)).shape == (1, 1000)
    assert params[0] < count_params(model) < params[1]
    assert macs[0] < count_macs(model, IMAGENET) < macs[1]
    assert len(se_blocks(model)) == blocks


def test_activations_are_modules(arch) -> None:
    def kinds(model) -> set[type]:
        return {type(m) for m in model.modules()}

    v3 = kinds(arch.mobilenet_v3_small_digits())
    assert {nn.Hardswish, nn.Hardsigmoid, nn.ReLU} <= v3
    assert not v3 & {nn.SiLU, nn.Sigmoid, nn.ReLU6}
    b0 = kinds(arch.efficientnet_b0_digits())
    assert {nn.SiLU, nn.Sigmoid} <= b0
    assert not b0 & {nn.Hardswish, nn.Hardsigmoid, nn.ReLU, nn.ReLU6}


def test_squeeze_widths(arch) -> None:
    # MobileNetV3: _make_divisible(expanded // 4, 8); EfficientNet: max(1, block input // 4)
    v3 = arch.mobilenet_v3_small()
    assert [(se.reduce.in_channels, se.reduce.out_channels) for se in se_blocks(v3)[:3]] == [
        (16, 8),
        (96, 24),
        (240, 64),
    ]
    b0 = arch.efficientnet_b0()
    assert [(se.reduce.in_channels, se.reduce.out_channels) for se in se_blocks(b0)[:3]] == [
        (32, 8),
        (96, 4),
        (144, 6),
    ]


def test_depth_multiplier(arch) -> None:
    assert len(se_blocks(arch.efficientnet_b0_digits(depth=1.0))) == 16
    assert len(se_blocks(arch.efficientnet_b0_digits(depth=0.5))) == 10  # ceil(repeats / 2) per stage


@pytest.mark.parametrize("factory", ["mobilenet_v3_small_digits", "efficientnet_b0_digits"])
def test_digits_variant_runs_and_exports(arch, factory) -> None:
    model = getattr(arch, factory)().eval()
    x = torch.randn(2, *DIGITS[1:])
    with torch.no_grad():
        assert model.features(x).shape[-2:] == (4, 4)  # stride-1 stem: 32x32 is downsampled 8x only
        expected = model(x)
    assert expected.shape == (2, 10)
    assert count_macs(model, DIGITS) < 30e6
    exported = torch.export.export(model, (x,)).module()
    with torch.no_grad():
        torch.testing.assert_close(exported(x), expected)


@pytest.mark.parametrize("factory", ["mobilenet_v3_small_digits", "efficientnet_b0_digits"])
def test_se_expand_is_coupled_to_the_block_channels(arch, factory) -> None:
    model = getattr(arch, factory)().eval()
    graph = tp.DependencyGraph().build_dependency(model, torch.zeros(DIGITS))
    blocks = [m for m in model.modules() if type(m).__name__ == "SEInvertedResidual" and se_blocks(m)]
    assert blocks
    for block in blocks:
        se = se_blocks(block)[0]
        group = graph.get_pruning_group(se.expand, tp.prune_conv_out_channels, idxs=[0])
        coupled = {dep.target.module for dep, _ in group}
        depthwise = next(m for m in block.modules() if isinstance(m, nn.Conv2d) and m.groups > 1)
        assert {depthwise, se.reduce} <= coupled
        reduce_group = graph.get_pruning_group(se.reduce, tp.prune_conv_out_channels, idxs=[0])
        assert depthwise not in {dep.target.module for dep, _ in reduce_group}  # the squeeze width is its own


@pytest.mark.parametrize("factory", ["mobilenet_v3_small_digits", "efficientnet_b0_digits"])
def test_digits_variant_prunes(arch, factory) -> None:
    model = getattr(arch, factory)().eval()
    macs, params = count_macs(model, DIGITS), count_params(model)
    pruner = tp.pruner.MagnitudePruner(
        model,
        torch.zeros(DIGITS),
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=0.5,
        ignored_layers=[model.classifier],
    )
    pruner.step()
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, *DIGITS[1:])).shape == (2, 10)
    assert model.classifier.out_features == 10
    assert count_macs(model, DIGITS) < 0.5 * macs
    assert count_params(model) < 0.5 * params
    for se in se_blocks(model):
        assert se.expand.out_channels == se.reduce.in_channels
        assert se.reduce.out_channels >= 1
