"""Channel dependency groups of a tf_keras model (functional or Sequential), found per channel.

Every channel a layer creates (a conv's or dense's output channel, an input channel, the output of a layer
the analysis cannot see into) is a *unit*; a tensor's channel axis is an array of unit ids, one per position.
Layers that keep channels apart pass their input's array on (batch norm, activations, pooling, padding,
element-wise TensorFlow ops with scalar constants, a depthwise conv repeating each unit `depth_multiplier`
times, Flatten tiling it over the spatial positions); an Add or Multiply unites the units at equal positions
(they must be removed together); a Concatenate joins its inputs' arrays. A *group* is every unit one layer
created plus every unit united with one of them: it loses one ratio of its width. Concatenated inputs keep
their own groups, and a consumer of the concatenation reads units of several groups at its offsets.

A group is frozen (not prunable) when one of its units reaches a model output, is the model input, passes a
layer that mixes channels (softmax over channels, a grouped conv, a Reshape that does not keep channels
last, per-channel constants) or a layer the rebuild does not know; `ChannelGroup.reason` says which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecompress.errors import ModelError
from edgecompress.frameworks import keras_env
from edgecompress.frameworks.keras_layers import Node, graph

#: Layers whose output channels are new (they may be pruned) and whose input channels follow their inputs.
PRODUCERS = frozenset({"Conv2D", "Dense", "SeparableConv2D", "Conv2DTranspose"})
#: Layers whose output channel i is a function of their input channel i only.
PASS_THROUGH = frozenset(
    {
        "BatchNormalization", "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "ThresholdedReLU", "Softmax",
        "Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
        "ActivityRegularization", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
        "GlobalMaxPooling2D", "ZeroPadding2D", "Cropping2D", "UpSampling2D", "Rescaling", "Normalization",
        "Identity", "DepthwiseConv2D",
    }
)  # fmt: skip
#: Element-wise merges: their inputs' channels at equal positions are one channel.
ELEMENTWISE = frozenset({"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"})
#: Every layer class the channel analysis (and so the rebuild) understands.
KNOWN = PRODUCERS | PASS_THROUGH | ELEMENTWISE | {"InputLayer", "Concatenate", "Flatten", "Reshape"}


@dataclass(frozen=True)
class ChannelGroup:
    """Channel dimensions that must lose the same indices."""

    name: str  # the layer that created its first channel
    width: int  # distinct channels (units)
    producers: tuple[str, ...]  # conv/dense layers whose output channels are the group's, graph order
    members: tuple[str, ...]  # every layer that reads or writes the group's channels, graph order
    coupling: tuple[str, ...] = ()  # residual add, SE gate, concat, depthwise conv, flatten
    #: (kind, layer, text) of what keeps the group whole: output, input, opaque, grouped, softmax, mixing
    frozen: tuple[tuple[str, str, str], ...] = ()

    @property
    def prunable(self) -> bool:
        return not self.frozen

    @property
    def reason(self) -> str:
        """Why the group is not prunable ("" when it is)."""
        return self.frozen[0][2] if self.frozen else ""


@dataclass
class ChannelGraph:
    """The per-channel analysis: which unit sits at every channel position of every layer's inputs and
    outputs, and the groups the units form."""

    nodes: list[Node]
    groups: list[ChannelGroup]
    in_maps: dict[str, list[np.ndarray]]  # layer -> unit ids along each input's channel axis
    out_maps: dict[str, list[np.ndarray]]  # layer -> unit ids along each output's channel axis
    unit_group: np.ndarray  # unit id -> index into groups
    unit_index: np.ndarray  # unit id -> index of the channel within its group

    def alive(self, keep: dict[str, np.ndarray]) -> np.ndarray:
        """Unit id -> kept, for `keep` (group name -> kept channel indices; groups not named keep all)."""
        masks = []
        for g in self.groups:
            mask = np.ones(g.width, dtype=bool)
            if g.name in keep:
                mask[:] = False
                mask[np.asarray(keep[g.name], dtype=int)] = True
            masks.append(mask)
        return np.array(
            [masks[g][i] for g, i in zip(self.unit_group, self.unit_index, strict=True)], dtype=bool
        )

    def group_of(self, layer: str) -> ChannelGroup | None:
        """The group of a layer's output channels (None when it has none or several)."""
        maps = self.out_maps.get(layer)
        if not maps or len(maps[0]) == 0:
            return None
        found = {int(self.unit_group[u]) for u in maps[0]}
        return self.groups[found.pop()] if len(found) == 1 else None


