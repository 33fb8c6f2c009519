"""Profile an artifact on this machine, in a fresh Python process running the standalone measure.py."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from edgecompress.errors import ArtifactError, DeviceError
from edgecompress.exporters.base import Artifact
from edgecompress.profiling import (
    BatchResult,
    BatchTiming,
    LatencyStats,
    Measurements,
    OpProfile,
    RuntimeFacts,
)
from edgecompress.runtimes import MEASURE_SCRIPT
from edgecompress.specs import DeviceProfile


def _tail(text: str, lines: int = 8) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:]) or "(no output)"


#: measure.py's exit code for a corrupt, truncated or unloadable artifact.
ARTIFACT_EXIT = 3


def _artifact_error(stdout: str) -> str | None:
    """The {"artifact_error": ...} line measure.py prints before exiting with ARTIFACT_EXIT."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            result = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(result, dict) and "artifact_error" in result:
            return str(result["artifact_error"])
    return None


def check_artifacts(artifacts: list[Artifact]) -> None:
    """measure.py's structural checks, here and before any process starts or any file is copied to a
    device: ArtifactError naming the file and what is wrong."""
    from edgecompress.runtimes.sessions import ArtifactUnreadable, check_artifact

    for artifact in artifacts:
        try:
            check_artifact(artifact.runtime, artifact.path)
        except ArtifactUnreadable as exc:
            raise ArtifactError(str(exc)) from None


def estimated_energy_mj(device: DeviceProfile, *, threads: int, p50_ms: float) -> float | None:
    """ESTIMATED (not measured) energy per inference in mJ from the device's power model, or None without one.

    (idle_watts + active_watts_per_core * threads) W  x  p50 latency s  =  J;  W x ms = mJ.
    It assumes `threads` cores fully busy for the median latency; it is only as good as the power model.
    """
    if device.power is None:
        return None
    watts = device.power.idle_watts + device.power.active_watts_per_core * threads
    return watts * p50_ms


