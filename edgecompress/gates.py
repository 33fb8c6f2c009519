"""The recipe's gates checked against what the build measured: each a GateResult naming the artifacts and the
device it judges (report.html's "what to ship" disqualifies an artifact only where it failed)."""

from __future__ import annotations

import fnmatch
from typing import Any

from edgecompress.recipe import Recipe
from edgecompress.report import ArtifactResult, CrossRuntime, GateResult, Step


def _about(subject: str) -> dict[str, Any]:
    """The artifacts and device a gate's subject names: 'a', 'device/a', 'device/a vs here', 'a vs b'."""
    if subject.endswith(" vs here"):
        device, _, artifact = subject.removesuffix(" vs here").partition("/")
        return {"artifacts": [artifact], "device": device}
    if " vs " in subject:
        return {"artifacts": subject.split(" vs "), "device": None}
    device, _, artifact = subject.rpartition("/")
    return {"artifacts": [artifact], "device": device or None}


def _at_most(gate: str, subject: str, value: float, limit: float) -> GateResult:
    # 1e-12: an accuracy drop of exactly the limit (e.g. 1 image of 100 for 0.01) passes despite float error
    return GateResult(
        gate=gate, subject=subject, limit=limit, value=value, passed=value <= limit + 1e-12, **_about(subject)
    )


def _at_least(gate: str, subject: str, value: float, limit: float) -> GateResult:
    return GateResult(
        gate=gate, subject=subject, limit=limit, value=value, passed=value >= limit, **_about(subject)
    )


def evaluate_gates(
    recipe: Recipe,
    report_steps: list[Step],
    reference: Step,
    artifacts: list[ArtifactResult],
    cross_runtime: list[CrossRuntime] = (),  # type: ignore[assignment]
) -> list[GateResult]:
    """Every gate in the recipe, plus the parity threshold, checked against measured values."""
    gates, min_agreement = recipe.gates, recipe.parity.min_agreement
    out: list[GateResult] = []
    for a in artifacts:
        out.append(_at_least("parity.min_agreement", a.name, a.parity.agreement, min_agreement))
        if a.role != "export":  # fp32 twins exist for the speedup figure; only their parity is gated
            continue
        if gates.max_accuracy_drop is not None:
            drop = reference.test_accuracy - a.parity.accuracy
            out.append(_at_most("max_accuracy_drop", a.name, drop, gates.max_accuracy_drop))
        if gates.min_accuracy is not None:
            out.append(_at_least("min_accuracy", a.name, a.parity.accuracy, gates.min_accuracy))
        if gates.max_size_kb is not None:
            out.append(_at_most("max_size_kb", a.name, a.size_bytes / 1024, gates.max_size_kb))
        for device, p in a.device_parity.items():  # the same answers there as here
            out.append(
                _at_least("parity.min_agreement", f"{device}/{a.name} vs here", p.agreement, min_agreement)
            )
        for device, m in a.measurements.items():
            subject = f"{device}/{a.name}"
            for pattern, limit in gates.max_latency_ms.items():
                if fnmatch.fnmatch(subject, pattern):
                    out.append(_at_most("max_latency_ms", subject, m.latency.p50_ms, limit))
            for pattern, limit in gates.max_energy_mj.items():
                if fnmatch.fnmatch(subject, pattern):
                    out.append(_energy_gate(subject, m, limit, gates.allow_estimated))
    out += [
        _at_least("parity.min_agreement", f"{c.a} vs {c.b}", c.agreement, min_agreement)
        for c in cross_runtime
    ]
    if not artifacts and gates.max_accuracy_drop is not None:
        last = report_steps[-1]
        drop = reference.test_accuracy - last.test_accuracy
        out.append(_at_most("max_accuracy_drop", last.name, drop, gates.max_accuracy_drop))
    return out


def _energy_gate(subject: str, m: Any, limit: float, allow_estimated: bool) -> GateResult:
    """max_energy_mj on a measurement; an estimate counts only with allow_estimated, and says so."""
    energy = m.energy
    if energy is None or (energy.kind == "estimated" and not allow_estimated):
        have = (
            f"only {energy.label} {energy.mj_per_inference:.4g} mJ"
            if energy is not None
            else "no energy figure"
        )
        return GateResult(
            gate="max_energy_mj",
            subject=subject,
            limit=limit,
            value=None,
            passed=False,
            note=f"{have}; give the device an energy source (its profile's energy) or set gates.allow_estimated",
            **_about(subject),
        )
    result = _at_most("max_energy_mj", subject, energy.mj_per_inference, limit)
    return result.model_copy(update={"note": energy.label})
