"""edgecompress: compress a trained model for edge devices and measure what each step bought.

Public API (imports no framework): `build`, `load_recipe`, `Recipe`, `__version__`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgecompress.recipe import Recipe, load_recipe

__version__ = "0.1.0"
__all__ = ["Recipe", "__version__", "build", "load_recipe"]

if TYPE_CHECKING:
    from edgecompress.report import Report


def build(recipe_path: str, *, out: str | None = None, verbosity: int = 1, **kwargs: Any) -> Report:
    """Run the recipe at `recipe_path` end to end and return its report (see pipeline.run_build)."""
    from edgecompress.pipeline import run_build

    return run_build(recipe_path, out=out, verbosity=verbosity, **kwargs)
