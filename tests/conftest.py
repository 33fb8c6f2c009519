"""Shared test helpers: paths and a recipe-writing fixture."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "models.py"


@pytest.fixture
def write_recipe(tmp_path: Path):
    """Write recipe text to tmp_path/recipe.yaml and return its path."""

    def _write(text: str, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write
