"""report.html: the build report as one self-contained page (inline CSS, inline SVG plots, nothing fetched).

    from edgecompress.report_html import render_html, choose_artifacts
    Path("report.html").write_text(render_html(report), encoding="utf-8")

It opens with the answer a build is run for: per device, the artifact to ship — the fastest (lowest p50
on that device) of the recipe's exports that no failed gate names — why, and the runner-up. Then the
steps, the artifacts side by side on every device, latency charts, the int8 verdicts, per-op charts, the
gates, the devices, the machine and the package versions. Every figure comes from the `Report`; the page
says nothing the report.json does not hold.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecompress.deployability import Deployability
from edgecompress.profiling import Measurements, OpProfile
from edgecompress.report import (
    HIDDEN_NOTES,
    ROLE_LABELS,
    ArtifactResult,
    GateResult,
    Report,
    _fewer,
    _short,
    rate,
)

TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE = "report.html.j2"

#: Bar colours of the charts: the artifact to ship, another that passes, one a gate disqualifies, and an
#: artifact that is measured but not a candidate (an fp32 twin, an unpruned reference).
COLOURS = {"chosen": "#2e7d32", "passes": "#4a78b5", "fails": "#c62828", "other": "#9e9e9e"}


# --- which artifact to ship -------------------------------------------------------------------------------


def gate_names(gate: GateResult, artifact: str, device: str) -> bool:
    """Whether `gate` is about `artifact` on `device`: it judges the artifact (alone, or in a cross-runtime
    pair) on every device, or on this one (latency, energy, parity on the device). A gate about another
    device does not name it here. Reports written before gates named their artifacts are read by subject."""
    if gate.artifacts:
        return artifact in gate.artifacts and gate.device in (None, device)
    subject = gate.subject
    if subject in (artifact, f"{device}/{artifact}", f"{device}/{artifact} vs here"):
        return True
    return " vs " in subject and artifact in subject.split(" vs ")


@dataclass(frozen=True)
class Candidate:
    """An artifact measured on a device, and the failed gates that name it there."""

    artifact: ArtifactResult
    measurements: Measurements
    failed_gates: list[GateResult] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.artifact.name

    @property
    def p50_ms(self) -> float:
        return self.measurements.latency.p50_ms

    @property
    def eligible(self) -> bool:
        """One of the recipe's exports (not a twin or reference made for a figure) that passes its gates."""
        return self.artifact.role == "export" and not self.failed_gates

    def describe(self) -> str:
        """'p50 0.081 ms (rounds 0.081–0.090), accuracy 0.9650 on litert, 12.3 KiB'."""
        low, high = (f"{v:.3f}" for v in self.measurements.latency.spread_ms)
        rounds = f" (rounds {low}–{high})" if high != low else ""
        return (
            f"p50 {self.p50_ms:.3f} ms{rounds}, accuracy {self.artifact.parity.accuracy:.4f} on "
            f"{self.artifact.runtime}, {self.artifact.size_bytes / 1024:.1f} KiB"
        )


