"""read_weights on small hand-built files: TFLite flatbuffers written with the schema's object API (external
buffers, DEQUANTIZE / DENSIFY chains, grouped and transposed convs) and OpenVINO graphs built op by op
(zero-point / scale / transpose chains, MatMul on either side, FakeQuantize, 4-bit constants). No
converter and no inference runs."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from edgecompress.errors import ExportError
from edgecompress.exporters.weights_readback import read_weights


def test_missing_or_unknown_files_are_export_errors(tmp_path):
    with pytest.raises(ExportError, match=r"nothing\.tflite: file not found"):
        read_weights(tmp_path / "nothing.tflite")
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(ExportError, match=r"model\.onnx: cannot read weights back"):
        read_weights(tmp_path / "model.onnx")


def test_a_file_that_is_not_a_tflite_model_is_an_export_error(tmp_path):
    pytest.importorskip("ai_edge_litert")
    path = tmp_path / "junk.tflite"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ExportError, match=r"junk\.tflite: not a TFLite model") as info:
        read_weights(path)
    assert "\n" not in str(info.value)


def test_an_ir_without_bin_or_broken_is_an_export_error(tmp_path):
    pytest.importorskip("openvino")
    xml = tmp_path / "m.xml"
    xml.write_text("<net>")
    with pytest.raises(ExportError, match=r"m\.xml: its weights file m\.bin is missing"):
        read_weights(xml)
    xml.with_suffix(".bin").write_bytes(b"")
    with pytest.raises(ExportError, match=r"m\.xml: not an OpenVINO IR model") as info:
        read_weights(xml)
    assert "\n" not in str(info.value)


# --- TFLite ----------------------------------------------------------------------------------------------


def _tflite(path: Path, tensors: list[tuple], ops: list[tuple], *, external: bool = False) -> Path:
    """Write a .tflite: tensors are (name, type, shape, data | None, sparse), ops (BUILTIN, inputs, outputs,
    options | None). `external`: constant data stored after the flatbuffer (Buffer.offset/size)."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    model, graph = fb.ModelT(), fb.SubGraphT()
    model.version, model.buffers, model.operatorCodes, graph.tensors, graph.operators = (
        3,
        [fb.BufferT()],
        [],
        [],
        [],
    )
    blobs = []
    for name, kind, shape, data, sparse in tensors:
        tensor = fb.TensorT()
        tensor.name, tensor.type, tensor.shape, tensor.buffer = name, getattr(fb.TensorType, kind), shape, 0
        if sparse:
            tensor.sparsity = fb.SparsityParametersT()
            tensor.sparsity.traversalOrder = list(range(len(shape)))
        if data is not None:
            buffer = fb.BufferT()
            if external:
                blobs.append((buffer, np.ascontiguousarray(data).tobytes()))
            else:
                buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            model.buffers.append(buffer)
            tensor.buffer = len(model.buffers) - 1
        graph.tensors.append(tensor)
    for builtin, inputs, outputs, options in ops:
        code = getattr(fb.BuiltinOperator, builtin)
        op_code = fb.OperatorCodeT()
        op_code.builtinCode, op_code.deprecatedBuiltinCode, op_code.version = code, min(code, 127), 1
        model.operatorCodes.append(op_code)
        op = fb.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = len(model.operatorCodes) - 1, inputs, outputs
        if options is not None:
            op.builtinOptionsType, op.builtinOptions = options
        graph.operators.append(op)
    graph.inputs, graph.outputs = [0], [graph.operators[-1].outputs[0]]
    model.subgraphs = [graph]
    for buffer, blob in blobs:  # the offset field is fixed-width: a placeholder packs to the same length
        buffer.offset, buffer.size = 1 << 40, len(blob)
    packed = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    extra = b""
    for buffer, blob in blobs:
        extra += b"\x00" * (-(len(packed) + len(extra)) % 16)
        buffer.offset = len(packed) + len(extra)
        extra += blob
    if blobs:
        packed = bytes(flatbuffer_utils.convert_object_to_bytearray(model, extra))
    path.write_bytes(packed)
    return path


