"""Exports on their real runtimes: TFLite and OpenVINO at fp32 and fp16, parity, the profiling script and
the local runner. The artifacts are checked with the raw runtimes, not through edgecompress."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.integration.raw_runtimes import litert_logits, openvino_logits

torch = pytest.importorskip("torch")
pytest.importorskip("litert_torch")
pytest.importorskip("openvino")

from torch import nn  # noqa: E402

from edgecompress.console import UI  # noqa: E402
from edgecompress.context import RunContext  # noqa: E402
from edgecompress.data import load_data  # noqa: E402
from edgecompress.errors import ArtifactError, ExportError  # noqa: E402
from edgecompress.exporters.base import Artifact  # noqa: E402
from edgecompress.exporters.parity import check_parity  # noqa: E402
from edgecompress.profiling import Measurements  # noqa: E402
from edgecompress.recipe import ExportSpec, parse_recipe  # noqa: E402
from edgecompress.registry import EXPORTERS, FRAMEWORKS  # noqa: E402
from edgecompress.runners.local import LocalRunner  # noqa: E402
from edgecompress.runtimes import DEVICE_SCRIPTS  # noqa: E402
from edgecompress.specs import CPUSpec, DeviceProfile, PowerModel  # noqa: E402

pytestmark = pytest.mark.integration

RECIPE = """\
name: export-runtimes
model: {source: tiny.py:tiny, input_shape: [1, 1, 8, 8]}
data: {dataset: digits, image_size: [8, 8], normalize: {mean: [0.5], std: [0.5]}}
export:
  - {format: tflite, precision: fp32}
  - {format: tflite, precision: fp16}
  - {format: openvino, precision: fp32}
  - {format: openvino, precision: fp16}
"""
NAMES = ["tflite-fp32", "tflite-fp16", "openvino-fp32", "openvino-fp16"]
MEASURE_FIELDS = {
    "runtime",
    "runtime_version",
    "execution_precision",
    "threads",
    "load_ms",
    "first_inference_ms",
    "warmup_seconds",
    "warmup_runs",
    "latency",
    "peak_rss_mb",
    "baseline_rss_mb",
    "file_size_bytes",
    "cpu_model",
    "isa_flags",
    "python_version",
    "input_shape",
    "input_dtype",
}


class TinyNet(nn.Module):
    """Stem conv, a residual block with a depthwise conv, pooling, linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pointwise = nn.Conv2d(16, 16, 1)
        self.down = nn.Conv2d(16, 24, 3, stride=2, padding=1)
        self.fc = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = torch.relu(y + self.pointwise(torch.relu(self.depthwise(y))))
        return self.fc(torch.relu(self.down(y)).mean((2, 3)))


class DataDependent(nn.Module):
    """Branches on a tensor's value: torch.export (and so every exporter) must refuse it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y.mean((2, 3)) if y.sum() > 0 else y.amax((2, 3))


def _train(model: nn.Module, x: np.ndarray, y: np.ndarray) -> nn.Module:
    """A few epochs, so logits are well separated and top-1 agreement measures the export, not ties."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for _ in range(12):
        for idx in torch.randperm(len(xt)).split(32):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    recipe = parse_recipe(RECIPE)
    data = load_data(recipe.data, Path("r.yaml"), seed=0)
    out = tmp_path_factory.mktemp("exports")
    ctx = RunContext(
        recipe=recipe,
        recipe_path=Path("r.yaml"),
        workdir=out,
        adapter=FRAMEWORKS.get("torch")(),
        data=data,
        ui=UI(verbosity=0),
    )
    torch.manual_seed(0)
    model = _train(TinyNet(), data.train.x, data.train.y)
    with torch.no_grad():
        reference = model(torch.from_numpy(data.test.x)).numpy()
    artifacts = {
        spec.artifact_name: EXPORTERS.get(spec.format)().export(model, spec, ctx, out)
        for spec in recipe.export
    }
    return ctx, model, reference, artifacts


