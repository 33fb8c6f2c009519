"""End to end: int8 and auto exports whose precision plans are measured on this machine, written to the lock
file, and pinned from it in a second build.

Which form wins depends on the CPU (these machines differ: AVX2, AVX-512 VNNI, AMX), so the tests check what
must hold on any of them: every op has a valid form with the measurements behind it, the whole-model race
picked its fastest candidate, the artifacts keep their names and agree with their derived torch graphs, and
a pinned plan reproduces the first build's without measuring.
"""

from __future__ import annotations

import pytest
import yaml

from edgecompress.errors import RecipeError
from edgecompress.pipeline import run_build
from edgecompress.recipe import load_recipe
from edgecompress.stages.quantize.torch_derive import FORMS
from tests.conftest import EXAMPLES, REPO

pytestmark = pytest.mark.integration

RECIPE = f"""\
name: precision
seed: 0
model: {{source: {EXAMPLES}:tiny_mobile_v3, input_shape: [1, 1, 16, 16]}}
data: {{dataset: digits, image_size: [16, 16], normalize: {{mean: [0.5], std: [0.5]}}}}
stages:
  - {{type: train, epochs: 3, lr: 0.005}}
  - {{type: quantize, mode: ptq, calibration_samples: 128}}
export:
  - {{format: tflite, precision: int8{{plan}}}}
  - {{format: openvino, precision: int8{{plan}}}}
  - {{format: tflite, precision: auto{{plan}}}}
profile: {{runs: 20, warmup_seconds: 0.1, rounds: 1}}
parity: {{min_agreement: 0.9}}
gates: {{max_accuracy_drop: 0.2}}
"""


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGECOMPRESS_CACHE", str(root / "cache"))
        recipe = root / "recipe.yaml"
        recipe.write_text(RECIPE.replace("{plan}", ""))
        report = run_build(recipe, out=root / "out", verbosity=0)
    return root, report


def test_every_int8_and_auto_export_has_a_measured_plan(first):
    _, report = first
    plans = {p.artifact: p for p in report.precision_plans}
    assert set(plans) == {"tflite-int8", "openvino-int8", "tflite-auto"}
    for plan in plans.values():
        assert plan.device == "desktop" and plan.source == "measured"
        assert set(plan.ops.values()) <= set(FORMS)
        assert {c.node for c in plan.choices} >= set(plan.ops) or plan.chosen != "plan"
        if plan.candidates:  # the whole-model race: the chosen candidate is the fastest one timed
            assert plan.chosen == min(plan.candidates, key=lambda c: c.p50_ms).name
    tflite = plans["tflite-int8"]
    hardswish = [c for c in tflite.choices if c.kind == "hardswish"]
    assert hardswish and all({"int8", "int8-decomposed"} <= set(c.times_ms) for c in hardswish)
    assert all(c.form in ("int8", "int8-decomposed", "float") for c in hardswish)
    # under int8 the convolutions stay int8 whatever the timings
    assert all(
        plans["tflite-int8"].ops.get(c.node, "int8") == "int8" for c in tflite.choices if c.kind == "conv"
    )
    # its own plan, all-int8, fp32, or (auto races its int8 sibling's contenders too) "tflite-int8 plan" etc.
    chosen = plans["tflite-auto"].chosen
    assert chosen in {"plan", "all-int8", "fp32", "tflite-int8 plan", "tflite-int8 all-int8"}, chosen
    assert {"float model", "plan"} <= set(plans["tflite-auto"].val_accuracy)


def test_artifacts_keep_their_names_and_agree_with_their_graphs(first):
    root, report = first
    artifacts = {a.name: a for a in report.artifacts}
    assert {"tflite-int8", "openvino-int8", "tflite-auto", "tflite-fp32-twin", "openvino-fp32-twin"} <= set(
        artifacts
    )
    auto = artifacts["tflite-auto"]
    assert auto.requested_precision == "auto" and auto.precision in ("int8", "fp32")
    assert (root / "out" / "tflite-auto.tflite").is_file()
    for name in ("tflite-int8", "openvino-int8"):
        assert artifacts[name].precision == "int8" and artifacts[name].parity.agreement >= 0.9
    markdown = (root / "out" / "report.md").read_text()
    assert (
        "## Precision plans (measured on the device)" in markdown
        and "tflite-auto (litert on desktop" in markdown
    )


