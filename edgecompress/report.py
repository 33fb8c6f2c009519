"""The build report: a pydantic model (report.json is canonical) and its Markdown rendering."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from edgecompress.deployability import Deployability, render
from edgecompress.exporters.parity import ParityResult as Parity
from edgecompress.exporters.sparsity_check import ArtifactSparsity
from edgecompress.precision import PrecisionPlan
from edgecompress.profiling import Measurements
from edgecompress.report_sparsity import render_sparsity


class Step(BaseModel):
    """The model after one step of the recipe (the first step is the model as loaded)."""

    model_config = ConfigDict(frozen=True)
    name: str = Field(description="'baseline' for the loaded model, else '<index>:<stage type>'.")
    stage_type: str | None
    test_accuracy: float
    val_accuracy: float
    params: int
    macs: int
    seconds: float = Field(description="Wall time of the stage.")
    notes: dict[str, Any] = Field(
        default_factory=dict, description="What the stage recorded (e.g. channels removed)."
    )
    images: int = Field(
        default=0,
        description="Training examples the stage's training loops went through, every epoch counted.",
    )
    resumed: bool = Field(
        default=False,
        description="Loaded from a stage checkpoint (`build --resume`): seconds and images are those of the "
        "build that ran the stage.",
    )

    @computed_field(description="Training throughput over the stage's whole wall time (None: no training).")
    @property
    def images_per_second(self) -> float | None:
        return self.images / self.seconds if self.images and self.seconds > 0 else None


#: How the artifacts table marks artifacts the recipe did not ask for.
ROLE_LABELS = {
    "fp32-twin": " (fp32 twin)",
    "unpruned-reference": " (unpruned reference)",
    "dense-reference": " (dense reference)",
}
#: Roles of artifacts exported from another model than the build's (the model before a prune stage).
REFERENCE_ROLES = ("unpruned-reference", "dense-reference")
#: Notes kept for report.json and resuming only (machine data).
HIDDEN_NOTES = ("sparsity_plan",)


class DeviceStatus(BaseModel):
    """A device of the recipe, how it is reached, and whether its measurements came back."""

    model_config = ConfigDict(frozen=True)
    name: str
    description: str
    runner: str
    host: str | None = Field(default=None, description="ssh: the alias or user@host[:port] of the profile.")
    error: str | None = Field(default=None, description="Why the device failed; its results are left out.")


class DeviceParity(BaseModel):
    """The artifact run on the device over the test split, against the same artifact run here."""

    model_config = ConfigDict(frozen=True)
    n: int
    agreement: float = Field(description="Share of images whose top-1 on the device equals the local run's.")
    max_abs_diff: float = Field(description="Largest absolute output difference to the local run.")
    accuracy: float = Field(description="Top-1 accuracy on the device against the labels.")
    execution_precision: str = ""


class ArtifactResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    format: str
    runtime: str
    precision: str
    role: Literal["export", "fp32-twin", "unpruned-reference", "dense-reference"] = Field(
        default="export",
        description="'fp32-twin': an fp32 export the recipe did not ask for, made to measure its int8 speedup; "
        "'unpruned-reference': the model before a latency-budget prune stage, exported as the budget's export "
        "(the speedup the budget asks for is over it); 'dense-reference': the model before a pattern-sparsity "
        "prune stage, exported as each export (what the zeros buy is measured against it).",
    )
    files: list[str] = Field(description="Paths relative to the output directory.")
    size_bytes: int
    gzip_bytes: int | None = Field(default=None, description="The files compressed by gzip -9, summed.")
    zstd_bytes: int | None = Field(default=None, description="The files compressed by zstd -19, summed.")
    sparsity: ArtifactSparsity | None = Field(
        default=None,
        description="A sparse model's artifact: its weights read back from the file, per sparse layer.",
    )
    parity: Parity
    measurements: dict[str, Measurements] = Field(
        default_factory=dict, description="Device name -> measurements."
    )
    device_parity: dict[str, DeviceParity] = Field(
        default_factory=dict,
        description="Device name -> the artifact's outputs there against its local run (profile.parity_on_device).",
    )
    requested_precision: str | None = Field(
        default=None, description="The recipe's precision when it differs from what was exported (auto)."
    )
    divergent_layers: list[str] = Field(
        default_factory=list,
        description="int8 parity under the threshold: the layers where the runtime's tensors depart from the "
        "torch graph's by more than rounding, earliest first.",
    )
    notes: dict[str, str] = Field(
        default_factory=dict,
        description="What the exporter says of the file (its sidecar's notes): how int8 was made, a race "
        "between candidates, fp16 weights, sparse encoding.",
    )


class CrossRuntime(BaseModel):
    """Two artifacts of the same precision on different runtimes, compared with each other."""

    model_config = ConfigDict(frozen=True)
    a: str
    b: str
    agreement: float = Field(description="Share of test images where both give the same top-1 class.")


class GateResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    gate: str
    subject: str = Field(description="What was checked, e.g. 'tflite-fp32' or 'desktop/openvino-fp32'.")
    limit: float
    value: float | None = Field(description="None: nothing to judge (see note).")
    passed: bool
    note: str = Field(default="", description="What the value is (e.g. 'measured (rapl)'), or why none.")
    artifacts: list[str] = Field(
        default_factory=list, description="The artifacts the gate judges (two for a cross-runtime pair)."
    )
    device: str | None = Field(default=None, description="The device it judges them on; None: every device.")

    @property
    def message(self) -> str:
        if self.value is None:
            return f"{self.gate} [{self.subject}]: {self.note} (limit {self.limit:.4g}) FAILED"
        verdict = "ok" if self.passed else f"FAILED by {abs(self.value - self.limit):.4g}"
        note = f" ({self.note})" if self.note else ""
        return f"{self.gate} [{self.subject}]: {self.value:.4g}{note} (limit {self.limit:.4g}) {verdict}"


class PrecropReference(BaseModel):
    """A precrop before `train` against the unpruned model trained by the same recipe: the build's baseline
    is untrained, so only this says what cropping cost."""

    model_config = ConfigDict(frozen=True)
    source: str = Field(
        description="'built alongside' (the recipe's stages without the precrop, same seed and data, not "
        "exported) or the `reference:` file, evaluated on this build's splits."
    )
    test_accuracy: float
    val_accuracy: float
    macs: int
    params: int
    pruned_step: str = Field(description="The pruned final float model's step (the last before quantize).")
    pruned_test_accuracy: float
    accuracy_delta_pt: float = Field(
        description="The accuracy cost of cropping: pruned_test_accuracy minus the reference's test accuracy, "
        "in points (negative: cropping lost accuracy)."
    )

    def describe(self) -> str:
        return (
            f"**Cost of cropping before training**: {self.pruned_step} scores {self.pruned_test_accuracy:.4f} "
            f"test accuracy, {self.accuracy_delta_pt:+.2f} pt vs the unpruned model trained by the same recipe "
            f"({self.source}: test {self.test_accuracy:.4f}, val {self.val_accuracy:.4f}, {self.macs:,} MACs, "
            f"{self.params:,} params)."
        )


class Report(BaseModel):
    model_config = ConfigDict(frozen=True)
    edgecompress_version: str
    recipe_name: str
    recipe_hash: str
    created: str
    seed: int
    framework: str
    machine: dict[str, Any]
    versions: dict[str, str]
    data: dict[str, Any]
    steps: list[Step]
    reference_step: str = Field(
        description="The step accuracy drops are measured from: the model as it entered "
        "the first compressing stage (or the last step when no stage compresses)."
    )
    artifacts: list[ArtifactResult]
    cross_runtime: list[CrossRuntime] = Field(default_factory=list)
    sparsity_lint: list[str] = Field(
        default_factory=list,
        description="Pattern sparsity: per export and device, whether the runtime has kernels that can turn "
        "these zeros into speed or they buy size only (from the runtimes' published kernels, before training).",
    )
    deployability: list[Deployability] = Field(
        default_factory=list,
        description="Each int8 artifact against the fp32 export of the same model, per device.",
    )
    precision_plans: list[PrecisionPlan] = Field(
        default_factory=list,
        description="The precision plan of every int8/auto export: the form of each op and the measurements "
        "that chose it.",
    )
    precrop_reference: PrecropReference | None = Field(
        default=None,
        description="A precrop before `train`: the unpruned model trained by the same recipe, and the "
        "accuracy cost of cropping measured against it.",
    )
    gates: list[GateResult]
    devices: list[DeviceStatus] = Field(
        default_factory=list, description="The recipe's devices; a failed one keeps its error here."
    )
    wall_seconds: float
    phase_seconds: dict[str, float] = Field(
        default_factory=dict, description="Wall time of the build's phases: 'stages', 'export', 'profile'."
    )

    @property
    def reference(self) -> Step:
        return next(s for s in self.steps if s.name == self.reference_step)

    @property
    def phase_summary(self) -> str:
        """'stages 40.1 s, export 8.0 s, profile 5.2 s' ('' in a report written before phases were timed)."""
        return ", ".join(f"{k} {v:.1f} s" for k, v in self.phase_seconds.items())

    @property
    def failed_gates(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]

    @property
    def failed_devices(self) -> list[DeviceStatus]:
        return [d for d in self.devices if d.error]

    def to_markdown(self) -> str:
        """The report as a person reads it; every number comes from the JSON model."""
        ref = self.reference
        out = [
            f"# edgecompress report: {self.recipe_name}",
            "",
            f"- created {self.created}, edgecompress {self.edgecompress_version}, seed {self.seed}, "
            f"recipe sha256 `{self.recipe_hash[:16]}`",
            f"- machine: {self.machine.get('cpu_model', '?')} ({self.machine.get('cores', '?')} cores, "
            f"{self.machine.get('arch', '?')}; {', '.join(self.machine.get('isa_flags', [])) or 'no ISA flags read'}), "
            f"python {self.machine.get('python', '?')}",
            f"- data: {self.data.get('dataset')} — train {self.data.get('train')}, val {self.data.get('val')}, "
            f"test {self.data.get('test')}, {self.data.get('num_classes')} classes, layout {self.data.get('layout')}",
            f"- build wall time {self.wall_seconds:.1f} s"
            + (f" ({self.phase_summary})" if self.phase_seconds else ""),
            "",
            "## What each step bought",
            "",
            "| step | test acc | Δ vs reference | MACs | vs reference | params | time (s) | images/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in self.steps:
            labels = (" (reference)" if s.name == ref.name else "") + (" (resumed)" if s.resumed else "")
            out.append(
                f"| {s.name}{labels} | {s.test_accuracy:.4f} | "
                f"{(s.test_accuracy - ref.test_accuracy) * 100:+.2f} pt | {s.macs:,} | "
                f"{_fewer(ref.macs, s.macs)} | {s.params:,} | {s.seconds:.1f} | {rate(s.images_per_second)} |"
            )
        if any(s.resumed for s in self.steps):
            out += [
                "",
                "Resumed steps were loaded from stage checkpoints; their times are those of the build that ran them.",
            ]
        for s in self.steps:
            if s.notes:
                out += ["", f"### {s.name}", ""]
                for k, v in s.notes.items():
                    if k in HIDDEN_NOTES:
                        continue
                    if (
                        isinstance(v, dict)
                        and v
                        and all(isinstance(x, list) and len(x) == 2 for x in v.values())
                    ):
                        out.append(
                            f"- **{k}** (before → after): "
                            + ", ".join(f"{n} {a}→{b}" for n, (a, b) in v.items())
                        )
                    elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
                        columns = list(dict.fromkeys(c for row in v for c in row))  # e.g. latency_budgets
                        out += [
                            f"- **{k}**:",
                            "",
                            "| " + " | ".join(c.replace("_", " ") for c in columns) + " |",
                            "|" + "---|" * len(columns),
                            *("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in v),
                            "",
                        ]
                    else:
                        out.append(f"- **{k}**: {_short(v)}")
        if self.precrop_reference is not None:
            out += ["", self.precrop_reference.describe()]
        out += [
            "",
            "## Artifacts (run on their own runtimes)",
            "",
            "| artifact | runtime | computes in | size (KiB) | test acc | top-1 agreement | max abs diff |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for a in self.artifacts:
            out.append(
                f"| {a.name}{ROLE_LABELS.get(a.role, '')} | {a.runtime} | {a.parity.execution_precision} | {a.size_bytes / 1024:.1f} | {a.parity.accuracy:.4f} | "
                f"{a.parity.agreement:.4f} | {a.parity.max_abs_diff:.2e} |"
            )
        for a in self.artifacts:
            if a.divergent_layers:
                out += ["", f"**{a.name}** departs from its torch graph at: " + "; ".join(a.divergent_layers)]
        noted = [(a.name, k, v) for a in self.artifacts for k, v in a.notes.items()]
        if noted:
            out += ["", "What the exporters say of each file:", ""]
            out += [f"- **{name}**, {k}: {_short(v)}" for name, k, v in noted]
        if self.cross_runtime:
            out += [
                "",
                "Same precision, different runtimes (top-1 agreement on the test split): "
                + "; ".join(f"{c.a} vs {c.b}: {c.agreement:.4f}" for c in self.cross_runtime),
            ]
        parity_rows = [(a, d, p) for a in self.artifacts for d, p in a.device_parity.items()]
        if parity_rows:
            out += [
                "",
                "## Parity on the device (the test split run there, against the same artifact run here)",
                "",
                "| device | artifact | images | top-1 agreement | max abs diff | accuracy there |",
                "|---|---|---:|---:|---:|---:|",
            ]
            out += [
                f"| {d} | {a.name} | {p.n} | {p.agreement:.4f} | {p.max_abs_diff:.2e} | {p.accuracy:.4f} |"
                for a, d, p in parity_rows
            ]
        if self.devices:
            out += ["", "## Devices", "", "| device | connection | status |", "|---|---|---|"]
            for d in self.devices:
                reach = d.runner + (f" {d.host}" if d.host else "")
                status = f"**failed**: {d.error.splitlines()[0]}" if d.error else "measured"
                out.append(f"| {d.name} ({d.description}) | {reach} | {status} |")
        rows = [(a, d, m) for a in self.artifacts for d, m in a.measurements.items()]
        if rows:
            out += [
                "",
                "## Latency and memory",
                "",
                "Timed after load, first inference and warm-up; batch 1; peak RSS of a fresh process that "
                "loaded and ran the artifact. With several rounds (fresh processes, interleaved across the "
                "artifacts) p50 is the lowest of the rounds' p50s (interference only slows a run), shown with "
                "the rounds' range; the other columns are those of that round.",
                "",
                "| device | artifact | threads | p50 ms (rounds) | p90 ms | p99 ms | mean ± std ms | load ms | first ms | "
                "peak RSS MiB | energy mJ / inference |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for a, d, m in rows:
                lat = m.latency
                energy = f"{m.energy.mj_per_inference:.3f} {m.energy.label}" if m.energy is not None else "—"
                if m.energy is not None and m.energy.spread_mj is not None:
                    energy += f" ({m.energy.spread_mj[0]:.3f}–{m.energy.spread_mj[1]:.3f})"
                low, high = lat.spread_ms
                rounds = (
                    f" ({low:.3f}–{high:.3f}, {len(lat.rounds_p50_ms)})" if len(lat.rounds_p50_ms) > 1 else ""
                )
                out.append(
                    f"| {d} | {a.name} | {m.threads} | {lat.p50_ms:.3f}{rounds} | {lat.p90_ms:.3f} | {lat.p99_ms:.3f} | "
                    f"{lat.mean_ms:.3f} ± {lat.std_ms:.3f} | {m.load_ms:.1f} | {m.first_inference_ms:.2f} | "
                    f"{m.rss_text} | {energy} |"
                )
            for a, d, m in rows:
                if m.thermal is not None and m.thermal.throttled:
                    out.append(
                        f"\n**{d}/{a.name} throttled** during its measurement ({m.thermal.note}): its latency "
                        "and energy are those of a hot device; profile.cooldown_seconds gives it time between rounds."
                    )
            for ref in (a for a in self.artifacts if a.role == "unpruned-reference"):
                pruned = next((a for a in self.artifacts if f"{a.name}-unpruned" == ref.name), None)
                for device, m in ref.measurements.items():
                    if pruned is not None and device in pruned.measurements:
                        ms = pruned.measurements[device].latency.p50_ms
                        out.append(
                            f"\nLatency budget on {device}/{pruned.name}: {m.latency.p50_ms / ms:.2f}x as fast as the "
                            f"unpruned model's export ({ms:.3f} vs {m.latency.p50_ms:.3f} ms; the budget is in the "
                            "prune step's notes)."
                        )
            out.append("")
            for device, m in {d: m for _, d, m in rows}.items():  # each device's CPU and runtimes
                versions = sorted({f"{x.runtime} {x.runtime_version}" for _, d, x in rows if d == device})
                out.append(
                    f"{device}: CPU {m.cpu_model}; ISA flags: {', '.join(m.isa_flags) or 'none found'}. "
                    f"Runtimes: {', '.join(versions)}.  "
                )
            native = sorted({f"{d} ({m.tool})" for _, d, m in rows if m.tool})
            if native:
                out.append(
                    f"Measured by the runtime's own benchmark tool (connection.mode: native) on {', '.join(native)}: "
                    "no per-op profile, p90/p99 are the tool's p95/max, memory only where the tool reports it, "
                    "energy estimated."
                )
            out += render_op_profiles([(d, a.name, m) for a, d, m in rows])
        out += render_sparsity(self)
        if self.deployability:
            out += ["", "## Is int8 faster? (measured, with causes found by inspection)"]
            for d in self.deployability:
                out += ["", *render(d)]
        if self.precision_plans:
            out += ["", "## Precision plans (measured on the device)"]
            for plan in self.precision_plans:
                out += ["", *render_plan(plan)]
        if self.gates:
            out += ["", "## Gates", ""] + [f"- {'✅' if g.passed else '❌'} {g.message}" for g in self.gates]
        out += ["", "## Versions", ""] + [f"- {k} {v}" for k, v in sorted(self.versions.items())]
        return "\n".join(out) + "\n"


def render_op_profiles(rows: list[tuple[str, str, Measurements]], *, top: int = 10) -> list[str]:
    """Markdown lines: the `top` slowest ops of every (device, artifact, measurements) that has an op
    profile; an untimed inventory is labelled as such and shows no times. Empty when none has one."""
    out: list[str] = []
    for device, name, m in rows:
        profile = m.op_profile
        if profile is None:
            continue
        if not out:
            out += ["", "## Per-op profile (the runtime's own profiler)"]
        out += ["", f"### {device} / {name}", ""]
        if profile.error:
            out.append(f"Per-op profile unavailable: {profile.error}")
            continue
        if not profile.timed:
            out += [
                f"{profile.note or 'Op inventory without timings.'} ({profile.source}; {len(profile.ops)} ops)",
                "",
                "| # | op | type | runs in | precision | dtypes in → out |",
                "|---:|---|---|---|---|---|",
            ]
            for i, op in enumerate(profile.top(top), 1):
                out.append(
                    f"| {i} | {op.name} | {op.type} | {op.exec_type} | {op.precision or '—'} | "
                    f"{', '.join(op.input_dtypes) or '—'} → {', '.join(op.output_dtypes) or '—'} |"
                )
            continue
        threads = f"{profile.threads} threads" if profile.threads else "runtime's default threads"
        invoke = f", whole inference {profile.invoke_ms:.3f} ms" if profile.invoke_ms is not None else ""
        out += [
            f"{profile.source}: mean of {profile.runs} inferences, {threads}; ops total "
            f"{profile.total_ms or 0:.3f} ms{invoke}.",
            "",
            "| # | op | type | exec | precision | ms | share |",
            "|---:|---|---|---|---|---:|---:|",
        ]
        for i, op in enumerate(profile.top(top), 1):
            out.append(
                f"| {i} | {op.name} | {op.type} | {op.exec_type} | {op.precision or '—'} | "
                f"{op.time_ms or 0:.4f} | {(op.share or 0) * 100:.1f}% |"
            )
    return out


def render_plan(plan: PrecisionPlan, *, top: int = 40) -> list[str]:
    """Markdown lines for one precision plan: the whole-model race, then each op's form and why."""
    out = [
        f"### {plan.artifact} ({plan.runtime} on {plan.device}, precision {plan.precision}, {plan.source})",
        "",
    ]
    if plan.candidates:
        best = min(c.p50_ms for c in plan.candidates)
        out.append(
            "Whole model, fastest of interleaved rounds: "
            + "; ".join(
                f"**{c.name}** {c.p50_ms:.3f} ms"
                if c.name == plan.chosen
                else f"{c.name} {c.p50_ms:.3f} ms ({c.p50_ms / best:.2f}x)"
                for c in plan.candidates
            )
            + f". Chosen: **{plan.chosen}**."
        )
    if plan.val_accuracy:
        out.append("Validation accuracy: " + ", ".join(f"{k} {v:.4g}" for k, v in plan.val_accuracy.items()))
    for note in plan.notes:
        out.append(f"- {note}")
    chosen = [c for c in plan.choices if c.times_ms or c.form != "int8"]
    if chosen:
        out += ["", "| op | module | form | measured per form (ms) | why |", "|---|---|---|---|---|"]
        for c in chosen[:top]:
            times = ", ".join(f"{f} {t:.4f}" for f, t in c.times_ms.items()) or "—"
            out.append(f"| {c.node} ({c.kind}) | {c.module or '—'} | {c.form} | {times} | {c.reason} |")
        if len(chosen) > top:
            out.append(f"| … {len(chosen) - top} more in report.json | | | | |")
    return out


def rate(images_per_second: float | None) -> str:
    """Images per second as a table cell: '—' for a step without training."""
    return "—" if images_per_second is None else f"{images_per_second:,.0f}"


def _fewer(reference: int, value: int) -> str:
    return "—" if reference == value else f"{reference / max(value, 1):.2f}x fewer"


def _short(value: Any, limit: int = 600) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
