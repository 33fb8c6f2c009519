"""The report's sparsity section: what a pattern-sparsity stage's zeros bought, artifact by artifact, measured
against the dense model's twin of each export (size, compressed size, latency), and whether the pattern held
in each file (its weights read back)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgecompress.profiling import Measurements
    from edgecompress.report import ArtifactResult, Report

#: A latency ratio within this of 1 (or overlapping round ranges) is no speed-up and no slow-down.
NOISE = 0.05


def speed_verdict(sparse: Measurements, dense: Measurements) -> str:
    """'1.32x faster', '0.97x: no speed-up beyond noise', ... from the two artifacts' interleaved rounds."""
    ratio = dense.latency.p50_ms / sparse.latency.p50_ms
    s_low, s_high = sparse.latency.spread_ms
    d_low, d_high = dense.latency.spread_ms
    overlap = s_low <= d_high and d_low <= s_high and len(sparse.latency.rounds_p50_ms) > 1
    if abs(ratio - 1) <= NOISE:
        return f"{ratio:.2f}x: no speed-up shown (size only)"
    if overlap:
        return f"{ratio:.2f}x, within the rounds' spread: no speed-up shown (size only)"
    return f"{ratio:.2f}x faster" if ratio > 1 else f"{ratio:.2f}x (slower)"


def _tensor(name: str | None, width: int = 40) -> str:
    """A file's tensor name, shortened to its end (litert-torch names run to hundreds of characters)."""
    if name is None:
        return "not found"
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def _kib(value: int | None) -> str:
    return f"{value / 1024:.1f}" if value is not None else "—"


def _pair(a: int | None, b: int | None) -> str:
    if a is None or b is None:
        return "—"
    return f"{_kib(a)} ({_kib(b)}, {a / b:.2f}x)"


def dense_twin(report: Report, artifact: ArtifactResult) -> ArtifactResult | None:
    return next((a for a in report.artifacts if a.name == f"{artifact.name}-dense"), None)


def render_sparsity(report: Report) -> list[str]:
    """Markdown lines (empty when the build made no sparse model)."""
    sparse = [a for a in report.artifacts if a.sparsity is not None]
    if not sparse:
        return []
    out = [
        "",
        "## Sparsity: what the zeros bought (measured against the dense model's export)",
        "",
        "Each export of the sparse model next to its dense twin (the model as it entered the sparsity stage, "
        "exported the same way). Sizes in KiB: sparse (dense, ratio); gzip -9 and zstd -19 are what an app "
        "download or an OTA update carries.",
        "",
        "| artifact | pattern holds in the file | file zeros | size | gzip | zstd |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for a in sparse:
        twin = dense_twin(report, a)
        found = a.sparsity
        held = sum(layer.holds for layer in found.layers)
        out.append(
            f"| {a.name} | {'yes' if found.holds else 'NO'} ({held} of {len(found.layers)} layers) | "
            f"{found.file_sparsity:.1%} | {_pair(a.size_bytes, twin and twin.size_bytes)} | "
            f"{_pair(a.gzip_bytes, twin and twin.gzip_bytes)} | {_pair(a.zstd_bytes, twin and twin.zstd_bytes)} |"
        )
    timed = [
        (a, twin, d)
        for a in sparse
        if (twin := dense_twin(report, a)) is not None
        for d in a.measurements
        if d in twin.measurements
    ]
    if timed:
        out += [
            "",
            "| device | artifact | p50 ms sparse (rounds) | p50 ms dense (rounds) | speed from the zeros |",
            "|---|---|---:|---:|---|",
        ]
        for a, twin, d in timed:
            s, t = a.measurements[d], twin.measurements[d]
            out.append(
                f"| {d} | {a.name} | {s.latency.p50_ms:.3f} ({s.latency.spread_ms[0]:.3f}–{s.latency.spread_ms[1]:.3f}) | "
                f"{t.latency.p50_ms:.3f} ({t.latency.spread_ms[0]:.3f}–{t.latency.spread_ms[1]:.3f}) | "
                f"{speed_verdict(s, t)} |"
            )
    packed = [(a, d, m) for a in report.artifacts for d, m in a.measurements.items() if m.runtime_options]
    for a, d, m in packed:
        options = ", ".join(f"{k} {v}" for k, v in m.runtime_options.items())
        layers = (
            f"{len(m.sparse_layers)} layers ran sparse ({', '.join(m.sparse_layers[:4])})"
            if m.sparse_layers
            else "no layer ran sparse"
            if m.sparse_layers is not None
            else "the tool does not say which layers ran sparse"
        )
        warned = f"; {'; '.join(m.runtime_warnings)}" if m.runtime_warnings else ""
        out.append(f"\n{d}/{a.name} ran with {options}: {layers}{warned}.")
    if report.sparsity_lint:
        out += ["", "What the runtimes' kernels can do with these zeros (checked before training):", ""]
        out += [f"- {line}" for line in report.sparsity_lint]
    for a in sparse:
        out += [
            "",
            f"**{a.name}**, weights read back from the file:",
            "",
            "| layer | pattern | tensor in the file | stored as | zeros in the model | zeros in the file | holds |",
            "|---|---|---|---|---:|---:|---|",
        ]
        for r in a.sparsity.layers:
            file_zeros = f"{r.file_sparsity:.1%}" if r.file_sparsity is not None else "—"
            holds = "yes" if r.holds else f"NO: {r.detail}"
            out.append(
                f"| {r.layer} | {r.pattern} | {_tensor(r.tensor)} | {r.dtype or '—'} | "
                f"{r.model_sparsity:.1%} | {file_zeros} | {holds} |"
            )
    return out
