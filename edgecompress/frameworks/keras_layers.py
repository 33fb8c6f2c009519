"""Graph facts of a tf_keras model (functional or Sequential): its call graph, parameters, MACs, classifier,
layer infos, and conv/dense kernels in the canonical [out, in_per_group, kh, kw] layout. The channel
dependency groups are in `keras_groups.py`.

TensorFlow is imported through `keras_env` inside functions only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecompress.errors import ModelError
from edgecompress.frameworks.base import LayerInfo

#: Layers with weights that find_classifier walks back through (it walks through any weightless one too).
_TAIL = frozenset({"BatchNormalization", "PReLU", "Normalization"})
_STATISTICS = ("moving_mean", "moving_variance")  # torch keeps these as buffers, not parameters
_KERNELS = {"Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose", "Dense"}


@dataclass(frozen=True)
class Node:
    """One call of a layer in the model's graph."""

    name: str  # the layer's name
    layer: Any
    kind: str  # the layer's class name
    index: int  # which call of the layer (a node index into layer._inbound_nodes)
    inputs: tuple[tuple[str, int, int], ...]  # (layer name, node index, tensor index) of each input tensor
    out_shapes: tuple[tuple[int | None, ...], ...]  # static output shapes without the batch dimension


# ------------------------------------------------------------------------------------------------ the graph


#: TFMOT's QAT layer wrappers, whose `layer` is the Keras layer they wrap.
WRAPPERS = ("QuantizeWrapper", "QuantizeWrapperV2")


def graph(model: Any) -> list[Node]:
    """The model's layer calls in topological order. ModelError for a model without a graph."""
    keras = _keras()
    if not isinstance(model, keras.Model):
        raise ModelError(f"expected a tf_keras Model, got {type(model).__name__}")
    if not getattr(model, "_is_graph_network", False):
        if isinstance(model, keras.Sequential):
            raise ModelError(
                f"Sequential model '{model.name}' has no input shape yet: start it with keras.Input(shape) "
                "or build it"
            )
        raise ModelError(
            f"'{model.name}' is a subclassed Keras model ({type(model).__name__}): channel pruning and layer "
            "analysis need a functional or Sequential model (rebuild it with the functional API)"
        )
    nodes = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            layer = inner = node.layer
            while type(inner).__name__ in WRAPPERS and hasattr(inner, "layer"):
                inner = inner.layer  # a QAT model counts as the layers it wraps
            inputs = tuple((src.name, ni, ti) for src, ni, ti, _ in node.iterate_inbound())
            nodes.append(
                Node(
                    layer.name,
                    inner,
                    type(inner).__name__,
                    layer._inbound_nodes.index(node),
                    inputs,
                    _static_shapes(node.output_shapes),
                )
            )
    return nodes


def _static_shapes(shapes: Any) -> tuple[tuple[int | None, ...], ...]:
    """A node's output shape(s) as tuples without the batch dimension."""
    tf = _tf()
    if isinstance(shapes, tf.TensorShape) or (
        isinstance(shapes, tuple | list) and all(isinstance(d, int | type(None)) for d in shapes)
    ):
        shapes = [shapes]
    return tuple(tuple(tf.TensorShape(s).as_list()[1:]) for s in shapes)


def ensure_graph(model: Any, input_shape: list[int]) -> None:
    """Build a Sequential model that has no input yet from the recipe's batch-first input shape."""
    keras = _keras()
    if isinstance(model, keras.Sequential) and not getattr(model, "_is_graph_network", False):
        model.build([None, *input_shape[1:]])


def shapes(model: Any, nodes: list[Node], input_shape: list[int]) -> dict[tuple[str, int, int], tuple]:
    """Every node's output shapes (no batch dimension) when the model is fed `input_shape` (batch first):
    propagated by each layer's compute_output_shape, the graph's static shapes where that fails."""
    tf = _tf()
    out: dict[tuple[str, int, int], tuple] = {}
    for node in nodes:
        if node.kind == "InputLayer":
            static = node.out_shapes[0]
            given = tuple(input_shape[1:])
            fits = len(static) == len(given) and all(
                s in (None, g) for s, g in zip(static, given, strict=True)
            )
            found = [given if fits else static]
        else:
            ins = [tf.TensorShape([1, *out[key]]) for key in node.inputs]
            try:
                result = node.layer.compute_output_shape(ins[0] if len(ins) == 1 else ins)
                found = list(_static_shapes(result)) or list(node.out_shapes)
            except Exception:  # a layer without a usable compute_output_shape: the static graph shape
                found = list(node.out_shapes)
        for i, shape in enumerate(found):
            out[(node.name, node.index, i)] = tuple(shape)
    return out


