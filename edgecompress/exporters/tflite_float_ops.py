"""Make chosen ops of an int8 .tflite compute in float32, between a DEQUANTIZE and a QUANTIZE.

Two ways to choose them: the PyTorch path tags ops (below); the Keras path names layers (`float_layers`,
whose weights come from the fp32 conversion of the same weights).


The TFLite converter turns every dequantize -> op -> quantize of a PT2E graph into an int8 kernel where it
has one, so an op an export plan wants in float (its int8 kernel is slow on the target, or outside XNNPACK)
cannot be asked for in the torch graph. `stages/quantize/torch_derive.py` marks such an op instead: its
output scale is multiplied by 1 + k * 2^-20 (k = 1, 2, ...), a tag the converter copies verbatim into the
op's output tensor. Here each tagged op is found by that scale and its type, made float, and every tensor
carrying the tag gets its original scale back, so the arithmetic is the derived torch graph's:

- each int8 activation input goes through a new DEQUANTIZE to a float32 tensor;
- int8 weights and int32 biases become float32 constants (value = integer x its scale, per channel);
- the op writes a new float32 tensor, and a QUANTIZE writes the op's original int8 output tensor.

XNNPACK runs DEQUANTIZE, the float op and QUANTIZE in the same partition as the int8 ops around them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgecompress.errors import ExportError
from edgecompress.exporters.tflite_sparse import WEIGHT_OPS  # their constants come from the float model

#: TFLite builtin ops a torch op kind lowers to (the op that writes the tagged output).
TFLITE_OPS = {
    "conv": ("CONV_2D", "DEPTHWISE_CONV_2D"),
    "linear": ("FULLY_CONNECTED", "BATCH_MATMUL"),
    "matmul": ("BATCH_MATMUL", "FULLY_CONNECTED"),
    "hardswish": ("HARD_SWISH",),
    "hardsigmoid": ("MUL", "HARD_SWISH"),
    "silu": ("MUL",),
    "sigmoid": ("LOGISTIC",),
    "tanh": ("TANH",),
    "gelu": ("GELU",),
    "relu": ("RELU",),
    "clamp": ("RELU6", "RELU", "RELU_N1_TO_1", "MINIMUM", "MAXIMUM"),
    "add": ("ADD",),
    "sub": ("SUB",),
    "mul": ("MUL",),
    "div": ("DIV", "MUL"),
    "mean": ("MEAN",),
    "avg_pool2d": ("AVERAGE_POOL_2D",),
    "max_pool2d": ("MAX_POOL_2D",),
    "pad": ("PAD", "PADV2"),
    "concat": ("CONCATENATION",),
    "softmax": ("SOFTMAX",),
    "layer_norm": ("ADD", "MUL", "SUB"),
}


def opcode_index(model: Any, code: int) -> int:
    """Index of the operator code `code` in the model, added (version 1) when missing."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    for i, op_code in enumerate(model.operatorCodes):
        if flatbuffer_utils.get_builtin_code_from_operator_code(op_code) == code:
            return i
    op_code = fb.OperatorCodeT()
    op_code.builtinCode = code
    op_code.deprecatedBuiltinCode = min(code, 127)
    op_code.version = 1
    model.operatorCodes.append(op_code)
    return len(model.operatorCodes) - 1


def new_operator(model: Any, code: int, inputs: list[int], outputs: list[int]) -> Any:
    """An OperatorT of builtin `code` (its operator code added to the model when missing)."""
    from ai_edge_litert import schema_py_generated as fb

    op = fb.OperatorT()
    op.opcodeIndex = opcode_index(model, code)
    op.inputs, op.outputs = inputs, outputs
    return op


def _scale_of(tensor: Any) -> float | None:
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) != 1:
        return None
    return float(q.scale[0])


def _constant(model: Any, tensor: Any) -> np.ndarray | None:
    buffer = model.buffers[tensor.buffer] if tensor.buffer else None
    if buffer is None or buffer.data is None or len(buffer.data) == 0:
        return None
    dtype = {0: np.float32, 2: np.int32, 9: np.int8, 3: np.uint8, 1: np.float16, 4: np.int64}.get(tensor.type)
    if dtype is None:  # a constant of another type (bool, int16, ...): no value here needs it
        return None
    return np.frombuffer(bytes(bytearray(buffer.data)), dtype=dtype).reshape(list(tensor.shape))


