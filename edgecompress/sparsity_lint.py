"""Does a sparsity pattern buy speed on a runtime and CPU, or only size? Decided from the published kernels'
rules, before anything is built; the report then measures it.

The exports store sparse weights densely (zeros in dense tensors), so the zeros always shrink a compressed
download; they buy speed only where the runtime has a kernel that skips them and takes it for that layer:

LiteRT (XNNPACK), from google/XNNPACK 75db3c0 (2026-08-21) and TensorFlow Lite's XNNPACK delegate:
- src/subgraph.c `xnn_subgraph_optimize`: `xnn_subgraph_rewrite_for_nchw` runs only with
  XNN_FLAG_HINT_SPARSE_INFERENCE and `xnn_is_chw_compatible_config` (src/xnnpack/hardware-config.h: on x86 it
  is false when the CPU has AVX — "dense inference is expected to be faster" — and true on ARM).
- tensorflow/lite/delegates/xnnpack/xnnpack_delegate.cc sets that flag only when a delegated node reads
  sparse-encoded weights: a DENSIFY op of a float32/float16 tensor with a sparsity descriptor
  (`static_sparse_weights_`). Dense zeros, as the exports here store them, never ask for the sparse path.
- `xnn_check_nchw_compatibility` / `xnn_subgraph_rewrite_for_nchw`: only fp32/fp16 values; an NCHW cluster
  starts at a 3x3 stride-2 convolution on 3 input channels (the RGB stem, NHWC -> NCHW) and ends at a global
  average pool (or mean/sum, depth-to-space); inside it 1x1 convolutions (stride 1, no padding, groups 1),
  fully connected layers, 3x3/5x5 depthwise convolutions and elementwise ops. A cluster turns sparse only
  when more than 2/3 of its 1x1-convolution (and fully connected) weights are zeros (`num_zeroes * 3 <=
  num_params * 2` disables it). No quantized node joins a cluster: there is no sparse int8 kernel.
- src/configs/spmm-config.c: f32 SpMM 32x1 on ARM64 (NEON FMA), ARM32 (NEON) and x86 (SSE); 32x2 and 32x4
  (ARM64) for blocks of 2 or 4 output channels, chosen in src/operators/convolution-nchw.c
  `create_spmm_path` when such blocks hold 90%+ of the non-zeros; f16 SpMM with ARM fp16 arithmetic only.
  No kernel for 3x3 convolutions, hence none for kernel patterns.

OpenVINO CPU plugin, from openvinotoolkit/openvino (src/plugins/intel_cpu/src/nodes/fullyconnected.cpp at
00103d8, `useSparseWeightsDecompression`; docs .../inference-devices-and-modes/cpu-device.rst, "Sparse weights
decompression (Intel x86-64)"; src/plugins/intel_cpu/src/config.cpp):
- property CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE (`ov::intel_cpu::sparse_weights_decompression_rate`), a
  float in [0, 1], default 1 = off; a FullyConnected layer is packed when its zero fraction >= the rate;
- only FullyConnected (MatMul with a constant weight), weights 2-D with both dimensions multiples of 64,
  input u8/i8 and weights i8 (an int8 model);
- only where oneDNN `mayiuse(avx512_core_amx)`: AMX tiles with int8 and bf16 (/proc/cpuinfo amx_tile,
  amx_int8, amx_bf16); the exec type then reads "..._sparse_...". OpenVINO 2026.4 accepts the property on a
  CPU without AMX and ignores it (measured on an AMD EPYC with AVX-512 VNNI: compiled, same kernels).
- No sparse kernel for float weights nor for convolutions, so none for kernel patterns.

    from edgecompress.sparsity_lint import lint_lines, sparsity_verdict
    verdict = sparsity_verdict("nm", block=None, sparsity=0.5, runtime="litert", precision="int8",
                               arch="x86_64", isa=["avx2"], device="desktop")
    lines = lint_lines(recipe, [load_device(d, base_dir=...) for d in recipe.devices])

Pure python: no framework or runtime is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgecompress.runtimes.sessions import AMX_FLAGS
from edgecompress.sparsity import KINDS, METHOD_KINDS

if TYPE_CHECKING:
    from edgecompress.recipe import Recipe
    from edgecompress.specs import DeviceProfile

RUNTIMES = ("litert", "openvino")
PRECISIONS = ("fp32", "fp16", "int8")
#: XNNPACK turns an NCHW cluster sparse only above this fraction of zero 1x1-convolution weights.
XNNPACK_MIN_ZEROS = 2 / 3
RATE_OPTION = "sparse_weights_decompression_rate"


@dataclass(frozen=True)
class SparsityVerdict:
    """Whether one runtime on one CPU has a kernel that can skip one pattern's zeros."""

    kind: str  # unstructured | block | nm | kernel_pattern
    runtime: str  # litert | openvino
    precision: str  # fp32 | fp16 | int8
    device: str  # device profile name
    speed: bool  # True: a kernel here can skip these zeros (still to be measured)
    where: str  # which layers it could apply to ("none" without speed)
    why: str  # one sentence: why speed, or why size only


