"""Measurements of one artifact on one device, as the report stores them."""

from __future__ import annotations

from typing import Any, Literal

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


class Energy(BaseModel):
    """Energy per inference, always labelled: `measured (<source>)` from a power or energy reading taken
    over timed windows, or `estimated (<model>)` from the device's power model and the CPU time."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["measured", "estimated"]
    source: str = Field(
        description="rapl, perf, rpi5-pmic, ina3221, android-battery, meter, or 'power model'."
    )
    mj_per_inference: float = Field(description="Net of idle power when measured (the figure gates use).")
    gross_mj_per_inference: float | None = Field(
        default=None, description="Measured: all energy over the timed windows / inferences, idle included."
    )
    idle_watts: float | None = Field(default=None, description="Measured: mean of the idle before and after.")
    windows: int = Field(default=0, description="Measured: timed windows (each at least 10 s).")
    spread_mj: tuple[float, float] | None = Field(
        default=None, description="Measured: lowest and highest net mJ per inference of the windows."
    )

    @property
    def label(self) -> str:
        return f"{self.kind} ({self.source})"


class Thermal(BaseModel):
    """Temperature and CPU frequency before and after a measurement, and whether it throttled."""

    model_config = ConfigDict(frozen=True)
    before_c: float | None = None
    after_c: float | None = None
    before_mhz: float | None = None
    after_mhz: float | None = None
    throttled: bool = Field(
        default=False, description="The frequency fell, or the kernel's throttle flag rose."
    )
    note: str = ""


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
    peak_rss_mb: float | None = Field(
        description="Peak resident memory of the fresh process that loaded and ran it (None: a native tool "
        "that does not report it)."
    )
    baseline_rss_mb: float | None = Field(
        description="Resident memory of that process before loading the model (None: a native tool)."
    )
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
    energy: Energy | None = Field(
        default=None, description="Energy per inference, labelled measured or estimated (see Energy)."
    )
    thermal: Thermal | None = Field(default=None, description="Temperature and frequency around the timing.")
    tool: str | None = Field(
        default=None,
        description="The runtime's own benchmark tool that measured it (connection.mode: native), else None "
        "(measure.py). A tool reports no p90/p99: they hold its p95 (or max) and max, upper bounds.",
    )
    runtime_options: dict[str, Any] = Field(
        default_factory=dict,
        description="The artifact's runtime options (export[].runtime_options) it was compiled with for these "
        "runs, e.g. {sparse_weights_decompression_rate: 0.5}; empty: the runtime's defaults.",
    )
    runtime_warnings: list[str] = Field(
        default_factory=list,
        description="One line per runtime option that took no effect on the device, and why (e.g. the CPU "
        "lacks AMX for OpenVINO's sparse weight decompression).",
    )
    sparse_layers: list[str] | None = Field(
        default=None,
        description="OpenVINO with sparse_weights_decompression_rate: the layers whose weights the plugin kept "
        "packed (their kernel says 'sparse'); empty: none. None: not asked for, or not reported (a native tool).",
    )

    @property
    def rss_text(self) -> str:
        """Peak RSS in MiB as the report prints it, or who did not report it."""
        if self.peak_rss_mb is None:
            return f"not reported by {self.tool or 'the runtime'}"
        return f"{self.peak_rss_mb:.1f}"


def combine_rounds(rounds: list[Measurements]) -> Measurements:
    """One artifact measured in several fresh processes -> one Measurements: the round with the lowest p50
        (its p90, p99, load time, ... come with it) with every round's p50 in `latency.rounds_p50_ms`, the op
        profile of whichever round took one, the highest peak RSS, the measured energy of the round that measured
    it, and the thermal record of a round that throttled (if any).

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
    measured = [m.energy for m in rounds if m.energy is not None and m.energy.kind == "measured"]
    throttled = [m.thermal for m in rounds if m.thermal is not None and m.thermal.throttled]
    return fastest.model_copy(
        update={
            "latency": latency,
            "op_profile": profile,
            "peak_rss_mb": max((m.peak_rss_mb for m in rounds if m.peak_rss_mb is not None), default=None),
            # energy is measured in one round; a round that throttled marks the artifact
            "energy": measured[0] if measured else fastest.energy,
            "thermal": throttled[0] if throttled else fastest.thermal,
        }
    )


class BatchTiming(BaseModel):
    """One artifact of a batch measurement (`Runner.run_batch`): many small artifacts timed in one process
    on the device, for the latency model. No memory or op profile: only the p50 of each round."""

    model_config = ConfigDict(frozen=True)
    path: str = Field(description="The artifact's path on this machine.")
    rounds_p50_ms: list[float] = Field(
        default_factory=list, description="p50 of the timed runs of each interleaved round."
    )
    runs: int = Field(description="Timed inferences per round.")
    load_ms: float | None = Field(default=None, description="Load (and compile) time.")
    error: str | None = Field(default=None, description="Why it could not be timed, when it could not.")
    edge_reorder_ms: float = Field(
        default=0.0,
        description="OpenVINO: time per inference of the layout Reorders at the artifact's input/output "
        "(a one-layer artifact has them where a layer inside a model has none).",
    )
    node_ms: float | None = Field(
        default=None,
        description="OpenVINO: the plugin's own time per inference of the artifact's nodes but those Reorders "
        "(median over profiled inferences).",
    )

    @property
    def p50_ms(self) -> float:
        """The fastest round's p50 (interference only slows a round; see `combine_rounds`)."""
        if not self.rounds_p50_ms:
            raise ValueError(f"{self.path} was not timed: {self.error}")
        return min(self.rounds_p50_ms)


class BatchResult(BaseModel):
    """What a batch measurement reports: the timings and the facts of the device they were taken on."""

    model_config = ConfigDict(frozen=True)
    timings: list[BatchTiming]
    runtime_versions: dict[str, str] = Field(description="runtime -> version string, as measure.py read it.")
    cpu_model: str
    isa_flags: list[str]
    threads: int


class RuntimeFacts(BaseModel):
    """What a device says about itself and one of its runtimes, without measuring anything."""

    model_config = ConfigDict(frozen=True)
    runtime: str
    runtime_version: str = Field(description="As the profiling script reports it, e.g. 'openvino 2026.4.1'.")
    cpu_model: str
    isa_flags: list[str]
    arch: str
