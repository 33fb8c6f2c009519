"""The layers of a torch graph as the latency model sees them: one `OpGraph` per computing op.

    ops = layer_ops(graph_module, input_shape=[1, 3, 224, 224])
    graph = ops[0].graph("int8")               # that conv alone, in int8, as a runtime would run it

Works on a float model's `torch.export` graph and on a quantized (converted PT2E) graph alike: quantize /
dequantize pairs, reshapes and BatchNorm (folded into its conv by the exporters) are skipped, a ReLU / ReLU6
that a conv, linear or add feeds alone becomes that op's fused activation, shapes come from running the
graph once on zeros (torch.fx ShapeProp). Shapes are written NHWC (the TFLite view; the OpenVINO builder
turns them back to NCHW). Only `frameworks/` and the torch backends import torch; this is one of them.
"""

from __future__ import annotations

import operator
from typing import Any

import torch

from edgecompress.latency.graph import LayerOp

__all__ = ["LayerOp", "float_graph", "layer_ops", "nhwc"]


def _aten() -> Any:
    return torch.ops.aten


def _shape(node: Any) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, torch.fx.Node) else None
    if meta is None and isinstance(node, torch.fx.Node):
        meta = node.meta.get("val")
    shape = getattr(meta, "shape", None)
    return tuple(int(d) for d in shape) if shape is not None else None


