"""Conv / fully-connected weights read back from an exported file, to check that zero patterns survived.

`read_weights(path)` parses the artifact itself (not the framework model it came from) and returns one
`FileWeight` per conv / fully-connected op, in the file's execution order, holding the values as stored:
integer values for int8 weights (a pruned zero is an exact 0), float16 / float32 as written.

- `.tflite`: the filter (input 1) of CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED and TRANSPOSE_CONV, followed
  back through DEQUANTIZE (fp16 weights) and DENSIFY (sparse-encoded weights) to the constant tensor.
  Buffers stored after the flatbuffer (Buffer.offset/size, files over 2 GB) are read from the file.
- `.xml` (OpenVINO IR, the `.bin` beside it): the weight input of Convolution, GroupConvolution and MatMul,
  followed up through Convert, Subtract (zero point), Multiply (scale), Reshape, Squeeze, Unsqueeze,
  Transpose and FakeQuantize (its input 0) to the Constant; reshapes and transposes met on the way are
  applied to the stored values. An op whose weight does not lead to exactly one such Constant (an
  activation x activation MatMul, a weight computed at run time) is left out of the result.

Canonical layout: [out, in_per_group, kh, kw]; fully-connected / MatMul as [out, in, 1, 1]. Values are the
stored integers even where a zero point is not 0 (uint8 asymmetric weights): there a pruned weight reads as
the zero point, not 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.errors import ExportError

TFLITE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
#: TFLite tensor types read as numpy (sub-byte and bfloat16 types are not).
TFLITE_DTYPES = {
    "FLOAT32": "float32",
    "FLOAT16": "float16",
    "FLOAT64": "float64",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
}
#: OpenVINO ops a weight passes through on its way from the Constant, with the input the data comes from
#: (None: Multiply, whichever input has the output's shape).
OV_PASS = {
    "Convert": 0,
    "Subtract": 0,
    "Multiply": None,
    "Reshape": 0,
    "Squeeze": 0,
    "Unsqueeze": 0,
    "Transpose": 0,
    "FakeQuantize": 0,
}


@dataclass(frozen=True)
class FileWeight:
    """One conv / fully-connected weight tensor as an exported file stores it."""

    op: str  # TFLite builtin name ("CONV_2D", ...) or OpenVINO type ("Convolution", "MatMul", ...)
    name: str  # the stored tensor's name (tflite) / the Constant's friendly name (OpenVINO)
    values: np.ndarray  # [out, in_per_group, kh, kw] in the stored dtype
    dtype: str  # stored dtype: "int8", "float16", "float32", ...
    groups: int  # 1 for dense conv / FC, the input channels for depthwise


def read_weights(path: Path) -> list[FileWeight]:
    """The conv / FC weights of a `.tflite` or OpenVINO `.xml` file, in execution order. ExportError when
    the file is missing or not a model of its kind."""
    path = Path(path)
    readers = {".tflite": _read_tflite, ".xml": _read_openvino}
    if path.suffix not in readers:
        raise ExportError(f"{path}: cannot read weights back; give a .tflite or an OpenVINO .xml")
    if not path.is_file():
        raise ExportError(f"{path}: file not found")
    return readers[path.suffix](path)


def _read_tflite(path: Path) -> list[FileWeight]:
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    raw = path.read_bytes()
    try:
        if len(raw) < 8 or not fb.Model.ModelBufferHasIdentifier(raw, 0):
            raise ValueError("no TFL3 file identifier")
        model = fb.ModelT.InitFromPackedBuf(bytearray(raw), 0)
    except Exception as exc:
        raise ExportError(f"{path}: not a TFLite model ({type(exc).__name__}: {exc})") from exc
    for buffer in model.buffers or []:
        if buffer.offset > 1:  # the schema: data outside the flatbuffer, offset from the file's start
            buffer.data = np.frombuffer(raw, np.uint8, count=buffer.size, offset=buffer.offset)
    op_names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(fb.TensorType).items() if not k.startswith("_")}

    def op_name(op: Any) -> str:
        code = flatbuffer_utils.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])
        return op_names.get(code, str(code))

    weights = []
    for graph in model.subgraphs or []:
        producer = {int(t): op for op in graph.operators or [] for t in op.outputs}
        for op in graph.operators or []:
            kind = op_name(op)
            if kind not in TFLITE_OPS or len(op.inputs) < 2 or op.inputs[1] < 0:
                continue
            index = int(op.inputs[1])
            # follow DEQUANTIZE (fp16 / weight-only int8) and DENSIFY (sparse) back to the constant
            while not _has_data(model, graph.tensors[index]) and index in producer:
                source = producer[index]
                if op_name(source) not in ("DEQUANTIZE", "DENSIFY") or not len(source.inputs):
                    break
                index = int(source.inputs[0])
            tensor = graph.tensors[index]
            dtype = TFLITE_DTYPES.get(type_names.get(tensor.type, ""))
            if dtype is None or not _has_data(model, tensor):
                continue  # a filter computed at run time, or stored in a type numpy cannot hold (int4)
            if tensor.sparsity is not None:
                from edgecompress.exporters.tflite_sparse import dense_values

                stored = np.asarray(dense_values(model, tensor))
            else:
                stored = np.frombuffer(bytes(model.buffers[tensor.buffer].data), dtype=dtype)
            stored = stored.reshape([int(d) for d in tensor.shape])
            activation = graph.tensors[int(op.inputs[2 if kind == "TRANSPOSE_CONV" else 0])]
            values, groups = _tflite_canonical(kind, stored, activation, op)
            name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
            weights.append(FileWeight(kind, name, np.ascontiguousarray(values), np.dtype(dtype).name, groups))
    return weights


def _has_data(model: Any, tensor: Any) -> bool:
    data = model.buffers[tensor.buffer].data if tensor.buffer else None
    return data is not None and len(data) > 0


def _tflite_canonical(kind: str, stored: np.ndarray, activation: Any, op: Any) -> tuple[np.ndarray, int]:
    """[out, in_per_group, kh, kw] and the group count from a TFLite filter (OHWI / 1HWC / [out, in])."""
    shape = [int(d) for d in activation.shape] if activation.shape is not None else []
    channels = shape[-1] if shape and shape[-1] > 0 else 0
    if kind == "FULLY_CONNECTED":
        return stored.reshape(stored.shape[0], -1)[:, :, None, None], 1
    if kind == "DEPTHWISE_CONV_2D":  # [1, kh, kw, C * multiplier]
        multiplier = getattr(op.builtinOptions, "depthMultiplier", 0) or 1
        return stored.transpose(3, 0, 1, 2), channels or stored.shape[3] // multiplier
    values = stored.transpose(0, 3, 1, 2)  # CONV_2D / TRANSPOSE_CONV: OHWI
    grouped = kind == "CONV_2D" and channels and channels % values.shape[1] == 0
    return values, channels // values.shape[1] if grouped else 1


def _read_openvino(path: Path) -> list[FileWeight]:
    import openvino as ov

    if not path.with_suffix(".bin").is_file():
        raise ExportError(f"{path}: its weights file {path.with_suffix('.bin').name} is missing")
    try:
        model = ov.Core().read_model(str(path))
    except Exception as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ExportError(f"{path}: not an OpenVINO IR model ({first.strip()})") from exc
    weights = []
    for node in model.get_ordered_ops():
        kind = node.get_type_name()
        if kind not in ("Convolution", "GroupConvolution", "MatMul"):
            continue
        ports = (1, 0) if kind == "MatMul" else (1,)
        for port in ports:
            found = _ov_constant(node.input(port).get_source_output())
            if found is None:
                continue
            constant, values = found
            canonical = _ov_canonical(node, port, values)
            if canonical is not None:
                groups = values.shape[0] if kind == "GroupConvolution" else 1
                dtype = constant.get_element_type().get_type_name()
                dtype = {"i4": "int4", "u4": "uint4"}.get(dtype, values.dtype.name)
                name = constant.get_friendly_name()
                weights.append(FileWeight(kind, name, np.ascontiguousarray(canonical), dtype, groups))
            break
    return weights


def _ov_constant(output: Any) -> tuple[Any, np.ndarray] | None:
    """The Constant a weight input is stored in and its values shaped as the consumer sees them (reshapes
    and transposes on the way applied), or None when the input is not one stored constant."""
    steps = []
    while (node := output.get_node()).get_type_name() != "Constant":
        kind = node.get_type_name()
        if kind not in OV_PASS or not node.get_output_partial_shape(0).is_static:
            return None
        slot = OV_PASS[kind]
        if slot is None:  # Multiply: the data is the input with the output's shape, the other the scale
            full = [
                i
                for i in range(node.get_input_size())
                if node.get_input_partial_shape(i) == node.get_output_partial_shape(0)
            ]
            live = [
                i for i in full if node.input(i).get_source_output().get_node().get_type_name() != "Constant"
            ]
            slot = live[0] if len(live) == 1 else full[0] if len(full) == 1 else None
            if slot is None:
                return None
        steps.append(node)
        output = node.input(slot).get_source_output()
    values = _ov_values(node)
    if values is None:
        return None
    for step in reversed(steps):
        if step.get_type_name() == "Transpose":
            order = step.input(1).get_source_output().get_node()
            if order.get_type_name() != "Constant":
                return None
            values = values.transpose([int(a) for a in order.get_data()])
        elif step.get_type_name() in ("Reshape", "Squeeze", "Unsqueeze"):
            values = values.reshape([int(d) for d in step.get_output_shape(0)])
    return node, values


def _ov_values(constant: Any) -> np.ndarray | None:
    """A copy of the Constant's values in its stored dtype; 4-bit types unpacked (low nibble first)."""
    kind = constant.get_element_type().get_type_name()
    shape = [int(d) for d in constant.get_output_shape(0)]
    data = np.array(constant.get_data(), copy=True)
    if kind in ("u4", "i4"):
        nibbles = np.stack([data & 0x0F, data >> 4], axis=-1).reshape(-1)[: int(np.prod(shape))]
        data = (nibbles.astype(np.int16) - 16 * (nibbles >= 8)).astype(np.int8) if kind == "i4" else nibbles
    return data.reshape(shape) if data.size == int(np.prod(shape)) else None


def _ov_canonical(node: Any, port: int, values: np.ndarray) -> np.ndarray | None:
    """[out, in_per_group, kh, kw] from an OpenVINO weight as its consumer sees it, or None when it has a
    layout that has none (a 3D convolution, a batched MatMul)."""
    kind = node.get_type_name()
    if kind == "GroupConvolution":  # [G, O/G, I/G, k...]
        values = values.reshape(-1, *values.shape[2:])
    if kind in ("Convolution", "GroupConvolution"):
        return values[:, :, None, :] if values.ndim == 3 else values if values.ndim == 4 else None
    matrix = (
        values.reshape(values.shape[-2:])
        if values.ndim >= 2 and values.size == np.prod(values.shape[-2:])
        else None
    )
    if matrix is None:
        return None
    attributes = node.get_attributes()
    transposed = attributes["transpose_b"] if port == 1 else attributes["transpose_a"]
    # x @ W: W is [in, out] ([out, in] with transpose_b); A @ x: A is [out, in] ([in, out] with transpose_a)
    return (matrix if transposed == (port == 1) else matrix.T)[:, :, None, None]
