""".tflite files built straight from an OpGraph (edgecompress.latency.tflite_builder), run on LiteRT's
Interpreter: fp32 against numpy references with the weights read back from the model, int8 against the fp32
build, which ops XNNPACK takes, precision boundaries, and one comparison with litert-torch's own export."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from ai_edge_litert.interpreter import Interpreter

from edgecompress.latency.graph import Node, OpGraph
from edgecompress.latency.tflite_builder import build_tflite
from edgecompress.runtimes.sessions import litert_op_inventory

pytestmark = pytest.mark.integration

N = Node.make
IMG = (1, 12, 12, 16)
SEQ = (1, 8, 16)


# ---- numpy references (NHWC); `c` maps a constant tensor's name to its (dequantized) value ----------------


def conv(x, w, b, stride=(1, 1), padding=(0, 0, 0, 0), groups=1, act=None):
    """Grouped 2-D convolution; w is [O, kh, kw, I/groups]."""
    top, bottom, left, right = padding
    x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out, kh, kw, cg = w.shape
    (sh, sw), (_, hp, wp, _) = stride, x.shape
    oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    xg = x.reshape(1, hp, wp, groups, cg).astype(np.float64)
    wg = w.reshape(groups, out // groups, kh, kw, cg)
    y = np.zeros((1, oh, ow, groups, out // groups))
    for i in range(kh):
        for j in range(kw):
            patch = xg[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]
            y += np.einsum("nhwgc,goc->nhwgo", patch, wg[:, :, i, j, :])
    y = y.reshape(1, oh, ow, out) + b
    return {None: y, "relu": np.maximum(y, 0), "relu6": np.clip(y, 0, 6)}[act]


def depthwise(x, w, b, **kw):
    """w is TFLite's [1, kh, kw, O]; output channel o reads input channel o // multiplier."""
    return conv(x, w.transpose(3, 1, 2, 0), b, groups=x.shape[-1], **kw)


