"""An export's runtime_options travel with its artifact: Exporter.export -> Artifact -> sidecar -> the runners'
measure.py command lines (measure, outputs, batch, the native tool's -load_config) -> Measurements. No runtime
is loaded: the device side is a fake `_measure` that records what it was asked and answers as measure.py."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest

from edgecompress.errors import DeviceError, RecipeError
from edgecompress.exporters.base import Artifact, Exporter, artifact_from_file, copy_artifact
from edgecompress.exporters.sidecar import finish_artifact
from edgecompress.recipe import ExportSpec
from edgecompress.runners import base as runners_base
from edgecompress.runners.base import Completed, Job, ScriptRunner
from edgecompress.runtimes import measure
from edgecompress.specs import DeviceProfile
from tests.unit.test_native_tools import BENCHMARK_APP_2026

OPTIONS = {"sparse_weights_decompression_rate": 0.5}
WARNING = (
    "sparse_weights_decompression_rate 0.5 has no effect: this CPU lacks AMX (amx_tile not in /proc/cpuinfo)"
)


def _ir(folder: Path, name: str = "m", *, sidecar: dict | None = None) -> Path:
    """An .xml/.bin pair (contents irrelevant here) and, when given, its sidecar."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.xml").write_text("<net/>")
    (folder / f"{name}.bin").write_bytes(b"\0" * 8)
    if sidecar is not None:
        (folder / f"{name}.json").write_text(json.dumps(sidecar))
    return folder / f"{name}.xml"


def _artifact(path: Path, options: dict | None = None) -> Artifact:
    return Artifact(
        name="openvino-int8",
        format="openvino",
        runtime="openvino",
        precision="int8",
        path=path,
        files=[path, path.with_suffix(".bin")],
        size_bytes=14,
        input_shape=[1, 1, 8, 8],
        layout="NCHW",
        runtime_options=options or {},
    )


def _device(mode: str = "script") -> DeviceProfile:
    return DeviceProfile.model_validate(
        {
            "name": "dev",
            "description": "a test device",
            "cpu": {"model": "test", "arch": "x86_64", "cores": 2, "isa": ["avx2"]},
            "memory_mb": 1024,
            "runtimes": ["litert", "openvino"],
            "connection": {"mode": mode},
        }
    )


def _spec() -> ExportSpec:
    return ExportSpec(format="openvino", precision="int8", runtime_options=OPTIONS)


# ------------------------------------------------------------------------------------ export and sidecar


def test_artifact_has_no_options_by_default(tmp_path):
    artifact = _artifact(_ir(tmp_path))
    assert artifact.runtime_options == {}
    with pytest.raises(ValueError):
        artifact.runtime_options = OPTIONS  # frozen


def _backend_without_options(model, spec, ctx, out_dir):
    """An exporter backend that knows nothing of runtime options (writes a sidecar without them)."""
    return _artifact(_ir(out_dir, spec.artifact_name, sidecar={"artifact": spec.artifact_name}))


class _FakeExporter(Exporter):
    name = "openvino"
    runtime = "openvino"
    precisions = ("int8",)
    backends: ClassVar[dict[str, str]] = {"torch": f"{__name__}:_backend_without_options"}


def test_every_export_carries_the_spec_options(tmp_path):
    artifact = _FakeExporter().export(None, _spec(), SimpleNamespace(framework="torch"), tmp_path)
    assert artifact.runtime_options == OPTIONS
    sidecar = json.loads(artifact.path.with_suffix(".json").read_text())
    assert sidecar["runtime_options"] == OPTIONS  # recorded for a later `edgecompress profile FILE`


def test_finish_artifact_writes_options_and_runtime_config(tmp_path):
    path = _ir(tmp_path, "openvino-int8")
    ctx = SimpleNamespace(data=SimpleNamespace(layout="NCHW", describe=lambda: {"layout": "NCHW"}))
    io = {
        "input": {"name": "x", "shape": [1, 1, 8, 8], "dtype": "float32"},
        "output": {"name": "y", "shape": [1, 10], "dtype": "float32"},
    }
    artifact = finish_artifact(
        _spec(),
        ctx,
        runtime="openvino",
        path=path,
        files=[path, path.with_suffix(".bin")],
        io=io,
        converter={"openvino": "test"},
        inference_precision="f32",
    )
    assert artifact.runtime_options == OPTIONS
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["runtime_options"] == OPTIONS
    assert sidecar["runtime_config"] == {
        "INFERENCE_PRECISION_HINT": "f32",
        "CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE": 0.5,
    }
    again = artifact_from_file(path)  # the sidecar round trip
    assert again.runtime_options == OPTIONS and again.inference_precision == "f32"


