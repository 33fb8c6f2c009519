"""Per-export forms of one quantized graph: the same int8 model, lowered the way a runtime runs it fastest.

The `quantize` stage quantizes every op that some runtime can run in int8 (the superset), and QAT trains that
graph once. An export derives its own graph from it with a *plan* (fx node name -> form), so each export has
a torch graph of its own that its artifact is checked against. Forms:

- `int8`: as quantized; the runtime's own int8 kernel.
- `int8-decomposed`: hardswish -> x * (relu6(x + 3) * 1/6), hardsigmoid -> relu6(x + 3) * 1/6, SiLU ->
  x * sigmoid(x), every intermediate quantized at the fixed scale of its known range (relu6: [0, 6];
  the gate: [0, 1]; a sigmoid: TFLite's 1/256). These lower to int8 ADD (fused RELU6), MUL and LOGISTIC,
  which XNNPACK runs; TFLite has no int8 HARD_SIGMOID or SiLU, and ai-edge-litert 2.3's XNNPACK takes no
  int8 HARD_SWISH (it runs on the builtin kernels).
- `int8-depthwise`: avg_pool2d (no padding, or padding counted) -> a depthwise conv with weights 1/k^2,
  exact in int8 (127 at scale 1/(127 k^2)); XNNPACK has no signed int8 average pooling.
- `float`: the op computes in float between a dequantize and a quantize. A conv/linear gets its weights as a
  float constant (the int8-rounded values QAT trained, dequantized), so OpenVINO runs it in f32. The TFLite
  converter would fuse any dequantize -> op -> quantize back into an int8 kernel, so the op's output scale
  carries a tag (a relative change of 2^-20 per tag, far below the int8 step) that the TFLite exporter finds
  in the flatbuffer to make exactly that op float (`exporters/tflite_float_ops.py`), restoring the scale.
- `unquantized-output` (OpenVINO): the quantize/dequantize on the op's output is dropped, so its consumers
  read it in float: how NNCF places quantizers for OpenVINO (only on the inputs of ops OpenVINO runs in
  int8), letting the CPU plugin fuse a conv with the activation that follows it.

Every rewrite keeps the graph a plain PT2E graph (float ops between quantize/dequantize pairs), so the
exporters, parity and `predict` treat a derived graph like the quantized one.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from edgecompress.precision import QuantizedOp

#: Relative change of a tagged output scale per tag number (float32 keeps 24 bits: tags up to 2^3 apart
#: from 1 stay exact and distinct; the int8 step is 2^-8 of the range, 4096x coarser than one tag).
TAG_STEP = 2.0**-20
FORMS = ("int8", "int8-decomposed", "int8-depthwise", "float", "unquantized-output")


def _q_ops() -> tuple[Any, Any, Any, Any]:
    qd = torch.ops.quantized_decomposed
    return (
        qd.quantize_per_tensor.default,
        qd.dequantize_per_tensor.default,
        qd.quantize_per_channel.default,
        qd.dequantize_per_channel.default,
    )


def _op_kinds() -> dict[Any, str]:
    aten = torch.ops.aten
    return {
        aten.conv1d.default: "conv",
        aten.conv2d.default: "conv",
        aten.linear.default: "linear",
        aten.hardswish.default: "hardswish",
        aten.hardswish_.default: "hardswish",
        aten.hardsigmoid.default: "hardsigmoid",
        aten.hardsigmoid_.default: "hardsigmoid",
        aten.silu.default: "silu",
        aten.silu_.default: "silu",
        aten.sigmoid.default: "sigmoid",
        aten.tanh.default: "tanh",
        aten.gelu.default: "gelu",
        aten.relu.default: "relu",
        aten.relu_.default: "relu",
        aten.hardtanh.default: "clamp",
        aten.hardtanh_.default: "clamp",
        aten.clamp.default: "clamp",
        aten.add.Tensor: "add",
        aten.sub.Tensor: "sub",
        aten.mul.Tensor: "mul",
        aten.div.Tensor: "div",
        aten.mean.dim: "mean",
        aten.avg_pool2d.default: "avg_pool2d",
        aten.adaptive_avg_pool2d.default: "mean",
        aten.max_pool2d.default: "max_pool2d",
        aten.pad.default: "pad",
        aten.constant_pad_nd.default: "pad",
        aten.cat.default: "concat",
        aten.matmul.default: "matmul",
        aten.bmm.default: "matmul",
        aten.softmax.int: "softmax",
        aten._softmax.default: "softmax",
        aten.layer_norm.default: "layer_norm",
    }


#: Forms each op kind can take besides `int8` (which every quantized op has).
KIND_FORMS: dict[str, tuple[str, ...]] = {
    "hardswish": ("int8-decomposed", "float", "unquantized-output"),
    "hardsigmoid": ("int8-decomposed", "float", "unquantized-output"),
    "silu": ("int8-decomposed", "float", "unquantized-output"),
    "avg_pool2d": ("int8-depthwise", "float"),
    "conv": ("float", "unquantized-output"),
    "linear": ("float", "unquantized-output"),
}
DEFAULT_KIND_FORMS = ("float", "unquantized-output")


#: Op kinds quantized with a fixed output scale (a sigmoid's or hardsigmoid's 1/256, a tanh's 1/128): the
#: converter keeps that scale exact, so a float form's tag on it never reaches the .tflite and the op could not
#: be found to make float (tiny_mobile_v3's hardsigmoid gates: every float choice failed the export).
FIXED_SCALE_KINDS = ("hardsigmoid", "sigmoid", "tanh")


def kind_forms(kind: str) -> tuple[str, ...]:
    """The forms an int8 op of `kind` can take."""
    forms = ("int8", *KIND_FORMS.get(kind, DEFAULT_KIND_FORMS))
    return tuple(f for f in forms if f != "float") if kind in FIXED_SCALE_KINDS else forms


def _module_path(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack", {})
    return next(reversed(stack.values()))[0] if stack else ""


def _fused_activation(node: torch.fx.Node) -> torch.fx.Node | None:
    """The ReLU / ReLU6 / clamp a conv, linear or add feeds alone, which the runtimes fuse into it (one int8
    op with a fused activation: the stock conv-ReLU and add-ReLU patterns and `annotate_conv_relu6`)."""
    aten = torch.ops.aten
    if node.target not in (aten.conv1d.default, aten.conv2d.default, aten.linear.default, aten.add.Tensor):
        return None
    users = list(node.users)
    fusable = (aten.relu.default, aten.relu_.default, aten.hardtanh.default, aten.hardtanh_.default)
    return users[0] if len(users) == 1 and users[0].target in fusable else None


def _output_quant(node: torch.fx.Node) -> tuple[torch.fx.Node, list[torch.fx.Node]] | None:
    """(quantize node, its dequantize nodes) when `node`'s output (after its fused activation, if any) is
    quantized and read by nothing else."""
    q, dq, _, _ = _q_ops()
    node = _fused_activation(node) or node
    users = list(node.users)
    if len(users) != 1 or users[0].target != q:
        return None
    return users[0], [u for u in users[0].users if u.target == dq]


def _feeds_concat(node: torch.fx.Node) -> bool:
    """Whether `node`'s quantized output (after its fused activation) is read by a concatenation."""
    aten = torch.ops.aten
    found = _output_quant(node)
    return found is not None and any(user.target == aten.cat.default for dq in found[1] for user in dq.users)


