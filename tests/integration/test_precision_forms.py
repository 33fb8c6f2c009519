"""Per-export forms of a quantized graph (stages/quantize/torch_derive.py) on the real runtimes.

A small CNN with the ops of modern mobile blocks is quantized once (PTQ on 16x16 digits); each form is
derived from it, exported to TFLite and OpenVINO, and checked: the .tflite has the ops the form promises,
running where it promises (XNNPACK or not), and each artifact agrees with its own derived torch graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("litert_torch")
pytest.importorskip("openvino")

from torch import nn  # noqa: E402

from edgecompress.console import UI  # noqa: E402
from edgecompress.context import RunContext  # noqa: E402
from edgecompress.data import load_data  # noqa: E402
from edgecompress.exporters.parity import run_artifact  # noqa: E402
from edgecompress.exporters.parity_layers import compare_layers, first_divergent  # noqa: E402
from edgecompress.frameworks.base import FitOptions  # noqa: E402
from edgecompress.recipe import parse_recipe  # noqa: E402
from edgecompress.registry import EXPORTERS, FRAMEWORKS, STAGES  # noqa: E402
from edgecompress.runtimes.sessions import LiteRTSession  # noqa: E402
from edgecompress.stages.quantize.torch_derive import derive, openvino_placement, quantized_ops  # noqa: E402

pytestmark = pytest.mark.integration
SHAPE = [1, 1, 16, 16]
RECIPE = """\
name: forms
model: {source: x.py:f, input_shape: [1, 1, 16, 16]}
data: {dataset: digits, image_size: [16, 16], normalize: {mean: [0.5], std: [0.5]}}
stages: [{type: quantize, mode: ptq, calibration_samples: 128}]
export: [{format: tflite, precision: int8}, {format: openvino, precision: int8}]
"""


class Modern(nn.Module):
    """hardswish, an SE gate (mean, 1x1 convs, hardsigmoid, broadcast mul), SiLU, GELU and an average pool."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Hardswish())
        self.reduce = nn.Conv2d(16, 8, 1)
        self.expand = nn.Conv2d(8, 16, 1)
        self.mid = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = y * nn.functional.hardsigmoid(self.expand(torch.relu(self.reduce(y.mean((2, 3), keepdim=True)))))
        y = nn.functional.avg_pool2d(nn.functional.silu(y), 2)
        y = nn.functional.gelu(self.mid(y))
        return self.fc(y.mean((2, 3)))


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    recipe = parse_recipe(RECIPE)
    data = load_data(recipe.data, Path("r.yaml"), seed=0)
    out = tmp_path_factory.mktemp("forms")
    ctx = RunContext(
        recipe=recipe,
        recipe_path=out / "r.yaml",
        workdir=out,
        adapter=FRAMEWORKS.get("torch")(),
        data=data,
        ui=UI(verbosity=0),
    )
    torch.manual_seed(0)
    model = ctx.adapter.fit(Modern(), data, FitOptions(epochs=4, lr=0.005), seed=0, ui=ctx.ui)
    ctx.current_stage = 0
    return ctx, STAGES.get("quantize")(recipe.stages[0]).apply(model, ctx)


def _plan(model, **forms: str) -> dict[str, str]:
    """node -> form for every op of a kind named in `forms`."""
    return {op.node: forms[op.kind] for op in quantized_ops(model.graph_module) if op.kind in forms}


def _tflite_ops(path: Path) -> list[tuple[str, str, str]]:
    """(op type, who runs it, output dtype) in node order."""
    return [
        (op["type"], op["executed_by"], (op["output_dtypes"] or ["?"])[0])
        for op in LiteRTSession(path, threads=1).op_inventory()
    ]


def _export_and_compare(ctx, derived, out: Path) -> dict[str, Path]:
    """Export `derived` to both runtimes; each must agree with `derived` on the test images, and the .tflite
    must compute every quantized tensor as the derived torch graph does (within rounding)."""
    reference = ctx.adapter.predict(derived, ctx.data.test.x)
    paths = {}
    for spec in ctx.recipe.export:
        artifact = EXPORTERS.get(spec.format)().export(derived, spec, ctx, out)
        logits = run_artifact(artifact, ctx.data.test.x, num_outputs=10, threads=1, ui=ctx.ui).logits
        agreement = float((logits.argmax(1) == reference.argmax(1)).mean())
        # a model trained 4 epochs on 16x16 digits has near-ties that one-step rounding flips
        assert agreement >= 0.97, (spec.format, agreement)
        paths[artifact.runtime] = artifact.path
    layers = compare_layers(derived, paths["litert"], "litert", ctx.data.test.x[:8])
    assert sum(d.matched for d in layers) >= len(layers) - 2, [d.describe() for d in layers if not d.matched]
    assert first_divergent(layers) is None, first_divergent(layers).describe()
    layers = compare_layers(derived, paths["openvino"], "openvino", ctx.data.test.x[:8])
    assert sum(d.matched for d in layers) >= len(layers) // 2
    assert first_divergent(layers) is None, first_divergent(layers).describe()
    return paths


