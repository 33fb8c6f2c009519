"""Per-export precision plans: which form each op of the quantized model takes on one runtime and device.

An int8 or `auto` export does not lower the quantized graph as it is. For each op the planner measures the
forms that runtime can run (`stages/quantize/torch_derive.py`: int8, int8 decomposed into ops the runtime's
fast path takes, int8 depthwise for average pools, float between a dequantize and a quantize) with the
device's latency model, and picks:

- `precision: int8`: every op with a fast int8 form stays int8 in its fastest int8 form; an op whose int8
  kernels are all slower than float by more than `FLOAT_MARGIN` (e.g. LiteRT's int8 GELU and average pool,
  outside XNNPACK) runs in float alone, with a dequantize before and a quantize after. Convolutions and
  linear layers always stay int8.
- `precision: auto`: every op the fastest form, float included (int8 wins ties within `FLOAT_MARGIN`:
  smaller and as fast); then, when the recipe gates the accuracy drop, the layers whose int8 costs the
  most validation accuracy go back to float until the drop is within the gate (per-layer sensitivity).

OpenVINO decides the precision of activations itself; its plans add NNCF's quantizer placement as a
candidate (no FakeQuantize where only an activation reads a tensor, none around a squeeze-excitation
gate). Every plan is then checked whole: the planned model, the all-int8 one and (for `auto`) the fp32 one
and the int8 export's plan are exported and timed on the device in interleaved rounds, one race for all the
int8/auto exports of a format and device, and the fastest wins (for `int8`, among the int8 ones). The report lists each op's choice with the measured times behind it, and the whole-model race.

A plan is written to `recipe.lock.yaml`; `plan: FILE` on an export reads it back instead of measuring, so a
build reproduces on another CPU and a test does not depend on the one it runs on.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from edgecompress.console import UI
from edgecompress.entries import one_line
from edgecompress.errors import DeviceError, RecipeError
from edgecompress.latency.graph import Node, OpGraph
from edgecompress.registry import EXPORTERS, RUNNERS, STAGES, import_object
from edgecompress.specs import DeviceProfile

#: An int8 form is kept unless float is faster by more than this (int8 is smaller, and runs agree better).
FLOAT_MARGIN = 0.10
#: Forms each runtime can run, in the order they are preferred on a tie.
RUNTIME_FORMS = {
    "litert": ("int8", "int8-decomposed", "int8-depthwise", "float"),
    "openvino": ("int8", "float"),
}
#: Op kinds whose plain `int8` form the TFLite converter lowers to float ops anyway (no int8 TFLite op).
LITERT_NO_NATIVE_INT8 = ("hardsigmoid", "silu", "layer_norm")
#: Op kinds that always stay int8 under `precision: int8` (the weights are what int8 is asked for).
WEIGHT_KINDS = ("conv", "linear")
CANDIDATE_RUNS = 100
#: Interleaved rounds of a race (at least; more when the recipe's profile asks for more).
RACE_ROUNDS = 5


@dataclass(frozen=True)
class QuantizedOp:
    """One computing op of a quantized model an export plan can choose a form for (a plan backend's
    `plan_ops` lists them)."""

    node: str  # the plan's key: fx node name of a converted PT2E graph; a Keras LayerOp's node
    kind: str  # conv, linear, hardswish, add, ...
    module: str  # the model's module path / Keras layer it came from ('' at top level)
    int8: bool  # whether its output is quantized in the quantized model
    forms: tuple[str, ...]  # forms it can take


class OpChoice(BaseModel):
    """One op's form in a plan, and why."""

    model_config = ConfigDict(frozen=True)
    node: str = Field(description="The op's node in the quantized graph (the plan's key).")
    kind: str
    module: str = Field(description="Module path it comes from ('' at top level).")
    form: str
    times_ms: dict[str, float] = Field(
        default_factory=dict, description="Measured latency of each form on the device (latency model)."
    )
    reason: str = ""


class Candidate(BaseModel):
    """A whole model timed in the planner's race."""

    model_config = ConfigDict(frozen=True)
    name: str = Field(description="plan, all-int8, openvino-placement, fp32")
    p50_ms: float
    rounds_p50_ms: list[float]


