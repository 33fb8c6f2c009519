"""Keras backend of `prune`'s pattern methods (magnitude, block, nm, kernel_pattern): the same plan as PyTorch
(`pattern_plan.py`, over the kernels in the canonical layout), the zeros held through every later training
stage by `frameworks/keras_masks.py`, kept through QAT by TFMOT's prune-preserving scheme
(`stages/quantize/keras_backend.py`) and read back from the exported files by the build.

Blocks are over output x input weights at each kernel position in every conv and dense layer (TFMOT's own
`block_size` covers 2-D weights only), N:M groups run along the input channels (consecutive in a .tflite's
OHWI kernels), and a DepthwiseConv2D, or a SeparableConv2D's depthwise half, is left dense for N:M (one input
per output channel), as in PyTorch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecompress.errors import ModelError
from edgecompress.frameworks.keras_layers import (
    canonical_weight,
    canonical_weights,
    find_classifier,
    set_canonical_weight,
    weight_layers,
)
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
    """Zero `model`'s weights as `config` says (oneshot; polynomial leaves it to the next training stage) and
    record the plan and per-layer results in the run notes."""
    plan = plan_sparsity(model, config, ctx)
    if ctx.sparsity_dense is None:
        ctx.sparsity_dense = ctx.adapter.copy(model)  # exported as each export's dense twin
    for name, why in left_dense(plan):  # warned before training by the precheck
        ctx.ui.info(f"prune: {name} left dense: {why}")
    if config.sparsity_schedule == "oneshot":
        layers = weight_layers(model)
        for name, data in plan["layers"].items():
            layer = layers[name][0]
            weight = canonical_weight(layer, name)
            set_canonical_weight(layer, weight * keep_mask(weight, LayerPattern.from_json(data)), name)
    ctx.note("sparsity_plan", plan)
    note_layers(model, plan, ctx)
    return model


def reference_artifacts(ctx: RunContext, out_dir: Path) -> list[tuple[Any, Any, str]]:
    """The dense model of a pattern-sparsity stage exported as every export (`<export>-dense`, role
    dense-reference: what the zeros buy): float exports as they are, int8 ones after a post-training
    quantization (the converter's, on the calibration split) — (artifact, the model its parity is checked
    against, role)."""
    from edgecompress.registry import EXPORTERS
    from edgecompress.stages.quantize.keras_backend import quantize
    from edgecompress.stages.quantize.stage import QuantizeConfig

    if ctx.sparsity_dense is None:
        return []
    out = []
    quantized = None
    for i, spec in enumerate(ctx.recipe.export):
        name = f"{spec.artifact_name}-dense"
        with ctx.scratch(i):  # the PTQ's notes are dropped
            source = ctx.sparsity_dense
            if spec.precision == "int8":
                if quantized is None:
                    config = QuantizeConfig(mode="ptq", calibration_samples=256)
                    quantized = quantize(ctx.adapter.copy(source), config, ctx)
                source = quantized
            dense_spec = spec.model_copy(update={"name": name, "device": None, "plan": None})
            artifact = EXPORTERS.get(spec.format)().export(source, dense_spec, ctx, out_dir)
        out.append((artifact, source, "dense-reference"))
    return out
