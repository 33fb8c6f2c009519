"""Int8 .tflite helpers: a float32 interface for a fully int8 model, and counting its int8 weights.

litert-torch lowers a PT2E-quantized graph (qdq_conversion_mode STATIC) to int8 ops end to end, and takes the
graph's first quantize and last dequantize as the model's interface: the input and output tensors become
int8 with the activation scales. Every artifact edgecompress makes takes float32 images and returns float32
logits (the sidecar contract, parity and profiling feed float32), and TensorFlow's own converter gives int8
models float interfaces the same way (`inference_input_type = tf.float32`), so this edits the flatbuffer:
each int8 subgraph input/output gets a float32 twin joined by QUANTIZE/DEQUANTIZE with the int8 tensor's
scale and zero point. The arithmetic is unchanged: the int8 model sees exactly the values it saw before.
"""

from __future__ import annotations

from typing import Any

from edgecompress.exporters.tflite_float_ops import new_operator


def float_interface(tflite_model: bytes) -> tuple[bytes, int]:
    """The model with every int8 input/output of its main subgraph behind a float32 tensor, and how many
    tensors were wrapped (0: the model already had a float interface and comes back unchanged)."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite_model))
    graph = model.subgraphs[0]

    def float_twin(index: int) -> int:
        """A float32 tensor with the int8 tensor's name and shape; the int8 one is renamed '<name>_int8'."""
        tensor = graph.tensors[index]
        name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
        twin = fb.TensorT()
        twin.shape = list(tensor.shape)
        twin.shapeSignature = None if tensor.shapeSignature is None else list(tensor.shapeSignature)
        twin.type = fb.TensorType.FLOAT32
        twin.buffer = 0  # buffer 0 is the schema's empty buffer: no constant data
        twin.name = name
        tensor.name = f"{name}_int8"
        graph.tensors.append(twin)
        return len(graph.tensors) - 1

    def operator(code: int, inputs: list[int], outputs: list[int]) -> Any:
        return new_operator(model, code, inputs, outputs)

    renamed: dict[int, int] = {}
    front, back = [], []
    for k, index in enumerate(graph.inputs):
        if graph.tensors[index].type == fb.TensorType.INT8:
            twin = renamed[index] = float_twin(index)
            front.append(operator(fb.BuiltinOperator.QUANTIZE, [twin], [index]))
            graph.inputs[k] = twin
    for k, index in enumerate(graph.outputs):
        if graph.tensors[index].type == fb.TensorType.INT8:
            twin = renamed[index] = float_twin(index)
            back.append(operator(fb.BuiltinOperator.DEQUANTIZE, [index], [twin]))
            graph.outputs[k] = twin
    if not renamed:
        return tflite_model, 0
    graph.operators = front + list(graph.operators) + back
    for signature in model.signatureDefs or []:
        for entry in list(signature.inputs or []) + list(signature.outputs or []):
            entry.tensorIndex = renamed.get(entry.tensorIndex, entry.tensorIndex)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), len(renamed)


#: TFLite ops whose second input is a weight tensor.
WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D")


def weight_dtypes(tflite_model: bytes) -> dict[str, int]:
    """Constant weight tensors of WEIGHT_OPS in the model, counted by type name (e.g. {'INT8': 10})."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite_model))
    codes = {getattr(fb.BuiltinOperator, name, None) for name in WEIGHT_OPS} - {None}
    names = {v: k for k, v in vars(fb.TensorType).items() if not k.startswith("_")}
    counts: dict[str, int] = {}
    for graph in model.subgraphs:
        for op in graph.operators:
            code = flatbuffer_utils.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])
            if code in codes and len(op.inputs) > 1 and op.inputs[1] >= 0:
                tensor = graph.tensors[op.inputs[1]]
                if tensor.buffer and model.buffers[tensor.buffer].data is not None:
                    counts[names[tensor.type]] = counts.get(names[tensor.type], 0) + 1
    return counts
