"""The PyTorch and Keras quickstarts side by side: `recipes/quickstart.yaml` and `recipes/keras-quickstart.yaml`
(the same recipe with the model section and data.layout changed; the Keras model is the tf_keras twin of the
PyTorch one) built with the same seed and data, then every artifact of both timed together on this machine
in interleaved fresh-process rounds (A, B, C, ..., A, B, C, ...), so the latency columns compare like with
like.

Writes the "PyTorch and Keras quickstarts side by side" section of benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/frameworks_suite.py            # about 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    ROOT,
    RuntimeMeter,
    machine_line,
    utc_now,
    versions_line,
    write_section,
)

HEADING = "## PyTorch and Keras quickstarts side by side"
RECIPES = {
    "PyTorch": ROOT / "recipes" / "quickstart.yaml",
    "Keras": ROOT / "recipes" / "keras-quickstart.yaml",
}
#: The exports compared (the quickstarts' `auto` exports are their int8 ones, planned per op).
PAIRS = {"tflite fp32": "tflite-fp32", "openvino fp32": "openvino-fp32"}


def build(recipe: Path, out: Path) -> Any:
    from edgecompress.pipeline import run_build

    return run_build(recipe, out=out, verbosity=0, profile=False)


def int8_name(report: Any, fmt: str) -> str:
    """The export of `fmt` that is int8 (`<fmt>-auto` when its plan chose int8, planned per op)."""
    return next(
        a.name
        for a in report.artifacts
        if a.role == "export" and a.name.startswith(fmt) and a.precision == "int8"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    parser.add_argument("--runs", type=int, default=300, help="timed runs per artifact per round")
    args = parser.parse_args()
    from edgecompress.exporters.base import artifact_from_file

    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="edgecompress-frameworks-"))
    reports, seconds = {}, {}
    for framework, recipe in RECIPES.items():
        t = time.perf_counter()
        reports[framework] = build(recipe, work / framework)
        seconds[framework] = time.perf_counter() - t
        print(f"built {recipe.name} in {seconds[framework]:.0f} s", flush=True)
    names = {
        framework: {
            **PAIRS,
            "tflite int8": int8_name(report, "tflite"),
            "openvino int8": int8_name(report, "openvino"),
        }
        for framework, report in reports.items()
    }
    artifacts = {}
    for framework, report in reports.items():
        for label, name in names[framework].items():
            a = next(x for x in report.artifacts if x.name == name)
            artifacts[(framework, label)] = artifact_from_file(work / framework / a.files[0])
    meter = RuntimeMeter(threads=2, runs=args.runs, warmup=0.5, rounds=args.rounds)
    timings = meter.timings(artifacts)
    elapsed = time.perf_counter() - t0
    write_section(HEADING, section(reports, names, timings, seconds, elapsed, args))
    print(section(reports, names, timings, seconds, elapsed, args))
    return 0


def section(
    reports: dict[str, Any],
    names: dict[str, dict[str, str]],
    timings: dict[tuple[str, str], Any],
    seconds: dict[str, float],
    elapsed: float,
    args: argparse.Namespace,
) -> str:
    lines = [
        HEADING,
        "",
        f"`.venv/bin/python benchmarks/frameworks_suite.py` ({utc_now()}, {elapsed / 60:.1f} min): "
        "`recipes/quickstart.yaml` and `recipes/keras-quickstart.yaml` built with the same seed and data (train "
        "15 epochs, channel pruning to 45% of the MACs with round_to 4, distill 10, QAT 3), then all eight "
        f"artifacts timed together in {args.rounds} interleaved fresh-process rounds of {args.runs} runs, 2 "
        "threads (p50 of the fastest round, range over the rounds). Both export `precision: auto`: both "
        "frameworks' plans choose a form per op as measured on the machine, then race the whole models, and "
        "a Keras OpenVINO int8 model of an all-int8 plan is the fastest of three candidates raced on the "
        "machine (the .tflite's reading, the QAT model's, NNCF's quantization of the fp32 IR; the race is "
        "quoted under the table).",
        "",
        f"Machine: {machine_line()}. Versions: {versions_line(('torch', 'litert-torch', 'tensorflow', 'tf-keras', 'tensorflow-model-optimization', 'ai-edge-litert', 'openvino'))}.",
        "",
        "| | " + " | ".join(reports) + " |",
        "| --- | " + " | ".join("---" for _ in reports) + " |",
    ]
    first = next(iter(reports.values()))
    for j, step in enumerate(first.steps):
        if j == 0:
            continue  # the untrained model
        cells = []
        for report in reports.values():
            s = report.steps[j]
            cells.append(f"{s.test_accuracy:.2%} test acc, {s.macs / 1e6:.2f} M MACs, {s.params:,} params")
        lines.append(f"| after {step.name.partition(':')[2]} | " + " | ".join(cells) + " |")
    for label in ("tflite fp32", "tflite int8", "openvino fp32", "openvino int8"):
        cells = []
        for framework, report in reports.items():
            a = next(x for x in report.artifacts if x.name == names[framework][label])
            t = timings[(framework, label)]
            cells.append(f"{a.parity.accuracy:.2%}, {a.size_bytes / 1024:.1f} KiB, p50 {t.text()} ms")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| build time | " + " | ".join(f"{seconds[f]:.0f} s (no profiling)" for f in reports) + " |")
    for framework, report in reports.items():
        a = next(x for x in report.artifacts if x.name == names[framework]["openvino int8"])
        if "int8_race" in a.notes:
            lines += ["", f"{framework} {a.name}: {a.notes['int8_race']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