@dataclass(frozen=True)
class ShipChoice:
    """The answer for one device: the artifact to ship, the runner-up, and why."""

    device: str
    description: str = ""
    error: str | None = None
    #: Every artifact measured on the device, fastest first.
    measured: list[Candidate] = field(default_factory=list)

    @property
    def eligible(self) -> list[Candidate]:
        return [c for c in self.measured if c.eligible]

    @property
    def chosen(self) -> Candidate | None:
        return self.eligible[0] if self.eligible else None

    @property
    def runner_up(self) -> Candidate | None:
        return self.eligible[1] if len(self.eligible) > 1 else None

    @property
    def disqualified(self) -> list[Candidate]:
        """The recipe's exports measured here that a failed gate names, fastest first."""
        return [c for c in self.measured if c.artifact.role == "export" and c.failed_gates]

    @property
    def slowest(self) -> Candidate | None:
        return self.measured[-1] if self.measured else None

    @property
    def status(self) -> str:
        """'ship', 'none' (measured, but no artifact passes), 'unmeasured' or 'failed'."""
        if self.error:
            return "failed"
        if not self.measured:
            return "unmeasured"
        return "ship" if self.chosen else "none"

    @property
    def headline(self) -> str:
        chosen = self.chosen
        return {
            "failed": f"{self.device}: the device failed — nothing to ship from it",
            "unmeasured": f"{self.device}: no artifact was measured",
            "none": f"{self.device}: no artifact passes the gates",
            "ship": f"{self.device}: ship {chosen.name if chosen else ''}",
        }[self.status]

    @property
    def why(self) -> str:
        """One sentence: the chosen artifact's numbers and its speedup over the slowest one measured."""
        chosen, slowest = self.chosen, self.slowest
        if self.status == "failed":
            return f"Profiling on {self.device} failed: {(self.error or '').strip().splitlines()[0]}"
        if self.status == "unmeasured":
            return f"Nothing was profiled on {self.device} (profiling off, or no artifact exported)."
        if chosen is None:
            return (
                f"Every artifact measured on {self.device} fails a gate: "
                + "; ".join(f"{c.name} ({_gate_list(c)})" for c in self.disqualified)
                + "."
            )
        if len(self.eligible) == 1 and len(self.measured) == 1:
            speed = "the only artifact measured there"
        elif slowest is not None and slowest.name != chosen.name:
            speed = (
                f"{slowest.p50_ms / chosen.p50_ms:.2f}x as fast as the slowest, {slowest.name} "
                f"({slowest.p50_ms:.3f} ms)"
            )
        else:
            speed = "the slowest measured, but the only one that passes the gates"
        return f"Fastest artifact that passes the gates: {chosen.describe()}; {speed}."

    @property
    def runner_up_text(self) -> str:
        chosen, second = self.chosen, self.runner_up
        if chosen is None:
            return ""
        if second is None:
            return "No runner-up: no other artifact passes the gates here."
        return f"Runner-up: {second.name}, {second.describe()} ({second.p50_ms / chosen.p50_ms:.2f}x slower)."

    @property
    def excluded_text(self) -> str:
        """The exports measured here that a failed gate ruled out (said when another one was chosen)."""
        if self.chosen is None or not self.disqualified:
            return ""
        return "Ruled out by a failed gate: " + "; ".join(
            f"{c.name} ({c.p50_ms:.3f} ms; {_gate_list(c)})" for c in self.disqualified
        )

    @property
    def summary(self) -> str:
        """The whole answer as plain text."""
        return " ".join(
            t for t in (self.headline + ".", self.why, self.runner_up_text, self.excluded_text) if t
        )


def _gate_list(c: Candidate) -> str:
    return ", ".join(f"{g.gate} failed: {_gate_value(g)} vs limit {g.limit:.4g}" for g in c.failed_gates)


def _gate_value(g: GateResult) -> str:
    """The judged value ('0.0123'), or what stood in for it when there was none (an energy gate with no
    measurement: its note)."""
    note = getattr(g, "note", "")
    if g.value is None:
        return note or "no value"
    return f"{g.value:.4g}" + (f" ({note})" if note else "")


def _gate_rows(report: Report) -> list[dict[str, Any]]:
    return [
        {
            "gate": g.gate,
            "subject": g.subject,
            "value": _gate_value(g),
            "limit": f"{g.limit:.4g}",
            "passed": g.passed,
            "result": "✔ pass"
            if g.passed
            else "✘ FAILED" + (f" by {abs(g.value - g.limit):.4g}" if g.value is not None else ""),
        }
        for g in report.gates
    ]


def device_names(report: Report) -> list[str]:
    """The recipe's devices in order, then any device only the measurements name (older reports)."""
    names = [d.name for d in report.devices]
    for a in report.artifacts:
        names += [d for d in a.measurements if d not in names]
    return names


