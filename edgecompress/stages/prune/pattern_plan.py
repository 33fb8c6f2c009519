"""Pattern sparsity plans (`prune` methods magnitude, block, nm, kernel_pattern), framework-free: every
framework backend hands over its conv/dense weights in the canonical [out, in_per_group, kh, kw] layout, their
groups and the classifier's name, and gets the same plan (globs resolved, patterns chosen, layers a pattern
cannot take left dense with the reason). The plan is JSON in the stage's notes (`sparsity_plan`); later
training stages hold it, the build checks it in the exported files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from edgecompress.errors import ModelError, RecipeError
from edgecompress.sparsity import (
    METHOD_KINDS,
    LayerPattern,
    allocate_global,
    choose_kernel_patterns,
    connectivity_for,
    kernel_pattern_sparsity,
    not_applicable,
    note_sparsity,
)
from edgecompress.stages.base import match_globs

if TYPE_CHECKING:
    from edgecompress.context import RunContext
    from edgecompress.stages.prune.stage import PruneConfig


def plan_pattern(
    config: PruneConfig, weights: dict[str, np.ndarray], groups: dict[str, int], classifier: str | None
) -> dict[str, Any]:
    """The sparsity plan of `config` over `weights` (canonical layout, by layer name, in graph order) with
    their conv `groups` (1 for dense layers); `classifier` is left dense when `config.ignore_classifier`.

    Raises RecipeError for a glob that matches no layer and ModelError when no layer can take the pattern.
    """
    if not weights:
        raise ModelError("prune: the model has no conv or linear layers to sparsify")
    names = list(weights)
    ignored = match_globs(config.ignore, names, "prune.ignore")
    per_layer = match_globs(config.layer_sparsity, names, "prune.layer_sparsity")
    dense: dict[str, str] = {n: f"ignored ({glob})" for n, glob in ignored.items()}
    if config.ignore_classifier and classifier is not None and classifier not in dense:
        dense[classifier] = "the classifier (ignore_classifier)"
    kind = METHOD_KINDS[config.method]
    base = _base_pattern(config, kind)
    shapes = {n: w.shape for n, w in weights.items()}
    for n in names:
        if n in dense:
            continue
        if len(shapes[n]) != 4:
            dense[n] = f"weight of rank {len(shapes[n])}"
            continue
        if shapes[n][0] * shapes[n][1] == 1:
            dense[n] = "a single input and output channel"
            continue
        why = not_applicable(shapes[n], groups.get(n, 1), base)
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
        chosen = choose_kernel_patterns([weights[n] for n in sparse], k, config.patterns)
        base = LayerPattern(
            kind, kernel_pattern_sparsity(k, connectivity), patterns=chosen, connectivity=connectivity
        )
    patterns = {}
    for n in sparse:
        glob = per_layer.get(n)
        sparsity = config.layer_sparsity[glob] if glob is not None else base.sparsity
        patterns[n] = LayerPattern(**{**base.__dict__, "sparsity": sparsity})
    if config.global_ranking:
        weights = {n: weights[n] for n in sparse}
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


def check_plan(make_plan: Any, ctx: RunContext, index: int) -> None:
    """`validate`'s check of a pattern stage: `make_plan()` on the model as loaded; a glob matching no layer,
    or a pattern no layer takes, is a RecipeError naming the recipe and stage; layers left dense are warned."""
    try:
        plan = make_plan()
    except (RecipeError, ModelError) as exc:
        raise RecipeError(f"{ctx.recipe_path}: stages.{index}: {exc}") from exc
    for name, why in left_dense(plan):
        ctx.ui.warn(f"{ctx.recipe_path}: stages.{index}: {name} will be left dense: {why}")


def left_dense(plan: dict[str, Any]) -> list[tuple[str, str]]:
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
