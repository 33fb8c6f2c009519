"""Keras budget backend of latency-budget pruning (`latency_budget.py` has the method): a tf_keras model's
pruning groups (`keras_widths.pruning_groups` over the channel analysis), channel importances (the recipe's
criterion, `keras_channel.importance`), pruning to a width plan (a rebuilt model).
The int8 model a budget's export runs is `latency_budget.planned_int8`'s, for both frameworks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from edgecompress.frameworks.keras_groups import channel_graph
from edgecompress.stages.prune import keras_widths

if TYPE_CHECKING:
    from edgecompress.context import RunContext
    from edgecompress.stages.prune.stage import PruneConfig


class KerasBudget:
    """What `latency_budget` asks of a framework, for tf_keras models (see `torch_budget.TorchBudget`)."""

    def make_plan(self, model: Any, config: PruneConfig, ctx: RunContext) -> Any:
        from edgecompress.stages.prune.keras_channel import make_plan

        return make_plan(model, config, ctx)

    def widths(self, model: Any) -> dict[str, int]:
        """The width of every channel group, by its name (the layer that creates its channels)."""
        return {g.name: g.width for g in channel_graph(model).groups}

    @staticmethod
    def layer_key(layer: Any) -> str:
        """The name a latency op is filed under in a group's producers and consumers (a SeparableConv2D's
        halves: `<layer>/depthwise` and `<layer>`)."""
        return layer.node

    def groups(self, model: Any, plan: Any, shape: list[int]) -> list[Any]:
        analysis = channel_graph(model)
        return keras_widths.pruning_groups(analysis, {g.name: g.width for g in analysis.groups}, plan.frozen)

    def importances(self, model: Any, plan: Any, shape: list[int]) -> dict[str, np.ndarray]:
        """Per-channel importance of every group by the recipe's criterion (summed over the group's layers,
        not normalised: the knapsack compares groups)."""
        from edgecompress.stages.prune.keras_channel import _gradients, importance

        config = plan.config
        gradients = (
            _gradients(model, plan.ctx, config.taylor_batches) if config.criterion == "taylor" else None
        )
        scores = importance(model, channel_graph(model), config.criterion, gradients)
        return {name: s for name, s in scores.items() if name not in plan.frozen}

    def prune_to(self, model: Any, widths: dict[str, int], plan: Any, *, criterion: str | None = None) -> Any:
        """`model` rebuilt with `widths` channels per group, by the recipe's criterion (or `criterion`)."""
        current = self.widths(model)
        changed = {name: n for name, n in widths.items() if n < current.get(name, n)}
        return plan.apply(model, 0.0, plan=changed, criterion=criterion) if changed else model
