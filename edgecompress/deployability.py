"""Is an int8 artifact worth deploying? Its measured speedup over its fp32 twin, and what in the int8
graph or on the CPU explains it, found by inspection, never assumed.

    from edgecompress.deployability import diagnose, render
    result = diagnose(int8=m_int8, fp32=m_fp32, int8_path=Path("runs/x/tflite-int8.tflite"))
    lines = render(result, title="desktop / tflite-int8")  # Markdown lines

`int8` and `fp32` are `Measurements` of the two artifacts on the same runtime and device (as
`LocalRunner.run` returns them; with `op_profile` for the OpenVINO exec-type findings). LiteRT findings
come from the .tflite itself, loaded on the LiteRT Interpreter here; OpenVINO findings from the int8
measurement's op profile (exec types as the plugin reported them on that device) and the IR's ops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from edgecompress.errors import EdgeCompressError
from edgecompress.profiling import Measurements, OpProfile

#: /proc/cpuinfo flags of int8 dot-product instructions (x86, then ARM).
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
INT8_DTYPES = ("int8", "uint8")


class Finding(BaseModel):
    """One thing inspection found in the int8 artifact (or on the CPU)."""

    model_config = ConfigDict(frozen=True)
    kind: str = Field(
        description="not_delegated | quantize_dequantize | transpose | float_ops (LiteRT); "
        "float_exec | reorder_convert | fakequantize_unfused (OpenVINO); cpu (both)."
    )
    count: int = Field(description="How many ops/nodes it concerns.")
    message: str
    ops: list[str] = Field(default_factory=list, description="The ops concerned, as the runtime names them.")
    time_ms: float | None = Field(
        default=None, description="Their measured time per inference, when an op profile timed them."
    )


class Deployability(BaseModel):
    """Measured int8-vs-fp32 speedup on one runtime and device, and its likely causes."""

    model_config = ConfigDict(frozen=True)
    runtime: str
    device: str
    fp32_p50_ms: float
    int8_p50_ms: float
    speedup: float = Field(description="fp32 p50 / int8 p50, both measured.")
    verdict: Literal["faster", "slower", "no measurable difference"] = Field(
        description="faster: speedup >= 1 + min_gain and every int8 round beat every fp32 round; slower: the "
        "mirror image; otherwise the difference is inside the rounds' spread or below min_gain."
    )
    min_gain: float = Field(description="Smallest relative gain counted as faster (or loss as slower).")
    fp32_p50_spread_ms: tuple[float, float] = Field(
        description="Lowest and highest round p50 of the fp32 twin."
    )
    int8_p50_spread_ms: tuple[float, float] = Field(
        description="Lowest and highest round p50 of the int8 artifact."
    )
    cpu_model: str
    int8_dot_product: list[str] = Field(
        description="INT8_DOT_FLAGS present in the device's /proc/cpuinfo flags (as measure.py read them)."
    )
    findings: list[Finding]
    explanation: str = Field(description="One line, from the measurement and the findings only.")

    @computed_field(description="verdict == 'faster' (kept in the JSON for readers of the report).")
    @property
    def faster(self) -> bool:
        return self.verdict == "faster"


def int8_dot_product(isa_flags: list[str]) -> list[str]:
    """The int8 dot-product instruction flags among a CPU's flags."""
    return [f for f in INT8_DOT_FLAGS if f in isa_flags]


def _names(ops: list[dict], limit: int = 8) -> list[str]:
    return [f"#{op['index']} {op['type']}" for op in ops][:limit]


