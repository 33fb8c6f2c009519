"""Keras side of `round_to: auto` (`widths.py` has the method): the pruning groups of a tf_keras model as the
width plans see them, the layers' latency ops by name, and the snap of a pruned model's widths to the right
edges of their latency plateaus on the recipe's export targets.

A group's producers are the conv, dense and depthwise layers writing its channels (a depthwise conv reads
and writes the same channels: resizing its output resizes both), its consumers the layers reading them; a
SeparableConv2D reads through its depthwise half (`<layer>/depthwise` in the latency ops) and its 1x1 half
(`<layer>`), and writes through the 1x1 half only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from edgecompress.frameworks.keras_groups import ChannelGraph, channel_graph
from edgecompress.stages.prune.widths import Group, snap_widths

if TYPE_CHECKING:
    from edgecompress.context import RunContext

_KERNELS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense")


def pruning_groups(analysis: ChannelGraph, original: dict[str, int], skip: set[str]) -> list[Group]:
    """The prunable groups of `analysis` not in `skip`, each with its unpruned width (`original`, by group
    name; its width now when not there) and its layers by role."""
    kinds = {n.name: n for n in analysis.nodes}
    roles: dict[int, tuple[list[str], list[str], list[str], int]] = {}
    for name, node in kinds.items():
        if node.kind not in _KERNELS or not analysis.out_maps.get(name) or not analysis.in_maps.get(name):
            continue
        writes = {int(g) for g in analysis.unit_group[analysis.out_maps[name][0]]}
        reads = {int(g) for g in analysis.unit_group[analysis.in_maps[name][0]]}
        groups = int(getattr(node.layer, "groups", 1) or 1) if node.kind == "Conv2D" else 1
        for g in writes | reads:
            producers, consumers, readers, step = roles.setdefault(g, ([], [], [], 1))
            if groups > 1:
                step = math.lcm(step, groups)
                roles[g] = (producers, consumers, readers, step)
            if g in writes:
                producers.append(name)
            if g in reads:
                readers.append(name)
                if g not in writes:
                    halves = [f"{name}/depthwise", name] if node.kind == "SeparableConv2D" else [name]
                    consumers.extend(halves)
    out = []
    for g, group in enumerate(analysis.groups):
        if not group.prunable or group.name in skip or g not in roles:
            continue
        producers, consumers, readers, step = roles[g]
        out.append(
            Group(
                root=group.name,
                channels=group.width,
                original=original.get(group.name, group.width),
                step=step,
                producers=tuple(dict.fromkeys(producers)),
                consumers=tuple(dict.fromkeys(consumers)),
                readers=tuple(dict.fromkeys(readers)),
            )
        )
    return out


def snap(
    unpruned: Any, wanted: Any, skip: set[str], ctx: RunContext
) -> tuple[dict[str, int], list[Group], dict]:
    """The width plan (group name -> channels) of round_to auto for `wanted` (the model pruned at round_to 1),
    the groups it covers and what was measured (`widths.snap_widths`)."""
    from edgecompress.frameworks.keras_ops import layer_ops

    shape = [1, *ctx.input_shape[1:]]
    original = {g.name: g.width for g in channel_graph(unpruned).groups}
    groups = pruning_groups(channel_graph(wanted), original, skip)

    def layers(model: Any) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for op in layer_ops(model, shape):
            if op.kind in ("conv", "linear"):
                out.setdefault(op.node, []).append(op)
        return out

    plan, info = snap_widths(wanted, groups, ctx, layers=layers)
    return plan, groups, info
