"""Gates and the report rendering, on hand-made measured values."""

from __future__ import annotations

from edgecompress.gates import evaluate_gates
from edgecompress.profiling import Measurements
from edgecompress.recipe import parse_recipe
from edgecompress.report import ArtifactResult, Parity, Report, Step
from edgecompress.summary import summary_table
from tests.conftest import measurements

RECIPE = """\
name: g
model: {source: m.py:f, input_shape: [1, 1, 8, 8]}
export: [{format: tflite}]
gates: {max_accuracy_drop: 0.01, max_size_kb: 10, max_latency_ms: {"desktop/tflite-*": 1.0}}
"""


def _measurements(p50: float) -> Measurements:
    return measurements("desktop", p50, threads=2)


def _artifact(acc: float, agreement: float, size: int, p50: float) -> ArtifactResult:
    return ArtifactResult(
        name="tflite-fp32",
        format="tflite",
        runtime="litert",
        precision="fp32",
        files=["tflite-fp32.tflite"],
        size_bytes=size,
        parity=Parity(
            n=100,
            accuracy=acc,
            agreement=agreement,
            max_abs_diff=1e-5,
            mean_abs_diff=1e-6,
            execution_precision="f32",
        ),
        measurements={"desktop": _measurements(p50)},
    )


REF = Step(
    name="baseline", stage_type=None, test_accuracy=0.98, val_accuracy=0.98, params=100, macs=1000, seconds=0
)


def test_all_gates_pass():
    gates = evaluate_gates(parse_recipe(RECIPE), [REF], REF, [_artifact(0.975, 1.0, 5 * 1024, 0.5)])
    assert {g.gate for g in gates} == {
        "parity.min_agreement",
        "max_accuracy_drop",
        "max_size_kb",
        "max_latency_ms",
    }
    assert all(g.passed for g in gates)


def test_failing_gates_say_by_how_much():
    gates = evaluate_gates(parse_recipe(RECIPE), [REF], REF, [_artifact(0.95, 0.98, 20 * 1024, 1.5)])
    failed = {g.gate: g for g in gates if not g.passed}
    assert set(failed) == {"parity.min_agreement", "max_accuracy_drop", "max_size_kb", "max_latency_ms"}
    assert failed["max_size_kb"].message == "max_size_kb [tflite-fp32]: 20 (limit 10) FAILED by 10"
    assert failed["max_latency_ms"].subject == "desktop/tflite-fp32"
    assert "FAILED by 0.02" in failed["max_accuracy_drop"].message


def test_report_markdown_and_table():
    step = Step(
        name="0:prune",
        stage_type="prune",
        test_accuracy=0.97,
        val_accuracy=0.97,
        params=40,
        macs=400,
        seconds=1.0,
        notes={"macs_before": 1000},
    )
    art = _artifact(0.97, 1.0, 2048, 0.4)
    report = Report(
        edgecompress_version="0",
        recipe_name="g",
        recipe_hash="ab" * 32,
        created="now",
        seed=0,
        framework="torch",
        machine={"cpu_model": "cpu"},
        versions={"torch": "2"},
        data={"dataset": "digits"},
        steps=[REF, step],
        reference_step="baseline",
        artifacts=[art],
        gates=[],
        wall_seconds=3.0,
    )
    md = report.to_markdown()
    assert "| 0:prune | 0.9700 | -1.00 pt | 400 | 2.50x fewer |" in md
    assert "| baseline (reference) | 0.9800 | +0.00 pt | 1,000 | — |" in md
    assert "| desktop | tflite-fp32 | 2 | 0.400 |" in md
    assert Report.model_validate_json(report.model_dump_json()) == report
    assert summary_table(report).row_count == 3


def test_fp32_twins_only_for_int8_formats_without_fp32():
    from edgecompress.pipeline import _twins

    recipe = parse_recipe(
        RECIPE.replace(
            "export: [{format: tflite}]",
            "export: [{format: tflite, precision: int8}, {format: openvino, precision: int8}, {format: openvino}]",
        ).replace('"desktop/tflite-*"', '"desktop/*"')
    )
    assert [t.artifact_name for t in _twins(recipe)] == ["tflite-fp32-twin"]


def test_cross_runtime_agreement_pairs_same_precision_only():
    import numpy as np

    from edgecompress.pipeline import _Exported, cross_runtime_agreement

    class _A:
        def __init__(self, name, runtime, precision):
            self.name, self.runtime, self.precision = name, runtime, precision

    logits = np.eye(4, dtype=np.float32)
    flipped = logits.copy()
    flipped[0] = [0, 1, 0, 0]
    exported = [
        _Exported(_A("tflite-int8", "litert", "int8"), None, logits, "export"),
        _Exported(_A("openvino-int8", "openvino", "int8"), None, flipped, "export"),
        _Exported(_A("openvino-fp32", "openvino", "fp32"), None, logits, "export"),
    ]
    (pair,) = cross_runtime_agreement(exported)
    assert (pair.a, pair.b, pair.agreement) == ("tflite-int8", "openvino-int8", 0.75)
    gates = evaluate_gates(parse_recipe(RECIPE), [REF], REF, [], [pair])
    cross = [(g.subject, g.passed) for g in gates if g.gate == "parity.min_agreement"]
    assert cross == [("tflite-int8 vs openvino-int8", False)]


def test_twins_are_only_parity_gated():
    twin = _artifact(0.5, 1.0, 50 * 1024, 5.0).model_copy(update={"role": "fp32-twin"})
    gates = evaluate_gates(parse_recipe(RECIPE), [REF], REF, [twin])
    assert [g.gate for g in gates] == ["parity.min_agreement"]