class _Flatbuffer:
    """A .tflite's object tree (flatbuffer_utils) with the edits that make one op compute in float32."""

    def __init__(self, content: bytes) -> None:
        from ai_edge_litert import schema_py_generated as fb
        from ai_edge_litert.tools import flatbuffer_utils

        self.fb = fb
        self.utils = flatbuffer_utils
        self.model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
        self.graph = self.model.subgraphs[0]
        self.names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}

    def bytes(self) -> bytes:
        return bytes(self.utils.convert_object_to_bytearray(self.model))

    def op_type(self, op: Any) -> str:
        code = self.utils.get_builtin_code_from_operator_code(self.model.operatorCodes[op.opcodeIndex])
        return self.names.get(code, str(code))

    def tensor_name(self, t: int) -> str:
        name = self.graph.tensors[t].name
        return name.decode() if isinstance(name, bytes) else str(name)

    def constant(self, t: int) -> np.ndarray | None:
        return _constant(self.model, self.graph.tensors[t])

    def is_constant(self, t: int) -> bool:
        """Whether tensor `t` has data in the file (without decoding it)."""
        buffer = self.graph.tensors[t].buffer
        data = self.model.buffers[buffer].data if buffer else None
        return data is not None and len(data) > 0

    def new_tensor(self, like: Any, suffix: str, data: np.ndarray | None = None) -> int:
        fb = self.fb
        tensor = fb.TensorT()
        tensor.shape = list(like.shape)
        tensor.shapeSignature = None if like.shapeSignature is None else list(like.shapeSignature)
        tensor.type = fb.TensorType.FLOAT32
        name = like.name.decode() if isinstance(like.name, bytes) else str(like.name)
        tensor.name = f"{name}_{suffix}"
        tensor.buffer = 0
        if data is not None:
            buffer = fb.BufferT()
            buffer.data = np.ascontiguousarray(data, dtype=np.float32).tobytes()
            self.model.buffers.append(buffer)
            tensor.buffer = len(self.model.buffers) - 1
        self.graph.tensors.append(tensor)
        return len(self.graph.tensors) - 1

    def make_float(self, index: int, weights: dict[int, np.ndarray] | None = None) -> Any:
        """Operator `index` computing in float32: each int8 activation input behind a new DEQUANTIZE, each
        quantized constant input (weights, int32 bias) a float32 constant — `weights[slot]` where given (the
        float model's own values), else its integers times their scales — and each int8 output written by a
        new QUANTIZE from a float32 tensor. Inputs already float (a hybrid op's) stay. Returns the op."""
        fb, graph = self.fb, self.graph
        op = graph.operators[index]
        before, after = [], []
        dequantized: dict[int, int] = {}
        for slot, t in enumerate(op.inputs):
            if t < 0:
                continue
            tensor = graph.tensors[t]
            given = None if weights is None else weights.get(slot)
            if given is not None:
                op.inputs[slot] = self.new_tensor(tensor, "float", given.reshape(list(tensor.shape)))
                continue
            if tensor.type not in (fb.TensorType.INT8, fb.TensorType.INT32, fb.TensorType.UINT8):
                continue
            values = self.constant(t)
            quantized = tensor.quantization is not None and tensor.quantization.scale is not None
            if not quantized or (values is not None and len(np.atleast_1d(tensor.quantization.scale)) == 0):
                continue  # an integer operand that is not a quantized value (MEAN's axes, PAD's paddings)
            if values is not None:
                scales = np.asarray(tensor.quantization.scale, dtype=np.float64)
                zero_points = tensor.quantization.zeroPoint
                zero = np.asarray([0] * len(scales) if zero_points is None else zero_points, dtype=np.float64)
                axis = tensor.quantization.quantizedDimension or 0
                shape = [1] * values.ndim
                if len(scales) > 1:
                    shape[axis] = len(scales)
                real = (values.astype(np.float64) - zero.reshape(shape)) * scales.reshape(shape)
                op.inputs[slot] = self.new_tensor(tensor, "float", real)
            else:
                if t not in dequantized:
                    dequantized[t] = self.new_tensor(tensor, "dequantized")
                    before.append(
                        new_operator(self.model, fb.BuiltinOperator.DEQUANTIZE, [t], [dequantized[t]])
                    )
                op.inputs[slot] = dequantized[t]
        for slot, t in enumerate(op.outputs):
            tensor = graph.tensors[t]
            if tensor.type in (fb.TensorType.INT8, fb.TensorType.UINT8):
                floated = self.new_tensor(tensor, "float")
                op.outputs[slot] = floated
                after.append(new_operator(self.model, fb.BuiltinOperator.QUANTIZE, [floated], [t]))
        graph.operators[index : index + 1] = [*before, op, *after]
        return op


