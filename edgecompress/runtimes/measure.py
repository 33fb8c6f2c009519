"""Profile one artifact on this machine and print one JSON object on stdout.

Standalone: needs only numpy and the runtime (LiteRT or OpenVINO); it loads sessions.py from its own
directory, so the pair can be copied to a board and run there:

    python measure.py --runtime litert --model m.tflite --threads 2 --runs 200 --warmup-seconds 1.0

Order of work: resident memory before loading (after importing the runtime), load time (create +
allocate / compile), first inference, at least --warmup-seconds of untimed inference, then --runs timed
inferences (time.perf_counter around each call, inputs drawn beforehand) on random inputs of the model's
shape. Peak memory is the process's high-water resident set (VmHWM on Linux, else ru_maxrss), so run
it in a fresh process. Errors go to stderr with exit code 1; a corrupt, truncated or unloadable artifact
with exit code 3 and {"artifact_error": "<file>: <what is wrong>"} on stdout; a runtime that is not installed
with exit code 4 and {"runtime_error": "..."}. `--facts` prints the CPU, ISA flags and runtime versions.

`--op-profile` adds "op_profile": the runtime's own per-op timing, taken after everything above in a
child process (this script with `--op-profile-only`), so it disturbs neither latency nor peak memory and
a crash of the profiler cannot lose the measurement. OpenVINO: a second compiled model with PERF_COUNT,
`request.profiling_info` read after every inference. LiteRT: the CompiledModel profiler of libLiteRt.so
(XNNPACK's per-operator events, whole microseconds); where that is unavailable, the op inventory with
"timed": false and no times at all.

`--runtime-option KEY=VALUE` (repeatable; sessions.RUNTIME_OPTIONS, e.g. sparse_weights_decompression_rate=0.5)
compiles the artifact with that runtime option for every run above; the result then carries "runtime_options",
"sparse_layers" (OpenVINO: the layers whose weights the plugin packed) and "runtime_warnings" (one line per
option that took no effect here, also printed on stderr as "warning: ...").
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

#: Exit codes besides 0 and 1 (any other error): the artifact is corrupt or unloadable ({"artifact_error"}
#: on stdout), the runtime is not installed ({"runtime_error"}).
ARTIFACT_EXIT = 3
RUNTIME_EXIT = 4


@functools.cache
def _load_sibling(name: str):
    """A module of this directory (sessions.py, op_profiles.py) loaded by path, so that this script runs
    from any directory it is copied to, with no package around it. Once: its classes are then one."""
    path = Path(__file__).resolve().parent / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"edgecompress_measure_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_probe = _load_sibling("probe")
ISA_FLAGS = _probe.ISA_FLAGS
cpu_info = _probe.cpu_info
_op_profiles = _load_sibling("op_profiles")
aggregate_litert = _op_profiles.aggregate_litert
aggregate_openvino = _op_profiles.aggregate_openvino
inventory_profile = _op_profiles.inventory_profile
precision_of = _op_profiles.precision_of


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


def _profiled_runs(run, take, inputs: list, *, warmup_runs: int, runs: int) -> list:
    """Warm up with `run`, drop what the profiler gathered so far, then `take()` its data after each timed run."""
    for i in range(warmup_runs):
        run(inputs[i % len(inputs)])
    take()
    collected = []
    for i in range(runs):
        run(inputs[i % len(inputs)])
        collected.append(take())
    return collected


def op_profile(
    runtime: str,
    model: Path,
    *,
    threads: int,
    runs: int,
    warmup_runs: int = 5,
    inference_precision: str | None = None,
    seed: int = 0,
    runtime_options: dict[str, object] | None = None,
) -> dict[str, object]:
    """The runtime's own per-op profile of `model` over `runs` inferences (after `warmup_runs`), in this
    process; see the module docstring. Never invents a time: LiteRT without its profiler gives the op
    inventory with "timed": false."""
    sessions = _load_sibling("sessions")
    if runtime == "openvino":
        session = sessions.open_session(
            runtime,
            model,
            threads=threads,
            inference_precision=inference_precision,
            perf_count=True,
            runtime_options=runtime_options,
        )
        inputs = random_inputs(session.input_shape, session.input_dtype, count=8, seed=seed)
        infos = _profiled_runs(
            session.run, session.profiling_info, inputs, warmup_runs=warmup_runs, runs=runs
        )
        return {
            "source": "OpenVINO performance counters (PERF_COUNT, request.profiling_info)",
            "timed": True,
            "threads": threads,
            "execution_precision": session.execution_precision,
            "note": "real_time per node, mean over the profiled inferences",
            **aggregate_openvino(infos),
        }
    if runtime != "litert":
        raise ValueError(f"unknown runtime '{runtime}'")
    session = sessions.open_session(runtime, model, threads=threads, runtime_options=runtime_options)
    try:
        inventory = session.op_inventory()
    except RuntimeError:
        inventory = None
    inputs = random_inputs(session.input_shape, session.input_dtype, count=8, seed=seed)
    try:
        profiler = sessions.LiteRTOpProfiler(model)
    except (RuntimeError, OSError, AttributeError) as exc:
        if inventory is None:
            raise RuntimeError(f"no per-op timing ({exc}) and no op inventory in this runtime") from exc
        return inventory_profile(inventory, str(exc))
    events = _profiled_runs(profiler.run, profiler.take_events, inputs, warmup_runs=warmup_runs, runs=runs)
    return {
        "source": "LiteRT CompiledModel profiler (libLiteRt.so C API, XNNPACK per-operator events)",
        "timed": True,
        "threads": None,
        "note": "CPU accelerator at its default thread count; event times are whole microseconds, "
        "so sub-microsecond ops read 0",
        **aggregate_litert(events, inventory),
    }


def isolated_op_profile(
    runtime: str,
    model: Path,
    *,
    threads: int,
    runs: int,
    inference_precision: str | None = None,
    seed: int = 0,
    runtime_options: dict[str, object] | None = None,
    timeout_seconds: float = 600.0,
) -> dict[str, object]:
    """`op_profile` in a child process (this script with --op-profile-only); a failure there becomes
    {"error": ..., "ops": []} instead of losing the caller's measurement."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--op-profile-only",
        "--runtime",
        runtime,
        "--model",
        str(model),
        "--threads",
        str(threads),
        "--op-profile-runs",
        str(runs),
        "--seed",
        str(seed),
        *(["--inference-precision", inference_precision] if inference_precision else []),
        *runtime_option_arguments(runtime_options),
    ]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_seconds, check=False, env=dict(os.environ)
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"timed": False, "ops": [], "error": f"op profiling did not finish: {exc}"}
    if proc.returncode == 0:
        for line in reversed(proc.stdout.strip().splitlines()):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    tail = [line for line in proc.stderr.strip().splitlines() if line.strip()][-3:]
    return {
        "timed": False,
        "ops": [],
        "error": f"op profiling failed (exit {proc.returncode}): " + " | ".join(tail),
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
    energy: dict | None = None,
    runtime_options: dict[str, object] | None = None,
) -> dict[str, object]:
    """`energy`: {source, command, window_seconds, windows, root} to measure energy per inference after the
    timing (energy.py), in this process on the device; its failure is reported in "energy_error".
    `runtime_options`: compiled in (see the module docstring)."""
    sessions = _load_sibling("sessions")
    thermal_before = _probe.thermal_state()
    # Import the runtime before the baseline, so the baseline is "runtime loaded, model not yet".
    sessions.import_runtime(runtime)
    baseline = current_rss_mb()

    start = time.perf_counter()
    session = sessions.open_session(
        runtime,
        model,
        threads=threads,
        inference_precision=inference_precision,
        runtime_options=runtime_options,
    )
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
    thermal_after = _probe.thermal_state()

    extra: dict[str, object] = {"thermal": {"before": thermal_before, "after": thermal_after}}
    extra |= _option_effects(session, runtime_options)
    if energy:
        module = _load_sibling("energy")
        try:
            reader = module.open_reader(
                energy["source"], command=energy.get("command"), root=Path(energy.get("root") or "/sys")
            )
            count = [0]

            def run() -> None:
                session.run(inputs[count[0] % len(inputs)])
                count[0] += 1

            extra["energy"] = module.measure_windows(
                run,
                reader,
                window_seconds=float(energy["window_seconds"]),
                windows=int(energy["windows"]),
                interval=getattr(reader, "interval", 0.05),
            )
            extra["energy"]["source"] = energy["source"]
        except (module.EnergyUnavailable, ValueError) as exc:  # e.g. a counter that went backwards
            extra["energy_error"] = f"{energy['source']}: {exc}"
        extra["thermal"]["after_energy"] = _probe.thermal_state()

    cpu_model, isa = cpu_info()
    return extra | {
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


def outputs(
    runtime: str,
    model: Path,
    inputs: Path,
    *,
    threads: int,
    inference_precision: str | None,
    runtime_options: dict[str, object] | None = None,
) -> dict:
    """The artifact's outputs for every input of `inputs` (.npy), one call each: {"outputs": base64 of the
    float32 .npy [N, K], "execution_precision"}."""
    import base64
    import io

    sessions = _load_sibling("sessions")
    session = sessions.open_session(
        runtime,
        model,
        threads=threads,
        inference_precision=inference_precision,
        runtime_options=runtime_options,
    )
    x = np.load(inputs, allow_pickle=False)
    rows = [np.asarray(session.run(x[i : i + 1]), dtype=np.float32).reshape(-1) for i in range(len(x))]
    buffer = io.BytesIO()
    np.save(buffer, np.stack(rows) if rows else np.zeros((0, 0), np.float32), allow_pickle=False)
    return {
        "outputs": base64.b64encode(buffer.getvalue()).decode(),
        "execution_precision": session.execution_precision,
        "count": len(rows),
        **_option_effects(session, runtime_options),
    }


def measure_batch(
    models: list[dict[str, object]],
    *,
    threads: int,
    runs: int,
    warmup_seconds: float,
    rounds: int,
    seed: int = 0,
) -> dict[str, object]:
    """Many small models timed in this one process: the latency model's calibration (hundreds of one-layer
    artifacts, where a process per artifact would cost more than the measurements).

    `models`: [{"runtime": "litert" | "openvino", "model": path, "inference_precision": str | None,
    "runtime_options": dict | None}] (a result then carries `_option_effects`).
    OpenVINO results also carry "node_ms" and "edge_reorder_ms" (see `_openvino_node_times`).
    Every model is loaded and run once first; then `rounds` rounds, each going through all models in
    turn (A, B, C, A, B, C, ...): at least `warmup_seconds` of warm-up, then `runs` timed inferences, whose
    median is the model's p50 for that round. Only the runtime's own call is timed (`session.invoke()` on an
    input set beforehand): copying a one-layer model's input in and output out would cost as much as the
    layer, and inside a whole model nothing copies them. Returns {"results": [{"model", "rounds_p50_ms", "runs",
    "load_ms", "error"}...], "runtime_versions", "cpu_model", "isa_flags", "threads"}; a model that fails
    to load or run gets its "error" and no times, and the others go on.
    """
    sessions = _load_sibling("sessions")
    opened: list[object | None] = []
    results: list[dict[str, object]] = []
    versions: dict[str, str] = {}
    inputs: list[list[np.ndarray]] = []
    for i, entry in enumerate(models):
        result: dict[str, object] = {"model": str(entry["model"]), "rounds_p50_ms": [], "runs": runs}
        try:
            start = time.perf_counter()
            session = sessions.open_session(
                str(entry["runtime"]),
                Path(str(entry["model"])),
                threads=threads,
                inference_precision=entry.get("inference_precision"),  # type: ignore[arg-type]
                runtime_options=entry.get("runtime_options"),  # type: ignore[arg-type]
            )
            result["load_ms"] = (time.perf_counter() - start) * 1000
            result |= _option_effects(session, entry.get("runtime_options"))  # type: ignore[arg-type]
            batch = random_inputs(session.input_shape, session.input_dtype, count=4, seed=seed + i)
            session.run(batch[0])
            versions[str(entry["runtime"])] = session.runtime_version
        except Exception as exc:  # one bad artifact must not cost the others their measurement
            session, batch = None, []
            result["error"] = (
                f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            )
        opened.append(session)
        inputs.append(batch)
        results.append(result)
    for _ in range(rounds):
        for session, batch, result in zip(opened, inputs, results, strict=True):
            if session is None:
                continue
            session.run(batch[0])  # sets the input the timed calls read
            warm = 0
            start = time.perf_counter()
            while time.perf_counter() - start < warmup_seconds or warm < 2:
                session.invoke()
                warm += 1
            times = []
            gc.collect()
            gc.disable()
            try:
                for _ in range(runs):
                    t0 = time.perf_counter()
                    session.invoke()
                    times.append((time.perf_counter() - t0) * 1000)
            finally:
                gc.enable()
            result["rounds_p50_ms"].append(float(np.percentile(times, 50)))  # type: ignore[union-attr]
    for entry, session, result in zip(models, opened, results, strict=True):
        if session is not None and entry.get("runtime") == "openvino":
            result["node_ms"], result["edge_reorder_ms"] = _openvino_node_times(
                sessions, entry, threads=threads, seed=seed
            )
    cpu_model, isa = cpu_info()
    return {
        "results": results,
        "runtime_versions": versions,
        "cpu_model": cpu_model,
        "isa_flags": isa,
        "machine": platform.machine(),
        "threads": threads,
    }


def _openvino_node_times(
    sessions, entry: dict[str, object], *, threads: int, seed: int, runs: int = 50, warmup: int = 100
) -> tuple[float, float]:
    """(compute, edge conversions) in ms per inference of a one-layer OpenVINO model, medians over profiled
    inferences (PERF_COUNT): the sum of the real time of its executed nodes but the edge ones, and of those:
    Reorders, which convert between the plain layout of its input/output and the blocked one its kernels
    use (nChw16c), the quantization of its float input and the int8 reader of its output (nodes named
    "input/..." and "output/int8_reader" by the latency builder; a boundary FakeQuantize after a float op
    is a real cost and counts), costs a whole model pays once at its edges
    (inside it, the producer's kernel quantizes its own output), not at every layer. The plugin's own node
    timings leave out the Python call and the request's hand-off, which at tens of microseconds are most of
    the noise of a wall-clock time. `warmup` untimed inferences first: after 5, a 1x1 conv at 112x112
    still read 0.20 ms against 0.15 ms after 200."""
    session = sessions.open_session(
        "openvino",
        Path(str(entry["model"])),
        threads=threads,
        inference_precision=entry.get("inference_precision"),
        perf_count=True,
        runtime_options=entry.get("runtime_options"),  # type: ignore[arg-type]
    )
    x = random_inputs(session.input_shape, session.input_dtype, count=1, seed=seed)[0]
    for _ in range(warmup):
        session.run(x)
    compute, reorders = [], []
    for _ in range(runs):
        session.run(x)
        nodes = [n for n in session.profiling_info() if n["status"] == "EXECUTED"]
        edge = [
            n
            for n in nodes
            if n["node_type"] == "Reorder" or str(n["node_name"]).startswith(("input/", "output/int8_reader"))
        ]
        reorders.append(sum(float(n["real_time_ms"]) for n in edge))
        compute.append(sum(float(n["real_time_ms"]) for n in nodes if n not in edge))
    return float(np.median(compute)), float(np.median(reorders))


def runtime_option_arguments(options: dict[str, object] | None) -> list[str]:
    """measure.py's `--runtime-option KEY=VALUE` arguments for `options` (values as JSON)."""
    return [
        a
        for key, value in (options or {}).items()
        for a in ("--runtime-option", f"{key}={json.dumps(value)}")
    ]


def parse_runtime_options(pairs: list[str] | None) -> dict[str, object]:
    """{key: value} of `--runtime-option KEY=VALUE` arguments; a value is read as JSON where it parses
    (0.5 -> 0.5), else kept as text. ValueError for an argument without '='."""
    options: dict[str, object] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--runtime-option needs KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text
    return options


def _option_effects(session, options: dict[str, object] | None) -> dict[str, object]:
    """What the runtime options did, for the JSON result: {} without options, else "runtime_options", the
    OpenVINO "sparse_layers" and "runtime_warnings" (options that took no effect here, one line each)."""
    if not options:
        return {}
    effects: dict[str, object] = {
        "runtime_options": dict(options),
        "runtime_warnings": list(session.warnings),
    }
    if hasattr(session, "sparse_layers"):
        effects["sparse_layers"] = list(session.sparse_layers)
    return effects


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime", choices=("litert", "openvino"))
    parser.add_argument("--model", type=Path, help=".tflite, or OpenVINO .xml (its .bin beside it)")
    parser.add_argument(
        "--batch",
        type=Path,
        help="a JSON list of {runtime, model, inference_precision} ('-': read it from stdin): time them all in "
        "this process (see measure_batch); --runs, --warmup-seconds, --threads and --rounds apply to each",
    )
    parser.add_argument("--rounds", type=int, default=3, help="--batch only: interleaved rounds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=200, help="timed inferences")
    parser.add_argument("--warmup-seconds", type=float, default=1.0, help="untimed inference before timing")
    parser.add_argument(
        "--inference-precision", default=None, help="OpenVINO only: f32, bf16 or f16 (default: plugin's)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    parser.add_argument(
        "--runtime-option",
        action="append",
        metavar="KEY=VALUE",
        help="a runtime option compiled in (sessions.RUNTIME_OPTIONS), e.g. sparse_weights_decompression_rate=0.5; "
        "repeatable",
    )
    parser.add_argument(
        "--op-profile",
        action="store_true",
        help="after the measurement, add the runtime's per-op profile (in a child process)",
    )
    parser.add_argument("--op-profile-runs", type=int, default=50, help="inferences of the per-op profile")
    parser.add_argument("--op-profile-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--energy", help="measure energy per inference from this source (energy.py SOURCES)")
    parser.add_argument("--energy-command", help="rpi5-pmic / meter: the command to read")
    parser.add_argument("--energy-window-seconds", type=float, default=10.0, help="each timed window")
    parser.add_argument("--energy-windows", type=int, default=3, help="timed windows (median taken)")
    parser.add_argument("--sysfs-root", default="/sys", help=argparse.SUPPRESS)  # tests: a sysfs tree
    parser.add_argument(
        "--outputs",
        type=Path,
        help="instead of timing: run every input of this .npy ([N, ...], one per call) and print the outputs "
        "(parity on the device)",
    )
    parser.add_argument(
        "--facts", action="store_true", help="print this machine's CPU, ISA flags and runtimes, then exit"
    )
    args = parser.parse_args(argv)
    if args.facts:
        print(json.dumps(facts()))
        return 0
    try:
        return _main(parser, args)
    except _load_sibling("sessions").ArtifactUnreadable as exc:
        print(json.dumps({"artifact_error": str(exc)}))
        print(f"error: {exc}", file=sys.stderr)
        return ARTIFACT_EXIT
    except ImportError as exc:  # the runtime (or numpy's part of it) is not installed here
        print(json.dumps({"runtime_error": str(exc)}))
        print(f"error: {exc}", file=sys.stderr)
        return RUNTIME_EXIT


def facts() -> dict:
    """What a device profile records about the machine this runs on (`--facts`; the runners' `facts`)."""
    sessions = _load_sibling("sessions")
    cpu_model, isa = cpu_info()
    return {
        "cpu_model": cpu_model,
        "isa_flags": isa,
        "arch": platform.machine(),
        "python_version": platform.python_version(),
        "runtime_versions": {r: sessions.runtime_version(r) for r in sessions.RUNTIMES},
    }


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.runs < 1 or args.threads < 1 or args.warmup_seconds < 0 or args.op_profile_runs < 1:
        parser.error("--runs, --threads and --op-profile-runs must be >= 1 and --warmup-seconds >= 0")
    try:
        runtime_options = parse_runtime_options(args.runtime_option)
    except ValueError as exc:
        parser.error(str(exc))
    if args.batch is not None:
        if args.rounds < 1:
            parser.error("--rounds must be >= 1")
        models = json.loads(sys.stdin.read() if str(args.batch) == "-" else args.batch.read_text())
        result = measure_batch(
            models,
            threads=args.threads,
            runs=args.runs,
            warmup_seconds=args.warmup_seconds,
            rounds=args.rounds,
            seed=args.seed,
        )
        print(json.dumps(result))
        return 0
    if args.runtime is None or args.model is None:
        parser.error("--runtime and --model are required (or --batch FILE)")
    if args.outputs is not None:
        print(
            json.dumps(
                outputs(
                    args.runtime,
                    args.model,
                    args.outputs,
                    threads=args.threads,
                    inference_precision=args.inference_precision,
                    runtime_options=runtime_options,
                )
            )
        )
        return 0
    common = {
        "threads": args.threads,
        "inference_precision": args.inference_precision,
        "seed": args.seed,
        "runtime_options": runtime_options,
    }
    if args.op_profile_only:
        profile = op_profile(args.runtime, args.model, runs=args.op_profile_runs, **common)
        print(json.dumps(profile))
        return 0
    energy = (
        {
            "source": args.energy,
            "command": args.energy_command,
            "window_seconds": args.energy_window_seconds,
            "windows": args.energy_windows,
            "root": args.sysfs_root,
        }
        if args.energy
        else None
    )
    result = measure(
        args.runtime, args.model, runs=args.runs, warmup_seconds=args.warmup_seconds, energy=energy, **common
    )
    if args.op_profile:
        result["op_profile"] = isolated_op_profile(
            args.runtime, args.model, runs=args.op_profile_runs, **common
        )
    for warning in result.get("runtime_warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
