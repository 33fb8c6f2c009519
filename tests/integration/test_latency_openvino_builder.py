"""`latency.openvino_builder`: OpGraphs built straight into OpenVINO IR, run on the CPU plugin.

fp32 graphs of every node op are checked against a NumPy reference (NHWC, the graph's own layout, with
the builder's constants from `node_constants`); int8 conv / depthwise / linear must run int8 kernels and
stay within quantization error of the float reference; the IR of one int8 and one fp32 layer must have
the op structure of the project's real OpenVINO export of the same torch layer.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import numpy as np
import pytest

ov = pytest.importorskip("openvino")

from edgecompress.latency.graph import NODE_OPS, Node, OpGraph  # noqa: E402
from edgecompress.latency.openvino_builder import (  # noqa: E402
    SIGNED_RANGE,
    build_model,
    build_openvino,
    int8_range,
    ir_shape,
    node_constants,
)
from edgecompress.runtimes.op_profiles import precision_of  # noqa: E402
from edgecompress.runtimes.sessions import OpenVINOSession  # noqa: E402

pytestmark = pytest.mark.integration

IMAGE = (1, 8, 8, 8)
TOKENS = (1, 6, 16)
N = Node.make


# -- NumPy reference (NHWC) -------------------------------------------------------------------------------
def _windows(x: np.ndarray, kernel, stride, padding, fill: float) -> np.ndarray:
    """[1, Ho, Wo, C, kh, kw] windows of an NHWC tensor padded (top, bottom, left, right) with `fill`."""
    top, bottom, left, right = padding
    x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
    win = np.lib.stride_tricks.sliding_window_view(x, tuple(kernel), axis=(1, 2))
    return win[:, :: stride[0], :: stride[1]]


def _conv(x: np.ndarray, node: Node, c: dict[str, np.ndarray]) -> np.ndarray:
    w, groups = c["weight"].astype(np.float64), node.attr("groups")
    win = _windows(x, node.attr("kernel"), node.attr("stride"), node.attr("padding"), 0.0)
    _, ho, wo, ch, kh, kw = win.shape
    out_ch = w.shape[0]
    win = win.reshape(1, ho, wo, groups, ch // groups, kh, kw)
    wg = w.reshape(groups, out_ch // groups, ch // groups, kh, kw)
    return np.einsum("nhwgcij,gocij->nhwgo", win, wg).reshape(1, ho, wo, out_ch) + c["bias"]


def _activate(y: np.ndarray, node: Node) -> np.ndarray:
    act = node.attr("activation") if "activation" in NODE_OPS[node.op] else "none"
    return {"none": y, "relu": np.maximum(y, 0), "relu6": np.clip(y, 0, 6)}[act]


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _reference_op(node: Node, ins: list[np.ndarray], seed: int) -> np.ndarray:
    x, op = ins[0], node.op
    c = node_constants(node, x.shape, seed=seed)
    second = ins[1] if len(ins) > 1 else c.get("const")
    if op == "conv2d":
        return _activate(_conv(x, node, c), node)
    if op == "linear":
        return _activate(x @ c["weight"].T.astype(np.float64) + c["bias"], node)
    if op in ("add", "sub", "mul"):
        return _activate({"add": np.add, "sub": np.subtract, "mul": np.multiply}[op](x, second), node)
    sigmoid = 1 / (1 + np.exp(-x))
    unary = {
        "relu": lambda: np.maximum(x, 0),
        "relu6": lambda: np.clip(x, 0, 6),
        "clamp": lambda: np.clip(x, node.attr("min"), node.attr("max")),
        "hardswish": lambda: x * np.clip(x + 3, 0, 6) / 6,
        "hardsigmoid": lambda: np.clip(x + 3, 0, 6) / 6,
        "sigmoid": lambda: sigmoid,
        "silu": lambda: x * sigmoid,
        "tanh": lambda: np.tanh(x),
        "gelu": lambda: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2))),
    }
    if op in unary:
        return unary[op]()
    if op == "mean":
        return x.mean(axis=tuple(node.attr("axes")), keepdims=node.attr("keepdims"))
    if op in ("avg_pool2d", "max_pool2d"):
        fill = 0.0 if op == "avg_pool2d" else -np.inf
        win = _windows(x, node.attr("kernel"), node.attr("stride"), node.attr("padding"), fill)
        return win.mean(axis=(4, 5)) if op == "avg_pool2d" else win.max(axis=(4, 5))
    if op == "pad":
        top, bottom, left, right = node.attr("padding")
        return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    if op == "concat":
        return np.concatenate(ins, axis=node.attr("axis"))
    if op == "matmul":
        return x @ second
    if op == "softmax":
        return _softmax(x, node.attr("axis"))
    if op == "layer_norm":
        normed = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + node.attr("eps"))
        return normed * c["gamma"] + c["beta"]
    raise AssertionError(f"no reference for {op}")


def reference(graph: OpGraph, x: np.ndarray, seed: int = 0) -> np.ndarray:
    """The graph's output on x (graph layout), in float64 with the builder's constants."""
    values = {"input": x.astype(np.float64)}
    for node in graph.nodes:
        values[node.name] = _reference_op(node, [values[name] for name in node.inputs], seed)
    return values[graph.nodes[-1].name]


# -- running the IR ---------------------------------------------------------------------------------------
def _to_ir(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if x.ndim == 4 else x


def _to_graph(y: np.ndarray) -> np.ndarray:
    return y.transpose(0, 2, 3, 1) if y.ndim == 4 else y


def _run(graph: OpGraph, tmp_path: Path, x: np.ndarray, *, perf_count: bool = False):
    xml = build_openvino(graph, tmp_path / "graph.xml", seed=0)
    session = OpenVINOSession(xml, threads=2, inference_precision="f32", perf_count=perf_count)
    assert session.input_shape == ir_shape(graph.input_shape)
    return _to_graph(session.run(_to_ir(x).astype(np.float32))), session


def _executed(session: OpenVINOSession) -> dict[str, list[tuple[str, str]]]:
    """Graph node name -> (node type, exec type) of every executed runtime node that runs one of its IR ops.

    The builder names a node's ops "<node>" or "<node>/<part>"; the plugin lists the IR ops each runtime
    node runs (fused ones too) in its originalLayersNames, though it may rename the main one (an int8
    MatMul becomes "<node>/DequantizationMultiply")."""
    rows = {r["node_name"]: r for r in session.profiling_info() if r["status"] == "EXECUTED"}
    out: dict[str, list[tuple[str, str]]] = {}
    for op in session._compiled.get_runtime_model().get_ordered_ops():
        row = rows.get(op.get_friendly_name())
        if row is not None:
            names = {
                name.split("/")[0] for name in op.get_rt_info()["originalLayersNames"].astype(str).split(",")
            }
            for name in names:
                out.setdefault(name, []).append((str(row["node_type"]), str(row["exec_type"])))
    return out


# -- fp32: every node op against NumPy --------------------------------------------------------------------
FP32_CASES: dict[str, tuple[tuple[int, ...], tuple[Node, ...]]] = {
    "conv_relu": (IMAGE, (N("c", "conv2d", out_channels=16, padding=(1, 1, 1, 1), activation="relu"),)),
    "conv_stride2_asym_pad_relu6": (
        (1, 9, 11, 8),
        (N("c", "conv2d", out_channels=12, stride=(2, 2), padding=(0, 1, 1, 0), activation="relu6"),),
    ),
    "depthwise": (IMAGE, (N("c", "conv2d", out_channels=8, groups=8, padding=(1, 1, 1, 1)),)),
    "grouped_1x5": (
        IMAGE,
        (N("c", "conv2d", out_channels=12, groups=2, kernel=(1, 5), padding=(0, 0, 2, 2)),),
    ),
    "linear_2d_relu": ((1, 32), (N("fc", "linear", out_features=10, activation="relu"),)),
    "linear_tokens": (TOKENS, (N("fc", "linear", out_features=8),)),
    "linear_on_image": (IMAGE, (N("fc", "linear", out_features=6), N("c", "conv2d", "fc", out_channels=4))),
    "add_nodes_relu": (IMAGE, (N("r", "sigmoid"), N("a", "add", ("input", "r"), activation="relu"))),
    "add_const_relu6": (IMAGE, (N("a", "add", const_shape=(1, 1, 1, 8), activation="relu6"),)),
    "sub_const_channels": (IMAGE, (N("s", "sub", const_shape=(8,)),)),
    "mul_const_spatial": (IMAGE, (N("m", "mul", const_shape=(1, 8, 8, 1)),)),
    "add_pooled_broadcast": (IMAGE, (N("p", "mean", keepdims=False), N("a", "add", ("input", "p")))),
    "relu": (IMAGE, (N("u", "relu"),)),
    "relu6": (IMAGE, (N("u", "relu6"),)),
    "clamp": (IMAGE, (N("u", "clamp", min=-1.0, max=2.0),)),
    "hardswish": (IMAGE, (N("u", "hardswish"),)),
    "hardswish_decomposed": (IMAGE, (N("u", "hardswish", form="decomposed"),)),
    "hardsigmoid": (IMAGE, (N("u", "hardsigmoid"),)),
    "sigmoid": (IMAGE, (N("u", "sigmoid"),)),
    "silu": (IMAGE, (N("u", "silu"),)),
    "tanh": (IMAGE, (N("u", "tanh"),)),
    "gelu": (IMAGE, (N("u", "gelu"),)),
    "mean_keepdims": (IMAGE, (N("m", "mean"),)),
    "mean_h_then_softmax_linear": (
        (1, 6, 7, 8),
        (
            N("m", "mean", axes=(1,), keepdims=False),
            N("s", "softmax", "m", axis=-1),
            N("fc", "linear", "s", out_features=5),
        ),
    ),
    "avg_pool": (IMAGE, (N("p", "avg_pool2d"),)),
    "avg_pool_padded": (IMAGE, (N("p", "avg_pool2d", kernel=(3, 3), stride=(1, 1), padding=(1, 1, 1, 1)),)),
    "max_pool_padded": (IMAGE, (N("p", "max_pool2d", kernel=(3, 3), stride=(2, 2), padding=(1, 1, 1, 1)),)),
    "pad": (IMAGE, (N("p", "pad", padding=(1, 2, 0, 3)),)),
    "concat_channels": (IMAGE, (N("r", "relu"), N("c", "concat", ("r", "input")))),
    "concat_height": (IMAGE, (N("r", "tanh"), N("c", "concat", ("input", "r"), axis=1))),
    "matmul_nodes": ((1, 8, 8), (N("t", "tanh"), N("m", "matmul", ("input", "t")))),
    "matmul_const": (TOKENS, (N("m", "matmul", const_shape=(16, 5)),)),
    "softmax_tokens": (TOKENS, (N("s", "softmax"),)),
    "softmax_channels": (IMAGE, (N("s", "softmax", axis=-1),)),
    "softmax_height": (IMAGE, (N("s", "softmax", axis=1),)),
    "layer_norm_tokens": (TOKENS, (N("ln", "layer_norm"),)),
    "layer_norm_image": (IMAGE, (N("ln", "layer_norm", eps=1e-3),)),
}


def test_fp32_cases_cover_every_node_op():
    covered = {node.op for _, nodes in FP32_CASES.values() for node in nodes}
    assert covered == set(NODE_OPS)


@pytest.mark.parametrize("case", list(FP32_CASES))
def test_fp32_graph_matches_numpy(case, tmp_path):
    shape, nodes = FP32_CASES[case]
    graph = OpGraph(shape, nodes, label=case)
    x = 2 * np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    out, session = _run(graph, tmp_path, x)
    assert session.execution_precision == "f32"
    expected = reference(graph, x)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(expected).max())))


def test_constants_are_reproducible_and_he_scaled():
    node = N("c", "conv2d", out_channels=64, kernel=(3, 3))
    a, b = node_constants(node, (1, 8, 8, 32), seed=3), node_constants(node, (1, 8, 8, 32), seed=3)
    np.testing.assert_array_equal(a["weight"], b["weight"])
    assert not np.array_equal(a["weight"], node_constants(node, (1, 8, 8, 32), seed=4)["weight"])
    assert a["weight"].std() == pytest.approx(math.sqrt(2 / (32 * 9)), rel=0.05)


@pytest.mark.parametrize(
    ("nodes", "shape", "message"),
    [
        ((N("bad", "conv2d", out_channels=6, groups=4),), IMAGE, "node bad: groups=4"),
        ((N("bad", "conv2d", out_channels=6),), TOKENS, "node bad: conv2d needs a 4-D"),
        ((N("bad", "add", const_shape=(8,), activation="gelu"),), IMAGE, "node bad: activation"),
        ((N("bad", "matmul", const_shape=(5, 3)),), TOKENS, "node bad (matmul)"),
        ((N("bad", "add"),), IMAGE, "node bad: add takes 2 input"),
    ],
)
def test_unsupported_nodes_raise_value_error_naming_the_node(nodes, shape, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_model(OpGraph(shape, nodes))


# -- int8 ---------------------------------------------------------------------------------------------------
INT8_CASES = {
    "conv": (
        IMAGE,
        N("c", "conv2d", out_channels=16, padding=(1, 1, 1, 1), activation="relu", precision="int8"),
    ),
    "depthwise": (IMAGE, N("c", "conv2d", out_channels=8, groups=8, padding=(1, 1, 1, 1), precision="int8")),
    "linear": ((1, 64), N("c", "linear", out_features=32, precision="int8")),
}


@pytest.mark.parametrize("case", list(INT8_CASES))
def test_int8_layer_runs_int8_kernel_within_quantization_error(case, tmp_path):
    shape, node = INT8_CASES[case]
    graph = OpGraph(shape, (node,), label=case)
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    out, session = _run(graph, tmp_path, x, perf_count=True)
    executed = _executed(session)[node.name]
    assert any(precision_of(exec_type) == "int8" for _, exec_type in executed), executed
    low, high = int8_range(*(SIGNED_RANGE if node.attr("activation") == "none" else (0.0, SIGNED_RANGE[1])))
    expected = np.clip(reference(graph, x), low, high)  # the output FakeQuantize's range
    error = np.abs(out - expected)
    assert error.mean() < 0.02 and error.max() < 0.1, (error.mean(), error.max())


def test_int8_layer_writes_int8_into_the_edge_reader(tmp_path):
    """A one-layer int8 model ends in a reader named output/..., so the conv writes int8 as inside a
    model (a float Result made it write f32: 4x the bytes), and measure.py leaves the reader out."""
    graph = OpGraph(IMAGE, (N("c1", "conv2d", out_channels=16, activation="relu", precision="int8"),))
    compiled = ov.Core().compile_model(
        str(build_openvino(graph, tmp_path / "g.xml")), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    precisions = {
        op.get_friendly_name(): op.get_rt_info()["outputPrecisions"].astype(str)
        for op in compiled.get_runtime_model().get_ordered_ops()
    }
    assert precisions["c1"] in ("u8", "i8"), precisions
    assert any(name.startswith("output/int8_reader") for name in precisions), precisions


@pytest.mark.parametrize("form", ["native", "decomposed"])
def test_mixed_graph_runs_hardswish_in_float_between_int8_convs(form, tmp_path):
    graph = OpGraph(
        IMAGE,
        (
            N("c1", "conv2d", out_channels=16, padding=(1, 1, 1, 1), precision="int8"),
            N("hs", "hardswish", "c1", form=form),
            N("c2", "conv2d", "hs", out_channels=8, padding=(1, 1, 1, 1), precision="int8"),
        ),
    )
    x = np.random.default_rng(3).standard_normal(IMAGE).astype(np.float32)
    out, session = _run(graph, tmp_path, x, perf_count=True)
    executed = _executed(session)
    for conv in ("c1", "c2"):
        assert any(precision_of(exec_type) == "int8" for _, exec_type in executed[conv]), executed[conv]
    # The plugin either runs the hardswish as a node of its own in f32, or fuses it (with the FakeQuantizes
    # around it) into c1 as a oneDNN eltwise post-op, computed in f32 on the dequantized accumulator.
    for host in executed["hs"]:
        assert host in executed["c1"] or precision_of(host[1]) == "f32", executed
    expected = np.clip(reference(graph, x), *int8_range(*SIGNED_RANGE))
    assert np.abs(out - expected).mean() < 0.05


# -- the same layer from the real exporter ----------------------------------------------------------------
def _signature(model) -> list[tuple[str, str, tuple[str, ...]]]:
    """(op type, output element type, producer op types) of every op, in topological order."""
    return [
        (
            op.get_type_name(),
            op.get_output_element_type(0).get_type_name(),
            tuple(i.get_source_output().get_node().get_type_name() for i in op.inputs()),
        )
        for op in model.get_ordered_ops()
    ]


@pytest.fixture(scope="module")
def exported_conv_relu(tmp_path_factory):
    """The project's fp32 and int8 (PTQ) OpenVINO exports of Conv2d(1, 8, 3, padding=1) + ReLU + mean."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("litert_torch")
    from edgecompress.console import UI
    from edgecompress.context import RunContext
    from edgecompress.data import load_data
    from edgecompress.recipe import parse_recipe
    from edgecompress.registry import EXPORTERS, FRAMEWORKS, STAGES

    recipe = parse_recipe(
        "name: conv-relu\nmodel: {source: x.py:f, input_shape: [1, 1, 16, 16]}\n"
        "data: {dataset: digits, image_size: [16, 16], normalize: {mean: [0.5], std: [0.5]}}\n"
        "stages:\n  - {type: quantize, mode: ptq, calibration_samples: 32}\n"
        "export: [{format: openvino, precision: fp32}, {format: openvino, precision: int8}]\n"
    )
    out = tmp_path_factory.mktemp("exported")
    data = load_data(recipe.data, Path("r.yaml"), seed=0)
    ctx = RunContext(
        recipe=recipe,
        recipe_path=Path("r.yaml"),
        workdir=out,
        adapter=FRAMEWORKS.get("torch")(),
        data=data,
        ui=UI(0),
    )

    class ConvReLU(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.conv(x)).mean((2, 3))

    torch.manual_seed(0)
    model = ConvReLU().eval()
    ctx.teacher, ctx.current_stage = model, 0
    paths = {"fp32": EXPORTERS.get("openvino")().export(model, recipe.export[0], ctx, out).path}
    quantized = STAGES.get("quantize")(recipe.stages[0]).apply(model, ctx)
    paths["int8"] = EXPORTERS.get("openvino")().export(quantized, recipe.export[1], ctx, out).path
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_ir_structure_matches_the_real_export(exported_conv_relu, precision, tmp_path):
    graph = OpGraph(
        (1, 16, 16, 1),
        (
            N("conv", "conv2d", out_channels=8, padding=(1, 1, 1, 1), activation="relu", precision=precision),
            N("mean", "mean", "conv", keepdims=False, precision=precision),
        ),
    )
    core = ov.Core()
    real = core.read_model(str(exported_conv_relu[precision]))
    built = core.read_model(str(build_openvino(graph, tmp_path / "built.xml")))
    assert _signature(built) == _signature(real)
    types = [op.get_type_name() for op in built.get_ordered_ops() if op.get_type_name() != "Constant"]
    if precision == "int8":
        assert types == [
            "Parameter", "FakeQuantize", "Convert", "Multiply", "Convolution", "Add", "FakeQuantize",
            "ReduceMean", "FakeQuantize", "Result",
        ]  # fmt: skip
    else:
        assert types == ["Parameter", "Convolution", "Add", "Relu", "ReduceMean", "Result"]


def test_build_is_fast(tmp_path, record_property):
    """Times building (and writing) a 3x3 64->64 conv at 56x56; no assertion on the time."""
    timings = {}
    for precision in ("fp32", "int8"):
        node = N("c", "conv2d", out_channels=64, padding=(1, 1, 1, 1), activation="relu", precision=precision)
        graph = OpGraph((1, 56, 56, 64), (node,))
        build_openvino(graph, tmp_path / "warm.xml")
        start = time.perf_counter()
        for i in range(5):
            build_openvino(graph, tmp_path / f"{precision}{i}.xml", seed=i)
        timings[precision] = (time.perf_counter() - start) / 5 * 1000
        record_property(f"build_ms_{precision}", round(timings[precision], 2))
    print(f"build_openvino, 3x3 conv 64->64 @56x56: {timings} ms")
