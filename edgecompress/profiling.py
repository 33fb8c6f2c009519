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
