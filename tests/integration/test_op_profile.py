"""Per-op profiles from the runtimes' own profilers, and the int8 deployability diagnosis, on artifacts
made here with the stock tools: litert-torch (fp32, and int8 by PT2E PTQ) and OpenVINO (fp32, and int8 by
NNCF PTQ) from one tiny CNN."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
litert_torch = pytest.importorskip("litert_torch")
ov = pytest.importorskip("openvino")
nncf = pytest.importorskip("nncf")

from torch import nn  # noqa: E402

from edgecompress.deployability import diagnose, render  # noqa: E402
from edgecompress.exporters.base import Artifact, artifact_from_file  # noqa: E402
from edgecompress.report import render_op_profiles  # noqa: E402
from edgecompress.runners.local import LocalRunner  # noqa: E402
from edgecompress.specs import CPUSpec, DeviceProfile  # noqa: E402

pytestmark = pytest.mark.integration

SHAPE = (1, 3, 32, 32)


class Net(nn.Module):
    """Conv, depthwise conv, pointwise conv, global mean, linear: the ops of a small mobile CNN."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 32, 3, padding=1)
        self.c2 = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.c3 = nn.Conv2d(32, 64, 1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.c1(x))
        y = torch.relu(self.c3(torch.relu(self.c2(y))))
        return self.fc(y.mean((2, 3)))


def _artifact(path: Path, runtime: str, precision: str) -> Artifact:
    update = {
        "name": f"{runtime}-{precision}",
        "precision": precision,
        "input_shape": list(SHAPE),
        "layout": "NCHW",
    }
    return artifact_from_file(path).model_copy(update=update)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Artifact]:
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    out = tmp_path_factory.mktemp("op_profile")
    torch.manual_seed(0)
    model = Net().eval()
    example = (torch.randn(*SHAPE),)
    calibration = [torch.randn(*SHAPE) for _ in range(8)]

    litert_torch.convert(model, example).export(str(out / "fp32.tflite"))
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(model, example).module(), quantizer)
    for x in calibration:
        prepared(x)
    quantized = convert_pt2e(prepared, fold_quantize=False)
    litert_torch.convert(quantized, example, quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(
        str(out / "int8.tflite")
    )

    ov_model = ov.convert_model(model, example_input=example[0], input=list(SHAPE))
    ov.save_model(ov_model, str(out / "fp32.xml"))
    int8_model = nncf.quantize(
        ov_model, nncf.Dataset([x.numpy() for x in calibration]), subset_size=len(calibration)
    )
    ov.save_model(int8_model, str(out / "int8.xml"))
    return {
        "litert-fp32": _artifact(out / "fp32.tflite", "litert", "fp32"),
        "litert-int8": _artifact(out / "int8.tflite", "litert", "int8"),
        "openvino-fp32": _artifact(out / "fp32.xml", "openvino", "fp32"),
        "openvino-int8": _artifact(out / "int8.xml", "openvino", "int8"),
    }


@pytest.fixture(scope="module")
def measured(artifacts):
    device = DeviceProfile(
        name="here",
        description="this machine",
        cpu=CPUSpec(model="detect", arch="detect", cores="detect"),
        memory_mb="detect",
        runtimes=["litert", "openvino"],
    )
    runner = LocalRunner(op_profile_runs=30)
    return {
        name: runner.run(a, device, runs=40, warmup_seconds=0.1, threads=2) for name, a in artifacts.items()
    }


@pytest.mark.parametrize("name", ["litert-fp32", "litert-int8", "openvino-fp32", "openvino-int8"])
def test_op_profile_is_timed_and_adds_up(measured, name):
    m = measured[name]
    profile = m.op_profile
    assert profile is not None and profile.error is None, profile
    assert profile.timed and profile.runs == 30 and profile.source
    executed = [op for op in profile.ops if op.status == "EXECUTED"]
    assert len(executed) >= 4
    assert all(op.time_ms is not None and op.time_ms >= 0 for op in profile.ops)
    assert executed[0].time_ms > 0 and profile.total_ms > 0
    assert sum(op.time_ms for op in profile.ops) == pytest.approx(profile.total_ms)
    assert sum(op.share for op in profile.ops) == pytest.approx(1.0)
    assert [op.time_ms for op in profile.ops] == sorted((op.time_ms for op in profile.ops), reverse=True)
    # The profiled ops account for a sensible part of an inference: not more than several times the
    # timed median (the profiler adds overhead), not a vanishing fraction of it.
    assert 0.1 * m.latency.p50_ms < profile.total_ms < 10 * m.latency.p50_ms
    if m.runtime == "litert":
        assert profile.invoke_ms is not None and profile.total_ms <= profile.invoke_ms * 1.05
        assert all(op.exec_type.startswith("XNNPACK") for op in executed)  # every op of this CNN is delegated


def test_precisions_seen_by_the_profilers(measured):
    ov_int8 = [op for op in measured["openvino-int8"].op_profile.ops if op.status == "EXECUTED"]
    convs = [op for op in ov_int8 if op.type in ("Convolution", "GroupConvolution")]
    assert len(convs) == 3 and all(op.precision == "int8" and "i8" in op.exec_type.lower() for op in convs)
    ov_fp32 = [op for op in measured["openvino-fp32"].op_profile.ops if op.type == "Convolution"]
    assert ov_fp32 and all(op.precision in ("f32", "bf16") for op in ov_fp32)
    lite_int8 = [op for op in measured["litert-int8"].op_profile.ops if op.type == "Convolution"]
    assert len(lite_int8) == 2 and all(op.precision == "int8" for op in lite_int8)
    lite_fp32 = [op for op in measured["litert-fp32"].op_profile.ops if op.type == "Convolution"]
    assert lite_fp32 and all(op.precision == "f32" for op in lite_fp32)


def test_report_section_renders_top_ops(measured):
    rows = [("here", name, m) for name, m in measured.items()]
    text = "\n".join(render_op_profiles(rows, top=3))
    for name in measured:
        assert f"### here / {name}" in text
    assert text.count("| 1 | ") == 4 and "| 4 | " not in text


@pytest.mark.parametrize("runtime", ["litert", "openvino"])
def test_deployability(measured, artifacts, runtime):
    int8, fp32 = measured[f"{runtime}-int8"], measured[f"{runtime}-fp32"]
    result = diagnose(int8=int8, fp32=fp32, int8_path=artifacts[f"{runtime}-int8"].path)
    assert result.speedup == pytest.approx(fp32.latency.p50_ms / int8.latency.p50_ms)
    assert result.faster == (result.speedup >= 1.05)
    kinds = {f.kind: f for f in result.findings}
    assert "cpu" in kinds and result.int8_dot_product == [
        f for f in ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm") if f in int8.isa_flags
    ]
    if runtime == "litert":
        # litert-torch keeps the torch graph's NCHW layout: transposes around the NHWC kernels.
        assert kinds["transpose"].count >= 1 and all("TRANSPOSE" in op for op in kinds["transpose"].ops)
        assert kinds["transpose"].time_ms is not None and "not_delegated" not in kinds
    else:
        assert "reorder_convert" in kinds and kinds["reorder_convert"].ops
        names = {op.name for op in int8.op_profile.ops}
        assert all(op in names for f in result.findings for op in f.ops)
    lines = render(result, title=f"{runtime}-int8")
    assert lines[0].startswith("### int8 deployability") and f"{result.speedup:.2f}x" in lines[2]
