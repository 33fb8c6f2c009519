"""Profile one artifact on this machine and print one JSON object on stdout.

Standalone: needs only numpy and the runtime (LiteRT or OpenVINO); it loads sessions.py from its own
directory, so the pair can be copied to a board and run there:

    python measure.py --runtime litert --model m.tflite --threads 2 --runs 200 --warmup-seconds 1.0

Order of work: resident memory before loading (after importing the runtime), load time (create +
allocate / compile), first inference, at least --warmup-seconds of untimed inference, then --runs timed
inferences (time.perf_counter around each call, inputs drawn beforehand) on random inputs of the model's
shape. Peak memory is the process's high-water resident set (VmHWM on Linux, else ru_maxrss), so run
it in a fresh process. Errors go to stderr with exit code 1.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

#: ISA features that decide which kernels a runtime can use (x86 then ARM spellings in /proc/cpuinfo).
ISA_FLAGS = (
    "sse4_1",
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "amx_fp16",
    "neon",
    "asimd",
    "asimdhp",
    "asimddp",
    "asimdfhm",
    "i8mm",
    "bf16",
    "sve",
    "sve2",
    "sme",
)


def _load_sessions():
    path = Path(__file__).resolve().parent / "sessions.py"
    spec = importlib.util.spec_from_file_location("edgecompress_measure_sessions", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cpu_info() -> tuple[str, list[str]]:
    """CPU model name and the ISA_FLAGS this CPU has, from /proc/cpuinfo (platform fallbacks elsewhere)."""
    fields: dict[str, str] = {}
    flags: set[str] = set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features"):
            flags.update(value.split())
        else:
            fields.setdefault(key, value.strip())
    # x86 names the CPU in "model name" ("model" is a number there); ARM boards say "Hardware" or "Model".
    model = next((fields[k] for k in ("model name", "hardware", "cpu model") if fields.get(k)), "")
    if not model and not fields.get("model", "").isdigit():
        model = fields.get("model", "")
    if not model:
        try:
            model = Path("/sys/firmware/devicetree/base/model").read_text().strip("\x00\n ")
        except OSError:
            model = platform.processor() or platform.machine()
    return model, [f for f in ISA_FLAGS if f in flags]


def _proc_status_mb(field: str) -> float | None:
    """A kB field of /proc/self/status (Linux) in MiB, or None where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def current_rss_mb() -> float:
    """Resident memory of this process now (elsewhere than Linux: the peak so far)."""
    rss = _proc_status_mb("VmRSS")
    return rss if rss is not None else peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident memory of this process.

    Linux: VmHWM. Not ru_maxrss: that survives execve, so a child spawned (vfork + exec, as Python's
    subprocess does) by a large process reports the parent's size. Elsewhere: ru_maxrss.
    """
    hwm = _proc_status_mb("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def artifact_size(path: Path) -> int:
    """Bytes of the model file plus, for an OpenVINO .xml, its .bin."""
    files = [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]
    return sum(f.stat().st_size for f in files if f.is_file())


def random_inputs(shape: list[int], dtype: str, *, count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    kind = np.dtype(dtype)
    if np.issubdtype(kind, np.integer):
        info = np.iinfo(kind)
        return [
            rng.integers(max(info.min, -128), min(info.max, 127) + 1, size=shape).astype(kind)
            for _ in range(count)
        ]
    return [rng.standard_normal(shape).astype(kind) for _ in range(count)]


def latency_stats(times_ms: list[float]) -> dict[str, float | int]:
    t = np.asarray(times_ms, dtype=np.float64)
    return {
        "runs": len(t),
        "p50_ms": float(np.percentile(t, 50)),
        "p90_ms": float(np.percentile(t, 90)),
        "p99_ms": float(np.percentile(t, 99)),
        "mean_ms": float(t.mean()),
        "std_ms": float(t.std()),
        "min_ms": float(t.min()),
        "max_ms": float(t.max()),
    }


def measure(
    runtime: str,
    model: Path,
    *,
    threads: int,
    runs: int,
    warmup_seconds: float,
    inference_precision: str | None = None,
    seed: int = 0,
) -> dict[str, object]:
    sessions = _load_sessions()
    # Import the runtime before the baseline, so the baseline is "runtime loaded, model not yet".
    if runtime == "openvino":
        import openvino  # noqa: F401
    elif runtime == "litert":
        try:
            import ai_edge_litert.interpreter  # noqa: F401
        except ImportError:
            import tflite_runtime.interpreter  # noqa: F401
    baseline = current_rss_mb()

    start = time.perf_counter()
    session = sessions.open_session(runtime, model, threads=threads, inference_precision=inference_precision)
    load_ms = (time.perf_counter() - start) * 1000

    inputs = random_inputs(session.input_shape, session.input_dtype, count=8, seed=seed)
    start = time.perf_counter()
    session.run(inputs[0])
    first_ms = (time.perf_counter() - start) * 1000

    warmup_runs = 0
    start = time.perf_counter()
    while time.perf_counter() - start < warmup_seconds:
        session.run(inputs[warmup_runs % len(inputs)])
        warmup_runs += 1
    warmed = time.perf_counter() - start

    times: list[float] = []
    gc.collect()
    gc.disable()
    try:
        for i in range(runs):
            x = inputs[i % len(inputs)]
            t0 = time.perf_counter()
            session.run(x)
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        gc.enable()

    cpu_model, isa = cpu_info()
    return {
        "runtime": runtime,
        "runtime_version": session.runtime_version,
        "execution_precision": session.execution_precision,
        "threads": threads,
        "model": str(model),
        "input_shape": session.input_shape,
        "input_dtype": session.input_dtype,
        "load_ms": load_ms,
        "first_inference_ms": first_ms,
        "warmup_seconds": warmed,
        "warmup_runs": warmup_runs,
        "latency": latency_stats(times),
        "peak_rss_mb": peak_rss_mb(),
        "baseline_rss_mb": baseline,
        "file_size_bytes": artifact_size(model),
        "cpu_model": cpu_model,
        "isa_flags": isa,
        "machine": platform.machine(),
        "python_version": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime", required=True, choices=("litert", "openvino"))
    parser.add_argument(
        "--model", required=True, type=Path, help=".tflite, or OpenVINO .xml (its .bin beside it)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=200, help="timed inferences")
    parser.add_argument("--warmup-seconds", type=float, default=1.0, help="untimed inference before timing")
    parser.add_argument(
        "--inference-precision", default=None, help="OpenVINO only: f32, bf16 or f16 (default: plugin's)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.threads < 1 or args.warmup_seconds < 0:
        parser.error("--runs and --threads must be >= 1 and --warmup-seconds >= 0")
    result = measure(
        args.runtime,
        args.model,
        threads=args.threads,
        runs=args.runs,
        warmup_seconds=args.warmup_seconds,
        inference_precision=args.inference_precision,
        seed=args.seed,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
