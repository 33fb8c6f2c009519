"""Shared test helpers: paths, a minimal recipe, recipe-writing and RunContext fixtures."""

from __future__ import annotations

import importlib.util
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


#: The smallest valid recipe: tiny_cnn on 16x16 digits. Tests append stages, exports, devices.
BASE_RECIPE = f"""\
name: t
model:
  source: {EXAMPLES}:tiny_cnn
  input_shape: [1, 1, 16, 16]
data: {{dataset: digits, image_size: [16, 16]}}
"""


def recipe_error(text: str) -> str:
    """The RecipeError message parsing `text` (as r.yaml) raises; fails the test when it parses."""
    import textwrap

    from edgecompress.errors import RecipeError
    from edgecompress.recipe import parse_recipe

    with pytest.raises(RecipeError) as info:
        parse_recipe(textwrap.dedent(text), source="r.yaml")
    return str(info.value)


@pytest.fixture(scope="session")
def digits16():
    """scikit-learn's digits at 16x16, 1 channel (ships with scikit-learn), loaded once."""
    from edgecompress.data import load_data
    from edgecompress.recipe import parse_recipe

    recipe = parse_recipe(BASE_RECIPE)
    return load_data(recipe.data, Path("recipe.yaml"), seed=0)


@pytest.fixture
def make_ctx(digits16, tmp_path):
    """RunContext for a torch model from examples/models.py (function name and kwargs) on 16x16 digits."""
    from edgecompress.console import UI
    from edgecompress.context import RunContext
    from edgecompress.frameworks.torch import TorchAdapter
    from edgecompress.recipe import parse_recipe

    def _make(function: str = "tiny_cnn", **kwargs) -> RunContext:
        text = (
            f"name: t\nmodel: {{source: '{EXAMPLES}:{function}', input_shape: [1, 1, 16, 16], "
            f"kwargs: {kwargs or {}}}}\ndata: {{image_size: [16, 16], batch_size: 32}}\n"
        )
        return RunContext(
            recipe=parse_recipe(text),
            recipe_path=tmp_path / "recipe.yaml",
            workdir=tmp_path,
            adapter=TorchAdapter(),
            data=digits16,
            ui=UI(verbosity=0),
        )

    return _make


def measurements(device: str = "desktop", p50: float = 1.0, rounds: tuple[float, ...] = (), **kw):
    """A Measurements with plausible fields around a p50 (ms); `kw` overrides or adds fields (energy, ...)."""
    from edgecompress.profiling import LatencyStats, Measurements

    latency = LatencyStats(
        runs=20,
        p50_ms=p50,
        p90_ms=p50 * 1.1,
        p99_ms=p50 * 1.2,
        mean_ms=p50,
        std_ms=0.01,
        min_ms=p50 * 0.9,
        max_ms=p50 * 1.3,
        rounds_p50_ms=list(rounds),
    )
    fields = dict(
        device=device,
        runtime="litert",
        runtime_version="2.3.0",
        threads=1,
        load_ms=3.0,
        first_inference_ms=1.0,
        warmup_seconds=0.1,
        latency=latency,
        peak_rss_mb=50.0,
        baseline_rss_mb=30.0,
        file_size_bytes=1000,
        cpu_model="Test CPU",
        isa_flags=["avx2"],
        python_version="3.11",
    )
    return Measurements(**(fields | kw))


def tiny_tflite(out: Path):
    """A small fp32 .tflite (conv, relu, linear on 1x16x16) made with litert-torch, as an Artifact."""
    import torch
    from litert_torch import convert
    from torch import nn

    from edgecompress.exporters.base import artifact_from_file

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 10)
    ).eval()
    convert(model, (torch.randn(1, 1, 16, 16),)).export(str(out / "tiny.tflite"))
    update = {"name": "tflite-fp32", "precision": "fp32", "input_shape": [1, 1, 16, 16], "layout": "NCHW"}
    return artifact_from_file(out / "tiny.tflite").model_copy(update=update)


#: Skips a Keras test module where the keras extra is not installed (found without importing TensorFlow,
#: whose first import must come from edgecompress's keras_env).
needs_keras = pytest.mark.skipif(
    importlib.util.find_spec("tf_keras") is None, reason="the keras extra is not installed"
)


@pytest.fixture(scope="module")
def keras():
    """tf_keras, through edgecompress's door to TensorFlow."""
    from edgecompress.frameworks import keras_env

    return keras_env.keras()


@pytest.fixture(scope="module")
def keras_examples():
    """examples/keras_models.py as a module."""
    spec = importlib.util.spec_from_file_location(
        "keras_models_example", REPO / "examples" / "keras_models.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