def test_a_pinned_plan_reproduces_the_first_build_without_measuring(first, tmp_path):
    root, report = first
    lock = yaml.safe_load((root / "out" / "recipe.lock.yaml").read_text())
    assert set(lock["plans"]) == {"tflite-int8", "openvino-int8", "tflite-auto"}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.replace("{plan}", f", plan: {root / 'out' / 'recipe.lock.yaml'}"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGECOMPRESS_CACHE", str(tmp_path / "empty-cache"))
        again = run_build(recipe, out=tmp_path / "out", verbosity=0, profile=False)
    assert not (tmp_path / "empty-cache").exists()  # nothing was measured
    before = {p.artifact: p for p in report.precision_plans}
    for plan in again.precision_plans:
        assert plan.source.startswith("pinned")
        assert plan.ops == before[plan.artifact].ops and plan.chosen == before[plan.artifact].chosen


def test_plan_and_device_are_checked_at_validation(tmp_path):
    recipe = tmp_path / "r.yaml"
    base = RECIPE.replace("{plan}", "")
    recipe.write_text(base.replace("precision: auto", "precision: auto, device: phone"))
    with pytest.raises(RecipeError, match=r"'phone' is not one of the recipe's devices"):
        load_recipe(recipe)
    recipe.write_text(
        base.replace("export:\n", "export:\n  - {format: tflite, precision: fp32, plan: x.yaml}\n")
    )
    with pytest.raises(RecipeError, match=r"'plan' applies to int8 and auto exports only"):
        load_recipe(recipe)
    recipe.write_text(base.replace("precision: auto", "precision: auto, plan: missing.lock.yaml"))
    with pytest.raises(RecipeError, match=r"file not found: missing\.lock\.yaml"):
        load_recipe(recipe)


def test_a_plan_file_without_the_artifact_is_a_clear_error(tmp_path):
    """Found when the recipe is loaded (validate, the start of a build), before any training."""
    lock = tmp_path / "other.lock.yaml"
    lock.write_text(yaml.safe_dump({"plans": {"something-else": {}}}))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        RECIPE.replace("{plan}", "").replace("precision: auto", f"precision: auto, plan: {lock}")
    )
    with pytest.raises(
        RecipeError, match=r"export\.\d+\.plan: plan file .* has no plan for it \(has: something-else\)"
    ):
        load_recipe(recipe)
    with pytest.raises(RecipeError, match="has no plan for it"):
        run_build(recipe, out=tmp_path / "out", verbosity=0, profile=False)
    assert not (tmp_path / "out").exists()
    lock.write_text("plans: [unclosed")
    with pytest.raises(RecipeError, match="cannot read it"):
        load_recipe(recipe)


def _ptq(tmp_path, model: str, calibration: int = 256):
    """(ctx, quantized): `model` (a recipe model section) PTQ-quantized at 16x16, with a tflite int8 export."""
    from edgecompress.console import UI
    from edgecompress.pipeline import load_context
    from edgecompress.recipe import parse_recipe
    from edgecompress.stages.base import run_stage

    text = (
        f"name: forms\nmodel: {model}\ndata: {{dataset: digits, image_size: [16, 16]}}\n"
        f"stages: [{{type: quantize, mode: ptq, calibration_samples: {calibration}}}]\n"
        "export: [{format: tflite, precision: int8}]\n"
    )
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    recipe = parse_recipe(text, source=str(path), base_dir=tmp_path)
    ctx, loaded = load_context(recipe, path, workdir=tmp_path / "w", ui=UI(verbosity=0))
    ctx.current_stage = 0
    return ctx, run_stage(ctx.recipe.stages[0], 0, loaded, ctx)


def test_an_activation_the_converter_fuses_is_never_planned_float(tmp_path):
    """digits_mlp's in-place ReLUs sit behind their Linear's quantize (the quantizer's linear-ReLU pattern
    misses relu_), yet the TFLite converter fuses each into its FULLY_CONNECTED: a float form for them could
    not be made (the export failed: 'relu_ chosen to run in float was not found'), so none is offered."""
    from edgecompress.stages.quantize.torch_derive import plan_ops

    model = (
        f"{{source: '{REPO}/examples/mlp_models.py:digits_mlp', input_shape: [1, 1, 16, 16], "
        "kwargs: {image_size: 16, hidden: 64}}"
    )
    _, quantized = _ptq(tmp_path, model)
    relus = [op for op in plan_ops(quantized) if op.kind in ("relu", "clamp")]
    assert relus and all("float" not in op.forms for op in relus), relus


def test_every_float_form_offered_can_be_exported(tmp_path):
    """A plan may choose float for any op that offers it, whichever CPU measured it: one op of each kind of
    tiny_mobile_v3 (hardswish, SE gates, adds, convs, ...) is made float and exported to TFLite. The
    hardsigmoid gates' fixed 1/256 output scale once made every float choice of them fail the export on the
    machine that chose it."""
    from edgecompress.registry import EXPORTERS
    from edgecompress.stages.quantize.torch_derive import derive, kind_forms, plan_ops

    assert "float" not in kind_forms("hardsigmoid")
    ctx, quantized = _ptq(
        tmp_path, f"{{source: '{EXAMPLES}:tiny_mobile_v3', input_shape: [1, 1, 16, 16]}}", 64
    )
    one_per_kind = {op.kind: op for op in plan_ops(quantized) if op.int8 and "float" in op.forms}
    assert {"hardswish", "conv"} <= set(one_per_kind)
    for kind, op in one_per_kind.items():
        derived = derive(quantized, {op.node: "float"}, input_shape=ctx.input_shape)
        spec = ctx.recipe.export[0].model_copy(update={"name": f"float-{kind}"})
        EXPORTERS.get("tflite")().export(derived, spec, ctx, tmp_path / "out")  # ExportError if not found
