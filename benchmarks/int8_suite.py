"""`make bench-int8`: int8 that is never slower, on this machine, measured.

    .venv/bin/python benchmarks/int8_suite.py            # the full run (about 30-40 minutes on 2 cores)
    .venv/bin/python benchmarks/int8_suite.py --quick    # one model, fewer rounds: a smoke check

1. Precision at 224 (random weights, batch 1, 2 threads): MobileNetV2-1.0, MobileNetV3-Small and
   EfficientNet-B0, unpruned, then MobileNetV2 and ResNet-18 pruned by half (Torch-Pruning L1, round_to 8).
   Per runtime: the fp32 export; the stock int8 (litert-torch PT2E PTQ; NNCF PTQ of the fp32 IR); edgecompress
   all-int8 (the quantize stage's PTQ graph lowered as it is); edgecompress `precision: int8` and `precision:
   auto` (their plans measured on this machine). Timed by edgecompress's runner in interleaved fresh-process
   rounds (fastest round's p50), the fp32 and auto artifacts also by `litert-benchmark` / `benchmark_app`.
2. round_to: MobileNetV2-1.0 and ResNet-18 at 224 pruned by half with round_to 1, 8 and auto (the prune
   stage, L1; auto's targets fp32 and int8 on both runtimes), timed in fp32 on both runtimes: latency and
   channels kept; the staircases auto found (a plot per model and target).
3. The latency model: every model's fp32 and all-int8 p50 predicted as the sum of its layers against the
   measured one, per runtime.
4. Digits: MobileNetV2 and ResNet-18 for 32x32 digits pruned by half and QAT-trained by a recipe with auto and
   int8 exports: accuracy against the reference, agreement, speed against the fp32 twin.

Writes the "int8 suite" sections of benchmarks/RESULTS.md and benchmarks/staircases-*.png.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chains import hand_prune, stock_int8
from common import (
    ROOT,
    RuntimeMeter,
    machine_line,
    make_context,
    random_bundle,
    utc_now,
    versions_line,
    write_section,
)

from edgecompress.console import UI

SECTIONS = {
    "precision": "## int8 suite: precision at 224 (fp32, stock int8, edgecompress all-int8 / int8 / auto)",
    "digits": "## int8 suite: digits variants pruned by half and QAT-trained",
    "round_to": "## int8 suite: round_to 1 / 8 / auto",
    "latency_model": "## int8 suite: latency model, predicted vs measured",
}
RUNTIMES = ("litert", "openvino")
FORMATS = {"litert": "tflite", "openvino": "openvino"}
NEEDED = 1.3  # int8 over fp32 at 224, on unpruned models


@dataclass(frozen=True)
class Settings:
    quick: bool
    threads: int = 2
    rounds: int = 5
    runs: int = 100
    warmup: float = 0.5
    official_rounds: int = 4  # OpenVINO runs in a slow mode in some fresh processes here: best of several


def _recipe(
    shape: list[int], exports: str, stages: str = "[{type: quantize, mode: ptq, calibration_samples: 32}]"
) -> str:
    return f"name: bench\nmodel: {{source: x.py:f, input_shape: {shape}}}\nstages: {stages}\nexport: {exports}\ndevices: [desktop]\n"


class Meter(RuntimeMeter):
    """Interleaved fresh-process rounds through edgecompress's LocalRunner, and the official tools."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            threads=settings.threads, runs=settings.runs, warmup=settings.warmup, rounds=settings.rounds
        )
        self.s = settings

    def official(
        self, artifacts: dict[str, Any], shape: list[int], work: Path, expected: dict[str, float]
    ) -> dict[str, float]:
        """Best p50 of each artifact by its runtime's official tool, in interleaved rounds (A, B, A, B, ...)."""
        from official_tools import benchmark_app_p50, litert_benchmark_p50

        best = dict.fromkeys(artifacts, float("inf"))
        for _ in range(self.s.official_rounds):
            for key, artifact in artifacts.items():
                if artifact.runtime == "litert":
                    p50 = litert_benchmark_p50(artifact.path, self.s.threads, work, expected[key])
                else:
                    p50 = benchmark_app_p50(artifact.path, shape, self.s.threads, "f32", seconds=3)
                best[key] = min(best[key], p50)
        return best


