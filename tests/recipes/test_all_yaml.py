"""Every YAML the project ships is valid: recipes/, targets/, devices/."""

from __future__ import annotations

import pytest
import yaml

from edgecompress.recipe import ExportSpec, load_recipe
from edgecompress.specs import load_device
from tests.conftest import REPO


@pytest.mark.parametrize("path", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.name


@pytest.mark.parametrize("path", sorted((REPO / "targets").glob("*.yaml")), ids=lambda p: p.name)
def test_target_loads(path):
    spec = ExportSpec.model_validate(yaml.safe_load(path.read_text()))
    assert spec.format in {"tflite", "openvino"}


@pytest.mark.parametrize("path", sorted((REPO / "devices").glob("*.yaml")), ids=lambda p: p.name)
def test_device_loads(path):
    device = load_device(path.stem)
    assert device.runtimes and device.description


def test_quickstart_is_the_documented_shape():
    r = load_recipe(REPO / "recipes" / "quickstart.yaml")
    assert [s.type for s in r.stages] == ["train", "prune", "distill", "quantize"]
    assert {e.precision for e in r.export} == {"fp32", "auto"}
    assert {e.format for e in r.export} == {"tflite", "openvino"}
