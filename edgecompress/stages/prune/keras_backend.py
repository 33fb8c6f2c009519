"""Keras backend of `prune`: pattern sparsity (`keras_sparsity.py`) or structured channel pruning that rebuilds
the model with fewer filters (`keras_channel.py`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgecompress.context import RunContext
    from edgecompress.stages.prune.stage import PruneConfig


def prune(model: Any, config: PruneConfig, ctx: RunContext) -> Any:
    """Zero weights in a pattern (methods magnitude, block, nm, kernel_pattern) or remove channels (channel)."""
    if config.pattern:
        from edgecompress.stages.prune.keras_sparsity import prune_pattern

        return prune_pattern(model, config, ctx)
    from edgecompress.stages.prune.keras_channel import prune as prune_channels

    return prune_channels(model, config, ctx)
