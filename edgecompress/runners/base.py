"""What every runner shares: the device scripts' protocol (runtimes/measure.py), the command lines, and the
reading of their results. A runner only says how measure.py runs on its device (`_measure`) and how the
device's facts are read; LocalRunner runs it here in a fresh process, SSHRunner copies it and the artifact
to a board and runs it there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecompress.errors import ArtifactError, DeviceError
from edgecompress.exporters.base import Artifact
from edgecompress.profiling import (
    BatchResult,
    BatchTiming,
    Energy,
    LatencyStats,
    Measurements,
    OpProfile,
    RuntimeFacts,
    Thermal,
)
from edgecompress.specs import DeviceProfile, EnergySource

if TYPE_CHECKING:
    from edgecompress.console import UI

#: Where a local file lands on the device, as the device's command line spells it.
Place = Callable[[Path], str]

RUNTIME_PACKAGES = {"litert": "ai-edge-litert (or tflite-runtime)", "openvino": "openvino"}


def quote(arg: str) -> str:
    """`arg` quoted for the device's shell; a leading `~/` (a Python or workdir in the login's home, as
    written in a device file) is left to the shell to expand, the rest quoted."""
    import shlex

    return "~/" + shlex.quote(arg[2:]) if arg.startswith("~/") else shlex.quote(arg)


def tail(text: str, lines: int = 8) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:]) or "(no output)"


def last_json(stdout: str, key: str | None = None) -> dict | None:
    """The last line of `stdout` that is a JSON object (with `key`, when given)."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            result = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(result, dict) and (key is None or key in result):
            return result
    return None


def estimated_energy_mj(device: DeviceProfile, *, threads: int, p50_ms: float) -> float | None:
    """ESTIMATED (not measured) energy per inference in mJ from the device's power model, or None without one.

    (idle_watts + active_watts_per_core * threads) W  x  p50 latency s  =  J;  W x ms = mJ.
    It assumes `threads` cores fully busy for the median latency; it is only as good as the power model.
    """
    if device.power is None:
        return None
    watts = device.power.idle_watts + device.power.active_watts_per_core * threads
    return watts * p50_ms


def check_artifacts(artifacts: list[Artifact]) -> None:
    """measure.py's structural checks, here and before any process starts or any file is copied to a
    device: ArtifactError naming the file and what is wrong."""
    from edgecompress.runtimes.sessions import ArtifactUnreadable, check_artifact

    for artifact in artifacts:
        try:
            check_artifact(artifact.runtime, artifact.path)
        except ArtifactUnreadable as exc:
            raise ArtifactError(str(exc)) from None


def timing_arguments(*, runs: int, warmup_seconds: float, threads: int) -> list[str]:
    return ["--threads", str(threads), "--runs", str(runs), "--warmup-seconds", str(warmup_seconds)]


def option_arguments(artifact: Artifact) -> list[str]:
    """measure.py's `--runtime-option KEY=VALUE` arguments for the artifact's runtime options."""
    from edgecompress.runtimes.measure import runtime_option_arguments

    return runtime_option_arguments(artifact.runtime_options)


def native_config(artifact: Artifact, device: DeviceProfile) -> dict[str, dict[str, str]] | None:
    """benchmark_app's `-load_config` JSON for the artifact's runtime options, {"CPU": {property: value}}
    (values as text, as the C++ tool reads them), or None without options; DeviceError for a runtime whose
    native tool takes none (LiteRT has no runtime options)."""
    from edgecompress.runtimes.sessions import runtime_properties

    if not artifact.runtime_options:
        return None
    if artifact.runtime != "openvino":
        raise DeviceError(
            f"{device.name}: connection.mode native does not take runtime_options for {artifact.runtime} yet "
            f"({artifact.name}: {', '.join(artifact.runtime_options)})"
        )
    properties = runtime_properties(artifact.runtime, artifact.runtime_options)
    return {"CPU": {key: str(value) for key, value in properties.items()}}