def test_sidecar_round_trip_and_copy(tmp_path):
    path = _ir(tmp_path / "a", sidecar={"artifact": "m", "precision": "int8", "runtime_options": OPTIONS})
    artifact = artifact_from_file(path)
    assert artifact.runtime_options == OPTIONS
    copied = copy_artifact(artifact, "openvino-int8", tmp_path / "b")
    assert copied.runtime_options == OPTIONS
    assert artifact_from_file(copied.path).runtime_options == OPTIONS
    assert artifact_from_file(_ir(tmp_path / "c", sidecar={"artifact": "m"})).runtime_options == {}


def test_sidecar_with_an_unknown_option_is_a_recipe_error(tmp_path):
    path = _ir(tmp_path, sidecar={"runtime_options": {"sparse_rate": 0.5}})
    with pytest.raises(RecipeError, match="unknown openvino runtime option 'sparse_rate'"):
        artifact_from_file(path)


# ----------------------------------------------------------------------------------------------- runners


class _FakeRunner(ScriptRunner):
    """Answers every job as measure.py would, and keeps the command lines (and stdin) it was given."""

    where = "this machine"

    def __init__(self, *, answer: dict | str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.answer = answer
        self.jobs: list[tuple[list[str], str | None, dict | None]] = []

    def _measure(self, device: DeviceProfile, job: Job) -> Completed:
        argv = job.argv(str)
        config = None
        if "-load_config" in argv:  # read now: the file is gone once the run is over
            config = json.loads(Path(argv[argv.index("-load_config") + 1]).read_text())
        self.jobs.append((argv, job.stdin(str) if job.stdin else None, config))
        text = self.answer if isinstance(self.answer, str) else json.dumps(self.answer)
        return Completed(0, text + "\n", "")


def _measure_result(**extra) -> dict:
    latency = {
        "runs": 10,
        "p50_ms": 1.0,
        "p90_ms": 1.1,
        "p99_ms": 1.2,
        "mean_ms": 1.0,
        "std_ms": 0.1,
        "min_ms": 0.9,
        "max_ms": 1.3,
    }
    return {
        "runtime": "openvino",
        "runtime_version": "openvino test",
        "threads": 2,
        "load_ms": 5.0,
        "first_inference_ms": 1.5,
        "warmup_seconds": 0.0,
        "latency": latency,
        "peak_rss_mb": 100.0,
        "baseline_rss_mb": 90.0,
        "file_size_bytes": 14,
        "cpu_model": "test",
        "isa_flags": ["avx2"],
        "python_version": "3.11",
        **extra,
    }


@pytest.fixture
def no_artifact_check(monkeypatch):
    monkeypatch.setattr(runners_base, "check_artifacts", lambda artifacts: None)


class _Said:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def test_arguments_reach_measure_py_parser(tmp_path, monkeypatch):
    """The runner's argv, given to measure.py's own main, arrives as the same runtime options."""
    artifact = _artifact(_ir(tmp_path), OPTIONS)
    argv = ScriptRunner().arguments(artifact, str, runs=5, warmup_seconds=0.0, threads=1, op_profile=False)
    assert argv[argv.index("--runtime-option") + 1] == "sparse_weights_decompression_rate=0.5"
    seen: dict = {}

    def fake_measure(runtime, model, **kwargs):
        seen.update(kwargs, runtime=runtime, model=model)
        return {"runtime_warnings": []}

    monkeypatch.setattr(measure, "measure", fake_measure)
    assert measure.main(argv) == 0
    assert seen["runtime_options"] == OPTIONS and seen["model"] == artifact.path
    assert measure.parse_runtime_options(argv[argv.index("--runtime-option") + 1 :][:1]) == OPTIONS


def test_no_options_no_arguments(tmp_path):
    argv = ScriptRunner().arguments(
        _artifact(_ir(tmp_path)), str, runs=5, warmup_seconds=0.0, threads=1, op_profile=True
    )
    assert "--runtime-option" not in argv


def test_run_carries_options_warnings_and_sparse_layers(tmp_path, no_artifact_check):
    said = _Said()
    runner = _FakeRunner(
        answer=_measure_result(runtime_options=OPTIONS, runtime_warnings=[WARNING], sparse_layers=[]),
        ui=said,  # type: ignore[arg-type]
    )
    artifact = _artifact(_ir(tmp_path), OPTIONS)
    first, second = (
        runner.run(artifact, _device(), runs=10, warmup_seconds=0.0, threads=2, op_profile=False)
        for _ in range(2)
    )
    argv = runner.jobs[0][0]
    assert "--runtime-option" in argv and "sparse_weights_decompression_rate=0.5" in argv
    assert first.runtime_options == OPTIONS
    assert first.runtime_warnings == [WARNING] and first.sparse_layers == []
    assert second == first
    assert said.warnings == [f"dev: openvino-int8: {WARNING}"]  # once, not once per round


def test_run_without_options_records_none(tmp_path, no_artifact_check):
    runner = _FakeRunner(answer=_measure_result())
    measured = runner.run(
        _artifact(_ir(tmp_path)), _device(), runs=10, warmup_seconds=0.0, threads=2, op_profile=False
    )
    assert measured.runtime_options == {} and measured.runtime_warnings == []
    assert measured.sparse_layers is None


def test_outputs_pass_the_options(tmp_path, no_artifact_check):
    import base64
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.zeros((2, 10), dtype=np.float32))
    answer = {
        "outputs": base64.b64encode(buffer.getvalue()).decode(),
        "execution_precision": "f32",
        "runtime_warnings": [WARNING],
    }
    said = _Said()
    runner = _FakeRunner(answer=answer, ui=said)  # type: ignore[arg-type]
    logits, _ = runner.outputs(
        _artifact(_ir(tmp_path), OPTIONS), _device(), np.zeros((2, 1, 8, 8)), threads=1
    )
    assert logits.shape == (2, 10)
    assert "sparse_weights_decompression_rate=0.5" in runner.jobs[0][0]
    assert said.warnings == [f"dev: openvino-int8: {WARNING}"]