def models_224(quick: bool) -> list[tuple[str, Any, bool]]:
    """(name, model, pruned) of the section-1 models."""
    import torch
    from architectures import efficientnet_b0, mobilenet_v2, mobilenet_v3_small, resnet18

    torch.manual_seed(0)
    out: list[tuple[str, Any, bool]] = [("MobileNetV2-1.0", mobilenet_v2().eval(), False)]
    if quick:
        return out
    out += [
        ("MobileNetV3-Small", mobilenet_v3_small().eval(), False),
        ("EfficientNet-B0", efficientnet_b0().eval(), False),
        ("ResNet-18", resnet18().eval(), False),
    ]
    for name, factory in (("MobileNetV2-1.0", mobilenet_v2), ("ResNet-18", resnet18)):
        model = factory().eval()
        classifier = model.classifier if hasattr(model, "classifier") else model.fc
        hand_prune(model, 0.5, [1, 3, 224, 224], classifier)
        out.append((f"{name} pruned 0.5", model.eval(), True))
    return out


def precision_section(
    settings: Settings, meter: Meter, work: Path, ui: UI
) -> tuple[list[dict[str, Any]], dict]:
    """Section 1 rows, and what section 3 needs (the models' quantized graphs and artifacts)."""
    from edgecompress.precision import Planner
    from edgecompress.recipe import ExportSpec
    from edgecompress.registry import STAGES

    shape = [1, 3, 224, 224]
    rows, kept = [], {}
    for name, model, pruned in models_224(settings.quick):
        t0 = time.perf_counter()
        folder = work / name.replace(" ", "_")
        exports = (  # int8 and auto on each runtime: their precision plans share one race
            "[{format: tflite, precision: int8}, {format: tflite, precision: auto}, "
            "{format: openvino, precision: int8}, {format: openvino, precision: auto}]"
        )
        ctx = make_context(_recipe(shape, exports), folder, random_bundle(shape, 32), ui)
        ctx.current_stage = 0
        ui.info(f"[bold]{name}[/bold]: quantizing (PTQ) and planning on this machine")
        quantized = STAGES.get("quantize")(ctx.recipe.stages[0]).apply(copy.deepcopy(model), ctx)
        planner = Planner(ctx, quantized=quantized, float_model=model, devices=[meter.device], ui=ui)
        stock = stock_int8(model, ctx.data.calibration.x, folder, "stock")
        for runtime in RUNTIMES:
            fmt = FORMATS[runtime]
            artifacts: dict[str, Any] = {}
            plans = {}
            for precision in ("int8", "auto"):
                spec = ExportSpec(format=fmt, precision=precision)
                plan = planner.plan(spec)
                plans[precision] = plan
                ops = None if plan.float_model else plan.ops
                artifacts[f"edgecompress {precision}"] = planner.exported(
                    spec, ops
                ) or planner.export_candidate(spec, ops)
            base = ExportSpec(format=fmt, precision="int8")
            artifacts["edgecompress all-int8"] = planner.exported(base, {}) or planner.export_candidate(
                base, {}
            )
            artifacts["fp32"] = planner.exported(base, None) or planner.export_candidate(base, None)
            artifacts["stock int8"] = stock[runtime]
            ui.info(
                f"  {name} / {runtime}: timing {len(artifacts)} artifacts in {settings.rounds} interleaved rounds"
            )
            timings = meter.timings(artifacts)
            fp32 = timings["fp32"].p50_ms
            chosen = {key: artifacts[key] for key in ("fp32", "edgecompress auto")}
            official = meter.official(chosen, shape, folder, {k: timings[k].p50_ms for k in chosen})
            rows.append(
                {
                    "model": name,
                    "pruned": pruned,
                    "runtime": runtime,
                    "timings": timings,
                    "official": official,
                    "auto_chosen": plans["auto"].chosen,
                    "int8_forms": _forms(plans["int8"]),
                    "auto_forms": _forms(plans["auto"]),
                    "speedup": {k: fp32 / t.p50_ms for k, t in timings.items()},
                }
            )
        kept[name] = (model, quantized, planner, folder)
        ui.info(f"  {name}: {time.perf_counter() - t0:.0f} s")
    return rows, kept