def litert_findings(inventory: list[dict]) -> list[Finding]:
    """Findings in a LiteRT op inventory (`sessions.litert_op_inventory`): ops outside XNNPACK,
    QUANTIZE/DEQUANTIZE ops and where they sit, TRANSPOSE ops, float ops between int8 ops."""
    by_index = {op["index"]: op for op in inventory}
    findings: list[Finding] = []
    outside = [op for op in inventory if op["executed_by"] != "XNNPACK"]
    if outside:
        types = sorted({op["type"] for op in outside})
        findings.append(
            Finding(
                kind="not_delegated",
                count=len(outside),
                message=f"{len(outside)} of {len(inventory)} ops run on TFLite's builtin kernels, not in "
                f"XNNPACK ({', '.join(types)})",
                ops=_names(outside, 20),
            )
        )
    qdq = [op for op in inventory if op["type"] in ("QUANTIZE", "DEQUANTIZE")]
    if qdq:

        def where(op: dict) -> str:
            before = [by_index[i]["type"] for i in op["producers"] if i in by_index] or ["model input"]
            after = [by_index[i]["type"] for i in op["consumers"] if i in by_index] or ["model output"]
            return f"#{op['index']} {op['type']} ({'/'.join(before)} → {'/'.join(after)})"

        inside = [op for op in qdq if op["producers"] and op["consumers"]]
        findings.append(
            Finding(
                kind="quantize_dequantize",
                count=len(qdq),
                message=f"{len(qdq)} QUANTIZE/DEQUANTIZE ops, {len(inside)} inside the graph "
                f"(not at its input or output): " + "; ".join(where(op) for op in qdq[:8]),
                ops=_names(qdq, 20),
            )
        )
    transposes = [op for op in inventory if op["type"] == "TRANSPOSE"]
    if transposes:
        findings.append(
            Finding(
                kind="transpose",
                count=len(transposes),
                message=f"{len(transposes)} TRANSPOSE ops (layout changes, e.g. NCHW↔NHWC from the torch graph)",
                ops=_names(transposes, 20),
            )
        )
    int8_positions = [
        i
        for i, op in enumerate(inventory)
        if any(d in INT8_DTYPES for d in op["output_dtypes"]) and op["type"] not in ("QUANTIZE",)
    ]
    if int8_positions:
        first, last = int8_positions[0], int8_positions[-1]
        floats = [
            op
            for op in inventory[first + 1 : last]
            if op["type"] not in ("QUANTIZE", "DEQUANTIZE")
            and any(d in FLOAT_DTYPES for d in op["input_dtypes"] + op["output_dtypes"])
        ]
        if floats:
            findings.append(
                Finding(
                    kind="float_ops",
                    count=len(floats),
                    message=f"{len(floats)} float ops between int8 ops: "
                    + ", ".join(f"#{op['index']} {op['type']}" for op in floats[:8]),
                    ops=_names(floats, 20),
                )
            )
    return findings


def _with_litert_times(findings: list[Finding], profile: OpProfile | None) -> list[Finding]:
    """Attach measured times where the LiteRT op profile can name the ops: transposes (XNNPACK's
    Transpose operators) and ops outside XNNPACK (builtin-kernel events)."""
    if profile is None or not profile.timed:
        return findings
    times = {
        "transpose": sum(op.time_ms or 0 for op in profile.ops if op.type.upper() == "TRANSPOSE"),
        "not_delegated": sum(op.time_ms or 0 for op in profile.ops if op.exec_type == "builtin kernels"),
    }
    return [f.model_copy(update={"time_ms": times[f.kind]}) if f.kind in times else f for f in findings]


