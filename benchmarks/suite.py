"""The benchmark suite of issue 3: speed at 224, the hand-made chain vs edgecompress on digits, pipeline cost.

    .venv/bin/python benchmarks/suite.py            # the full run
    .venv/bin/python benchmarks/suite.py --quick    # tiny epoch counts, one ratio: a smoke check

1. Latency at 224x224 (MobileNetV2-1.0, ResNet-18; random weights, batch 1, 2 threads) on LiteRT and OpenVINO:
   the fp32 export of the unpruned model; the stock tools alone (LiteRT: litert-torch PT2E PTQ; OpenVINO:
   nncf.quantize on the fp32 IR); edgecompress channel prune 0.5 + int8 PTQ through its own stage backends and
   exporters. p50 from LocalRunner; every ratio is to the unpruned fp32 export on the same runtime, one run.
2. Digits at 32x32 with `mobilenet_v2_digits`: one trained baseline shared by everything, then per pruning
   ratio the hand-made chain (Torch-Pruning uniform L1 + plain cross-entropy fine-tuning for the epochs
   edgecompress spends on distill + QAT + stock PTQ per runtime) against an edgecompress build (prune +
   distill + QAT). Accuracy is measured on the runtime (the artifact's test accuracy), latency with
   LocalRunner. Plots: benchmarks/tradeoff-litert.png, benchmarks/tradeoff-openvino.png.
3. Pipeline cost: wall time and peak memory of every edgecompress build (each build runs in a child process).
4. Which of issue 3's targets hold, from the numbers above.

Writes the "Suite: ..." sections of benchmarks/RESULTS.md (the other sections are left as they are).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    ROOT,
    machine_line,
    make_context,
    random_bundle,
    utc_now,
    versions_line,
    write_section,
)

from edgecompress.console import UI

BENCH = ROOT / "benchmarks"
ARCHITECTURES = ROOT / "examples" / "architectures.py"
DIGITS_DATA = (
    "data: {dataset: digits, image_size: [32, 32], channels: 1, layout: NCHW, "
    "normalize: {mean: [0.5], std: [0.5]}, batch_size: 64}\n"
)
SECTIONS = {
    "latency": "## Suite: latency at 224x224",
    "digits": "## Suite: hand-made chain vs edgecompress (digits 32x32)",
    "cost": "## Suite: pipeline cost",
    "targets": "## Suite: issue 3 targets on this machine",
}
RUNTIMES = ("litert", "openvino")


@dataclass
class Settings:
    quick: bool
    threads: int
    runs: int
    warmup: float
    width: float
    train_epochs: int
    distill_epochs: int
    qat_epochs: int
    ratios: tuple[float, ...]
    calibration_224: int = 32


@dataclass
class Point:
    """One artifact measured on its runtime."""

    runtime: str
    p50_ms: float
    accuracy: float | None = None
    size_bytes: int = 0
    macs: int = 0


@dataclass
class DigitsResult:
    baseline_accuracy: float = 0.0  # float torch model on the test split
    baseline: dict[str, Point] = field(default_factory=dict)
    hand: dict[float, dict[str, Point]] = field(default_factory=dict)
    ours: dict[float, dict[str, Point]] = field(default_factory=dict)
    epoch_seconds: list[float] = field(default_factory=list)
    hand_seconds: dict[float, float] = field(default_factory=dict)
    builds: dict[float, dict[str, float]] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- artifacts


def _artifact(path: Path, runtime: str, precision: str, shape: list[int]) -> Any:
    """An artifact made by a stock tool, described as edgecompress's runner needs it."""
    from edgecompress.exporters.base import artifact_from_file

    # the same f32 hint edgecompress's OpenVINO artifacts carry, so all sides compute alike
    hint = "f32" if runtime == "openvino" else None
    update = {"precision": precision, "input_shape": shape, "layout": "NCHW", "inference_precision": hint}
    return artifact_from_file(path).model_copy(update=update)


