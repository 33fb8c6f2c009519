"""The `quantize` stage (PTQ and QAT) and its int8 exports to TFLite and OpenVINO, on the real runtimes.

A tiny CNN trained briefly on 16x16 digits is quantized twice: PTQ keeping the classifier float, and QAT
(with distillation, observers and BatchNorm frozen after one epoch) on a copy with some weights set to
exactly zero. Each quantized model is exported to both runtimes at int8 and checked against the quantized
torch model and against the other runtime.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tests.integration.raw_runtimes import litert_logits, openvino_logits

torch = pytest.importorskip("torch")
pytest.importorskip("litert_torch")
pytest.importorskip("openvino")

from edgecompress.console import UI  # noqa: E402
from edgecompress.context import RunContext  # noqa: E402
from edgecompress.data import load_data  # noqa: E402
from edgecompress.errors import ExportError  # noqa: E402
from edgecompress.exporters.parity import check_parity  # noqa: E402
from edgecompress.frameworks.base import FitOptions  # noqa: E402
from edgecompress.recipe import ExportSpec, parse_recipe  # noqa: E402
from edgecompress.registry import EXPORTERS, FRAMEWORKS, STAGES  # noqa: E402
from tests.conftest import EXAMPLES  # noqa: E402

pytestmark = pytest.mark.integration

RECIPE = f"""\
name: quantize-int8
model: {{source: {EXAMPLES}:tiny_cnn, input_shape: [1, 1, 16, 16]}}
data: {{dataset: digits, image_size: [16, 16], normalize: {{mean: [0.5], std: [0.5]}}, batch_size: 64}}
stages:
  - {{type: quantize, mode: ptq, calibration_samples: 128, keep_float: [fc]}}
  - {{type: quantize, mode: qat, epochs: 2, lr: 2.0e-4, freeze_observers_after: 1, freeze_bn_after: 1}}
export:
  - {{format: tflite, precision: int8}}
  - {{format: openvino, precision: int8}}
"""
ZEROED = "layer1.conv1.0.weight"  # QAT: the 3x3 kernel from its first input to its first output is zeroed


def _tiny_cnn() -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("example_models", EXAMPLES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.tiny_cnn()


def _context(recipe, data, workdir: Path) -> RunContext:
    return RunContext(
        recipe=recipe,
        recipe_path=Path("r.yaml"),
        workdir=workdir,
        adapter=FRAMEWORKS.get("torch")(),
        data=data,
        ui=UI(verbosity=0),
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    recipe = parse_recipe(RECIPE)
    data = load_data(recipe.data, Path("r.yaml"), seed=0)
    ctx = _context(recipe, data, tmp_path_factory.mktemp("train"))
    torch.manual_seed(0)
    model = ctx.adapter.fit(_tiny_cnn(), data, FitOptions(epochs=6, lr=0.005), seed=0, ui=ctx.ui)
    return recipe, data, model


def _quantize_and_export(trained, index: int, out: Path, *, zero: bool):
    recipe, data, model = trained
    ctx = _context(recipe, data, out)
    model = ctx.adapter.copy(model)
    if zero:
        with torch.no_grad():
            dict(model.named_parameters())[ZEROED][0, 0] = 0.0
    ctx.teacher = ctx.adapter.copy(model)
    ctx.current_stage = 0
    quantized = STAGES.get("quantize")(recipe.stages[index]).apply(model, ctx)
    reference = ctx.adapter.predict(quantized, data.test.x)
    artifacts = {
        spec.precision + "-" + spec.format: EXPORTERS.get(spec.format)().export(quantized, spec, ctx, out)
        for spec in recipe.export
    }
    return ctx, quantized, reference, artifacts


@pytest.fixture(scope="module")
def ptq(trained, tmp_path_factory):
    return _quantize_and_export(trained, 0, tmp_path_factory.mktemp("ptq"), zero=False)


@pytest.fixture(scope="module")
def qat(trained, tmp_path_factory):
    return _quantize_and_export(trained, 1, tmp_path_factory.mktemp("qat"), zero=True)


@pytest.fixture(params=["ptq", "qat"])
def run(request):
    return request.getfixturevalue(request.param)


def _tflite_weight_dtypes(path: Path) -> dict[str, list[str]]:
    """TFLite op name -> dtypes of its weight (second) input, from the interpreter's tensor details."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    dtypes = {d["index"]: np.dtype(d["dtype"]).name for d in interpreter.get_tensor_details()}
    out: dict[str, list[str]] = {}
    for op in interpreter._get_ops_details():
        if op["op_name"] in {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}:
            out.setdefault(op["op_name"], []).append(dtypes[int(op["inputs"][1])])
    return out