def openvino_findings(profile: OpProfile | None, ir_op_types: list[str] | None = None) -> list[Finding]:
    """Findings in an OpenVINO int8 model's perf counters (nodes executed in FP32/BF16 instead of I8,
    Reorder/Convert nodes, FakeQuantize nodes the plugin did not fuse) and, optionally, its IR op types."""
    findings: list[Finding] = []
    if profile is not None and profile.timed:
        executed = [op for op in profile.ops if op.status == "EXECUTED"]
        compute = [
            op
            for op in executed
            if op.precision in ("f32", "bf16", "f16") and op.type not in ("Reorder", "Convert", "Parameter")
        ]
        if compute:
            findings.append(
                Finding(
                    kind="float_exec",
                    count=len(compute),
                    message=f"{len(compute)} of {len(executed)} executed nodes ran in floating point: "
                    + ", ".join(f"{op.type} [{op.exec_type}]" for op in compute[:8]),
                    ops=[op.name for op in compute][:20],
                    time_ms=sum(op.time_ms or 0 for op in compute),
                )
            )
        moves = [op for op in executed if op.type in ("Reorder", "Convert")]
        if moves:
            findings.append(
                Finding(
                    kind="reorder_convert",
                    count=len(moves),
                    message=f"{len(moves)} Reorder/Convert nodes executed (layout or precision conversions)",
                    ops=[op.name for op in moves][:20],
                    time_ms=sum(op.time_ms or 0 for op in moves),
                )
            )
        unfused = [op for op in executed if op.type == "FakeQuantize"]
        if unfused:
            findings.append(
                Finding(
                    kind="fakequantize_unfused",
                    count=len(unfused),
                    message=f"{len(unfused)} FakeQuantize nodes executed on their own (not fused into a "
                    f"neighbouring int8 kernel)",
                    ops=[op.name for op in unfused][:20],
                    time_ms=sum(op.time_ms or 0 for op in unfused),
                )
            )
    elif ir_op_types is not None:
        count = ir_op_types.count("FakeQuantize")
        findings.append(
            Finding(
                kind="fakequantize_unfused",
                count=count,
                message=f"IR has {count} FakeQuantize ops; without a per-op profile it is unknown which "
                "the plugin fused",
            )
        )
    return findings


def verdict_of(
    speedup: float,
    int8_spread: tuple[float, float],
    fp32_spread: tuple[float, float],
    *,
    min_gain: float,
) -> Literal["faster", "slower", "no measurable difference"]:
    """'faster' when the speedup is at least 1 + min_gain and the int8 rounds' slowest p50 is below
    the fp32 rounds' fastest; 'slower' in the mirror case; else 'no measurable difference'."""
    if speedup >= 1 + min_gain and int8_spread[1] < fp32_spread[0]:
        return "faster"
    if speedup <= 1 / (1 + min_gain) and int8_spread[0] > fp32_spread[1]:
        return "slower"
    return "no measurable difference"


def _explain(
    runtime: str,
    speedup: float,
    verdict: str,
    dot: list[str],
    findings: list[Finding],
    isa: list[str],
    spreads: tuple[tuple[float, float], tuple[float, float]],
    min_gain: float,
) -> str:
    """One line from the measurement and the findings: speedup (with the rounds' spread), verdict, and
    for an int8 model that is not faster the likely causes found in the graph or on the CPU."""
    (i_lo, i_hi), (f_lo, f_hi) = spreads
    spread = (
        f"; round p50s int8 {i_lo:.3f}–{i_hi:.3f} ms, fp32 {f_lo:.3f}–{f_hi:.3f} ms"
        if (i_lo, f_lo) != (i_hi, f_hi)
        else ""
    )
    measured = f"int8 runs {speedup:.2f}x as fast as fp32 (best-round p50s{spread})"
    dot_text = (
        f"the CPU has int8 dot-product instructions ({', '.join(dot)})"
        if dot
        else "the CPU lists no int8 dot-product instructions (none of "
        + ", ".join(INT8_DOT_FLAGS)
        + " in its flags)"
    )
    if verdict == "faster":
        return f"{measured}: faster; {dot_text}."
    said = (
        f"not faster: no measurable difference (under the {min_gain:.0%} threshold or inside the rounds' spread)"
        if verdict == "no measurable difference"
        else "not faster: slower"
    )
    blockers = [
        f.message.split(":")[0]
        for f in findings
        if f.kind
        in ("not_delegated", "quantize_dequantize", "float_ops", "float_exec", "fakequantize_unfused")
    ]
    if blockers:
        return f"{measured}: {said}; likely causes found in the graph: {'; '.join(blockers)}; {dot_text}."
    if not dot and runtime == "litert" and "avx2" in isa:
        return (
            f"{measured}: {said}; every op runs in XNNPACK, and on AVX2 without VNNI XNNPACK's int8 "
            f"kernels have no int8 dot-product instruction to use ({dot_text})."
        )
    return f"{measured}: {said}; inspection found no graph cause; {dot_text}."