def stock_litert_int8(model: Any, calibration: np.ndarray, path: Path) -> Any:
    """litert-torch's documented PT2E PTQ: PT2EQuantizer (symmetric, per channel) -> prepare_pt2e ->
    calibrate -> convert_pt2e -> litert_torch.convert(quant_config=...). litert-torch gives the model int8
    input/output tensors; they are put behind float32 ones (QUANTIZE/DEQUANTIZE, same arithmetic) so the
    artifact takes the same float images as every other one."""
    import litert_torch
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgecompress.exporters.tflite_int8 import float_interface

    sample = torch.from_numpy(calibration[:1])
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    graph = torch.export.export(model.eval(), (sample,)).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for i in range(len(calibration)):
            prepared(torch.from_numpy(calibration[i : i + 1]))
    converted = convert_pt2e(prepared, fold_quantize=False)
    content = litert_torch.convert(
        converted, (sample,), quant_config=QuantConfig(pt2e_quantizer=quantizer)
    ).model_content()
    content, _ = float_interface(content)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return _artifact(path, "litert", "int8", list(sample.shape))


def stock_openvino_int8(model: Any, calibration: np.ndarray, path: Path) -> Any:
    """The fp32 IR (ov.convert_model of the torch.export program) quantized by nncf.quantize (defaults) on
    the calibration images."""
    import nncf
    import openvino as ov
    import torch

    sample = torch.from_numpy(calibration[:1])
    with torch.no_grad():
        program = torch.export.export(model.eval(), (sample,))
    ov_model = ov.convert_model(program, input=[ov.PartialShape(list(sample.shape))])
    dataset = nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))])
    quantized = nncf.quantize(ov_model, dataset, subset_size=len(calibration))
    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(path), compress_to_fp16=False)
    return _artifact(path, "openvino", "int8", list(sample.shape))


def stock_int8(model: Any, calibration: np.ndarray, out_dir: Path, name: str) -> dict[str, Any]:
    return {
        "litert": stock_litert_int8(model, calibration, out_dir / f"{name}-stock-int8.tflite"),
        "openvino": stock_openvino_int8(model, calibration, out_dir / f"{name}-stock-int8.xml"),
    }


def export_fp32(model: Any, ctx: Any, out_dir: Path) -> dict[str, Any]:
    """fp32 TFLite and OpenVINO artifacts through edgecompress's exporters."""
    from edgecompress.recipe import ExportSpec
    from edgecompress.registry import EXPORTERS

    out = {}
    for fmt in ("tflite", "openvino"):
        spec = ExportSpec(format=fmt, precision="fp32")
        artifact = EXPORTERS.get(fmt)().export(model, spec, ctx, out_dir)
        out[artifact.runtime] = artifact
    return out


class Meter:
    """p50 through LocalRunner (fresh process per measurement) and accuracy on the runtime."""

    def __init__(self, settings: Settings, ui: UI) -> None:
        from edgecompress.runners.local import LocalRunner
        from edgecompress.specs import load_device

        self.settings = settings
        self.ui = ui
        self.runner = LocalRunner()
        self.device = load_device("desktop")

    def p50(self, artifact: Any) -> float:
        s = self.settings
        m = self.runner.run(artifact, self.device, runs=s.runs, warmup_seconds=s.warmup, threads=s.threads)
        return float(m.latency.p50_ms)

    def accuracy(self, artifact: Any, x: np.ndarray, y: np.ndarray, num_outputs: int) -> float:
        from edgecompress.exporters.parity import run_artifact

        out = run_artifact(artifact, x, num_outputs=num_outputs, threads=self.settings.threads, ui=self.ui)
        return float((out.logits.argmax(1) == y).mean())

    def point(self, artifact: Any, data: Any = None, macs: int = 0) -> Point:
        acc = (
            self.accuracy(artifact, data.test.x, data.test.y, data.num_classes) if data is not None else None
        )
        return Point(artifact.runtime, self.p50(artifact), acc, artifact.size_bytes, macs)


# ------------------------------------------------------------------------------------------- 1. latency @224


