"""The benchmark suite of issue 3: speed at 224, the hand-made chain vs edgecompress on digits, accuracy of
every variant, pipeline cost, and which targets hold.

    .venv/bin/python benchmarks/suite.py            # the full run (`make bench`)
    .venv/bin/python benchmarks/suite.py --quick    # tiny epoch counts, one ratio: a smoke check

1. Latency at 224x224 (MobileNetV2-1.0, ResNet-18; random weights, batch 1, 2 threads) on LiteRT and OpenVINO:
   the fp32 export of the unpruned model; the stock tools alone (litert-torch PT2E PTQ; nncf.quantize); the
   hand chain (Torch-Pruning 0.5 + stock PTQ); edgecompress prune 0.5 + int8 through its own stages and
   exporters. Each runtime's variants are timed in interleaved fresh-process rounds; ratios from one run.
2. Digits at 32x32 with `mobilenet_v2_digits`: one trained baseline shared by everything, then per pruning
   ratio the hand chain (benchmarks/chains.py) against an edgecompress build of the recipe (prune + distill +
   QAT). Accuracy measured on the runtimes; latency in interleaved rounds of all artifacts of a runtime.
   Plots: benchmarks/tradeoff-litert.png, benchmarks/tradeoff-openvino.png.
3. Accuracy of every variant: the quickstart build's steps and artifacts, and the digits section's.
4. Pipeline cost: wall time and peak memory of every build (each runs in a child process).
5. Which of issue 3's targets hold, from the numbers above.

Writes the "Suite: ..." sections of benchmarks/RESULTS.md (the other sections are left as they are).
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chains import export_fp32, hand_prune, plain_finetune, stock_int8
from common import ROOT, RuntimeMeter, make_context, random_bundle, utc_now, write_section
from suite_report import (
    RUNTIMES,
    SECTIONS,
    DigitsResult,
    Point,
    accuracy_section,
    cost_section,
    digits_section,
    latency_section,
    plot,
    targets_section,
)

from edgecompress.console import UI

ARCHITECTURES = ROOT / "examples" / "architectures.py"
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"
DIGITS_DATA = (
    "data: {{dataset: digits, image_size: [32, 32], channels: 1, layout: NCHW, "
    "normalize: {{mean: [0.5], std: [0.5]}}, batch_size: 64, augment: {{shift: {shift}}}}}\n"
)


@dataclass(frozen=True)
class Settings:
    quick: bool
    threads: int
    runs: int
    warmup: float
    rounds: int
    width: float
    train_epochs: int
    train_lr: float
    distill_epochs: int
    qat_epochs: int
    lr: float
    alpha: float
    shift: int
    round_to: int
    ratios: tuple[float, ...]
    calibration_224: int = 32


# ------------------------------------------------------------------------------------------- 1. latency @224


def latency_224(settings: Settings, meter: RuntimeMeter, work: Path, ui: UI) -> list[dict[str, Any]]:
    """fp32 / stock int8 / hand chain / edgecompress prune 0.5 + int8, both models, both runtimes."""
    import torch
    from architectures import mobilenet_v2, resnet18

    from edgecompress.registry import EXPORTERS, FRAMEWORKS, STAGES

    shape = [1, 3, 224, 224]
    adapter = FRAMEWORKS.get("torch")()
    rows: list[dict[str, Any]] = []
    for name, factory in (("MobileNetV2-1.0", mobilenet_v2), ("ResNet-18", resnet18)):
        torch.manual_seed(0)
        model = factory().eval()
        macs = adapter.stats(model, shape).macs
        out_dir = work / name
        data = random_bundle(shape, settings.calibration_224)
        ctx = make_context(
            f"name: suite-{name}\nseed: 0\nmodel: {{source: suite.py:x, input_shape: {shape}}}\n"
            "data: {image_size: [224, 224], channels: 3}\n"
            "stages:\n"
            f"  - {{type: prune, method: channel, ratio: 0.5, criterion: l1, round_to: {settings.round_to}}}\n"
            f"  - {{type: quantize, mode: ptq, calibration_samples: {settings.calibration_224}}}\n"
            "export: [{format: tflite, precision: int8}, {format: openvino, precision: int8}]\n",
            out_dir,
            data,
            ui,
        )
        ui.info(f"[bold]{name}[/bold] @224: {macs / 1e6:.0f} M MACs")
        calibration = np.ascontiguousarray(data.calibration.x)
        fp32 = export_fp32(model, ctx, out_dir)
        stock = stock_int8(model, calibration, out_dir, name)
        hand_model = copy.deepcopy(model)
        classifier = hand_model.classifier if hasattr(hand_model, "classifier") else hand_model.fc
        hand_prune(hand_model, 0.5, shape, classifier)
        hand_macs = adapter.stats(hand_model, shape).macs
        hand = stock_int8(hand_model, calibration, out_dir, f"{name}-hand")
        pruned = copy.deepcopy(model)
        for i, config in enumerate(ctx.recipe.stages):
            ctx.current_stage = i
            pruned = STAGES.get(config.type)(config).apply(pruned, ctx)
        ours = {}
        for spec in ctx.recipe.export:
            artifact = EXPORTERS.get(spec.format)().export(pruned, spec, ctx, out_dir)
            ours[artifact.runtime] = artifact
        ours_macs = ctx.notes[0]["macs_after"]
        for runtime in RUNTIMES:
            variants = {
                "fp32 (unpruned export)": (fp32[runtime], macs),
                "stock int8 PTQ": (stock[runtime], macs),
                "hand chain: Torch-Pruning 0.5 + stock int8 PTQ": (hand[runtime], hand_macs),
                "edgecompress prune 0.5 + int8 PTQ": (ours[runtime], ours_macs),
            }
            timings = meter.timings({v: a for v, (a, _) in variants.items()})
            base = timings["fp32 (unpruned export)"].p50_ms
            for variant, (artifact, m) in variants.items():
                t = timings[variant]
                rows.append(
                    {
                        "model": name,
                        "runtime": runtime,
                        "variant": variant,
                        "macs": m,
                        "timing": t,
                        "speedup": base / t.p50_ms,
                        "size": artifact.size_bytes,
                    }
                )
                ui.info(f"  {runtime} {variant}: {t.text(2)} ms ({base / t.p50_ms:.2f}x)")
    return rows


# ------------------------------------------------------------------------------------------- 2. digits


def _recipe(settings: Settings, ratio: float, checkpoint: Path) -> str:
    s = settings
    return (
        f"name: suite-digits-{ratio}\nseed: 0\n"
        f"model: {{source: '{ARCHITECTURES}:mobilenet_v2_digits', kwargs: {{width: {s.width}}}, "
        f"checkpoint: '{checkpoint}', input_shape: [1, 1, 32, 32]}}\n"
        + DIGITS_DATA.format(shift=s.shift)
        + "stages:\n"
        f"  - {{type: prune, method: channel, ratio: {ratio}, criterion: l1, round_to: {s.round_to}}}\n"
        f"  - {{type: distill, epochs: {s.distill_epochs}, lr: {s.lr}, alpha: {s.alpha}}}\n"
        f"  - {{type: quantize, mode: qat, epochs: {s.qat_epochs}}}\n"
        "export: [{format: tflite, precision: int8}, {format: openvino, precision: int8}]\n"
        "devices: [desktop]\n"
        # the suite times every artifact itself, interleaved with the hand chain's; one round suffices here
        f"profile: {{runs: {s.runs}, warmup_seconds: {s.warmup}, threads: {s.threads}, rounds: 1}}\n"
    )


def build_in_child(recipe: Path, out: Path) -> tuple[Any, dict[str, Any]]:
    """run_build in a fresh process; its report and the process's wall time and peak memory."""
    from edgecompress.report import Report

    stats = out.parent / f"{out.name}.stats.json"
    t = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--build-child", str(recipe), str(out), str(stats)], check=True)
    cost = json.loads(stats.read_text())
    cost["process_seconds"] = time.perf_counter() - t
    return Report.model_validate_json((out / "report.json").read_text()), cost