def _forms(plan: Any) -> str:
    counts: dict[str, int] = {}
    for form in plan.ops.values():
        counts[form] = counts.get(form, 0) + 1
    return ", ".join(f"{n} {f}" for f, n in sorted(counts.items())) or "all int8"


def precision_report(rows: list[dict[str, Any]], settings: Settings, stamp: str) -> str:
    variants = ("fp32", "stock int8", "edgecompress all-int8", "edgecompress int8", "edgecompress auto")
    lines = [
        SECTIONS["precision"],
        "",
        f"Measured {stamp} by `.venv/bin/python benchmarks/int8_suite.py`.",
        "",
        f"- Machine: {machine_line()}",
        f"- Versions: {versions_line()}",
        f"- Latency: edgecompress's LocalRunner, {settings.rounds} interleaved fresh-process rounds of {settings.runs} "
        f"runs (each cell: fastest round's p50 in ms, and the speedup over fp32 on the same runtime); official "
        f"tools ({settings.official_rounds} rounds, best): `litert-benchmark --num_threads {settings.threads}`, "
        f"`benchmark_app -hint none -nthreads {settings.threads} -infer_precision f32 -t 3`.",
        "- Stock int8: litert-torch PT2E PTQ (LiteRT), `nncf.quantize` defaults on the fp32 IR (OpenVINO). "
        "edgecompress: the quantize stage's PTQ (32 random calibration images); all-int8 = its graph lowered "
        "as quantized; int8 / auto = the plans made on this machine (forms in the last columns).",
        "",
        "| model | runtime | "
        + " | ".join(variants)
        + " | official fp32 / auto | auto chose | int8 plan forms |",
        "|---|---|" + "---:|" * len(variants) + "---:|---|---|",
    ]
    for r in rows:
        cells = [f"{r['timings'][v].p50_ms:.3f} ({r['speedup'][v]:.2f}x)" for v in variants]
        off = r["official"]
        lines.append(
            f"| {r['model']} | {r['runtime']} | "
            + " | ".join(cells)
            + f" | {off['fp32']:.3f} / {off['edgecompress auto']:.3f} ({off['fp32'] / off['edgecompress auto']:.2f}x) | "
            f"{r['auto_chosen']} | {r['int8_forms']} |"
        )
    unpruned = {(r["model"], r["runtime"]): r["timings"]["fp32"].p50_ms for r in rows if not r["pruned"]}
    lines += ["", "The artifact edgecompress recommends (auto) against the unpruned fp32 export:", ""]
    for r in rows:
        base = unpruned.get((r["model"].removesuffix(" pruned 0.5"), r["runtime"]))
        if base is not None:
            auto = r["timings"]["edgecompress auto"].p50_ms
            lines.append(
                f"- {r['model']} / {r['runtime']}: {base:.3f} -> {auto:.3f} ms (**{base / auto:.2f}x**, {r['auto_chosen']})"
            )
    lines += ["", "Targets:", ""]
    for r in rows:
        auto = r["timings"]["edgecompress auto"]
        best_other = min(r["timings"][v].p50_ms for v in ("fp32", "stock int8", "edgecompress all-int8"))
        slower = auto.p50_ms > best_other * 1.05
        if not r["pruned"]:
            ours = r["speedup"]["edgecompress int8"]
            official = r["official"]["fp32"] / r["official"]["edgecompress auto"]
            status = (
                "holds"
                if min(ours, r["speedup"]["edgecompress auto"], official) >= NEEDED
                else "does NOT hold"
            )
            lines.append(
                f"- {r['model']} / {r['runtime']}: int8 >= {NEEDED}x fp32 {status} (edgecompress int8 {ours:.2f}x, auto "
                f"{r['speedup']['edgecompress auto']:.2f}x; official tools on auto {official:.2f}x)."
            )
        lines.append(
            f"- {r['model']} / {r['runtime']}: auto {'IS' if slower else 'is not'} measurably slower than the fastest of "
            f"fp32, stock int8 and all-int8 ({auto.p50_ms:.3f} vs {best_other:.3f} ms)."
        )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- 2. round_to