def latency_224(settings: Settings, meter: Meter, work: Path, ui: UI) -> list[dict[str, Any]]:
    """fp32 / stock int8 / edgecompress prune 0.5 + int8 for both models on both runtimes."""
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
            "  - {type: prune, method: channel, ratio: 0.5, criterion: l1}\n"
            f"  - {{type: quantize, mode: ptq, calibration_samples: {settings.calibration_224}}}\n"
            "export: [{format: tflite, precision: int8}, {format: openvino, precision: int8}]\n",
            out_dir,
            data,
            ui,
        )
        ui.info(f"[bold]{name}[/bold] @224: {macs / 1e6:.0f} M MACs")
        fp32 = export_fp32(model, ctx, out_dir)
        stock = stock_int8(model, data.calibration.x, out_dir, name)
        pruned = copy.deepcopy(model)
        for i, config in enumerate(ctx.recipe.stages):
            ctx.current_stage = i
            pruned = STAGES.get(config.type)(config).apply(pruned, ctx)
        ours = {}
        for spec in ctx.recipe.export:
            artifact = EXPORTERS.get(spec.format)().export(pruned, spec, ctx, out_dir)
            ours[artifact.runtime] = artifact
        pruned_macs = ctx.notes[0]["macs_after"]
        for runtime in RUNTIMES:
            base = meter.p50(fp32[runtime])
            variants = [
                ("fp32 (unpruned export)", fp32[runtime], base, macs),
                ("stock int8 PTQ", stock[runtime], meter.p50(stock[runtime]), macs),
                ("edgecompress prune 0.5 + int8 PTQ", ours[runtime], meter.p50(ours[runtime]), pruned_macs),
            ]
            for variant, artifact, p50, m in variants:
                rows.append(
                    {
                        "model": name,
                        "runtime": runtime,
                        "variant": variant,
                        "macs": m,
                        "p50": p50,
                        "speedup": base / p50,
                        "size": artifact.size_bytes,
                    }
                )
                ui.info(f"  {runtime} {variant}: {p50:.2f} ms ({base / p50:.2f}x)")
    return rows


# ------------------------------------------------------------------------------------------- 2. digits


def _train(model: Any, data: Any, *, epochs: int, lr: float, seed: int) -> list[float]:
    """Plain cross-entropy training (AdamW, cosine schedule, batch 64); returns seconds per epoch."""
    import torch
    from torch.nn import functional as F

    x = torch.from_numpy(np.ascontiguousarray(data.train.x, dtype=np.float32))
    y = torch.from_numpy(data.train.y.astype(np.int64))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(x) + 63) // 64)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    gen = torch.Generator().manual_seed(seed)
    seconds = []
    for _ in range(epochs):
        t = time.perf_counter()
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = order[i : i + 64]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
        seconds.append(time.perf_counter() - t)
    return seconds


def _torch_accuracy(model: Any, data: Any) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        logits = torch.cat(
            [model(torch.from_numpy(data.test.x[i : i + 256])) for i in range(0, len(data.test), 256)]
        )
    return float((logits.argmax(1).numpy() == data.test.y).mean())


def _hand_prune(model: Any, ratio: float) -> None:
    """Torch-Pruning as its README shows it: uniform ratio, L1 magnitude, the classifier left alone."""
    import torch
    import torch_pruning as tp

    pruner = tp.pruner.BasePruner(
        model,
        torch.zeros(1, 1, 32, 32),
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio,
        ignored_layers=[model.classifier],
    )
    pruner.step()


def _recipe(settings: Settings, ratio: float, checkpoint: Path) -> str:
    return (
        f"name: suite-digits-{ratio}\nseed: 0\n"
        f"model: {{source: '{ARCHITECTURES}:mobilenet_v2_digits', kwargs: {{width: {settings.width}}}, "
        f"checkpoint: '{checkpoint}', input_shape: [1, 1, 32, 32]}}\n" + DIGITS_DATA + "stages:\n"
        f"  - {{type: prune, method: channel, ratio: {ratio}, criterion: l1}}\n"
        f"  - {{type: distill, epochs: {settings.distill_epochs}}}\n"
        f"  - {{type: quantize, mode: qat, epochs: {settings.qat_epochs}}}\n"
        "export: [{format: tflite, precision: int8}, {format: openvino, precision: int8}]\n"
        "devices: [desktop]\n"
        f"profile: {{runs: {settings.runs}, warmup_seconds: {settings.warmup}, threads: {settings.threads}}}\n"
    )


def _build_in_child(recipe: Path, out: Path) -> tuple[Any, dict[str, float]]:
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