def build_child(recipe: str, out: str, stats: str) -> int:
    from edgecompress.errors import GateFailed
    from edgecompress.pipeline import run_build
    from edgecompress.report import Report

    t = time.perf_counter()
    try:
        report = run_build(recipe, out=out, verbosity=0)
    except GateFailed as exc:  # the output and report are written; a failed gate is a result, not a crash
        print(f"build {out}: gate failed: {exc}", file=sys.stderr)
        report = Report.model_validate_json((Path(out) / "report.json").read_text())
    wall = time.perf_counter() - t
    Path(stats).write_text(
        json.dumps(
            {
                "build_seconds": wall,
                "report_wall_seconds": report.wall_seconds,
                # ru_maxrss is KiB on Linux; children = the runtimes' measuring processes
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "peak_rss_children_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                "stage_seconds": {s.name: s.seconds for s in report.steps},
            }
        )
    )
    return 0


def digits(settings: Settings, meter: RuntimeMeter, work: Path, ui: UI) -> DigitsResult:
    import torch
    from architectures import mobilenet_v2_digits

    from edgecompress.data import load_data
    from edgecompress.exporters.base import artifact_from_file
    from edgecompress.registry import FRAMEWORKS

    s = settings
    shape = [1, 1, 32, 32]
    work.mkdir(parents=True, exist_ok=True)
    result = DigitsResult()
    adapter = FRAMEWORKS.get("torch")()
    ctx = make_context(
        "name: suite-digits\nseed: 0\nmodel: {source: x.py:f, input_shape: [1, 1, 32, 32]}\n"
        + DIGITS_DATA.format(shift=0)
        + "export: [{format: tflite, precision: fp32}]\n",
        work,
        None,  # type: ignore[arg-type]
        ui,
    )
    ctx.data = data = load_data(ctx.recipe.data, work / "recipe.yaml", seed=0)

    def test_accuracy(model: Any) -> float:
        return float((adapter.predict(model, data.test.x).argmax(1) == data.test.y).mean())

    ui.info(f"[bold]quickstart[/bold]: building {QUICKSTART.relative_to(ROOT)} in a child process")
    result.quickstart, cost = build_in_child(QUICKSTART, work / "quickstart")
    result.builds["quickstart"] = cost

    torch.manual_seed(0)
    baseline = mobilenet_v2_digits(width=s.width)
    ui.info(f"[bold]digits[/bold]: training the baseline for {s.train_epochs} epochs")
    result.epoch_seconds = plain_finetune(baseline, data, epochs=s.train_epochs, lr=s.train_lr, seed=0)
    checkpoint = work / "baseline.pt"
    torch.save(baseline.state_dict(), checkpoint)
    result.baseline_accuracy = test_accuracy(baseline)
    result.baseline_macs = macs = adapter.stats(baseline, shape).macs
    ui.info(f"  baseline: test acc {result.baseline_accuracy:.4f}, {macs / 1e6:.1f} M MACs")
    artifacts: dict[tuple[str, str, float], Any] = {}
    for runtime, artifact in export_fp32(baseline, ctx, work / "baseline").items():
        artifacts[("baseline", runtime, 0.0)] = artifact
        result.baseline[runtime] = Point(
            runtime, None, meter.accuracy(artifact, data.test, data.num_classes), artifact.size_bytes, macs
        )

    for ratio in s.ratios:
        ui.info(f"[bold]ratio {ratio}[/bold]: hand-made chain")
        model = copy.deepcopy(baseline)
        t = time.perf_counter()
        hand_prune(model, ratio, shape, model.classifier)
        hand_macs = adapter.stats(model, shape).macs
        plain_finetune(model, data, epochs=s.distill_epochs + s.qat_epochs, lr=s.lr, seed=0)
        result.hand_float_accuracy[ratio] = test_accuracy(model)
        made = stock_int8(model, np.ascontiguousarray(data.calibration.x), work / f"hand-{ratio}", "hand")
        result.hand_seconds[ratio] = time.perf_counter() - t
        result.hand[ratio] = {}
        for runtime, artifact in made.items():
            artifacts[("hand", runtime, ratio)] = artifact
            acc = meter.accuracy(artifact, data.test, data.num_classes)
            result.hand[ratio][runtime] = Point(runtime, None, acc, artifact.size_bytes, hand_macs)

        ui.info(f"[bold]ratio {ratio}[/bold]: edgecompress build")
        recipe = work / f"suite-digits-{ratio}.yaml"
        recipe.write_text(_recipe(s, ratio, checkpoint))
        out = work / f"build-{ratio}"
        report, cost = build_in_child(recipe, out)
        result.builds[f"digits ratio {ratio}"] = {**cost, "ratio": ratio}
        result.ours_steps[ratio] = [(step.name, step.test_accuracy) for step in report.steps[2:]]
        result.ours[ratio] = {}
        for a in report.artifacts:
            if a.precision != "int8":
                continue
            artifacts[("ours", a.runtime, ratio)] = artifact_from_file(out / a.files[0])
            result.ours[ratio][a.runtime] = Point(
                a.runtime, None, a.parity.accuracy, a.size_bytes, report.steps[-1].macs
            )
        for who, points in (("hand", result.hand[ratio]), ("edgecompress", result.ours[ratio])):
            for rt, p in points.items():
                ui.info(f"  {who} {rt}: acc {p.accuracy:.4f}, {p.macs / 1e6:.2f} M MACs")

    for runtime in RUNTIMES:
        ui.info(f"timing every {runtime} artifact in {s.rounds} interleaved rounds")
        timings = meter.timings({k: a for k, a in artifacts.items() if k[1] == runtime})
        for (who, _, ratio), timing in timings.items():
            series = {"baseline": None, "hand": result.hand, "ours": result.ours}[who]
            point = result.baseline[runtime] if series is None else series[ratio][runtime]
            point.timing = timing
    return result