@pytest.mark.parametrize("external", [False, True], ids=["inline", "external-buffers"])
def test_tflite_conv_fc_and_transpose_conv_layouts(tmp_path, external):
    pytest.importorskip("ai_edge_litert")
    rng = np.random.default_rng(0)
    conv = rng.integers(-127, 128, (6, 3, 3, 2)).astype(np.int8)  # OHWI, 4 input channels in 2 groups
    conv[:, :, :, 1] = 0
    fc = rng.standard_normal((5, 6 * 3 * 3)).astype(np.float32)
    fc[:, ::4] = 0
    transposed = rng.standard_normal((2, 3, 3, 6)).astype(np.float32)  # OHWI of a TRANSPOSE_CONV
    tensors = [
        ("x", "INT8", [1, 5, 5, 4], None, False),
        ("conv_w", "INT8", list(conv.shape), conv, False),
        ("y", "INT8", [1, 3, 3, 6], None, False),
        ("out_shape", "INT32", [4], np.array([1, 5, 5, 2], np.int32), False),
        ("tconv_w", "FLOAT32", list(transposed.shape), transposed, False),
        ("t", "FLOAT32", [1, 5, 5, 2], None, False),
        ("flat", "FLOAT32", [1, 54], None, False),
        ("fc_w", "FLOAT32", list(fc.shape), fc, False),
        ("logits", "FLOAT32", [1, 5], None, False),
    ]
    ops = [
        ("CONV_2D", [0, 1, -1], [2], None),
        ("TRANSPOSE_CONV", [3, 4, 2, -1], [5], None),
        ("FULLY_CONNECTED", [6, 7, -1], [8], None),
    ]
    weights = read_weights(_tflite(tmp_path / "m.tflite", tensors, ops, external=external))
    assert [(w.op, w.name, w.dtype, w.groups) for w in weights] == [
        ("CONV_2D", "conv_w", "int8", 2),
        ("TRANSPOSE_CONV", "tconv_w", "float32", 1),
        ("FULLY_CONNECTED", "fc_w", "float32", 1),
    ]
    assert np.array_equal(weights[0].values, conv.transpose(0, 3, 1, 2))
    assert np.array_equal(weights[1].values, transposed.transpose(0, 3, 1, 2))
    assert np.array_equal(weights[2].values, fc[:, :, None, None])


def test_tflite_follows_dequantize_and_densify_to_the_stored_constant(tmp_path, monkeypatch):
    fb = pytest.importorskip("ai_edge_litert.schema_py_generated")
    rng = np.random.default_rng(1)
    depthwise = rng.standard_normal((1, 3, 3, 8)).astype(np.float16)  # 4 channels x multiplier 2
    depthwise[..., ::2] = 0
    dense = rng.standard_normal((4, 8)).astype(np.float16)
    dense[:, :4] = 0
    calls = []

    def dense_values(model, tensor):
        calls.append((model, tensor))
        return dense  # what decoding the sparse tensor would give

    fake = types.ModuleType("edgecompress.exporters.tflite_sparse")
    fake.dense_values = dense_values  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "edgecompress.exporters.tflite_sparse", fake)
    tensors = [
        ("x", "FLOAT32", [1, 6, 6, 4], None, False),
        ("dw_w16", "FLOAT16", [1, 3, 3, 8], depthwise, False),
        ("dw_w", "FLOAT32", [1, 3, 3, 8], None, False),
        ("y", "FLOAT32", [1, 4, 4, 8], None, False),
        ("flat", "FLOAT32", [16, 8], None, False),
        ("fc_sparse", "FLOAT16", [4, 8], dense[:, 4:], True),  # stored: the non-zero values only
        ("fc_dense16", "FLOAT16", [4, 8], None, False),
        ("fc_w", "FLOAT32", [4, 8], None, False),
        ("out", "FLOAT32", [16, 4], None, False),
    ]
    options = fb.DepthwiseConv2DOptionsT()
    options.depthMultiplier = 2
    ops = [
        ("DEQUANTIZE", [1], [2], None),
        ("DEPTHWISE_CONV_2D", [0, 2, -1], [3], (fb.BuiltinOptions.DepthwiseConv2DOptions, options)),
        ("DENSIFY", [5], [6], None),
        ("DEQUANTIZE", [6], [7], None),
        ("FULLY_CONNECTED", [4, 7, -1], [8], None),
    ]
    weights = read_weights(_tflite(tmp_path / "m.tflite", tensors, ops))
    assert [(w.op, w.name, w.dtype, w.groups) for w in weights] == [
        ("DEPTHWISE_CONV_2D", "dw_w16", "float16", 4),
        ("FULLY_CONNECTED", "fc_sparse", "float16", 1),
    ]
    assert np.array_equal(weights[0].values, depthwise.transpose(3, 0, 1, 2))
    assert weights[0].values.shape == (8, 1, 3, 3)
    assert np.array_equal(weights[1].values, dense[:, :, None, None])
    assert len(calls) == 1 and calls[0][1].name == b"fc_sparse"


def test_tflite_filter_computed_at_run_time_is_left_out(tmp_path):
    pytest.importorskip("ai_edge_litert")
    tensors = [
        ("x", "FLOAT32", [1, 8], None, False),
        ("w", "FLOAT32", [4, 8], None, False),  # a graph input, no buffer
        ("y", "FLOAT32", [1, 4], None, False),
    ]
    assert (
        read_weights(_tflite(tmp_path / "m.tflite", tensors, [("FULLY_CONNECTED", [0, 1, -1], [2], None)]))
        == []
    )