def digits(settings: Settings, meter: Meter, work: Path, ui: UI) -> DigitsResult:
    import torch
    from architectures import mobilenet_v2_digits

    from edgecompress.data import load_data
    from edgecompress.registry import FRAMEWORKS

    work.mkdir(parents=True, exist_ok=True)
    result = DigitsResult()
    adapter = FRAMEWORKS.get("torch")()
    ctx = make_context(
        "name: suite-digits\nseed: 0\nmodel: {source: x.py:f, input_shape: [1, 1, 32, 32]}\n"
        + DIGITS_DATA
        + "export: [{format: tflite, precision: fp32}]\n",
        work,
        None,  # type: ignore[arg-type]
        ui,
    )
    ctx.data = data = load_data(ctx.recipe.data, work / "recipe.yaml", seed=0)

    torch.manual_seed(0)
    baseline = mobilenet_v2_digits(width=settings.width)
    ui.info(f"[bold]digits[/bold]: training the baseline for {settings.train_epochs} epochs")
    result.epoch_seconds = _train(baseline, data, epochs=settings.train_epochs, lr=2e-3, seed=0)
    ui.info(f"  seconds per epoch: {', '.join(f'{v:.1f}' for v in result.epoch_seconds)}")
    baseline.eval()
    checkpoint = work / "baseline.pt"
    torch.save(baseline.state_dict(), checkpoint)
    result.baseline_accuracy = _torch_accuracy(baseline, data)
    macs = adapter.stats(baseline, [1, 1, 32, 32]).macs
    ui.info(f"  baseline: test acc {result.baseline_accuracy:.4f}, {macs / 1e6:.1f} M MACs")
    for runtime, artifact in export_fp32(baseline, ctx, work / "baseline").items():
        result.baseline[runtime] = meter.point(artifact, data, macs)

    for ratio in settings.ratios:
        ui.info(f"[bold]ratio {ratio}[/bold]: hand-made chain")
        model = copy.deepcopy(baseline)
        t = time.perf_counter()
        _hand_prune(model, ratio)
        pruned_macs = adapter.stats(model, [1, 1, 32, 32]).macs
        _train(model, data, epochs=settings.distill_epochs + settings.qat_epochs, lr=1e-3, seed=0)
        model.eval()
        artifacts = stock_int8(
            model, np.ascontiguousarray(data.calibration.x), work / f"hand-{ratio}", "hand"
        )
        result.hand_seconds[ratio] = time.perf_counter() - t
        result.hand[ratio] = {rt: meter.point(a, data, pruned_macs) for rt, a in artifacts.items()}

        ui.info(f"[bold]ratio {ratio}[/bold]: edgecompress build")
        recipe = work / f"suite-digits-{ratio}.yaml"
        recipe.write_text(_recipe(settings, ratio, checkpoint))
        report, cost = _build_in_child(recipe, work / f"build-{ratio}")
        result.builds[ratio] = cost
        final_macs = report.steps[-1].macs
        result.ours[ratio] = {
            a.runtime: Point(
                a.runtime,
                a.measurements["desktop"].latency.p50_ms,
                a.parity.accuracy,
                a.size_bytes,
                final_macs,
            )
            for a in report.artifacts
            if a.precision == "int8"
        }
        for who, points in (("hand", result.hand[ratio]), ("edgecompress", result.ours[ratio])):
            for rt, p in points.items():
                ui.info(f"  {who} {rt}: acc {p.accuracy:.4f}, p50 {p.p50_ms:.3f} ms")
    return result