def pool(x, kernel, stride, padding, reduce, fill=0.0):
    top, bottom, left, right = padding
    x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    windows = [
        x[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]
    return reduce(np.stack(windows), axis=0)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def hardswish(x):
    return x * np.clip(x + 3, 0, 6) / 6


def gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def layer_norm(x, gamma, beta, eps=1e-5):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * gamma + beta


#: id -> (input shape, nodes, reference(x, constants)).
CASES = {
    "conv3x3_relu": (
        IMG,
        [N("c", "conv2d", out_channels=24, padding=(1, 1, 1, 1), activation="relu")],
        lambda x, c: conv(x, c["c/weight"], c["c/bias"], padding=(1, 1, 1, 1), act="relu"),
    ),
    "conv_stride2_pad1": (
        IMG,
        [N("c", "conv2d", out_channels=24, stride=(2, 2), padding=(1, 1, 1, 1))],
        lambda x, c: conv(x, c["c/weight"], c["c/bias"], (2, 2), (1, 1, 1, 1)),
    ),
    "conv_stride2_same": (
        IMG,
        [N("c", "conv2d", out_channels=24, stride=(2, 2), padding=(0, 1, 0, 1), activation="relu6")],
        lambda x, c: conv(x, c["c/weight"], c["c/bias"], (2, 2), (0, 1, 0, 1), act="relu6"),
    ),
    "conv_asymmetric_pad": (
        IMG,
        [N("c", "conv2d", out_channels=8, kernel=(3, 5), padding=(0, 2, 1, 3))],
        lambda x, c: conv(x, c["c/weight"], c["c/bias"], padding=(0, 2, 1, 3)),
    ),
    "conv1x1": (
        IMG,
        [N("c", "conv2d", out_channels=32, kernel=(1, 1))],
        lambda x, c: conv(x, c["c/weight"], c["c/bias"]),
    ),
    "depthwise": (
        IMG,
        [N("c", "conv2d", out_channels=16, groups=16, padding=(1, 1, 1, 1), activation="relu6")],
        lambda x, c: depthwise(x, c["c/weight"], c["c/bias"], padding=(1, 1, 1, 1), act="relu6"),
    ),
    "depthwise_multiplier2_stride2": (
        IMG,
        [N("c", "conv2d", out_channels=32, groups=16, stride=(2, 2), padding=(1, 1, 1, 1))],
        lambda x, c: depthwise(x, c["c/weight"], c["c/bias"], stride=(2, 2), padding=(1, 1, 1, 1)),
    ),
    "grouped": (
        IMG,
        [N("c", "conv2d", out_channels=24, groups=4, padding=(1, 1, 1, 1))],
        lambda x, c: conv(x, c["c/weight"], c["c/bias"], padding=(1, 1, 1, 1), groups=4),
    ),
    "linear": ((1, 64), [N("l", "linear", out_features=48)], lambda x, c: x @ c["l/weight"].T + c["l/bias"]),
    "linear_3d_relu": (
        SEQ,
        [N("l", "linear", out_features=24, activation="relu")],
        lambda x, c: np.maximum(x @ c["l/weight"].T + c["l/bias"], 0),
    ),
    "add_const": (IMG, [N("a", "add", const_shape=(16,))], lambda x, c: x + c["a/const"]),
    "add_nodes_relu": (
        IMG,
        [N("c", "conv2d", out_channels=16, kernel=(1, 1)), N("a", "add", ("c", "input"), activation="relu")],
        lambda x, c: np.maximum(conv(x, c["c/weight"], c["c/bias"]) + x, 0),
    ),
    "sub_const": (IMG, [N("s", "sub", const_shape=(1, 1, 1, 16))], lambda x, c: x - c["s/const"]),
    "mul_broadcast": (
        IMG,
        [N("m", "mean", axes=(1, 2)), N("g", "sigmoid", "m"), N("y", "mul", ("input", "g"))],
        lambda x, c: x * sigmoid(x.mean((1, 2), keepdims=True)),
    ),
    "mul_const": (IMG, [N("m", "mul", const_shape=(1, 12, 1, 1))], lambda x, c: x * c["m/const"]),
    "relu": (IMG, [N("r", "relu")], lambda x, c: np.maximum(x, 0)),
    "relu6": (IMG, [N("r", "relu6")], lambda x, c: np.clip(x, 0, 6)),
    "clamp_minmax": (IMG, [N("r", "clamp", min=-0.5, max=2.0)], lambda x, c: np.clip(x, -0.5, 2.0)),
    "clamp_n1_1": (IMG, [N("r", "clamp", min=-1.0, max=1.0)], lambda x, c: np.clip(x, -1, 1)),
    "hardswish_native": (IMG, [N("h", "hardswish")], lambda x, c: hardswish(x)),
    "hardswish_decomposed": (IMG, [N("h", "hardswish", form="decomposed")], lambda x, c: hardswish(x)),
    "hardsigmoid": (IMG, [N("h", "hardsigmoid")], lambda x, c: np.clip(x + 3, 0, 6) / 6),
    "sigmoid": (IMG, [N("s", "sigmoid")], lambda x, c: sigmoid(x)),
    "silu": (IMG, [N("s", "silu")], lambda x, c: x * sigmoid(x)),
    "tanh": (IMG, [N("t", "tanh")], lambda x, c: np.tanh(x)),
    "gelu": (SEQ, [N("g", "gelu")], lambda x, c: gelu(x)),
    "mean_keepdims": (IMG, [N("m", "mean")], lambda x, c: x.mean((1, 2), keepdims=True)),
    "mean_flat": (IMG, [N("m", "mean", axes=(1, 2), keepdims=False)], lambda x, c: x.mean((1, 2))),
    "avg_pool": (IMG, [N("p", "avg_pool2d")], lambda x, c: pool(x, (2, 2), (2, 2), (0,) * 4, np.mean)),
    "avg_pool_padded": (  # torch counts the pads (count_include_pad): PAD + VALID, as litert-torch writes
        IMG,
        [N("p", "avg_pool2d", kernel=(3, 3), stride=(1, 1), padding=(1, 1, 1, 1))],
        lambda x, c: pool(x, (3, 3), (1, 1), (1, 1, 1, 1), np.mean),
    ),
    "max_pool": (IMG, [N("p", "max_pool2d")], lambda x, c: pool(x, (2, 2), (2, 2), (0,) * 4, np.max)),
    "max_pool_same": (
        IMG,
        [N("p", "max_pool2d", kernel=(3, 3), stride=(1, 1), padding=(1, 1, 1, 1))],
        lambda x, c: pool(x, (3, 3), (1, 1), (1, 1, 1, 1), np.max, -np.inf),
    ),
    "max_pool_stem": (  # ResNet's 3x3 stride-2 pad-1: PADV2 with -inf, then VALID
        IMG,
        [N("p", "max_pool2d", kernel=(3, 3), stride=(2, 2), padding=(1, 1, 1, 1))],
        lambda x, c: pool(x, (3, 3), (2, 2), (1, 1, 1, 1), np.max, -np.inf),
    ),
    "pad": (
        IMG,
        [N("p", "pad", padding=(1, 2, 0, 3))],
        lambda x, c: np.pad(x, ((0, 0), (1, 2), (0, 3), (0, 0))),
    ),
    "concat": (
        IMG,
        [N("c", "conv2d", out_channels=8, kernel=(1, 1)), N("k", "concat", ("c", "input"))],
        lambda x, c: np.concatenate([conv(x, c["c/weight"], c["c/bias"]), x], -1),
    ),
    "matmul_const": (SEQ, [N("m", "matmul", const_shape=(16, 24))], lambda x, c: x @ c["m/weight"].T),
    "matmul_nodes": (
        SEQ,
        [N("q", "linear", out_features=8), N("m", "matmul", ("q", "input"))],
        lambda x, c: (x @ c["q/weight"].T + c["q/bias"]) @ x,
    ),
    "matmul_batched_const": (SEQ, [N("m", "matmul", const_shape=(1, 16, 24))], lambda x, c: x @ c["m/const"]),
    "softmax": (SEQ, [N("s", "softmax")], lambda x, c: softmax(x)),
    "layer_norm": (SEQ, [N("n", "layer_norm")], lambda x, c: layer_norm(x, c["n/gamma"], c["n/beta"])),
}

#: Which kernels run each int8 op on ai-edge-litert 2.3 (x86-64, default XNNPACK delegate), as measured.
INT8_EXECUTED_BY = {
    "XNNPACK": {
        "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "SUB", "MUL", "MEAN", "LOGISTIC", "TANH",
        "PAD", "MAX_POOL_2D", "CONCATENATION", "RESHAPE",
    },  # and QUANTIZE / DEQUANTIZE / requantizing QUANTIZE: see the mixed-precision tests
    "builtin kernels": {
        "RELU", "RELU6", "RELU_N1_TO_1", "MAXIMUM", "MINIMUM", "HARD_SWISH", "GELU", "AVERAGE_POOL_2D",
        "PADV2", "BATCH_MATMUL", "SOFTMAX", "SQUARED_DIFFERENCE", "RSQRT",
    },
}  # fmt: skip


def graph(case: str, precision: str = "fp32") -> OpGraph:
    shape, nodes, _ = CASES[case]
    return OpGraph(shape, tuple(Node(n.name, n.op, n.inputs, n.attrs, precision) for n in nodes), label=case)


def run(path, x: np.ndarray) -> tuple[Interpreter, np.ndarray]:
    """The model's float output for float input x (int8 interfaces quantized / dequantized here)."""
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    if inp["dtype"] == np.int8:
        scale, zero = inp["quantization"]
        x = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    y = interpreter.get_tensor(out["index"])
    if out["dtype"] == np.int8:
        scale, zero = out["quantization"]
        y = (y.astype(np.float32) - zero) * scale
    return interpreter, y


def constants(interpreter: Interpreter) -> dict[str, np.ndarray]:
    """Every named constant of the builder ('<node>/<what>'), dequantized per tensor or per channel."""
    values = {}
    for detail in interpreter.get_tensor_details():
        try:  # activations inside the XNNPACK partition have no data
            value = interpreter.get_tensor(detail["index"]).astype(np.float64)
        except ValueError:
            continue
        q = detail["quantization_parameters"]
        if len(q["scales"]):
            shape = [1] * value.ndim
            if len(q["scales"]) > 1:
                shape[q["quantized_dimension"]] = -1
            value = (value - q["zero_points"].reshape(shape)) * q["scales"].reshape(shape)
        values[detail["name"]] = value
    return values


def inputs(shape, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("case", list(CASES))
def test_fp32_matches_numpy_and_runs_in_xnnpack(tmp_path, case):
    path = build_tflite(graph(case), tmp_path / f"{case}.tflite")
    x = inputs(CASES[case][0])
    interpreter, y = run(path, x)
    expected = CASES[case][2](x.astype(np.float64), constants(interpreter))
    assert y.dtype == np.float32 and y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    inventory = litert_op_inventory(interpreter)
    not_delegated = [(op["type"], op["executed_by"]) for op in inventory if op["executed_by"] != "XNNPACK"]
    assert not_delegated == ([("PADV2", "builtin kernels")] if case == "max_pool_stem" else [])


def test_int8_ops_delegation_is_as_measured(tmp_path):
    seen: dict[str, set[str]] = {}
    for case in CASES:
        interpreter, _ = run(
            build_tflite(graph(case, "int8"), tmp_path / f"{case}.tflite"), inputs(CASES[case][0])
        )
        for op in litert_op_inventory(interpreter):
            seen.setdefault(op["executed_by"], set()).add(op["type"])
            assert set(op["input_dtypes"]) <= {"int8"} or op["type"] == "QUANTIZE", (case, op)
    assert seen == INT8_EXECUTED_BY


@pytest.mark.parametrize("case", list(CASES))
def test_int8_is_close_to_fp32(tmp_path, case):
    x = inputs(CASES[case][0], seed=11)
    _, reference = run(build_tflite(graph(case), tmp_path / "fp32.tflite"), x)
    interpreter, y = run(build_tflite(graph(case, "int8"), tmp_path / "int8.tflite"), x)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    span = float(reference.max() - reference.min())
    assert np.abs(y - reference).max() <= 0.04 * span, case  # measured: at most 1.9% (add + relu)


def test_mixed_precision_has_one_dequantize_and_one_quantize(tmp_path):
    nodes = (
        N("c1", "conv2d", out_channels=16, padding=(1, 1, 1, 1), precision="int8"),
        N("h", "hardswish", "c1"),
        N("c2", "conv2d", "h", out_channels=16, padding=(1, 1, 1, 1), precision="int8"),
    )
    mixed = OpGraph(IMG, nodes)
    x = inputs(IMG)
    interpreter, y = run(build_tflite(mixed, tmp_path / "mixed.tflite"), x)
    inventory = litert_op_inventory(interpreter)
    assert [op["type"] for op in inventory] == ["CONV_2D", "DEQUANTIZE", "HARD_SWISH", "QUANTIZE", "CONV_2D"]
    assert [op["output_dtypes"] for op in inventory] == [
        ["int8"],
        ["float32"],
        ["float32"],
        ["int8"],
        ["int8"],
    ]
    assert all(op["executed_by"] == "XNNPACK" for op in inventory)
    fp32 = OpGraph(IMG, tuple(Node(n.name, n.op, n.inputs, n.attrs, "fp32") for n in nodes))
    _, reference = run(build_tflite(fp32, tmp_path / "fp32.tflite"), x)
    assert np.abs(y - reference).max() <= 0.04 * float(reference.max() - reference.min())


def test_fp32_input_into_int8_and_back(tmp_path):
    """fp32 graph input, int8 body, fp32 output: QUANTIZE at the entry and DEQUANTIZE at the exit; a concat
    input with a fixed scale (LOGISTIC's) is requantized to the shared one."""
    nodes = (
        N("r", "relu"),
        N("s", "sigmoid", "input", precision="int8"),
        N("k", "concat", ("s", "r"), precision="int8"),
        N("o", "relu", "k"),
    )
    interpreter, y = run(build_tflite(OpGraph(IMG, nodes), tmp_path / "m.tflite"), inputs(IMG))
    inventory = litert_op_inventory(interpreter)
    assert all(op["executed_by"] == "XNNPACK" for op in inventory)
    types = [op["type"] for op in inventory]
    assert types == [
        "RELU",
        "QUANTIZE",
        "LOGISTIC",
        "QUANTIZE",
        "QUANTIZE",
        "CONCATENATION",
        "DEQUANTIZE",
        "RELU",
    ]
    assert y.dtype == np.float32 and y.shape == (*IMG[:3], 32)
    x = inputs(IMG)
    np.testing.assert_allclose(
        y, np.maximum(np.concatenate([sigmoid(x), np.maximum(x, 0)], -1), 0), atol=0.05
    )


def test_build_is_deterministic_and_has_a_signature(tmp_path):
    """Builds in ~2 ms (measured; not asserted): no converter, no TensorFlow."""
    from ai_edge_litert.tools import flatbuffer_utils

    conv_graph = graph("conv3x3_relu")
    path = build_tflite(conv_graph, tmp_path / "a.tflite")
    assert build_tflite(conv_graph, tmp_path / "b.tflite").read_bytes() == path.read_bytes()
    assert build_tflite(conv_graph, tmp_path / "c.tflite", seed=1).read_bytes() != path.read_bytes()
    model = flatbuffer_utils.read_model(str(path))
    assert model.version == 3 and model.buffers[0].data is None
    (signature,) = model.signatureDefs
    assert [m.tensorIndex for m in signature.inputs] == list(model.subgraphs[0].inputs)
    assert [m.tensorIndex for m in signature.outputs] == list(model.subgraphs[0].outputs)
    assert list(Interpreter(model_path=str(path)).get_signature_list()) == ["serving_default"]


def test_litert_compiled_model_profiles_built_models(tmp_path):
    """The latency model's profiler (LiteRT's CompiledModel through its C API) needs the signature."""
    from edgecompress.runtimes.sessions import LiteRTOpProfiler

    for precision in ("fp32", "int8"):
        profiler = LiteRTOpProfiler(
            build_tflite(graph("conv3x3_relu", precision), tmp_path / f"{precision}.tflite")
        )
        profiler.run(np.zeros(profiler.input_bytes, np.uint8))
        tags = [e["tag"] for e in profiler.take_events()]
        assert any("Convolution" in tag for tag in tags), tags


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ((N("c", "conv2d", out_channels=10, groups=4),), "node c (conv2d): 16 input channels"),
        ((N("s", "softmax", axis=1),), "node s (softmax): TFLite's SOFTMAX works on the last axis only"),
        ((N("a", "add"),), "node a (add): takes 2 input"),
        ((N("a", "mul", const_shape=(5,)),), "node a (mul): shapes"),
        ((N("l", "linear", out_features=4, activation="gelu"),), "node l (linear): activation must be"),
        ((N("p", "max_pool2d", kernel=(13, 13)),), "node p (max_pool2d): kernel (13, 13) is larger"),
        (
            (
                N("r", "relu"),
                N("p", "pad", "r", padding=(1, 1)),
            ),
            "node p (pad)",
        ),
    ],
)
def test_unsupported_graphs_raise_value_error_naming_the_node(tmp_path, nodes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_tflite(OpGraph(IMG, nodes), tmp_path / "bad.tflite")


def test_conv_matches_litert_torch_export(tmp_path):
    """litert-torch's CONV_2D for nn.Conv2d(16, 32, 3, padding=1) + ReLU: same op, padding, fused
    activation and shapes as the builder's (its model is NCHW, so TRANSPOSE ops wrap it)."""
    torch = pytest.importorskip("torch")
    litert_torch = pytest.importorskip("litert_torch")
    from ai_edge_litert.tools import flatbuffer_utils

    module = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU()).eval()
    litert_torch.convert(module, (torch.randn(1, 16, 16, 16),)).export(str(tmp_path / "torch.tflite"))
    built = build_tflite(
        OpGraph(
            (1, 16, 16, 16), (N("c", "conv2d", out_channels=32, padding=(1, 1, 1, 1), activation="relu"),)
        ),
        tmp_path / "built.tflite",
    )

    def conv_2d(path):
        model = flatbuffer_utils.read_model(str(path))
        graph_ = model.subgraphs[0]
        (op,) = [
            op
            for op in graph_.operators
            if flatbuffer_utils.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex]) == 3
        ]
        options = op.builtinOptions
        shapes = [list(graph_.tensors[i].shape) for i in [*op.inputs, *op.outputs]]
        return options.padding, options.strideH, options.strideW, options.fusedActivationFunction, shapes

    assert conv_2d(built) == conv_2d(tmp_path / "torch.tflite")
    interpreter = Interpreter(model_path=str(tmp_path / "torch.tflite"))
    interpreter.allocate_tensors()
    assert [(op["type"], op["executed_by"]) for op in litert_op_inventory(interpreter)] == [
        ("TRANSPOSE", "XNNPACK"), ("CONV_2D", "XNNPACK"), ("TRANSPOSE", "XNNPACK"),
    ]  # fmt: skip
