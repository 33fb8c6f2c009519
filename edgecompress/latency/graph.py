"""A tiny, framework-neutral graph of runtime ops: what the latency model measures.

The latency model times layers by building small artifacts directly in a runtime's own format (a .tflite
flatbuffer, an OpenVINO IR) from an `OpGraph`, without torch, TensorFlow or a converter: a converter takes
about a second per model, a builder milliseconds, and a channel sweep needs hundreds of them.

An `OpGraph` has one input (batch 1, NHWC for images, [1, features] or [1, tokens, features] otherwise)
and one output (the last node's). Every node names its inputs: "input" for the graph input or an earlier
node's name; second operands that are not activations are constants the builder makes (`const_shape`).
Each node has a precision, "fp32" or "int8"; a builder inserts the conversions a real artifact would have
at every boundary between them (TFLite: QUANTIZE / DEQUANTIZE ops; OpenVINO: FakeQuantize on int8 edges)
and keeps the graph input and output in the precision of the node that reads / writes them, unless
`input_precision` / `output_precision` say otherwise (then the builder converts there too).

Node ops (attrs in brackets; shapes are NHWC):
- conv2d [out_channels, kernel (kh, kw), stride (sh, sw), padding (top, bottom, left, right), groups,
  activation: none | relu | relu6]  groups == in == out: depthwise; 1 < groups: grouped
- linear [out_features, activation]
- add, sub, mul [activation (add only): none | relu | relu6; const_shape: a constant second operand of
  this (broadcastable) shape instead of a second input node]
- relu, relu6, clamp [min, max], hardswish [form: native | decomposed], hardsigmoid, sigmoid, silu,
  tanh, gelu
- mean [axes, keepdims], avg_pool2d / max_pool2d [kernel, stride, padding], pad [padding (top, bottom,
  left, right)], concat [axis] (inputs: several nodes)
- matmul (two inputs, [.., M, K] x [.., K, N]; or const_shape for a constant right operand), softmax
  [axis], layer_norm [eps] (over the last axis)

How a builder lowers each (e.g. TFLite has no HARD_SIGMOID: ADD with a fused RELU6, then MUL) follows
what the real exporters emit for the same torch op, so a table entry times what a deployed model runs.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

Precision = Literal["fp32", "int8"]

#: Every node op a builder must lower, with the attrs it takes (and their defaults).
NODE_OPS: dict[str, dict[str, Any]] = {
    "conv2d": {
        "out_channels": None,
        "kernel": (3, 3),
        "stride": (1, 1),
        "padding": (0, 0, 0, 0),
        "groups": 1,
        "activation": "none",
    },
    "linear": {"out_features": None, "activation": "none"},
    "add": {"activation": "none", "const_shape": None},
    "sub": {"const_shape": None},
    "mul": {"const_shape": None},
    "relu": {},
    "relu6": {},
    "clamp": {"min": 0.0, "max": 6.0},
    "hardswish": {"form": "native"},
    "hardsigmoid": {},
    "sigmoid": {},
    "silu": {},
    "tanh": {},
    "gelu": {},
    "mean": {"axes": (1, 2), "keepdims": True},
    "avg_pool2d": {"kernel": (2, 2), "stride": (2, 2), "padding": (0, 0, 0, 0)},
    "max_pool2d": {"kernel": (2, 2), "stride": (2, 2), "padding": (0, 0, 0, 0)},
    "pad": {"padding": (1, 1, 1, 1)},
    "concat": {"axis": -1},
    "matmul": {"const_shape": None},
    "softmax": {"axis": -1},
    "layer_norm": {"eps": 1e-5},
}


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TensorFlow's / TFLite's SAME padding along one axis (the extra one after)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


@dataclass(frozen=True)
class Node:
    """One runtime op. `attrs` holds only the keys of NODE_OPS[op] (missing ones take the defaults)."""

    name: str
    op: str
    inputs: tuple[str, ...] = ("input",)
    attrs: tuple[tuple[str, Any], ...] = ()
    precision: Precision = "fp32"

    def __post_init__(self) -> None:
        if self.op not in NODE_OPS:
            raise ValueError(f"node {self.name}: unknown op '{self.op}'; known: {', '.join(NODE_OPS)}")
        unknown = [k for k, _ in self.attrs if k not in NODE_OPS[self.op]]
        if unknown:
            raise ValueError(f"node {self.name}: {self.op} takes no attr {', '.join(unknown)}")
        if self.precision not in ("fp32", "int8"):
            raise ValueError(f"node {self.name}: precision must be fp32 or int8, not {self.precision!r}")

    @classmethod
    def make(
        cls,
        name: str,
        op: str,
        inputs: tuple[str, ...] | str = ("input",),
        *,
        precision: Precision = "fp32",
        **attrs: Any,
    ) -> Node:
        """Node with attrs given as keywords: `Node.make("c1", "conv2d", out_channels=16, kernel=(3, 3))`."""
        return cls(
            name,
            op,
            (inputs,) if isinstance(inputs, str) else tuple(inputs),
            tuple(sorted((k, _freeze(v)) for k, v in attrs.items())),
            precision,
        )

    def attr(self, key: str) -> Any:
        """The attr's value, or its default from NODE_OPS."""
        return dict(self.attrs).get(key, NODE_OPS[self.op][key])