def energy_of(measured: dict | None, estimated_mj: float | None) -> Energy | None:
    """measure.py's energy result as a labelled Energy; else the power model's estimate; else None."""
    if measured:
        nets = measured["net_mj_windows"]
        return Energy(
            kind="measured",
            source=measured["source"],
            mj_per_inference=measured["net_mj"],
            gross_mj_per_inference=measured["gross_mj"],
            idle_watts=measured["idle_watts"],
            windows=measured["windows"],
            spread_mj=(min(nets), max(nets)),
        )
    if estimated_mj is not None:
        return Energy(kind="estimated", source="power model", mj_per_inference=estimated_mj)
    return None


def thermal_of(readings: dict | None) -> Thermal | None:
    """Before/after temperature and frequency; throttled when the frequency fell by more than 10% or the
    kernel's throttle count rose."""
    if not readings:
        return None
    before, after = readings["before"], readings.get("after_energy") or readings["after"]
    fell = bool(before.get("mhz") and after.get("mhz") and after["mhz"] < 0.9 * before["mhz"])
    counted = (
        before.get("throttle_count") is not None
        and after.get("throttle_count") is not None
        and after["throttle_count"] > before["throttle_count"]
    )
    notes = []
    if fell:
        notes.append(f"CPU 0 at {after['mhz']:.0f} MHz after, {before['mhz']:.0f} before")
    if counted:
        notes.append(f"{after['throttle_count'] - before['throttle_count']} thermal throttle events")
    return Thermal(
        before_c=before.get("temp_c"),
        after_c=after.get("temp_c"),
        before_mhz=before.get("mhz"),
        after_mhz=after.get("mhz"),
        throttled=fell or counted,
        note="; ".join(notes),
    )


class ToolFailed(DeviceError):
    """A native benchmark tool ran on the device and failed on one artifact (or printed no timing)."""


@dataclass(frozen=True)
class Job:
    """One run of measure.py: its arguments `argv(place)` (and `stdin(place)` on its standard input), with
    every path of `files` reachable on the device as `place(path)`. With `script` None, `argv(place)` is the
    whole command (a native benchmark tool; no script is copied) and `missing` says what to set when the
    device has no such program."""

    files: list[Path]
    argv: Callable[[Place], list[str]]
    what: str  # said in errors: "tflite-int8", "a batch of 12 artifacts"
    stdin: Callable[[Place], str] | None = None
    script: str | None = "measure.py"  # or "probe.py" (runtimes/); None: a native tool
    missing: str = "set connection.python to the Python that has numpy and the runtime"

    def command(self, place: Place, python: str, scripts: str) -> list[str]:
        """The command line on the device: `python scripts/script argv...`, or the native tool's argv."""
        if self.script is None:
            return self.argv(place)
        return [python, f"{scripts}/{self.script}", *self.argv(place)]


@dataclass(frozen=True)
class Completed:
    """How measure.py ended on the device."""

    returncode: int
    stdout: str
    stderr: str