def _arch_family(arch: str) -> str:
    """'arm64', 'arm32', 'x86' or 'unknown' for a machine name (uname -m spellings)."""
    arch = arch.lower()
    if arch in ("aarch64", "arm64", "armv8l"):
        return "arm64"
    if arch.startswith("arm"):
        return "arm32"
    if arch in ("x86_64", "amd64", "x86", "i386", "i686"):
        return "x86"
    return "unknown"


def _xnnpack(
    kind: str,
    block: tuple[int, int] | None,
    sparsity: float | None,
    precision: str,
    arch: str,
    isa: list[str],
    sparse_encoded: bool,
) -> tuple[str | None, str]:
    """(where, why) of XNNPACK; where is None without speed."""
    family = _arch_family(arch)
    if kind == "kernel_pattern":
        return (
            None,
            "XNNPACK's sparse kernels are 1x1-convolution SpMM; kernel patterns zero 3x3 kernels, which run dense",
        )
    if precision == "int8":
        return None, "XNNPACK has no sparse int8 kernels (its sparse NCHW path takes fp32/fp16 graphs only)"
    if family == "unknown":
        return (
            None,
            f"the CPU architecture is unknown ({arch}): probe the device (edgecompress devices probe)",
        )
    if family == "x86" and not isa:
        return (
            None,
            "the device profile lists no ISA flags, and XNNPACK sparse inference is off on x86 with AVX",
        )
    if family == "x86" and "avx" in isa:
        return None, "XNNPACK sparse inference is off on x86 with AVX (its dense kernels are faster there)"
    if sparsity is not None and sparsity <= XNNPACK_MIN_ZEROS:
        return None, (
            f"XNNPACK goes sparse only above 2/3 zeros in an NCHW cluster's 1x1-conv weights; this pattern "
            f"zeroes {sparsity:.0%}"
        )
    kernel = "SSE" if family == "x86" else "NEON"
    if not sparse_encoded:
        return None, (
            f"XNNPACK has {kernel} sparse fp32 kernels here but tries them only for sparse-encoded (DENSIFY) "
            "weights; the export stores dense zeros"
        )
    where = (
        "1x1 convs (stride 1, no padding, groups 1) and fully connected layers in an NCHW cluster (from a 3x3 "
        "stride-2 conv on 3 input channels to a global average pool) with > 2/3 zeros"
    )
    if kind == "block" and block is not None and family == "arm64" and block[0] % 2 == 0:
        rows = 4 if block[0] % 4 == 0 else 2
        where += f"; blocks of {rows} output channels take the 32x{rows} SpMM"
    return where, f"XNNPACK's {kernel} SpMM skips the zero weights of sparse-encoded 1x1 convolutions"


def _openvino(
    kind: str, sparsity: float | None, precision: str, arch: str, isa: list[str]
) -> tuple[str | None, str]:
    """(where, why) of OpenVINO's CPU plugin; where is None without speed."""
    family = _arch_family(arch)
    if kind == "kernel_pattern":
        return None, (
            "OpenVINO decompresses sparse weights of FullyConnected (MatMul) layers only; kernel patterns zero "
            "3x3 convolution kernels"
        )
    if precision != "int8":
        return (
            None,
            f"OpenVINO's sparse weight decompression is for int8 weights only; {precision} runs dense",
        )
    if family != "x86":
        return None, f"OpenVINO's sparse weight decompression needs Intel AMX; {arch} has none"
    missing = [flag for flag in AMX_FLAGS if flag not in isa]
    if missing:
        return None, f"OpenVINO's sparse weight decompression needs AMX; this CPU lacks {', '.join(missing)}"
    threshold = f"at most {sparsity:.2f}" if sparsity is not None else "at most the layers' zero fraction"
    where = (
        "int8 FullyConnected (Linear/MatMul) layers whose weights have both dimensions multiples of 64 and at "
        f"least the rate zeros (runtime_options.{RATE_OPTION}, {threshold}; default 1 = off)"
    )
    return (
        where,
        "OpenVINO's AMX kernel reads such weights packed (non-zeros only) and decompresses them in flight",
    )


def sparsity_verdict(
    kind: str,
    *,
    block: tuple[int, int] | None,
    sparsity: float | None,
    runtime: str,
    precision: str,
    arch: str,
    isa: list[str],
    device: str,
    sparse_encoded: bool = False,
) -> SparsityVerdict:
    """Whether `runtime` at `precision` on a CPU of `arch` with `isa` flags can skip the zeros of a `kind`
    pattern (`block` [r, c] over (output, input); `sparsity` the fraction zeroed, None when unknown).
    `sparse_encoded`: the weights are stored sparse (a TFLite DENSIFY input, what the TFLite exporter writes
    for a sparse model unless `options: {sparse_weights: off}`). ValueError for an unknown kind, runtime or precision."""
    for name, value, valid in (
        ("kind", kind, KINDS),
        ("runtime", runtime, RUNTIMES),
        ("precision", precision, PRECISIONS),
    ):
        if value not in valid:
            raise ValueError(f"unknown {name} '{value}'; valid: {', '.join(valid)}")
    if runtime == "litert":
        where, why = _xnnpack(kind, block, sparsity, precision, arch, list(isa), sparse_encoded)
    else:
        where, why = _openvino(kind, sparsity, precision, arch, list(isa))
    return SparsityVerdict(
        kind=kind,
        runtime=runtime,
        precision=precision,
        device=device,
        speed=where is not None,
        where=where or "none",
        why=why,
    )


