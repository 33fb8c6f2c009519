"""Keras backend of `prune`'s pattern methods (magnitude, block, nm, kernel_pattern): the same plan as PyTorch
(`pattern_plan.py`, over the kernels in the canonical layout), carried out by TFMOT's `prune_low_magnitude` on
the layers and patterns it supports and by edgecompress's own masks on the rest
(`frameworks/keras_tfmot_prune.py` says which and why: blocks in conv kernels, kernel patterns, N:M ramps,
depthwise and separable convs keep the masks). The plan records each layer's engine ("tfmot" or "masks");
the stage's `sparsity_engines` note shows it with the reason. TFMOT's wrappers are stripped when its pruning
ends (here for oneshot, at the end of the next train/distill for polynomial); from then on every layer's zeros
are held through later training stages by `frameworks/keras_masks.py`, kept through QAT by TFMOT's
prune-preserving scheme (`stages/quantize/keras_backend.py`) and read back from the exported files by the build.

Blocks are over output x input weights at each kernel position in every conv and dense layer, N:M groups run
along the input channels (consecutive in a .tflite's OHWI kernels), and a DepthwiseConv2D, or a
SeparableConv2D's depthwise half, is left dense for N:M (one input per output channel), as in PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgecompress.errors import ModelError
from edgecompress.frameworks.keras_layers import (
    canonical_weight,
    canonical_weights,
    find_classifier,
    set_canonical_weight,
    weight_layers,
)
from edgecompress.frameworks.keras_tfmot_prune import MASKS, TFMOT, prune_stage
from edgecompress.sparsity import LayerPattern, keep_mask
from edgecompress.stages.prune.pattern_plan import check_plan, left_dense, note_layers, plan_pattern

if TYPE_CHECKING:
    from edgecompress.context import RunContext
    from edgecompress.stages.prune.stage import PruneConfig


def plan_sparsity(model: Any, config: PruneConfig, ctx: RunContext) -> dict[str, Any]:
    """The sparsity plan of `config` on `model` (`pattern_plan.plan_pattern` over its conv/dense kernels)."""
    from edgecompress.frameworks.keras import KerasQuantized

    if isinstance(model, KerasQuantized):
        raise ModelError("prune: the model is already quantized; put pattern sparsity before quantize")
    layers = weight_layers(model)
    weights = canonical_weights(model)
    classifier = find_classifier(model) if config.ignore_classifier else None
    return plan_pattern(config, weights, {n: g for n, (_, g) in layers.items()}, classifier)


def precheck(model: Any, config: PruneConfig, ctx: RunContext, index: int) -> None:
    """`pattern_plan.check_plan` of the plan on the model as loaded."""
    check_plan(lambda: plan_sparsity(model, config, ctx), ctx, index)


def prune_pattern(model: Any, config: PruneConfig, ctx: RunContext) -> Any:
    """Zero `model`'s weights as `config` says (oneshot; polynomial leaves it to the next training stage), each
    layer by TFMOT or by the masks, and record the plan (with each layer's engine) and per-layer results in the
    run notes."""
    plan = plan_sparsity(model, config, ctx)
    if ctx.sparsity_dense is None:
        ctx.sparsity_dense = ctx.adapter.copy(model)  # exported as each export's dense twin
    for name, why in left_dense(plan):  # warned before training by the precheck
        ctx.ui.info(f"prune: {name} left dense: {why}")
    engines = prune_stage(model, plan)  # oneshot: the TFMOT layers are pruned now
    if config.sparsity_schedule == "oneshot":
        layers = weight_layers(model)
        for name, data in plan["layers"].items():
            if engines[name][0] == MASKS:
                layer = layers[name][0]
                weight = canonical_weight(layer, name)
                set_canonical_weight(layer, weight * keep_mask(weight, LayerPattern.from_json(data)), name)
    plan["engines"] = {n: e for n, (e, _) in engines.items()}
    ctx.note("sparsity_plan", plan)
    ctx.note("sparsity_engines", [{"layer": n, "engine": e, "why": why} for n, (e, why) in engines.items()])
    by_tfmot = sum(e == TFMOT for e, _ in engines.values())
    ctx.ui.info(
        f"prune: {by_tfmot} of {len(engines)} layers pruned by TFMOT's prune_low_magnitude, the rest by "
        "edgecompress's masks (the stage's sparsity_engines note says why)"
    )
    note_layers(model, plan, ctx)
    return model
