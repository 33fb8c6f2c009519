"""Recipe parsing and validation: strict keys, file:line errors, did-you-mean, cross-checks."""

from __future__ import annotations

import re

import pytest

from edgecompress.errors import RecipeError
from edgecompress.recipe import load_recipe, parse_recipe
from edgecompress.stages.prune.stage import PruneConfig
from tests.conftest import BASE_RECIPE, EXAMPLES, recipe_error

BASE = BASE_RECIPE


_error = recipe_error


def test_minimal_recipe_gets_defaults():
    r = parse_recipe(BASE, source="r.yaml")
    assert r.data.layout == "NCHW"
    assert r.devices == ["desktop"]
    assert r.parity.min_agreement == 0.99
    assert r.model.resolved_framework == "torch"


def test_stage_configs_are_typed_and_frozen():
    r = parse_recipe(BASE + "stages:\n  - {type: prune, ratio: 0.5, round_to: 8}\n", source="r.yaml")
    stage = r.stages[0]
    assert isinstance(stage, PruneConfig)
    assert stage.ratio == 0.5 and stage.round_to == 8
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        stage.ratio = 0.1  # type: ignore[misc]


def test_stage_settings_are_in_the_dump_and_the_hash():
    """The lock file and recipe_hash carry every stage setting, not only each stage's type."""
    half = parse_recipe(BASE + "stages:\n  - {type: prune, ratio: 0.5}\n", source="r.yaml")
    third = parse_recipe(BASE + "stages:\n  - {type: prune, ratio: 0.3}\n", source="r.yaml")
    assert half.model_dump(mode="json")["stages"][0]["ratio"] == 0.5
    assert half.content_hash() != third.content_hash()


def test_unknown_top_level_key_names_line_and_suggests():
    msg = _error(BASE + "stagse: []\n")
    assert msg.startswith("r.yaml:6: stagse: unknown key 'stagse' (did you mean 'stages'?)")


def test_unknown_nested_key_suggests_from_that_model():
    msg = _error(BASE.replace("image_size", "imag_size"))
    assert "r.yaml:5: data.imag_size: unknown key 'imag_size' (did you mean 'image_size'?)" in msg


def test_unknown_stage_type_lists_valid_ones():
    msg = _error(BASE + "stages:\n  - {type: prnue, ratio: 0.5}\n")
    assert "r.yaml:7: stages.0.type: unknown stage 'prnue' (did you mean 'prune'?)" in msg
    assert "distill" in msg and "train" in msg


def test_unknown_stage_key_suggests():
    msg = _error(BASE + "stages:\n  - type: prune\n    ratio: 0.5\n    round: 8\n")
    assert "r.yaml:9: stages.0.round: unknown key 'round' (did you mean 'round_to'?)" in msg


def test_unknown_criterion_suggests():
    msg = _error(BASE + "stages:\n  - {type: prune, ratio: 0.5, criterion: l3}\n")
    assert "stages.0.criterion" in msg and "'l1'" in msg and "(got 'l3')" in msg


@pytest.mark.parametrize("ratio", [0, 1, 1.5, -0.2])
def test_ratio_outside_open_interval(ratio):
    msg = _error(BASE + f"stages:\n  - {{type: prune, ratio: {ratio}}}\n")
    assert "r.yaml:7: stages.0.ratio:" in msg


def test_prune_needs_exactly_one_target():
    assert "give one of ratio, macs_target" in _error(
        BASE + "stages:\n  - {type: prune, ratio: 0.5, macs_target: 0.5}\n"
    )
    assert "give a ratio" in _error(BASE + "stages:\n  - {type: prune}\n")


def test_unknown_export_format_suggests():
    msg = _error(BASE + "export:\n  - {format: tflit}\n")
    assert "export.0.format" in msg and "did you mean 'tflite'" in msg


def test_duplicate_artifact_names_rejected():
    assert "repeated: tflite-fp32" in _error(BASE + "export: [{format: tflite}, {format: tflite}]\n")


