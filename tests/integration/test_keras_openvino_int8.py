"""The OpenVINO int8 export of a Keras QAT build races its candidates on this machine (the .tflite's reading,
the QAT model's reading, NNCF's quantization of the fp32 IR) and ships the fastest that agrees with the
quantized model. Which one is fastest depends on the CPU, so the tests pin the thresholds: with every
candidate counted faster and any agreement accepted the fastest other candidate ships; asking for more than
perfect agreement keeps the .tflite's reading; and the notes always give every candidate's time."""

from __future__ import annotations

import re

import pytest

from edgecompress.console import UI
from edgecompress.pipeline import load_context
from edgecompress.recipe import parse_recipe
from edgecompress.registry import EXPORTERS
from edgecompress.stages.base import run_stage
from tests.conftest import REPO, needs_keras

pytestmark = [pytest.mark.integration, needs_keras]

RECIPE = f"""\
name: ov-int8
seed: 0
model: {{source: '{REPO / "examples" / "keras_models.py"}:quickstart_cnn', input_shape: [1, 16, 16, 1], framework: keras, kwargs: {{input_shape: [16, 16, 1], width: 8}}}}
data: {{dataset: digits, image_size: [16, 16], channels: 1, layout: NHWC, batch_size: 64}}
stages: [{{type: train, epochs: 4, lr: 0.005}}, {{type: quantize, mode: qat, epochs: 1}}]
export: [{{format: openvino, precision: int8}}]
devices: [desktop]
"""


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    root = tmp_path_factory.mktemp("ov_int8")
    path = root / "recipe.yaml"
    path.write_text(RECIPE)
    ctx, model = load_context(
        parse_recipe(RECIPE, source=str(path), base_dir=root), path, workdir=root / "w", ui=UI(verbosity=0)
    )
    for i, config in enumerate(ctx.recipe.stages):
        ctx.current_stage = i
        model = run_stage(config, i, model, ctx)
    return ctx, model


def _export(ctx, model, tmp_path):
    artifact = EXPORTERS.get("openvino")().export(model, ctx.recipe.export[0], ctx, tmp_path)
    import json

    return json.loads(artifact.path.with_suffix(".json").read_text())["notes"]


def _times(note: str) -> dict[str, float]:
    found = dict(
        re.findall(
            r"(the int8 \.tflite read by OpenVINO|TFMOT's QAT model read by OpenVINO|NNCF's quantization of the fp32 IR) (\d+\.\d+) ms",
            note,
        )
    )
    return {k: float(v) for k, v in found.items()}


def test_the_fastest_agreeing_candidate_ships(quantized, tmp_path, monkeypatch):
    from edgecompress.exporters import keras_openvino_int8 as race

    ctx, model = quantized
    monkeypatch.setattr(race, "MARGIN", -100.0)  # every candidate counts as faster than the .tflite's reading
    monkeypatch.setattr(race, "AGREEMENT", 0.0)
    notes = _export(ctx, model, tmp_path)
    times = _times(notes["int8_race"])
    assert len(times) == 3 and all(t > 0 for t in times.values()), notes["int8_race"]
    others = {k: t for k, t in times.items() if "tflite" not in k}
    fastest = min(others, key=others.__getitem__)
    assert f"{fastest} shipped" in notes["int8_race"]
    assert "FakeQuantize" in notes["int8"]


def test_a_candidate_that_changes_answers_is_refused(quantized, tmp_path, monkeypatch):
    from edgecompress.exporters import keras_openvino_int8 as race

    ctx, model = quantized
    monkeypatch.setattr(race, "MARGIN", -100.0)
    monkeypatch.setattr(race, "AGREEMENT", 1.01)  # no candidate can agree this well
    notes = _export(ctx, model, tmp_path)
    assert "refused" in notes["int8_race"] and "the .tflite's reading kept" in notes["int8_race"]
    assert "carrying the int8 .tflite's scales" in notes["int8"]
