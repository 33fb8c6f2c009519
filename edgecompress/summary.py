"""The table a build ends with: baseline vs each stage vs each artifact."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from edgecompress.console import UI
from edgecompress.report import REFERENCE_ROLES, Report, rate


def summary_table(report: Report) -> Table:
    """Accuracy, MACs, params, stage time and training images/s, size and p50 per device for every step and
    artifact of the report."""
    ref = report.reference
    devices = sorted({d for a in report.artifacts for d in a.measurements})
    table = Table(title=f"edgecompress: {report.recipe_name}", title_justify="left")
    for col in (
        "step / artifact",
        "test acc",
        "Δ acc",
        "MACs",
        "params",
        "time s",
        "img/s",
        "size KiB",
        *[f"p50 ms {d}" for d in devices],
    ):
        table.add_column(col, justify="left" if col == "step / artifact" else "right")
    final = report.steps[-1]
    # float artifacts are exported from the model before `quantize`
    float_step = next((s for s in reversed(report.steps) if s.stage_type != "quantize"), final)
    for s in report.steps:
        table.add_row(
            s.name + (" (reference)" if s.name == ref.name else "") + (" (resumed)" if s.resumed else ""),
            f"{s.test_accuracy:.4f}",
            f"{(s.test_accuracy - ref.test_accuracy) * 100:+.2f}",
            f"{s.macs / 1e6:.2f}M",
            f"{s.params:,}",
            f"{s.seconds:.1f}" if s.stage_type else "",
            rate(s.images_per_second) if s.stage_type else "",
            "",
            *["" for _ in devices],
        )
    # a latency budget's reference artifact is the model as it entered the prune stage
    prune = next((i for i, s in enumerate(report.steps) if s.stage_type == "prune"), 0)
    unpruned = report.steps[max(prune - 1, 0)]
    for a in report.artifacts:
        step = unpruned if a.role in REFERENCE_ROLES else final if a.precision == "int8" else float_step
        table.add_row(
            a.name,
            f"{a.parity.accuracy:.4f}",
            f"{(a.parity.accuracy - ref.test_accuracy) * 100:+.2f}",
            f"{step.macs / 1e6:.2f}M",
            f"{step.params:,}",
            "",
            "",
            f"{a.size_bytes / 1024:.1f}",
            *[f"{a.measurements[d].latency.p50_ms:.3f}" if d in a.measurements else "—" for d in devices],
        )
    return table


def print_summary(report: Report, out_dir: Path, ui: UI) -> None:
    if ui.verbosity >= 1:
        ui.console.print(summary_table(report))
        for g in report.gates:
            if not g.passed or ui.verbosity >= 2:
                ui.console.print(("[green]" if g.passed else "[red]") + g.message, highlight=False)
    ui.console.print(
        f"wrote {out_dir}/ (report.md, report.html, report.json, recipe.lock.yaml) in {report.wall_seconds:.1f} s"
        + (f" ({report.phase_summary})" if report.phase_seconds else ""),
        highlight=False,
    )