@dataclass(frozen=True)
class OpGraph:
    """A small graph of runtime ops with one input and one output (the last node's)."""

    input_shape: tuple[int, ...]
    nodes: tuple[Node, ...]
    #: Free-form label for reports ("conv2d 3x3 16->24 @32x32 int8"); not part of the key.
    label: str = field(default="", compare=False)
    #: Precision of the graph input / output; None: the first node's / the last node's. An fp32 op
    #: between int8 neighbours is measured with "int8" here: it pays its boundaries as in the model.
    input_precision: Precision | None = None
    output_precision: Precision | None = None

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ValueError("an OpGraph needs at least one node")
        seen = {"input"}
        for node in self.nodes:
            missing = [i for i in node.inputs if i not in seen]
            if missing:
                raise ValueError(f"node {node.name}: inputs {missing} are not earlier nodes or 'input'")
            if node.name in seen:
                raise ValueError(f"node name {node.name!r} is used twice")
            seen.add(node.name)

    def key(self) -> str:
        """A stable identifier of what is measured (shapes, ops, attrs, precisions), for latency tables."""
        payload = {
            "input": list(self.input_shape),
            "io": [self.input_precision, self.output_precision],
            "nodes": [
                [n.name, n.op, list(n.inputs), [list(a) for a in n.attrs], n.precision] for n in self.nodes
            ],
        }
        text = json.dumps(payload, sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class LayerOp:
    """One computing op of a model (a torch fx node, a Keras layer call) and the runtime op it becomes: what the
    latency model times for that op (`frameworks/torch_layers.py`, `frameworks/keras_ops.py` make them)."""

    node: str  # fx node name / Keras layer name
    kind: str  # conv, linear, hardswish, add, ...
    module: str  # module path ('' at top level) / Keras layer name
    input_shape: tuple[int, ...]  # NHWC
    op: str  # OpGraph node op
    attrs: tuple[tuple[str, Any], ...]
    binary: bool = False  # a second activation operand (read from the same input in the one-op graph)

    def graph(self, precision: str, *, form: str = "native", boundaries: str | None = None) -> OpGraph:
        """This op alone as an OpGraph in `precision`. `form`: hardswish's native or decomposed form.
        `boundaries` ("int8"): the op runs in `precision` between int8 neighbours, so the graph converts
        at its input and output (QUANTIZE / DEQUANTIZE in TFLite) as the model does."""
        attrs = dict(self.attrs)
        if self.op == "hardswish":
            attrs["form"] = form
        node = Node.make(
            self.node,
            self.op,
            ("input", "input") if self.binary else ("input",),
            precision=precision,  # type: ignore[arg-type]
            **attrs,
        )
        label = f"{self.kind} {self.module or self.node} {list(self.input_shape)} {precision}"
        if form != "native":
            label += f" {form}"
        return OpGraph(
            self.input_shape,
            (node,),
            label=label,
            input_precision=boundaries,
            output_precision=boundaries,
        )