# ------------------------------------------------------------------------------------------- main


def settings_from(args: argparse.Namespace) -> Settings:
    quick = args.quick

    def pick(value: Any, quick_value: Any, full_value: Any) -> Any:
        return value if value is not None else (quick_value if quick else full_value)

    return Settings(
        quick=quick,
        threads=args.threads,
        runs=pick(args.runs, 50, 200),
        warmup=pick(args.warmup, 0.3, 1.0),
        rounds=pick(args.rounds, 2, 5),
        width=args.width,
        train_epochs=pick(args.train_epochs, 1, 15),
        train_lr=2e-3,
        distill_epochs=pick(args.distill_epochs, 1, 40),
        qat_epochs=pick(args.qat_epochs, 1, 2),
        lr=args.lr,
        alpha=args.alpha,
        shift=args.shift,
        round_to=args.round_to,
        ratios=tuple(args.ratios) if args.ratios else ((0.5,) if quick else (0.3, 0.5, 0.7)),
    )


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--build-child":
        return build_child(*sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny epoch counts and one ratio (smoke check)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, help="timed runs per measurement (default 200; quick 50)")
    parser.add_argument(
        "--warmup", type=float, help="warm-up seconds per measurement (default 1.0; quick 0.3)"
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds per artifact (default 5; quick 2)")
    parser.add_argument("--width", type=float, default=0.35, help="mobilenet_v2_digits width")
    parser.add_argument("--train-epochs", type=int, help="baseline epochs (default 15; quick 1)")
    parser.add_argument(
        "--distill-epochs", type=int, help="edgecompress distill epochs (default 40; quick 1)"
    )
    parser.add_argument("--qat-epochs", type=int, help="edgecompress QAT epochs (default 2; quick 1)")
    parser.add_argument("--lr", type=float, default=3e-3, help="fine-tuning lr of both pipelines")
    parser.add_argument("--alpha", type=float, default=0.5, help="edgecompress distill alpha")
    parser.add_argument("--shift", type=int, default=1, help="edgecompress data.augment.shift")
    parser.add_argument("--round-to", type=int, default=8, help="edgecompress prune round_to")
    parser.add_argument(
        "--ratios", type=float, nargs="+", help="pruning ratios (default 0.3 0.5 0.7; quick 0.5)"
    )
    parser.add_argument("--skip-224", action="store_true", help="skip the 224 latency section")
    parser.add_argument(
        "--skip-digits", action="store_true", help="skip the digits, accuracy and cost sections"
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave RESULTS.md and plots alone"
    )
    args = parser.parse_args()
    settings = settings_from(args)

    import os

    import torch

    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")  # the stock chain's converter log
    torch.set_num_threads(settings.threads)
    ui = UI(verbosity=1)
    meter = RuntimeMeter(
        threads=settings.threads, runs=settings.runs, warmup=settings.warmup, rounds=settings.rounds, ui=ui
    )
    t0 = time.perf_counter()
    rows = result = None
    with tempfile.TemporaryDirectory(prefix="edgecompress-suite-") as tmp:
        work = Path(tmp)
        if not args.skip_224:
            rows = latency_224(settings, meter, work / "224", ui)
            text = latency_section(rows, settings, utc_now())
            print(text)
            if not args.no_write:
                write_section(SECTIONS["latency"], text)
        if not args.skip_digits:
            result = digits(settings, meter, work / "digits", ui)
            stamp = utc_now()
            texts = {
                "digits": digits_section(result, settings, stamp),
                "accuracy": accuracy_section(result, settings, stamp),
                "cost": cost_section(result, settings, stamp),
            }
            for key, text in texts.items():
                print(text)
                if not args.no_write:
                    write_section(SECTIONS[key], text)
            if not args.no_write:
                for path in plot(result, settings, stamp):
                    print(f"wrote {path.relative_to(ROOT)}")
    targets = targets_section(rows, result, settings, utc_now())
    print(targets)
    if not args.no_write:
        write_section(SECTIONS["targets"], targets)
    print(f"suite finished in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
