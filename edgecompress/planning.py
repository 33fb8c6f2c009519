"""`edgecompress plan RECIPE`: what a latency-budget prune stage will choose, before any training.

The model is loaded as the recipe gives it (trained weights when it has a checkpoint), the budgets'
reference exports are made and timed on their devices, and one knapsack solve to the final budget gives each
pruning group's width and each export's predicted latency. The build itself gets there over
`iterative_steps`, with the importances of the model as trained by then, so its widths can differ.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from edgecompress.console import UI
from edgecompress.errors import RecipeError


def plan_recipe(recipe_path: Path, *, verbosity: int) -> list[dict[str, Any]]:
    """Plans of every prune stage with a latency budget, printed and returned."""
    from rich.console import Console
    from rich.table import Table

    from edgecompress.context import RunContext
    from edgecompress.data import load_data
    from edgecompress.recipe import load_recipe
    from edgecompress.registry import FRAMEWORKS, STAGES, import_object

    recipe = load_recipe(recipe_path)
    stages = [(i, s) for i, s in enumerate(recipe.stages) if s.type == "prune" and s.latency]
    if not stages:
        raise RecipeError(
            f"{recipe_path}: no prune stage with a latency budget (prune: {{latency: {{export: ..., speedup: ...}}}})"
        )
    ui = UI(verbosity=verbosity)
    framework = recipe.model.resolved_framework
    adapter = FRAMEWORKS.get(framework)()
    ui.info(f"loading data '{recipe.data.dataset}' and model {recipe.model.source}")
    data = load_data(recipe.data, recipe_path, seed=recipe.seed)
    model = adapter.load(recipe.model, recipe_path)
    adapter.check(model, list(recipe.model.input_shape), data.num_classes)
    planner = import_object(STAGES.get("prune").planners[framework])
    console = Console(width=None if sys.stdout.isatty() else 160)  # the plan is the command's output
    workdir = Path(tempfile.mkdtemp(prefix="edgecompress-plan-"))
    out = []
    try:
        ctx = RunContext(
            recipe=recipe, recipe_path=recipe_path, workdir=workdir, adapter=adapter, data=data, ui=ui
        )
        ctx.teacher = model
        for i, config in stages:
            ctx.current_stage = i
            result = planner(adapter.copy(model), config, ctx)
            out.append(result)
            budgets = Table(title=f"stage {i}: prune to a latency budget", title_justify="left")
            for col in ("export", "budget", "unpruned ms", "target ms", "predicted ms"):
                budgets.add_column(col, justify="left" if col in ("export", "budget") else "right")
            for b in result["budgets"]:
                budgets.add_row(
                    b["target"],
                    b["budget"],
                    f"{b['reference_ms']:.3f}",
                    f"{b['target_ms']:.3f}",
                    f"{b['predicted_ms']:.3f}",
                )
            console.print(budgets)
            widths = Table(title="channels kept per pruning group", title_justify="left")
            for col in ("group (root layer)", "unpruned", "planned"):
                widths.add_column(col, justify="left" if col.startswith("group") else "right")
            for root, (before, after) in result["widths"].items():
                widths.add_row(root, str(before), str(after))
            console.print(widths)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return out
