"""The latency model of a device x runtime x thread count: how long each layer takes there, measured.

    model = LatencyModel(device, "litert", threads=2, ui=ui)
    times = model.latencies([graph_a, graph_b])        # ms each; measures what the cache lacks
    total = model.predict([graph_a, graph_b]).total_ms  # a whole model as the sum of its layers

A layer is an `OpGraph` (a few runtime ops). Missing entries are built straight in the runtime's format
(`latency/tflite_builder.py`, `latency/openvino_builder.py`: milliseconds each, no converter), timed on the
device through its runner's batch call (many artifacts in one process or remote session, interleaved
rounds, fastest round's p50) and stored in the table of `latency/table.py`, reused by every later build.

A one-layer artifact's latency includes the runtime's fixed per-inference cost (the interpreter call,
the request, the Python binding). `overhead_ms` measures it with a trivial graph; `predict` counts it
once: total = overhead + sum(max(layer - overhead, 0)). The benchmark suite reports how far that sum is
from the measured whole model for every benchmark model.

This room sits below the exporters: it builds its own artifacts and imports no stage, exporter or framework.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecompress.console import UI
from edgecompress.errors import DeviceError, EdgeCompressError
from edgecompress.exporters.base import Artifact
from edgecompress.latency.graph import Node, OpGraph
from edgecompress.latency.table import Entry, LatencyTable, TableKey, _now
from edgecompress.registry import RUNNERS, import_object
from edgecompress.specs import DeviceProfile

#: runtime -> (artifact suffix, "module:function" that writes an OpGraph in that runtime's format).
BUILDERS = {
    "litert": (".tflite", "edgecompress.latency.tflite_builder:build_tflite"),
    "openvino": (".xml", "edgecompress.latency.openvino_builder:build_openvino"),
}
#: Artifacts timed per measuring process (bounds its memory; one progress step each).
CHUNK = 120


@dataclass(frozen=True)
class Calibration:
    """How an entry is measured: inferences per round, warm-up before each round, interleaved rounds."""

    runs: int = 50
    warmup_seconds: float = 0.005
    rounds: int = 3


@dataclass(frozen=True)
class Prediction:
    total_ms: float
    overhead_ms: float
    layers_ms: tuple[float, ...]


def null_graph(precision: str) -> OpGraph:
    """A trivial graph whose latency is the runtime's fixed cost per inference."""
    return OpGraph(
        (1, 1, 1, 8),
        (Node.make("null", "relu", precision=precision),),
        label=f"per-inference cost ({precision})",
    )