def test_quantize_records_what_it_did(ptq, qat):
    for (ctx, _, _, _), mode in ((ptq, "ptq"), (qat, "qat")):
        notes = ctx.notes[0]
        assert notes["mode"] == mode and ctx.quantization.mode == mode
        assert notes["calibration_samples"] == (128 if mode == "ptq" else 256)
        assert notes["quantized_weight_ops"] >= 9
        assert 0.5 < notes["val_accuracy_int8"] <= 1 and 0.5 < notes["val_accuracy_float"] <= 1
        assert notes["float_fallback_ops"] == []  # every add, concat, relu and pool has an int8 pattern
    assert ptq[0].notes[0]["keep_float"] == ["fc"] and ptq[0].notes[0]["float_weight_ops"] == 1
    assert qat[0].notes[0]["keep_float"] == [] and qat[0].notes[0]["float_weight_ops"] == 0
    assert qat[0].notes[0]["epochs"] == 2 and qat[0].notes[0]["zero_weights_kept"] == 9  # one 3x3 kernel


def test_quantized_model_works_like_a_torch_model(run, tmp_path):
    ctx, quantized, reference, _ = run
    adapter = ctx.adapter
    copy = adapter.copy(quantized)
    assert np.array_equal(adapter.predict(copy, ctx.data.test.x), reference)
    assert (reference.argmax(1) == ctx.data.test.y).mean() > 0.8
    stats = adapter.stats(quantized, ctx.input_shape)
    assert stats.params > 0 and stats.macs > 0
    program = torch.export.load(adapter.save(quantized, tmp_path / "model.pt2", ctx.input_shape))
    targets = {str(n.target) for n in program.graph.nodes}
    assert any("quantize_per_tensor" in t for t in targets)


def test_predictions_are_the_int8_models(trained, run):
    """The quantized model's logits differ from the float model's (q/dq is simulated, not skipped)."""
    ctx, _, reference, _ = run
    float_logits = ctx.adapter.predict(trained[2], ctx.data.test.x)
    assert not np.allclose(float_logits, reference, atol=1e-3)
    assert (float_logits.argmax(1) == reference.argmax(1)).mean() > 0.9


def test_float_export_of_the_quantized_model_is_an_export_error(ptq, tmp_path):
    ctx, quantized, _, _ = ptq
    with pytest.raises(ExportError, match="fp32 export of a quantized model"):
        EXPORTERS.get("tflite")().export(
            quantized, ExportSpec(format="tflite", precision="fp32"), ctx, tmp_path
        )


def test_tflite_int8_weights_and_float_interface(ptq, qat):
    from ai_edge_litert.interpreter import Interpreter

    for _, _, _, artifacts in (ptq, qat):
        path = artifacts["int8-tflite"].path
        weights = _tflite_weight_dtypes(path)
        assert set(weights["CONV_2D"]) == {"int8"} and set(weights["DEPTHWISE_CONV_2D"]) == {"int8"}
        interpreter = Interpreter(model_path=str(path))
        assert interpreter.get_input_details()[0]["dtype"] == np.float32
        assert interpreter.get_output_details()[0]["dtype"] == np.float32
    # keep_float: the classifier stays float in the PTQ model, is int8 in the QAT one.
    assert _tflite_weight_dtypes(ptq[3]["int8-tflite"].path)["FULLY_CONNECTED"] == ["float32"]
    assert _tflite_weight_dtypes(qat[3]["int8-tflite"].path)["FULLY_CONNECTED"] == ["int8"]


