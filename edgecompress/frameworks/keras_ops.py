"""The layers of a tf_keras model as the latency model sees them: one `LayerOp` (an `OpGraph` of one runtime op)
per computing op, as `torch_layers.py` makes them for a torch graph.

    ops = layer_ops(model, input_shape=[1, 32, 32, 1])
    graph = ops[0].graph("int8")               # that conv alone, in int8, as a runtime would run it

What becomes what (the ops the TFLite converter writes for them, which OpenVINO reads the same way):
Conv2D -> conv2d (grouped too); DepthwiseConv2D -> depthwise conv2d; SeparableConv2D -> a depthwise conv2d
named `<layer>/depthwise` and a 1x1 conv2d named `<layer>`; Dense -> linear; Add / Subtract / Multiply (a
gate of another shape: a constant of that shape); Concatenate; pooling, global average pooling (mean),
ZeroPadding2D (pad); ReLU, ReLU6, sigmoid, tanh, swish, gelu, hard sigmoid / swish, softmax as their own
ops. BatchNormalization is skipped (the converter folds it into the conv before it), as are Flatten,
Reshape, Dropout and the input. A ReLU / ReLU6 (a layer's own activation, or a ReLU / Activation layer that
a conv, dense or add feeds alone, through its folded BatchNormalization) becomes the op's fused activation.
Layers the latency model has no op for (LeakyReLU, Lambda, ...) are left out, as torch_layers leaves out
unknown ops: a prediction covers the ops it knows. Shapes are NHWC, batch 1, from the layers' own
output-shape rules (`keras_layers.shapes`).
"""

from __future__ import annotations

from typing import Any

from edgecompress.frameworks.keras_layers import Node, ensure_graph, graph, shapes
from edgecompress.latency.graph import LayerOp, same_padding

__all__ = ["layer_ops"]

#: Keras activation function names -> latency graph ops ("none": nothing to run).
_ACTIVATIONS = {
    "linear": "none",
    "relu": "relu",
    "relu6": "relu6",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "swish": "silu",
    "silu": "silu",
    "gelu": "gelu",
    "hard_sigmoid": "hardsigmoid",
    "hard_swish": "hardswish",
    "hard_silu": "hardswish",
    "softmax": "softmax",
}
_FUSABLE = ("relu", "relu6")
_BINARY = {"Add": "add", "Subtract": "sub", "Multiply": "mul"}
_POOLS = {"AveragePooling2D": "avg_pool2d", "MaxPooling2D": "max_pool2d"}


def layer_ops(model: Any, input_shape: list[int]) -> list[LayerOp]:
    """Every computing op of `model` (see the module docstring), in graph order, fed `input_shape` (batch
    first, NHWC)."""
    ensure_graph(model, input_shape)
    nodes = graph(model)
    known = shapes(model, nodes, input_shape)
    users: dict[tuple[str, int], list[Node]] = {}
    for node in nodes:
        for name, index, _ in node.inputs:
            users.setdefault((name, index), []).append(node)
    fused: set[tuple[str, int]] = set()
    out: list[LayerOp] = []
    for node in nodes:
        if (node.name, node.index) in fused:
            continue
        ins = [(1, *known[key]) for key in node.inputs]
        outs = [(1, *known[(node.name, node.index, i)]) for i in range(len(node.out_shapes))]
        if not ins or any(d is None for shape in (*ins, *outs) for d in shape):
            continue
        own = _activation(node.layer)
        activation = own if own in _FUSABLE else "none"
        if own == "none" and node.kind in (*_CONVS, "Dense", *_BINARY):
            found = _fused_activation(node, users)
            if found is not None:
                fused.add((found[0].name, found[0].index))
                activation = found[1]
        name = node.name if node.index == 0 else f"{node.name}_{node.index}"
        made = _ops(node, name, ins, outs, activation)
        if made and own not in (
            "none",
            "other",
            *_FUSABLE,
        ):  # a layer's own activation the runtime runs apart
            made.append(_unary(node.name, f"{name}/{own}", outs[0], own))
        out.extend(made)
    return out


_CONVS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D")


def _activation(layer: Any) -> str:
    """The graph op of a layer's own `activation` ("none" for linear or no activation; "other" for one the
    latency model has no op for)."""
    fn = getattr(layer, "activation", None)
    if fn is None:
        return "none"
    return _ACTIVATIONS.get(getattr(fn, "__name__", ""), "other")


def _relu_kind(node: Node) -> str | None:
    """'relu' / 'relu6' for a ReLU or Activation layer computing one, else None."""
    layer = node.layer
    if node.kind == "ReLU":
        if float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
            return None
        top = None if layer.max_value is None else float(layer.max_value)
        return "relu" if top is None else "relu6" if top == 6.0 else None
    if node.kind == "Activation":
        kind = _activation(layer)
        return kind if kind in _FUSABLE else None
    return None


def _fused_activation(node: Node, users: dict[tuple[str, int], list[Node]]) -> tuple[Node, str] | None:
    """The ReLU / ReLU6 layer a conv, dense or add feeds alone (through a BatchNormalization for a conv or
    dense: folded into it), and its op."""
    following = users.get((node.name, node.index), [])
    if len(following) == 1 and following[0].kind == "BatchNormalization" and node.kind not in _BINARY:
        following = users.get((following[0].name, following[0].index), [])
    if len(following) != 1:
        return None
    kind = _relu_kind(following[0])
    return (following[0], kind) if kind else None


def _spatial(layer: Any, shape: tuple, kernel: tuple[int, int], stride: tuple[int, int]) -> tuple[int, ...]:
    """(top, bottom, left, right) padding of a layer's `padding` ('valid' or 'same') on an NHWC input."""
    if getattr(layer, "padding", "valid") != "same":
        return (0, 0, 0, 0)
    return same_padding(shape[1], kernel[0], stride[0]) + same_padding(shape[2], kernel[1], stride[1])


