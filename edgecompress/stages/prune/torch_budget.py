"""Torch budget backend of latency-budget pruning (`latency_budget.py` has the method): a torch model's pruning
groups (Torch-Pruning's DepGraph), channel importances, pruning to a width plan.
The int8 model a budget's export runs is `latency_budget.planned_int8`'s, for both frameworks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from edgecompress.stages.prune import torch_widths

if TYPE_CHECKING:
    from edgecompress.context import RunContext
    from edgecompress.stages.prune.stage import PruneConfig


class TorchBudget:
    """What `latency_budget` asks of a framework, for torch models (see `keras_budget.KerasBudget`)."""

    def make_plan(self, model: Any, config: PruneConfig, ctx: RunContext) -> Any:
        from edgecompress.stages.prune.torch_backend import make_plan

        return make_plan(model, config, ctx)

    def widths(self, model: Any) -> dict[str, int]:
        """Output channels of every group root (every conv / linear module) by name."""
        from edgecompress.stages.prune.torch_backend import out_channels

        return out_channels(model)

    @staticmethod
    def layer_key(layer: Any) -> str:
        """The name a latency op is filed under in a group's producers and consumers (the module path)."""
        return layer.module

    def groups(self, model: Any, plan: Any, shape: list[int]) -> list[Any]:
        import torch

        return torch_widths.pruning_groups(model, torch.zeros(shape), _ignored(model, plan))

    def importances(self, model: Any, plan: Any, shape: list[int]) -> dict[str, np.ndarray]:
        """Per-channel importance of every group (the recipe's criterion, summed over the group's layers,
        not normalised: the knapsack compares groups)."""
        import torch
        import torch_pruning as tp
        from torch import nn

        criterion = plan.config.criterion
        importance = {
            "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1, normalizer=None, group_reduction="sum"),
            "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2, normalizer=None, group_reduction="sum"),
            "taylor": lambda: tp.importance.GroupTaylorImportance(normalizer=None, group_reduction="sum"),
            "bn_scale": lambda: tp.importance.BNScaleImportance(normalizer=None, group_reduction="sum"),
        }[criterion]()
        if criterion == "taylor":
            plan.accumulate_gradients(model)
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(shape))
        names = {m: n for n, m in model.named_modules()}
        scores: dict[str, np.ndarray] = {}
        for group in dg.get_all_groups(
            ignored_layers=_ignored(model, plan), root_module_types=(nn.Conv2d, nn.Linear)
        ):
            root = names.get(group[0].dep.target.module)
            imp = importance(group)
            if root is not None and imp is not None:
                scores[root] = np.abs(imp.detach().double().cpu().numpy())
        model.zero_grad(set_to_none=True)
        return scores

    def prune_to(self, model: Any, widths: dict[str, int], plan: Any, *, criterion: str | None = None) -> Any:
        """`model` pruned (in place) to `widths` by the recipe's criterion (or `criterion`)."""
        from edgecompress.stages.prune.torch_backend import out_channels

        ratios = torch_widths.widths_pruner(model, widths, out_channels(model))
        if ratios:
            extra = {"criterion": criterion} if criterion else {}
            plan.apply(model, 0.0, widths=ratios, **extra)
        return model


def _ignored(model: Any, plan: Any) -> list[Any]:
    modules = dict(model.named_modules())
    return [modules[n] for n in plan.ignored if n in modules]