def test_every_op_has_forms_and_int8_lowers_natively(quantized, tmp_path):
    ctx, model = quantized
    ops = {op.kind: op for op in quantized_ops(model.graph_module)}
    assert ops["hardswish"].forms == ("int8", "int8-decomposed", "float", "unquantized-output")
    assert "int8-depthwise" in ops["avg_pool2d"].forms
    assert all(op.int8 for op in ops.values())
    types = [
        t
        for t, _, _ in _tflite_ops(
            _export_and_compare(ctx, derive(model, {}, input_shape=SHAPE), tmp_path)["litert"]
        )
    ]
    # the plain int8 forms: one int8 op each, TFLite's own kernels for hardswish, GELU and the pool
    assert {"HARD_SWISH", "GELU", "AVERAGE_POOL_2D"} <= set(types)


def test_decomposed_forms_run_in_xnnpack_in_int8(quantized, tmp_path):
    ctx, model = quantized
    plan = _plan(
        model,
        hardswish="int8-decomposed",
        hardsigmoid="int8-decomposed",
        silu="int8-decomposed",
        avg_pool2d="int8-depthwise",
    )
    derived = derive(model, plan, input_shape=SHAPE)
    assert derived.plan == plan and derived.float_op_tags == ()
    ops = _tflite_ops(_export_and_compare(ctx, derived, tmp_path)["litert"])
    types = [t for t, _, _ in ops]
    assert "HARD_SWISH" not in types and "AVERAGE_POOL_2D" not in types
    assert "LOGISTIC" in types and "DEPTHWISE_CONV_2D" in types
    inner = ops[1:-1]  # between the float interface's QUANTIZE and DEQUANTIZE
    for op_type in ("ADD", "MUL", "LOGISTIC", "DEPTHWISE_CONV_2D"):
        assert all(by == "XNNPACK" and dtype == "int8" for t, by, dtype in inner if t == op_type), op_type


def test_float_forms_run_float_between_a_dequantize_and_a_quantize(quantized, tmp_path):
    ctx, model = quantized
    conv = next(op.node for op in quantized_ops(model.graph_module) if op.module == "mid")
    plan = {**_plan(model, gelu="float", hardswish="float"), conv: "float"}
    derived = derive(model, plan, input_shape=SHAPE)
    assert {t.kind for t in derived.float_op_tags} == {"gelu", "hardswish", "conv"}
    ops = _tflite_ops(_export_and_compare(ctx, derived, tmp_path)["litert"])
    floats = {t for t, _, dtype in ops if dtype == "float32" and t not in ("DEQUANTIZE", "TRANSPOSE")}
    assert {"GELU", "HARD_SWISH", "CONV_2D"} <= floats
    assert all(by == "XNNPACK" for t, by, _ in ops if t in ("GELU", "HARD_SWISH"))
    # the tags were removed: no tensor keeps a scale that is not one of the quantized model's own
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tmp_path / "tflite-int8.tflite"))
    scales = {
        float(s) for d in interpreter.get_tensor_details() for s in d["quantization_parameters"]["scales"]
    }
    q = torch.ops.quantized_decomposed.quantize_per_tensor.default
    torch_scales = {float(n.args[1]) for n in model.graph_module.graph.nodes if n.target == q}
    tagged = {t.tagged_scale for t in derived.float_op_tags}
    assert not any(np.isclose(s, t, rtol=1e-7, atol=0) for s in scales for t in tagged - torch_scales)


def test_openvino_placement_leaves_activation_inputs_and_the_se_gate_unquantized(quantized, tmp_path):
    ctx, model = quantized
    placement = openvino_placement(model)
    ops = {op.node: op for op in quantized_ops(model.graph_module)}
    kinds = {ops[n].kind for n in placement}
    assert set(placement.values()) == {"unquantized-output"}
    assert "conv" in kinds  # the convs that feed hardswish / SiLU / GELU
    assert "hardsigmoid" in kinds  # the SE gate
    derived = derive(model, placement, input_shape=SHAPE)
    _export_and_compare(ctx, derived, tmp_path)


def test_a_bad_plan_is_refused(quantized):
    _, model = quantized
    with pytest.raises(ValueError, match="does not have"):
        derive(model, {"no_such_node": "float"}, input_shape=SHAPE)
    node = next(op.node for op in quantized_ops(model.graph_module) if op.kind == "conv")
    with pytest.raises(ValueError, match="cannot take form"):
        derive(model, {node: "int8-decomposed"}, input_shape=SHAPE)