def diagnose(
    *,
    int8: Measurements,
    fp32: Measurements,
    int8_path: Path,
    min_gain: float = 0.05,
) -> Deployability:
    """Speedup and likely causes for an int8 artifact against its fp32 twin.

    Args (keyword-only):
        int8, fp32: measurements of the two artifacts, same runtime and same device (EdgeCompressError
            otherwise). OpenVINO exec-type findings need `int8.op_profile` (LocalRunner fills it).
        int8_path: the int8 artifact (.tflite, or OpenVINO .xml) for inspection on this machine.
        min_gain: relative gain below which int8 counts as "not faster" (default 5 %). With several
            rounds (`latency.rounds_p50_ms`) the verdict also needs the two sides' round p50s not to overlap.

    LiteRT inspection loads the .tflite on the LiteRT Interpreter here (the op inventory: who runs each op,
    dtypes); it needs ai-edge-litert (or tflite-runtime). OpenVINO reads the IR's op types with openvino.
    """
    if int8.runtime != fp32.runtime or int8.device != fp32.device:
        raise EdgeCompressError(
            f"deployability compares one runtime on one device; got int8 {int8.runtime}@{int8.device} "
            f"and fp32 {fp32.runtime}@{fp32.device}"
        )
    speedup = fp32.latency.p50_ms / int8.latency.p50_ms
    spreads = (int8.latency.spread_ms, fp32.latency.spread_ms)
    verdict = verdict_of(speedup, *spreads, min_gain=min_gain)
    dot = int8_dot_product(int8.isa_flags)
    path = Path(int8_path)
    if int8.runtime == "litert":
        from edgecompress.runtimes.sessions import LiteRTSession

        findings = _with_litert_times(
            litert_findings(LiteRTSession(path, threads=1).op_inventory()), int8.op_profile
        )
    elif int8.runtime == "openvino":
        import openvino as ov

        types = [op.get_type_name() for op in ov.Core().read_model(str(path)).get_ops()]
        findings = openvino_findings(int8.op_profile, types)
    else:
        raise EdgeCompressError(f"unknown runtime '{int8.runtime}'")
    findings.append(
        Finding(
            kind="cpu",
            count=len(dot),
            message=f"{int8.cpu_model}: int8 dot-product flags "
            + (", ".join(dot) if dot else "none")
            + f" (of {', '.join(INT8_DOT_FLAGS)})",
        )
    )
    return Deployability(
        runtime=int8.runtime,
        device=int8.device,
        fp32_p50_ms=fp32.latency.p50_ms,
        int8_p50_ms=int8.latency.p50_ms,
        speedup=speedup,
        verdict=verdict,
        min_gain=min_gain,
        fp32_p50_spread_ms=spreads[1],
        int8_p50_spread_ms=spreads[0],
        cpu_model=int8.cpu_model,
        int8_dot_product=dot,
        findings=findings,
        explanation=_explain(
            int8.runtime, speedup, verdict, dot, findings, int8.isa_flags, spreads, min_gain
        ),
    )


def render(result: Deployability, *, title: str = "") -> list[str]:
    """Markdown lines for the report: verdict, measured numbers, explanation, findings."""
    verdict = {"faster": "faster", "slower": "NOT faster (slower)"}.get(
        result.verdict, "NOT faster (no measurable difference)"
    )
    head = f"### int8 deployability{': ' + title if title else ''} ({result.runtime}, {result.device})"
    out = [
        head,
        "",
        f"- **{verdict}**: fp32 p50 {result.fp32_p50_ms:.3f} ms → int8 p50 {result.int8_p50_ms:.3f} ms "
        f"(speedup {result.speedup:.2f}x, measured)",
        f"- {result.explanation}",
    ]
    for f in result.findings:
        timed = f" — {f.time_ms:.3f} ms/inference" if f.time_ms is not None else ""
        out.append(f"- `{f.kind}` ({f.count}): {f.message}{timed}")
    return out