def test_batch_entries_carry_the_options(tmp_path):
    answer = {
        "results": [{"rounds_p50_ms": [1.0]}, {"rounds_p50_ms": [1.0]}],
        "runtime_versions": {"openvino": "test"},
        "cpu_model": "test",
        "isa_flags": [],
        "threads": 1,
    }
    runner = _FakeRunner(answer=answer)
    with_options = _artifact(_ir(tmp_path / "a"), OPTIONS)
    without = _artifact(_ir(tmp_path / "b"))
    runner.run_batch([with_options, without], _device(), runs=5, warmup_seconds=0.0, threads=1, rounds=1)
    entries = json.loads(runner.jobs[0][1])
    assert entries[0]["runtime_options"] == OPTIONS
    assert "runtime_options" not in entries[1]


def test_native_mode_gives_benchmark_app_a_config(tmp_path, no_artifact_check):
    runner = _FakeRunner(answer=BENCHMARK_APP_2026)
    measured = runner.run(
        _artifact(_ir(tmp_path), OPTIONS),
        _device("native"),
        runs=10,
        warmup_seconds=0.0,
        threads=2,
        op_profile=False,
    )
    argv, _, config = runner.jobs[0]
    assert Path(argv[0]).name == "benchmark_app" and "-load_config" in argv
    assert config == {"CPU": {"CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE": "0.5"}}
    assert measured.runtime_options == OPTIONS
    assert measured.sparse_layers is None  # benchmark_app does not say which layers were packed


def test_native_mode_without_options_has_no_config(tmp_path, no_artifact_check):
    runner = _FakeRunner(answer=BENCHMARK_APP_2026)
    runner.run(
        _artifact(_ir(tmp_path)), _device("native"), runs=10, warmup_seconds=0.0, threads=2, op_profile=False
    )
    assert "-load_config" not in runner.jobs[0][0]


def test_native_litert_with_options_is_a_device_error(tmp_path, no_artifact_check):
    tflite = tmp_path / "m.tflite"
    tflite.write_bytes(b"TFL3")
    artifact = Artifact(
        name="tflite-int8",
        format="tflite",
        runtime="litert",
        precision="int8",
        path=tflite,
        files=[tflite],
        size_bytes=4,
        input_shape=[1, 1, 8, 8],
        layout="NCHW",
        runtime_options={"some_option": 1},
    )
    runner = _FakeRunner(answer="")
    with pytest.raises(DeviceError, match="native does not take runtime_options for litert") as info:
        runner.run(artifact, _device("native"), runs=10, warmup_seconds=0.0, threads=2, op_profile=False)
    assert "\n" not in str(info.value)
    assert runner.jobs == []


# ----------------------------------------------------------------------------------------------- specs


def test_resolved_cpu_local_and_remote():
    local = DeviceProfile.model_validate(
        {
            "name": "here",
            "description": "this machine",
            "cpu": {"model": "detect", "arch": "detect", "cores": "detect"},
            "memory_mb": "detect",
            "runtimes": ["openvino"],
        }
    )
    arch, isa = local.resolved_cpu()
    assert arch != "detect" and isa  # read from this machine
    remote = local.model_copy(update={"connection": local.connection.model_copy(update={"runner": "ssh"})})
    assert remote.resolved_cpu() == ("detect", [])
    given = _device()
    assert given.resolved_cpu() == ("x86_64", ["avx2"])
    assert given.channel_multiple("openvino", "int8") == 8  # from the given ISA: oneDNN AVX2 blocks