class ScriptRunner:
    """Runs runtimes/measure.py for an artifact on a device and reads its JSON. Subclasses implement
    `_measure` (run the script with these arguments, these files placed on the device) and `facts`."""

    #: Said in errors: where the script ran ("the device", "this machine").
    where = "the device"

    def __init__(
        self, *, timeout_seconds: float = 3600.0, op_profile_runs: int = 50, ui: UI | None = None
    ) -> None:
        self.timeout_seconds = timeout_seconds
        #: Inferences the per-op profile pass (when a run asks for one) averages over.
        self.op_profile_runs = op_profile_runs
        #: Where a runtime option that took no effect on a device is said, once (None: kept in Measurements).
        self.ui = ui
        #: Native tools found on devices: (device, runtime) -> path there.
        self._tools: dict[tuple[str, str], str] = {}
        #: (device, artifact, warning) already said through `ui`.
        self._warned: set[tuple[str, str, str]] = set()

    # ----------------------------------------------------------------------------------- the subclass's part

    def facts(self, device: DeviceProfile, runtime: str) -> RuntimeFacts:
        """The device's CPU, ISA flags and `runtime`'s version, from measure.py --facts run there (nothing
        measured); DeviceError when the runtime is not installed for the device's Python. Native mode reads
        the device's /proc/cpuinfo and `uname -m`; the tool is the version."""
        if device.connection.mode == "native":
            return self._native_facts(device, runtime)
        job = Job([], lambda place: ["--facts"], "the device's facts")
        found = self._result(self._measure(device, job), device, job.what)
        version = found["runtime_versions"].get(runtime)
        if runtime not in device.runtimes or version is None:
            raise DeviceError(
                f"{device.name}: {runtime} is not installed for {device.connection.python} on {self.where}: "
                f"pip install {RUNTIME_PACKAGES[runtime]} there (or set connection.python)"
            )
        return RuntimeFacts(
            runtime=runtime,
            runtime_version=version,
            cpu_model=found["cpu_model"],
            isa_flags=found["isa_flags"],
            arch=found["arch"],
        )

    def _measure(self, device: DeviceProfile, job: Job) -> Completed:
        """Run measure.py for `job` on the device; DeviceError when it cannot be run at all."""
        raise NotImplementedError

    def _warn(self, device: DeviceProfile, artifact: Artifact, warnings: list[str]) -> None:
        """Each runtime warning of `artifact` on `device` through the runner's ui, the first time only."""
        for warning in warnings:
            key = (device.name, artifact.name, warning)
            if self.ui is not None and key not in self._warned:
                self._warned.add(key)
                self.ui.warn(f"{device.name}: {artifact.name}: {warning}")

    # ----------------------------------------------------------------------------------------- shared part

    def arguments(
        self,
        artifact: Artifact,
        place: Place,
        *,
        runs: int,
        warmup_seconds: float,
        threads: int,
        op_profile: bool,
        energy: tuple[EnergySource, float, int] | None = None,
    ) -> list[str]:
        """measure.py's arguments for one artifact, its path as the device sees it, its runtime options
        compiled in; `energy`: (source, window seconds, windows) to measure energy per inference after the
        timing."""
        measured = []
        if energy is not None:
            source, seconds, windows = energy
            measured = [
                "--energy",
                source.source,
                "--energy-window-seconds",
                str(seconds),
                "--energy-windows",
                str(windows),
                "--sysfs-root",
                source.sysfs_root,
                *(["--energy-command", source.command] if source.command else []),
            ]
        return [
            *measured,
            "--runtime",
            artifact.runtime,
            "--model",
            place(artifact.path),
            *timing_arguments(runs=runs, warmup_seconds=warmup_seconds, threads=threads),
            *(
                ["--inference-precision", artifact.inference_precision]
                if artifact.inference_precision
                else []
            ),
            *option_arguments(artifact),
            *(["--op-profile", "--op-profile-runs", str(self.op_profile_runs)] if op_profile else []),
        ]

    def _result(self, done: Completed, device: DeviceProfile, what: str) -> dict:
        """measure.py's JSON result, or the error its exit code and output say, in one line where known."""
        from edgecompress.runtimes.measure import ARTIFACT_EXIT, RUNTIME_EXIT

        if done.returncode == ARTIFACT_EXIT:
            found = last_json(done.stdout, "artifact_error")
            message = found["artifact_error"] if found else tail(done.stderr, 1).removeprefix("error: ")
            raise ArtifactError(message if self.where == "this machine" else f"{device.name}: {message}")
        if done.returncode == RUNTIME_EXIT:
            found = last_json(done.stdout, "runtime_error")
            raise DeviceError(
                f"{device.name}: {found['runtime_error'] if found else tail(done.stderr, 1)} "
                f"({self.where}'s {device.connection.python})"
            )
        if "No module named 'numpy'" in done.stderr:
            raise DeviceError(
                f"{device.name}: numpy is not installed for {device.connection.python} on {self.where}: "
                "pip install numpy there (or set connection.python)"
            )
        if done.returncode != 0:
            raise DeviceError(
                f"{device.name}: profiling {what} failed (exit {done.returncode}):\n{tail(done.stderr)}"
            )
        result = last_json(done.stdout)
        if result is None:
            raise DeviceError(
                f"{device.name}: profiling {what} printed no JSON result:\n{tail(done.stdout + done.stderr)}"
            )
        return result

    def outputs(self, artifact: Artifact, device: DeviceProfile, x: Any, *, threads: int) -> tuple[Any, str]:
        """`artifact`'s outputs for the images `x` ([N, ...], one per call) computed on the device, and the
        precision its runtime computed in: parity on the device."""
        import base64
        import io
        import tempfile

        import numpy as np

        if device.connection.mode == "native":
            raise DeviceError(
                f"{device.name}: parity on the device needs connection.mode: script (measure.py returns the "
                "outputs; a native benchmark tool does not)"
            )
        check_artifacts([artifact])
        with tempfile.TemporaryDirectory(prefix="edgecompress-parity-") as tmp:
            inputs = Path(tmp) / "inputs.npy"
            np.save(inputs, np.ascontiguousarray(x, dtype=np.float32), allow_pickle=False)

            def argv(place: Place) -> list[str]:
                return [
                    "--runtime",
                    artifact.runtime,
                    "--model",
                    place(artifact.path),
                    "--threads",
                    str(threads),
                    *(
                        ["--inference-precision", artifact.inference_precision]
                        if artifact.inference_precision
                        else []
                    ),
                    *option_arguments(artifact),
                    "--outputs",
                    place(inputs),
                ]

            what = f"{artifact.name} on the test split"
            result = self._result(
                self._measure(device, Job([*artifact.files, inputs], argv, what)), device, what
            )
        try:
            logits = np.load(io.BytesIO(base64.b64decode(result["outputs"])), allow_pickle=False)
        except (KeyError, ValueError) as exc:
            raise DeviceError(f"{device.name}: unreadable outputs of {artifact.name}: {exc}") from None
        self._warn(device, artifact, list(result.get("runtime_warnings", [])))
        return logits, str(result.get("execution_precision", ""))

    def probe(self, device: DeviceProfile) -> dict:
        """runtimes/probe.py on the device: CPU, ISA, memory, OS, runtimes, governor, thermal zones, energy
        sources (`edgecompress devices probe`)."""
        if device.connection.mode == "native":
            return self._probe_native(device)
        job = Job([], lambda place: [], "the probe", script="probe.py")
        return self._result(self._measure(device, job), device, job.what)

    def _probe_native(self, device: DeviceProfile) -> dict:
        """The same facts from a device without Python: native.PROBE_SCRIPT in its sh, parsed here."""
        from edgecompress.runners import native

        tools = [native.tool_of(device.connection, r) for r in ("litert", "openvino")]
        text = self._shell_text(device, ["sh", "-c", native.PROBE_SCRIPT, "probe", *tools], "the probe")
        try:
            return native.parse_probe(text)
        except ValueError as exc:
            raise DeviceError(f"{device.name}: {exc}:\n{tail(text)}") from None

    def _check_runtimes(self, artifacts: list[Artifact], device: DeviceProfile) -> None:
        missing = sorted({a.runtime for a in artifacts} - set(device.runtimes))
        if missing:
            raise DeviceError(
                f"{device.name}: has no {', '.join(missing)} runtime to measure on (its runtimes: "
                f"{', '.join(device.runtimes)})"
            )

    # ------------------------------------------------------------------------------------ native mode

    def _shell_text(self, device: DeviceProfile, argv: list[str], what: str) -> str:
        done = self._measure(
            device, Job([], lambda place: argv, what, script=None, missing=f"{argv[0]} is needed")
        )
        if done.returncode != 0:
            raise DeviceError(
                f"{device.name}: {' '.join(argv)} failed (exit {done.returncode}): {tail(done.stderr, 1)}"
            )
        return done.stdout

    def _native_facts(self, device: DeviceProfile, runtime: str) -> RuntimeFacts:
        from pathlib import PurePosixPath

        from edgecompress.runners import native
        from edgecompress.runtimes.probe import parse_cpuinfo

        if runtime not in device.runtimes:
            raise DeviceError(f"{device.name}: has no {runtime} runtime ({', '.join(device.runtimes)})")
        cpu_model, isa = parse_cpuinfo(self._shell_text(device, ["cat", "/proc/cpuinfo"], "/proc/cpuinfo"))
        arch = self._shell_text(device, ["uname", "-m"], "uname -m").strip()
        tool = PurePosixPath(native.tool_of(device.connection, runtime)).name
        return RuntimeFacts(
            runtime=runtime,
            runtime_version=f"{tool} (native)",
            cpu_model=cpu_model or device.cpu.model,
            isa_flags=isa or list(device.cpu.isa),
            arch=arch or device.cpu.arch,
        )

    def _tool(self, device: DeviceProfile, runtime: str) -> str:
        """The runtime's benchmark tool on the device: the connection's, else found there (a phone: on its
        PATH, else /data/local/tmp/benchmark_model), once per runner and device."""
        from edgecompress.runners import native

        default = native.tool_of(device.connection, runtime)
        if native.configured_tool(device.connection, runtime) or device.connection.runner != "adb":
            return default
        cache = self._tools
        if (device.name, runtime) not in cache:
            find = 'command -v "$1" 2>/dev/null || { [ -x "$2" ] && echo "$2"; } || true'
            argv = ["sh", "-c", find, "find", native.DEFAULT_TOOLS[runtime], default]
            found = self._shell_text(device, argv, "the benchmark tool").strip()
            cache[(device.name, runtime)] = found.splitlines()[0] if found else default
        return cache[(device.name, runtime)]

    def _native(
        self, artifact: Artifact, device: DeviceProfile, *, runs: int, warmup_seconds: float, threads: int
    ) -> tuple[dict, str]:
        """One run of `artifact`'s runtime's own benchmark tool on the device (connection.mode: native): its
        output parsed (runners/native.py) and the tool. Runtime options go to benchmark_app as a
        `-load_config` file (`native_config`)."""
        import tempfile

        from edgecompress.runners import native

        config = native_config(artifact, device)
        tool = self._tool(device, artifact.runtime)
        key = native.DEFAULT_TOOLS[artifact.runtime]  # also the connection's field naming it
        missing = (
            f"put {native.DEFAULT_TOOLS[artifact.runtime]} on the device and set connection.{key} to its path"
        )
        with tempfile.TemporaryDirectory(prefix="edgecompress-native-") as tmp:
            config_file = Path(tmp) / f"{artifact.path.stem}.config.json"
            if config is not None:
                config_file.write_text(json.dumps(config))

            def argv(place: Place) -> list[str]:
                return [
                    *native.tool_arguments(
                        tool,
                        artifact.runtime,
                        place(artifact.path),
                        threads=threads,
                        runs=runs,
                        warmup_seconds=warmup_seconds,
                        inference_precision=artifact.inference_precision,
                        shape=list(artifact.input_shape) if artifact.input_shape else None,
                    ),
                    *(["-load_config", place(config_file)] if config is not None else []),
                ]

            files = [*artifact.files, *([config_file] if config is not None else [])]
            done = self._measure(device, Job(files, argv, artifact.name, script=None, missing=missing))
        output = done.stdout + "\n" + done.stderr
        if done.returncode == 126 or "exec format error" in output.lower():
            raise DeviceError(
                f"{device.name}: {tool} cannot run there ({tail(output, 1)}): it is built for another CPU "
                f"architecture or is not executable; put the {device.cpu.arch if device.cpu.arch != 'detect' else 'device'}"
                f" build of {native.DEFAULT_TOOLS[artifact.runtime]} there (connection.{key})"
            )
        if done.returncode != 0:
            raise ToolFailed(
                f"{device.name}: {tool} failed on {artifact.name} (exit {done.returncode}):\n{tail(output)}"
            )
        try:
            return native.parse(artifact.runtime, output), tool
        except ValueError as exc:
            raise ToolFailed(f"{device.name}: {exc} ({tool} on {artifact.name}):\n{tail(output)}") from None

    def _run_native(
        self, artifact: Artifact, device: DeviceProfile, *, runs: int, warmup_seconds: float, threads: int
    ) -> Measurements:
        from pathlib import PurePosixPath

        from edgecompress.runners import native

        parsed, tool = self._native(
            artifact, device, runs=runs, warmup_seconds=warmup_seconds, threads=threads
        )
        name = PurePosixPath(tool).name
        latency = LatencyStats.model_validate(native.latency_fields(parsed, runs))
        estimated = estimated_energy_mj(device, threads=threads, p50_ms=latency.p50_ms)
        return Measurements(
            device=device.name,
            runtime=artifact.runtime,
            runtime_version=parsed["version"] or f"{name} (native; version not reported)",
            threads=threads,
            execution_precision=artifact.inference_precision,
            load_ms=parsed["load_ms"],
            first_inference_ms=parsed["first_ms"],
            warmup_seconds=warmup_seconds,
            latency=latency,
            peak_rss_mb=parsed["peak_mb"],
            baseline_rss_mb=None,
            file_size_bytes=sum(f.stat().st_size for f in artifact.files),
            cpu_model=device.cpu.model,
            isa_flags=list(device.cpu.isa),
            python_version="",
            energy_mj_estimated=estimated,
            energy=energy_of(None, estimated),
            tool=name,
            runtime_options=dict(artifact.runtime_options),  # the tool reports no packed layers nor warnings
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
        """Many small artifacts timed in one fresh process (`measure.py --batch -`), `rounds` interleaved
        rounds: the latency model's calibration. One artifact that fails is reported in its timing's
        `error`; the others are still timed. DeviceError when the process itself fails."""
        self._check_runtimes(artifacts, device)
        if not artifacts:
            return BatchResult(timings=[], runtime_versions={}, cpu_model="", isa_flags=[], threads=threads)
        if device.connection.mode == "native":
            return self._batch_native(
                artifacts, device, runs=runs, warmup_seconds=warmup_seconds, threads=threads, rounds=rounds
            )
        files = [f for a in artifacts for f in a.files]

        def listing(place: Place) -> str:
            return json.dumps(
                [
                    {
                        "runtime": a.runtime,
                        "model": place(a.path),
                        "inference_precision": a.inference_precision,
                        **({"runtime_options": a.runtime_options} if a.runtime_options else {}),
                    }
                    for a in artifacts
                ]
            )

        def argv(place: Place) -> list[str]:
            timing = timing_arguments(runs=runs, warmup_seconds=warmup_seconds, threads=threads)
            return ["--batch", "-", *timing, "--rounds", str(rounds)]

        job = Job(files, argv, f"a batch of {len(artifacts)} artifacts", stdin=listing)
        result = self._result(self._measure(device, job), device, job.what)
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

    def _batch_native(
        self,
        artifacts: list[Artifact],
        device: DeviceProfile,
        *,
        runs: int,
        warmup_seconds: float,
        threads: int,
        rounds: int,
    ) -> BatchResult:
        """run_batch in native mode: the tool once per artifact and round, the rounds interleaved (A, B, A,
        B, ...). One artifact the tool fails on has its error; a device that cannot run it fails the batch."""
        p50s: list[list[float]] = [[] for _ in artifacts]
        loads: list[float | None] = [None] * len(artifacts)
        errors: list[str | None] = [None] * len(artifacts)
        version = ""
        for _ in range(rounds):
            for i, artifact in enumerate(artifacts):
                if errors[i]:
                    continue
                try:
                    parsed, tool = self._native(
                        artifact, device, runs=runs, warmup_seconds=warmup_seconds, threads=threads
                    )
                except ToolFailed as exc:  # this artifact; a device without the tool raises on
                    errors[i] = str(exc)
                    continue
                p50s[i].append(parsed["p50_ms"])
                loads[i] = parsed["load_ms"]
                version = parsed["version"] or f"{tool} (native)"
        return BatchResult(
            timings=[
                BatchTiming(
                    path=str(a.path), rounds_p50_ms=p50s[i], runs=runs, load_ms=loads[i], error=errors[i]
                )
                for i, a in enumerate(artifacts)
            ],
            runtime_versions={artifacts[0].runtime: version} if version else {},
            cpu_model=device.cpu.model,
            isa_flags=list(device.cpu.isa),
            threads=threads,
        )

    def run(
        self,
        artifact: Artifact,
        device: DeviceProfile,
        *,
        runs: int,
        warmup_seconds: float,
        threads: int,
        op_profile: bool = True,
        energy: tuple[float, int] | None = None,
    ) -> Measurements:
        """Measurements of `artifact` on `device`; DeviceError with the end of the script's stderr if it fails.

        `op_profile`: add the runtime's per-op profile, a separate pass after the timed runs in the same child
        process (the pipeline asks for it in the first round only).

        `energy`: (window seconds, windows) to measure energy per inference from the device's energy source
        (DeviceError when it cannot be read); `Measurements.energy` is then `measured (<source>)`, else
        `estimated (power model)` when the device has a power model (`energy_mj_estimated` too), else None.

        The artifact runs with its runtime options; `Measurements` records them, the options that took no
        effect there (`runtime_warnings`, said once through the runner's ui when it has one) and the layers
        OpenVINO packed (`sparse_layers`).
        """
        if artifact.runtime not in device.runtimes:
            raise DeviceError(
                f"{device.name}: cannot profile {artifact.name}: its runtime '{artifact.runtime}' is not among "
                f"the device's runtimes ({', '.join(device.runtimes)})"
            )
        check_artifacts([artifact])
        if device.connection.mode == "native":  # energy: the power model's estimate only (no sampler there)
            return self._run_native(
                artifact, device, runs=runs, warmup_seconds=warmup_seconds, threads=threads
            )

        request = None
        if energy is not None:
            if device.energy is None:
                raise DeviceError(
                    f"{device.name}: energy was asked for but the device profile names no energy source "
                    "(energy: {source: rapl | perf | ina3221 | android-battery | rpi5-pmic | meter})"
                )
            request = (device.energy, *energy)

        def argv(place: Place) -> list[str]:
            return self.arguments(
                artifact,
                place,
                runs=runs,
                warmup_seconds=warmup_seconds,
                threads=threads,
                op_profile=op_profile,
                energy=request,
            )

        done = self._measure(device, Job(list(artifact.files), argv, artifact.name))
        result = self._result(done, device, artifact.name)
        if "energy_error" in result:
            raise DeviceError(f"{device.name}: cannot measure energy: {result['energy_error']}")
        try:
            latency = LatencyStats.model_validate(result["latency"])
            estimated = estimated_energy_mj(device, threads=threads, p50_ms=latency.p50_ms)
            measured = Measurements(
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
                energy_mj_estimated=estimated,
                op_profile=OpProfile.model_validate(result["op_profile"]) if "op_profile" in result else None,
                energy=energy_of(result.get("energy"), estimated),
                thermal=thermal_of(result.get("thermal")),
                runtime_options=dict(artifact.runtime_options),
                runtime_warnings=list(result.get("runtime_warnings", [])),
                sparse_layers=result.get("sparse_layers"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DeviceError(
                f"{device.name}: unexpected profiling result for {artifact.name}: {exc}"
            ) from exc
        self._warn(device, artifact, measured.runtime_warnings)
        return measured