def round_to_section(settings: Settings, meter: Meter, work: Path, ui: UI) -> tuple[str, list[Path]]:
    import torch
    from architectures import mobilenet_v2, resnet18

    from edgecompress.recipe import ExportSpec
    from edgecompress.registry import EXPORTERS, STAGES

    shape = [1, 3, 224, 224]
    exports = (
        "[{format: tflite, precision: fp32}, {format: openvino, precision: fp32}, "
        "{format: tflite, precision: int8}, {format: openvino, precision: int8}]"
    )
    lines = [
        SECTIONS["round_to"],
        "",
        f"Measured {utc_now()}: each model at 224 with random weights, the prune stage at ratio 0.5 (L1) with each "
        "round_to; auto's targets: LiteRT and OpenVINO, fp32 and int8, on this machine. The fp32 exports are "
        f"timed: p50 ms (fastest of {settings.rounds} interleaved rounds, range).",
        "",
        "| model | round_to | conv channels kept | MACs | LiteRT fp32 | OpenVINO fp32 | prune stage s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    targets: list[str] = []
    plots: list[Path] = []
    for model_name, factory in (("MobileNetV2-1.0", mobilenet_v2), ("ResNet-18", resnet18)):
        results, staircases, artifacts = {}, {}, {}
        for round_to in (1, 8, "auto"):
            torch.manual_seed(0)
            stages = f"[{{type: prune, ratio: 0.5, criterion: l1, round_to: {round_to}}}]"
            folder = work / f"round_to_{model_name}_{round_to}"
            ctx = make_context(_recipe(shape, exports, stages), folder, random_bundle(shape, 8), ui)
            ctx.current_stage = 0
            t0 = time.perf_counter()
            pruned = STAGES.get("prune")(ctx.recipe.stages[0]).apply(factory().eval(), ctx)
            notes = ctx.notes[0]
            channels = sum(m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv2d))
            results[round_to] = {
                "channels": channels,
                "macs": notes["macs_after"],
                "seconds": time.perf_counter() - t0,
            }
            if round_to == "auto":
                staircases = notes["staircases"]
            for fmt in ("tflite", "openvino"):
                spec = ExportSpec(format=fmt, precision="fp32")
                artifact = EXPORTERS.get(fmt)().export(pruned, spec, ctx, folder)
                artifacts[f"{artifact.runtime} {round_to}"] = artifact
        ui.info(f"round_to {model_name}: timing {len(artifacts)} artifacts")
        timings = meter.timings(artifacts)
        for round_to, r in results.items():
            lines.append(
                f"| {model_name} | {round_to} | {r['channels']} | {r['macs'] / 1e6:.1f} M | "
                f"{timings[f'litert {round_to}'].text()} | {timings[f'openvino {round_to}'].text()} | "
                f"{r['seconds']:.0f} |"
            )
        for rt in RUNTIMES:
            auto = timings[f"{rt} auto"].p50_ms
            for other in (1, 8):
                theirs = timings[f"{rt} {other}"].p50_ms
                more = results["auto"]["channels"] >= results[other]["channels"]
                targets.append(
                    f"- {model_name} / {rt} fp32: auto {auto:.3f} ms vs round_to {other} {theirs:.3f} ms: "
                    f"{'not slower' if auto <= theirs * 1.05 else 'SLOWER'} "
                    f"({'with' if more else 'but NOT with'} at least as many channels)."
                )
        plots += plot_staircases(staircases, model_name)
    lines += ["", "Targets (slower means by more than 5%):", "", *targets]
    lines += ["", "Staircases found: " + ", ".join(f"`benchmarks/{p.name}`" for p in plots)]
    return "\n".join(lines) + "\n", plots