class PrecisionPlan(BaseModel):
    """What an int8 / auto export runs: a form per op, for one runtime on one device."""

    artifact: str
    format: str
    runtime: str
    device: str
    precision: Literal["int8", "auto"]
    ops: dict[str, str] = Field(description="node -> form, for every op not in its plain int8 form.")
    choices: list[OpChoice] = Field(default_factory=list)
    candidates: list[Candidate] = Field(default_factory=list)
    chosen: str = Field(default="plan", description="The candidate that won the whole-model race.")
    source: str = Field(default="measured", description="'measured', or 'pinned (<file>)'.")
    val_accuracy: dict[str, float] = Field(
        default_factory=dict, description="Validation accuracy of the float model and of the plan."
    )
    notes: list[str] = Field(default_factory=list)

    @property
    def float_model(self) -> bool:
        """Whether the fp32 model won (an `auto` export whose every int8 form was slower)."""
        return self.chosen == "fp32"

    def summary(self) -> str:
        forms: dict[str, int] = {}
        for form in self.ops.values():
            forms[form] = forms.get(form, 0) + 1
        shown = ", ".join(f"{n} {f}" for f, n in sorted(forms.items())) or "every op int8"
        race = "; ".join(f"{c.name} {c.p50_ms:.3f} ms" for c in self.candidates)
        return f"{self.artifact} on {self.device}: {shown}; chosen {self.chosen}" + (
            f" ({race})" if race else ""
        )


def form_graph(layer: Any, form: str, runtime: str) -> OpGraph | None:
    """The one-op graph whose latency is the cost of `layer` (a LayerOp) in `form` on `runtime`."""
    if form == "int8":
        if runtime == "litert" and layer.kind in LITERT_NO_NATIVE_INT8:
            return None
        return layer.graph("int8")
    if form == "int8-decomposed":
        return layer.graph("int8", form="decomposed") if layer.kind == "hardswish" else layer.graph("int8")
    if form == "int8-depthwise":
        attrs = dict(layer.attrs)
        channels = layer.input_shape[-1]
        node = Node.make(
            layer.node,
            "conv2d",
            precision="int8",
            out_channels=channels,
            kernel=attrs["kernel"],
            stride=attrs["stride"],
            padding=attrs["padding"],
            groups=channels,
        )
        return OpGraph(
            layer.input_shape, (node,), label=f"avg_pool2d as depthwise {list(layer.input_shape)} int8"
        )
    if form == "float":
        return layer.graph("fp32", boundaries="int8")
    return None


def candidate_forms(kind: str, forms: tuple[str, ...], runtime: str, precision: str) -> list[str]:
    """The forms of an op (of `kind`, able to take `forms`) a plan of `precision` weighs on `runtime`."""
    out = []
    for form in forms:
        if form not in RUNTIME_FORMS[runtime]:
            continue
        if precision == "int8" and form == "float" and kind in WEIGHT_KINDS:
            continue
        if runtime == "openvino" and form == "float" and kind not in WEIGHT_KINDS:
            continue  # OpenVINO picks the precision of ops without weights itself
        out.append(form)
    return out


def pick_form(measured: dict[str, float]) -> tuple[str, str]:
    """The form a plan gives an op from its forms' measured latencies (ms), and why: the fastest int8 form,
    or float (with its dequantize/quantize) when it is faster than that by more than FLOAT_MARGIN."""
    int8_forms = {f: t for f, t in measured.items() if f != "float"}
    best_int8 = min(int8_forms, key=int8_forms.__getitem__) if int8_forms else None
    form = best_int8 or "float"
    reason = f"fastest int8 form ({int8_forms[best_int8] * 1000:.1f} us)" if best_int8 else "no int8 form"
    if (
        "float" in measured
        and best_int8 is not None
        and measured["float"] * (1 + FLOAT_MARGIN) < int8_forms[best_int8]
    ):
        form = "float"
        reason = (
            f"float with its dequantize/quantize {measured['float'] * 1000:.1f} us beats "
            f"{best_int8} {int8_forms[best_int8] * 1000:.1f} us"
        )
    return form, reason


