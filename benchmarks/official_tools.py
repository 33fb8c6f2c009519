"""Do edgecompress's latency figures agree with the runtimes' own benchmark tools?

    .venv/bin/python benchmarks/official_tools.py [--threads 2] [--rounds 5]

Exports two realistic models (MobileNetV2-1.0 and ResNet-18 at 224x224, random weights, plain torch) with
edgecompress's exporters to TFLite fp32 and OpenVINO fp32, then measures the median (p50) latency at batch 1
with edgecompress's LocalRunner and with the official tools:

    benchmark_app -m X.xml -d CPU -hint none -nthreads N -nstreams 1 -shape [..] -t 10 -infer_precision f32    (Median latency)
    litert-benchmark --model X.tflite --num_threads N --num_runs R --warmup_runs W   (Inference median;
        R, W sized to >= 200 runs and >= 1 s of warm-up, as edgecompress's runner does)

With `--report runs/NAME/report.json` it instead checks a build's report: every artifact's p50 on the
desktop device, as the report states it, against the fastest of `--rounds` runs of the official tool on the
same file with the same threads and inference precision (section "Build report vs official tools").

Each pair is measured `--rounds` times, alternating the two, and the fastest round of each side is compared
(interference only slows a run), so a burst of load from another process cannot favour either side. Prints a table, writes the section "Latency
agreement with official tools" of benchmarks/RESULTS.md, and exits 1 if any ratio is off by more than 15%.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import RESULTS, make_context, random_bundle, write_section  # noqa: E402

from edgecompress.console import UI  # noqa: E402
from edgecompress.registry import EXPORTERS, FRAMEWORKS  # noqa: E402
from edgecompress.runners.local import LocalRunner  # noqa: E402
from edgecompress.runtimes.probe import cpu_info  # noqa: E402
from edgecompress.specs import load_device  # noqa: E402

TOLERANCE = 0.15
SECTION = "## Latency agreement with official tools"
REPORT_SECTION = "## Build report vs official tools"
BIN = Path(sys.executable).parent


# ------------------------------------------------------------------------------------------- models


sys.path.insert(0, str(ROOT / "examples"))
from architectures import mobilenet_v2, resnet18  # noqa: E402

MODELS = {"mobilenet_v2_224": mobilenet_v2, "resnet18_224": resnet18}


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs of one forward pass, counted the way every edgecompress report counts them."""
    return FRAMEWORKS.get("torch")().stats(model, list(x.shape)).macs


# ------------------------------------------------------------------------------------------- export


def export_both(name: str, model: nn.Module, out_dir: Path, ui: UI) -> list:
    """TFLite fp32 and OpenVINO fp32 artifacts of `model` through edgecompress's own exporters."""
    shape = [1, 3, 224, 224]
    # Latency does not depend on the pixels: a few random images stand in for a dataset (used by the
    # exporters only as the trace sample and for the sidecar's preprocessing facts).
    ctx = make_context(
        f"name: {name}\nmodel: {{source: official_tools.py:{name}, input_shape: {shape}}}\n"
        "data: {image_size: [224, 224], channels: 3}\n"
        "export: [{format: tflite, precision: fp32}, {format: openvino, precision: fp32}]\n",
        out_dir,
        random_bundle(shape, 4),
        ui,
    )
    recipe = ctx.recipe
    return [EXPORTERS.get(spec.format)().export(model, spec, ctx, out_dir / name) for spec in recipe.export]


# ------------------------------------------------------------------------------------------- official tools


def _run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc.stdout + proc.stderr


def benchmark_app_cmd(
    xml: Path, shape: list[int], threads: int, precision: str | None, seconds: int = 10
) -> list[str]:
    """The official tool, configured like our runner (same threads, one stream, same inference precision)."""
    return [
        str(BIN / "benchmark_app"),
        "-m",
        str(xml),
        "-d",
        "CPU",
        "-hint",
        "none",
        "-nthreads",
        str(threads),
        "-nstreams",
        "1",
        "-shape",
        "[" + ",".join(map(str, shape)) + "]",
        "-t",
        str(seconds),
        *(["-infer_precision", precision] if precision else []),
    ]


def benchmark_app_p50(
    xml: Path, shape: list[int], threads: int, precision: str | None, seconds: int = 10
) -> float:
    """Median latency (ms) that `benchmark_app` prints under 'Latency:'."""
    out = _run(benchmark_app_cmd(xml, shape, threads, precision, seconds))
    match = re.search(r"Latency:\s*\n.*?Median:\s+([0-9.]+)\s*(ms|us)", out, re.S)
    if not match:
        raise SystemExit(f"no median latency in benchmark_app output:\n{out[-2000:]}")
    return float(match.group(1)) / (1000.0 if match.group(2) == "us" else 1.0)