def _fused_by_converter(node: torch.fx.Node) -> bool:
    """Whether `node` is a ReLU / ReLU6 reading, through a quantize/dequantize pair, the output of a conv,
    linear or add that nothing else reads (the TFLite converter fuses such an activation into that op)."""
    aten = torch.ops.aten
    activations = (aten.relu.default, aten.relu_.default, aten.hardtanh.default, aten.hardtanh_.default)
    if node.target not in activations or not node.args or not isinstance(node.args[0], torch.fx.Node):
        return False
    producer = _producer(node.args[0])
    fusing = (aten.conv1d.default, aten.conv2d.default, aten.linear.default, aten.add.Tensor)
    return producer is not node.args[0] and producer.target in fusing and _readers(producer) == [node]


def quantized_ops(gm: torch.fx.GraphModule) -> list[QuantizedOp]:
    """Every computing op of a converted PT2E graph, in graph order, with the forms it can take."""
    kinds = _op_kinds()
    fused = {a for a in (_fused_activation(n) for n in gm.graph.nodes) if a is not None}
    out = []
    for node in gm.graph.nodes:
        kind = kinds.get(node.target) if node.op == "call_function" else None
        if kind is None or node in fused:
            continue
        quantized = _output_quant(node) is not None
        forms = kind_forms(kind) if quantized else ("float",)
        if quantized and kind != "concat" and _feeds_concat(node):
            # its output scale is the concatenation's (shared): the converter keeps one scale for all of the
            # concatenation's inputs, so a tag on this op's scale does not reach the .tflite
            forms = tuple(f for f in forms if f != "float") or forms
        if quantized and _fused_by_converter(node):
            # a ReLU / ReLU6 behind its conv's / linear's quantize (an in-place relu_ the quantizer's patterns
            # miss): the converter fuses it into that op all the same, so it cannot run alone in float
            forms = tuple(f for f in forms if f != "float") or forms
        out.append(QuantizedOp(node.name, kind, _module_path(node), quantized, forms))
    return out