def planned_graphs(layers: list[Any], runtime: str, model: Any, forms_of: Any) -> list[OpGraph]:
    """Each layer (a LayerOp of the float model) as the one-op graph of the form an int8 export's precision
    plan gives it on `runtime` (`pick_form` over the latency model `model`'s measurements; `forms_of(kind)`:
    the forms an op of that kind can take): what a latency-budget prediction of an int8 export sums, so that
    it predicts the artifact the build ships (MobileNetV3's all-int8 hardswish: 3.3x the planned model's
    time on LiteRT)."""
    options: list[dict[str, OpGraph]] = []
    for layer in layers:
        graphs = {}
        for form in candidate_forms(layer.kind, forms_of(layer.kind), runtime, "int8"):
            graph = form_graph(layer, form, runtime)
            if graph is not None:
                graphs[form] = graph
        options.append(graphs or {"int8": layer.graph("int8")})
    choosing = [g for o in options if len(o) > 1 for g in o.values()]
    times = dict(zip((g.key() for g in choosing), model.latencies(choosing, what="op forms"), strict=True))
    out = []
    for o in options:
        if len(o) == 1:
            out.append(next(iter(o.values())))
        else:
            form, _ = pick_form({f: times[g.key()] for f, g in o.items()})
            out.append(o[form])
    return out


