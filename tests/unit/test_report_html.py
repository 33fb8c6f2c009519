"""report.html without a build: which artifact it says to ship, the energy labels, no network, on a hand-made
Report."""

from __future__ import annotations

import re

from edgecompress.exporters.parity import ParityResult
from edgecompress.profiling import Energy, Measurements, OpProfile, OpTiming, Thermal
from edgecompress.report import ArtifactResult, DeviceStatus, GateResult, Report, Step
from edgecompress.report_html import choose_artifacts, energy_cell, gate_names, render_html
from tests.conftest import measurements


def _m(device: str, p50: float, rounds: tuple[float, ...] = (), **kw) -> Measurements:
    return measurements(device, p50, rounds, **kw)


def _artifact(name: str, p50: dict[str, float], *, role: str = "export", accuracy: float = 0.95, **kw):
    runtime = "openvino" if name.startswith("openvino") else "litert"
    return ArtifactResult(
        name=name,
        format=name.split("-")[0],
        runtime=runtime,
        precision=name.split("-")[1],
        role=role,  # type: ignore[arg-type]
        files=[f"{name}.bin"],
        size_bytes=20_480,
        parity=ParityResult(
            n=100,
            accuracy=accuracy,
            agreement=1.0,
            max_abs_diff=1e-5,
            mean_abs_diff=1e-6,
            execution_precision="f32",
        ),
        measurements={d: _m(d, v, (v, v * 1.2)) for d, v in p50.items()},
        **kw,
    )


def _gate(subject: str, passed: bool, gate: str = "max_size_kb") -> GateResult:
    return GateResult(gate=gate, subject=subject, limit=10.0, value=5.0 if passed else 20.0, passed=passed)


def _report(artifacts, gates=(), devices=None) -> Report:
    step = dict(test_accuracy=0.96, val_accuracy=0.95, params=1000, macs=50_000, seconds=1.0)
    return Report(
        edgecompress_version="0",
        recipe_name="unit",
        recipe_hash="cd" * 32,
        created="now",
        seed=0,
        framework="torch",
        machine={"cpu_model": "Test CPU", "cores": 2, "arch": "x86_64", "isa_flags": ["avx2"]},
        versions={"torch": "2.13.0", "edgecompress": "0.1.0"},
        data={"dataset": "digits", "train": 10, "val": 5, "test": 5, "num_classes": 10, "layout": "NCHW"},
        steps=[
            Step(name="baseline", stage_type=None, **step),
            Step(name="0:train", stage_type="train", images=1000, **step),
        ],
        reference_step="0:train",
        artifacts=list(artifacts),
        gates=list(gates),
        devices=devices
        if devices is not None
        else [DeviceStatus(name="desktop", description="this machine", runner="local")],
        wall_seconds=3.0,
    )


ARTIFACTS = [
    _artifact("tflite-fp32", {"desktop": 0.30}),
    _artifact("tflite-int8", {"desktop": 0.10}, accuracy=0.94),
    _artifact("openvino-fp32", {"desktop": 0.20}),
    _artifact("tflite-fp32-twin", {"desktop": 0.05}, role="fp32-twin"),
]


def test_ships_the_fastest_export_that_passes():
    report = _report(ARTIFACTS, gates=[_gate(a.name, True) for a in ARTIFACTS])
    (choice,) = choose_artifacts(report)
    assert choice.status == "ship"
    assert choice.chosen.name == "tflite-int8", "the faster fp32 twin is not a candidate"
    assert choice.runner_up.name == "openvino-fp32"
    assert choice.slowest.name == "tflite-fp32"
    assert "3.00x as fast as the slowest, tflite-fp32 (0.300 ms)" in choice.why
    assert "accuracy 0.9400 on litert" in choice.why and "20.0 KiB" in choice.why
    assert "Runner-up: openvino-fp32" in choice.runner_up_text and "(2.00x slower)" in choice.runner_up_text
    html = render_html(report)
    answer = html[html.index('id="answer"') : html.index('id="steps"')]
    assert "desktop: ship <code>tflite-int8</code>" in answer


def test_a_failed_gate_on_the_fastest_ships_the_runner_up():
    gates = [_gate("tflite-int8", False), _gate("desktop/openvino-fp32", True, "max_latency_ms")]
    (choice,) = choose_artifacts(_report(ARTIFACTS, gates=gates))
    assert choice.chosen.name == "openvino-fp32"
    assert choice.runner_up.name == "tflite-fp32"
    assert [c.name for c in choice.disqualified] == ["tflite-int8"]
    assert "Ruled out by a failed gate: tflite-int8" in choice.excluded_text
    assert "max_size_kb failed: 20 vs limit 10" in choice.excluded_text