def choose_artifacts(report: Report) -> list[ShipChoice]:
    """Per device, the artifacts measured there fastest first, with the failed gates that name each."""
    status = {d.name: d for d in report.devices}
    failed = report.failed_gates
    out = []
    for device in device_names(report):
        measured = sorted(
            (
                Candidate(a, a.measurements[device], [g for g in failed if gate_names(g, a.name, device)])
                for a in report.artifacts
                if device in a.measurements
            ),
            key=lambda c: c.p50_ms,
        )
        d = status.get(device)
        out.append(
            ShipChoice(
                device=device,
                description=d.description if d else "",
                error=d.error if d else None,
                measured=measured,
            )
        )
    return out


# --- table cells ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnergyCell:
    """Energy per inference as a cell: the figure and what it is. An estimate is marked '≈' and labelled
    estimated, so it never reads as a measurement."""

    text: str
    label: str
    kind: str  # "measured" | "estimated" | "none"


def energy_cell(m: Measurements | None) -> EnergyCell:
    if m is None:
        return EnergyCell("—", "", "none")
    if m.energy is not None:
        e = m.energy
        prefix = "≈ " if e.kind == "estimated" else ""
        spread = f" (windows {e.spread_mj[0]:.3f}–{e.spread_mj[1]:.3f})" if e.spread_mj else ""
        return EnergyCell(f"{prefix}{e.mj_per_inference:.3f} mJ{spread}", e.label, e.kind)
    if m.energy_mj_estimated is not None:
        return EnergyCell(f"≈ {m.energy_mj_estimated:.3f} mJ", "estimated (power model)", "estimated")
    return EnergyCell("—", "", "none")


def _latency_cell(m: Measurements) -> dict[str, str]:
    lat = m.latency
    low, high = lat.spread_ms
    rounds = f"{low:.3f}–{high:.3f}, {len(lat.rounds_p50_ms)} rounds" if len(lat.rounds_p50_ms) > 1 else ""
    throttled = " throttled" if m.thermal is not None and m.thermal.throttled else ""
    return {"p50": f"{lat.p50_ms:.3f}", "range": rounds, "throttled": throttled}


def _step_rows(report: Report) -> list[dict[str, Any]]:
    ref = report.reference
    return [
        {
            "name": s.name,
            "labels": (" (reference)" if s.name == ref.name else "") + (" (resumed)" if s.resumed else ""),
            "accuracy": f"{s.test_accuracy:.4f}",
            "delta": f"{(s.test_accuracy - ref.test_accuracy) * 100:+.2f} pt",
            "macs": f"{s.macs:,}",
            "fewer": _fewer(ref.macs, s.macs),
            "params": f"{s.params:,}",
            "seconds": f"{s.seconds:.1f}",
            "rate": rate(s.images_per_second),
            "notes": [(k, _note(v)) for k, v in s.notes.items() if k not in HIDDEN_NOTES],
        }
        for s in report.steps
    ]


def _note(value: Any) -> str:
    if isinstance(value, dict) and value and all(isinstance(x, list) and len(x) == 2 for x in value.values()):
        return "before → after: " + ", ".join(f"{n} {a}→{b}" for n, (a, b) in value.items())
    return _short(value)


