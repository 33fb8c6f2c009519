"""Build a small `.tflite` flatbuffer straight from an `OpGraph`: no torch, no TensorFlow, no converter.

`build_tflite(graph, path, seed=...)` writes the graph with the TFLite schema's object API
(`ai_edge_litert.schema_py_generated`) in about a millisecond (fp32; int8 adds a calibration run), where
litert-torch needs ~0.7 s per model: the latency model times hundreds of single-layer artifacts per sweep.

The lowering mirrors what litert-torch 0.10 writes for the same torch op (compared with its exports):
NHWC, batch 1; conv2d -> CONV_2D (weights [O, kh, kw, I/groups], grouped convs too) or DEPTHWISE_CONV_2D
(groups == in channels, weights [1, kh, kw, O], depth_multiplier), bias always present, relu/relu6 fused.
Padding: Padding.VALID when zero, Padding.SAME when it is SAME's for the stride, else a PAD op in front
(a stride-2 3x3 conv with padding 1 on an even input is PAD + VALID CONV_2D, as the converter writes it);
max pools pad with a PADV2 of -inf, and avg pools never use SAME (torch counts the pads, SAME does not), as
litert-torch does. linear -> FULLY_CONNECTED (keep_num_dims for 3-D+ inputs); hardsigmoid -> ADD(x, 3)
with fused RELU6, MUL by 1/6; hardswish decomposed -> that times x; silu -> LOGISTIC, MUL; clamp -> RELU /
RELU6 / RELU_N1_TO_1 or MAXIMUM + MINIMUM; matmul -> BATCH_MATMUL, or FULLY_CONNECTED without bias for a
constant 2-D right operand; layer_norm -> MEAN, RESHAPE, SQUARED_DIFFERENCE, MEAN, ADD eps, RSQRT, MUL,
SUB, RESHAPE, MUL, RESHAPE, ADD, MUL gamma, ADD beta (litert-torch's decomposition).

int8 nodes: activations int8 per tensor (asymmetric), weights int8 symmetric per output channel, bias int32
at input_scale * weight_scale[c]. Scales come from a float pass: the graph is built all-fp32 with every
activation exposed as an output and run on 4 to 32 seeded standard-normal inputs on LiteRT's Interpreter;
each tensor's min/max, widened by 10% of the span away from 0, gives its scale (int8 outputs land within
2% of the output range of the fp32 build's). LOGISTIC / TANH / SOFTMAX outputs take the scales their int8
kernels require (1/256 zp -128, 1/128 zp 0, 1/256 zp -128; others are refused at allocate_tensors); PAD,
PADV2, pools, RELU / RELU6 / clamp and RESHAPE keep their input's; a CONCATENATION's inputs and output
share one range (PT2E's shared spec), with a requantizing QUANTIZE for an input whose scale could not
follow (a LOGISTIC's). QUANTIZE / DEQUANTIZE sit at every precision boundary; the graph input and output
are in the precision of the first and last node. Operator versions follow the converter's where observed
(int8 CONV_2D 3, grouped CONV_2D 6, ...); ai-edge-litert 2.3 ignores them (measured: the same kernels and
delegation with every version set to 1).

Who runs what, measured on ai-edge-litert 2.3.0 (x86-64, default XNNPACK delegate; see the tests):
- fp32: XNNPACK takes every op emitted here (BATCH_MATMUL and the layer_norm ops included) except PADV2
  (a max pool's -inf padding), which runs on TFLite's builtin kernels, in litert-torch's exports too.
- int8, XNNPACK: CONV_2D (grouped too), DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, SUB, MUL, MEAN, LOGISTIC,
  TANH, PAD, MAX_POOL_2D, CONCATENATION, RESHAPE, QUANTIZE (requantizing too), DEQUANTIZE.
- int8, builtin kernels: RELU, RELU6, RELU_N1_TO_1 (standalone; fused ones are free), HARD_SWISH, GELU,
  AVERAGE_POOL_2D, SOFTMAX, BATCH_MATMUL, MAXIMUM, MINIMUM, PADV2, SQUARED_DIFFERENCE, RSQRT. So an int8
  hardswish, GELU, softmax or attention matmul leaves XNNPACK (a partition boundary) where the fp32 one
  does not; litert-torch's PT2E int8 exports keep hardswish, GELU and softmax in fp32 (DEQUANTIZE in front).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.latency.graph import NODE_OPS, Node, OpGraph, same_padding

Quant = tuple[float, int]

_FUSED = {"none": 0, "relu": 1, "relu6": 3}  # ActivationFunctionType NONE, RELU, RELU6
_SAME, _VALID = 0, 1  # Padding
_TYPES = {"float32": 0, "int32": 2, "int8": 9}  # TensorType
#: Output quantization that TFLite's int8 kernels of these ops require.
_FIXED_OUTPUT: dict[str, Quant] = {"LOGISTIC": (1 / 256, -128), "TANH": (1 / 128, 0),
                                   "SOFTMAX": (1 / 256, -128)}  # fmt: skip
#: Node ops that are one element-wise TFLite op: (op, whether an int8 output keeps the input's scale).
_SIMPLE = {"relu": ("RELU", True), "relu6": ("RELU6", True), "sigmoid": ("LOGISTIC", False),
           "tanh": ("TANH", False), "gelu": ("GELU", False)}  # fmt: skip
#: Versions of int8 ops where not 2 (the converter's; keep_num_dims FULLY_CONNECTED is 5, grouped CONV_2D 6).
_INT8_VERSIONS = {
    "CONV_2D": 3,
    "DEPTHWISE_CONV_2D": 3,
    "FULLY_CONNECTED": 4,
    "HARD_SWISH": 1,
    "RELU_N1_TO_1": 1,
}


def build_tflite(graph: OpGraph, path: Path, *, seed: int = 0) -> Path:
    """Write graph as a .tflite at path; return path. ValueError naming the node for anything unsupported.

    Weights, constants and the calibration input of int8 graphs are drawn from numpy's default_rng seeded
    with `seed`: the same graph and seed give the same bytes.
    """
    from ai_edge_litert.tools import flatbuffer_utils

    path = Path(path)
    int8 = "int8" in (graph.input_precision, graph.output_precision, *(n.precision for n in graph.nodes))
    ranges = _calibrate(graph, seed) if int8 else None
    model = _Builder(graph, seed, ranges).model()
    path.write_bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    return path


def sample_inputs(graph: OpGraph, seed: int = 0) -> list[np.ndarray]:
    """The float32 standard-normal inputs the int8 scales are calibrated on: 4 to 32 of them, more for
    smaller inputs (the extremes of a small tensor need more samples)."""
    rng = np.random.default_rng((seed, 0))
    count = int(np.clip(2**16 // math.prod(graph.input_shape), 4, 32))
    return [rng.standard_normal(graph.input_shape).astype(np.float32) for _ in range(count)]


def _calibrate(graph: OpGraph, seed: int) -> dict[str, tuple[float, float]]:
    """Range of every activation (by tensor name) of the all-fp32 build of graph, run on sample_inputs."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.tools import flatbuffer_utils

    model = _Builder(graph, seed, None).model(expose_all=True)
    interpreter = Interpreter(model_content=bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    interpreter.allocate_tensors()
    seen: dict[str, list[float]] = {}
    for x in sample_inputs(graph, seed):
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        values = [("input", x)] + [
            (d["name"], interpreter.get_tensor(d["index"])) for d in interpreter.get_output_details()
        ]
        for name, value in values:
            finite = value if np.isfinite(value).all() else value[np.isfinite(value)]  # PADV2 pads -inf
            lo, hi = seen.setdefault(name, [math.inf, -math.inf])
            seen[name] = [min(lo, float(finite.min(initial=0))), max(hi, float(finite.max(initial=0)))]
    return {name: _widen(lo, hi) for name, (lo, hi) in seen.items()}


def _widen(lo: float, hi: float, margin: float = 0.1) -> tuple[float, float]:
    """[lo, hi] widened away from 0 by `margin` of its span, as the extremes of a few samples under-cover
    other inputs' (they would clip); a bound at 0 (after a ReLU) stays."""
    span = margin * (hi - lo)
    return (lo - span if lo < 0 else lo), (hi + span if hi > 0 else hi)


def _affine(lo: float, hi: float) -> Quant:
    """int8 (scale, zero point) covering [lo, hi] and 0."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0
    if not (math.isfinite(scale) and scale > 0):  # an all-zero (or overflowed) tensor
        return 1 / 255, -128
    return scale, int(np.clip(round(-128 - lo / scale), -128, 127))


def _quantize(value: np.ndarray, quant: Quant) -> np.ndarray:
    return np.clip(np.round(value / quant[0]) + quant[1], -128, 127).astype(np.int8)


def _shared_concat_ranges(
    graph: OpGraph, ranges: dict[str, tuple[float, float]]
) -> dict[str, tuple[float, float]]:
    """One range for each int8 concat's inputs and output (their union), as a shared quantization spec."""
    ranges = dict(ranges)
    for node in graph.nodes:
        if node.op == "concat" and node.precision == "int8":
            names = [*node.inputs, node.name]
            union = (min(ranges[n][0] for n in names), max(ranges[n][1] for n in names))
            ranges.update(dict.fromkeys(names, union))
    return ranges


class _Builder:
    """Lowers one OpGraph to a schema ModelT; `ranges` None builds every node in fp32 (calibration pass)."""

    def __init__(self, graph: OpGraph, seed: int, ranges: dict[str, tuple[float, float]] | None) -> None:
        from ai_edge_litert import schema_py_generated as fb

        self.fb, self.graph, self.seed = fb, graph, seed
        self.ranges = None if ranges is None else _shared_concat_ranges(graph, ranges)
        self.tensors: list[Any] = []
        self.buffers: list[Any] = [fb.BufferT()]  # buffer 0: the schema's empty sentinel
        self.operators: list[Any] = []
        self.opcodes: dict[tuple[int, int], int] = {}
        self.quant: dict[int, Quant] = {}  # int8 activation tensor -> (scale, zero point)
        self.values: dict[tuple[str, bool], int] = {}  # (node name, int8?) -> tensor
        self.node: Node | None = None
        self.rng = np.random.default_rng(seed)

    # ---- model -------------------------------------------------------------------------------------------

    def model(self, expose_all: bool = False) -> Any:
        """The ModelT; expose_all makes every activation a subgraph output (for calibration)."""
        fb, graph = self.fb, self.graph
        first, last = graph.nodes[0], graph.nodes[-1]
        int8_io = self.ranges is not None
        in_int8 = int8_io and (graph.input_precision or first.precision) == "int8"
        out_int8 = int8_io and (graph.output_precision or last.precision) == "int8"
        x = self.act("input", graph.input_shape, in_int8)
        self.values[("input", in_int8)] = x
        for index, node in enumerate(graph.nodes):
            self.node, self.rng = node, np.random.default_rng((self.seed, index + 1))
            int8 = self.is_int8(node)
            self.check_inputs(node)
            self.values[(node.name, int8)] = self.lower(node, int8)
        y = self.read(last.name, out_int8)
        subgraph = fb.SubGraphT()
        subgraph.tensors, subgraph.operators, subgraph.name = self.tensors, self.operators, "main"
        subgraph.inputs, subgraph.outputs = [x], [y]
        if expose_all:
            subgraph.outputs = [i for i, t in enumerate(self.tensors) if t.buffer == 0 and i != x]
        signature = fb.SignatureDefT()
        signature.signatureKey, signature.subgraphIndex = "serving_default", 0
        signature.inputs = [fb.TensorMapT(name="input", tensorIndex=x)]
        signature.outputs = [fb.TensorMapT(name="output", tensorIndex=y)]
        model = fb.ModelT()
        model.version, model.description = 3, f"edgecompress tflite_builder: {graph.label or graph.key()}"
        model.subgraphs, model.buffers, model.signatureDefs = [subgraph], self.buffers, [signature]
        model.operatorCodes = [None] * len(self.opcodes)
        for (code, version), index in self.opcodes.items():
            model.operatorCodes[index] = fb.OperatorCodeT(
                deprecatedBuiltinCode=min(code, 127), builtinCode=code, version=version
            )
        return model

    def is_int8(self, node: Node) -> bool:
        return self.ranges is not None and node.precision == "int8"

    def check_inputs(self, node: Node) -> None:
        """One input, two for binary ops without const_shape, one or more for concat."""
        binary = "const_shape" in NODE_OPS[node.op] and node.attr("const_shape") is None
        expected = 2 if binary else 1
        if len(node.inputs) != expected and not (node.op == "concat" and node.inputs):
            self.fail(f"takes {expected} input(s), got {len(node.inputs)}")

    def fail(self, message: str) -> None:
        node = self.node
        raise ValueError(f"node {node.name} ({node.op}): {message}" if node else message)

    # ---- tensors and operators ---------------------------------------------------------------------------

    def tensor(self, name: str, shape, dtype: str, quant=None, data: np.ndarray | None = None) -> int:
        """A tensor; `quant` is (scales, zero points, quantized dimension); `data` makes it a constant."""
        t = self.fb.TensorT()
        t.name, t.shape, t.type, t.buffer = name, np.asarray(shape, np.int32).reshape(-1), _TYPES[dtype], 0
        if data is not None:
            buffer = _aligned_buffer_type()()
            buffer.data = np.frombuffer(np.ascontiguousarray(data, dtype=dtype).tobytes(), np.uint8)
            self.buffers.append(buffer)
            t.buffer = len(self.buffers) - 1
        if quant is not None:
            q = self.fb.QuantizationParametersT()
            q.scale = [float(s) for s in np.atleast_1d(quant[0])]
            q.zeroPoint = [int(z) for z in np.atleast_1d(quant[1])]
            q.quantizedDimension = quant[2]
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def act(self, name: str, shape, int8: bool, quant: Quant | None = None) -> int:
        """A new activation tensor; an int8 one takes `quant`, else the calibrated range of `name`."""
        if not int8:
            return self.tensor(name, shape, "float32")
        quant = quant or _affine(*self.ranges[name])
        index = self.tensor(name, shape, "int8", ([quant[0]], [quant[1]], 0))
        self.quant[index] = quant
        return index

    def const(self, name: str, value, int8: bool = False, quant: Quant | None = None) -> int:
        """A float constant; int8 quantizes it per tensor (on `quant`, else on its own range)."""
        value = np.asarray(value, np.float32)
        if not int8:
            return self.tensor(name, value.shape, "float32", data=value)
        quant = quant or _affine(float(value.min()), float(value.max()))
        return self.tensor(name, value.shape, "int8", ([quant[0]], [quant[1]], 0), _quantize(value, quant))

    def ints(self, name: str, value) -> int:
        value = np.asarray(value, np.int32)
        return self.tensor(name, value.shape, "int32", data=value)

    def weights(self, name: str, w: np.ndarray, int8: bool, axis: int = 0) -> tuple[int, np.ndarray | None]:
        """Weights, int8 symmetric per channel along `axis` when int8; returns (tensor, scales or None)."""
        if not int8:
            return self.tensor(name, w.shape, "float32", data=w), None
        other = tuple(a for a in range(w.ndim) if a != axis)
        scale = np.maximum(np.abs(w).max(axis=other), 1e-8) / 127
        shaped = scale.reshape([-1 if a == axis else 1 for a in range(w.ndim)])
        q = np.clip(np.round(w / shaped), -127, 127).astype(np.int8)
        return self.tensor(name, w.shape, "int8", (scale, np.zeros(scale.size, np.int64), axis), q), scale

    def bias(self, name: str, b: np.ndarray, x: int, w_scale: np.ndarray | None) -> int:
        """Bias: float32, or int32 at input_scale * weight_scale[c] with zero point 0."""
        if w_scale is None:
            return self.tensor(name, b.shape, "float32", data=b)
        scale = self.quant[x][0] * w_scale
        q = np.round(b / scale).astype(np.int32)
        return self.tensor(name, b.shape, "int32", (scale, np.zeros(scale.size, np.int64), 0), q)

    def op(
        self, name: str, inputs: list[int], outputs: list[int], options=None, int8=False, version=None
    ) -> int:
        """Append a builtin operator; returns its (first) output."""
        code = getattr(self.fb.BuiltinOperator, name)
        if version is None:
            version = _INT8_VERSIONS.get(name, 2) if int8 else 1
        op = self.fb.OperatorT()
        op.opcodeIndex = self.opcodes.setdefault((code, version), len(self.opcodes))
        op.inputs, op.outputs = list(inputs), list(outputs)
        if options is not None:
            op.builtinOptionsType = getattr(self.fb.BuiltinOptions, type(options).__name__[:-1])
            op.builtinOptions = options
        self.operators.append(op)
        return outputs[0]

    def options(self, kind: str, **fields: Any) -> Any:
        return getattr(self.fb, f"{kind}OptionsT")(**fields)

    def shape(self, index: int) -> tuple[int, ...]:
        return tuple(int(d) for d in self.tensors[index].shape)

    def read(self, name: str, int8: bool) -> int:
        """Node `name`'s output in the given precision, converting it (once) at a precision boundary."""
        if (name, int8) not in self.values:
            source = self.values[(name, not int8)]
            shape = self.shape(source)
            if int8:
                out = self.act(f"{name}/quantize", shape, True, _affine(*self.ranges[name]))
                self.values[(name, int8)] = self.op("QUANTIZE", [source], [out])
            else:
                out = self.act(f"{name}/dequantize", shape, False)
                self.values[(name, int8)] = self.op("DEQUANTIZE", [source], [out], int8=True)
        return self.values[(name, int8)]

    def unary(
        self, code: str, x: int, name: str, int8: bool, keep_scale: bool = False, options: Any = None
    ) -> int:
        """An element-wise op; int8 output keeps x's scale, takes the kernel's fixed one, or calibrates."""
        quant = (self.quant[x] if keep_scale else _FIXED_OUTPUT.get(code)) if int8 else None
        return self.op(code, [x], [self.act(name, self.shape(x), int8, quant)], options, int8)

    def binary(self, code: str, a: int, b: int, name: str, int8: bool, fused: int = 0) -> int:
        """ADD / SUB / MUL / SQUARED_DIFFERENCE with broadcasting."""
        try:
            shape = np.broadcast_shapes(self.shape(a), self.shape(b))
        except ValueError:
            self.fail(f"shapes {self.shape(a)} and {self.shape(b)} do not broadcast")
        kind = {"ADD": "Add", "SUB": "Sub", "MUL": "Mul"}.get(code)
        options = self.options(kind, fusedActivationFunction=fused) if kind else None
        return self.op(code, [a, b], [self.act(name, shape, int8)], options, int8)

    def scalar_op(self, code: str, x: int, value: float, name: str, int8: bool, fused: int = 0) -> int:
        """x (op) a scalar constant, e.g. ADD(x, 3) with a fused RELU6."""
        return self.binary(code, x, self.const(f"{name}/const", value, int8), name, int8, fused)

    def spatial(
        self, node: Node, x: int, same: bool = True, fill: float = 0.0
    ) -> tuple[int, int, tuple[int, int]]:
        """Padding of a conv / pool: (input, padded by an op when needed; Padding mode; output (h, w)).

        Padding.SAME when the padding is SAME's (and `same`: SAME averages ignore the pads, torch's count
        them), else a PAD (zeros) or, for a `fill`, a PADV2 (max pools pad -inf), as litert-torch does."""
        shape = self.shape(x)
        if len(shape) != 4:
            self.fail(f"needs an NHWC input, got shape {shape}")
        (kh, kw), (sh, sw) = node.attr("kernel"), node.attr("stride")
        padding = tuple(int(p) for p in node.attr("padding"))
        if len(padding) != 4 or min(padding) < 0 or min(kh, kw, sh, sw) < 1:
            self.fail(f"bad kernel {node.attr('kernel')}, stride {node.attr('stride')} or padding {padding}")
        _, h, w, _ = shape
        if same and padding != (0, 0, 0, 0) and padding == same_padding(h, kh, sh) + same_padding(w, kw, sw):
            return x, _SAME, (math.ceil(h / sh), math.ceil(w / sw))
        if padding != (0, 0, 0, 0):
            x = self.pad(f"{node.name}/pad", x, padding, self.is_int8(node), fill)
            h, w = h + padding[0] + padding[1], w + padding[2] + padding[3]
        if h < kh or w < kw:
            self.fail(f"kernel {(kh, kw)} is larger than the padded input {(h, w)}")
        return x, _VALID, ((h - kh) // sh + 1, (w - kw) // sw + 1)

    def pad(self, name: str, x: int, padding, int8: bool, fill: float = 0.0) -> int:
        """PAD with zeros, or PADV2 with `fill` (int8: quantized on x's scale, -inf -> -128)."""
        top, bottom, left, right = padding
        n, h, w, c = self.shape(x)
        inputs = [x, self.ints(f"{name}/paddings", [[0, 0], [top, bottom], [left, right], [0, 0]])]
        if fill:
            inputs.append(self.const(f"{name}/value", fill, int8, self.quant.get(x)))
        y = self.act(name, (n, h + top + bottom, w + left + right, c), int8, self.quant.get(x))
        return self.op("PADV2" if fill else "PAD", inputs, [y], None, int8)

    def fused(self, node: Node) -> int:
        activation = node.attr("activation") if "activation" in NODE_OPS[node.op] else "none"
        if activation not in _FUSED:
            self.fail(f"activation must be one of {', '.join(_FUSED)}, not {activation!r}")
        return _FUSED[activation]

    # ---- node ops ----------------------------------------------------------------------------------------

    def lower(self, node: Node, int8: bool) -> int:
        """Emit node's ops; returns its output tensor (int8 or float32 as `int8` says)."""
        if node.op in ("add", "sub", "mul"):
            return self._elementwise(node, int8, node.op.upper())
        if node.op in ("avg_pool2d", "max_pool2d"):
            return self._pool(node, int8, "AVERAGE_POOL_2D" if node.op == "avg_pool2d" else "MAX_POOL_2D")
        if node.op in _SIMPLE:
            code, keep_scale = _SIMPLE[node.op]
            options = self.options("Gelu", approximate=False) if code == "GELU" else None
            return self.unary(code, self.read(node.inputs[0], int8), node.name, int8, keep_scale, options)
        return getattr(self, f"_{node.op}")(node, int8)

    def _conv2d(self, node: Node, int8: bool) -> int:
        x = self.read(node.inputs[0], int8)
        c = self.shape(x)[-1]
        out, groups = node.attr("out_channels"), int(node.attr("groups"))
        if not out or groups < 1 or c % groups or out % groups:
            self.fail(f"{c} input channels, out_channels {out} and groups {groups} do not fit")
        fused = self.fused(node)
        x, mode, (oh, ow) = self.spatial(node, x)
        (kh, kw), (sh, sw) = node.attr("kernel"), node.attr("stride")
        fan_in = kh * kw * c // groups
        w = self.rng.standard_normal((out, kh, kw, c // groups), np.float32) * math.sqrt(2 / fan_in)
        b = self.rng.normal(0, 0.1, out).astype(np.float32)
        depthwise = groups == c > 1
        if depthwise:  # [O, kh, kw, 1] -> [1, kh, kw, O]
            w = np.ascontiguousarray(w.transpose(3, 1, 2, 0))
        wt, w_scale = self.weights(f"{node.name}/weight", w, int8, axis=3 if depthwise else 0)
        inputs = [x, wt, self.bias(f"{node.name}/bias", b, x, w_scale)]
        y = self.act(node.name, (1, oh, ow, out), int8)
        common = {"padding": mode, "strideW": sw, "strideH": sh, "fusedActivationFunction": fused}
        if depthwise:
            options = self.options("DepthwiseConv2D", depthMultiplier=out // c, **common)
            return self.op("DEPTHWISE_CONV_2D", inputs, [y], options, int8)
        return self.op(
            "CONV_2D", inputs, [y], self.options("Conv2D", **common), int8, 6 if groups > 1 else None
        )

    def _linear(self, node: Node, int8: bool) -> int:
        x = self.read(node.inputs[0], int8)
        shape, out = self.shape(x), node.attr("out_features")
        if not out:
            self.fail("needs out_features")
        w = self.rng.standard_normal((out, shape[-1]), np.float32) * math.sqrt(2 / shape[-1])
        b = self.rng.normal(0, 0.1, out).astype(np.float32)
        return self.fully_connected(node, x, w, b, int8, self.fused(node))

    def fully_connected(
        self, node: Node, x: int, w: np.ndarray, b: np.ndarray | None, int8: bool, fused: int = 0
    ) -> int:
        shape = self.shape(x)
        wt, w_scale = self.weights(f"{node.name}/weight", w, int8)
        bt = -1 if b is None else self.bias(f"{node.name}/bias", b, x, w_scale)
        keep = len(shape) > 2
        y = self.act(node.name, (*shape[:-1], w.shape[0]) if keep else (1, w.shape[0]), int8)
        options = self.options("FullyConnected", fusedActivationFunction=fused, keepNumDims=keep)
        return self.op("FULLY_CONNECTED", [x, wt, bt], [y], options, int8, 5 if keep else None)

    def _elementwise(self, node: Node, int8: bool, code: str) -> int:
        a = self.read(node.inputs[0], int8)
        const_shape = node.attr("const_shape")
        if const_shape is None:
            b = self.read(node.inputs[1], int8)
        else:
            shape = tuple(int(d) for d in np.atleast_1d(const_shape))
            value = self.rng.uniform(0.5, 1.5, shape) if code == "MUL" else self.rng.normal(0, 1, shape)
            b = self.const(f"{node.name}/const", value, int8)
        return self.binary(code, a, b, node.name, int8, self.fused(node))

    def _clamp(self, node: Node, int8: bool) -> int:
        x = self.read(node.inputs[0], int8)
        lo, hi = node.attr("min"), node.attr("max")
        lo, hi = (None if v is None else float(v) for v in (lo, hi))
        native = {(0.0, None): "RELU", (0.0, 6.0): "RELU6", (-1.0, 1.0): "RELU_N1_TO_1"}.get((lo, hi))
        if native:
            return self.unary(native, x, node.name, int8, keep_scale=True)
        if (lo is None and hi is None) or (lo is not None and hi is not None and lo > hi):
            self.fail(f"bad bounds min={lo}, max={hi}")
        for code, bound, name in (("MAXIMUM", lo, f"{node.name}/max"), ("MINIMUM", hi, node.name)):
            if bound is not None:
                quant = self.quant.get(x)
                bound_t = self.const(f"{name}/bound", bound, int8, quant)
                x = self.op(code, [x, bound_t], [self.act(name, self.shape(x), int8, quant)], None, int8)
        return x

    def _hardswish(self, node: Node, int8: bool) -> int:
        x = self.read(node.inputs[0], int8)
        form = node.attr("form")
        if form == "native":
            return self.unary("HARD_SWISH", x, node.name, int8)
        if form != "decomposed":
            self.fail(f"form must be native or decomposed, not {form!r}")
        gate = self.hard_sigmoid(node, x, f"{node.name}/gate", int8)
        return self.binary("MUL", x, gate, node.name, int8)

    def hard_sigmoid(self, node: Node, x: int, name: str, int8: bool) -> int:
        """ADD(x, 3) with a fused RELU6, then MUL by 1/6: litert-torch's hardsigmoid."""
        shifted = self.scalar_op("ADD", x, 3.0, f"{node.name}/add3", int8, fused=_FUSED["relu6"])
        return self.scalar_op("MUL", shifted, 1 / 6, name, int8)

    def _hardsigmoid(self, node: Node, int8: bool) -> int:
        return self.hard_sigmoid(node, self.read(node.inputs[0], int8), node.name, int8)

    def _silu(self, node: Node, int8: bool) -> int:
        x = self.read(node.inputs[0], int8)
        gate = self.unary("LOGISTIC", x, f"{node.name}/sigmoid", int8)
        return self.binary("MUL", x, gate, node.name, int8)

    def mean(self, x: int, axes, keepdims: bool, name: str, int8: bool) -> int:
        shape = self.shape(x)
        axes = [int(a) for a in np.atleast_1d(axes)]
        if not axes or any(not -len(shape) <= a < len(shape) for a in axes):
            self.fail(f"bad axes {axes} for an input of shape {shape}")
        axes = sorted({a % len(shape) for a in axes})
        out = tuple(1 if i in axes else d for i, d in enumerate(shape) if keepdims or i not in axes)
        y = self.act(name, out, int8)
        inputs = [x, self.ints(f"{name}/axes", axes)]
        return self.op("MEAN", inputs, [y], self.options("Reducer", keepDims=keepdims), int8)

    def _mean(self, node: Node, int8: bool) -> int:
        x = self.read(node.inputs[0], int8)
        return self.mean(x, node.attr("axes"), bool(node.attr("keepdims")), node.name, int8)

    def _pool(self, node: Node, int8: bool, code: str) -> int:
        x = self.read(node.inputs[0], int8)
        average = code == "AVERAGE_POOL_2D"
        x, mode, (oh, ow) = self.spatial(node, x, same=not average, fill=0.0 if average else -math.inf)
        (kh, kw), (sh, sw) = node.attr("kernel"), node.attr("stride")
        y = self.act(node.name, (1, oh, ow, self.shape(x)[-1]), int8, self.quant.get(x))
        options = self.options(
            "Pool2D", padding=mode, strideW=sw, strideH=sh, filterWidth=kw, filterHeight=kh
        )
        return self.op(code, [x], [y], options, int8)

    def _pad(self, node: Node, int8: bool) -> int:
        x = self.read(node.inputs[0], int8)
        padding = tuple(int(p) for p in node.attr("padding"))
        if len(self.shape(x)) != 4 or len(padding) != 4 or min(padding) < 0:
            self.fail(f"pads (top, bottom, left, right) of an NHWC input, got {padding} for {self.shape(x)}")
        return self.pad(node.name, x, padding, int8)

    def _concat(self, node: Node, int8: bool) -> int:
        xs = [self.read(name, int8) for name in node.inputs]
        shapes = [self.shape(x) for x in xs]
        rank = len(shapes[0])
        axis = int(node.attr("axis"))
        if not -rank <= axis < rank:
            self.fail(f"axis {axis} out of range for rank {rank}")
        axis %= rank
        rest = {s[:axis] + s[axis + 1 :] for s in shapes}
        if len(rest) != 1 or any(len(s) != rank for s in shapes):
            self.fail(f"input shapes {shapes} differ off axis {axis}")
        shape = (*shapes[0][:axis], sum(s[axis] for s in shapes), *shapes[0][axis + 1 :])
        y = self.act(node.name, shape, int8)
        for k, x in enumerate(xs if int8 else ()):  # an input whose scale could not follow the shared one
            if self.quant[x] != self.quant[y]:
                requantized = self.act(f"{node.name}/requantize{k}", shapes[k], True, self.quant[y])
                xs[k] = self.op("QUANTIZE", [x], [requantized], None, int8=True)
        return self.op("CONCATENATION", xs, [y], self.options("Concatenation", axis=axis), int8)

    def _matmul(self, node: Node, int8: bool) -> int:
        a = self.read(node.inputs[0], int8)
        sa, const_shape = self.shape(a), node.attr("const_shape")
        if const_shape is not None:
            sb = tuple(int(d) for d in np.atleast_1d(const_shape))
            if len(sb) < 2 or sa[-1] != sb[-2]:
                self.fail(f"cannot multiply {sa} by a constant {sb}")
            value = self.rng.normal(0, math.sqrt(1 / sb[-2]), sb).astype(np.float32)
            if len(sb) == 2:  # x @ W: FULLY_CONNECTED on W^T, as converters write it
                return self.fully_connected(node, a, np.ascontiguousarray(value.T), None, int8)
            b = self.const(f"{node.name}/const", value, int8)
        else:
            b = self.read(node.inputs[1], int8)
        sb = self.shape(b)
        if len(sa) < 2 or len(sb) < 2 or sa[-1] != sb[-2]:
            self.fail(f"cannot multiply {sa} by {sb}")
        try:
            batch = np.broadcast_shapes(sa[:-2], sb[:-2])
        except ValueError:
            self.fail(f"batch dims of {sa} and {sb} do not broadcast")
        y = self.act(node.name, (*batch, sa[-2], sb[-1]), int8)
        return self.op("BATCH_MATMUL", [a, b], [y], self.options("BatchMatMul", adjX=False, adjY=False), int8)

    def _softmax(self, node: Node, int8: bool) -> int:
        x = self.read(node.inputs[0], int8)
        rank = len(self.shape(x))
        if int(node.attr("axis")) not in (-1, rank - 1):
            self.fail(f"TFLite's SOFTMAX works on the last axis only, not axis {node.attr('axis')}")
        return self.unary("SOFTMAX", x, node.name, int8, options=self.options("Softmax", beta=1.0))

    def _layer_norm(self, node: Node, int8: bool) -> int:
        """litert-torch's decomposition: MEAN over (0, last) and a RESHAPE back, for the mean and the
        variance; x * rstd + (0 - mean * rstd); then MUL gamma, ADD beta."""
        x = self.read(node.inputs[0], int8)
        shape, name = self.shape(x), node.name
        if len(shape) < 2:
            self.fail(f"needs a [1, ..., features] input, got {shape}")
        axes, kept = (0, len(shape) - 1), (*shape[:-1], 1)

        def reshape(t: int, tag: str) -> int:
            y = self.act(f"{name}/{tag}", kept, int8, self.quant.get(t))
            return self.op("RESHAPE", [t, self.ints(f"{name}/{tag}/shape", kept)], [y], None, int8, 1)

        mean = self.mean(x, axes, False, f"{name}/mean", int8)
        centered = self.binary("SQUARED_DIFFERENCE", x, reshape(mean, "mean_r"), f"{name}/sqdiff", int8)
        var = self.mean(centered, axes, False, f"{name}/var", int8)
        # int8: eps on var's scale (on its own it would get a scale XNNPACK's int8 ADD refuses)
        eps = self.const(f"{name}/eps", float(node.attr("eps")), int8, self.quant.get(var))
        var = self.binary("ADD", var, eps, f"{name}/var_eps", int8)
        rstd = self.op("RSQRT", [var], [self.act(f"{name}/rstd", self.shape(var), int8)], None, int8)
        shift = self.binary("MUL", rstd, mean, f"{name}/mean_rstd", int8)
        shift = self.binary("SUB", self.const(f"{name}/zero", 0.0, int8), shift, f"{name}/shift", int8)
        y = self.binary("MUL", x, reshape(rstd, "rstd_r"), f"{name}/scaled", int8)
        y = self.binary("ADD", y, reshape(shift, "shift_r"), f"{name}/normed", int8)
        gamma = self.const(f"{name}/gamma", 1 + 0.1 * self.rng.standard_normal(shape[-1]), int8)
        y = self.binary("MUL", y, gamma, f"{name}/affine", int8)
        beta = self.const(f"{name}/beta", 0.1 * self.rng.standard_normal(shape[-1]), int8)
        return self.binary("ADD", y, beta, name, int8)


@functools.cache
def _aligned_buffer_type() -> type:
    """schema BufferT whose data vector is 16-byte aligned in the file, as TFLite's own writer does."""
    from ai_edge_litert import schema_py_generated as fb

    class AlignedBufferT(fb.BufferT):
        def Pack(self, builder):
            if self.data is None:
                return super().Pack(builder)
            data = self.data.tobytes()
            builder.StartVector(1, len(data), 16)
            builder.head -= len(data)
            builder.Bytes[builder.head : builder.head + len(data)] = data
            vector = builder.EndVector()
            fb.BufferStart(builder)
            fb.BufferAddData(builder, vector)
            return fb.BufferEnd(builder)

    return AlignedBufferT