def test_gates_name_artifacts_exactly_and_per_device():
    assert gate_names(_gate("tflite-int8", False), "tflite-int8", "desktop")
    assert gate_names(_gate("desktop/tflite-int8", False), "tflite-int8", "desktop")
    assert not gate_names(_gate("rpi5/tflite-int8", False), "tflite-int8", "desktop"), "another device"
    assert gate_names(_gate("tflite-int8 vs openvino-int8", False), "openvino-int8", "desktop")
    assert not gate_names(_gate("tflite-int8-unpruned", False), "tflite-int8", "desktop"), "no prefix match"
    # gates as a build makes them name their artifacts and device: parity on a device judges it there only
    from edgecompress.gates import _at_least, _at_most

    there = _at_least("parity.min_agreement", "rpi5/tflite-int8 vs here", 0.9, 0.99)
    assert there.artifacts == ["tflite-int8"] and there.device == "rpi5"
    assert gate_names(there, "tflite-int8", "rpi5") and not gate_names(there, "tflite-int8", "desktop")
    pair = _at_least("parity.min_agreement", "tflite-int8 vs openvino-int8", 0.9, 0.99)
    assert gate_names(pair, "openvino-int8", "desktop") and not gate_names(pair, "tflite-fp32", "desktop")
    size = _at_most("max_size_kb", "tflite-int8", 20, 10)
    assert size.device is None and gate_names(size, "tflite-int8", "rpi5")
    # a latency gate failed on one device only disqualifies the artifact there
    arts = [_artifact("tflite-int8", {"a": 0.1, "b": 0.1}), _artifact("openvino-int8", {"a": 0.2, "b": 0.2})]
    devices = [DeviceStatus(name=n, description=n, runner="local") for n in ("a", "b")]
    a, b = choose_artifacts(_report(arts, [_gate("b/tflite-int8", False, "max_latency_ms")], devices))
    assert a.chosen.name == "tflite-int8" and b.chosen.name == "openvino-int8"


def test_no_artifact_passes_is_said_plainly():
    gates = [_gate(a.name, False) for a in ARTIFACTS if a.role == "export"]
    report = _report(ARTIFACTS, gates=gates)
    (choice,) = choose_artifacts(report)
    assert choice.status == "none" and choice.chosen is None and choice.runner_up is None
    assert choice.headline == "desktop: no artifact passes the gates"
    assert "Every artifact measured on desktop fails a gate: tflite-int8 (max_size_kb failed" in choice.why
    html = render_html(report)
    assert "desktop: no artifact passes the gates" in html and "3 of 3 gates failed" in html


def test_a_failed_device_is_said():
    devices = [
        DeviceStatus(name="desktop", description="this machine", runner="local"),
        DeviceStatus(
            name="rpi5",
            description="Raspberry Pi 5",
            runner="ssh",
            host="pi@rpi",
            error="ssh: no route\nmore",
        ),
    ]
    report = _report(ARTIFACTS, devices=devices)
    desktop, rpi = choose_artifacts(report)
    assert desktop.chosen.name == "tflite-int8"
    assert rpi.status == "failed" and rpi.chosen is None
    assert rpi.headline == "rpi5: the device failed — nothing to ship from it"
    assert rpi.why == "Profiling on rpi5 failed: ssh: no route"
    html = render_html(report)
    assert "rpi5: the device failed" in html and "Profiling on rpi5 failed: ssh: no route" in html
    devices_section = html[html.index('id="devices-table"') :]
    assert "failed</span>: ssh: no route" in devices_section and "pi@rpi" in devices_section


def test_energy_is_labelled_and_an_estimate_never_looks_measured():
    assert energy_cell(None).text == "—"
    assert energy_cell(_m("d", 0.1)).kind == "none"
    old = energy_cell(_m("d", 0.1, energy_mj_estimated=0.5))
    assert (old.text, old.label, old.kind) == ("≈ 0.500 mJ", "estimated (power model)", "estimated")
    est = energy_cell(
        _m("d", 0.1, energy=Energy(kind="estimated", source="power model", mj_per_inference=1.2))
    )
    assert (est.text, est.label) == ("≈ 1.200 mJ", "estimated (power model)")
    measured = Energy(kind="measured", source="rapl", mj_per_inference=0.8, windows=3, spread_mj=(0.7, 0.9))
    cell = energy_cell(_m("d", 0.1, energy=measured))
    assert (cell.text, cell.label, cell.kind) == (
        "0.800 mJ (windows 0.700–0.900)",
        "measured (rapl)",
        "measured",
    )


def test_html_is_self_contained_and_escaped():
    profile = OpProfile(
        source="test profiler",
        timed=True,
        runs=10,
        total_ms=0.1,
        ops=[
            OpTiming(name=f"op{i}", type="Conv", exec_type="jit", time_ms=0.01 * (12 - i), share=0.1)
            for i in range(12)
        ],
    )
    twin = (
        ARTIFACTS[0]
        .measurements["desktop"]
        .model_copy(
            update={"op_profile": profile, "thermal": Thermal(throttled=True, note="fell 2400→1500 MHz")}
        )
    )
    artifacts = [ARTIFACTS[0].model_copy(update={"measurements": {"desktop": twin}}), *ARTIFACTS[1:]]
    devices = [DeviceStatus(name="desktop", description="<b>mine</b>", runner="local")]
    html = render_html(_report(artifacts, gates=[_gate("tflite-fp32", True)], devices=devices))
    assert "&lt;b&gt;mine&lt;/b&gt;" in html and "<b>mine</b>" not in html, "autoescaped"
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert not re.search(r"@import|url\(\s*['\"]?(?:https?:)?//", html, re.I)
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert html.count("<svg") == 2, "one latency chart, one per-op chart"
    assert "top 10 of 12 ops" in html and "throttled" in html
    order = [
        html.index(f'id="{s}"') for s in ("answer", "steps", "artifacts", "latency", "int8", "ops", "gates")
    ]
    assert order == sorted(order)
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "the inline SVGs share no id"
