"""Python entries: a missing file, module or function is found by parsing, without running the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecompress.entries import import_entry, missing_function
from edgecompress.errors import ModelError, RecipeError
from edgecompress.recipe import load_recipe
from tests.conftest import BASE_RECIPE, EXAMPLES

MODEL_FILE = """\
import os
raise SystemExit("this file must not run when it is only checked")

def build():
    return None

if os.name:
    def also():
        return None

class Net:
    pass

factory = build
"""


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "net.py"
    path.write_text(MODEL_FILE)
    return path


@pytest.mark.parametrize("name", ["build", "also", "Net", "factory"])
def test_defined_names_pass_without_running_the_file(model_file, tmp_path, name):
    assert missing_function(f"net.py:{name}", tmp_path / "recipe.yaml") is None


def test_missing_function_names_the_file_and_its_functions(model_file, tmp_path):
    problem = missing_function("net.py:nope", tmp_path / "recipe.yaml")
    assert problem == f"{model_file} has no function 'nope' (its functions: build)"


def test_missing_file_and_module(tmp_path):
    assert missing_function("gone.py:f", tmp_path / "r.yaml") == "file not found: gone.py"
    assert missing_function("no_such_package_xyz.mod:f", tmp_path / "r.yaml") == (
        "module not found: no_such_package_xyz.mod"
    )


def test_an_installed_module_is_parsed_not_imported(tmp_path):
    assert missing_function("edgecompress.data:load_data", tmp_path / "r.yaml") is None
    problem = missing_function("edgecompress.data:nope", tmp_path / "r.yaml")
    assert problem is not None and problem.endswith(
        "data.py has no function 'nope' (its functions: load_data)"
    )


def test_validate_reports_a_missing_model_function(write_recipe):
    path = write_recipe(BASE_RECIPE.replace(f"{EXAMPLES}:tiny_cnn", f"{EXAMPLES}:no_such_model"))
    with pytest.raises(
        RecipeError, match=r"recipe\.yaml:3: model\.source: .*models\.py has no function 'no_such_model'"
    ):
        load_recipe(path)


def test_a_distill_teacher_entry_is_checked_too(write_recipe):
    text = BASE_RECIPE + f"stages:\n  - {{type: distill, teacher: '{EXAMPLES}:no_teacher'}}\n"
    with pytest.raises(RecipeError, match=r"stages\.0\.teacher: .*has no function 'no_teacher'"):
        load_recipe(write_recipe(text))


def test_import_entry_runs_the_file_and_reports_its_failure(model_file, tmp_path):
    with pytest.raises(ModelError, match="importing the file failed: SystemExit"):
        import_entry("net.py", "build", tmp_path / "r.yaml", key="model.source")
