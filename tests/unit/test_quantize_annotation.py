"""restore_source_functions: the graph facts litert-torch's annotators need, on a non-strict torch.export."""

from __future__ import annotations

import operator

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchao")

from torch import nn  # noqa: E402

from edgecompress.stages.quantize.torch_annotation import restore_source_functions  # noqa: E402


class Joins(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        z = torch.cat([y + x, torch.relu(y)], dim=1)
        return torch.nn.functional.max_pool2d(z, 2) * 2.0


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train (QAT export)"])
def test_adds_cats_relus_pools_get_their_source_function(train):
    model = Joins().train(train)
    gm = torch.export.export(model, (torch.zeros(2, 4, 8, 8),)).module()
    restored = restore_source_functions(gm)
    by_target = {}
    for node in gm.graph.nodes:
        if node.op == "call_function":
            by_target.setdefault(node.target, []).append(node)
    aten = torch.ops.aten
    expected = {
        aten.add.Tensor: operator.add,
        aten.cat.default: torch.cat,
        aten.relu.default: torch.nn.functional.relu,
        aten.max_pool2d.default: torch.nn.functional.max_pool2d,
        aten.mul.Tensor: operator.mul,
    }
    for target, function in expected.items():
        nodes = by_target[target]
        assert all(n.meta["source_fn_stack"][-1][1] is function for n in nodes), target
    assert restored == sum(len(by_target[t]) for t in expected)
    # BatchNorm's num_batches_tracked counter (an in-place add_ in a training graph) is not a residual add.
    for node in by_target.get(aten.add_.Tensor, []):
        assert not node.meta.get("source_fn_stack")
    # Idempotent: a second pass finds nothing left to restore.
    assert restore_source_functions(gm) == 0


class MobileBlock(nn.Module):
    """conv -> BN -> ReLU6, depthwise conv -> BN -> ReLU6, then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU6(),
            nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU6(),
        )
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


@pytest.mark.parametrize("qat", [False, True], ids=["ptq", "qat"])
def test_relu6_output_is_quantized_after_the_clamp(qat):
    """conv [-> BN] -> ReLU6 is one int8 op: no quantize between conv and clamp, and the clamp's output scale
    covers 0..6 only (a scale of about 6/255), not the conv's whole pre-activation range."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e

    from edgecompress.stages.quantize.torch_annotation import make_quantizer
    from edgecompress.stages.quantize.torch_backend import _fold_only_present_conv_kinds

    torch.manual_seed(0)
    model = MobileBlock().train(qat)
    example = (torch.randn(4, 1, 8, 8) * 4,)
    gm = torch.export.export(model, example).module()
    quantizer = make_quantizer(qat=qat, float_layers=())
    prepared = (prepare_qat_pt2e if qat else prepare_pt2e)(gm, quantizer)
    prepared(*example)
    with _fold_only_present_conv_kinds(prepared):
        converted = convert_pt2e(prepared, fold_quantize=False)
    aten, qd = torch.ops.aten, torch.ops.quantized_decomposed
    clamps = [n for n in converted.graph.nodes if n.target in (aten.hardtanh.default, aten.hardtanh_.default)]
    assert len(clamps) == 2
    for clamp in clamps:
        assert clamp.args[0].target == aten.conv2d.default  # BatchNorm folded, no q/dq in between
        (quantize,) = clamp.users
        assert quantize.target == qd.quantize_per_tensor.default
        scale = quantize.args[1]
        assert 0 < scale <= 6.0 / 255 + 1e-6


class ResidualRelu(nn.Module):
    """An nn.ReLU inside and a torch.relu after the residual add (as in ResNet's basic block)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + x)


def test_add_then_relu_is_one_int8_op():
    """The add's output is not quantized on its own: the relu after it carries the output scale (litert-torch's
    add_relu pattern). torch_fn names repeat ('relu_1' for the nn.ReLU and the torch.relu alike), so the
    restored entries must be keyed per node, or the two relus would merge into one partition."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from edgecompress.stages.quantize.torch_annotation import make_quantizer

    gm = torch.export.export(ResidualRelu().eval(), (torch.randn(2, 4, 8, 8),)).module()
    restore_source_functions(gm)
    keys = [n.meta["source_fn_stack"][-1][0] for n in gm.graph.nodes if n.meta.get("source_fn_stack")]
    assert len(keys) == len(set(keys))
    prepared = prepare_pt2e(gm, make_quantizer(qat=False, float_layers=()))
    (add,) = [n for n in prepared.graph.nodes if n.target == torch.ops.aten.add.Tensor]
    assert [u.target for u in add.users] == [torch.ops.aten.relu.default]
    (relu,) = add.users
    assert all(u.op == "call_module" and "activation_post_process" in str(u.target) for u in relu.users)


