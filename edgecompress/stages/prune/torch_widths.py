"""Torch side of `round_to: auto` and of the width plans (`widths.py` has the method): the pruning groups of a
torch model (Torch-Pruning's DepGraph) and the pruning ratios that leave a width plan's exact channel counts."""

from __future__ import annotations

import math
from typing import Any

from edgecompress.stages.prune.widths import Group

__all__ = ["Group", "pruning_groups", "widths_pruner"]


def pruning_groups(model: Any, example: Any, ignored: list[Any]) -> list[Group]:
    """The model's pruning groups (Torch-Pruning DepGraph), each with its root, width and layers."""
    import torch_pruning as tp
    from torch import nn

    from edgecompress.errors import ModelError

    try:
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    except Exception as exc:
        raise ModelError(f"prune: Torch-Pruning could not trace the model's dependency graph: {exc}") from exc
    finally:
        model.eval()
    names = {m: n for n, m in model.named_modules()}
    groups = []
    for group in dg.get_all_groups(ignored_layers=ignored, root_module_types=(nn.Conv2d, nn.Linear)):
        root = group[0].dep.target.module
        channels = dg.get_out_channels(root)
        if channels is None or root not in names:
            continue
        producers, consumers, step = [], [], 1
        for dep, _ in group:
            module = dep.target.module
            if not isinstance(module, nn.Conv2d | nn.Linear) or module not in names:
                continue
            if dg.is_out_channel_pruning_fn(dep.handler):
                producers.append(names[module])
                if isinstance(module, nn.Conv2d) and 1 < module.groups < module.in_channels:
                    step = math.lcm(step, module.groups)
            elif dg.is_in_channel_pruning_fn(dep.handler):
                consumers.append(names[module])
                if isinstance(module, nn.Conv2d) and 1 < module.groups < module.in_channels:
                    step = math.lcm(step, module.groups)
        groups.append(
            Group(
                root=names[root],
                channels=int(channels),
                original=int(channels),
                step=step,
                producers=tuple(dict.fromkeys(producers)),
                consumers=tuple(dict.fromkeys(c for c in consumers if c not in producers)),
                readers=tuple(dict.fromkeys(consumers)),
            )
        )
    return groups


def widths_pruner(model: Any, plan: dict[str, int], original: dict[str, int]) -> dict[Any, float]:
    """Torch-Pruning's pruning_ratio_dict that leaves exactly plan[root] channels in each group (its
    per-scope count is int(initial * (1 - ratio)); the half channel keeps float error off the floor)."""
    modules = dict(model.named_modules())
    return {
        modules[root]: max(0.0, 1 - (keep + 0.5) / original[root])
        for root, keep in plan.items()
        if root in modules and keep < original[root]
    }