def test_missing_required_key():
    assert "r.yaml: model: required key is missing" in _error("name: t\n")


def test_bad_yaml_names_line():
    assert _error("name: t\nmodel: [\n").startswith("r.yaml:")


def test_export_target_file_is_loaded(tmp_path):
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "small.yaml").write_text("format: openvino\nprecision: fp16\n")
    r = parse_recipe(BASE + "export:\n  - {target: small}\n", source="r.yaml", base_dir=tmp_path)
    assert r.export[0].format == "openvino" and r.export[0].precision == "fp16"
    assert r.export[0].artifact_name == "small"


def test_unknown_export_target_suggests():
    msg = _error(BASE + "export:\n  - {target: tflite-fp3}\n")
    assert "did you mean 'tflite-fp32'" in msg


def test_content_hash_stable_and_sensitive():
    a = parse_recipe(BASE, source="r.yaml")
    b = parse_recipe(BASE, source="r.yaml")
    c = parse_recipe(BASE.replace("name: t", "name: u"), source="r.yaml")
    assert a.content_hash() == b.content_hash() != c.content_hash()


# ------------------------------------------------------------------ cross-checks (load_recipe)


def test_load_recipe_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_missing_model_file_named_with_line(write_recipe):
    path = write_recipe(BASE.replace(str(EXAMPLES), "nowhere/models.py"))
    with pytest.raises(
        RecipeError, match=r"recipe\.yaml:3: model\.source: file not found: nowhere/models\.py"
    ):
        load_recipe(path)


def test_keras_model_file_must_exist(write_recipe):
    path = write_recipe(BASE.replace(f"{EXAMPLES}:tiny_cnn", "model.keras"))
    with pytest.raises(RecipeError, match=r"model\.source: file not found: model\.keras"):
        load_recipe(path)


def test_keras_exports_take_precision_auto(write_recipe, tmp_path):
    (tmp_path / "model.keras").write_bytes(b"")
    text = BASE.replace(f"{EXAMPLES}:tiny_cnn", "model.keras") + (
        "stages: [{type: quantize, mode: ptq}]\nexport: [{format: tflite, precision: auto}]\n"
    )
    recipe = load_recipe(write_recipe(text))
    assert recipe.model.resolved_framework == "keras" and recipe.export[0].precision == "auto"


BUDGET = "stages:\n  - {type: prune, criterion: taylor, latency: %s}\nexport: [{format: tflite}]\n"


def test_latency_budget_is_one_budget_or_a_list():
    one = parse_recipe(BASE + BUDGET % "{export: tflite-fp32, speedup: 2}", source="r.yaml")
    assert [b.speedup for b in one.stages[0].latency] == [2]
    two = parse_recipe(
        BASE + BUDGET % "[{export: tflite-fp32, ms: 0.4}, {export: tflite-fp32, speedup: 2}]", source="r.yaml"
    )
    assert [b.ms for b in two.stages[0].latency] == [0.4, None]


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        (
            "{export: tflite-fp32, speedup: 1.0}",
            r"stages\.0\.latency\.0\.speedup: Input should be greater than 1",
        ),
        ("{export: tflite-fp32, speedup: 2, ms: 1}", r"stages\.0\.latency\.0: give one of speedup or ms"),
        ("{export: tflite-fp32}", r"stages\.0\.latency\.0: give one of speedup or ms"),
        (
            "{export: tflite-fp32, speedup: 2}, ratio: 0.5",
            "give one of ratio, macs_target, params_target, latency",
        ),
        ("{export: tflite-fp32, speedup: 2}, round_to: 8", "drop layer_ratios, global_ranking and round_to"),
    ],
)
def test_bad_latency_budgets_are_named(budget, message):
    assert re.search(message, _error(BASE + BUDGET % budget))