def test_keep_float_layer_is_float_in_torch_graph(ptq):
    _, quantized, _, _ = ptq
    linear = [n for n in quantized.graph_module.graph.nodes if n.target == torch.ops.aten.linear.default]
    assert len(linear) == 1 and "dequantize" not in str(linear[0].args[1].target)
    convs = [n for n in quantized.graph_module.graph.nodes if n.target == torch.ops.aten.conv2d.default]
    assert convs and all("dequantize_per_channel" in str(n.args[1].target) for n in convs)


def test_openvino_ir_has_fake_quantize(run):
    import openvino as ov

    _, _, _, artifacts = run
    a = artifacts["int8-openvino"]
    ops = [op.get_type_name() for op in ov.Core().read_model(str(a.path)).get_ops()]
    assert ops.count("FakeQuantize") >= 9
    assert a.inference_precision == "f32"


def test_artifacts_agree_with_the_quantized_model(run):
    ctx, _, reference, artifacts = run
    test = ctx.data.test
    for a in artifacts.values():
        parity = check_parity(a, test.x, reference, test.y, threads=2, ui=UI(verbosity=0))
        assert parity.agreement >= 0.99, a.name
        assert abs(parity.accuracy - (reference.argmax(1) == test.y).mean()) <= 0.01


def test_runtimes_agree_with_each_other(run):
    ctx, _, _, artifacts = run
    x = ctx.data.test.x
    litert = litert_logits(artifacts["int8-tflite"].path, x)
    openvino = openvino_logits(artifacts["int8-openvino"].path, x)
    assert (litert.argmax(1) == openvino.argmax(1)).mean() >= 0.99


def test_zero_weights_stay_zero_through_qat(qat):
    _, quantized, _, _ = qat
    weight = dict(quantized.graph_module.named_parameters())[ZEROED]
    assert weight[0, 0].abs().max().item() == 0.0  # BatchNorm folded in: still exactly zero
    assert weight[0, 1:].abs().max().item() > 0


def test_int8_export_without_quantize_stage_is_an_export_error(trained, tmp_path):
    recipe, data, model = trained
    ctx = _context(recipe, data, tmp_path)
    for fmt in ("tflite", "openvino"):
        with pytest.raises(ExportError, match="int8 export needs a 'quantize' stage"):
            EXPORTERS.get(fmt)().export(model, ExportSpec(format=fmt, precision="int8"), ctx, tmp_path)


def test_adds_and_concat_run_in_int8_on_both_runtimes(qat):
    """Residual adds and the concat are quantized too: the .tflite has QUANTIZE/DEQUANTIZE only at its float
    interface, and in the OpenVINO IR every add/concat of activations reads FakeQuantize outputs. (Left float,
    each would sit between a DEQUANTIZE and a QUANTIZE and make int8 slower; see restore_source_functions.)"""
    import openvino as ov
    from ai_edge_litert.interpreter import Interpreter

    _, _, _, artifacts = qat
    interpreter = Interpreter(model_path=str(artifacts["int8-tflite"].path))
    dtypes = {d["index"]: np.dtype(d["dtype"]).name for d in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    names = [op["op_name"] for op in ops]
    assert names.count("QUANTIZE") == 1 and names.count("DEQUANTIZE") == 1
    assert names[0] == "QUANTIZE" and names[-1] == "DEQUANTIZE"
    joins = [op for op in ops if op["op_name"] in ("ADD", "CONCATENATION")]
    assert {op["op_name"] for op in joins} == {"ADD", "CONCATENATION"}
    assert all(dtypes[int(i)] == "int8" for op in joins for i in op["inputs"])

    model = ov.Core().read_model(str(artifacts["int8-openvino"].path))
    joins = [op for op in model.get_ops() if op.get_type_name() in ("Add", "Concat")]
    activation_joins = [
        op
        for op in joins
        if all(op.input_value(i).get_node().get_type_name() != "Constant" for i in range(op.get_input_size()))
    ]
    assert len(activation_joins) >= 4  # 3 residual adds + 1 concat in tiny_cnn
    for op in activation_joins:
        sources = {op.input_value(i).get_node().get_type_name() for i in range(op.get_input_size())}
        assert sources == {"FakeQuantize"}, (op.get_friendly_name(), sources)