def float_ops(tflite_model: bytes, tags: Sequence[Any]) -> tuple[bytes, list[str]]:
    """The model with every op tagged by `tags` (FloatOpTag: node, kind, tagged_scale, scale) in float32,
    and a line per op made float. ExportError when a tagged op cannot be found."""
    if not tags:
        return tflite_model, []
    fb_model = _Flatbuffer(tflite_model)
    fb, graph = fb_model.fb, fb_model.graph
    done: list[str] = []
    for tag in tags:
        wanted = TFLITE_OPS.get(tag.kind, ())
        index = next(
            (
                i
                for i, op in enumerate(graph.operators)
                if fb_model.op_type(op) in wanted
                and op.outputs
                and _scale_of(graph.tensors[op.outputs[0]]) is not None
                and np.isclose(_scale_of(graph.tensors[op.outputs[0]]), tag.tagged_scale, rtol=2**-22, atol=0)
            ),
            None,
        )
        if index is None:
            raise ExportError(
                f"the {tag.kind} op {tag.node} chosen to run in float was not found in the converted .tflite "
                f"(no {'/'.join(wanted)} op writes the tagged scale {tag.tagged_scale:.9g})"
            )
        op = fb_model.make_float(index)
        restored = set()
        for t, tensor in enumerate(graph.tensors):
            scale = _scale_of(tensor)
            if scale is not None and np.isclose(scale, tag.tagged_scale, rtol=2**-22, atol=0):
                tensor.quantization.scale = [tag.scale]
                restored.add(t)
        # an int8 conv / linear reading a restored tensor has its int32 bias at input scale x weight scale,
        # computed by the converter from the tagged input scale: move the bias scale with it (TFLite checks
        # the product to a relative 1e-6; the tag is larger than that from the second tag on)
        for consumer in graph.operators:
            if len(consumer.inputs) > 2 and consumer.inputs[0] in restored and consumer.inputs[2] >= 0:
                bias = graph.tensors[consumer.inputs[2]]
                if (
                    bias.type == fb.TensorType.INT32
                    and bias.quantization is not None
                    and bias.quantization.scale is not None
                ):
                    factor = tag.scale / tag.tagged_scale
                    bias.quantization.scale = [float(b) * factor for b in bias.quantization.scale]
        done.append(f"{tag.node} ({fb_model.op_type(op)}) in float32")
    return fb_model.bytes(), done


#: Ops that only move a tensor between int8 and float: never "a layer's op".
_BOUNDARY_OPS = ("QUANTIZE", "DEQUANTIZE")


def _layer_ops(fb_model: _Flatbuffer, layer: str) -> list[int]:
    """Indices of the operators TensorFlow's converter made from Keras layer `layer`: those whose output
    tensor, or a constant input of a weight op, is named after the layer ("<model>/<layer>/Conv2D",
    "<model>/quant_<layer>/..." for TFMOT's wrapper of it; names of fused ops join their parts with ';')."""
    keys = (f"/{layer}/", f"/quant_{layer}/")

    def named(t: int) -> bool:
        return any(key in f"/{part}" for part in fb_model.tensor_name(t).split(";") for key in keys)

    out = []
    for i, op in enumerate(fb_model.graph.operators):
        kind = fb_model.op_type(op)
        if kind in _BOUNDARY_OPS:
            continue
        constants = [t for t in op.inputs if t >= 0 and fb_model.is_constant(t)]
        if any(named(t) for t in op.outputs) or (kind in WEIGHT_OPS and any(named(t) for t in constants)):
            out.append(i)
    return out