def plot_staircases(staircases: dict[str, dict[str, dict[str, float]]], model_name: str) -> list[Path]:
    """One plot per target (runtime x precision) of the groups' swept costs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    labels = sorted({t for by in staircases.values() for t in by})
    for label in labels:
        groups = [(root, by[label]) for root, by in staircases.items() if label in by and len(by[label]) >= 3]
        if not groups:
            continue
        fig, ax = plt.subplots(figsize=(8, 5))
        for root, costs in groups[:12]:
            xs = sorted(int(c) for c in costs)
            by_count = {int(c): t for c, t in costs.items()}  # int keys in a build, str once read from JSON
            ax.plot(xs, [by_count[x] * 1000 for x in xs], marker="o", ms=3, label=root)
        target = label.split("/", 1)[1]
        ax.set_xlabel("channels of the pruning group")
        ax.set_ylabel("the group's layers, µs (latency model)")
        ax.set_title(f"Channel staircases, {target} ({model_name}-224 pruned 0.5)")
        ax.legend(fontsize=6)
        path = ROOT / "benchmarks" / f"staircases-{model_name.split('-')[0].lower()}-{target}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


# ------------------------------------------------------------------------------------------- 4. digits QAT


DIGITS_RECIPE = """\
name: {name}
seed: 0
model: {{source: {source}, input_shape: [1, 1, 32, 32]}}
data: {{dataset: digits, image_size: [32, 32], normalize: {{mean: [0.5], std: [0.5]}}, augment: {{shift: 1}}}}
stages:
  - {{type: train, epochs: 15, lr: 0.003}}
  - {{type: prune, method: channel, ratio: 0.5, criterion: l1, round_to: 8}}
  - {{type: distill, epochs: 25, lr: 0.003, alpha: 0.5}}
  - {{type: quantize, mode: qat, epochs: 3, freeze_bn_after: 2}}
export:
  - {{format: tflite, precision: auto}}
  - {{format: openvino, precision: auto}}
  - {{format: tflite, precision: int8}}
  - {{format: openvino, precision: int8}}
