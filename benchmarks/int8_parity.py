"""What the quantizer's two additions buy: int8 graph and cross-runtime agreement with and without them.

    .venv/bin/python benchmarks/int8_parity.py            # about 3 minutes on 2 cores

Trains `mobilenet_v2_digits` (width 0.5) for 8 epochs on digits, then quantizes it twice with the `quantize`
stage (QAT, 2 epochs): once as edgecompress does, once with `restore_source_functions` and
`annotate_conv_relu6` switched off (= litert-torch's stock PT2EQuantizer on torch 2.13's default export).
Each quantized model is exported to int8 TFLite and OpenVINO and run on the test split on both runtimes.
Reports QUANTIZE/DEQUANTIZE ops in the .tflite, each runtime's top-1 agreement with the quantized torch
model, and the two runtimes' agreement with each other. Writes the section "int8 quantizer: with and
without edgecompress's annotation fixes" of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine_line, make_context, utc_now, versions_line, write_section

from edgecompress.console import UI

SECTION = "## int8 quantizer: with and without edgecompress's annotation fixes"
RECIPE = (
    "name: int8-parity\nseed: 0\nmodel: {source: x.py:f, input_shape: [1, 1, 32, 32]}\n"
    "data: {dataset: digits, image_size: [32, 32], normalize: {mean: [0.5], std: [0.5]}}\n"
    "stages:\n  - {type: quantize, mode: qat, epochs: 2}\n"
    "export: [{format: tflite, precision: int8}, {format: openvino, precision: int8}]\n"
)


def quantize_and_compare(model, ctx, out: Path, *, fixes: bool) -> dict[str, float]:
    from edgecompress.exporters.parity import run_artifact
    from edgecompress.registry import EXPORTERS, STAGES
    from edgecompress.runtimes.sessions import LiteRTSession
    from edgecompress.stages.quantize import torch_annotation

    with ExitStack() as stack:
        if not fixes:
            stack.enter_context(mock.patch.object(torch_annotation, "restore_source_functions", lambda gm: 0))
            stack.enter_context(mock.patch.object(torch_annotation, "annotate_conv_relu6", lambda *a: 0))
        ctx.quantization = None
        ctx.current_stage = 0
        quantized = STAGES.get("quantize")(ctx.recipe.stages[0]).apply(copy.deepcopy(model), ctx)
    test = ctx.data.test
    reference = ctx.adapter.predict(quantized, test.x).argmax(1)
    top1 = {}
    row: dict[str, float] = {"torch int8 accuracy": float((reference == test.y).mean())}
    for spec in ctx.recipe.export:
        artifact = EXPORTERS.get(spec.format)().export(quantized, spec, ctx, out)
        logits = run_artifact(artifact, test.x, num_outputs=ctx.data.num_classes, threads=2, ui=ctx.ui).logits
        top1[artifact.runtime] = logits.argmax(1)
        row[f"{artifact.runtime} vs torch"] = float((top1[artifact.runtime] == reference).mean())
        if artifact.runtime == "litert":
            ops = [op["type"] for op in LiteRTSession(artifact.path, threads=1).op_inventory()]
            row["tflite QUANTIZE+DEQUANTIZE ops"] = float(ops.count("QUANTIZE") + ops.count("DEQUANTIZE"))
    row["litert vs openvino"] = float((top1["litert"] == top1["openvino"]).mean())
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    import torch
    from architectures import mobilenet_v2_digits

    from edgecompress.data import load_data
    from edgecompress.frameworks.base import FitOptions

    torch.set_num_threads(2)
    ui = UI(verbosity=1)
    with tempfile.TemporaryDirectory(prefix="edgecompress-int8-parity-") as tmp:
        work = Path(tmp)
        ctx = make_context(RECIPE, work, None, ui)  # type: ignore[arg-type]
        ctx.data = load_data(ctx.recipe.data, work / "recipe.yaml", seed=0)
        torch.manual_seed(0)
        model = ctx.adapter.fit(
            mobilenet_v2_digits(width=0.5), ctx.data, FitOptions(epochs=8, lr=3e-3), seed=0, ui=ui
        )
        ctx.teacher = copy.deepcopy(model)
        rows = {
            "stock PT2EQuantizer (fixes off)": quantize_and_compare(model, ctx, work / "stock", fixes=False),
            "edgecompress": quantize_and_compare(model, ctx, work / "ours", fixes=True),
        }
    keys = list(next(iter(rows.values())))
    lines = [
        SECTION,
        "",
        f"Measured {utc_now()} by `.venv/bin/python benchmarks/int8_parity.py`.",
        "",
        f"- Machine: {machine_line()}",
        f"- Versions: {versions_line()}",
        "",
        "MobileNetV2-style CNN (width 0.5) trained 8 epochs on digits, then the `quantize` stage (QAT, 2 "
        "epochs) with and without `restore_source_functions` + `annotate_conv_relu6`; int8 exports to both "
        "runtimes, run on the 360 test images.",
        "",
        "| quantizer | " + " | ".join(keys) + " |",
        "| --- | " + " | ".join("---:" for _ in keys) + " |",
    ]
    for name, row in rows.items():
        cells = [f"{row[k]:.0f}" if "ops" in k else f"{100 * row[k]:.2f}%" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