# --- OpenVINO --------------------------------------------------------------------------------------------


def _ir(tmp_path: Path, outputs: list, inputs: list) -> Path:
    import openvino as ov

    path = tmp_path / "m.xml"
    ov.save_model(ov.Model(outputs, inputs), str(path), compress_to_fp16=False)
    return path


def test_openvino_matmul_through_zero_point_scale_and_transpose(tmp_path):
    ops = pytest.importorskip("openvino.opset13")
    stored = np.arange(24, dtype=np.uint8).reshape(6, 4)  # [in=6, out=4] before the transpose
    x = ops.parameter([1, 6], np.float32)
    scaled = ops.multiply(
        ops.constant(np.full((1, 4), 0.1, np.float32)),  # the scale on the left: its shape picks the data
        ops.subtract(
            ops.convert(ops.constant(stored), "f32"),
            ops.convert(ops.constant(np.full((1, 4), 3, np.uint8)), "f32"),
        ),
    )
    weight = ops.transpose(scaled, ops.constant(np.array([1, 0], np.int64)))  # [4, 6]: [out, in]
    path = _ir(tmp_path, [ops.matmul(x, weight, False, True)], [x])
    [w] = read_weights(path)
    assert (w.op, w.dtype, w.groups) == ("MatMul", "uint8", 1)
    assert np.array_equal(w.values, stored.T[:, :, None, None])  # stored integers, zero point not applied


@pytest.mark.parametrize("transpose_a", [False, True])
def test_openvino_matmul_with_the_constant_first(tmp_path, transpose_a):
    ops = pytest.importorskip("openvino.opset13")
    a = np.arange(12, dtype=np.float32).reshape(3, 4)  # y = A @ x: A is [out=3, in=4]
    x = ops.parameter([4, 2], np.float32)
    product = ops.matmul(ops.constant(a.T.copy() if transpose_a else a), x, transpose_a, False)
    [w] = read_weights(_ir(tmp_path, [product], [x]))
    assert np.array_equal(w.values, a[:, :, None, None])


def test_openvino_group_conv_with_fake_quantize_and_conv1d(tmp_path):
    ops = pytest.importorskip("openvino.opset13")
    rng = np.random.default_rng(2)
    grouped = rng.standard_normal((2, 3, 2, 3, 3)).astype(np.float32)  # [G, O/G, I/G, kh, kw]
    grouped[:, 0] = 0
    lo, hi = ops.constant(np.float32(-4)), ops.constant(np.float32(4))
    quantized = ops.fake_quantize(ops.constant(grouped), lo, hi, lo, hi, 255)
    x = ops.parameter([1, 4, 6, 6], np.float32)
    y = ops.group_convolution(x, quantized, [1, 1], [0, 0], [0, 0], [1, 1])  # [1, 6, 4, 4]
    kernel1d = rng.standard_normal((5, 6, 3)).astype(np.float32)
    z = ops.convolution(
        ops.reshape(y, ops.constant(np.array([1, 6, 16], np.int64)), False),
        ops.constant(kernel1d),
        [1],
        [0],
        [0],
        [1],
    )
    [g, c] = read_weights(_ir(tmp_path, [z], [x]))
    assert (g.op, g.groups, g.dtype, g.values.shape) == ("GroupConvolution", 2, "float32", (6, 2, 3, 3))
    assert np.array_equal(g.values, grouped.reshape(6, 2, 3, 3))
    assert (c.op, c.groups, c.values.shape) == ("Convolution", 1, (5, 6, 1, 3))
    assert np.array_equal(c.values[:, :, 0], kernel1d)


def test_openvino_int4_constants_are_unpacked(tmp_path):
    ov = pytest.importorskip("openvino")
    ops = pytest.importorskip("openvino.opset13")
    values = np.array([[1, -2, 3, 0, 0, -8, 7, 3], [0, 0, 0, 0, -1, 1, 2, -3]], np.int8)  # [out=2, in=8]
    constant = ov.op.Constant(ov.Type.i4, ov.Shape([2, 8]), values.reshape(-1).tolist())
    x = ops.parameter([1, 8], np.float32)
    [w] = read_weights(_ir(tmp_path, [ops.matmul(x, ops.convert(constant, "f32"), False, True)], [x]))
    assert w.dtype == "int4" and w.values.dtype == np.int8
    assert np.array_equal(w.values[:, :, 0, 0], values)


def test_openvino_activation_matmul_is_left_out(tmp_path):
    ops = pytest.importorskip("openvino.opset13")
    a, b = ops.parameter([2, 3], np.float32), ops.parameter([3, 4], np.float32)
    assert read_weights(_ir(tmp_path, [ops.matmul(ops.relu(a), b, False, False)], [a, b])) == []
