"""The latency model on this machine's real runtimes: measuring one-layer artifacts through the local
runner's batch call, caching them, and predicting a model as the sum of its layers.

Timing values depend on the CPU (the test machines differ), so these tests check behaviour: what is measured,
when, and that the numbers are real positive times in a plausible order.
"""

from __future__ import annotations

import pytest

from edgecompress.console import UI
from edgecompress.errors import DeviceError
from edgecompress.latency.graph import Node, OpGraph
from edgecompress.latency.model import Calibration, LatencyModel, null_graph
from edgecompress.runners.local import LocalRunner
from edgecompress.specs import load_device

pytestmark = pytest.mark.integration
pytest.importorskip("ai_edge_litert")
pytest.importorskip("openvino")

QUICK = Calibration(runs=20, warmup_seconds=0.0, rounds=2)


def _convs(channels: tuple[int, ...], precision: str = "fp32") -> list[OpGraph]:
    return [
        OpGraph(
            (1, 16, 16, 16),
            (
                Node.make(
                    "c", "conv2d", out_channels=c, kernel=(3, 3), padding=(1, 1, 1, 1), precision=precision
                ),
            ),
            label=f"conv 16->{c}",
        )
        for c in channels
    ]


@pytest.mark.parametrize("runtime", ["litert", "openvino"])
def test_measures_once_then_reads_the_cache(runtime, tmp_path):
    device = load_device("desktop")
    model = LatencyModel(device, runtime, threads=1, ui=UI(verbosity=0), cache=tmp_path, calibration=QUICK)
    graphs = [*_convs((8, 64)), *_convs((8,), "int8")]
    first = model.latencies(graphs)
    assert model.measured_count >= 3 and all(t > 0 for t in first)  # (OpenVINO: + the per-call cost)
    assert first[1] > first[0]  # 8x the output channels: more work, whatever the CPU
    assert model.notes and "building one" in model.notes[0]
    # a second model on the same cache measures nothing and returns the stored values
    again = LatencyModel(device, runtime, threads=1, ui=UI(verbosity=0), cache=tmp_path, calibration=QUICK)
    assert again.latencies(graphs) == first and again.measured_count == 0 and again.notes == []
    table = again.table
    assert table.key.runtime == runtime and table.key.threads == 1 and table.key.isa_flags is not None
    assert {e.label for e in table.entries.values()} >= {"conv 16->8", "conv 16->64"}
    # --recalibrate measures again
    fresh = LatencyModel(
        device, runtime, threads=1, ui=UI(verbosity=0), cache=tmp_path, calibration=QUICK, recalibrate=True
    )
    fresh.latencies(graphs[:1])
    assert fresh.measured_count >= 1 and "--recalibrate" in fresh.notes[0]


def test_prediction_counts_the_per_inference_cost_once(tmp_path):
    model = LatencyModel(
        load_device("desktop"), "litert", threads=1, ui=UI(verbosity=0), cache=tmp_path, calibration=QUICK
    )
    graphs = _convs((16, 32, 48))
    layers = model.latencies(graphs)
    overhead = model.latency(null_graph("fp32"))
    prediction = model.predict(graphs)
    assert prediction.overhead_ms == pytest.approx(overhead)
    expected = overhead + sum(max(t - overhead, 0.0) for t in layers)
    assert prediction.total_ms == pytest.approx(expected)


def test_batch_reports_a_failing_artifact_and_times_the_others(tmp_path):
    from edgecompress.exporters.base import Artifact
    from edgecompress.latency.tflite_builder import build_tflite

    device = load_device("desktop")
    good = build_tflite(_convs((8,))[0], tmp_path / "good.tflite")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    artifacts = [
        Artifact(
            name=p.stem,
            format="tflite",
            runtime="litert",
            precision="fp32",
            path=p,
            files=[p],
            size_bytes=p.stat().st_size,
            input_shape=[1, 16, 16, 16],
            layout="NHWC",
        )
        for p in (bad, good)
    ]
    result = LocalRunner().run_batch(artifacts, device, runs=5, warmup_seconds=0.0, threads=1, rounds=2)
    failed, timed = result.timings
    assert failed.error and not failed.rounds_p50_ms
    assert timed.error is None and len(timed.rounds_p50_ms) == 2 and timed.p50_ms > 0
    assert result.runtime_versions["litert"].startswith(("ai-edge-litert", "tflite-runtime"))


def test_a_device_without_the_runtime_is_a_clear_error(tmp_path):
    device = load_device("desktop").model_copy(update={"runtimes": ["openvino"]})
    model = LatencyModel(device, "litert", threads=1, ui=UI(verbosity=0), cache=tmp_path, calibration=QUICK)
    with pytest.raises(DeviceError, match="has no litert runtime"):
        model.latencies(_convs((8,)))


def test_calibrate_fills_the_tables_a_build_reads(tmp_path, monkeypatch):
    from edgecompress.calibrate import calibrate_device
    from edgecompress.latency.model import cached_tables
    from tests.conftest import EXAMPLES

    monkeypatch.setenv("EDGECOMPRESS_CACHE", str(tmp_path / "cache"))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"name: c\nmodel: {{source: {EXAMPLES}:tiny_cnn, input_shape: [1, 1, 16, 16]}}\n"
        "data: {image_size: [16, 16]}\nstages: [{type: quantize, mode: ptq}]\n"
        "export: [{format: tflite, precision: auto}, {format: openvino, precision: fp32}]\n"
        "profile: {threads: 1}\n"
    )
    calibrate_device("desktop", recipe, recalibrate=False, verbosity=0)
    tables = cached_tables("desktop", tmp_path / "cache")
    assert {t.name.split("-")[0] for t in tables} == {"litert", "openvino"}
    litert = LatencyModel(
        load_device("desktop"), "litert", threads=1, ui=UI(verbosity=0), cache=tmp_path / "cache"
    )
    labels = {e.label for e in litert.table.entries.values()}
    assert any(label.endswith("int8") for label in labels) and any(label.endswith("fp32") for label in labels)
    # a second calibration measures nothing new
    before = {t.name: t.stat().st_mtime_ns for t in tables}
    calibrate_device("desktop", recipe, recalibrate=False, verbosity=0)
    assert {t.name: t.stat().st_mtime_ns for t in cached_tables("desktop", tmp_path / "cache")} == before