class Planner:
    """Makes the precision plans of a build (one per int8/auto export), measuring on its devices."""

    def __init__(
        self,
        ctx: Any,
        *,
        quantized: Any,
        float_model: Any,
        devices: list[DeviceProfile],
        ui: UI,
        latency_models: dict[tuple[str, str], Any] | None = None,
    ) -> None:
        self.ctx = ctx
        self.quantized = quantized
        self.float_model = float_model
        self.devices = {d.name: d for d in devices}
        self.ui = ui
        self.backend = import_object(STAGES.get("quantize").plan_backends[ctx.framework])
        self.ops = self.backend.plan_ops(quantized)
        self._layers: dict[str, Any] | None = None
        #: (device, runtime) -> LatencyModel; a caller's dict is shared (its tables loaded once)
        self._models: dict[tuple[str, str], Any] = {} if latency_models is None else latency_models
        self.plans: list[PrecisionPlan] = []
        #: Artifacts exported for the races, by what they are (format, options, ops or fp32), kept until
        #: `close()` so that the winner becomes the build's export without a second conversion.
        self._exported: dict[str, Any] = {}
        self._workdir: Path | None = None
        #: Per-op plans before their race, by artifact name; race timings by format, options and device.
        self._unraced_plans: dict[str, PrecisionPlan] = {}
        self._races: dict[str, dict[str, tuple[float, list[float]]]] = {}
        self._race_pools: dict[str, dict[str, dict[str, str] | None]] = {}
        self._placement: dict[str, str] | None = None

    def close(self) -> None:
        """Remove the race's artifacts."""
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    @staticmethod
    def _artifact_key(spec: Any, ops: dict[str, str] | None) -> str:
        what = "fp32" if ops is None else ",".join(f"{n}={f}" for n, f in sorted(ops.items()))
        return f"{spec.format}|{sorted(spec.options.items())}|{sorted(spec.runtime_options.items())}|{what}"

    def exported(self, spec: Any, ops: dict[str, str] | None) -> Any:
        """The artifact the planner already exported for `spec` with `ops` (None: the fp32 model), or None."""
        return self._exported.get(self._artifact_key(spec, ops))

    def export_candidate(self, spec: Any, ops: dict[str, str] | None) -> Any:
        """`spec` exported with `ops` (None: the fp32 model), once: a later call returns the same artifact."""
        key = self._artifact_key(spec, ops)
        if key not in self._exported:
            if self._workdir is None:
                self._workdir = Path(tempfile.mkdtemp(prefix="edgecompress-plan-"))
            number = len(self._exported)
            source = self.float_model if ops is None else self.derive(ops)
            candidate = spec.model_copy(
                update={
                    "precision": "fp32" if ops is None else "int8",
                    "name": f"candidate-{number}",
                    "plan": None,
                }
            )
            quiet = UI(verbosity=0, console=self.ui.console)
            original_ui, self.ctx.ui = self.ctx.ui, quiet
            try:
                self._exported[key] = EXPORTERS.get(spec.format)().export(
                    source, candidate, self.ctx, self._workdir / str(number)
                )
            finally:
                self.ctx.ui = original_ui
        return self._exported[key]

    @property
    def layers(self) -> dict[str, Any]:
        if self._layers is None:
            self._layers = self.backend.plan_layers(self.quantized, self.ctx.input_shape)
        return self._layers

    def latency_model(self, device: DeviceProfile, runtime: str) -> Any:
        from edgecompress.latency.model import LatencyModel

        key = (device.name, runtime)
        if key not in self._models:
            threads = self.ctx.recipe.profile.threads or device.threads
            self._models[key] = LatencyModel(
                device, runtime, threads=threads, ui=self.ui, recalibrate=self.ctx.recalibrate
            )
        return self._models[key]

    def derive(self, ops: dict[str, str]) -> Any:
        return self.backend.derive(self.quantized, ops, input_shape=self.ctx.input_shape)

    # -------------------------------------------------------------------------------------- planning

    def plan(self, spec: Any, *, race: bool = True) -> PrecisionPlan:
        """The plan of one int8/auto export (pinned, or made by measurement on its device). `race=False`
        keeps the per-op plan without timing the whole models against each other (the race only ever
        swaps in a faster contender; the budget benchmark skips it for time)."""
        exporter = EXPORTERS.get(spec.format)
        device_name = spec.device or self.ctx.recipe.devices[0]
        if spec.plan:
            plan = self._pinned(spec)
        else:
            device = self.devices.get(device_name)
            if device is None:
                raise RecipeError(
                    f"export {spec.artifact_name}: device '{device_name}' is not in the recipe's devices"
                )
            try:
                plan = (
                    self._measured(spec, exporter.runtime, device)
                    if race
                    else self._unraced(spec, exporter.runtime, device)
                )
            except DeviceError as exc:
                raise DeviceError(
                    f"{exc} — {spec.artifact_name} needs the device to choose its precision plan; pin one "
                    f"made elsewhere with `plan: <recipe.lock.yaml>` on the export"
                ) from exc
        self.plans.append(plan)
        self.ui.info(f"  precision plan {plan.summary()}")
        return plan

    def _pinned(self, spec: Any) -> PrecisionPlan:
        """The plan `spec.plan` (a recipe.lock.yaml) holds for this artifact, checked against this model."""
        path = Path(spec.plan)
        if not path.is_absolute():
            path = self.ctx.recipe_path.parent / path
        try:
            entry = pinned_entry(path, spec.artifact_name)
        except ValueError as exc:
            raise RecipeError(f"export {spec.artifact_name}: {exc}") from None
        plan = PrecisionPlan.model_validate(entry)
        known = {op.node for op in self.ops}
        unknown = sorted(set(plan.ops) - known)
        if unknown:
            raise RecipeError(
                f"export {spec.artifact_name}: plan file {path} names ops this model does not have "
                f"({', '.join(unknown[:4])}); it was made for another model or recipe"
            )
        return plan.model_copy(update={"source": f"pinned ({path})", "artifact": spec.artifact_name})

    def _unraced(self, spec: Any, runtime: str, device: DeviceProfile) -> PrecisionPlan:
        """The plan by per-op measurement, before the whole-model race (memoized per artifact)."""
        if spec.artifact_name not in self._unraced_plans:
            self._unraced_plans[spec.artifact_name] = self._forms_plan(spec, runtime, device)
        return self._unraced_plans[spec.artifact_name]

    def _measured(self, spec: Any, runtime: str, device: DeviceProfile) -> PrecisionPlan:
        return self._race(self._unraced(spec, runtime, device), spec, device)

    def _forms_plan(self, spec: Any, runtime: str, device: DeviceProfile) -> PrecisionPlan:
        precision = spec.precision
        model = self.latency_model(device, runtime)
        choices = self._choose_forms(model, runtime, precision)
        ops = {c.node: c.form for c in choices if c.form != "int8"}
        val = {}
        if precision == "auto":
            ops, val = self._within_accuracy(ops, choices)
            choices = [
                c
                if ops.get(c.node, "int8") == c.form
                else c.model_copy(
                    update={
                        "form": ops.get(c.node, "int8"),
                        "reason": "kept float: its int8 cost validation accuracy beyond gates.max_accuracy_drop",
                    }
                )
                for c in choices
            ]
        return PrecisionPlan(
            artifact=spec.artifact_name,
            format=spec.format,
            runtime=runtime,
            device=device.name,
            precision=precision,
            ops=ops,
            choices=choices,
            val_accuracy=val,
            notes=list(model.notes),
        )

    def _choose_forms(self, model: Any, runtime: str, precision: str) -> list[OpChoice]:
        graphs: dict[tuple[str, str], OpGraph] = {}
        for op in self.ops:
            layer = self.layers.get(op.node)
            if layer is None or not op.int8:
                continue
            for form in candidate_forms(op.kind, op.forms, runtime, precision):
                graph = form_graph(layer, form, runtime)
                if graph is not None:
                    graphs[(op.node, form)] = graph
        # only ops with a choice need measuring
        choosing = {n for n, _ in graphs if sum(1 for m, _ in graphs if m == n) > 1}
        wanted = {k: g for k, g in graphs.items() if k[0] in choosing}
        times = dict(zip(wanted, model.latencies(list(wanted.values()), what="op forms"), strict=True))
        choices = []
        for op in self.ops:
            measured = {form: t for (node, form), t in times.items() if node == op.node}
            if not measured:
                forms = [f for (node, f) in graphs if node == op.node]
                form = forms[0] if forms else ("int8" if op.int8 else "float")
                choices.append(
                    OpChoice(node=op.node, kind=op.kind, module=op.module, form=form, reason="only form")
                )
                continue
            form, reason = pick_form(measured)
            choices.append(
                OpChoice(
                    node=op.node,
                    kind=op.kind,
                    module=op.module,
                    form=form,
                    times_ms={f: round(t, 5) for f, t in measured.items()},
                    reason=reason,
                )
            )
        return choices

    def _within_accuracy(
        self, ops: dict[str, str], choices: list[OpChoice]
    ) -> tuple[dict[str, str], dict[str, float]]:
        """Put the most accuracy-sensitive int8 weight layers back to float until the plan's validation
        accuracy is within the recipe's max_accuracy_drop of the float model's."""
        budget = self.ctx.recipe.gates.max_accuracy_drop
        adapter, val = self.ctx.adapter, self.ctx.data.val
        if len(val) == 0:
            return ops, {}

        reference = adapter.accuracy(self.float_model, val)
        current = adapter.accuracy(self.derive(ops), val)
        scores = {"float model": round(reference, 4), "plan": round(current, 4)}
        if budget is None or reference - current <= budget + 1e-12:
            return ops, scores
        candidates = [c.node for c in choices if c.kind in WEIGHT_KINDS and ops.get(c.node, "int8") == "int8"]
        gains = {}
        for node in candidates:
            gains[node] = adapter.accuracy(self.derive({**ops, node: "float"}), val) - current
        ops = dict(ops)
        for node in sorted(gains, key=lambda n: -gains[n]):
            if reference - current <= budget + 1e-12 or gains[node] <= 0:
                break
            ops[node] = "float"
            current = adapter.accuracy(self.derive(ops), val)
            self.ui.info(f"  {node}: int8 cost accuracy; kept float (plan val accuracy now {current:.4f})")
        scores["plan"] = round(current, 4)
        scores["layers kept float for accuracy"] = float(sum(1 for n in candidates if ops.get(n) == "float"))
        return ops, scores

    # ------------------------------------------------------------------------------------------- race

    def _contenders(self, plan: PrecisionPlan) -> dict[str, dict[str, str] | None]:
        """The whole models a plan races: itself, all-int8, NNCF's placement on OpenVINO, fp32 for auto."""
        contenders: dict[str, dict[str, str] | None] = {"plan": plan.ops, "all-int8": {}}
        if plan.runtime == "openvino":
            if self._placement is None:  # NNCF's placement depends on the graph only
                self._placement = self.backend.openvino_placement(self.quantized)
            placement = self._placement
            contenders["openvino-placement"] = {
                **placement,
                **{n: f for n, f in plan.ops.items() if f == "float"},
            }
        if plan.precision == "auto":
            contenders["fp32"] = None
        return contenders

    def _siblings(self, spec: Any, device: DeviceProfile) -> list[Any]:
        """The recipe's measured int8/auto exports of the same format, options and device as `spec`."""
        return [
            s
            for s in self.ctx.recipe.export
            if s.precision in ("int8", "auto")
            and not s.plan
            and s.format == spec.format
            and s.options == spec.options
            and (s.device or self.ctx.recipe.devices[0]) == device.name
        ]

    def _race(self, plan: PrecisionPlan, spec: Any, device: DeviceProfile) -> PrecisionPlan:
        """Time the planned model against the other contenders on the device; the fastest wins (for int8,
        among the int8 ones).

        One race serves every int8/auto export of the same format, options and device: their contenders
        are timed together in interleaved rounds, so each export picks from the same measurement, and an
        auto export, which also races its int8 sibling's contenders, is never slower than it by a
        measurement's noise (two races of the same models on this 2-core VM read up to 25% apart)."""
        key = self._artifact_key(spec, {}) + f"|{device.name}"
        contenders = self._contenders(plan)
        if plan.precision == "auto":  # every contender of an int8 sibling is a valid auto model too
            for sibling in self._siblings(spec, device):
                if sibling.precision == "int8":
                    int8_plan = self._unraced(sibling, plan.runtime, device)
                    for name, ops in self._contenders(int8_plan).items():
                        contenders.setdefault(f"{sibling.artifact_name} {name}", ops)
        pool = dict(self._race_pools.get(key, {}))  # artifact key -> ops (None: fp32)
        for sibling in self._siblings(spec, device):
            if sibling.artifact_name != spec.artifact_name:
                for ops in self._contenders(self._unraced(sibling, plan.runtime, device)).values():
                    pool.setdefault(self._artifact_key(spec, ops), ops)
        for ops in contenders.values():
            pool.setdefault(self._artifact_key(spec, ops), ops)
        if key not in self._races or set(pool) - set(self._races[key]):
            self._race_pools[key] = pool
            self._races[key] = self._time_pool(pool, spec, device)
        timings = self._races[key]
        candidates: list[Candidate] = []
        seen: set[str] = set()
        for name, ops in contenders.items():
            artifact_key = self._artifact_key(spec, ops)
            if artifact_key in seen or artifact_key not in timings:
                continue
            seen.add(artifact_key)
            timing = timings[artifact_key]
            candidates.append(Candidate(name=name, p50_ms=timing[0], rounds_p50_ms=timing[1]))
        if len(candidates) == 1:  # nothing to race: the plan is the all-int8 model
            return plan.model_copy(update={"chosen": "plan"})
        best = min(candidates, key=lambda c: c.p50_ms)
        ops = plan.ops if best.name == "plan" else (contenders[best.name] or {})
        return plan.model_copy(update={"candidates": candidates, "chosen": best.name, "ops": dict(ops)})

    def _time_pool(
        self, pool: dict[str, dict[str, str] | None], spec: Any, device: DeviceProfile
    ) -> dict[str, tuple[float, list[float]]]:
        """Each distinct contender exported and timed in interleaved rounds: key -> (p50, round p50s)."""
        if len(pool) == 1:
            return {k: (float("nan"), []) for k in pool}
        with self.ui.progress(
            f"precision plan race: exporting {len(pool)} candidates", total=len(pool)
        ) as task:
            artifacts = []
            for ops in pool.values():
                artifacts.append(self.export_candidate(spec, ops))
                task.advance()
        timed = race(artifacts, device, self.ctx, self.ui, what=f"a candidate of {spec.artifact_name}")
        return dict(zip(pool, timed, strict=True))


