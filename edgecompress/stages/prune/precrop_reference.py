"""The trained reference of a precrop before `train` (`prune: {method: precrop}`).

Cropped before training, the model has no trained unpruned counterpart in the build (its baseline step is
the untrained model), so the accuracy cost of cropping could only be assumed. The reference measures it:

- built alongside (default): after the build's own stages, the recipe's stages run once more with the
  precrop stage left out, and `quantize` too (the comparison is of float models), on the model as the
  recipe loads it (loading is deterministic: a python entry is built under a fixed seed), with the same
  seed and data, the teacher chosen as the build chooses it; trained only, never exported;
- `reference: PATH` on the precrop stage: the unpruned model trained by the same recipe, as a model file
  in any form `model.source` accepts (e.g. a previous build's model.pt2), evaluated on this build's splits.

The cost is the pruned final float model's test accuracy minus the reference's, in points: both were
trained by the same stages, epochs and seed. Framework-neutral: stages run through the registry.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from edgecompress.errors import ModelError, RecipeError

if TYPE_CHECKING:
    from edgecompress.context import RunContext
    from edgecompress.report import PrecropReference, Step
    from edgecompress.stages.base import StageConfig

ALONGSIDE = "built alongside"


def cropped_before_train(stages: list[StageConfig]) -> list[int]:
    """Indices of the precrop stages before the recipe's first `train` (none without a train stage)."""
    first_train = next((i for i, s in enumerate(stages) if s.type == "train"), 0)
    return [i for i, s in enumerate(stages[:first_train]) if s.type == "prune" and s.method == "precrop"]


def measure(ctx: RunContext, steps: list[Step]) -> PrecropReference | None:
    """The reference of the build's precrop before `train`, evaluated on the build's test and val splits,
    with the accuracy cost of cropping; None when no precrop comes before a train stage."""
    from edgecompress.report import PrecropReference

    cropped = cropped_before_train(ctx.recipe.stages)
    if not cropped:
        return None
    given = next((ctx.recipe.stages[i].reference for i in cropped if ctx.recipe.stages[i].reference), None)
    model = _load(ctx, given, cropped[0]) if given else _train_alongside(ctx, cropped)
    adapter, data = ctx.adapter, ctx.data
    stats = adapter.stats(model, ctx.input_shape)
    test, val = adapter.accuracy(model, data.test), adapter.accuracy(model, data.val)
    pruned = next(s for s in reversed(steps) if s.stage_type != "quantize")
    result = PrecropReference(
        source=given or ALONGSIDE,
        test_accuracy=test,
        val_accuracy=val,
        macs=stats.macs,
        params=stats.params,
        pruned_step=pruned.name,
        pruned_test_accuracy=pruned.test_accuracy,
        accuracy_delta_pt=(pruned.test_accuracy - test) * 100,
    )
    ctx.ui.info(
        f"precrop: the unpruned reference ({result.source}): test acc {test:.4f}, {stats.macs / 1e6:.2f} M "
        f"MACs, {stats.params:,} params; cropped ({pruned.name}): test acc {pruned.test_accuracy:.4f}, "
        f"{result.accuracy_delta_pt:+.2f} pt"
    )
    return result


def _load(ctx: RunContext, source: str, index: int) -> Any:
    """The `reference:` model, loaded like `model.source` and checked to give this data's classes."""
    from edgecompress.recipe import ModelSpec

    ctx.ui.info(f"precrop: evaluating the unpruned reference {source}")
    spec = ModelSpec(source=source, input_shape=ctx.input_shape, framework=ctx.framework)
    try:
        model = ctx.adapter.load(spec, ctx.recipe_path)
        ctx.adapter.check(model, ctx.input_shape, ctx.data.num_classes)
    except (ModelError, RecipeError) as exc:  # named by its key, not as model.source
        raise type(exc)(f"stages.{index}.reference ({source}): {exc}") from exc
    return model


def _train_alongside(ctx: RunContext, cropped: list[int]) -> Any:
    """The recipe's stages but the precrop (and quantize) ones, on a fresh load of the model, in a context
    of their own (notes, teacher and quantization state of the build stay as they are)."""
    from edgecompress.stages.base import run_stage

    stages = [(i, s) for i, s in enumerate(ctx.recipe.stages) if i not in cropped and s.type != "quantize"]
    epochs = sum(getattr(s, "epochs", 0) for _, s in stages)
    ctx.ui.info(f"[bold]precrop: training the unpruned reference alongside ({epochs} epochs)[/bold] ...")
    side = dataclasses.replace(
        ctx, teacher=None, notes={}, current_stage=-1, quantization=None, budget_unpruned=None
    )
    model = ctx.adapter.load(ctx.recipe.model, ctx.recipe_path)
    for i, config in stages:
        model = run_stage(config, i, model, side)
    return model
