"""Make chosen ops of an int8 .tflite compute in float32, between a DEQUANTIZE and a QUANTIZE.

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
    dtype = {0: np.float32, 2: np.int32, 9: np.int8, 3: np.uint8, 1: np.float16, 4: np.int64}[tensor.type]
    return np.frombuffer(bytes(bytearray(buffer.data)), dtype=dtype).reshape(list(tensor.shape))


def float_ops(tflite_model: bytes, tags: Sequence[Any]) -> tuple[bytes, list[str]]:
    """The model with every op tagged by `tags` (FloatOpTag: node, kind, tagged_scale, scale) in float32,
    and a line per op made float. ExportError when a tagged op cannot be found."""
    if not tags:
        return tflite_model, []
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite_model))
    graph = model.subgraphs[0]
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}

    def op_type(op: Any) -> str:
        code = flatbuffer_utils.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])
        return names.get(code, str(code))

    def new_tensor(like: Any, suffix: str, data: np.ndarray | None = None) -> int:
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
            model.buffers.append(buffer)
            tensor.buffer = len(model.buffers) - 1
        graph.tensors.append(tensor)
        return len(graph.tensors) - 1

    def operator(code: int, inputs: list[int], outputs: list[int]) -> Any:
        return new_operator(model, code, inputs, outputs)

    done: list[str] = []
    for tag in tags:
        wanted = TFLITE_OPS.get(tag.kind, ())
        index = next(
            (
                i
                for i, op in enumerate(graph.operators)
                if op_type(op) in wanted
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
        op = graph.operators[index]
        before, after = [], []
        dequantized: dict[int, int] = {}
        for slot, t in enumerate(op.inputs):
            if t < 0:
                continue
            tensor = graph.tensors[t]
            if tensor.type not in (fb.TensorType.INT8, fb.TensorType.INT32, fb.TensorType.UINT8):
                continue
            values = _constant(model, tensor)
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
                op.inputs[slot] = new_tensor(tensor, "float", real)
            else:
                if t not in dequantized:
                    dequantized[t] = new_tensor(tensor, "dequantized")
                    before.append(operator(fb.BuiltinOperator.DEQUANTIZE, [t], [dequantized[t]]))
                op.inputs[slot] = dequantized[t]
        for slot, t in enumerate(op.outputs):
            tensor = graph.tensors[t]
            if tensor.type in (fb.TensorType.INT8, fb.TensorType.UINT8):
                floated = new_tensor(tensor, "float")
                op.outputs[slot] = floated
                after.append(operator(fb.BuiltinOperator.QUANTIZE, [floated], [t]))
        graph.operators[index : index + 1] = [*before, op, *after]
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
        done.append(f"{tag.node} ({op_type(op)}) in float32")
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), done