def litert_benchmark_cmd(tflite: Path, threads: int, result_json: Path, expected_ms: float) -> list[str]:
    """Warm-up and run counts sized like our runner's (>= 1 s of warm-up, >= 200 timed runs): with its
    default 20 warm-up runs a 0.1 ms model is timed cold and reads ~50% slow."""
    warmup = max(20, int(1000.0 / max(expected_ms, 1e-3)))
    runs = max(200, int(1000.0 / max(expected_ms, 1e-3)))
    return [
        str(BIN / "litert-benchmark"),
        "--model",
        str(tflite),
        "--num_threads",
        str(threads),
        "--num_runs",
        str(runs),
        "--warmup_runs",
        str(warmup),
        "--result_json",
        str(result_json),
    ]


def litert_benchmark_p50(tflite: Path, threads: int, work: Path, expected_ms: float) -> float:
    """'Inference (median)' of `litert-benchmark`, read from its --result_json."""
    result = work / f"{tflite.stem}.litert-benchmark.json"
    _run(litert_benchmark_cmd(tflite, threads, result, expected_ms))
    return float(json.loads(result.read_text())["latency"]["median_ms"])


# ------------------------------------------------------------------------------------------- report


@dataclass
class Row:
    model: str
    macs: int
    runtime: str
    precision: str
    ours: list[float]
    official: list[float]
    execution_precision: str

    @property
    def ratio(self) -> float:
        return min(self.ours) / min(self.official)

    @property
    def ok(self) -> bool:
        return abs(self.ratio - 1) <= TOLERANCE


def table(rows: list[Row]) -> str:
    lines = [
        "| model | MACs | runtime (computes in) | edgecompress p50 ms | official tool p50 ms | ratio | within 15% |",
        "| --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.macs / 1e6:.0f} M | {r.runtime} {r.precision} ({r.execution_precision}) | "
            f"{min(r.ours):.3f} | {min(r.official):.3f} | {r.ratio:.3f} | "
            f"{'yes' if r.ok else '**no**'} |"
        )
    return "\n".join(lines)


def write_results(rows: list[Row], threads: int, rounds: int) -> None:
    cpu, isa = cpu_info()
    versions = ", ".join(f"{p} {version(p)}" for p in ("torch", "litert-torch", "ai-edge-litert", "openvino"))
    each = "; ".join(
        f"{r.model}/{r.runtime}: ours {', '.join(f'{v:.2f}' for v in r.ours)} vs "
        f"{', '.join(f'{v:.2f}' for v in r.official)}"
        for r in rows
    )
    section = f"""{SECTION}

Measured {datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")} by `.venv/bin/python benchmarks/official_tools.py`
(target: every ratio within 1 ± {TOLERANCE:.2f}).

- Machine: {cpu}, {os.cpu_count()} cores, {platform.machine()}; ISA: {", ".join(isa) or "none detected"}
- Versions: {versions}; Python {platform.python_version()}
- Batch 1, {threads} threads, random weights, fp32 artifacts from edgecompress's exporters. p50 is the lowest of
  {rounds} rounds' medians on each side (as edgecompress's reports take the fastest of their rounds), each round
  running edgecompress then the official tool.
- edgecompress: `LocalRunner` (fresh process running `edgecompress/runtimes/measure.py`: LiteRT Interpreter
  with XNNPACK; OpenVINO CPU, 1 stream, LATENCY hint), 200 timed runs after 1 s of warm-up.
- OpenVINO: `benchmark_app -m X.xml -d CPU -hint none -nthreads {threads} -nstreams 1 -shape [1,3,224,224] -t 10
  -infer_precision f32`, its "Median" latency. LiteRT: `litert-benchmark --model X.tflite --num_threads {threads} --num_runs/--warmup_runs
  sized to >= 200 runs and >= 1 s of warm-up`, its "Inference (median)".
- edgecompress times each call including copying the input in and the logits out; the tools time the
  inference alone, which is why edgecompress reads a few percent higher.
- Why rounds: on the 2-core VM this was first run on, the speed of the same call shifts for seconds at a time
  (1.7 <-> 2.4 ms for MobileNetV2 on OpenVINO in one process) and other jobs share the cores; a single round
  once read 2.75 vs 1.80 ms. Interference only slows a run, so both sides take their fastest round, and
  alternating the two sides lets a slow spell hit both alike.
- "computes in" is the precision the runtime reported. OpenVINO's CPU plugin would run fp32 IR in bf16 by
  default on CPUs with AMX/AVX512-BF16; edgecompress's fp32 artifacts carry `inference_precision: f32`
  (their numerics are fp32), so both sides are asked for f32.

{table(rows)}

Per round (ms): {each}.
"""
    write_section(SECTION, section)


