"""Keras backend of the precision planner (`edgecompress/precision.py`): what a plan can choose for a Keras
build's int8 / auto exports.

A Keras int8 model is one converted `.tflite` (TFMOT QAT or the converter's PTQ), so its plans choose per
model, not per op: no op of it is offered another form (`plan_ops` is empty), and the planner's whole-model
race decides. `precision: int8` ships the quantized model; `precision: auto` races it against the fp32 model
on the export's device and ships the faster (and the fp32 one when the int8 one is slower). OpenVINO's int8
candidate is itself the fastest of the .tflite's reading, the QAT model's reading and NNCF's quantization
(`exporters/keras_openvino_int8.py`), so no NNCF placement contender is added here.

Why no per-op forms: a layer left out of TFMOT's annotation is not float in the .tflite — the converter,
asked for int8 (`Optimize.DEFAULT`, which a QAT model's ranges need), quantizes the weights of every
unannotated layer and runs it as a hybrid op (int8 weights, activations quantized on the fly). A float form
needs those ops rewritten in the flatbuffer with the layer's float weights, as the PyTorch path's
`exporters/tflite_float_ops.py` does for its tagged ops; that is not done for Keras yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def plan_ops(model: Any) -> list[Any]:
    """The ops a plan chooses forms for: none (see the module docstring)."""
    return []


def plan_layers(model: Any, input_shape: list[int]) -> dict[str, Any]:
    """Node -> LayerOp of the ops a plan chooses forms for: none."""
    return {}


def derive(model: Any, plan: Mapping[str, str], *, input_shape: list[int]) -> Any:
    """The quantized model with the plan's forms: every Keras plan is the model as quantized."""
    if plan:
        raise ValueError(f"a Keras precision plan names no ops; this one names {', '.join(sorted(plan))}")
    return model


def openvino_placement(model: Any) -> dict[str, str]:
    """NNCF's placement as a contender: for Keras it is raced inside the OpenVINO export (NNCF's own
    quantization of the fp32 IR), so the placement contender is the quantized model itself."""
    return {}
