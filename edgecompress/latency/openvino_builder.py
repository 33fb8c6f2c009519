"""Build a small OpenVINO IR straight from an `OpGraph` with OpenVINO's opset API (no torch, no converter).

    xml = build_openvino(graph, Path("layer.xml"), seed=0)   # writes layer.xml + layer.bin in milliseconds

The IR is what `ov.convert_model` makes of the same layers of a torch model (the project's OpenVINO
exporter, `exporters/torch_backend.py`), so a latency table times what a deployed model runs.

Layout. Torch models are NCHW, so the IR is too; the `OpGraph` describes NHWC shapes (the TFLite view).
A 4-D graph input becomes a Parameter [1, C, H, W]; every IR tensor remembers which graph axis each of its
axes holds (`perm`: IR axis i holds graph axis perm[i]; (0, 3, 1, 2) for NCHW, identity otherwise), and axis
attributes are mapped through it: mean axes (1, 2) -> (2, 3), concat axis -1 -> 1, softmax axis -1 on a
4-D tensor -> 1, pad (top, bottom, left, right) -> pads_begin [0, 0, top, left], pads_end [0, 0, bottom,
right], constant operands of `const_shape` (broadcast NumPy-style in NHWC) -> the same values transposed
to NCHW. conv2d and the pools take NCHW; the last-axis ops (linear, matmul, layer_norm) take their input
in graph order, so a 4-D input gets a Transpose to NHWC first, as the permute a torch model would need. A
mean without keepdims can leave a tensor in a mixed order ([1, C, W] for graph [1, W, C]); it is carried
as such. The graph output is the last node's tensor, NCHW when it is 4-D and in graph order otherwise (a
Transpose when the last op left it in another order).

Ops, as ov.convert_model writes them for the torch op (checked on torch 2.13 / openvino 2026.4):
conv2d -> Convolution (groups 1) or GroupConvolution (weights [G, O/G, I/G, kh, kw]) with explicit pads,
then Add of a [1, O, 1, 1] bias, then Relu / Clamp(0, 6); linear -> MatMul(transpose_b) + Add [1, .., O];
add/sub/mul -> Add/Subtract/Multiply; hardswish -> HSwish, or Add 3, Clamp 0..6, Multiply 1/6, Multiply x
(`decomposed`); hardsigmoid HSigmoid, silu Swish, gelu Gelu(ERF); mean ReduceMean; avg_pool2d AvgPool-14
(exclude_pad False when padded, torch's count_include_pad=True; True when not, as the converter writes
it); max_pool2d MaxPool-14; pad Pad-12 (constant 0); softmax Softmax-8; layer_norm MVN(axis -1,
INSIDE_SQRT) + Multiply [1, .., F] + Add [1, .., F]. Opset: openvino.opset16, the newest complete module of
openvino 2026.4 (opset17 only adds new ops); AvgPool and MaxPool from opset14, the versions the converter
writes.

int8 nodes reproduce what ov.convert_model makes of the project's PT2E-quantized graphs (seen on the
quantize stage's int8 export of conv/depthwise/linear models and of examples/models.py:tiny_cnn):
- every activation an int8 node reads comes through a FakeQuantize (levels 256, per tensor, constants
  [1, .., 1] of the tensor's rank, input range == output range, int8-affine: a zero point in -128..127).
  An int8 producer's output FakeQuantize serves; the graph input and fp32 producers get one boundary
  FakeQuantize each (shared by all int8 readers);
- every int8 node ends in its own output FakeQuantize; the graph output is that FakeQuantize (f32);
- conv/linear weights: Constant i8 -> Convert f32 -> Multiply by a per-output-channel f32 scale
  ([O, 1, 1, 1] / [O, 1]; symmetric, -127..127, so no Subtract), then for grouped convs a Reshape to
  [G, O/G, I/G, kh, kw]; the bias Add stays f32;
- a ReLU / ReLU6 right before an output FakeQuantize whose range starts at 0 is absent (the converter
  folds it into the FakeQuantize): conv/add with a fused activation and int8 relu/relu6 nodes end directly
  in their FakeQuantize [0, hi]. linear + activation ends in two FakeQuantizes (signed, then [0, hi]), as
  the quantizer annotates linear and relu separately;
- other int8 nodes (add, concat, mean, pools, hardswish, ...) are their float op between FakeQuantizes, as
  in the real IR; the plugin picks an int8 or f32 kernel for each. Constant operands stay f32, except
  matmul's, which goes through a FakeQuantize (an activation edge in PT2E; not checked against the real
  exporter).
Ranges are fixed, plausible ones (int8 latency does not depend on them): graph input and signed outputs
[-4, 4]; relu [0, 4]; relu6 [0, min(hi, 6)]; sigmoid/hardsigmoid/softmax [0, 1]; tanh [-1, 1]; pools,
mean, pad and concat keep their input's range.

Names: a node's main op is named after the node (the plugin may rename it when it fuses or decomposes),
its other ops "<node>/bias", "<node>/relu", "<node>/fq", ...; a boundary FakeQuantize "<producer>/fq_boundary".

Weights are deterministic: `node_constants(node, input_shape, seed=...)` (NumPy default_rng seeded by the
seed and the node's name, He-normal scale); tests rebuild them for a NumPy reference.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecompress.latency.graph import NODE_OPS, Node, OpGraph

if TYPE_CHECKING:
    import openvino as ov

#: IR axis i of a 4-D tensor holds graph (NHWC) axis NCHW[i].
NCHW = (0, 3, 1, 2)
#: Value range of the graph input and of ops with a signed, unbounded output (int8 FakeQuantize ranges).
SIGNED_RANGE = (-4.0, 4.0)
#: Output ranges of bounded ops; others get SIGNED_RANGE, or their input's (mean, pools, pad, concat).
BOUNDED_RANGES = {
    "sigmoid": (0.0, 1.0),
    "hardsigmoid": (0.0, 1.0),
    "softmax": (0.0, 1.0),
    "tanh": (-1.0, 1.0),
}
#: Lowest value of ops that are x-like above 0 (their top stays the input's).
NEGATIVE_FLOOR = {"hardswish": -0.375, "silu": -0.2785, "gelu": -0.17}
ACTIVATIONS = ("none", "relu", "relu6")
#: Ops that take two input nodes, or one and a constant of `const_shape`; concat takes any number, others one.
TWO_INPUT_OPS = ("add", "sub", "mul", "matmul")


def build_openvino(graph: OpGraph, path: Path, *, seed: int = 0) -> Path:
    """Write graph as an OpenVINO IR at path (.xml, with its .bin beside it); return the .xml path.
    ValueError naming the node for anything unsupported."""
    import openvino as ov

    model = build_model(graph, seed=seed)
    xml = Path(path).with_suffix(".xml")
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml), compress_to_fp16=False)
    return xml


def build_model(graph: OpGraph, *, seed: int = 0) -> ov.Model:
    """The `ov.Model` that `build_openvino` writes (in memory, e.g. to compile without a file)."""
    return _Builder(graph, seed).build()


def ir_shape(graph_shape: tuple[int, ...]) -> list[int]:
    """The IR shape of a graph input/output shape: NCHW for 4-D (NHWC) shapes, unchanged otherwise."""
    return [graph_shape[a] for a in NCHW] if len(graph_shape) == 4 else list(graph_shape)


def node_constants(node: Node, input_shape: tuple[int, ...], *, seed: int = 0) -> dict[str, np.ndarray]:
    """The constants the builder gives `node` whose first input has graph shape `input_shape` (NHWC), float32:

    conv2d "weight" [O, C/groups, kh, kw] (torch layout) and "bias" [O]; linear "weight" [O, F] and "bias"
    [O]; add/sub/mul/matmul with a const_shape "const" of that shape (graph layout); layer_norm "gamma"
    and "beta" [F]. Weights are He-normal (std sqrt(2 / fan_in)); the generator is seeded with the seed
    and the node's name, so a node's constants do not depend on the rest of the graph."""
    rng = np.random.default_rng([seed, zlib.crc32(node.name.encode())])
    features = int(input_shape[-1]) if input_shape else 0
    out: dict[str, np.ndarray] = {}
    if node.op == "conv2d":
        channels, groups = features, int(node.attr("groups"))
        out_channels, (kh, kw) = node.attr("out_channels"), node.attr("kernel")
        if not isinstance(out_channels, int) or out_channels < 1:
            raise ValueError(f"node {node.name}: conv2d needs out_channels (a positive int)")
        if groups < 1 or channels % groups or out_channels % groups:
            raise ValueError(
                f"node {node.name}: groups={groups} must divide in ({channels}) and out ({out_channels}) channels"
            )
        fan_in = channels // groups * kh * kw
        out["weight"] = rng.standard_normal(
            (out_channels, channels // groups, kh, kw), np.float32
        ) * math.sqrt(2 / fan_in)
        out["bias"] = 0.1 * rng.standard_normal(out_channels)
    elif node.op == "linear":
        out_features = node.attr("out_features")
        if not isinstance(out_features, int) or out_features < 1:
            raise ValueError(f"node {node.name}: linear needs out_features (a positive int)")
        out["weight"] = rng.standard_normal((out_features, features), np.float32) * math.sqrt(2 / features)
        out["bias"] = 0.1 * rng.standard_normal(out_features)
    elif node.op == "layer_norm":
        out["gamma"] = 1 + 0.1 * rng.standard_normal(features)
        out["beta"] = 0.1 * rng.standard_normal(features)
    elif node.op in TWO_INPUT_OPS and node.attr("const_shape") is not None:
        shape = tuple(int(d) for d in node.attr("const_shape"))
        if node.op == "matmul":
            if len(shape) < 2:
                raise ValueError(f"node {node.name}: matmul const_shape needs [.., K, N], got {list(shape)}")
            out["const"] = rng.standard_normal(shape, np.float32) * math.sqrt(2 / shape[-2])
        elif node.op == "mul":
            out["const"] = rng.uniform(0.5, 1.5, shape)
        else:
            out["const"] = rng.standard_normal(shape)
    return {k: v.astype(np.float32) for k, v in out.items()}


def quantize_weights(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 symmetric per-output-channel (axis 0) quantization: (int8 values in -127..127, float32 scales
    shaped [O, 1, ..] to broadcast against the weight), the quantize stage's weight scheme."""
    amax = np.abs(weight.reshape(weight.shape[0], -1)).max(axis=1)
    scale = np.where(amax > 0, amax / 127, 1.0).astype(np.float32).reshape(-1, *[1] * (weight.ndim - 1))
    return np.clip(np.round(weight / scale), -127, 127).astype(np.int8), scale


