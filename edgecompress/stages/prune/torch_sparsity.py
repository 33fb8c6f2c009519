"""Torch backend of `prune`'s pattern methods (magnitude, block, nm, kernel_pattern): zero weights in a pattern.

The layers' shapes do not change; the zeros are recorded as a sparsity plan in the stage's notes
(`sparsity_plan`: per layer the pattern, JSON), which every later training stage reads to hold them
(`frameworks/torch_masks.py`), `polynomial` ramps over the next training stage, and the build checks in the
exported files. The pattern math and the plan are framework-free (`edgecompress/sparsity.py`,
`pattern_plan.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from edgecompress.errors import ModelError
from edgecompress.frameworks.torch import find_classifier
from edgecompress.sparsity import LayerPattern, canonical, keep_mask
from edgecompress.stages.prune.pattern_plan import check_plan, left_dense, note_layers, plan_pattern
from edgecompress.stages.prune.torch_backend import _layer_names

if TYPE_CHECKING:
    from edgecompress.context import RunContext
    from edgecompress.stages.prune.stage import PruneConfig


def weight_layers(model: Any) -> dict[str, tuple[Any, int]]:
    """Conv and linear layers by name: (module, groups)."""

    modules = dict(model.named_modules())
    return {n: (modules[n], getattr(modules[n], "groups", 1)) for n in _layer_names(model)}


def plan_sparsity(model: Any, config: PruneConfig, ctx: RunContext) -> dict[str, Any]:
    """The sparsity plan of `config` on `model` (`pattern_plan.plan_pattern` over its conv/linear weights)."""
    import torch

    if isinstance(model, torch.jit.ScriptModule):
        raise ModelError(
            "prune: a TorchScript model's weights cannot be masked and fine-tuned; give a python entry"
        )
    layers = weight_layers(model)
    classifier = (
        find_classifier(model, [1, *ctx.input_shape[1:]], ctx.data.num_classes)
        if config.ignore_classifier
        else None
    )
    weights = {n: _weight(m) for n, (m, _) in layers.items()}
    return plan_pattern(config, weights, {n: g for n, (_, g) in layers.items()}, classifier)


def precheck(model: Any, config: PruneConfig, ctx: RunContext, index: int) -> None:
    """`pattern_plan.precheck` of the plan on the model as loaded."""
    check_plan(lambda: plan_sparsity(model, config, ctx), ctx, index)


def _weight(module: Any) -> np.ndarray:
    """The module's weight in the canonical [out, in_per_group, kh, kw] layout."""
    return canonical(module.weight.detach().cpu().numpy())


def prune_pattern(model: Any, config: PruneConfig, ctx: RunContext) -> Any:
    """Zero `model`'s weights as `config` says (oneshot; polynomial leaves it to the next training stage) and
    record the plan and per-layer results in the run notes."""
    import copy

    import torch

    plan = plan_sparsity(model, config, ctx)
    if ctx.sparsity_dense is None:
        ctx.sparsity_dense = copy.deepcopy(model)  # the build exports it as each export's dense twin
    layers = weight_layers(model)
    for name, why in left_dense(plan):  # warned before training by the precheck
        ctx.ui.info(f"prune: {name} left dense: {why}")
    if config.sparsity_schedule == "oneshot":
        with torch.no_grad():
            for name, data in plan["layers"].items():
                weight = layers[name][0].weight
                keep = keep_mask(_weight(layers[name][0]), LayerPattern.from_json(data))
                weight.mul_(torch.from_numpy(keep.reshape(weight.shape)).to(weight.dtype))
    ctx.note("sparsity_plan", plan)
    note_layers(model, plan, ctx)
    return model.eval()
