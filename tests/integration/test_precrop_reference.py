"""A precrop before `train` measured against the unpruned model trained by the same recipe: built alongside,
or given as `reference:` (a previous build's model.pt2), and the recipe errors of `reference:`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edgecompress.errors import ModelError, RecipeError
from edgecompress.pipeline import run_build
from edgecompress.recipe import load_recipe
from edgecompress.report import Report
from tests.conftest import BASE_RECIPE

pytest.importorskip("torch")
pytest.importorskip("torch_pruning")
pytestmark = pytest.mark.integration

TRAIN = "  - {type: train, epochs: 2, lr: 0.005}\n"
PRECROP = "  - {type: prune, method: precrop, criterion: snip, macs_target: 0.5%s}\n"


def _write(folder, name: str, stages: str):
    path = folder / f"{name}.yaml"
    path.write_text(BASE_RECIPE.replace("name: t", f"name: {name}") + "stages:\n" + stages)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Three builds of tiny_cnn on digits: trained unpruned; cropped then trained, its reference built
    alongside; the same with the first build's model.pt2 as `reference:`."""
    root = tmp_path_factory.mktemp("precrop-reference")
    reports = {}
    for name, stages in (
        ("plain", TRAIN),
        ("alongside", PRECROP % "" + TRAIN),
        ("file", PRECROP % f", reference: {root / 'plain' / 'model.pt2'}" + TRAIN),
    ):
        reports[name] = run_build(_write(root, name, stages), out=root / name, verbosity=0, profile=False)
    return root, reports


def test_alongside_reference_is_the_recipe_trained_without_the_crop(built):
    root, reports = built
    plain, cropped = reports["plain"].steps[-1], reports["alongside"].steps[-1]
    ref = reports["alongside"].precrop_reference
    assert ref is not None and ref.source == "built alongside"
    # the same stages, seed and data as the plain build: the same trained model, measured the same
    assert (ref.test_accuracy, ref.val_accuracy) == (plain.test_accuracy, plain.val_accuracy)
    assert (ref.macs, ref.params) == (plain.macs, plain.params)
    assert ref.test_accuracy > 0.5, "trained, not the untrained baseline"
    assert ref.pruned_step == cropped.name == "1:train"
    assert ref.pruned_test_accuracy == cropped.test_accuracy and cropped.macs <= 0.5 * ref.macs
    assert ref.accuracy_delta_pt == pytest.approx((cropped.test_accuracy - ref.test_accuracy) * 100)
    markdown = (root / "alongside" / "report.md").read_text()
    assert f"**Cost of cropping before training**: 1:train scores {cropped.test_accuracy:.4f}" in markdown
    assert f"{ref.accuracy_delta_pt:+.2f} pt vs the unpruned model" in markdown
    assert (
        Report.model_validate_json((root / "alongside" / "report.json").read_text()) == reports["alongside"]
    )


def test_reference_file_is_evaluated_on_this_build(built):
    root, reports = built
    plain = reports["plain"].steps[-1]
    ref = reports["file"].precrop_reference
    assert ref.source == str(root / "plain" / "model.pt2")
    assert ref.test_accuracy == pytest.approx(plain.test_accuracy, abs=1e-9)  # its own model, exported
    assert (ref.macs, ref.params) == (plain.macs, plain.params)
    assert reports["file"].steps[-1].test_accuracy == reports["alongside"].steps[-1].test_accuracy
    assert ref.accuracy_delta_pt == pytest.approx(reports["alongside"].precrop_reference.accuracy_delta_pt)


def test_no_precrop_no_field_and_old_reports_load(built):
    root, reports = built
    assert reports["plain"].precrop_reference is None
    text = (root / "plain" / "report.json").read_text().replace('"precrop_reference": null,', "")
    assert "precrop_reference" not in text
    assert Report.model_validate_json(text).precrop_reference is None


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        (
            TRAIN + PRECROP % ", reference: m.pt2",
            "stages.1.reference: applies to a precrop before the first train stage",
        ),
        (TRAIN + PRECROP % ", reference: m.pt2", "; stage 0 trains before it"),
        (PRECROP % ", reference: m.pt2", "; the recipe has no train stage"),
        (PRECROP % ", reference: nowhere.pt2" + TRAIN, "stages.0.reference: file not found: nowhere.pt2"),
        (PRECROP % ", reference: nowhere.py:net" + TRAIN, "stages.0.reference: file not found: nowhere.py"),
    ],
)
def test_reference_recipe_errors(tmp_path, stages, message):
    (tmp_path / "m.pt2").write_bytes(b"")
    with pytest.raises(RecipeError) as info:
        load_recipe(_write(tmp_path, "bad", stages))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_reference_file_exits_2_with_one_line(tmp_path):
    path = _write(tmp_path, "bad", PRECROP % ", reference: nowhere.pt2" + TRAIN)
    proc = subprocess.run(
        [sys.executable, "-m", "edgecompress.cli", "validate", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {path}:7: stages.0.reference: file not found: nowhere.pt2"
    ]


def test_a_reference_that_is_not_a_model_names_the_key(tmp_path, digits16):
    from edgecompress.console import UI
    from edgecompress.context import RunContext
    from edgecompress.frameworks.torch import TorchAdapter
    from edgecompress.stages.prune.precrop_reference import measure

    (tmp_path / "m.pt2").write_text("not a model")
    path = _write(tmp_path, "bad", PRECROP % ", reference: m.pt2" + TRAIN)
    recipe = load_recipe(path)
    ctx = RunContext(recipe, path, tmp_path, TorchAdapter(), digits16, UI(verbosity=0))
    with pytest.raises(ModelError, match=r"^stages\.0\.reference \(m\.pt2\): .*cannot load"):
        measure(ctx, [])
