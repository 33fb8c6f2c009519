"""The `quantize` stage's config: defaults, validation, recipe cross-checks and keep_float globs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edgecompress.errors import RecipeError
from edgecompress.recipe import load_recipe, parse_recipe
from edgecompress.registry import STAGES
from edgecompress.stages.quantize.stage import QuantizeConfig, QuantizeStage
from tests.conftest import BASE_RECIPE, EXAMPLES

BASE = BASE_RECIPE


def test_registry_and_defaults():
    assert STAGES.get("quantize") is QuantizeStage
    assert QuantizeStage.compresses and set(QuantizeStage.backends) == {"torch", "keras"}
    c = QuantizeConfig()
    assert (c.mode, c.epochs, c.distill, c.calibration_samples, c.keep_float) == ("qat", 3, True, 256, [])
    assert c.freeze_observers_after is None and c.freeze_bn_after is None


def test_every_field_is_described():
    assert all(f.description for name, f in QuantizeConfig.model_fields.items() if name != "type")


def test_recipe_entry_is_typed_and_frozen():
    r = parse_recipe(BASE + "stages:\n  - {type: quantize, mode: ptq, keep_float: [fc]}\n", source="r.yaml")
    stage = r.stages[0]
    assert isinstance(stage, QuantizeConfig) and stage.mode == "ptq" and stage.keep_float == ["fc"]
    with pytest.raises(ValidationError):
        stage.mode = "qat"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{type: quantize, mode: ptq, epochs: 3}", "epochs only apply to mode 'qat'"),
        ("{type: quantize, mode: ptq, distill: false, lr: 0.1}", "lr, distill only apply to mode 'qat'"),
        ("{type: quantize, epochs: 3, freeze_observers_after: 3}", "freeze_observers_after = 3 would never"),
        ("{type: quantize, epochs: 2, freeze_bn_after: 5}", "freeze_bn_after = 5 would never"),
        ("{type: quantize, mode: int4}", "mode"),
        ("{type: quantize, calibration_samples: 0}", "calibration_samples"),
        ("{type: quantize, keep_float: ['']}", "non-empty"),
        ("{type: quantize, observers: 2}", "observers"),
    ],
)
def test_invalid_configs_are_recipe_errors(entry, message):
    with pytest.raises(RecipeError, match=r"stages\.0") as info:
        parse_recipe(BASE + f"stages:\n  - {entry}\n", source="r.yaml")
    assert message in str(info.value)


def test_int8_export_needs_a_quantize_stage(write_recipe):
    text = BASE + "export:\n  - {format: tflite, precision: int8}\n"
    with pytest.raises(RecipeError, match=r"export\.0\.precision: int8 export needs a 'quantize' stage"):
        load_recipe(write_recipe(text))
    ok = BASE + "stages:\n  - {type: quantize, mode: ptq}\nexport:\n"
    ok += "  - {format: tflite, precision: int8}\n  - {format: openvino, precision: int8}\n"
    assert [s.precision for s in load_recipe(write_recipe(ok)).export] == ["int8", "int8"]


def test_keep_float_globs_match_module_names():
    pytest.importorskip("torch")
    import importlib.util

    from edgecompress.stages.quantize.torch_backend import match_keep_float

    spec = importlib.util.spec_from_file_location("example_models", EXAMPLES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    model = module.tiny_cnn()
    assert match_keep_float(model, []) == ()
    assert match_keep_float(model, ["fc"]) == ("fc",)
    # A parent glob covers its children; the outermost matches are reported.
    assert match_keep_float(model, ["mix", "mix.*", "stem.0"]) == ("mix", "stem.0")
    with pytest.raises(RecipeError, match=r"'nope\*', 'layer9' match no module .*top-level modules: .*fc"):
        match_keep_float(model, ["fc", "nope*", "layer9"])