def _artifact_rows(report: Report, devices: list[str], chosen: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    for a in report.artifacts:
        cells = []
        for d in devices:
            m = a.measurements.get(d)
            cells.append(
                {
                    "measured": m is not None,
                    "latency": _latency_cell(m) if m else None,
                    "rss": m.rss_text if m else "—",
                    "energy": energy_cell(m),
                    "chosen": chosen.get(d) == a.name,
                }
            )
        rows.append(
            {
                "name": a.name,
                "role": ROLE_LABELS.get(a.role, "").strip(" ()"),
                "runtime": a.runtime,
                "precision": a.precision
                + (f" (asked {a.requested_precision})" if a.requested_precision else ""),
                "computes_in": a.parity.execution_precision,
                "size": f"{a.size_bytes / 1024:.1f}",
                "accuracy": f"{a.parity.accuracy:.4f}",
                "agreement": f"{a.parity.agreement:.4f}",
                "cells": cells,
            }
        )
    return rows


def int8_artifact(report: Report, d: Deployability) -> str:
    """The int8 artifact a verdict is about (Deployability names only runtime and device): the export on
    that runtime measured on that device at the verdict's int8 p50; '' when none matches."""
    return next(
        (
            a.name
            for a in report.artifacts
            if a.runtime == d.runtime
            and a.role == "export"
            and d.device in a.measurements
            and a.measurements[d.device].latency.p50_ms == d.int8_p50_ms
        ),
        "",
    )


# --- plots ------------------------------------------------------------------------------------------------


def _svg(fig: Any, salt: str) -> str:
    """The figure as an inline <svg> element: no XML prolog, doctype, metadata or namespace URLs (an
    inline SVG in HTML needs none), ids salted per figure so that two plots never share one."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)
    text = re.sub(r'(<svg[^>]*?)\s+version="1\.1"', r"\1", text, count=1)
    # matplotlib numbers its groups per figure (figure_1, axes_1, ...): prefix every id and reference
    text = re.sub(r'\bid="([^"]+)"', rf'id="{salt}-\1"', text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{salt}-\1"', text)
    return re.sub(r"url\(#([^)]+)\)", rf"url(#{salt}-\1)", text)


def _figure(width: float, height: float) -> tuple[Any, Any]:
    """A figure outside pyplot: no global state, no GUI backend (saved straight to SVG)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    ax = fig.subplots()
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="x", color="#e0e0e0", linewidth=0.6)
    ax.set_axisbelow(True)
    return fig, ax


def latency_chart(choice: ShipChoice, salt: str) -> str:
    """Horizontal bars of every artifact's p50 on the device, whiskers to the rounds' range."""
    rows = choice.measured
    fig, ax = _figure(7.5, 0.9 + 0.42 * len(rows))
    chosen = choice.chosen.name if choice.chosen else None

    def colour(c: Candidate) -> str:
        if c.name == chosen:
            return COLOURS["chosen"]
        if c.artifact.role != "export":
            return COLOURS["other"]
        return COLOURS["fails"] if c.failed_gates else COLOURS["passes"]

    p50 = [c.p50_ms for c in rows]
    spread = [c.measurements.latency.spread_ms for c in rows]
    low = [max(c.p50_ms - lo, 0) for c, (lo, _) in zip(rows, spread, strict=True)]
    high = [max(hi - c.p50_ms, 0) for c, (_, hi) in zip(rows, spread, strict=True)]
    y = range(len(rows))
    ax.barh(
        y,
        p50,
        color=[colour(c) for c in rows],
        xerr=[low, high],
        error_kw={"ecolor": "#333", "capsize": 3, "linewidth": 0.8},
    )
    ax.set_yticks(list(y), [c.name + ROLE_LABELS.get(c.artifact.role, "") for c in rows])
    ax.invert_yaxis()
    top = max((hi for _, hi in spread), default=0) or 1
    for i, (c, (_, hi)) in enumerate(zip(rows, spread, strict=True)):
        ax.text(hi + top * 0.01, i, f" {c.p50_ms:.3f} ms", va="center", fontsize=8)
    ax.set_xlim(0, top * 1.22)
    ax.set_xlabel("p50 latency, ms (batch 1; whiskers: range of the rounds' p50)")
    ax.set_title(f"{choice.device}: latency per artifact", loc="left", fontsize=10)
    return _svg(fig, salt)