def test_latency_budget_export_and_device_must_exist(write_recipe):
    path = write_recipe(BASE + BUDGET % "{export: tflite-int8, speedup: 2}")
    with pytest.raises(
        RecipeError,
        match=r"latency\.0\.export: 'tflite-int8' is not one of the recipe's exports \(tflite-fp32\)",
    ):
        load_recipe(path)
    path = write_recipe(BASE + BUDGET % "{export: tflite-fp32, speedup: 2, device: laptop}")
    with pytest.raises(RecipeError, match=r"latency\.0\.device: 'laptop' is not one of the recipe's devices"):
        load_recipe(path)


def test_int8_export_needs_quantize_stage(write_recipe):
    path = write_recipe(BASE + "export: [{format: tflite, precision: int8}]\n")
    with pytest.raises(
        RecipeError, match=r"export\.0\.precision: int8 export needs a 'quantize' stage before it"
    ):
        load_recipe(path)


def test_unknown_device(write_recipe):
    path = write_recipe(BASE + "devices: [desktp]\n")
    with pytest.raises(
        RecipeError, match=r"devices.0: no device named 'desktp' \(did you mean 'desktop'\?\)"
    ):
        load_recipe(path)


def test_latency_gate_must_match_an_artifact(write_recipe):
    path = write_recipe(BASE + "export: [{format: tflite}]\ngates: {max_latency_ms: {'laptop/*': 1.0}}\n")
    with pytest.raises(RecipeError, match="matches no 'device/artifact'; known: desktop/tflite-fp32"):
        load_recipe(path)


def test_energy_gate_and_windows(write_recipe):
    path = write_recipe(BASE + "export: [{format: tflite}]\ngates: {max_energy_mj: {'pi/*': 1.0}}\n")
    with pytest.raises(RecipeError, match=r"gates\.max_energy_mj\.pi/\*: matches no 'device/artifact'"):
        load_recipe(path)
    path = write_recipe(
        BASE + "export: [{format: tflite}]\nprofile: {energy: true, energy_window_seconds: 2}\n"
    )
    with pytest.raises(
        RecipeError, match=r"profile\.energy_window_seconds: Input should be greater than or equal to 10"
    ):
        load_recipe(path)
    recipe = load_recipe(
        write_recipe(
            BASE
            + "export: [{format: tflite}]\ngates: {max_energy_mj: {'desktop/*': 1.0}, allow_estimated: true}\n"
        )
    )
    assert recipe.gates.max_energy_mj == {"desktop/*": 1.0} and recipe.gates.allow_estimated


def test_folder_dataset_needs_existing_path(write_recipe):
    path = write_recipe(BASE.replace("dataset: digits", "dataset: folder, path: no/such/dir"))
    with pytest.raises(RecipeError, match=r"data\.path: not found: no/such/dir"):
        load_recipe(path)


def test_valid_recipe_passes_cross_checks(write_recipe):
    path = write_recipe(
        BASE + "stages: [{type: prune, ratio: 0.3}, {type: distill, epochs: 1}]\n"
        "export: [{format: tflite}, {format: openvino, precision: fp16}]\n"
    )
    r = load_recipe(path)
    assert [s.type for s in r.stages] == ["prune", "distill"]


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        (
            "[{type: prune, method: nm, n: 2, m: 4}, {type: prune, ratio: 0.5}]",
            r"stages\.1\.method: channel pruning after the pattern sparsity of stages\.0",
        ),
        (
            "[{type: prune, method: magnitude, sparsity: 0.5, sparsity_schedule: polynomial}, "
            "{type: quantize, mode: qat}]",
            r"stages\.0\.sparsity_schedule: polynomial ramps the sparsity over the next train or distill stage",
        ),
    ],
)
def test_pattern_sparsity_stage_order_is_checked(write_recipe, stages, message):
    path = write_recipe(BASE + f"stages: {stages}\n")
    with pytest.raises(RecipeError, match=message):
        load_recipe(path)


def test_channel_pruning_then_sparsity_is_fine(write_recipe):
    path = write_recipe(
        BASE
        + "stages: [{type: prune, ratio: 0.5}, {type: prune, method: block, block: [1, 4], sparsity: 0.5}]\n"
    )
    assert [s.method for s in load_recipe(path).stages] == ["channel", "block"]
