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


#: The section's title and lead, shared by report.md and report.html.
TITLE = "Sparsity: what the zeros bought (measured against the dense model's export)"
LEAD = (
    "Each export of the sparse model next to its dense twin (the model as it entered the sparsity stage, "
    "exported the same way). Sizes in KiB: sparse (dense, ratio); gzip -9 and zstd -19 are what an app "
    "download or an OTA update carries."
)
SIZE_COLUMNS = ("artifact", "pattern holds in the file", "file zeros", "size", "gzip", "zstd")
SPEED_COLUMNS = (
    "device",
    "artifact",
    "p50 ms sparse (rounds)",
    "p50 ms dense (rounds)",
    "speed from the zeros",
)
LAYER_COLUMNS = (
    "layer",
    "pattern",
    "tensor in the file",
    "stored as",
    "zeros in the model",
    "zeros in the file",
    "holds",
)


#: How a layer's zeros were made (a Keras plan's `engines`), as the layer tables say it after the pattern.
ENGINES = {"tfmot": "by TFMOT", "masks": "by edgecompress's masks"}


def _engines(report: Report) -> dict[str, str]:
    """Each sparse layer's engine in the build's last pattern-sparsity plan (empty: the plan names none)."""
    plans = [s.notes["sparsity_plan"] for s in report.steps if "sparsity_plan" in s.notes]
    return {n: ENGINES.get(e, e) for n, e in plans[-1].get("engines", {}).items()} if plans else {}


def _p50(m: Measurements) -> str:
    low, high = m.latency.spread_ms
    return f"{m.latency.p50_ms:.3f} ({low:.3f}–{high:.3f})"


def sparsity_tables(report: Report) -> dict[str, list[list[str]]] | None:
    """The section's content as rows of cells (None when the build made no sparse model): `sizes`, `speed`,
    `runtime` (one-cell rows: what a runtime option did), and `layers:<artifact>` per sparse artifact."""
    sparse = [a for a in report.artifacts if a.sparsity is not None]
    if not sparse:
        return None
    tables: dict[str, list[list[str]]] = {"sizes": [], "speed": [], "runtime": []}
    engines = _engines(report)
    for a in sparse:
        twin = dense_twin(report, a)
        found = a.sparsity
        held = sum(layer.holds for layer in found.layers)
        tables["sizes"].append(
            [
                a.name,
                f"{'yes' if found.holds else 'NO'} ({held} of {len(found.layers)} layers)",
                f"{found.file_sparsity:.1%}",
                _pair(a.size_bytes, twin and twin.size_bytes),
                _pair(a.gzip_bytes, twin and twin.gzip_bytes),
                _pair(a.zstd_bytes, twin and twin.zstd_bytes),
            ]
        )
        for d, m in a.measurements.items() if twin is not None else []:
            if d in twin.measurements:
                dense = twin.measurements[d]
                tables["speed"].append([d, a.name, _p50(m), _p50(dense), speed_verdict(m, dense)])
        tables[f"layers:{a.name}"] = [
            [
                r.layer,
                f"{r.pattern} ({engines[r.layer]})" if r.layer in engines else r.pattern,
                _tensor(r.tensor),
                r.dtype or "—",
                f"{r.model_sparsity:.1%}",
                f"{r.file_sparsity:.1%}" if r.file_sparsity is not None else "—",
                "yes" if r.holds else f"NO: {r.detail}",
            ]
            for r in found.layers
        ]
    for a in report.artifacts:
        for d, m in a.measurements.items():
            if not m.runtime_options:
                continue
            options = ", ".join(f"{k} {v}" for k, v in m.runtime_options.items())
            layers = (
                f"{len(m.sparse_layers)} layers ran sparse ({', '.join(m.sparse_layers[:4])})"
                if m.sparse_layers
                else "no layer ran sparse"
                if m.sparse_layers is not None
                else "the tool does not say which layers ran sparse"
            )
            warned = f"; {'; '.join(m.runtime_warnings)}" if m.runtime_warnings else ""
            tables["runtime"].append([f"{d}/{a.name} ran with {options}: {layers}{warned}."])
    return tables


def _markdown(columns: tuple[str, ...], rows: list[list[str]]) -> list[str]:
    rule = "|" + "---|" * len(columns)
    return ["| " + " | ".join(columns) + " |", rule, *("| " + " | ".join(r) + " |" for r in rows)]


def render_sparsity(report: Report) -> list[str]:
    """Markdown lines (empty when the build made no sparse model)."""
    tables = sparsity_tables(report)
    if tables is None:
        return []
    out = ["", f"## {TITLE}", "", LEAD, "", *_markdown(SIZE_COLUMNS, tables["sizes"])]
    if tables["speed"]:
        out += ["", *_markdown(SPEED_COLUMNS, tables["speed"])]
    out += [f"\n{row[0]}" for row in tables["runtime"]]
    if report.sparsity_lint:
        out += ["", "What the runtimes' kernels can do with these zeros (checked before training):", ""]
        out += [f"- {line}" for line in report.sparsity_lint]
    for key, rows in tables.items():
        if key.startswith("layers:"):
            out += [
                "",
                f"**{key.split(':', 1)[1]}**, weights read back from the file:",
                "",
                *_markdown(LAYER_COLUMNS, rows),
            ]
    return out
