"""edgecompress.sparsity_lint: speed or size only, per pattern x runtime x precision x CPU, from the kernels'
rules. Every CPU here is given explicitly (ARM64, x86 with AVX2, x86 with AMX, ...): nothing depends on the
machine the tests run on."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgecompress.recipe import parse_recipe
from edgecompress.sparsity_lint import KINDS, SparsityVerdict, device_cpu, lint_lines, sparsity_verdict
from edgecompress.specs import DeviceProfile
from tests.conftest import EXAMPLES

ARM64 = ("aarch64", ["asimd", "asimdhp", "asimddp"])
ARM32 = ("armv7l", ["neon"])
X86_AVX2 = ("x86_64", ["sse4_2", "avx", "avx2", "fma"])
X86_VNNI = ("x86_64", ["sse4_2", "avx", "avx2", "avx512f", "avx512_vnni"])
X86_AMX = ("x86_64", ["sse4_2", "avx", "avx2", "avx512f", "avx512_vnni", "amx_tile", "amx_int8", "amx_bf16"])
X86_SSE_ONLY = ("x86_64", ["sse4_1", "sse4_2"])
CPUS = {
    "arm64": ARM64,
    "arm32": ARM32,
    "avx2": X86_AVX2,
    "vnni": X86_VNNI,
    "amx": X86_AMX,
    "sse": X86_SSE_ONLY,
}


def verdict(kind="unstructured", *, cpu="arm64", runtime="litert", precision="fp32", sparsity=0.8, block=None,
            sparse_encoded=False) -> SparsityVerdict:  # fmt: skip
    arch, isa = CPUS[cpu]
    return sparsity_verdict(
        kind,
        block=block,
        sparsity=sparsity,
        runtime=runtime,
        precision=precision,
        arch=arch,
        isa=isa,
        device=cpu,
        sparse_encoded=sparse_encoded,
    )


# ---------------------------------------------------------------------------------------------- LiteRT


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cpu", list(CPUS))
def test_litert_int8_is_size_only_everywhere(kind, cpu):
    v = verdict(kind, cpu=cpu, precision="int8", sparse_encoded=True)
    assert not v.speed and v.where == "none"
    assert "int8" in v.why or "3x3" in v.why


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("cpu", ["avx2", "vnni", "amx"])
def test_litert_sparse_path_is_off_on_x86_with_avx(cpu, precision):
    v = verdict(cpu=cpu, precision=precision, sparse_encoded=True)
    assert not v.speed
    assert "off on x86 with AVX" in v.why


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("cpu", ["arm64", "arm32", "sse"])
def test_litert_float_above_two_thirds_has_a_kernel_for_sparse_encoded_weights(cpu, precision):
    v = verdict("unstructured", cpu=cpu, precision=precision, sparsity=0.8, sparse_encoded=True)
    assert v.speed and "1x1 convs" in v.where and "NCHW cluster" in v.where and "3 input channels" in v.where


@pytest.mark.parametrize("cpu", ["arm64", "sse"])
def test_litert_dense_zeros_never_ask_for_the_sparse_path(cpu):
    """The exports store dense zeros: the delegate hints sparse inference only for DENSIFY inputs."""
    v = verdict("unstructured", cpu=cpu, sparsity=0.9)
    assert not v.speed and "DENSIFY" in v.why and "dense zeros" in v.why


@pytest.mark.parametrize(
    ("kind", "sparsity", "speed"),
    [
        ("nm", 0.5, False),  # 2:4 zeroes exactly half: not above 2/3
        ("nm", 0.75, True),  # 1:4
        ("unstructured", 2 / 3, False),  # XNNPACK needs strictly more than 2/3
        ("unstructured", 0.67, True),
        ("block", 0.6, False),
        ("block", 0.9, True),
        ("unstructured", None, True),  # unknown (layer_sparsity): the condition stays in `where`
    ],
)
def test_litert_two_thirds_threshold(kind, sparsity, speed):
    v = verdict(
        kind, cpu="arm64", sparsity=sparsity, block=(4, 1) if kind == "block" else None, sparse_encoded=True
    )
    assert v.speed is speed
    if not speed:
        assert "2/3" in v.why


@pytest.mark.parametrize(("block", "rows"), [((4, 1), 4), ((8, 2), 4), ((2, 2), 2), ((1, 4), None)])
def test_litert_output_channel_blocks_take_the_wide_spmm_on_arm64(block, rows):
    v = verdict("block", cpu="arm64", sparsity=0.9, block=block, sparse_encoded=True)
    assert v.speed
    assert (f"32x{rows} SpMM" in v.where) if rows else ("SpMM" not in v.where)


@pytest.mark.parametrize("cpu", list(CPUS))
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_kernel_patterns_buy_no_speed_anywhere(cpu, precision):
    for runtime in ("litert", "openvino"):
        v = verdict("kernel_pattern", cpu=cpu, runtime=runtime, precision=precision, sparse_encoded=True)
        assert not v.speed and "3x3" in v.why


# ---------------------------------------------------------------------------------------------- OpenVINO


@pytest.mark.parametrize("kind", ["unstructured", "block", "nm"])
def test_openvino_int8_on_amx_can_decompress_fc_weights(kind):
    v = verdict(kind, cpu="amx", runtime="openvino", precision="int8", sparsity=0.8, block=(1, 4))
    assert v.speed
    assert "FullyConnected" in v.where and "multiples of 64" in v.where and "at most 0.80" in v.where


@pytest.mark.parametrize("cpu", ["avx2", "vnni", "sse"])
def test_openvino_int8_without_amx_is_size_only(cpu):
    v = verdict("unstructured", cpu=cpu, runtime="openvino", precision="int8")
    assert not v.speed and "AMX" in v.why and "amx_int8" in v.why


def test_openvino_needs_every_amx_flag_onednn_asks():
    arch, isa = X86_AMX
    partial = sparsity_verdict(
        "unstructured", block=None, sparsity=0.8, runtime="openvino", precision="int8", arch=arch,
        isa=[f for f in isa if f != "amx_bf16"], device="d",
    )  # fmt: skip
    assert not partial.speed and partial.why.endswith("lacks amx_bf16")


@pytest.mark.parametrize("cpu", ["arm64", "arm32"])
def test_openvino_on_arm_is_size_only(cpu):
    v = verdict("unstructured", cpu=cpu, runtime="openvino", precision="int8")
    assert not v.speed and "Intel AMX" in v.why


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("cpu", ["amx", "avx2"])
def test_openvino_float_is_size_only(cpu, precision):
    v = verdict("unstructured", cpu=cpu, runtime="openvino", precision=precision)
    assert not v.speed and "int8 weights only" in v.why


# ---------------------------------------------------------------------------------------------- contract


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cpu", list(CPUS))
@pytest.mark.parametrize("runtime", ["litert", "openvino"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_every_verdict_is_one_sentence(kind, cpu, runtime, precision):
    v = verdict(
        kind, cpu=cpu, runtime=runtime, precision=precision, block=(2, 2) if kind == "block" else None
    )
    assert (v.kind, v.runtime, v.precision, v.device) == (kind, runtime, precision, cpu)
    assert v.why and "\n" not in v.why and "\n" not in v.where
    assert (v.where != "none") is v.speed


@pytest.mark.parametrize(
    ("field", "value"), [("kind", "2:4"), ("runtime", "onnxruntime"), ("precision", "auto")]
)
def test_unknown_names_are_refused(field, value):
    args = {"kind": "nm", "runtime": "litert", "precision": "fp32"} | {field: value}
    with pytest.raises(ValueError, match=f"unknown {field}"):
        sparsity_verdict(
            args["kind"], block=None, sparsity=0.5, runtime=args["runtime"], precision=args["precision"],
            arch="aarch64", isa=[], device="d",
        )  # fmt: skip


def test_unknown_architecture_is_no_speed():
    v = sparsity_verdict(
        "unstructured", block=None, sparsity=0.9, runtime="litert", precision="fp32", arch="detect", isa=[],
        device="remote", sparse_encoded=True,
    )  # fmt: skip
    assert not v.speed and "unknown" in v.why


# ---------------------------------------------------------------------------------------------- lint_lines


def _device(name: str, cpu: str, *, runtimes=("litert", "openvino"), remote: bool = False) -> DeviceProfile:
    arch, isa = CPUS[cpu]
    connection = {"runner": "ssh", "host": "board"} if remote else {}
    return DeviceProfile.model_validate(
        {
            "name": name,
            "description": name,
            "cpu": {"model": name, "arch": arch, "cores": 2, "isa": isa},
            "memory_mb": 1024,
            "runtimes": list(runtimes),
            "connection": connection,
        }
    )


def _recipe(stages: str, export: str):
    return parse_recipe(
        f"name: t\nmodel: {{source: '{EXAMPLES}:tiny_cnn', input_shape: [1, 1, 16, 16]}}\n"
        f"stages: {stages}\nexport: {export}\n"
    )


def test_lint_lines_one_per_stage_export_device():
    recipe = _recipe(
        "[{type: prune, method: nm, n: 2, m: 4}, {type: prune, method: channel, ratio: 0.5}, "
        "{type: quantize, mode: ptq}]",
        "[{format: tflite, precision: int8}, {format: openvino, precision: auto}]",
    )
    devices = [
        _device("desktop", "avx2"),
        _device("xeon", "amx"),
        _device("pi", "arm64", runtimes=("litert",)),
    ]
    lines = lint_lines(recipe, devices)
    # one pattern stage (channel pruning is not sparsity); the pi has no OpenVINO
    assert len(lines) == 5
    assert lines[0] == (
        "sparsity (nm 2:4) on tflite-int8 @ desktop: size only — XNNPACK has no sparse int8 kernels (its sparse "
        "NCHW path takes fp32/fp16 graphs only); the report measures it"
    )
    assert all(line.endswith("; the report measures it") for line in lines)
    auto_xeon = next(line for line in lines if "openvino-auto @ xeon" in line)
    # auto: both the int8 and the float layers are judged; the rate is not set, so it is off as configured
    assert "int8 layers:" in auto_xeon and "float layers:" in auto_xeon
    assert (
        "size only — off as configured: set runtime_options: {sparse_weights_decompression_rate: 0.50}"
        in auto_xeon
    )


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        (None, "size only — off as configured"),
        (1.0, "size only — off as configured"),
        (0.9, "is above the 80% zeros"),
        (0.8, "speed possible on int8 FullyConnected"),
        (0.5, "speed possible on int8 FullyConnected"),
    ],
)
def test_lint_openvino_rate_as_configured(rate, expected):
    options = f", runtime_options: {{sparse_weights_decompression_rate: {rate}}}" if rate is not None else ""
    recipe = _recipe(
        "[{type: prune, method: magnitude, sparsity: 0.8}, {type: quantize, mode: ptq}]",
        f"[{{format: openvino, precision: int8{options}}}]",
    )
    (line,) = lint_lines(recipe, [_device("xeon", "amx")])
    assert line.startswith("sparsity (magnitude 80%) on openvino-int8 @ xeon: ")
    assert expected in line


def test_lint_labels_and_derived_sparsity():
    recipe = _recipe(
        "[{type: prune, method: block, block: [4, 1], sparsity: 0.75}, "
        "{type: prune, method: kernel_pattern, kernel_positions: 4}]",
        "[{format: tflite, precision: fp32}]",
    )
    lines = lint_lines(recipe, [_device("pi", "arm64", runtimes=("litert",))])
    # the TFLite exporter stores the zeros sparse (DENSIFY), which is what asks XNNPACK for its SpMM
    assert lines[0].startswith("sparsity (block 4x1 75%) on tflite-fp32 @ pi: speed possible on 1x1 convs")
    assert "32x4 SpMM" in lines[0]
    assert lines[1].startswith("sparsity (kernel_pattern 4/9) on tflite-fp32 @ pi: size only — ")
    dense = _recipe(
        "[{type: prune, method: block, block: [4, 1], sparsity: 0.75}]",
        "[{format: tflite, precision: fp32, options: {sparse_weights: 'off'}}]",
    )
    (line,) = lint_lines(dense, [_device("pi", "arm64", runtimes=("litert",))])
    assert line.startswith("sparsity (block 4x1 75%) on tflite-fp32 @ pi: size only — ")
    assert "DENSIFY" in line  # ARM64 has the kernel; a dense-stored export never asks for it


def test_no_pattern_stage_no_lines():
    recipe = _recipe("[{type: prune, method: channel, ratio: 0.5}]", "[{format: tflite, precision: fp32}]")
    assert lint_lines(recipe, [_device("desktop", "avx2")]) == []


def test_remote_detect_stays_unresolved():
    remote = DeviceProfile.model_validate(
        {
            "name": "board",
            "description": "b",
            "cpu": {"model": "detect", "arch": "detect", "cores": "detect", "isa": []},
            "memory_mb": "detect",
            "runtimes": ["litert"],
            "connection": {"runner": "ssh", "host": "board"},
        }
    )
    assert device_cpu(remote) == ("detect", [])
    assert device_cpu(_device("pi", "arm64", remote=True)) == ARM64


def test_lint_imports_no_framework():
    code = (
        "import sys\nimport edgecompress.sparsity_lint\n"
        "print(*[m for m in ('torch', 'openvino', 'tensorflow', 'ai_edge_litert') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