def race(
    artifacts: list[Any], device: DeviceProfile, ctx: Any, ui: UI, *, what: str
) -> list[tuple[float, list[float]]]:
    """Whole models timed against each other on `device` in interleaved fresh-process rounds (at least
    RACE_ROUNDS, more when the recipe's profile asks for more): (p50 ms, each round's p50) per artifact.
    DeviceError naming `what` when one cannot be timed."""
    runner = RUNNERS.get(device.connection.runner)()
    threads = ctx.recipe.profile.threads or device.threads
    with ui.progress(f"race of {len(artifacts)} candidates on {device.name}", total=None):
        result = runner.run_batch(
            artifacts,
            device,
            runs=CANDIDATE_RUNS,
            warmup_seconds=0.2,
            threads=threads,
            rounds=max(RACE_ROUNDS, ctx.recipe.profile.rounds),
        )
    out = []
    for timing in result.timings:
        if timing.error:
            raise DeviceError(f"{device.name}: could not time {what}: {timing.error}")
        out.append((timing.p50_ms, list(timing.rounds_p50_ms)))
    return out


def pinned_entry(path: Path, artifact: str) -> dict[str, Any]:
    """The plan a recipe.lock.yaml at `path` holds for the export `artifact`; ValueError naming the file when
    it cannot be read or has none (recipe validation and the build both ask)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"plan file {path}: cannot read it ({one_line(exc)})") from None
    plans = (data or {}).get("plans", {}) if isinstance(data, dict) else {}
    entry = plans.get(artifact) if isinstance(plans, dict) else None
    if not isinstance(entry, dict):
        raise ValueError(f"plan file {path} has no plan for it (has: {', '.join(plans) or 'none'})")
    return entry


def lock_entry(plan: PrecisionPlan) -> dict[str, Any]:
    """The plan as recipe.lock.yaml stores it (what `plan: FILE` reads back)."""
    return plan.model_dump(mode="json", exclude={"source"})