def int8_range(low: float, high: float) -> tuple[float, float]:
    """[low, high] widened to hold 0 and snapped to an int8-affine grid (scale (high - low) / 255, an integer
    zero point in -128..127), the form of the FakeQuantize ranges the converter writes for PT2E q/dq pairs."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255 or 1.0 / 255
    zero_point = int(np.clip(round(-128 - low / scale), -128, 127))
    return (-128 - zero_point) * scale, (127 - zero_point) * scale


@dataclass(frozen=True)
class _Value:
    """One IR tensor of the graph being built."""

    output: Any  # openvino Output
    perm: tuple[int, ...]  # IR axis i holds graph axis perm[i]
    range: tuple[float, float]  # plausible value range, for FakeQuantize
    quantized: bool = False  # the tensor is a FakeQuantize output

    @property
    def rank(self) -> int:
        return len(self.perm)

    def graph_shape(self) -> tuple[int, ...]:
        shape = [int(d) for d in self.output.get_shape()]
        out = [0] * self.rank
        for ir_axis, graph_axis in enumerate(self.perm):
            out[graph_axis] = shape[ir_axis]
        return tuple(out)

    def ir_axis(self, graph_axis: int, node: Node) -> int:
        if not -self.rank <= graph_axis < self.rank:
            raise ValueError(f"node {node.name}: axis {graph_axis} is out of range for rank {self.rank}")
        return self.perm.index(graph_axis % self.rank)


def _identity(rank: int) -> tuple[int, ...]:
    return tuple(range(rank))


class _Builder:
    """Lowers one OpGraph node by node; `_<op>` methods return the node's float output before any int8
    output FakeQuantize."""

    def __init__(self, graph: OpGraph, seed: int) -> None:
        import openvino.opset14 as opset14
        import openvino.opset16 as ops

        self.ops, self.opset14 = ops, opset14
        self.graph, self.seed = graph, seed
        self.values: dict[str, _Value] = {}
        self.boundaries: dict[str, _Value] = {}

    def build(self) -> ov.Model:
        import openvino as ov

        shape = tuple(int(d) for d in self.graph.input_shape)
        perm = NCHW if len(shape) == 4 else _identity(len(shape))
        param = self.ops.parameter(ir_shape(shape), np.float32, name="input")
        param.output(0).get_tensor().set_names({"input"})
        self.values["input"] = _Value(param.output(0), perm, SIGNED_RANGE)
        if self.graph.input_precision == "int8":  # an int8 producer before this graph: its FakeQuantize
            self.values["input"] = self._fake_quantize(self.values["input"], "input/fq")
        for node in self.graph.nodes:
            try:
                self.values[node.name] = self._lower(node)
            except ValueError:
                raise
            except Exception as exc:  # OpenVINO's shape inference rejecting the node
                message = str(exc).strip().splitlines()
                raise ValueError(f"node {node.name} ({node.op}): {message[0] if message else exc}") from exc
        last_value = self.values[self.graph.nodes[-1].name]
        if self.graph.output_precision == "int8" and not last_value.quantized:  # an int8 reader after it
            last_value = self._fake_quantize(last_value, "output/fq_boundary")
        if last_value.quantized and last_value.rank == 4:
            last_value = self._int8_reader(last_value)
        canonical = NCHW if last_value.rank == 4 else _identity(last_value.rank)
        last = self._relayout(last_value, canonical, "output/relayout").output
        last.get_tensor().set_names({"output"})
        result = self.ops.result(last, name="output")
        return ov.Model([result], [param], self.graph.label or "opgraph")

    def _int8_reader(self, value: _Value) -> _Value:
        """A 1x1 MaxPool reading the int8 output, named "output/...": inside a model the next layer reads
        a FakeQuantize output, so the plugin makes the producer write int8 (its output FakeQuantize fused
        in); a float Result would make it write f32, four times the bytes: a 1x1 conv 16->96 at 112x112
        then took 0.15 ms alone against 0.09 ms inside a chain, 0.11 ms with this reader. Like the layout
        Reorders, the reader's own nodes are an edge cost that measure.py leaves out of a layer's time."""
        out = self.opset14.max_pool(
            value.output,
            [1, 1],
            [1, 1],
            [0, 0],
            [0, 0],
            [1, 1],
            "floor",
            "explicit",
            "i64",
            2,
            name="output/int8_reader",
        )
        return replace(value, output=out.output(0))

    # -- plumbing -------------------------------------------------------------------------------------
    def _lower(self, node: Node) -> _Value:
        int8 = node.precision == "int8"
        inputs = [self._operand(name, quantize=int8) for name in node.inputs]
        self._check_arity(node, len(inputs))
        value = getattr(self, "_" + node.op)(node, inputs)
        return self._fake_quantize(value, f"{node.name}/fq") if int8 else value

    def _check_arity(self, node: Node, count: int) -> None:
        if node.op == "concat":
            return
        expected = 2 if node.op in TWO_INPUT_OPS and node.attr("const_shape") is None else 1
        if count != expected:
            raise ValueError(f"node {node.name}: {node.op} takes {expected} input node(s), got {count}")

    def _operand(self, name: str, *, quantize: bool) -> _Value:
        """An input tensor; for an int8 reader, through a FakeQuantize (the producer's, or a boundary one)."""
        value = self.values[name]
        if not quantize or value.quantized:
            return value
        if name not in self.boundaries:
            self.boundaries[name] = self._fake_quantize(value, f"{name}/fq_boundary")
        return self.boundaries[name]

    def _fake_quantize(self, value: _Value, name: str) -> _Value:
        low, high = int8_range(*value.range)
        bounds = [self._scalar(v, value.rank) for v in (low, high, low, high)]  # four Constants, as converted
        fq = self.ops.fake_quantize(value.output, *bounds, 256, name=name)
        return replace(value, output=fq.output(0), range=(low, high), quantized=True)

    def _scalar(self, number: float, rank: int) -> Any:
        return self.ops.constant(np.full([1] * rank, number, dtype=np.float32))

    def _new(self, output: Any, like: _Value, value_range: tuple[float, float] | None = None) -> _Value:
        """A float op's output, in `like`'s axis order."""
        out = output.output(0) if hasattr(output, "output") else output
        return _Value(out, like.perm, value_range or SIGNED_RANGE)

    def _relayout(self, value: _Value, perm: tuple[int, ...], name: str) -> _Value:
        """The tensor with IR axes in `perm` order (a Transpose when it differs)."""
        if value.perm == perm:
            return value
        order = np.array([value.perm.index(a) for a in perm], dtype=np.int64)
        out = self.ops.transpose(value.output, self.ops.constant(order), name=name)
        return replace(value, output=out.output(0), perm=perm)

    def _match(self, value: _Value, like: _Value, node: Node) -> _Value:
        """`value` laid out to combine elementwise with `like` (NumPy broadcasting in graph order)."""
        if value.rank < like.rank:
            value = self._relayout(value, _identity(value.rank), f"{node.name}/to_graph_order")
            padded = (1,) * (like.rank - value.rank) + value.graph_shape()
            out = self.ops.reshape(value.output, self.ops.constant(np.array(padded, np.int64)), False)
            value = replace(value, output=out.output(0), perm=_identity(like.rank))
        return self._relayout(value, like.perm, f"{node.name}/relayout")

    def _constant_like(self, const: np.ndarray, like: _Value, node: Node) -> Any:
        """A graph-layout constant broadcast against `like`, as an IR Constant in like's axis order."""
        if const.ndim > like.rank:
            raise ValueError(
                f"node {node.name}: const_shape {list(const.shape)} has more axes than the input ({like.rank})"
            )
        padded = const.reshape((1,) * (like.rank - const.ndim) + const.shape)
        return self.ops.constant(np.ascontiguousarray(np.transpose(padded, like.perm)))

    def _image(self, value: _Value, node: Node) -> _Value:
        if value.rank != 4:
            raise ValueError(f"node {node.name}: {node.op} needs a 4-D (NHWC) input, got rank {value.rank}")
        return self._relayout(value, NCHW, f"{node.name}/to_nchw")

    def _weights(self, node: Node, weight: np.ndarray, groups: int) -> Any:
        """Constant f32 weights, or (int8) Constant i8 -> Convert -> Multiply per-channel scale; grouped
        convolutions take them as [G, O/G, I/G, kh, kw] (a Reshape after the int8 dequantization)."""
        ops = self.ops
        grouped = (groups, weight.shape[0] // groups, *weight.shape[1:])
        if node.precision == "fp32":
            return ops.constant(weight.reshape(grouped) if groups > 1 else weight)
        values, scale = quantize_weights(weight)
        dequantized = ops.multiply(
            ops.convert(ops.constant(values), "f32"), ops.constant(scale), name=f"{node.name}/weights"
        )
        if groups > 1:
            dequantized = ops.reshape(dequantized, ops.constant(np.array(grouped, np.int64)), True)
        return dequantized

    def _activation(self, node: Node, value: _Value) -> _Value:
        """The node's fused activation: Relu / Clamp(0, 6) in fp32; in int8 folded into the output
        FakeQuantize (linear: a signed FakeQuantize first)."""
        act = node.attr("activation") if "activation" in NODE_OPS[node.op] else "none"
        if act not in ACTIVATIONS:
            raise ValueError(
                f"node {node.name}: activation must be one of {', '.join(ACTIVATIONS)}, not {act!r}"
            )
        if act == "none":
            return value
        top = value.range[1] if act == "relu" else min(value.range[1], 6.0)
        if node.precision == "int8":
            if node.op == "linear":
                value = self._fake_quantize(value, f"{node.name}/fq_linear")
            return replace(value, range=(0.0, top), quantized=False)
        out = self.ops.relu(value.output) if act == "relu" else self.ops.clamp(value.output, 0.0, 6.0)
        out.set_friendly_name(f"{node.name}/{act}")
        return self._new(out, value, (0.0, top))

    # -- ops ------------------------------------------------------------------------------------------
    def _conv2d(self, node: Node, inputs: list[_Value]) -> _Value:
        x = self._image(inputs[0], node)
        consts = node_constants(node, x.graph_shape(), seed=self.seed)
        groups, weight = int(node.attr("groups")), consts["weight"]
        top, bottom, left, right = node.attr("padding")
        args = (list(node.attr("stride")), [top, left], [bottom, right], [1, 1])
        filters = self._weights(node, weight, groups)
        make = self.ops.group_convolution if groups > 1 else self.ops.convolution
        conv = make(x.output, filters, *args, name=node.name)
        bias = self.ops.constant(consts["bias"].reshape(1, -1, 1, 1))
        out = self.ops.add(conv, bias, name=f"{node.name}/bias")
        return self._activation(node, self._new(out, x))

    def _linear(self, node: Node, inputs: list[_Value]) -> _Value:
        x = self._relayout(inputs[0], _identity(inputs[0].rank), f"{node.name}/to_graph_order")
        consts = node_constants(node, x.graph_shape(), seed=self.seed)
        matmul = self.ops.matmul(
            x.output, self._weights(node, consts["weight"], 1), False, True, name=node.name
        )
        bias = self.ops.constant(consts["bias"].reshape(*[1] * (x.rank - 1), -1))
        out = self.ops.add(matmul, bias, name=f"{node.name}/bias")
        return self._activation(node, self._new(out, x))

    def _binary(self, node: Node, inputs: list[_Value], make: Any) -> _Value:
        a = inputs[0]
        if len(inputs) == 2:
            b = inputs[1]
            if b.rank > a.rank:
                a = self._match(a, b, node)
            b_out = self._match(b, a, node).output
        else:
            const = node_constants(node, a.graph_shape(), seed=self.seed)["const"]
            b_out = self._constant_like(const, a, node)
        return self._activation(node, self._new(make(a.output, b_out, name=node.name), a))

    def _add(self, node: Node, inputs: list[_Value]) -> _Value:
        return self._binary(node, inputs, self.ops.add)

    def _sub(self, node: Node, inputs: list[_Value]) -> _Value:
        return self._binary(node, inputs, self.ops.subtract)

    def _mul(self, node: Node, inputs: list[_Value]) -> _Value:
        return self._binary(node, inputs, self.ops.multiply)

    def _unary(self, node: Node, x: _Value, make: Any, value_range: tuple[float, float]) -> _Value:
        return self._new(make(x.output, name=node.name), x, value_range)

    def _relu(self, node: Node, inputs: list[_Value]) -> _Value:
        x = inputs[0]
        if node.precision == "int8":  # folded into the output FakeQuantize [0, hi]
            return replace(x, range=(0.0, x.range[1]), quantized=False)
        return self._unary(node, x, self.ops.relu, (0.0, x.range[1]))

    def _relu6(self, node: Node, inputs: list[_Value]) -> _Value:
        x = inputs[0]
        value_range = (0.0, min(x.range[1], 6.0))
        if node.precision == "int8":
            return replace(x, range=value_range, quantized=False)
        return self._new(self.ops.clamp(x.output, 0.0, 6.0, name=node.name), x, value_range)

    def _clamp(self, node: Node, inputs: list[_Value]) -> _Value:
        x, low, high = inputs[0], float(node.attr("min")), float(node.attr("max"))
        if low > high:
            raise ValueError(f"node {node.name}: clamp min {low} > max {high}")
        value_range = (max(low, x.range[0]), min(high, x.range[1]))
        if value_range[0] >= value_range[1]:
            value_range = (low, high)
        return self._new(self.ops.clamp(x.output, low, high, name=node.name), x, value_range)

    def _hardswish(self, node: Node, inputs: list[_Value]) -> _Value:
        x, form = inputs[0], node.attr("form")
        value_range = (NEGATIVE_FLOOR["hardswish"], x.range[1])
        if form == "native":
            return self._unary(node, x, self.ops.hswish, value_range)
        if form != "decomposed":
            raise ValueError(f"node {node.name}: hardswish form must be native or decomposed, not {form!r}")
        ops = self.ops
        gate = ops.add(x.output, self._scalar(3.0, x.rank), name=f"{node.name}/add3")
        gate = ops.clamp(gate, 0.0, 6.0, name=f"{node.name}/clamp")
        gate = ops.multiply(gate, self._scalar(1 / 6, x.rank), name=f"{node.name}/div6")
        return self._new(ops.multiply(x.output, gate, name=node.name), x, value_range)

    def _hardsigmoid(self, node: Node, inputs: list[_Value]) -> _Value:
        return self._unary(node, inputs[0], self.ops.hsigmoid, BOUNDED_RANGES["hardsigmoid"])

    def _sigmoid(self, node: Node, inputs: list[_Value]) -> _Value:
        return self._unary(node, inputs[0], self.ops.sigmoid, BOUNDED_RANGES["sigmoid"])

    def _tanh(self, node: Node, inputs: list[_Value]) -> _Value:
        return self._unary(node, inputs[0], self.ops.tanh, BOUNDED_RANGES["tanh"])

    def _silu(self, node: Node, inputs: list[_Value]) -> _Value:
        return self._unary(node, inputs[0], self.ops.swish, (NEGATIVE_FLOOR["silu"], inputs[0].range[1]))

    def _gelu(self, node: Node, inputs: list[_Value]) -> _Value:
        x = inputs[0]
        out = self.ops.gelu(x.output, "erf", name=node.name)
        return self._new(out, x, (NEGATIVE_FLOOR["gelu"], x.range[1]))

    def _mean(self, node: Node, inputs: list[_Value]) -> _Value:
        x, keepdims = inputs[0], bool(node.attr("keepdims"))
        for a in node.attr("axes"):
            x.ir_axis(a, node)  # range check
        graph_axes = sorted({a % x.rank for a in node.attr("axes")})
        axes = np.array(sorted(x.perm.index(a) for a in graph_axes), dtype=np.int64)
        out = self.ops.reduce_mean(x.output, self.ops.constant(axes), keepdims, name=node.name)
        perm = x.perm
        if not keepdims:  # renumber the graph axes that remain, in IR order
            perm = tuple(a - sum(r < a for r in graph_axes) for a in x.perm if a not in graph_axes)
        return _Value(out.output(0), perm, x.range)

    def _pool(
        self, node: Node, inputs: list[_Value]
    ) -> tuple[_Value, list[int], list[int], list[int], list[int]]:
        x = self._image(inputs[0], node)
        top, bottom, left, right = node.attr("padding")
        return x, list(node.attr("stride")), [top, left], [bottom, right], list(node.attr("kernel"))

    def _avg_pool2d(self, node: Node, inputs: list[_Value]) -> _Value:
        x, strides, begin, end, kernel = self._pool(node, inputs)
        exclude_pad = not any(begin + end)  # torch count_include_pad=True; the converter writes True unpadded
        out = self.opset14.avg_pool(
            x.output, strides, begin, end, kernel, exclude_pad, "floor", "explicit", name=node.name
        )
        return _Value(out.output(0), x.perm, x.range)

    def _max_pool2d(self, node: Node, inputs: list[_Value]) -> _Value:
        x, strides, begin, end, kernel = self._pool(node, inputs)
        out = self.opset14.max_pool(
            x.output, strides, [1, 1], begin, end, kernel, "floor", "explicit", "i64", 2, name=node.name
        )
        return _Value(out.output(0), x.perm, x.range)

    def _pad(self, node: Node, inputs: list[_Value]) -> _Value:
        x = inputs[0]
        if x.rank != 4:
            raise ValueError(f"node {node.name}: pad needs a 4-D (NHWC) input, got rank {x.rank}")
        top, bottom, left, right = node.attr("padding")
        graph_begin, graph_end = (0, top, left, 0), (0, bottom, right, 0)
        begin = np.array([graph_begin[a] for a in x.perm], np.int64)
        end = np.array([graph_end[a] for a in x.perm], np.int64)
        ops = self.ops
        zero = ops.constant(np.array(0.0, np.float32))
        out = ops.pad(x.output, ops.constant(begin), ops.constant(end), "constant", zero, name=node.name)
        return _Value(out.output(0), x.perm, x.range)

    def _concat(self, node: Node, inputs: list[_Value]) -> _Value:
        first = inputs[0]
        if any(v.rank != first.rank for v in inputs):
            raise ValueError(f"node {node.name}: concat inputs have different ranks")
        parts = [
            self._relayout(v, first.perm, f"{node.name}/relayout{i}").output for i, v in enumerate(inputs)
        ]
        out = self.ops.concat(parts, first.ir_axis(int(node.attr("axis")), node), name=node.name)
        value_range = (min(v.range[0] for v in inputs), max(v.range[1] for v in inputs))
        return _Value(out.output(0), first.perm, value_range)

    def _matmul(self, node: Node, inputs: list[_Value]) -> _Value:
        a = self._relayout(inputs[0], _identity(inputs[0].rank), f"{node.name}/to_graph_order")
        if len(inputs) == 2:
            b = self._relayout(inputs[1], _identity(inputs[1].rank), f"{node.name}/to_graph_order_b")
            b_out = b.output
        else:
            const = node_constants(node, a.graph_shape(), seed=self.seed)["const"]
            b = _Value(self.ops.constant(const).output(0), _identity(const.ndim), SIGNED_RANGE)
            b_out = (
                self._fake_quantize(b, f"{node.name}/fq_const").output
                if node.precision == "int8"
                else b.output
            )
        out = self.ops.matmul(a.output, b_out, False, False, name=node.name)
        return _Value(out.output(0), _identity(max(a.rank, b.rank)), SIGNED_RANGE)

    def _softmax(self, node: Node, inputs: list[_Value]) -> _Value:
        x, axis = inputs[0], int(node.attr("axis"))
        ir_axis = x.ir_axis(axis, node)
        if x.perm == _identity(x.rank):
            ir_axis = axis  # as the converter writes it (-1 stays -1)
        return self._unary(node, x, lambda data, name: self.ops.softmax(data, ir_axis, name=name), (0.0, 1.0))

    def _layer_norm(self, node: Node, inputs: list[_Value]) -> _Value:
        x = self._relayout(inputs[0], _identity(inputs[0].rank), f"{node.name}/to_graph_order")
        consts = node_constants(node, x.graph_shape(), seed=self.seed)
        ops, shape = self.ops, (*[1] * (x.rank - 1), -1)
        axes = ops.constant(np.array([-1], np.int32))
        out = ops.mvn(x.output, axes, True, float(node.attr("eps")), "inside_sqrt", name=node.name)
        out = ops.multiply(out, ops.constant(consts["gamma"].reshape(shape)), name=f"{node.name}/gamma")
        out = ops.add(out, ops.constant(consts["beta"].reshape(shape)), name=f"{node.name}/beta")
        return self._new(out, x)