def check_report(report_path: Path, rounds: int) -> list[Row]:
    """The p50 a build's report states for each desktop artifact vs the official tool on the same file."""
    from edgecompress.exporters.base import artifact_from_file
    from edgecompress.report import Report

    report = Report.model_validate_json(report_path.read_text())
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="edgecompress-bench-") as tmp:
        for a in report.artifacts:
            m = a.measurements.get("desktop")
            if m is None:
                continue
            artifact = artifact_from_file(report_path.parent / a.files[0])
            row = Row(
                f"{report.recipe_name}/{a.name}",
                report.steps[-1].macs,
                a.runtime,
                a.precision,
                [m.latency.p50_ms],
                [],
                m.execution_precision or "?",
            )
            for _ in range(rounds):
                if a.runtime == "openvino":
                    row.official.append(
                        benchmark_app_p50(
                            artifact.path, artifact.input_shape, m.threads, artifact.inference_precision
                        )
                    )
                else:
                    row.official.append(
                        litert_benchmark_p50(artifact.path, m.threads, Path(tmp), m.latency.p50_ms)
                    )
            rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print the table without updating RESULTS.md")
    parser.add_argument(
        "--report", type=Path, help="check this build report's p50s instead of the two models"
    )
    args = parser.parse_args()
    if args.report:
        rows = check_report(args.report, args.rounds)
        print(table(rows))
        if not args.no_write:
            write_section(
                REPORT_SECTION,
                f"""{REPORT_SECTION}

Measured {datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")} by
`.venv/bin/python benchmarks/official_tools.py --report {args.report}` (target: within 1 ± {TOLERANCE:.2f}).
"edgecompress p50" is the figure in the report (the fastest of its fresh-process rounds, after warm-up);
"official" is the lowest median of {args.rounds} runs of `benchmark_app` / `litert-benchmark` on the same file,
threads and inference precision.
Machine: {cpu_info()[0]}, {os.cpu_count()} cores.

{table(rows)}
""",
            )
        return 0 if all(r.ok for r in rows) else 1

    ui = UI(verbosity=1)
    device = load_device("desktop")
    runner = LocalRunner()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="edgecompress-bench-") as tmp:
        work = Path(tmp)
        for name, factory in MODELS.items():
            torch.manual_seed(0)
            model = factory().eval()
            macs = count_macs(model, torch.zeros(1, 3, 224, 224))
            ui.info(f"[bold]{name}[/bold]: {macs / 1e6:.0f} M MACs; exporting")
            for artifact in export_both(name, model, work, ui):
                row = Row(name, macs, artifact.runtime, artifact.precision, [], [], "")
                for i in range(args.rounds):
                    m = runner.run(
                        artifact, device, runs=200, warmup_seconds=1.0, threads=args.threads, op_profile=False
                    )
                    row.ours.append(m.latency.p50_ms)
                    row.execution_precision = m.execution_precision or "?"
                    if artifact.runtime == "openvino":
                        row.official.append(
                            benchmark_app_p50(
                                artifact.path,
                                artifact.input_shape,
                                args.threads,
                                artifact.inference_precision,
                            )
                        )
                    else:
                        row.official.append(
                            litert_benchmark_p50(artifact.path, args.threads, work, row.ours[-1])
                        )
                    ui.info(
                        f"  {artifact.name} round {i + 1}: edgecompress {row.ours[-1]:.2f} ms, "
                        f"official {row.official[-1]:.2f} ms"
                    )
                rows.append(row)
    print(table(rows))
    if not args.no_write:
        write_results(rows, args.threads, args.rounds)
        print(f"\nwrote the section '{SECTION[3:]}' of {RESULTS.relative_to(ROOT)}")
    bad = [r for r in rows if not r.ok]
    if bad:
        print(f"\nFAIL: {len(bad)} of {len(rows)} ratios off by more than {TOLERANCE:.0%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