def op_chart(device: str, artifact: str, profile: OpProfile, salt: str, top: int = 10) -> str:
    """Horizontal bars of the `top` slowest ops of a timed per-op profile."""
    ops = profile.top(top)
    fig, ax = _figure(7.5, 0.9 + 0.34 * len(ops))
    labels = [_clip(f"{op.type} · {op.name}", 48) for op in ops]
    # ops of a tiny model take microseconds: plot those in µs rather than in ms with an exponent
    scale, unit = (1000.0, "µs") if max((op.time_ms or 0 for op in ops), default=0) < 0.01 else (1.0, "ms")
    times = [(op.time_ms or 0) * scale for op in ops]
    y = range(len(ops))
    ax.barh(y, times, color=COLOURS["passes"])
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.invert_yaxis()
    peak = max(times) if times and max(times) > 0 else 1
    for i, (op, t) in enumerate(zip(ops, times, strict=True)):
        share = f" ({op.share * 100:.1f}%)" if op.share is not None else ""
        ax.text(t + peak * 0.01, i, f" {t:.4g} {unit}{share}", va="center", fontsize=7)
    ax.set_xlim(0, peak * 1.35)
    ax.set_xlabel(f"mean {unit} per inference ({profile.source}, {profile.runs} runs)")
    ax.set_title(f"{device} / {artifact}: top {len(ops)} of {len(profile.ops)} ops", loc="left", fontsize=10)
    return _svg(fig, salt)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the page ---------------------------------------------------------------------------------------------


def render_html(report: Report) -> str:
    """The report as one HTML page that needs nothing but itself (no network, no script)."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
    from markupsafe import Markup

    choices = choose_artifacts(report)
    devices = device_names(report)
    chosen = {c.device: c.chosen.name for c in choices if c.chosen}
    latency_charts = [
        (c.device, Markup(latency_chart(c, f"lat{i}"))) for i, c in enumerate(choices) if c.measured
    ]
    op_sections = []
    for a in report.artifacts:
        for d, m in a.measurements.items():
            p = m.op_profile
            if p is None:
                continue
            if p.error:
                note = f"Per-op profile unavailable: {p.error}"
            elif not p.timed:
                note = f"{p.note or 'Op inventory without timings.'} ({p.source}; {len(p.ops)} ops)"
            elif not any(op.time_ms for op in p.top()):
                note = f"{p.source}: no op was timed."
            else:
                invoke = f", whole inference {p.invoke_ms:.3f} ms" if p.invoke_ms is not None else ""
                threads = f"{p.threads} threads" if p.threads else "runtime's default threads"
                op_sections.append(
                    {
                        "title": f"{d} / {a.name}",
                        "note": f"{p.source}: mean of {p.runs} inferences, {threads}; ops total "
                        f"{p.total_ms or 0:.3f} ms{invoke}.",
                        "svg": Markup(op_chart(d, a.name, p, f"op{len(op_sections)}")),
                    }
                )
                continue
            op_sections.append({"title": f"{d} / {a.name}", "note": note, "svg": None})
    runtimes = sorted(
        {f"{m.runtime} {m.runtime_version}" for a in report.artifacts for m in a.measurements.values()}
    )
    first = next((m for a in report.artifacts for m in a.measurements.values()), None)
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "j2"], default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(TEMPLATE).render(
        report=report,
        choices=choices,
        devices=devices,
        statuses={d.name: d for d in report.devices},
        steps=_step_rows(report),
        artifacts=_artifact_rows(report, devices, chosen),
        latency_charts=latency_charts,
        op_sections=op_sections,
        runtimes=runtimes,
        device_cpu=first.cpu_model if first else None,
        precrop=report.precrop_reference.describe().replace("**", "") if report.precrop_reference else "",
        failed_gates=report.failed_gates,
        gates=_gate_rows(report),
        int8_names=[int8_artifact(report, d) for d in report.deployability],
        sparsity=_sparsity_section(report),
    )


def _sparsity_section(report: Report) -> dict[str, Any] | None:
    """The sparsity section's tables (report_sparsity.sparsity_tables) with their columns, or None."""
    from edgecompress import report_sparsity as rs

    tables = rs.sparsity_tables(report)
    if tables is None:
        return None
    return {
        "title": rs.TITLE,
        "lead": rs.LEAD,
        "tables": [("", rs.SIZE_COLUMNS, tables["sizes"]), ("", rs.SPEED_COLUMNS, tables["speed"])]
        + [
            (f"{key.split(':', 1)[1]}: weights read back from the file", rs.LAYER_COLUMNS, rows)
            for key, rows in tables.items()
            if key.startswith("layers:")
        ],
        "notes": [row[0] for row in tables["runtime"]] + list(report.sparsity_lint),
    }
