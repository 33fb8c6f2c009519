"""Pure functions of the per-op profile and the deployability diagnosis: exec-type parsing, aggregation
of the runtimes' profiler output, findings in op inventories, rendering. No runtime needed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edgecompress.deployability import (
    Deployability,
    Finding,
    diagnose,
    int8_dot_product,
    litert_findings,
    openvino_findings,
    render,
)
from edgecompress.errors import EdgeCompressError
from edgecompress.profiling import LatencyStats, Measurements, OpProfile
from edgecompress.report import render_op_profiles
from edgecompress.runtimes.op_profiles import (
    aggregate_litert,
    aggregate_openvino,
    inventory_profile,
    precision_of,
)


@pytest.mark.parametrize(
    ("exec_type", "precision"),
    [
        ("brgconv_avx512_amx_i8", "int8"),
        ("brgconv_avx512_amx_1x1_I8", "int8"),
        ("jit_avx2_FP32", "f32"),
        ("jit_avx512_f32", "f32"),
        ("brgconv_avx512_amx_bf16", "bf16"),
        ("jit_uni_u8", "int8"),
        ("undef", None),
        ("ref", None),
        ("XNNPACK (NHWC, QC8) IGEMM", "int8"),
        ("Fully Connected (NC, QS8, QC8W) GEMM", "int8"),
        ("Fully Connected (NC, QD8, F32, QC8W) GEMM", "int8-dynamic"),
        ("Convolution (NHWC, F32) IGEMM", "f32"),
        ("Transpose (ND, X8) Transpose", "8-bit"),
        ("Mean (ND) Reduce2", None),
    ],
)
def test_precision_of(exec_type, precision):
    assert precision_of(exec_type) == precision


def _ov_node(name, node_type, exec_type, ms, status="EXECUTED"):
    return {
        "node_name": name,
        "node_type": node_type,
        "exec_type": exec_type,
        "real_time_ms": ms,
        "status": status,
    }


def test_aggregate_openvino_means_per_inference_and_shares():
    runs = [
        [
            _ov_node("conv", "Convolution", "brgconv_avx512_amx_i8", 0.3),
            _ov_node("reorder", "Reorder", "jit_uni_f32", 0.1),
            _ov_node("fq", "FakeQuantize", "undef", 0.0, "NOT_RUN"),
        ],
        [
            _ov_node("conv", "Convolution", "brgconv_avx512_amx_i8", 0.5),
            _ov_node("reorder", "Reorder", "jit_uni_f32", 0.1),
            _ov_node("fq", "FakeQuantize", "undef", 0.0, "NOT_RUN"),
        ],
    ]
    result = aggregate_openvino(runs)
    ops = {op["name"]: op for op in result["ops"]}
    assert result["runs"] == 2 and [op["name"] for op in result["ops"]][:2] == ["conv", "reorder"]
    assert ops["conv"]["time_ms"] == pytest.approx(0.4) and ops["conv"]["precision"] == "int8"
    assert ops["reorder"]["precision"] == "f32" and ops["fq"]["status"] == "NOT_RUN"
    assert result["total_ms"] == pytest.approx(0.5)
    assert sum(op["share"] for op in result["ops"]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        aggregate_openvino([])


INVENTORY = [
    {
        "index": 0,
        "type": "QUANTIZE",
        "executed_by": "XNNPACK",
        "input_dtypes": ["float32"],
        "weight_dtypes": [],
        "output_dtypes": ["int8"],
        "producers": [],
        "consumers": [1],
    },
    {
        "index": 1,
        "type": "CONV_2D",
        "executed_by": "XNNPACK",
        "input_dtypes": ["int8"],
        "weight_dtypes": ["int8", "int32"],
        "output_dtypes": ["int8"],
        "producers": [0],
        "consumers": [2],
    },
    {
        "index": 2,
        "type": "DEQUANTIZE",
        "executed_by": "XNNPACK",
        "input_dtypes": ["int8"],
        "weight_dtypes": [],
        "output_dtypes": ["float32"],
        "producers": [1],
        "consumers": [3],
    },
    {
        "index": 3,
        "type": "GELU",
        "executed_by": "builtin kernels",
        "input_dtypes": ["float32"],
        "weight_dtypes": [],
        "output_dtypes": ["float32"],
        "producers": [2],
        "consumers": [4],
    },
    {
        "index": 4,
        "type": "QUANTIZE",
        "executed_by": "XNNPACK",
        "input_dtypes": ["float32"],
        "weight_dtypes": [],
        "output_dtypes": ["int8"],
        "producers": [3],
        "consumers": [5],
    },
    {
        "index": 5,
        "type": "TRANSPOSE",
        "executed_by": "XNNPACK",
        "input_dtypes": ["int8"],
        "weight_dtypes": ["int32"],
        "output_dtypes": ["int8"],
        "producers": [4],
        "consumers": [],
    },
]


def _event(tag, event_type, us, index=0):
    return {"tag": tag, "event_type": event_type, "elapsed_us": us, "metadata1": index}


def test_aggregate_litert_keeps_ops_and_drops_the_delegate_node():
    run = [
        _event("LiteRT::Run[buffer registration]", 1, 9),
        _event("Invoke", 1, 100),
        _event("Convolution (NHWC, QC8) IGEMM", 8, 40, 0),
        _event("Transpose (ND, X8) Transpose", 8, 10, 1),
        _event("TfLiteXNNPackDelegate", 2, 55, 6),  # the delegate's own node: would count twice
        _event("GELU", 2, 30, 3),
        _event("Invoke", 32, 4294967296, -1),  # telemetry sentinel, not a time
    ]
    result = aggregate_litert([run, run], INVENTORY)
    names = [op["name"] for op in result["ops"]]
    assert names == ["xnnpack#0 Convolution", "#3 GELU", "xnnpack#1 Transpose"]
    gelu = result["ops"][1]
    assert gelu["exec_type"] == "builtin kernels" and gelu["precision"] == "f32"
    assert result["ops"][0]["precision"] == "int8" and result["ops"][0]["time_ms"] == pytest.approx(0.04)
    assert result["total_ms"] == pytest.approx(0.08) and result["invoke_ms"] == pytest.approx(0.1)
    assert all(op["calls"] == 1 for op in result["ops"])


def test_inventory_profile_has_no_times():
    profile = OpProfile.model_validate(inventory_profile(INVENTORY, "no libLiteRt.so"))
    assert not profile.timed and profile.total_ms is None and "WITHOUT timings" in profile.note
    assert all(op.time_ms is None and op.share is None for op in profile.ops)
    assert [op.exec_type for op in profile.ops].count("builtin kernels") == 1
    lines = render_op_profiles([("here", "tflite-int8", _measurements(op_profile=profile))])
    text = "\n".join(lines)
    assert "WITHOUT timings" in text and " ms " not in text and "| ms |" not in text


def test_litert_findings_name_real_ops():
    findings = {f.kind: f for f in litert_findings(INVENTORY)}
    assert findings["not_delegated"].count == 1 and findings["not_delegated"].ops == ["#3 GELU"]
    qdq = findings["quantize_dequantize"]
    assert qdq.count == 3 and "2 inside the graph" in qdq.message
    assert (
        "#2 DEQUANTIZE (CONV_2D → GELU)" in qdq.message
        and "#0 QUANTIZE (model input → CONV_2D)" in qdq.message
    )
    assert findings["transpose"].ops == ["#5 TRANSPOSE"]
    assert findings["float_ops"].ops == ["#3 GELU"]


def test_litert_findings_clean_graph():
    clean = [dict(INVENTORY[1], producers=[], consumers=[])]
    assert litert_findings(clean) == []


def _op(name, op_type, exec_type, ms, status="EXECUTED"):
    return {
        "name": name,
        "type": op_type,
        "exec_type": exec_type,
        "precision": precision_of(exec_type),
        "time_ms": ms,
        "share": 0.0,
        "status": status,
    }


OV_PROFILE = OpProfile(
    source="OpenVINO performance counters",
    timed=True,
    runs=10,
    threads=2,
    total_ms=0.6,
    ops=[
        _op("conv", "Convolution", "brgconv_avx512_amx_i8", 0.3),
        _op("mul", "Multiply", "jit_avx2_FP32", 0.1),
        _op("fq_in", "FakeQuantize", "jit_avx512_f32", 0.1),
        _op("reorder", "Reorder", "jit_uni_i8", 0.1),
        _op("fq_fused", "FakeQuantize", "undef", 0.0, "NOT_RUN"),
    ],
)


def test_openvino_findings():
    findings = {f.kind: f for f in openvino_findings(OV_PROFILE)}
    assert findings["float_exec"].ops == ["mul", "fq_in"] and findings["float_exec"].time_ms == pytest.approx(
        0.2
    )
    assert findings["reorder_convert"].ops == ["reorder"]
    assert findings["fakequantize_unfused"].ops == ["fq_in"]
    untimed = openvino_findings(None, ["Parameter", "FakeQuantize", "Convolution", "FakeQuantize"])
    assert untimed[0].count == 2 and "unknown" in untimed[0].message


def test_int8_dot_product_flags():
    assert int8_dot_product(["avx2", "fma"]) == []
    assert int8_dot_product(["avx2", "avx512_vnni", "amx_int8"]) == ["avx512_vnni", "amx_int8"]
    assert int8_dot_product(["asimd", "asimddp", "i8mm"]) == ["asimddp", "i8mm"]


def _measurements(*, runtime="openvino", p50=1.0, device="here", flags=("avx2",), op_profile=None):
    return Measurements(
        device=device,
        runtime=runtime,
        runtime_version="x",
        threads=2,
        load_ms=1.0,
        first_inference_ms=1.0,
        warmup_seconds=0.1,
        latency=LatencyStats(
            runs=10, p50_ms=p50, p90_ms=p50, p99_ms=p50, mean_ms=p50, std_ms=0, min_ms=p50, max_ms=p50
        ),
        peak_rss_mb=10,
        baseline_rss_mb=5,
        file_size_bytes=100,
        cpu_model="Test CPU",
        isa_flags=list(flags),
        python_version="3.11.0",
        op_profile=op_profile,
    )


def test_diagnose_openvino_from_measurements(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    int8 = _measurements(p50=1.0, op_profile=OV_PROFILE)
    fp32 = _measurements(p50=0.9)
    # openvino_findings reads the op profile; the IR is only read for its op types.
    monkeypatch.setattr(
        "edgecompress.deployability.openvino_findings", lambda profile, types: openvino_findings(profile)
    )
    monkeypatch.setattr(
        "openvino.Core.read_model", lambda self, path: type("M", (), {"get_ops": lambda s: []})()
    )
    result = diagnose(int8=int8, fp32=fp32, int8_path=tmp_path / "m.xml")
    assert isinstance(result, Deployability)
    assert result.speedup == pytest.approx(0.9) and not result.faster
    assert {f.kind for f in result.findings} >= {
        "float_exec",
        "reorder_convert",
        "fakequantize_unfused",
        "cpu",
    }
    assert "not faster" in result.explanation and "no int8 dot-product" in result.explanation
    lines = render(result, title="openvino-int8")
    assert lines[0].startswith("### int8 deployability: openvino-int8")
    assert any("NOT faster" in line and "0.90x" in line for line in lines)
    assert any("`float_exec` (2)" in line for line in lines)


def test_diagnose_refuses_different_runtimes_or_devices(tmp_path):
    with pytest.raises(EdgeCompressError, match="one runtime on one device"):
        diagnose(int8=_measurements(), fp32=_measurements(runtime="litert"), int8_path=tmp_path / "m.xml")
    with pytest.raises(EdgeCompressError, match="one runtime on one device"):
        diagnose(int8=_measurements(), fp32=_measurements(device="pi"), int8_path=tmp_path / "m.xml")


def test_render_op_profiles_timed_top_and_error():
    timed = _measurements(op_profile=OV_PROFILE)
    failed = _measurements(op_profile=OpProfile(timed=False, error="op profiling failed (exit 1)"))
    lines = render_op_profiles(
        [("here", "openvino-int8", timed), ("here", "x", failed), ("here", "y", _measurements())], top=2
    )
    text = "\n".join(lines)
    assert "## Per-op profile" in text and "### here / openvino-int8" in text and "### here / y" not in text
    rows = [line for line in lines if line.startswith("| ") and ("brgconv" in line or "jit_avx2" in line)]
    assert len(rows) == 2 and "| 1 | conv |" in rows[0]
    assert "Per-op profile unavailable: op profiling failed" in text
    assert render_op_profiles([("here", "y", _measurements())]) == []


def test_finding_model_is_frozen():
    f = Finding(kind="cpu", count=0, message="m")
    with pytest.raises(ValidationError):
        f.count = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("speedup", "int8", "fp32", "verdict"),
    [
        (2.0, (0.50, 0.52), (1.00, 1.05), "faster"),
        (1.5, (0.60, 1.10), (0.90, 1.00), "no measurable difference"),  # rounds overlap
        (1.03, (0.97, 0.97), (1.00, 1.00), "no measurable difference"),  # under min_gain
        (0.5, (2.00, 2.10), (1.00, 1.05), "slower"),
        (0.8, (1.00, 1.30), (0.90, 1.05), "no measurable difference"),
    ],
)
def test_verdict_needs_the_gain_and_separated_rounds(speedup, int8, fp32, verdict):
    from edgecompress.deployability import verdict_of

    assert verdict_of(speedup, int8, fp32, min_gain=0.05) == verdict


def _rounds(*p50s, op_profile_in=0, rss=(10.0,)):
    out = []
    for i, p in enumerate(p50s):
        m = _measurements(p50=p, op_profile=OV_PROFILE if i == op_profile_in else None)
        out.append(m.model_copy(update={"peak_rss_mb": rss[i % len(rss)]}))
    return out


def test_combine_rounds_takes_the_fastest_round_and_keeps_the_spread():
    from edgecompress.profiling import combine_rounds

    combined = combine_rounds(_rounds(1.4, 1.0, 1.1, op_profile_in=0, rss=(10.0, 12.0, 11.0)))
    assert combined.latency.p50_ms == 1.0
    assert combined.latency.rounds_p50_ms == [1.4, 1.0, 1.1]
    assert combined.latency.spread_ms == (1.0, 1.4)
    assert combined.op_profile == OV_PROFILE  # taken in the first round only, kept
    assert combined.peak_rss_mb == 12.0
    single = combine_rounds(_rounds(0.7))
    assert single.latency.rounds_p50_ms == [0.7] and single.latency.spread_ms == (0.7, 0.7)
    with pytest.raises(ValueError):
        combine_rounds([])


def test_diagnose_inside_the_spread_is_no_measurable_difference(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    from edgecompress.profiling import combine_rounds

    monkeypatch.setattr(
        "openvino.Core.read_model", lambda self, path: type("M", (), {"get_ops": lambda s: []})()
    )
    int8 = combine_rounds(_rounds(0.085, 0.116, 0.090))
    fp32 = combine_rounds(_rounds(0.110, 0.100, 0.105))
    result = diagnose(int8=int8, fp32=fp32, int8_path=tmp_path / "m.xml")
    assert result.speedup == pytest.approx(0.100 / 0.085)
    assert result.verdict == "no measurable difference" and not result.faster
    assert result.int8_p50_spread_ms == (0.085, 0.116) and result.fp32_p50_spread_ms == (0.100, 0.110)
    assert "no measurable difference" in result.explanation and "0.085–0.116" in result.explanation
    assert any("NOT faster (no measurable difference)" in line for line in render(result))