class LatencyModel:
    """Measured per-graph latencies of one device x runtime x thread count (see the module docstring)."""

    def __init__(
        self,
        device: DeviceProfile,
        runtime: str,
        *,
        threads: int,
        ui: UI,
        runner: Any = None,
        recalibrate: bool = False,
        cache: Path | None = None,
        calibration: Calibration = Calibration(),
    ) -> None:
        if runtime not in BUILDERS:
            raise EdgeCompressError(
                f"no latency builder for runtime '{runtime}'; known: {', '.join(BUILDERS)}"
            )
        self.device = device
        self.runtime = runtime
        self.threads = threads
        self.ui = ui
        self.runner = runner
        self.recalibrate = recalibrate
        self.cache = cache
        self.calibration = calibration
        self._table: LatencyTable | None = None
        #: What the user should know about this model (rebuilt tables, calibration time), for the report.
        self.notes: list[str] = []
        #: Seconds spent measuring in this process.
        self.calibration_seconds = 0.0
        self.measured_count = 0

    # ------------------------------------------------------------------------------------------ table

    def _runner(self) -> Any:
        if self.runner is None:
            self.runner = RUNNERS.get(self.device.connection.runner)()
        return self.runner

    @property
    def table(self) -> LatencyTable:
        if self._table is None:
            if self.runtime not in self.device.runtimes:
                raise DeviceError(
                    f"{self.device.name}: has no {self.runtime} runtime (its runtimes: "
                    f"{', '.join(self.device.runtimes)}); cannot build its latency model"
                )
            facts = self._runner().facts(self.device, self.runtime)
            key = TableKey(
                device=self.device.name,
                runtime=self.runtime,
                runtime_version=facts.runtime_version,
                threads=self.threads,
                cpu_model=facts.cpu_model,
                isa_flags=tuple(facts.isa_flags),
            )
            self._table, note = LatencyTable.open(key, self.cache, fresh=self.recalibrate)
            if note:
                self.notes.append(note)
                self.ui.info(note)
        return self._table

    @property
    def key(self) -> TableKey:
        return self.table.key

    # ---------------------------------------------------------------------------------------- measuring

    def latencies(self, graphs: Sequence[OpGraph], *, what: str = "layers") -> list[float]:
        """p50 in ms of each graph on the device, measuring (and caching) those the table lacks."""
        table = self.table
        missing: dict[str, OpGraph] = {}
        for graph in graphs:
            key = graph.key()
            if key not in table.entries and key not in missing:
                missing[key] = graph
        if missing:
            nulls = [null_graph(p) for p in ("fp32", "int8") if null_graph(p).key() not in table.entries]
            if nulls and self.runtime == "openvino":  # layer entries are built on the per-call cost
                self._measure(nulls, "per-inference costs")
            self._measure([g for g in missing.values() if g.key() not in table.entries], what)
        return [table.entries[g.key()].p50_ms for g in graphs]

    def latency(self, graph: OpGraph) -> float:
        return self.latencies([graph])[0]

    def overhead_ms(self, precision: str = "fp32") -> float:
        """The runtime's fixed cost per inference, from a trivial graph."""
        return self.latency(null_graph(precision))

    def predict(self, graphs: Sequence[OpGraph], *, precision: str = "fp32") -> Prediction:
        """A whole model's latency as the sum of its layers' (the fixed per-inference cost counted once)."""
        overhead = self.overhead_ms(precision)
        layers = self.latencies(graphs)
        net = tuple(max(t - overhead, 0.0) for t in layers)
        return Prediction(total_ms=overhead + sum(net), overhead_ms=overhead, layers_ms=net)

    def _measure(self, graphs: list[OpGraph], what: str) -> None:
        suffix, builder_path = BUILDERS[self.runtime]
        build = import_object(builder_path)
        runner = self._runner()
        table = self.table
        cal = self.calibration
        start = time.perf_counter()
        workdir = Path(tempfile.mkdtemp(prefix="edgecompress-latency-"))
        label = f"latency model {self.device.name}/{self.runtime}: measuring {len(graphs)} {what}"
        try:
            with self.ui.progress(label, total=len(graphs)) as task:
                for first in range(0, len(graphs), CHUNK):
                    chunk = graphs[first : first + CHUNK]
                    artifacts = [
                        self._artifact(build, g, workdir / f"g{first + i}{suffix}")
                        for i, g in enumerate(chunk)
                    ]
                    result = runner.run_batch(
                        artifacts,
                        self.device,
                        runs=cal.runs,
                        warmup_seconds=cal.warmup_seconds,
                        threads=self.threads,
                        rounds=cal.rounds,
                    )
                    self._check_facts(result)
                    for graph, timing in zip(chunk, result.timings, strict=True):
                        if timing.error or not timing.rounds_p50_ms:
                            raise DeviceError(
                                f"{self.device.name}/{self.runtime}: could not time {graph.label or graph.key()}: "
                                f"{timing.error or 'no rounds'}"
                            )
                        # a one-layer OpenVINO model converts its input/output layout; a layer in a
                        # model does not (the conversions are paid once, at the model's edges). Its entry
                        # is the plugin's own time of its nodes, the call overhead being the null graph's.
                        edge = timing.edge_reorder_ms
                        p50 = timing.p50_ms - edge
                        if timing.node_ms is not None:
                            p50 = timing.node_ms + self._call_overhead(graph, timing)
                        table.entries[graph.key()] = Entry(
                            label=graph.label or graph.nodes[-1].op,
                            p50_ms=max(p50, 0.0),
                            rounds_p50_ms=[max(r - edge, 0.0) for r in timing.rounds_p50_ms],
                            runs=timing.runs,
                            measured=_now(),
                        )
                    table.save(self.cache)
                    task.advance(len(chunk))
                    for artifact in artifacts:
                        for f in artifact.files:
                            f.unlink(missing_ok=True)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        seconds = time.perf_counter() - start
        self.calibration_seconds += seconds
        self.measured_count += len(graphs)
        self.ui.debug(f"{label}: {seconds:.1f} s")

    def _call_overhead(self, graph: OpGraph, timing: Any) -> float:
        """The per-inference cost outside the nodes (wall minus node times) of the trivial graph, so that an
        entry built from node times is on the same footing as a wall-clock one (`predict` subtracts it once
        per layer). For the trivial graph itself: its own wall time minus its node time."""
        if graph.nodes[0].name == "null" and graph.label.startswith("per-inference cost"):
            return max(timing.p50_ms - (timing.node_ms or 0.0), 0.0)
        precision = "int8" if any(n.precision == "int8" for n in graph.nodes) else "fp32"
        null = null_graph(precision)
        entry = self.table.entries.get(null.key())
        if entry is None:  # measured on first use, before any layer (see latencies())
            return 0.0
        return entry.p50_ms

    def _artifact(self, build: Any, graph: OpGraph, path: Path) -> Artifact:
        from edgecompress.exporters.conversion import native_stderr_captured

        try:
            with native_stderr_captured(self.ui):  # the LiteRT builder's calibration pass logs to fd 2
                written = Path(build(graph, path))
        except ValueError as exc:
            raise EdgeCompressError(
                f"latency model: cannot build {graph.label or graph.key()}: {exc}"
            ) from exc
        files = [written] + ([written.with_suffix(".bin")] if written.suffix == ".xml" else [])
        precision = "int8" if any(n.precision == "int8" for n in graph.nodes) else "fp32"
        return Artifact(
            name=graph.key(),
            format="tflite" if self.runtime == "litert" else "openvino",
            runtime=self.runtime,
            precision=precision,
            path=written,
            files=files,
            size_bytes=sum(f.stat().st_size for f in files),
            input_shape=list(graph.input_shape),
            layout="NHWC",
            inference_precision="f32" if self.runtime == "openvino" else None,
        )

    def _check_facts(self, result: Any) -> None:
        """The measuring process must see the runtime version and CPU the table is keyed by."""
        key = self.table.key
        seen = result.runtime_versions.get(self.runtime)
        if seen is not None and seen != key.runtime_version:
            raise DeviceError(
                f"{self.device.name}: the {self.runtime} that measured ({seen}) is not the one the latency table "
                f"is keyed by ({key.runtime_version}); two installs of it on one device?"
            )


def cached_tables(device: str, root: Path | None = None) -> list[Path]:
    """The latency tables cached for a device (every runtime, version and thread count)."""
    from edgecompress.latency.table import cache_root

    folder = (root or cache_root()) / "latency" / device
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def remove_tables(device: str, root: Path | None = None) -> int:
    """Delete a device's cached tables; returns how many there were."""
    paths = cached_tables(device, root)
    for p in paths:
        p.unlink(missing_ok=True)
    return len(paths)