# --------------------------------------------------------------------------------- params, MACs, classifier


def count_params(model: Any) -> int:
    """Parameters of the model, shared weights once; batch-norm moving statistics are not counted (torch
    keeps them as buffers), so a Keras model and its torch twin report the same number."""
    seen: dict[int, int] = {}
    for w in model.weights:
        if weight_role(w) not in _STATISTICS and not _quantizer_state(w):
            seen[id(w)] = int(np.prod(w.shape))
    return sum(seen.values())


def _quantizer_state(variable: Any) -> bool:
    """A TFMOT QAT model's quantizer state (ranges, step counter, prune-preserving masks), not a parameter."""
    role = weight_role(variable)
    return role in ("optimizer_step", "sparsity_mask") or role.endswith(("_min", "_max"))


def layer_params(layer: Any) -> int:
    """Parameters of one layer (moving statistics excluded, as in count_params)."""
    return sum(int(np.prod(w.shape)) for w in layer.weights if weight_role(w) not in _STATISTICS)


def count_macs(model: Any, input_shape: list[int]) -> int:
    """Multiply-accumulates of one sample fed `input_shape` (batch first, NHWC): conv, depthwise, separable,
    transposed conv and dense layers (nested models counted inside); 0 for the rest."""
    return sum(layer_macs(model, input_shape).values())


def layer_macs(model: Any, input_shape: list[int]) -> dict[str, int]:
    """MACs of one sample per layer name (every call of a shared layer added up)."""
    ensure_graph(model, input_shape)
    nodes = graph(model)
    known = shapes(model, nodes, input_shape)
    out: dict[str, int] = {}
    for node in nodes:
        ins = [known[key] for key in node.inputs]
        outs = [known[(node.name, node.index, i)] for i in range(len(node.out_shapes))]
        out[node.name] = out.get(node.name, 0) + _macs(node, ins, outs)
    return out


