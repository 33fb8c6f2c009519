"""Latency-budget pruning on the real runtime: the unpruned reference exported and timed, widths from the
latency model and the knapsack, the pruned model exported and timed beside the reference.

What is checked holds on any CPU: the solve meets the budget in the latency model's prediction (scaled to
the measured reference), the result is measured and reported next to it, every kept width is a width the
latency model offered (a plateau edge: a multiple of the sweep unit, or the group's floor or full width),
and a budget below the model's floor is an input error before any training. Whether the *measured*
latency lands within 5% of the budget depends on the machine's noise; `make bench` measures that."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")
pytest.importorskip("ai_edge_litert")

from edgecompress.console import UI  # noqa: E402
from edgecompress.context import RunContext  # noqa: E402
from edgecompress.data import load_data  # noqa: E402
from edgecompress.errors import RecipeError  # noqa: E402
from edgecompress.frameworks.torch import TorchAdapter  # noqa: E402
from edgecompress.recipe import load_recipe  # noqa: E402
from edgecompress.stages.prune.stage import PruneStage  # noqa: E402
from tests.conftest import EXAMPLES  # noqa: E402

pytestmark = pytest.mark.integration

SHAPE = [1, 1, 32, 32]


def _recipe(tmp_path, budget: str, steps: int = 2):
    text = (
        f"name: budget\nmodel: {{source: '{EXAMPLES}:quickstart_cnn', input_shape: {SHAPE}}}\n"
        "data: {image_size: [32, 32], normalize: {mean: [0.5], std: [0.5]}}\n"
        f"stages:\n  - {{type: prune, criterion: taylor, latency: {budget}, iterative_steps: {steps}}}\n"
        "export: [{format: tflite, precision: fp32}]\ndevices: [desktop]\n"
    )
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def _ctx(path) -> tuple[RunContext, object]:
    recipe = load_recipe(path)
    adapter = TorchAdapter()
    ctx = RunContext(
        recipe=recipe,
        recipe_path=path,
        workdir=path.parent,
        adapter=adapter,
        data=load_data(recipe.data, path, seed=0),
        ui=UI(verbosity=0),
    )
    torch.manual_seed(0)
    return ctx, adapter.load(recipe.model, path)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One latency cache for the module: the tables are measured once."""
    return tmp_path_factory.mktemp("cache")


def test_a_budget_below_the_floor_is_an_input_error_naming_it(tmp_path, cache, monkeypatch):
    monkeypatch.setenv("EDGECOMPRESS_CACHE", str(cache))
    ctx, model = _ctx(_recipe(tmp_path, "{export: tflite-fp32, speedup: 40}"))
    with pytest.raises(RecipeError) as info:
        PruneStage(ctx.recipe.stages[0]).precheck(model, ctx, 0)
    message = str(info.value)
    assert "stages.0.latency.0: desktop/tflite-fp32 cannot reach" in message
    assert "narrowest allowed width" in message and "the slowest layer is" in message
    assert "\n" not in message


def _plan(path: Path, cache: Path) -> subprocess.CompletedProcess:
    """`edgecompress plan <path>` in a fresh process, on the module's latency cache."""
    return subprocess.run(
        [sys.executable, "-m", "edgecompress.cli", "plan", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "EDGECOMPRESS_CACHE": str(cache), "COLUMNS": "200"},
    )


def test_plan_command_shows_widths_and_predictions(tmp_path, cache):
    path = _recipe(tmp_path, "{export: tflite-fp32, speedup: 1.5}")
    proc = _plan(path, cache)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "prune to a latency budget" in proc.stdout
    assert "desktop/tflite-fp32" in proc.stdout and "channels kept per pruning group" in proc.stdout


def test_plan_command_refuses_a_budget_below_the_floor(tmp_path, cache):
    """`plan` says what the build would: no widths table for a budget no width plan reaches (it showed the
    floor's widths with a prediction over the budget)."""
    path = _recipe(tmp_path, "{export: tflite-fp32, speedup: 40}")
    proc = _plan(path, cache)
    assert proc.returncode == 2, (proc.stdout[-1000:], proc.stderr[-2000:])
    assert "cannot reach" in proc.stderr and "channels kept per pruning group" not in proc.stdout


def test_build_exports_and_profiles_the_unpruned_reference(tmp_path, cache):
    """The build exports the model as it entered the prune stage as the budget's reference artifact, checks
    and profiles it with the others, and keeps it out of the cross-runtime and int8 comparisons."""
    text = _recipe(tmp_path, "{export: tflite-fp32, speedup: 1.3}", steps=1).read_text()
    text = text.replace("stages:\n", "stages:\n  - {type: train, epochs: 1}\n")
    path = tmp_path / "build.yaml"
    path.write_text(text + "profile: {rounds: 1, runs: 30, warmup_seconds: 0.1}\n")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "edgecompress.cli", "build", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "EDGECOMPRESS_CACHE": str(cache)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    report = json.loads((out / "report.json").read_text())
    roles = {a["name"]: a["role"] for a in report["artifacts"]}
    assert roles == {"tflite-fp32": "export", "tflite-fp32-unpruned": "unpruned-reference"}
    reference = next(a for a in report["artifacts"] if a["role"] == "unpruned-reference")
    assert reference["parity"]["agreement"] >= 0.99 and "desktop" in reference["measurements"]
    assert (out / reference["files"][0]).is_file()
    assert all("unpruned" not in c["a"] + c["b"] for c in report["cross_runtime"])
    assert "Latency budget on desktop/tflite-fp32:" in (out / "report.md").read_text()
