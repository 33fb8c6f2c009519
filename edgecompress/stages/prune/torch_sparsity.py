"""Torch backend of `prune`'s pattern methods (magnitude, block, nm, kernel_pattern): zero weights in a pattern.

The layers' shapes do not change; the zeros are recorded as a sparsity plan in the stage's notes
(`sparsity_plan`: per layer the pattern, JSON), which every later training stage reads to hold them
(`frameworks/torch_masks.py`), `polynomial` ramps over the next training stage, and the build checks in the
exported files. The pattern math is framework-free (`edgecompress/sparsity.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from edgecompress.errors import ModelError
from edgecompress.frameworks.torch import find_classifier
from edgecompress.sparsity import (
    METHOD_KINDS,
    LayerPattern,
    allocate_global,
    canonical,
    choose_kernel_patterns,
    connectivity_for,
    keep_mask,
    kernel_pattern_sparsity,
    not_applicable,
    note_sparsity,
)
from edgecompress.stages.prune.torch_backend import _layer_names, _match

if TYPE_CHECKING:
    from edgecompress.context import RunContext
    from edgecompress.stages.prune.stage import PruneConfig


def weight_layers(model: Any) -> dict[str, tuple[Any, int]]:
    """Conv and linear layers by name: (module, groups)."""

    modules = dict(model.named_modules())
    return {n: (modules[n], getattr(modules[n], "groups", 1)) for n in _layer_names(model)}


def plan_sparsity(model: Any, config: PruneConfig, ctx: RunContext) -> dict[str, Any]:
    """The sparsity plan of `config` on `model` (globs resolved, patterns chosen; nothing zeroed yet).

    Raises RecipeError for a glob that matches no layer and ModelError when no layer can take the pattern.
    """
    import torch

    if isinstance(model, torch.jit.ScriptModule):
        raise ModelError(
            "prune: a TorchScript model's weights cannot be masked and fine-tuned; give a python entry"
        )
    layers = weight_layers(model)
    if not layers:
        raise ModelError("prune: the model has no conv or linear layers to sparsify")
    names = list(layers)
    ignored = _match(config.ignore, names, "ignore")
    per_layer = _match(config.layer_sparsity, names, "layer_sparsity")
    dense: dict[str, str] = {n: f"ignored ({glob})" for n, glob in ignored.items()}
    if config.ignore_classifier:
        classifier = find_classifier(model, [1, *ctx.input_shape[1:]], ctx.data.num_classes)
        if classifier is not None and classifier not in dense:
            dense[classifier] = "the classifier (ignore_classifier)"
    kind = METHOD_KINDS[config.method]
    base = _base_pattern(config, kind)
    shapes = {n: _weight(m).shape for n, (m, _) in layers.items()}
    for n, (_, groups) in layers.items():
        if n in dense:
            continue
        if len(shapes[n]) != 4:
            dense[n] = f"weight of rank {len(shapes[n])}"
            continue
        if shapes[n][0] * shapes[n][1] == 1:
            dense[n] = "a single input and output channel"
            continue
        why = not_applicable(shapes[n], groups, base)
        if why is not None:
            dense[n] = why
    sparse = [n for n in names if n not in dense]
    if not sparse:
        raise ModelError(
            f"prune: method {config.method} applies to none of the model's {len(names)} conv/linear layers "
            f"({'; '.join(f'{n}: {w}' for n, w in list(dense.items())[:3])})"
        )
    if kind == "kernel_pattern":
        k = config.kernel_positions
        connectivity = (
            config.connectivity
            if config.connectivity is not None
            else max(connectivity_for(config.sparsity, k), 0.0)
            if config.sparsity is not None
            else 0.0
        )
        chosen = choose_kernel_patterns([_weight(layers[n][0]) for n in sparse], k, config.patterns)
        base = LayerPattern(
            kind, kernel_pattern_sparsity(k, connectivity), patterns=chosen, connectivity=connectivity
        )
    patterns = {}
    for n in sparse:
        glob = per_layer.get(n)
        sparsity = config.layer_sparsity[glob] if glob is not None else base.sparsity
        patterns[n] = LayerPattern(**{**base.__dict__, "sparsity": sparsity})
    if config.global_ranking:
        weights = {n: _weight(layers[n][0]) for n in sparse}
        alloc = allocate_global(weights, patterns, config.sparsity or 0.0, config.min_density)
        patterns = {n: LayerPattern(**{**p.__dict__, "sparsity": alloc[n]}) for n, p in patterns.items()}
    return {
        "method": config.method,
        "schedule": config.sparsity_schedule,
        "global": config.global_ranking,
        "sparsity": config.sparsity,
        "min_density": config.min_density,
        "layers": {n: p.to_json() for n, p in patterns.items()},
        "dense": dense,
    }


def precheck(model: Any, config: PruneConfig, ctx: RunContext, index: int) -> None:
    """The plan on the model as loaded: a glob matching no layer, or a pattern no layer takes, is a RecipeError
    naming the recipe and stage."""
    from edgecompress.errors import RecipeError

    try:
        plan = plan_sparsity(model, config, ctx)
    except (RecipeError, ModelError) as exc:
        raise RecipeError(f"{ctx.recipe_path}: stages.{index}: {exc}") from exc
    for name, why in _left_dense(plan):
        ctx.ui.warn(f"{ctx.recipe_path}: stages.{index}: {name} will be left dense: {why}")


def _left_dense(plan: dict[str, Any]) -> list[tuple[str, str]]:
    """The layers a pattern cannot take (not those the recipe leaves dense: ignored, the classifier)."""
    return [(n, w) for n, w in plan["dense"].items() if not w.startswith(("ignored", "the classifier"))]


def _base_pattern(config: PruneConfig, kind: str) -> LayerPattern:
    if kind == "nm":
        return LayerPattern(kind, 1 - config.n / config.m, n=config.n, m=config.m)  # type: ignore[operator]
    if kind == "block":
        return LayerPattern(
            kind, config.sparsity or 0.0, block=tuple(config.block), pad=config.block_remainder == "pad"
        )  # type: ignore[arg-type]
    if kind == "kernel_pattern":
        return LayerPattern(kind, kernel_pattern_sparsity(config.kernel_positions, 0.0))
    return LayerPattern(kind, config.sparsity or 0.0)


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
    for name, why in _left_dense(plan):  # warned before training by the precheck
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


def note_layers(model: Any, plan: dict[str, Any], ctx: RunContext) -> None:
    """The stage's per-layer notes (see `edgecompress.sparsity.note_sparsity`) and the dense layers."""
    ctx.note("dense_layers", [{"layer": n, "why": w} for n, w in plan["dense"].items()])
    if plan["schedule"] == "oneshot":
        note_sparsity(ctx, ctx.adapter.weights(model), plan)
    else:
        ctx.note(
            "sparse_layers",
            [
                {"layer": n, "pattern": LayerPattern.from_json(d).describe(), "asked": f"{d['sparsity']:.1%}"}
                for n, d in plan["layers"].items()
            ],
        )
        ctx.ui.info(
            f"prune: {plan['method']} sparsity planned on {len(plan['layers'])} layers (polynomial: reached over "
            f"the next training stage, whose notes give it per layer); {len(plan['dense'])} layers dense"
        )