def _macs(node: Node, ins: list[tuple], outs: list[tuple]) -> int:
    layer, kind = node.layer, node.kind
    if kind not in _KERNELS:
        if isinstance(layer, _keras().Model) and ins:
            return count_macs(layer, [1, *ins[0]])
        return 0
    if any(d is None for d in (*ins[0], *outs[0])):
        raise ModelError(
            f"layer '{node.name}' ({kind}) has an unknown input or output size {ins[0]} -> {outs[0]}: give "
            "the model a fixed input shape to count its MACs"
        )
    cin, cout = ins[0][-1], outs[0][-1]
    if kind == "Dense":
        return cin * cout * math.prod(outs[0][:-1])
    kh, kw = layer.kernel_size
    if kind == "Conv2DTranspose":
        return kh * kw * cin * cout * math.prod(ins[0][:-1])
    spatial = math.prod(outs[0][:-1])
    if kind == "Conv2D":
        return kh * kw * (cin // layer.groups) * cout * spatial
    depthwise = kh * kw * cin * layer.depth_multiplier * spatial
    if kind == "DepthwiseConv2D":
        return depthwise
    return depthwise + cin * layer.depth_multiplier * cout * spatial  # SeparableConv2D


def find_classifier(model: Any) -> str | None:
    """The layer whose outputs are the classes: walking back from the model's first output through
    activations, softmax, dropout, reshape, flatten, pooling (and any other single-input layer without
    weights) to the last Dense/conv, which must have the output's width."""
    nodes = {(n.name, n.index): n for n in graph(model)}
    layer, index, _ = model.outputs[0]._keras_history
    node = nodes[(layer.name, index)]
    width = node.out_shapes[0][-1] if node.out_shapes[0] else None
    while True:
        if node.kind in _KERNELS:
            return node.name if node.out_shapes[0][-1] == width else None
        if len(node.inputs) != 1 or (node.kind not in _TAIL and node.layer.weights):
            return None  # a weightless single-input layer (a custom activation) is walked through too
        node = nodes[node.inputs[0][:2]]


# ------------------------------------------------------------------------------------------------ layer infos


def layer_infos(model: Any, input_shape: list[int]) -> list[LayerInfo]:
    """Every layer that owns weights, with its MACs and whether channel pruning can shrink it."""
    keras = _keras()
    if not getattr(model, "_is_graph_network", False) and not isinstance(model, keras.Sequential):
        note = "subclassed model: per-layer MACs and pruning need a functional or Sequential model"
        return [
            LayerInfo(
                name=layer.name,
                kind=type(layer).__name__,
                params=layer_params(layer),
                macs=0,
                out_channels=None,
                prunable=False,
                note=note,
            )
            for layer in model.submodules
            if isinstance(layer, keras.layers.Layer) and layer.weights and not layer.submodules
        ]
    from edgecompress.frameworks.keras_groups import channel_graph

    macs = layer_macs(model, input_shape)
    analysis = channel_graph(model)
    classifier = find_classifier(model)
    kernels = {n.name for n in analysis.nodes if n.kind in _KERNELS}
    out = []
    for node in analysis.nodes:
        if not node.layer.weights:
            continue
        group = analysis.group_of(node.name)
        if node.name == classifier:
            prunable, note = False, "classifier: its outputs are the classes"
        elif group is None:
            prunable, note = False, f"{node.kind} has no prunable channels"
        elif not group.prunable:
            prunable, note = False, group.reason
        else:
            others = [
                m for m in group.members if m in kernels and m != node.name and _writes(analysis, m, group)
            ]
            shown = ", ".join(others[:4]) + (f" and {len(others) - 4} more" if len(others) > 4 else "")
            via = f" via {', '.join(group.coupling)}" if group.coupling else ""
            if not others:
                note = ""
            elif node.kind == "BatchNormalization" and len(others) == 1:
                note = f"channels follow {shown}"
            else:
                note = f"coupled with {shown}{via}"
            prunable = True
        kind = (
            f"Conv2D(grouped, groups={node.layer.groups})"
            if node.kind == "Conv2D" and node.layer.groups > 1
            else node.kind
        )
        width = node.out_shapes[0][-1] if node.out_shapes and node.out_shapes[0] else None
        out.append(
            LayerInfo(
                name=node.name,
                kind=kind,
                params=layer_params(node.layer),
                macs=macs.get(node.name, 0),
                out_channels=width,
                prunable=prunable,
                note=note,
            )
        )
    return out


def _writes(analysis: Any, layer: str, group: Any) -> bool:
    """Whether `layer`'s output channels belong to `group`."""
    g = analysis.groups.index(group)
    return any((analysis.unit_group[arr] == g).any() for arr in analysis.out_maps.get(layer, []))


# ------------------------------------------------------------------------------------------ canonical weights


def weight_layers(model: Any) -> dict[str, tuple[Any, int]]:
    """Conv and dense layers with kernels by name, graph order, with their groups (a depthwise conv's groups
    are its input channels). A SeparableConv2D gives two entries, `name/depthwise` and `name/pointwise`:
    pass the entry's key to canonical_weight and set_canonical_weight to say which."""
    out: dict[str, tuple[Any, int]] = {}
    for node in graph(model):
        layer, kind = node.layer, node.kind
        if kind not in _KERNELS or not layer.weights:
            continue
        if kind in ("DepthwiseConv2D", "SeparableConv2D"):
            cin = int(layer.depthwise_kernel.shape[2])
            if kind == "SeparableConv2D":
                out[f"{node.name}/depthwise"] = (layer, cin)
                out[f"{node.name}/pointwise"] = (layer, 1)
                continue
            out[node.name] = (layer, cin)
        else:
            out[node.name] = (layer, getattr(layer, "groups", 1))
    return out


def canonical_weights(model: Any) -> dict[str, np.ndarray]:
    """Every weight_layers entry's kernel in the canonical layout (what FrameworkAdapter.weights gives)."""
    return {key: canonical_weight(layer, key) for key, (layer, _) in weight_layers(model).items()}


def canonical_weight(layer: Any, key: str | None = None, *, holder: Any = None) -> np.ndarray:
    """The layer's kernel as [out, in_per_group, kh, kw] (edgecompress.sparsity.canonical): Conv2D
    [kh, kw, in/g, out] -> [out, in/g, kh, kw]; DepthwiseConv2D [kh, kw, in, mult] -> [in*mult, 1, kh, kw]
    (output channel c*mult + j, as TensorFlow orders them); Dense [in, out] -> [out, in, 1, 1];
    Conv2DTranspose [kh, kw, out, in] -> [out, in, kh, kw]. `key` is the weight_layers key; a SeparableConv2D
    needs it ('name/depthwise' or 'name/pointwise'). `holder`: the TFMOT wrapper around `layer`, which holds
    its kernel variable once wrapped."""
    from edgecompress.sparsity import canonical

    variable, kind = kernel_variable(layer, key, holder)
    w = variable.numpy()
    if kind == "depthwise":
        kh, kw = w.shape[:2]
        return w.reshape(kh, kw, -1).transpose(2, 0, 1)[:, None]
    if kind == "dense":
        return canonical(w.T)
    if kind == "transpose":
        return w.transpose(2, 3, 0, 1)
    return w.transpose(3, 2, 0, 1)


def set_canonical_weight(
    layer: Any, array: np.ndarray, key: str | None = None, *, holder: Any = None
) -> None:
    """Write a canonical-layout kernel (as canonical_weight gives it) back into the layer; `key`, `holder` as
    there."""
    variable, _ = kernel_variable(layer, key, holder)
    variable.assign(keras_array(layer, array, key, holder=holder))


def keras_array(layer: Any, array: np.ndarray, key: str | None = None, *, holder: Any = None) -> np.ndarray:
    """A canonical-layout array of the kernel's shape (a kernel, or a mask of it) in the kernel's own Keras
    layout and dtype; the inverse of canonical_weight's transposition. ModelError when the shape does not fit."""
    variable, kind = kernel_variable(layer, key, holder)
    shape = tuple(variable.shape)
    a = np.asarray(array, dtype=variable.dtype.as_numpy_dtype)
    if kind == "depthwise":
        w = a[:, 0].transpose(1, 2, 0).reshape(shape) if a.ndim == 4 and a.shape[1] == 1 else None
    elif kind == "dense":
        w = a.reshape(a.shape[0], -1).T if a.ndim == 4 and a.shape[2:] == (1, 1) else None
    elif kind == "transpose":
        w = a.transpose(2, 3, 0, 1) if a.ndim == 4 else None
    else:
        w = a.transpose(2, 3, 1, 0) if a.ndim == 4 else None
    if w is None or w.shape != shape:
        raise ModelError(
            f"layer '{layer.name}': a canonical weight of shape {list(a.shape)} does not fit its kernel "
            f"{list(shape)}; give the shape canonical_weight returns"
        )
    return w


def kernel_variable(layer: Any, key: str | None, holder: Any = None) -> tuple[Any, str]:
    """The kernel variable of a conv/dense layer and its layout kind. Looked up among the variables by role
    and layer name, not by attribute: TFMOT's QAT wrapper (`holder`) replaces `layer.kernel` by its
    fake-quantized tensor on every call and holds the variable itself."""
    kind = type(layer).__name__
    if kind == "SeparableConv2D":
        part = (key or "").rpartition("/")[2]
        if part not in ("depthwise", "pointwise"):
            raise ModelError(
                f"layer '{layer.name}' (SeparableConv2D) has two kernels: give the key "
                f"'{layer.name}/depthwise' or '{layer.name}/pointwise'"
            )
        role, layout = (
            ("depthwise_kernel", "depthwise") if part == "depthwise" else ("pointwise_kernel", "conv")
        )
    elif kind == "DepthwiseConv2D":
        role, layout = "depthwise_kernel", "depthwise"
    elif kind in _KERNEL_LAYOUTS:
        role, layout = "kernel", _KERNEL_LAYOUTS[kind]
    else:
        raise ModelError(f"layer '{layer.name}' ({kind}) has no conv or dense kernel")
    candidates = list(layer.weights) + (
        [v for v in holder.weights if v.name.rpartition("/")[0].endswith(layer.name)]
        if holder is not None
        else []
    )
    variable = next((v for v in candidates if weight_role(v) == role), None)
    if variable is None:
        raise ModelError(f"layer '{layer.name}' ({kind}) has no {role} variable (is it built?)")
    return variable, layout


#: The kernel layout of the layers whose kernel is called `kernel`.
_KERNEL_LAYOUTS = {"Dense": "dense", "Conv2DTranspose": "transpose", "Conv2D": "conv"}


def weight_role(variable: Any) -> str:
    """A weight's role in its layer: kernel, bias, gamma, moving_mean, depthwise_kernel, alpha, ..."""
    return variable.name.rpartition("/")[2].partition(":")[0]


def _keras() -> Any:
    from edgecompress.frameworks import keras_env

    return keras_env.keras()


def _tf() -> Any:
    from edgecompress.frameworks import keras_env

    return keras_env.tf()