class _Rewriter:
    """Graph surgery on a copy of a converted PT2E GraphModule."""

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        self.gm = gm
        self.graph = gm.graph
        self._consts = 0

    def fetch(self, target: str) -> torch.Tensor:
        obj: Any = self.gm
        for part in target.split("."):
            obj = getattr(obj, part)
        return obj

    def const(self, value: float, like: torch.fx.Node) -> torch.fx.Node:
        """A constant of `like`'s rank, all ones but the value (litert-torch's layout pass needs every operand
        of an NHWC op 4-D; a 4-D constant beside a 2-D tensor would broadcast it to 4-D)."""
        meta = like.meta.get("tensor_meta", like.meta.get("val"))
        rank = len(meta.shape) if getattr(meta, "shape", None) is not None else 4
        tensor = torch.full((1,) * rank, float(value))
        name = f"_derived_const_{self._consts}"
        self._consts += 1
        self.gm.register_buffer(name, tensor.detach().clone().float())
        return self.graph.get_attr(name)

    def qdq(self, node: torch.fx.Node, scale: float, zero_point: int) -> torch.fx.Node:
        q, dq, _, _ = _q_ops()
        quantized = self.graph.call_function(q, (node, scale, zero_point, -128, 127, torch.int8))
        return self.graph.call_function(dq, (quantized, scale, zero_point, -128, 127, torch.int8))

    def dq_copy(self, node: torch.fx.Node) -> torch.fx.Node:
        """A second dequantize of the same quantized tensor (one consumer per dequantize, as convert_pt2e
        leaves them and litert-torch's lowering expects)."""
        _, dq, _, _ = _q_ops()
        if node.target != dq:
            return node
        return self.graph.call_function(dq, tuple(node.args), dict(node.kwargs))

    def replace(self, node: torch.fx.Node, new: torch.fx.Node) -> None:
        node.replace_all_uses_with(new)
        self.graph.erase_node(node)

    # ------------------------------------------------------------------------------------------ forms

    def decompose(self, node: torch.fx.Node, kind: str) -> None:
        aten = torch.ops.aten
        x = node.args[0]
        with self.graph.inserting_before(node):
            if kind == "silu":
                gate = self.qdq(self.graph.call_function(aten.sigmoid.default, (x,)), 1 / 256, -128)
                out = self.graph.call_function(aten.mul.Tensor, (self.dq_copy(x), gate))
            else:
                shifted = self.graph.call_function(aten.add.Tensor, (x, self.const(3.0, x)))
                relu6 = self.graph.call_function(aten.hardtanh.default, (shifted, 0.0, 6.0))
                gate = self.graph.call_function(
                    aten.mul.Tensor, (self.qdq(relu6, 6 / 255, -128), self.const(1 / 6, x))
                )
                if kind == "hardsigmoid":
                    out = gate
                else:
                    gate = self.qdq(gate, 1 / 255, -128)
                    out = self.graph.call_function(aten.mul.Tensor, (self.dq_copy(x), gate))
        self.replace(node, out)

    def depthwise_pool(self, node: torch.fx.Node) -> bool:
        """avg_pool2d -> depthwise conv; False (unchanged) where the two would differ."""
        aten = torch.ops.aten
        _, _, qc, dqc = _q_ops()
        args = list(node.args) + [None] * (7 - len(node.args))
        x, kernel, stride, padding, ceil_mode, count_include_pad, divisor = args[:7]
        kernel = list(kernel) * (2 // len(kernel)) if kernel else [1, 1]
        stride = list(stride) * (2 // len(stride)) if stride else kernel
        padding = list(padding) * (2 // len(padding)) if padding else [0, 0]
        include_pad = True if count_include_pad is None else bool(count_include_pad)
        meta = x.meta.get("val", x.meta.get("tensor_meta"))
        shape = getattr(meta, "shape", None)
        if ceil_mode or divisor is not None or (any(padding) and not include_pad) or shape is None:
            return False
        channels = int(shape[1])
        area = kernel[0] * kernel[1]
        weight = torch.full((channels, 1, kernel[0], kernel[1]), 1.0 / area)
        scales = torch.full((channels,), 1.0 / (127 * area))
        with self.graph.inserting_before(node):
            w = self.graph.get_attr(self._buffer(weight))
            s = self.graph.get_attr(self._buffer(scales))
            z = self.graph.get_attr(self._buffer(torch.zeros(channels, dtype=torch.int64)))
            wq = self.graph.call_function(qc, (w, s, z, 0, -127, 127, torch.int8))
            wdq = self.graph.call_function(dqc, (wq, s, z, 0, -127, 127, torch.int8))
            conv = self.graph.call_function(
                aten.conv2d.default, (x, wdq, None, stride, padding, [1, 1], channels)
            )
        self.replace(node, conv)
        return True

    def _buffer(self, tensor: torch.Tensor) -> str:
        name = f"_derived_const_{self._consts}"
        self._consts += 1
        self.gm.register_buffer(name, tensor)
        return name

    def float_weights(self, node: torch.fx.Node) -> None:
        """Conv/linear weights as the float constant their int8 values dequantize to."""
        _, _, qc, dqc = _q_ops()
        weight = node.args[1]
        if not isinstance(weight, torch.fx.Node) or weight.target != dqc:
            return
        quantized = weight.args[0]
        if not isinstance(quantized, torch.fx.Node) or quantized.target != qc:
            return

        def value(arg: Any) -> Any:
            return self.fetch(arg.target) if isinstance(arg, torch.fx.Node) else arg

        with torch.no_grad():
            q_args = [value(a) for a in quantized.args]
            dq_args = [value(a) for a in weight.args[1:]]
            floats = dqc(qc(*q_args), *dq_args)
        with self.graph.inserting_before(node):
            constant = self.graph.get_attr(self._buffer(floats.float()))
        node.args = (node.args[0], constant, *node.args[2:])

    def tag_output(self, node: torch.fx.Node, tag: int) -> float:
        """Scale the output quantization of `node` by 1 + tag * TAG_STEP; returns the original scale."""
        found = _output_quant(node)
        if found is None:
            raise ValueError(f"{node.name} has no quantized output to tag")
        q, dqs = found
        scale = float(q.args[1])
        tagged = scale * (1 + tag * TAG_STEP)
        for n in (q, *dqs):
            n.args = (n.args[0], tagged, *n.args[2:])
        return scale

    def drop_output_quantization(self, node: torch.fx.Node) -> None:
        found = _output_quant(node)
        if found is None:
            return
        q, dqs = found
        for dq in dqs:
            self.replace(dq, node)
        if not q.users:
            self.graph.erase_node(q)


@dataclass(frozen=True)
class FloatOpTag:
    """A TFLite op the exporter must make float: the tagged output scale it carries and the original one."""

    node: str
    kind: str
    tagged_scale: float
    scale: float


def derive(module: Any, plan: Mapping[str, str], *, input_shape: list[int]) -> Any:
    """A copy of `module` (a converted PT2EModule) with each op in `plan` in its form (`input_shape`: the
    model's, batch first, to give every node its shape). Ops not in the plan keep `int8`. ValueError for an unknown node or a form the op cannot take. The result carries
    `float_op_tags` (the ops the TFLite exporter makes float) and `plan` (what was applied)."""
    ops = {op.node: op for op in quantized_ops(module.graph_module)}
    unknown = [n for n in plan if n not in ops]
    if unknown:
        raise ValueError(f"plan names ops the quantized graph does not have: {', '.join(unknown[:5])}")
    for name, form in plan.items():
        if form not in ops[name].forms:
            raise ValueError(
                f"{name} ({ops[name].kind}) cannot take form {form!r}; it can: {ops[name].forms}"
            )
    gm = copy.deepcopy(module.graph_module)
    from torch.fx.passes.shape_prop import ShapeProp

    ShapeProp(gm).propagate(torch.zeros([1, *input_shape[1:]]))  # shapes for rewrites that need them
    rewriter = _Rewriter(gm)
    nodes = {n.name: n for n in gm.graph.nodes}
    tags: list[FloatOpTag] = []
    for name, form in plan.items():
        node, kind = nodes[name], ops[name].kind
        if form == "int8-decomposed":
            rewriter.decompose(node, kind)
        elif form == "int8-depthwise":
            if not rewriter.depthwise_pool(node):
                raise ValueError(
                    f"{name}: this average pool has no exact depthwise form (ceil_mode, a divisor, or padding "
                    "not counted)"
                )
        elif form == "float":
            if kind in ("conv", "linear"):
                rewriter.float_weights(node)
            tagged = len(tags) + 1
            original = rewriter.tag_output(node, tagged)
            tags.append(FloatOpTag(name, kind, original * (1 + tagged * TAG_STEP), original))
        elif form == "unquantized-output":
            rewriter.drop_output_quantization(node)
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    derived = type(module)(gm).eval()
    derived.float_op_tags = tuple(tags)
    derived.plan = dict(plan)
    return derived


# ---------------------------------------------------------------------------------- for the precision planner

#: Ops OpenVINO's CPU plugin does not run on int8 inputs (NNCF quantizes no input of theirs): a quantizer
#: between a conv and one of them only stops the plugin fusing it into the conv.
OPENVINO_UNQUANTIZED_READERS = (
    "hardswish",
    "hardsigmoid",
    "silu",
    "sigmoid",
    "tanh",
    "gelu",
    "relu",
    "clamp",
)


def _readers(node: torch.fx.Node) -> list[torch.fx.Node]:
    """The ops reading `node`'s (quantized) output, through its quantize/dequantize pair."""
    found = _output_quant(node)
    if found is None:
        return list(node.users)
    _, dqs = found
    return [u for dq in dqs for u in dq.users]


def _producer(node: torch.fx.Node) -> torch.fx.Node:
    """The op whose output `node` is, looking back through dequantize/quantize."""
    q, dq, _, _ = _q_ops()
    while node.target in (q, dq) and isinstance(node.args[0], torch.fx.Node):
        node = node.args[0]
    return node


def openvino_placement(module: Any) -> dict[str, str]:
    """Where NNCF would not quantize for OpenVINO: `unquantized-output` for every op whose output only
    activations read (the plugin fuses conv + activation when no FakeQuantize sits between them) and for
    the two sides of a squeeze-excitation gate (NNCF's SE_BLOCK pattern leaves its mean and multiply
    unquantized: the gate and the features it scales)."""
    gm = module.graph_module
    kinds = _op_kinds()
    ops = {op.node: op for op in quantized_ops(gm)}
    gates = {"sigmoid", "hardsigmoid"}
    gate_muls = {
        n
        for n in gm.graph.nodes
        if kinds.get(n.target) == "mul"
        and any(isinstance(a, torch.fx.Node) and kinds.get(_producer(a).target) in gates for a in n.args[:2])
    }
    plan: dict[str, str] = {}
    for node in gm.graph.nodes:
        op = ops.get(node.name)
        if op is None or "unquantized-output" not in op.forms:
            continue
        readers = _readers(node)
        if not readers:
            continue
        scaled_by_gate = any(r in gate_muls for r in readers)
        unquantized = all(
            kinds.get(r.target) in OPENVINO_UNQUANTIZED_READERS
            or r in gate_muls
            or (scaled_by_gate and kinds.get(r.target) == "mean")
            for r in readers
        )
        if unquantized:
            plan[node.name] = "unquantized-output"
    return plan


def plan_ops(module: Any) -> list[QuantizedOp]:
    """The ops of a quantized model a precision plan chooses forms for."""
    return quantized_ops(module.graph_module)


def plan_layers(module: Any, input_shape: list[int]) -> dict[str, Any]:
    """fx node name -> LayerOp (the op's shapes, for the latency model) of a quantized model."""
    from edgecompress.frameworks.torch_layers import layer_ops

    return {layer.node: layer for layer in layer_ops(copy.deepcopy(module.graph_module), input_shape)}