def nhwc(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A torch (NCHW) shape in the latency graphs' NHWC order (other ranks unchanged)."""
    return (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 else shape


def _nhwc_axis(axis: int, rank: int) -> int:
    axis = axis % rank
    return {0: 0, 1: 3, 2: 1, 3: 2}[axis] if rank == 4 else axis


def _pair(value: Any, default: int) -> tuple[int, int]:
    if value is None:
        return (default, default)
    values = list(value) if isinstance(value, list | tuple) else [value]
    return (int(values[0]), int(values[-1])) if values else (default, default)


def _fused_activation(node: torch.fx.Node) -> tuple[torch.fx.Node, str] | None:
    """The ReLU / ReLU6 a conv, linear or add feeds alone (no quantize between: fused), and its name."""
    aten = _aten()
    users = list(node.users)
    norms = (aten._native_batch_norm_legit_no_training.default, aten.batch_norm.default)
    if len(users) == 1 and users[0].target in norms:  # BatchNorm: folded into the conv by the exporters
        users = list(users[0].users)
        if len(users) == 1 and users[0].target is operator.getitem:
            users = list(users[0].users)
    if len(users) != 1:
        return None
    user = users[0]
    if user.target in (aten.relu.default, aten.relu_.default):
        return user, "relu"
    if user.target in (aten.hardtanh.default, aten.hardtanh_.default):
        low = user.args[1] if len(user.args) > 1 else -1.0
        high = user.args[2] if len(user.args) > 2 else 1.0
        if float(low) == 0.0 and float(high) == 6.0:
            return user, "relu6"
    return None


def _module_path(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack", {})
    return next(reversed(stack.values()))[0] if stack else ""


def layer_ops(gm: torch.fx.GraphModule, input_shape: list[int]) -> list[LayerOp]:
    """Every computing op of `gm` (see the module docstring) with its runtime op and NHWC input shape."""
    from torch.fx.passes.shape_prop import ShapeProp

    ShapeProp(gm).propagate(torch.zeros([1, *input_shape[1:]]))
    fused: set[torch.fx.Node] = set()
    out: list[LayerOp] = []
    for node in gm.graph.nodes:
        if node.op != "call_function" or node in fused:
            continue
        found = _fused_activation(node) if node.target in _FUSING else None
        if found is not None:
            fused.add(found[0])
        made = _layer(node, found[1] if found else "none")
        if made is not None:
            out.append(made)
    return out


def _layer(node: torch.fx.Node, activation: str) -> LayerOp | None:
    """The LayerOp of one fx node, or None for ops that are not computing ops (or lack shapes)."""
    aten = _aten()
    target, args = node.target, node.args
    first = args[0] if args else None
    if target == aten.cat.default and first:
        first = first[0]
    shape = _shape(first) if isinstance(first, torch.fx.Node) else None
    if shape is None:
        return None
    rank = len(shape)

    def layer(kind: str, op: str, *, binary: bool = False, **attrs: Any) -> LayerOp:
        return LayerOp(
            node.name, kind, _module_path(node), nhwc(shape), op, tuple(sorted(attrs.items())), binary
        )

    if target in (aten.conv2d.default, aten.convolution.default) and rank == 4:
        weight_shape = _shape(args[1])
        if weight_shape is None:
            return None
        if target == aten.convolution.default:
            stride, padding, groups = args[3], args[4], args[8]
        else:
            stride = args[3] if len(args) > 3 else 1
            padding = args[4] if len(args) > 4 else 0
            groups = args[6] if len(args) > 6 else 1
        ph, pw = _pair(padding, 0)
        return layer(
            "conv",
            "conv2d",
            out_channels=weight_shape[0],
            kernel=(weight_shape[2], weight_shape[3]),
            stride=_pair(stride, 1),
            padding=(ph, ph, pw, pw),
            groups=int(groups),
            activation=activation,
        )
    if target == aten.linear.default:
        weight_shape = _shape(args[1])
        return (
            None
            if weight_shape is None
            else layer("linear", "linear", out_features=weight_shape[0], activation=activation)
        )
    if target in _BINARY:
        op = _BINARY[target]
        other = args[1] if len(args) > 1 else None
        other_shape = _shape(other) if isinstance(other, torch.fx.Node) else ()
        extra: dict[str, Any] = {"activation": activation} if op == "add" else {}
        if other_shape == shape:
            return layer(op, op, binary=True, **extra)
        const = nhwc(other_shape) if other_shape is not None and len(other_shape) == rank else (1,) * rank
        return layer(op, op, const_shape=const, **extra)
    if target in _UNARY:
        return layer(_UNARY[target], _UNARY[target])
    if target in (aten.hardtanh.default, aten.hardtanh_.default, aten.clamp.default):
        hardtanh = target != aten.clamp.default
        low = args[1] if len(args) > 1 else (-1.0 if hardtanh else None)
        high = args[2] if len(args) > 2 else (1.0 if hardtanh else None)
        low = -3.0e38 if low is None else float(low)
        high = 3.0e38 if high is None else float(high)
        return layer("clamp", "clamp", min=low, max=high)
    if target == aten.mean.dim and rank >= 2:
        dims = args[1] if len(args) > 1 and args[1] is not None else list(range(rank))
        keep = bool(args[2]) if len(args) > 2 else False
        return layer("mean", "mean", axes=tuple(sorted(_nhwc_axis(d, rank) for d in dims)), keepdims=keep)
    if target == aten.adaptive_avg_pool2d.default and rank == 4:
        return layer("mean", "mean", axes=(1, 2), keepdims=True)
    if target in (aten.avg_pool2d.default, aten.max_pool2d.default) and rank == 4:
        kernel = _pair(args[1], 1)
        stride = _pair(args[2] if len(args) > 2 and args[2] else kernel, 1)
        ph, pw = _pair(args[3] if len(args) > 3 else 0, 0)
        op = "avg_pool2d" if target == aten.avg_pool2d.default else "max_pool2d"
        return layer(op, op, kernel=kernel, stride=stride, padding=(ph, ph, pw, pw))
    if target in (aten.pad.default, aten.constant_pad_nd.default) and rank == 4:
        pads = [*list(args[1]), 0, 0, 0, 0]
        return layer("pad", "pad", padding=(pads[2], pads[3], pads[0], pads[1]))
    if target == aten.cat.default:
        dim = args[1] if len(args) > 1 else 0
        return layer("concat", "concat", binary=True, axis=_nhwc_axis(dim, rank))
    if target in (aten.matmul.default, aten.bmm.default):
        other_shape = _shape(args[1])
        return None if other_shape is None else layer("matmul", "matmul", const_shape=other_shape)
    if target in (aten.softmax.int, aten._softmax.default):
        return layer("softmax", "softmax", axis=_nhwc_axis(args[1], rank))
    if target == aten.layer_norm.default:
        return layer("layer_norm", "layer_norm")
    return None


_FUSING = (
    torch.ops.aten.conv2d.default,
    torch.ops.aten.convolution.default,
    torch.ops.aten.linear.default,
    torch.ops.aten.add.Tensor,
)
_BINARY = {
    torch.ops.aten.add.Tensor: "add",
    torch.ops.aten.sub.Tensor: "sub",
    torch.ops.aten.mul.Tensor: "mul",
    torch.ops.aten.div.Tensor: "mul",
}
_UNARY = {
    torch.ops.aten.hardswish.default: "hardswish",
    torch.ops.aten.hardswish_.default: "hardswish",
    torch.ops.aten.hardsigmoid.default: "hardsigmoid",
    torch.ops.aten.hardsigmoid_.default: "hardsigmoid",
    torch.ops.aten.silu.default: "silu",
    torch.ops.aten.silu_.default: "silu",
    torch.ops.aten.sigmoid.default: "sigmoid",
    torch.ops.aten.tanh.default: "tanh",
    torch.ops.aten.gelu.default: "gelu",
    torch.ops.aten.relu.default: "relu",
    torch.ops.aten.relu_.default: "relu",
}


def float_graph(model: Any, input_shape: list[int]) -> torch.fx.GraphModule:
    """The model's torch.export graph (batch 1, eval mode), for `layer_ops`."""
    model.eval()
    with torch.no_grad():
        return torch.export.export(model, (torch.zeros([1, *input_shape[1:]]),)).module()