def _conv(
    name: str, kind: str, shape: tuple, layer: Any, *, out: int, groups: int, kernel: Any, activation: str
) -> LayerOp:
    kernel = tuple(int(k) for k in kernel)
    stride = tuple(int(s) for s in layer.strides) if kernel != (1, 1) or kind != "pointwise" else (1, 1)
    padding = _spatial(layer, shape, kernel, stride) if kind != "pointwise" else (0, 0, 0, 0)
    attrs = {
        "out_channels": int(out),
        "kernel": kernel,
        "stride": stride,
        "padding": padding,
        "groups": int(groups),
        "activation": activation,
    }
    return LayerOp(
        name, "conv", name.removesuffix("/depthwise"), tuple(shape), "conv2d", tuple(sorted(attrs.items()))
    )


def _unary(module: str, name: str, shape: tuple, op: str) -> LayerOp:
    attrs = {"axis": len(shape) - 1} if op == "softmax" else {}
    return LayerOp(name, op, module, tuple(shape), op, tuple(sorted(attrs.items())))


def _ops(node: Node, name: str, ins: list[tuple], outs: list[tuple], activation: str) -> list[LayerOp]:
    """The LayerOps of one layer call (none for layers that are not computing ops)."""
    layer, kind, shape = node.layer, node.kind, ins[0]
    cin = int(shape[-1])
    if kind in _CONVS and any(int(d) != 1 for d in getattr(layer, "dilation_rate", (1, 1))):
        return []  # the latency graphs have no dilated convs
    if kind in ("Conv2D", "DepthwiseConv2D") and len(shape) == 4:
        depthwise = kind == "DepthwiseConv2D"
        out = cin * int(layer.depth_multiplier) if depthwise else layer.filters
        groups = cin if depthwise else getattr(layer, "groups", 1)
        return [
            _conv(
                name,
                "conv",
                shape,
                layer,
                out=out,
                groups=groups,
                kernel=layer.kernel_size,
                activation=activation,
            )
        ]
    if kind == "SeparableConv2D" and len(shape) == 4:
        width = cin * int(layer.depth_multiplier)
        depthwise = _conv(
            f"{name}/depthwise",
            "conv",
            shape,
            layer,
            out=width,
            groups=cin,
            kernel=layer.kernel_size,
            activation="none",
        )
        middle = (1, int(outs[0][1]), int(outs[0][2]), width)
        pointwise = _conv(
            name,
            "pointwise",
            middle,
            layer,
            out=layer.filters,
            groups=1,
            kernel=(1, 1),
            activation=activation,
        )
        return [depthwise, pointwise]
    if kind == "Dense":
        flat = (1, cin) if len(shape) == 2 else (1, _prod(shape[1:-1]), cin)
        attrs = {"out_features": int(layer.units), "activation": activation}
        return [LayerOp(name, "linear", node.name, flat, "linear", tuple(sorted(attrs.items())))]
    if kind in _BINARY and len(ins) >= 2:
        op = _BINARY[kind]
        big = max(ins, key=_prod)
        made = []
        for i, other in enumerate(ins[1:], start=1):
            extra: dict[str, Any] = (
                {"activation": activation if i == len(ins) - 1 else "none"} if op == "add" else {}
            )
            if tuple(other) == tuple(big) and tuple(ins[0]) == tuple(big):
                made.append(
                    LayerOp(_nth(name, i), op, node.name, big, op, tuple(sorted(extra.items())), True)
                )
            else:
                small = min((ins[0], other), key=_prod)
                const = tuple(int(d) for d in small) if len(small) == len(big) else (1,) * len(big)
                attrs = {**extra, "const_shape": const}
                made.append(LayerOp(_nth(name, i), op, node.name, big, op, tuple(sorted(attrs.items()))))
        return made
    if kind == "Concatenate" and len(ins) >= 2:
        axis = int(layer.axis) % len(shape)
        return [LayerOp(name, "concat", node.name, shape, "concat", (("axis", axis),), True)]
    if kind in _POOLS and len(shape) == 4:
        kernel = tuple(int(k) for k in layer.pool_size)
        stride = tuple(int(s) for s in (layer.strides or kernel))
        attrs = {"kernel": kernel, "stride": stride, "padding": _spatial(layer, shape, kernel, stride)}
        return [LayerOp(name, _POOLS[kind], node.name, shape, _POOLS[kind], tuple(sorted(attrs.items())))]
    if kind == "GlobalAveragePooling2D" and len(shape) == 4:
        attrs = {"axes": (1, 2), "keepdims": bool(getattr(layer, "keepdims", False))}
        return [LayerOp(name, "mean", node.name, shape, "mean", tuple(sorted(attrs.items())))]
    if kind == "ZeroPadding2D" and len(shape) == 4:
        (top, bottom), (left, right) = layer.padding
        attrs = {"padding": (int(top), int(bottom), int(left), int(right))}
        return [LayerOp(name, "pad", node.name, shape, "pad", tuple(sorted(attrs.items())))]
    if kind == "Rescaling":
        return [LayerOp(name, "mul", node.name, shape, "mul", (("const_shape", (1,) * len(shape)),))]
    if kind == "Softmax":
        return [_unary(node.name, name, shape, "softmax")]
    relu = _relu_kind(node)
    if relu is not None:
        return [_unary(node.name, name, shape, relu)]
    if kind == "Activation":
        op = _activation(layer)
        return [_unary(node.name, name, shape, op)] if op not in ("none", "other") else []
    return []


def _nth(name: str, i: int) -> str:
    return name if i == 1 else f"{name}/{i}"


def _prod(shape: Any) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out