devices: [desktop]
profile: {{rounds: 5}}
gates: {{max_accuracy_drop: 0.01}}
"""


def digits_section(work: Path, ui: UI) -> str:
    """MobileNetV2 and ResNet-18 for digits, pruned by half and QAT'd by a recipe, built in a child process."""
    from suite import build_in_child

    lines = [
        SECTIONS["digits"],
        "",
        f"Measured {utc_now()}: recipes built in child processes (train 15 epochs, prune 0.5 round_to 8, distill "
        "25, QAT 3; exports auto and int8 on both runtimes, profiled in 5 interleaved rounds). Accuracy on the 360 "
        "test images, through the runtime; agreement with each artifact's own torch graph.",
        "",
        "| model | artifact | test acc | vs reference | agreement | p50 ms | fp32 twin p50 ms | speedup | plan |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    targets = []
    for name, factory in (
        ("MobileNetV2-digits", "mobilenet_v2_digits"),
        ("ResNet-18-digits", "resnet18_digits"),
    ):
        recipe = work / f"{name}.yaml"
        source = f"{ROOT}/examples/architectures.py:{factory}"
        recipe.write_text(DIGITS_RECIPE.format(name=name.lower(), source=source))
        ui.info(f"[bold]{name}[/bold]: building the recipe in a child process")
        report, cost = build_in_child(recipe, work / name)
        reference = report.reference.test_accuracy
        artifacts = {a.name: a for a in report.artifacts}
        plans = {p.artifact: p for p in report.precision_plans}
        for a in report.artifacts:
            if a.role != "export":
                continue
            twin = artifacts.get(f"{a.format}-fp32-twin")
            mine = a.measurements.get("desktop")
            theirs = twin.measurements.get("desktop") if twin else None
            p50 = mine.latency.p50_ms if mine else float("nan")
            twin_p50 = theirs.latency.p50_ms if theirs else float("nan")
            lines.append(
                f"| {name} | {a.name} | {a.parity.accuracy:.2%} | {(a.parity.accuracy - reference) * 100:+.2f} pt | "
                f"{a.parity.agreement:.2%} | {p50:.3f} | {twin_p50:.3f} | {twin_p50 / p50:.2f}x | "
                f"{plans[a.name].chosen if a.name in plans else '—'} |"
            )
            ok = reference - a.parity.accuracy <= 0.01 + 1e-9 and a.parity.agreement >= 0.99
            targets.append(
                f"- {name} / {a.name}: {'holds' if ok else 'does NOT hold'} (loses "
                f"{(reference - a.parity.accuracy) * 100:.2f} pt, agrees on {a.parity.agreement:.2%})"
            )
        for fmt in ("tflite", "openvino"):  # auto never measurably slower than the fp32 twin or all-int8
            p50 = {
                n: artifacts[n].measurements["desktop"].latency.p50_ms
                for n in (f"{fmt}-auto", f"{fmt}-int8", f"{fmt}-fp32-twin")
                if n in artifacts and "desktop" in artifacts[n].measurements
            }
            if len(p50) == 3:
                fastest = min(p50[f"{fmt}-int8"], p50[f"{fmt}-fp32-twin"])
                targets.append(
                    f"- {name} / {fmt}-auto {p50[f'{fmt}-auto']:.3f} ms vs the fastest of int8 and fp32 "
                    f"{fastest:.3f} ms: {'holds' if p50[f'{fmt}-auto'] <= 1.05 * fastest else 'does NOT hold'} "
                    "(5% tolerance)"
                )
        cross = [c for c in report.cross_runtime if "twin" not in c.a]
        targets += [f"- {name}: {c.a} vs {c.b}: {c.agreement:.2%} of test images agree" for c in cross]
        lines.append(f"| {name} | (build {cost['build_seconds']:.0f} s) | | | | | | | |")
    lines += [
        "",
        "Targets: at most 1 point lost against the reference, at least 99% agreement:",
        "",
        *targets,
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- 3. latency model


def latency_model_section(rows: list[dict[str, Any]], kept: dict, meter: Meter, ui: UI) -> str:
    from edgecompress.frameworks.torch_layers import float_graph, layer_ops
    from edgecompress.latency.model import LatencyModel

    shape = [1, 3, 224, 224]
    lines = [
        SECTIONS["latency_model"],
        "",
        f"Measured {utc_now()}: the sum of a model's one-layer latencies (latency model, this machine, 2 threads; the "
        "per-inference cost counted once) against its measured p50 (section 1's timings).",
        "",
        "| model | runtime | precision | predicted ms | measured ms | error |",
        "|---|---|---|---:|---:|---:|",
    ]
    measured = {(r["model"], r["runtime"]): r["timings"] for r in rows}
    for name, (model, _quantized, planner, _) in kept.items():
        float_layers = layer_ops(float_graph(model, shape), shape)
        int8_layers = list(planner.layers.values())
        for runtime in RUNTIMES:
            lm = LatencyModel(meter.device, runtime, threads=meter.s.threads, ui=ui)
            for precision, layers, key in (
                ("fp32", float_layers, "fp32"),
                ("int8", int8_layers, "edgecompress all-int8"),
            ):
                predicted = lm.predict(
                    [layer.graph(precision) for layer in layers], precision=precision
                ).total_ms
                actual = measured[(name, runtime)][key].p50_ms
                lines.append(
                    f"| {name} | {runtime} | {precision} | {predicted:.3f} | {actual:.3f} | {(predicted / actual - 1) * 100:+.0f}% |"
                )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one model, 2 rounds: a smoke check")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument(
        "--parts", default="precision,round_to,digits", help="comma-separated: precision, round_to, digits"
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    settings = Settings(
        quick=args.quick, rounds=2 if args.quick else 5, official_rounds=1 if args.quick else 4
    )
    ui = UI(verbosity=1)
    meter = Meter(settings)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgecompress-int8-suite-") as tmp:
        work = Path(tmp)
        parts = args.parts.split(",")

        def done(key: str, text: str) -> None:
            """Each section is written when it is ready: a later part that fails loses nothing before it."""
            minutes = (time.perf_counter() - start) / 60
            text = (
                text.rstrip("\n") + f"\n\n(Written {minutes:.0f} minutes into the `make bench-int8` run.)\n"
            )
            print(text)
            if not args.no_write:
                write_section(SECTIONS[key], text)

        if "precision" in parts:
            rows, kept = precision_section(settings, meter, work, ui)
            done("precision", precision_report(rows, settings, utc_now()))
            done("latency_model", latency_model_section(rows, kept, meter, ui))
            for _, _, planner, _ in kept.values():
                planner.close()
        if "round_to" in parts and not args.quick:
            done("round_to", round_to_section(settings, meter, work, ui)[0])
        if "digits" in parts and not args.quick:
            done("digits", digits_section(work, ui))
    ui.info(f"bench-int8: {(time.perf_counter() - start) / 60:.0f} minutes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
