"""OpenVINO's sparse weight decompression (CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE) on an FC-heavy int8 model,
compiled with and without it through the project's session code (sessions.py / measure.py).

examples/mlp_models.py:digits_mlp with 80% of every Linear weight zeroed, NNCF int8 (the zeros stay exact int8
zeros). The test branches on this machine's ISA: with AMX the plugin must pack the hidden layers' weights
(their exec type says "sparse": the plugin's own record) and give the dense outputs; without AMX OpenVINO
2026.4 accepts the property and ignores it, and the session must say so in one warning line, with outputs
bit-identical. Both variants are timed in interleaved rounds (measure_batch) and the ratio is recorded with
record_property; no speed is asserted (speed claims belong in benchmarks/).
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ov = pytest.importorskip("openvino")
torch = pytest.importorskip("torch")
nncf = pytest.importorskip("nncf")

from edgecompress.runtimes import MEASURE_SCRIPT  # noqa: E402
from edgecompress.runtimes.measure import measure_batch, parse_runtime_options  # noqa: E402
from edgecompress.runtimes.probe import cpu_info  # noqa: E402
from edgecompress.runtimes.sessions import AMX_FLAGS, open_session, runtime_properties  # noqa: E402

pytestmark = [
    pytest.mark.integration,
    # ov.convert_model / nncf fork OpenVINO's telemetry sender; with JAX loaded by other tests Python warns
    # about fork + threads (the same noise exporters/torch_backend.py filters).
    pytest.mark.filterwarnings(r"ignore:os\.fork\(\) was called:RuntimeWarning"),
]

MLP_MODELS = Path(__file__).resolve().parents[2] / "examples" / "mlp_models.py"
SPARSITY = 0.8
RATE = 0.5
OPTIONS = {"sparse_weights_decompression_rate": RATE}
HAS_AMX = all(flag in cpu_info()[1] for flag in AMX_FLAGS)


def _digits_mlp() -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("example_mlp_models", MLP_MODELS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.digits_mlp()


@pytest.fixture(scope="module")
def sparse_int8_ir(tmp_path_factory) -> Path:
    """digits_mlp, 80% of each Linear weight zeroed (smallest magnitudes), NNCF int8 IR."""
    torch.manual_seed(0)
    model = _digits_mlp().eval()
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, torch.nn.Linear):
                w = layer.weight
                threshold = w.abs().flatten().kthvalue(int(w.numel() * SPARSITY)).values
                w[w.abs() <= threshold] = 0.0
    example = torch.zeros(1, 1, 32, 32)
    converted = ov.convert_model(model, example_input=example, input=[1, 1, 32, 32])
    rng = np.random.default_rng(0)
    calibration = [rng.standard_normal((1, 1, 32, 32)).astype(np.float32) for _ in range(64)]
    quantized = nncf.quantize(converted, nncf.Dataset(calibration), subset_size=64)
    path = tmp_path_factory.mktemp("sparse_fc") / "digits_mlp_int8.xml"
    ov.save_model(quantized, str(path))
    return path


def _int8_weight_sparsity(path: Path) -> list[float]:
    """Zero fraction of every 2-D int8 constant (the Linear weights) in the IR."""
    model = ov.Core().read_model(str(path))
    return [
        float(np.mean(op.get_data() == 0))
        for op in model.get_ops()
        if op.get_type_name() == "Constant"
        and op.get_element_type() == ov.Type.i8
        and len(op.get_output_shape(0)) == 2
    ]


def test_ir_keeps_the_zeros(sparse_int8_ir):
    sparsities = _int8_weight_sparsity(sparse_int8_ir)
    assert len(sparsities) == 3  # the three Linear layers, int8
    assert min(sparsities) >= SPARSITY - 0.01


def test_sparse_decompression_with_and_without(sparse_int8_ir, record_property):
    dense = open_session("openvino", sparse_int8_ir, threads=2, inference_precision="f32")
    sparse = open_session(
        "openvino", sparse_int8_ir, threads=2, inference_precision="f32", runtime_options=OPTIONS
    )
    # OpenVINO accepts the property on every x86 CPU and reports it back: what it did is in the exec graph.
    assert sparse._compiled.get_property("CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE") == pytest.approx(RATE)
    assert dense.sparse_layers == [] and dense.warnings == []

    rng = np.random.default_rng(1)
    inputs = rng.standard_normal((16, 1, 1, 32, 32)).astype(np.float32)
    dense_out = np.stack([dense.run(x) for x in inputs])
    sparse_out = np.stack([sparse.run(x) for x in inputs])
    assert np.isfinite(dense_out).all()

    if HAS_AMX:
        # The hidden layers (1024x1024 weights, 80% zeros >= the rate) run packed; the 10-output head cannot
        # (10 is not a multiple of 64).
        assert len(sparse.sparse_layers) == 2, sparse.sparse_layers
        assert sparse.warnings == []
        # int8 products accumulate exactly in int32 either way; only the float epilogue could reorder.
        np.testing.assert_allclose(
            sparse_out, dense_out, rtol=1e-5, atol=1e-5 * float(np.abs(dense_out).max())
        )
    else:
        assert sparse.sparse_layers == []
        assert len(sparse.warnings) == 1
        assert "lacks AMX" in sparse.warnings[0] and "\n" not in sparse.warnings[0]
        np.testing.assert_array_equal(sparse_out, dense_out)

    timed = measure_batch(
        [
            {"runtime": "openvino", "model": str(sparse_int8_ir), "inference_precision": "f32"},
            {
                "runtime": "openvino",
                "model": str(sparse_int8_ir),
                "inference_precision": "f32",
                "runtime_options": OPTIONS,
            },
        ],
        threads=2,
        runs=200,
        warmup_seconds=0.2,
        rounds=5,
    )
    without, with_rate = timed["results"]
    for result in (without, with_rate):
        assert "error" not in result, result.get("error")
        assert len(result["rounds_p50_ms"]) == 5
        assert all(math.isfinite(t) and t > 0 for t in result["rounds_p50_ms"])
    assert with_rate["runtime_options"] == OPTIONS
    assert bool(with_rate["sparse_layers"]) == HAS_AMX
    assert bool(with_rate["runtime_warnings"]) != HAS_AMX
    speedup = min(without["rounds_p50_ms"]) / min(with_rate["rounds_p50_ms"])
    record_property("amx", HAS_AMX)
    record_property("dense_p50_ms", min(without["rounds_p50_ms"]))
    record_property("sparse_rate_p50_ms", min(with_rate["rounds_p50_ms"]))
    record_property("speedup_with_rate", round(speedup, 3))


def test_measure_script_carries_the_option(sparse_int8_ir):
    """measure.py (the device-side script) compiles the option in and reports what it did."""
    done = subprocess.run(
        [
            sys.executable,
            str(MEASURE_SCRIPT),
            "--runtime",
            "openvino",
            "--model",
            str(sparse_int8_ir),
            "--runs",
            "20",
            "--warmup-seconds",
            "0",
            "--inference-precision",
            "f32",
            "--runtime-option",
            f"sparse_weights_decompression_rate={RATE}",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["runtime_options"] == OPTIONS
    assert result["latency"]["p50_ms"] > 0
    assert bool(result["sparse_layers"]) == HAS_AMX
    warned = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert warned == ([] if HAS_AMX else [f"warning: {result['runtime_warnings'][0]}"])


def test_runtime_options_are_checked():
    assert runtime_properties("openvino", OPTIONS) == {"CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE": RATE}
    assert parse_runtime_options(["sparse_weights_decompression_rate=0.5"]) == OPTIONS
    for bad in ({"sparse_weights_decompression_rate": 1.5}, {"sparse_rate": 0.5}):
        with pytest.raises(ValueError):
            runtime_properties("openvino", bad)
    with pytest.raises(ValueError, match="valid: none"):
        runtime_properties("litert", OPTIONS)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_runtime_options(["sparse_weights_decompression_rate"])