class WithErf(nn.Module):
    """A conv-BN-erf (an op no int8 pattern covers) between int8-friendly layers, and a SiLU (which has one)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.SiLU())
        self.mid = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.erf(self.mid(self.stem(x))).mean((2, 3)))


@pytest.mark.parametrize("qat", [False, True], ids=["ptq", "qat"])
def test_float_fallbacks_name_the_ops_the_quantizer_cannot_make_int8(qat):
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, prepare_qat_pt2e

    from edgecompress.stages.quantize.torch_annotation import make_quantizer

    erf = [("erf", "")]
    for model, expected in ((WithErf(), erf), (MobileBlock(), []), (ResidualRelu(), [])):
        shape = (2, 4, 8, 8) if isinstance(model, ResidualRelu) else (2, 1, 8, 8)
        gm = torch.export.export(model.train(qat), (torch.randn(shape),)).module()
        quantizer = make_quantizer(qat=qat, float_layers=())
        (prepare_qat_pt2e if qat else prepare_pt2e)(gm, quantizer)
        assert quantizer.float_fallbacks == expected, type(model).__name__
    # a layer kept float on purpose is not a fallback
    gm = torch.export.export(WithErf().train(qat), (torch.randn(2, 1, 8, 8),)).module()
    quantizer = make_quantizer(qat=qat, float_layers=("stem",))
    (prepare_qat_pt2e if qat else prepare_pt2e)(gm, quantizer)
    assert quantizer.float_fallbacks == erf


def test_float_fallbacks_are_noted_and_warned():
    from edgecompress.stages.quantize.torch_backend import _report_float_fallbacks

    class Ctx:
        def __init__(self) -> None:
            self.notes: dict = {}
            self.warnings: list[str] = []
            self.ui = self

        def note(self, key, value) -> None:
            self.notes[key] = value

        def warn(self, message: str) -> None:
            self.warnings.append(message)

    ctx = Ctx()
    _report_float_fallbacks([("silu", "a.1"), ("silu", "b.1"), ("mean", "")], ctx)
    assert ctx.notes["float_fallback_ops"] == ["silu at a.1", "silu at b.1", "mean at top level"]
    (message,) = ctx.warnings
    assert "3 op(s)" in message and "silu x2 (a.1, b.1)" in message and "mean x1 (top level)" in message
    quiet = Ctx()
    _report_float_fallbacks([], quiet)
    assert quiet.notes["float_fallback_ops"] == [] and quiet.warnings == []


class ModernBlocks(nn.Module):
    """The ops of modern mobile blocks and small heads that litert-torch 0.10 has no int8 pattern for."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.se_reduce = nn.Conv2d(8, 4, 1)
        self.se_expand = nn.Conv2d(4, 8, 1)
        self.norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.hardswish(self.conv(x))
        gate = nn.functional.hardsigmoid(
            self.se_expand(torch.relu(self.se_reduce(y.mean((2, 3), keepdim=True))))
        )
        y = nn.functional.silu(y * gate)
        y = nn.functional.avg_pool2d(nn.functional.pad(y, (1, 1, 1, 1)), 2) - torch.sigmoid(y).mean()
        t = self.norm(nn.functional.gelu(y).flatten(2).transpose(1, 2))
        t = torch.softmax(t @ t.transpose(1, 2), -1) @ torch.tanh(t)
        return self.fc(t.mean(1))


@pytest.mark.parametrize("qat", [False, True], ids=["ptq", "qat"])
def test_modern_block_ops_are_quantized(qat):
    """Every op of ModernBlocks gets an int8 output (an observer / fake-quantize after it) and none is left
    as a float fallback; fixed-range ops get TFLite's fixed output scales."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e

    from edgecompress.stages.quantize.torch_annotation import make_quantizer

    aten = torch.ops.aten
    gm = torch.export.export(ModernBlocks().train(qat), (torch.randn(2, 4, 8, 8),)).module()
    quantizer = make_quantizer(qat=qat, float_layers=())
    prepared = (prepare_qat_pt2e if qat else prepare_pt2e)(gm, quantizer)
    assert quantizer.float_fallbacks == []
    with torch.no_grad():
        prepared(torch.randn(2, 4, 8, 8))
    converted = convert_pt2e(prepared, fold_quantize=False)
    q = torch.ops.quantized_decomposed.quantize_per_tensor.default
    quantized_outputs = {n.args[0].target for n in converted.graph.nodes if n.target == q}
    for op in (
        aten.hardswish.default,
        aten.hardsigmoid.default,
        aten.silu.default,
        aten.mul.Tensor,
        aten.mean.dim,
        aten.pad.default,
        aten.avg_pool2d.default,
        aten.sub.Tensor,
        aten.sigmoid.default,
        aten.gelu.default,
        aten.layer_norm.default,
        aten.matmul.default,
        aten.softmax.int,
        aten.tanh.default,
    ):
        assert op in quantized_outputs, op
    fixed = {
        n.args[0].target: (n.args[1], n.args[2])
        for n in converted.graph.nodes
        if n.target == q and n.args[0].target in (aten.sigmoid.default, aten.tanh.default, aten.softmax.int)
    }
    assert fixed[aten.sigmoid.default] == (1 / 256, -128)
    assert fixed[aten.softmax.int] == (1 / 256, -128)
    assert fixed[aten.tanh.default] == (1 / 128, 0)