# ------------------------------------------------------------------------------------------- channel analysis


class _Units:
    """Channel units with two union-finds: `unit` (removed together) and `group` (pruned by one ratio)."""

    def __init__(self) -> None:
        self.unit: list[int] = []
        self.group: list[int] = []
        self.creator: list[str] = []
        self.frozen: dict[int, list[tuple[str, str, str]]] = {}

    def new(self, n: int, creator: str, freeze: tuple[str, str, str] | None = None) -> np.ndarray:
        start = len(self.unit)
        ids = np.arange(start, start + n, dtype=np.int64)
        self.unit += ids.tolist()
        self.group += [start] * n
        self.creator += [creator] * n
        if freeze:
            self.freeze(ids, freeze)
        return ids

    def freeze(self, ids: np.ndarray, why: tuple[str, str, str]) -> None:
        for u in ids.tolist():
            self.frozen.setdefault(u, []).append(why)

    @staticmethod
    def _find(parent: list[int], u: int) -> int:
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    def unite(self, a: np.ndarray, b: np.ndarray) -> bool:
        """Make the units at equal positions one; whether any two were apart."""
        merged = False
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            for parent in (self.unit, self.group):
                rx, ry = self._find(parent, x), self._find(parent, y)
                if rx != ry:
                    parent[max(rx, ry)] = min(rx, ry)
                    merged = True
        return merged

    def roots(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.unit)
        return (
            np.array([self._find(self.unit, u) for u in range(n)], dtype=np.int64),
            np.array([self._find(self.group, u) for u in range(n)], dtype=np.int64),
        )


def channel_graph(model: Any) -> ChannelGraph:
    """The channel analysis of a functional or Sequential model (see the module docstring).

    ModelError for a subclassed model and for a layer called more than once (a shared layer)."""
    nodes = graph(model)
    counts: dict[str, int] = {}
    for node in nodes:
        counts[node.name] = counts.get(node.name, 0) + 1
    for node in nodes:
        if counts[node.name] > 1:
            raise ModelError(
                f"layer '{node.name}' ({node.kind}) is called {counts[node.name]} times in the model (a "
                "shared layer): channel pruning needs every layer called once; give each call its own layer"
            )
    units = _Units()
    tensors: dict[tuple[str, int, int], np.ndarray] = {}
    in_maps: dict[str, list[np.ndarray]] = {}
    out_maps: dict[str, list[np.ndarray]] = {}
    coupling: dict[str, str] = {}
    for node in nodes:
        ins = [tensors[key] for key in node.inputs]
        in_maps[node.name] = ins
        outs = _propagate(node, ins, units, coupling)
        out_maps[node.name] = outs
        for i, arr in enumerate(outs):
            tensors[(node.name, node.index, i)] = arr
    for t in model.outputs:
        layer, index, ti = t._keras_history
        units.freeze(tensors[(layer.name, index, ti)], ("output", layer.name, "reaches the model output"))
    return _assemble(nodes, units, in_maps, out_maps, coupling)