def test_artifact_files(setup):
    _, _, _, artifacts = setup
    assert list(artifacts) == NAMES
    for name, a in artifacts.items():
        suffixes = [".tflite"] if a.format == "tflite" else [".xml", ".bin"]
        assert [f.name for f in a.files] == [f"{name}{s}" for s in suffixes]
        assert a.path == a.files[0] and a.size_bytes == sum(f.stat().st_size for f in a.files) > 0
        assert a.input_shape == [1, 1, 8, 8] and a.layout == "NCHW" and a.precision == name.split("-")[1]
        assert a.runtime == {"tflite": "litert", "openvino": "openvino"}[a.format]


@pytest.mark.parametrize("name", NAMES)
def test_raw_runtime_agrees_with_torch(setup, name):
    ctx, _, reference, artifacts = setup
    a, x = artifacts[name], ctx.data.test.x
    logits = litert_logits(a.path, x) if a.runtime == "litert" else openvino_logits(a.path, x)
    assert logits.shape == reference.shape
    assert (logits.argmax(1) == reference.argmax(1)).mean() >= 0.99
    assert np.abs(logits - reference).max() < (1e-4 if name.endswith("fp32") else 5e-2)


def test_tflite_fp16_weights_are_float16(setup):
    from ai_edge_litert.interpreter import Interpreter

    def dtypes(path: Path) -> set:
        interpreter = Interpreter(model_path=str(path))
        return {np.dtype(d["dtype"]).name for d in interpreter.get_tensor_details()}

    _, _, _, artifacts = setup
    assert "float16" in dtypes(artifacts["tflite-fp16"].path)
    assert "float16" not in dtypes(artifacts["tflite-fp32"].path)
    assert artifacts["tflite-fp16"].size_bytes < artifacts["tflite-fp32"].size_bytes


def test_openvino_fp16_weights_are_float16(setup):
    import openvino as ov

    def constant_types(path: Path) -> set:
        model = ov.Core().read_model(str(path))
        return {
            op.get_output_element_type(0).get_type_name()
            for op in model.get_ops()
            if op.get_type_name() == "Constant"
        }

    _, _, _, artifacts = setup
    assert "f16" in constant_types(artifacts["openvino-fp16"].path)
    assert "f16" not in constant_types(artifacts["openvino-fp32"].path)
    assert (
        artifacts["openvino-fp16"].files[1].stat().st_size
        < artifacts["openvino-fp32"].files[1].stat().st_size
    )


@pytest.mark.parametrize("name", NAMES)
def test_sidecar(setup, name):
    ctx, _, _, artifacts = setup
    a = artifacts[name]
    side = json.loads(a.path.with_name(f"{name}.json").read_text())
    assert side["artifact"] == name and side["precision"] == a.precision and side["runtime"] == a.runtime
    assert side["files"] == [f.name for f in a.files]
    assert side["input"]["shape"] == [1, 1, 8, 8] and side["input"]["dtype"] == "float32"
    assert side["input"]["layout"] == "NCHW" and side["input"]["name"]
    assert side["output"]["shape"] == [1, 10]
    assert side["preprocessing"] == json.loads(json.dumps(ctx.data.describe()))
    assert side["preprocessing"]["mean"] == [0.5] and side["preprocessing"]["std"] == [0.5]
    expected = {"torch", "litert-torch"} if a.format == "tflite" else {"torch", "openvino"}
    if name == "tflite-fp16":
        expected.add("ai-edge-quantizer")
    assert expected <= set(side["converter"]) and all(side["converter"].values())


@pytest.mark.parametrize("name", NAMES)
def test_check_parity(setup, name):
    ctx, _, reference, artifacts = setup
    test = ctx.data.test
    parity = check_parity(artifacts[name], test.x, reference, test.y, threads=2, ui=UI(verbosity=0))
    assert parity.n == len(test)
    assert parity.agreement >= 0.99
    assert abs(parity.accuracy - (reference.argmax(1) == test.y).mean()) <= 0.01
    # Default runtime precision here (bf16 on AMX CPUs: about 3 significant digits), so relative to the logits.
    assert 0 <= parity.mean_abs_diff <= parity.max_abs_diff < 0.01 * np.abs(reference).max()
    assert parity.execution_precision