def float_layers(quantized: bytes, float_model: bytes, layers: Sequence[str]) -> tuple[bytes, list[str]]:
    """The int8 .tflite `quantized` with every op made from the Keras layers `layers` in float32 (between a
    DEQUANTIZE and a QUANTIZE, as `float_ops` makes a tagged torch op), the weight ops with the float32
    weights and biases of the same layer's op in `float_model` (the fp32 .tflite of the same weights: batch
    norms folded alike), and a line per op. The converter of an int8 model quantizes every layer it can, those
    left out of TFMOT's annotation too (calibrated on the representative images), so a layer kept float is made
    float here. A layer with no op of its own (a ReLU fused into its conv) names nothing and is skipped;
    ExportError when a layer's weight op has no twin in `float_model`."""
    if not layers:
        return quantized, []
    target, source = _Flatbuffer(quantized), _Flatbuffer(float_model)
    done: list[str] = []
    for layer in layers:
        twins = [
            i for i in _layer_ops(source, layer) if source.op_type(source.graph.operators[i]) in WEIGHT_OPS
        ]
        for index in reversed(_layer_ops(target, layer)):  # from the last: make_float inserts operators
            op = target.graph.operators[index]
            kind = target.op_type(op)
            if kind in WEIGHT_OPS and not _is_float(target, op):
                weights = _twin_weights(target, op, source, twins, layer)
                target.make_float(index, weights)
            elif not _is_float(target, op):
                target.make_float(index)
            else:
                continue
            done.append(f"{layer} ({kind}) in float32")
    return target.bytes(), list(reversed(done))


def _is_float(fb_model: _Flatbuffer, op: Any) -> bool:
    """Whether `op` already computes in float32: no int8 tensor among its inputs and outputs."""
    quantized = (fb_model.fb.TensorType.INT8, fb_model.fb.TensorType.UINT8)
    return all(fb_model.graph.tensors[t].type not in quantized for t in (*op.inputs, *op.outputs) if t >= 0)


def _twin_weights(
    target: _Flatbuffer, op: Any, source: _Flatbuffer, twins: list[int], layer: str
) -> dict[int, np.ndarray]:
    """Slot -> float32 values of `op`'s constant inputs, from the op among `twins` (of the float model) of the
    same type whose constants have the same shapes (a SeparableConv2D's depthwise and pointwise ops differ)."""
    kind = target.op_type(op)
    slots = [s for s, t in enumerate(op.inputs) if t >= 0 and target.is_constant(t)]
    shapes = [list(target.graph.tensors[op.inputs[s]].shape) for s in slots]
    for i in twins:
        twin = source.graph.operators[i]
        if source.op_type(twin) != kind or len(twin.inputs) != len(op.inputs):
            continue
        values = {s: source.constant(twin.inputs[s]) if twin.inputs[s] >= 0 else None for s in slots}
        if all(
            v is not None and list(v.shape) == shape for v, shape in zip(values.values(), shapes, strict=True)
        ):
            return {s: np.asarray(v, dtype=np.float32) for s, v in values.items()}
    raise ExportError(
        f"layer {layer}: its {kind} op has no twin with the same weight shapes in the float model's .tflite "
        "(keep_float / float forms need both conversions to name the layer alike)"
    )


def model_input_shape(content: bytes) -> list[int]:
    """The shape of a .tflite's first input."""
    fb_model = _Flatbuffer(content)
    return [int(d) for d in fb_model.graph.tensors[fb_model.graph.inputs[0]].shape]


def quantized_layers(content: bytes, layers: Sequence[str]) -> set[str]:
    """Those of the Keras layers `layers` that have an op computing in int8 in the .tflite `content`."""
    fb_model = _Flatbuffer(content)
    return {
        layer
        for layer in layers
        if any(not _is_float(fb_model, fb_model.graph.operators[i]) for i in _layer_ops(fb_model, layer))
    }
