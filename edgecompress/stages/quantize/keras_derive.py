"""Keras backend of the precision planner (`edgecompress/precision.py`): what a plan can choose for a Keras
build's int8 / auto exports, and the int8 model with a plan's forms.

A Keras int8 model is one converted `.tflite` (TFMOT QAT or the converter's PTQ). Its plan ops are the
model's computing ops as the latency model sees them (`frameworks/keras_ops.layer_ops`, the same `LayerOp`s the
latency tables time), keyed by their LayerOp node; each can take `int8` or `float`. A float form is made in the
flatbuffer: the ops the converter made from that layer compute in float32 between a DEQUANTIZE and a QUANTIZE,
a weight op with the layer's float weights from the fp32 conversion of the same weights
(`exporters/tflite_float_ops.float_layers`). The converter's own choices cannot give it: asked for int8
(`Optimize.DEFAULT`, which a QAT model's ranges need) it quantizes every layer it can, those left out of TFMOT's
annotation too. So the planner measures each op's forms on the target, keeps float where it is faster there
(`precision: auto` also where int8 costs accuracy beyond the gate), and races the whole models, as for PyTorch.

A layer's ops are all made float together (a SeparableConv2D's depthwise and pointwise ops: one plan op, the
pointwise one, whose LayerOp the latency model times). The int8-decomposed and int8-depthwise forms of the
PyTorch path are graph rewrites of PT2E graphs and are not offered for Keras. OpenVINO's int8 artifact of a
plan with float ops is OpenVINO's reading of the planned .tflite; the all-int8 model's is raced against NNCF
inside the export (`exporters/keras_openvino_int8.py`), so no NNCF placement contender is added here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from edgecompress.precision import QuantizedOp

FORMS = ("int8", "float")


def kind_forms(kind: str) -> tuple[str, ...]:
    """The forms an int8 op of `kind` can take in a Keras plan."""
    return FORMS


def _input_shape(model: Any) -> list[int]:
    """The int8 .tflite's input shape ([1, H, W, C]): what its LayerOps are computed at."""
    from edgecompress.exporters.tflite_float_ops import model_input_shape

    return model_input_shape(model.tflite)


def _planned(model: Any, input_shape: list[int]) -> list[Any]:
    """The LayerOps of the quantized model's float twin that the .tflite has int8 ops for (kept on the model:
    the planner asks for them once per derive)."""
    if model._plan_layers is None:
        model._plan_layers = _int8_layer_ops(model, input_shape)
    return model._plan_layers


def _int8_layer_ops(model: Any, input_shape: list[int]) -> list[Any]:
    from edgecompress.exporters.tflite_float_ops import quantized_layers
    from edgecompress.frameworks.keras_convert import float_twin
    from edgecompress.frameworks.keras_ops import layer_ops

    layers = [
        layer
        for layer in layer_ops(float_twin(model.model), input_shape)
        if not layer.node.endswith("/depthwise")  # a SeparableConv2D is one plan op (its pointwise one)
    ]
    int8 = quantized_layers(model.tflite, sorted({layer.module for layer in layers}))
    return [layer for layer in layers if layer.module in int8]


def plan_ops(model: Any) -> list[QuantizedOp]:
    """The ops a plan chooses forms for: every computing op the .tflite runs in int8, by LayerOp node."""
    return [
        QuantizedOp(layer.node, layer.kind, layer.module, True, FORMS)
        for layer in _planned(model, _input_shape(model))
    ]


def plan_layers(model: Any, input_shape: list[int]) -> dict[str, Any]:
    """LayerOp node -> LayerOp (the op's shapes, for the latency model) of the plan's ops."""
    return {layer.node: layer for layer in _planned(model, input_shape)}


def derive(model: Any, plan: Mapping[str, str], *, input_shape: list[int]) -> Any:
    """The quantized model (a KerasQuantized) with each op in `plan` in its form: the layers of its float ops
    made float in the .tflite. ValueError for an op the model has no plan op for, or a form it cannot take."""
    ops = {op.node: op for op in plan_ops(model)}
    unknown = [n for n in plan if n not in ops]
    if unknown:
        raise ValueError(f"plan names ops the quantized model does not have: {', '.join(unknown[:5])}")
    wrong = [f"{n}: {f!r}" for n, f in plan.items() if f not in FORMS]
    if wrong:
        raise ValueError(f"a Keras plan's forms are {FORMS}; this one asks {', '.join(wrong[:5])}")
    floats = [ops[n].module for n, f in plan.items() if f == "float"]
    if not floats:
        return model
    from edgecompress.exporters.tflite_float_ops import float_layers

    content, _ = float_layers(model.tflite, model.float_tflite(input_shape), floats)
    return replace(
        model,
        tflite=content,
        float_layers=tuple(dict.fromkeys([*model.float_layers, *floats])),
        plan={n: f for n, f in plan.items() if f != "int8"},
        _interpreter=None,
        _plan_layers=None,
    )


def openvino_placement(model: Any) -> dict[str, str]:
    """NNCF's placement as a contender: for Keras it is raced inside the OpenVINO export (NNCF's own
    quantization of the fp32 IR), so the placement contender is the quantized model itself."""
    return {}