def test_measure_script_standalone(setup, tmp_path):
    """measure.py copied with sessions.py and op_profiles.py to another folder runs with edgecompress made
    unimportable."""
    _, _, _, artifacts = setup
    for script in DEVICE_SCRIPTS:
        shutil.copy(script, tmp_path / script.name)
    a = artifacts["tflite-fp32"]
    argv = [
        "measure.py",
        "--runtime",
        "litert",
        "--model",
        str(a.path),
        "--threads",
        "2",
        "--runs",
        "30",
        "--warmup-seconds",
        "0.2",
    ]
    code = (
        "import runpy, sys; sys.modules['edgecompress'] = None; "
        f"sys.argv = {argv!r}; runpy.run_path('measure.py', run_name='__main__')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result) >= MEASURE_FIELDS
    lat = result["latency"]
    assert (
        lat["runs"] == 30
        and 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    )
    assert lat["min_ms"] <= lat["mean_ms"] <= lat["max_ms"] and lat["std_ms"] >= 0
    assert result["load_ms"] > 0 and result["first_inference_ms"] > 0
    assert result["warmup_seconds"] >= 0.2 and result["warmup_runs"] > 0
    assert 0 < result["baseline_rss_mb"] <= result["peak_rss_mb"] < 4096
    assert result["file_size_bytes"] == a.size_bytes
    assert result["runtime"] == "litert" and result["threads"] == 2 and result["input_shape"] == [1, 1, 8, 8]
    assert result["cpu_model"] and result["python_version"].count(".") == 2
    assert isinstance(result["isa_flags"], list)


def _device(power: PowerModel | None = None) -> DeviceProfile:
    return DeviceProfile(
        name="here",
        description="this machine",
        cpu=CPUSpec(model="detect", arch="detect", cores="detect"),
        memory_mb="detect",
        runtimes=["litert", "openvino"],
        power=power,
    )


def test_local_runner(setup):
    _, _, _, artifacts = setup
    a = artifacts["openvino-fp32"]
    power = PowerModel(idle_watts=2.0, active_watts_per_core=1.5, source="test figures")
    m = LocalRunner().run(a, _device(power), runs=30, warmup_seconds=0.2, threads=2)
    assert isinstance(m, Measurements)
    assert m.device == "here" and m.runtime == "openvino" and m.threads == 2 and m.latency.runs == 30
    assert m.file_size_bytes == a.size_bytes and m.execution_precision
    assert 0 < m.baseline_rss_mb <= m.peak_rss_mb
    assert m.energy_mj_estimated == pytest.approx((2.0 + 1.5 * 2) * m.latency.p50_ms)
    plain = LocalRunner().run(artifacts["tflite-fp16"], _device(), runs=10, warmup_seconds=0.0, threads=1)
    assert plain.energy_mj_estimated is None and plain.runtime == "litert"


def test_a_missing_artifact_is_an_artifact_error_naming_it(tmp_path):
    """Found before any process starts (exit 2, like a corrupt file), not as the child's traceback."""
    missing = tmp_path / "missing.tflite"
    artifact = Artifact(
        name="tflite-fp32",
        format="tflite",
        runtime="litert",
        precision="fp32",
        path=missing,
        files=[missing],
        size_bytes=0,
        input_shape=[1, 1, 8, 8],
        layout="NCHW",
    )
    with pytest.raises(ArtifactError) as info:
        LocalRunner().run(artifact, _device(), runs=5, warmup_seconds=0.0, threads=1)
    assert str(info.value) == f"{missing}: no such file" and info.value.exit_code == 2


@pytest.mark.parametrize("fmt", ["tflite", "openvino"])
def test_unexportable_model_raises_export_error(setup, tmp_path, fmt):
    ctx, _, _, _ = setup
    spec = ExportSpec(format=fmt, precision="fp32")
    with pytest.raises(ExportError, match=rf"^{fmt}-fp32: .*failed: .*data-dependent"):
        EXPORTERS.get(fmt)().export(DataDependent().eval(), spec, ctx, tmp_path)


def test_unsupported_precision_raises_export_error(setup, tmp_path):
    ctx, model, _, _ = setup
    spec = ExportSpec.model_construct(format="tflite", precision="int4", name=None, options={})
    with pytest.raises(ExportError, match="does not support precision 'int4'"):
        EXPORTERS.get("tflite")().export(model, spec, ctx, tmp_path)
    with pytest.raises(ExportError, match="int8 export needs a 'quantize' stage"):
        EXPORTERS.get("tflite")().export(model, ExportSpec(format="tflite", precision="int8"), ctx, tmp_path)