class LocalRunner:
    """Runs `python measure.py ...` with this interpreter (sys.executable) in a new process per artifact,
    so the peak resident memory it reports is that artifact's own, not the build's."""

    def __init__(self, *, timeout_seconds: float = 3600.0, op_profile_runs: int = 50) -> None:
        self.timeout_seconds = timeout_seconds
        #: Inferences the per-op profile pass (when a run asks for one) averages over.
        self.op_profile_runs = op_profile_runs

    def command(
        self, artifact: Artifact, *, runs: int, warmup_seconds: float, threads: int, op_profile: bool
    ) -> list[str]:
        return [
            sys.executable,
            str(MEASURE_SCRIPT),
            "--runtime",
            artifact.runtime,
            "--model",
            str(artifact.path),
            "--threads",
            str(threads),
            "--runs",
            str(runs),
            "--warmup-seconds",
            str(warmup_seconds),
            *(
                ["--inference-precision", artifact.inference_precision]
                if artifact.inference_precision
                else []
            ),
            *(["--op-profile", "--op-profile-runs", str(self.op_profile_runs)] if op_profile else []),
        ]

    def facts(self, device: DeviceProfile, runtime: str) -> RuntimeFacts:
        """This machine's CPU, ISA flags and the installed `runtime`'s version, spelled as measure.py spells
        them (`sessions.py`), read without loading the runtime."""
        import platform

        from edgecompress.runtimes.measure import cpu_info
        from edgecompress.runtimes.sessions import runtime_version

        if runtime not in device.runtimes:
            raise DeviceError(f"{device.name}: has no {runtime} runtime ({', '.join(device.runtimes)})")
        version = runtime_version(runtime)
        if version is None:
            raise DeviceError(
                f"{device.name}: {runtime} is not installed here (pip install 'edgecompress[all]')"
            )
        cpu_model, isa = cpu_info()
        return RuntimeFacts(
            runtime=runtime,
            runtime_version=version,
            cpu_model=cpu_model,
            isa_flags=isa,
            arch=platform.machine(),
        )

    def _execute(self, cmd: list[str], device: DeviceProfile, what: str) -> dict:
        """Run the measuring script; its last JSON line, or DeviceError with the end of its output."""
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=self.timeout_seconds, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise DeviceError(
                f"{device.name}: profiling {what} took longer than {self.timeout_seconds:.0f} s"
            ) from exc
        except OSError as exc:
            raise DeviceError(f"{device.name}: cannot start the profiling process: {exc}") from exc
        if proc.returncode == ARTIFACT_EXIT:
            raise ArtifactError(_artifact_error(proc.stdout) or _tail(proc.stderr, 1).removeprefix("error: "))
        if proc.returncode != 0:
            raise DeviceError(
                f"{device.name}: profiling {what} failed (exit {proc.returncode}):\n{_tail(proc.stderr)}"
            )
        for line in reversed(proc.stdout.strip().splitlines()):
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(result, dict):
                return result
        raise DeviceError(
            f"{device.name}: profiling {what} printed no JSON result:\n{_tail(proc.stdout + proc.stderr)}"
        )

    def run_batch(
        self,
        artifacts: list[Artifact],
        device: DeviceProfile,
        *,
        runs: int,
        warmup_seconds: float,
        threads: int,
        rounds: int,
    ) -> BatchResult:
        """Many small artifacts timed in one fresh process (`measure.py --batch`), `rounds` interleaved
        rounds: the latency model's calibration. One artifact that fails is reported in its timing's
        `error`; the others are still timed. DeviceError when the process itself fails."""
        missing = sorted({a.runtime for a in artifacts} - set(device.runtimes))
        if missing:
            raise DeviceError(f"{device.name}: has no {', '.join(missing)} runtime to measure on")
        if not artifacts:
            return BatchResult(timings=[], runtime_versions={}, cpu_model="", isa_flags=[], threads=threads)
        entries = [
            {"runtime": a.runtime, "model": str(a.path), "inference_precision": a.inference_precision}
            for a in artifacts
        ]
        with tempfile.TemporaryDirectory(prefix="edgecompress-batch-") as tmp:
            listing = Path(tmp) / "batch.json"
            listing.write_text(json.dumps(entries))
            cmd = [
                sys.executable,
                str(MEASURE_SCRIPT),
                "--batch",
                str(listing),
                "--threads",
                str(threads),
                "--runs",
                str(runs),
                "--warmup-seconds",
                str(warmup_seconds),
                "--rounds",
                str(rounds),
            ]
            result = self._execute(cmd, device, f"a batch of {len(artifacts)} artifacts")
        try:
            return BatchResult(
                timings=[
                    BatchTiming(
                        path=str(a.path),
                        rounds_p50_ms=r.get("rounds_p50_ms", []),
                        runs=r.get("runs", runs),
                        load_ms=r.get("load_ms"),
                        error=r.get("error"),
                        edge_reorder_ms=r.get("edge_reorder_ms", 0.0),
                        node_ms=r.get("node_ms"),
                    )
                    for a, r in zip(artifacts, result["results"], strict=True)
                ],
                runtime_versions=result["runtime_versions"],
                cpu_model=result["cpu_model"],
                isa_flags=result["isa_flags"],
                threads=result["threads"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DeviceError(f"{device.name}: unexpected batch result: {exc}") from exc

    def run(
        self,
        artifact: Artifact,
        device: DeviceProfile,
        *,
        runs: int,
        warmup_seconds: float,
        threads: int,
        op_profile: bool = True,
    ) -> Measurements:
        """Measurements of `artifact` here; DeviceError with the end of the script's stderr if it fails.

        `op_profile`: add the runtime's per-op profile, a separate pass after the timed runs in the same child
        process (the pipeline asks for it in the first round only).

        `energy_mj_estimated` is set only when the device has a power model, and is an estimate (see
        `estimated_energy_mj`), never a measurement.
        """
        if artifact.runtime not in device.runtimes:
            raise DeviceError(
                f"{device.name}: cannot profile {artifact.name}: its runtime '{artifact.runtime}' is not among "
                f"the device's runtimes ({', '.join(device.runtimes)})"
            )
        check_artifacts([artifact])
        cmd = self.command(
            artifact,
            runs=runs,
            warmup_seconds=warmup_seconds,
            threads=threads,
            op_profile=op_profile,
        )
        result = self._execute(cmd, device, artifact.name)
        try:
            latency = LatencyStats.model_validate(result["latency"])
            return Measurements(
                device=device.name,
                runtime=result["runtime"],
                runtime_version=result["runtime_version"],
                threads=result["threads"],
                execution_precision=result.get("execution_precision"),
                load_ms=result["load_ms"],
                first_inference_ms=result["first_inference_ms"],
                warmup_seconds=result["warmup_seconds"],
                latency=latency,
                peak_rss_mb=result["peak_rss_mb"],
                baseline_rss_mb=result["baseline_rss_mb"],
                file_size_bytes=result["file_size_bytes"],
                cpu_model=result["cpu_model"],
                isa_flags=result["isa_flags"],
                python_version=result["python_version"],
                energy_mj_estimated=estimated_energy_mj(device, threads=threads, p50_ms=latency.p50_ms),
                op_profile=OpProfile.model_validate(result["op_profile"]) if "op_profile" in result else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DeviceError(
                f"{device.name}: unexpected profiling result for {artifact.name}: {exc}"
            ) from exc