def _propagate(
    node: Node, ins: list[np.ndarray], units: _Units, coupling: dict[str, str]
) -> list[np.ndarray]:
    """The unit arrays of a node's outputs from its inputs' (and the unions and freezes it implies)."""
    layer, kind, name = node.layer, node.kind, node.name
    width = node.out_shapes[0][-1] if node.out_shapes and node.out_shapes[0] else 0

    def fresh(why: tuple[str, str, str] | None = None) -> list[np.ndarray]:
        return [units.new(s[-1] if s and s[-1] else 0, name, why) for s in node.out_shapes]

    def mixing(text: str, kind_: str = "mixing") -> list[np.ndarray]:
        why = (kind_, name, text)
        for arr in ins:
            units.freeze(arr, why)
        return fresh(why)

    if kind == "InputLayer":
        return fresh(("input", name, "the model's input"))
    if _elementwise_op(node):
        kind = "Add" if len(ins) > 1 else "Identity"
    elif kind not in KNOWN:
        custom = kind == "Lambda" or not type(layer).__module__.startswith(("tf_keras.", "keras."))
        text = (
            f"layer '{name}' ({kind}) runs custom code the channel rebuild cannot see into"
            if custom
            else f"layer '{name}' ({kind}) is a layer the channel rebuild does not know"
        )
        if isinstance(layer, keras_env.keras().Model):
            text = f"layer '{name}' is a nested model: the channel rebuild cannot see into it"
        return mixing(text, "opaque")
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return mixing(f"'{name}' is channels_first: only channels-last layers are pruned")
    if kind == "Conv2D" and layer.groups > 1:
        return mixing(f"grouped conv '{name}' (groups={layer.groups}) keeps its channels", "grouped")
    if kind in PRODUCERS:
        outs = fresh()
        if _softmax(layer):
            units.freeze(outs[0], ("softmax", name, f"'{name}' applies a softmax over its channels"))
        return outs
    if kind == "DepthwiseConv2D":
        coupling[name] = "depthwise conv"
        return [np.repeat(ins[0], layer.depth_multiplier)]
    if kind == "BatchNormalization" and list(layer.axis) != [len(node.out_shapes[0])]:
        return mixing(f"batch norm '{name}' normalizes axis {layer.axis}, not the channels")
    if _softmax(layer) or (kind == "Softmax" and layer.axis in (-1, len(node.out_shapes[0]))):
        return mixing(f"'{name}' applies a softmax over the channels")
    if kind == "Normalization" or (kind == "Rescaling" and np.size(layer.scale) * np.size(layer.offset) > 1):
        return mixing(f"'{name}' ({kind}) has per-channel constants")
    if kind in PASS_THROUGH:
        return [ins[0]]
    if kind == "Flatten":
        coupling[name] = "flatten"
        return [np.tile(ins[0], math.prod(node.out_shapes[0]) // max(len(ins[0]), 1))]
    if kind == "Reshape":
        return _reshape(node, ins[0], mixing)
    if kind == "Concatenate" and layer.axis in (-1, len(node.out_shapes[0])):
        coupling[name] = "concat"
        return [np.concatenate(ins)]
    # element-wise merges (and a concatenation along another axis): equal positions are one channel; an
    # input of one channel broadcasts over the others and stays apart
    full = [arr for arr in ins if len(arr) == width]
    if not full:
        return mixing(f"'{name}' ({kind}) broadcasts its inputs across channels")
    if any([units.unite(full[0], arr) for arr in full[1:]]):
        multiply = node.kind == "Multiply" or getattr(layer, "symbol", "") == "math.multiply"
        coupling[name] = "SE gate" if multiply else "residual add"
    return [full[0]]


def _softmax(layer: Any) -> bool:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "") in ("softmax", "log_softmax")


def _reshape(node: Node, arr: np.ndarray, mixing: Any) -> list[np.ndarray]:
    """A Reshape keeps channels when every block of its output's last dimension holds the same units."""
    total = math.prod(node.layer.input_shape[1:]) if None not in node.layer.input_shape[1:] else None
    width = node.out_shapes[0][-1] if node.out_shapes[0] else None
    if total and width and len(arr) and total % len(arr) == 0 and total % width == 0:
        flat = np.tile(arr, total // len(arr)).reshape(-1, width)
        if (flat == flat[0]).all():
            return [flat[0]]
    return mixing(f"reshape '{node.name}' moves channels out of the last axis")


def _assemble(
    nodes: list[Node],
    units: _Units,
    in_maps: dict[str, list[np.ndarray]],
    out_maps: dict[str, list[np.ndarray]],
    coupling: dict[str, str],
) -> ChannelGraph:
    unit_root, group_root = units.roots()
    order = {n.name: i for i, n in enumerate(nodes)}
    roots = sorted(set(group_root.tolist()))  # a group's root is its first-created unit
    where = {r: i for i, r in enumerate(roots)}
    unit_group = np.array([where[r] for r in group_root.tolist()], dtype=np.int64)
    unit_index = np.zeros(len(unit_root), dtype=np.int64)
    channel_lists: list[list[int]] = [[] for _ in roots]
    for u in range(len(unit_root)):  # units in creation order: a channel's index is that of its first unit
        g, r = unit_group[u], unit_root[u]
        if r == u:
            channel_lists[g].append(u)
    index_of = {r: i for chans in channel_lists for i, r in enumerate(chans)}
    unit_index[:] = [index_of[r] for r in unit_root.tolist()]
    touched: list[set[str]] = [set() for _ in roots]
    for maps in (in_maps, out_maps):
        for name, arrays in maps.items():
            for arr in arrays:
                for g in set(unit_group[arr].tolist()):
                    touched[g].add(name)
    kinds = {n.name: n.kind for n in nodes}
    groups = []
    seen: dict[str, int] = {}
    for g, root in enumerate(roots):
        members_u = np.flatnonzero(unit_group == g)
        producers = sorted(
            {units.creator[u] for u in members_u if kinds.get(units.creator[u]) in PRODUCERS},
            key=order.__getitem__,
        )
        frozen: list[tuple[str, str, str]] = []
        for u in members_u.tolist():
            frozen += [w for w in units.frozen.get(u, []) if w not in frozen]
        members = sorted(touched[g], key=order.__getitem__)
        name = units.creator[root]
        seen[name] = seen.get(name, 0) + 1
        groups.append(
            ChannelGroup(
                name=name if seen[name] == 1 else f"{name}:{seen[name]}",  # a layer's second output
                width=len(channel_lists[g]),
                producers=tuple(producers),
                members=tuple(members),
                coupling=tuple(dict.fromkeys(coupling[m] for m in members if m in coupling)),
                frozen=tuple(frozen),
            )
        )
    return ChannelGraph(nodes, groups, in_maps, out_maps, unit_group, unit_index)


#: TensorFlow ops (TFOpLambda layers, e.g. a hand-written hardswish `x * tf.nn.relu6(x + 3) / 6`) that act
#: on each element alone: with one tensor input and scalar constants they keep channels, with two they unite
#: them.
TF_ELEMENTWISE = frozenset(
    {
        "__operators__.add", "math.add", "math.subtract", "math.multiply", "math.truediv", "math.divide",
        "math.maximum", "math.minimum", "math.negative", "math.abs", "math.square", "math.sqrt", "math.exp",
        "math.sigmoid", "nn.sigmoid", "math.tanh", "nn.relu", "nn.relu6", "nn.elu", "nn.selu", "nn.silu",
        "nn.swish", "nn.leaky_relu", "nn.gelu", "clip_by_value", "identity",
    }
)  # fmt: skip


def _elementwise_op(node: Node) -> bool:
    """A TFOpLambda of TF_ELEMENTWISE whose constant arguments are all scalars."""
    if node.kind != "TFOpLambda" or getattr(node.layer, "symbol", "") not in TF_ELEMENTWISE:
        return False
    call = node.layer._inbound_nodes[node.index]
    constants = [
        a
        for a in (*call.call_args, *call.call_kwargs.values())
        if a is not None and not isinstance(a, str) and not hasattr(a, "_keras_history")
    ]
    try:
        return all(np.size(np.asarray(a)) == 1 for a in constants)
    except Exception:
        return False