# ------------------------------------------------------------------------------------------- report


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def plot(result: DigitsResult, settings: Settings, stamp: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for runtime in RUNTIMES:
        fig, ax = plt.subplots(figsize=(7.5, 5.2))
        base = result.baseline[runtime]
        ax.scatter(
            [base.p50_ms], [100 * base.accuracy], marker="*", s=180, c="k", label="unpruned fp32 export"
        )
        for label, series, style in (
            ("hand chain: Torch-Pruning + CE + stock PTQ", result.hand, "o--"),
            ("edgecompress: prune + distill + QAT", result.ours, "s-"),
        ):
            ratios = sorted(series)
            xs = [series[r][runtime].p50_ms for r in ratios]
            ys = [100 * series[r][runtime].accuracy for r in ratios]
            (line,) = ax.plot(xs, ys, style, label=label)
            for r, x, y in zip(ratios, xs, ys, strict=True):
                ax.annotate(
                    f"{r}",
                    (x, y),
                    textcoords="offset points",
                    xytext=(5, 4),
                    fontsize=8,
                    color=line.get_color(),
                )
        ax.set_xlabel(f"p50 latency on {runtime}, batch 1, {settings.threads} threads (ms)")
        ax.set_ylabel("digits test accuracy measured on the runtime (%)")
        ax.set_title(
            f"MobileNetV2-{settings.width} digits 32x32 on {runtime}: int8 artifacts by pruning ratio"
            + (" (--quick)" if settings.quick else ""),
            fontsize=10,
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.text(
            0.01, 0.01, f"{machine_line()[:110]}\n{versions_line()[:160]}\n{stamp}", fontsize=6, va="bottom"
        )
        fig.subplots_adjust(bottom=0.22)
        path = BENCH / f"tradeoff-{runtime}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def _header(settings: Settings, stamp: str) -> str:
    mode = "`--quick` smoke run (tiny epoch counts; not the benchmark)" if settings.quick else "full run"
    return (
        f"Measured {stamp} by `.venv/bin/python benchmarks/suite.py{' --quick' if settings.quick else ''}` "
        f"({mode}).\n\n- Machine: {machine_line()}\n- Versions: {versions_line()}\n"
        f"- p50: edgecompress `LocalRunner` (fresh process per artifact), {settings.runs} timed runs after "
        f"{settings.warmup} s warm-up, batch 1, {settings.threads} threads; OpenVINO artifacts all run with "
        "INFERENCE_PRECISION_HINT f32 (int8 kernels for the quantized ops).\n"
        f"- Load average (1/5/15 min) when this section was written: "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores (other processes running "
        "beside the suite slow training and add noise to latency).\n"
    )


def latency_section(rows: list[dict[str, Any]], settings: Settings, stamp: str) -> str:
    lines = [
        SECTIONS["latency"],
        "",
        _header(settings, stamp),
        "Random weights. Stock int8: LiteRT = litert-torch PT2E PTQ (PT2EQuantizer, symmetric per-channel, "
        f"prepare_pt2e/convert_pt2e, {settings.calibration_224} random calibration images; int8 I/O put behind "
        "float32 QUANTIZE/DEQUANTIZE); OpenVINO = `nncf.quantize` (defaults) on the fp32 IR with "
        f"{settings.calibration_224} random images. edgecompress: its prune stage (channel, ratio 0.5, L1) then "
        "its quantize stage (PTQ) and int8 exporters. Speedup = p50 of the fp32 export of the unpruned model on "
        "the same runtime / p50, all from this run.",
        "",
        "| model | runtime | variant | MACs | size | p50 ms | speedup vs fp32 |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['runtime']} | {r['variant']} | {r['macs'] / 1e6:.0f} M | "
            f"{r['size'] / 2**20:.1f} MiB | {r['p50']:.2f} | {r['speedup']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def digits_section(result: DigitsResult, settings: Settings, stamp: str) -> str:
    s = settings
    epoch = statistics.median(result.epoch_seconds) if result.epoch_seconds else float("nan")
    lines = [
        SECTIONS["digits"],
        "",
        _header(settings, stamp),
        f"MobileNetV2 width {s.width} for 32x32 digits (`examples/architectures.py:mobilenet_v2_digits`), "
        f"scikit-learn digits split as edgecompress splits it (seed 0; the test "
        "split shared by all). One baseline trained for "
        f"{s.train_epochs} epochs (plain CE, AdamW 2e-3, cosine; median {epoch:.1f} s per epoch here), "
        f"float test accuracy {_pct(result.baseline_accuracy)}. Hand chain: Torch-Pruning "
        "`BasePruner(MagnitudeImportance(p=1), pruning_ratio=r, ignored_layers=[classifier])`, plain CE "
        f"fine-tuning for {s.distill_epochs + s.qat_epochs} epochs (AdamW 1e-3, cosine) = edgecompress's "
        f"distill ({s.distill_epochs}) + QAT ({s.qat_epochs}) epochs, then stock PTQ per runtime on the 256 "
        "calibration images (as in the 224 section). edgecompress: recipe `prune {ratio: r, criterion: l1}` + "
        f"`distill {{epochs: {s.distill_epochs}}}` + `quantize {{mode: qat, epochs: {s.qat_epochs}}}`, built with "
        "`run_build`. Accuracy = top-1 on the test split run through the artifact on its runtime.",
        "",
        "| ratio | pipeline | MACs | LiteRT acc | LiteRT p50 ms | OpenVINO acc | OpenVINO p50 ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]

    def row(ratio: str, who: str, pts: dict[str, Point]) -> str:
        lt, ov = pts["litert"], pts["openvino"]
        return (
            f"| {ratio} | {who} | {lt.macs / 1e6:.2f} M | {_pct(lt.accuracy)} | {lt.p50_ms:.3f} | "
            f"{_pct(ov.accuracy)} | {ov.p50_ms:.3f} |"
        )

    lines.append(row("-", "unpruned fp32 export", result.baseline))
    for ratio in s.ratios:
        lines.append(row(str(ratio), "hand chain (int8)", result.hand[ratio]))
        lines.append(row(str(ratio), "edgecompress (int8)", result.ours[ratio]))
    lines += ["", "Plots: `benchmarks/tradeoff-litert.png`, `benchmarks/tradeoff-openvino.png`."]
    return "\n".join(lines) + "\n"


def cost_section(result: DigitsResult, settings: Settings, stamp: str) -> str:
    lines = [
        SECTIONS["cost"],
        "",
        f"Measured {stamp}. Each edgecompress build of the digits section ran as `run_build` in a fresh child "
        "process: wall = the whole process (imports included) and `run_build` alone; peak memory = "
        "`resource.getrusage` max RSS of the build process and of the largest of its children (the runtimes' "
        f"measuring processes). For comparison the hand chain (prune + {settings.distill_epochs + settings.qat_epochs} "
        "epochs + two stock PTQs, in the suite's process, without measuring) took the seconds shown.",
        "",
        "| ratio | process wall s | run_build s | of which stages s | peak RSS build MiB | peak RSS child MiB | hand chain s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for ratio, c in result.builds.items():
        stages = sum(c["stage_seconds"].values())
        lines.append(
            f"| {ratio} | {c['process_seconds']:.1f} | {c['build_seconds']:.1f} | {stages:.1f} | "
            f"{c['peak_rss_mib']:.0f} | {c['peak_rss_children_mib']:.0f} | {result.hand_seconds[ratio]:.1f} |"
        )
    if result.epoch_seconds:
        lines += [
            "",
            f"Per-epoch cost (baseline training, plain CE, batch 64, {len(result.epoch_seconds)} epochs): "
            + ", ".join(f"{v:.1f}" for v in result.epoch_seconds)
            + " s.",
        ]
    return "\n".join(lines) + "\n"


def targets_section(
    rows: list[dict[str, Any]] | None, result: DigitsResult | None, settings: Settings, stamp: str
) -> str:
    need = {"openvino": 3.5, "litert": 3.0}
    lines = [
        SECTIONS["targets"],
        "",
        f"From the numbers above ({stamp}{', --quick run' if settings.quick else ''}).",
    ]
    if settings.quick:
        lines.append(
            "A --quick run trains for a token number of epochs: its accuracies say nothing about the targets."
        )
    lines += [
        "",
        "**Target 1**: >= 3.5x (OpenVINO) / >= 3x (LiteRT) over the unpruned fp32 export, <= 1 point of accuracy lost.",
    ]
    if rows:
        for r in rows:
            if r["variant"].startswith("edgecompress"):
                ok = r["speedup"] >= need[r["runtime"]]
                lines.append(
                    f"- 224, {r['model']} on {r['runtime']} (prune 0.5 + int8, random weights so speed only): "
                    f"{r['speedup']:.2f}x -> speed target {'met' if ok else '**missed**'}"
                )
    if result is None:
        lines.append(
            "- digits (accuracy side of target 1, and target 2): not run in this invocation "
            "(`--skip-digits`); see the digits section for its last run and when it was made."
        )
    if result:
        for runtime in RUNTIMES:
            base = result.baseline[runtime]
            for ratio in settings.ratios:
                p = result.ours[ratio][runtime]
                speedup, drop = base.p50_ms / p.p50_ms, 100 * (base.accuracy - p.accuracy)
                ok = speedup >= need[runtime] and drop <= 1.0
                lines.append(
                    f"- digits, ratio {ratio} on {runtime}: {speedup:.2f}x, {drop:+.2f} points lost vs the "
                    f"unpruned fp32 export ({_pct(base.accuracy)} -> {_pct(p.accuracy)}) -> "
                    f"{'holds' if ok else '**does not hold**'}"
                )
        lines += [
            "",
            "**Target 2**: edgecompress at least as fast and as accurate as the hand chain at every ratio, "
            "strictly more accurate at 0.7.",
        ]
        for runtime in RUNTIMES:
            for ratio in settings.ratios:
                h, o = result.hand[ratio][runtime], result.ours[ratio][runtime]
                fast, acc = o.p50_ms <= h.p50_ms, o.accuracy >= h.accuracy
                strict = o.accuracy > h.accuracy if ratio == 0.7 else True
                ok = fast and acc and strict
                lines.append(
                    f"- ratio {ratio} on {runtime}: p50 {o.p50_ms:.3f} vs {h.p50_ms:.3f} ms "
                    f"({'as fast' if fast else '**slower**'}), accuracy {_pct(o.accuracy)} vs {_pct(h.accuracy)} "
                    f"({'as accurate' if acc else '**less accurate**'}"
                    + ("" if ratio != 0.7 else f", {'strictly more' if strict else '**not strictly more**'}")
                    + f") -> {'holds' if ok else '**does not hold**'}"
                )
        if 0.7 not in settings.ratios:
            lines.append("- ratio 0.7 was not run, so the strict part of target 2 is not decided.")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- main


def settings_from(args: argparse.Namespace) -> Settings:
    quick = args.quick
    pick = lambda v, q, f: v if v is not None else (q if quick else f)  # noqa: E731
    ratios = tuple(args.ratios) if args.ratios else ((0.5,) if quick else (0.3, 0.5, 0.7))
    return Settings(
        quick=quick,
        threads=args.threads,
        runs=pick(args.runs, 50, 200),
        warmup=pick(args.warmup, 0.3, 1.0),
        width=args.width,
        train_epochs=pick(args.train_epochs, 1, 15),
        distill_epochs=pick(args.distill_epochs, 1, 8),
        qat_epochs=pick(args.qat_epochs, 1, 2),
        ratios=ratios,
    )


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--build-child":
        return build_child(*sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny epoch counts and one ratio (smoke check)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, help="timed runs per p50 (default 200; quick 50)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per p50 (default 1.0; quick 0.3)")
    parser.add_argument("--width", type=float, default=0.35, help="mobilenet_v2_digits width")
    parser.add_argument("--train-epochs", type=int, help="baseline epochs (default 15; quick 1)")
    parser.add_argument("--distill-epochs", type=int, help="edgecompress distill epochs (default 8; quick 1)")
    parser.add_argument("--qat-epochs", type=int, help="edgecompress QAT epochs (default 2; quick 1)")
    parser.add_argument(
        "--ratios", type=float, nargs="+", help="pruning ratios (default 0.3 0.5 0.7; quick 0.5)"
    )
    parser.add_argument("--skip-224", action="store_true", help="skip the 224 latency section")
    parser.add_argument("--skip-digits", action="store_true", help="skip the digits, cost sections")
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave RESULTS.md and plots alone"
    )
    args = parser.parse_args()
    settings = settings_from(args)

    import torch

    torch.set_num_threads(settings.threads)
    ui = UI(verbosity=1)
    meter = Meter(settings, ui)
    t0 = time.perf_counter()
    rows = result = None
    with tempfile.TemporaryDirectory(prefix="edgecompress-suite-") as tmp:
        work = Path(tmp)
        if not args.skip_224:
            rows = latency_224(settings, meter, work / "224", ui)
            stamp = utc_now()
            if not args.no_write:
                write_section(SECTIONS["latency"], latency_section(rows, settings, stamp))
            print(latency_section(rows, settings, stamp))
        if not args.skip_digits:
            result = digits(settings, meter, work / "digits", ui)
            stamp = utc_now()
            text = digits_section(result, settings, stamp)
            cost = cost_section(result, settings, stamp)
            print(text, "\n", cost)
            if not args.no_write:
                write_section(SECTIONS["digits"], text)
                write_section(SECTIONS["cost"], cost)
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