def device_cpu(device: DeviceProfile) -> tuple[str, list[str]]:
    """(arch, ISA flags) of a device profile: `DeviceProfile.resolved_cpu` ('detect' and an empty ISA list read
    from this machine for a local device, kept unresolved for a remote one)."""
    return device.resolved_cpu()


def _pattern(stage: Any) -> tuple[str, str, float | None, tuple[int, int] | None]:
    """(kind, label, sparsity, block) of a pattern prune stage; sparsity from n/m or kernel_positions if not given."""
    method = stage.method
    kind = METHOD_KINDS[method]
    sparsity = getattr(stage, "sparsity", None)
    block = getattr(stage, "block", None)
    block = tuple(block) if block is not None else None
    detail = ""
    if kind == "nm":
        n, m = getattr(stage, "n", None), getattr(stage, "m", None)
        if n and m:
            detail = f" {n}:{m}"
            sparsity = sparsity if sparsity is not None else 1 - n / m
    elif kind == "kernel_pattern":
        k = getattr(stage, "kernel_positions", 4)
        detail = f" {k}/9"
        sparsity = sparsity if sparsity is not None else 1 - k / 9
    elif kind == "block" and block is not None:
        detail = f" {block[0]}x{block[1]}"
    if kind != "nm" and getattr(stage, "sparsity", None) is not None:
        detail += f" {sparsity:.0%}"
    return kind, f"{method}{detail}", sparsity, block  # type: ignore[return-value]


def _openvino_rate_note(spec: Any, sparsity: float | None) -> str | None:
    """Why an OpenVINO int8 export with an AMX kernel available still runs dense as configured, else None."""
    rate = (getattr(spec, "runtime_options", None) or {}).get(RATE_OPTION)
    suggest = f"{min(sparsity, 0.99):.2f}" if sparsity is not None else "0.5"
    if rate is None or float(rate) >= 1:
        return f"off as configured: set runtime_options: {{{RATE_OPTION}: {suggest}}} to try it"
    if sparsity is not None and float(rate) > sparsity + 1e-9:
        return f"off as configured: {RATE_OPTION} {float(rate):g} is above the {sparsity:.0%} zeros this stage leaves"
    return None


def lint_lines(recipe: Recipe, devices: list[DeviceProfile]) -> list[str]:
    """One line per (pattern prune stage x export x device whose runtimes include the export's): speed possible
    or size only, and why. int8 and auto exports are judged as int8; auto also for its float (fp32) layers."""
    from edgecompress.registry import EXPORTERS

    stages = [
        s for s in recipe.stages if s.type == "prune" and getattr(s, "method", "channel") in METHOD_KINDS
    ]
    lines: list[str] = []
    for stage in stages:
        kind, label, sparsity, block = _pattern(stage)
        for spec in recipe.export:
            runtime = EXPORTERS.get(spec.format).runtime
            if runtime not in RUNTIMES:
                continue
            precisions = {"auto": ("int8", "fp32"), "int8": ("int8",)}.get(spec.precision, (spec.precision,))
            for device in devices:
                if runtime not in device.runtimes:
                    continue
                arch, isa = device_cpu(device)
                verdicts = [
                    sparsity_verdict(
                        kind,
                        block=block,
                        sparsity=sparsity,
                        runtime=runtime,
                        precision=p,
                        arch=arch,
                        isa=isa,
                        device=device.name,
                        # the TFLite exporter stores sparse weights behind DENSIFY unless told not to
                        sparse_encoded=spec.format == "tflite"
                        and spec.options.get("sparse_weights", "auto") != "off",
                    )
                    for p in precisions
                ]
                head = f"sparsity ({label}) on {spec.artifact_name} @ {device.name}: "
                lines.append(head + _judgement(verdicts, spec, sparsity) + "; the report measures it")
    return lines


def _judgement(verdicts: list[SparsityVerdict], spec: Any, sparsity: float | None) -> str:
    """'speed possible on <where> — <why>' or 'size only — <why>' for one export's verdicts (two for auto)."""
    fast = [v for v in verdicts if v.speed]
    notes = []
    if fast and fast[0].runtime == "openvino":
        note = _openvino_rate_note(spec, sparsity)
        if note is not None:
            notes.append(note)
            fast = []
    if len({v.why for v in verdicts}) == 1:
        reason = verdicts[0].why
    else:
        reason = "; ".join(
            f"{'int8' if v.precision == 'int8' else 'float'} layers: {v.why}" for v in verdicts
        )
    if fast:
        return f"speed possible on {fast[0].where} — {reason}"
    return "size only — " + "; ".join([*notes, reason])
