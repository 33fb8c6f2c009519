"""Keras side of `round_to: auto` and latency budgets (`widths.py` and `latency_budget.py` have the methods;
`channel_common.snap_to_plateaus` snaps through the budget backend): the pruning groups of a tf_keras model as
the width plans see them.

A group's producers are the conv, dense and depthwise layers writing its channels (a depthwise conv reads
and writes the same channels: resizing its output resizes both), its consumers the layers reading them; a
SeparableConv2D reads through its depthwise half (`<layer>/depthwise` in the latency ops) and its 1x1 half
(`<layer>`), and writes through the 1x1 half only.
"""

from __future__ import annotations

import math

from edgecompress.frameworks.keras_groups import ChannelGraph
from edgecompress.stages.prune.widths import Group

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
