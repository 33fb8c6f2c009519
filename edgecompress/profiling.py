"""Measurements of one artifact on one device, as the report stores them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LatencyStats(BaseModel):
    model_config = ConfigDict(frozen=True)
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    rounds_p50_ms: list[float] = Field(
        default_factory=list,
        description="p50 of each fresh-process round (profile.rounds); p50_ms is the lowest of them. Empty: one "
        "round.",
    )

    @property
    def spread_ms(self) -> tuple[float, float]:
        """Lowest and highest round p50 (both p50_ms for a single round)."""
        values = self.rounds_p50_ms or [self.p50_ms]
        return min(values), max(values)


class OpTiming(BaseModel):
    """One op (OpenVINO node, XNNPACK operator or LiteRT builtin-kernel node) of a per-op profile."""

    model_config = ConfigDict(frozen=True)
    name: str = Field(description="The runtime's name for it (OpenVINO node name; 'xnnpack#3 Convolution').")
    type: str = Field(description="Op type as the runtime names it (Convolution, Reorder, CONV_2D, ...).")
    exec_type: str = Field(
        description="Kernel that ran it: OpenVINO exec_type (brgconv_avx512_amx_i8, jit_avx2_FP32, ref), "
        "'XNNPACK (NHWC, QC8) IGEMM', or 'builtin kernels' for a LiteRT node outside the delegate."
    )
    precision: str | None = Field(
        default=None, description="Precision read from exec_type or the tensor dtypes (int8, f32, bf16, ...)."
    )
    time_ms: float | None = Field(
        default=None,
        description="Mean time per inference as the runtime's profiler measured it; None in an inventory.",
    )
    share: float | None = Field(default=None, description="time_ms / total_ms.")
    calls: float | None = Field(default=None, description="Executions per inference.")
    status: str = Field(
        default="EXECUTED", description="EXECUTED, NOT_RUN (fused away), INVENTORY (untimed)."
    )
    input_dtypes: list[str] = Field(default_factory=list)
    output_dtypes: list[str] = Field(default_factory=list)


class OpProfile(BaseModel):
    """The runtime's own per-op profile of an artifact, taken apart from the timed runs."""

    model_config = ConfigDict(frozen=True)
    source: str = Field(default="", description="Which profiler produced it.")
    timed: bool = Field(description="False: an op inventory with no times (no per-op timing was reachable).")
    runs: int = Field(default=0, description="Profiled inferences the times are averaged over.")
    threads: int | None = Field(
        default=None, description="Threads of the profiled run, None when the runtime default."
    )
    total_ms: float | None = Field(default=None, description="Sum of the ops' time_ms.")
    invoke_ms: float | None = Field(
        default=None, description="The profiler's whole-inference event (LiteRT)."
    )
    execution_precision: str | None = None
    ops: list[OpTiming] = Field(default_factory=list, description="Slowest first.")
    note: str = ""
    error: str | None = Field(default=None, description="Why profiling failed, when it did.")

    def top(self, n: int = 10) -> list[OpTiming]:
        """The n slowest executed ops (the first n ops of an inventory)."""
        if not self.timed:
            return self.ops[:n]
        return [op for op in self.ops if op.status == "EXECUTED"][:n]


class Measurements(BaseModel):
    """What the profiling script reports for one artifact on one device (all measured, none estimated
    unless the field name says so)."""

    model_config = ConfigDict(frozen=True)
    device: str
    runtime: str = Field(description="litert or openvino")
    runtime_version: str
    threads: int
    execution_precision: str | None = Field(
        default=None, description="Arithmetic precision the runtime computed in (f32, bf16, ...), as it says."
    )
    load_ms: float = Field(
        description="Reading the file and preparing it (interpreter + allocate / compile)."
    )
    first_inference_ms: float
    warmup_seconds: float
    latency: LatencyStats
    peak_rss_mb: float = Field(
        description="Peak resident memory of the fresh process that loaded and ran it."
    )
    baseline_rss_mb: float = Field(description="Resident memory of that process before loading the model.")
    file_size_bytes: int
    cpu_model: str
    isa_flags: list[str]
    python_version: str
    energy_mj_estimated: float | None = Field(
        default=None,
        description="Estimated energy per inference from the device's power model (not measured).",
    )
    op_profile: OpProfile | None = Field(
        default=None, description="The runtime's own per-op profile, when it was asked for."
    )


def combine_rounds(rounds: list[Measurements]) -> Measurements:
    """One artifact measured in several fresh processes -> one Measurements: the round with the lowest p50
    (its p90, p99, load time, ... come with it) with every round's p50 in `latency.rounds_p50_ms`, the op
    profile of whichever round took one, and the highest peak RSS.

    Why the fastest round and not the median: on a shared or virtualised machine the same artifact runs in
    a fast and a slow mode for seconds at a time, and interference only ever slows it (seen here: 12
    back-to-back fresh processes on one 0.085 ms LiteRT model read 0.19-0.20 ms in 4 of them with 2
    threads, and 0.105 ms in 11 of 12 with 1 thread). With a slow mode a third of the time, a median of
    three rounds lands in it 7 times in 27; the fastest round is the artifact's own speed, as `timeit` reports the
    minimum. The range of the rounds stays in the report, so the spread is never hidden.
    """
    if not rounds:
        raise ValueError("combine_rounds needs at least one measurement")
    fastest = min(rounds, key=lambda m: m.latency.p50_ms)
    profile = next((m.op_profile for m in rounds if m.op_profile is not None), None)
    latency = fastest.latency.model_copy(update={"rounds_p50_ms": [m.latency.p50_ms for m in rounds]})
    return fastest.model_copy(
        update={
            "latency": latency,
            "op_profile": profile,
            "peak_rss_mb": max(m.peak_rss_mb for m in rounds),
        }
    )
