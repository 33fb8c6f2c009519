"""The OpenVINO int8 artifact of a Keras build: never slower than NNCF.

Up to three candidates are made and raced on the export's device:

- `tflite`: OpenVINO's reading of the quantize stage's int8 .tflite (TFMOT QAT or the converter's PTQ): one
  quantized model on both runtimes, the same scales (FakeQuantize ops with the .tflite's ranges);
- `qat` (QAT builds): OpenVINO's TensorFlow frontend on TFMOT's QAT model, whose fake-quant ops become
  FakeQuantize with the same learnt ranges (the same outputs as `tflite`), without the layout transposes the
  TFLite frontend keeps around depthwise convolutions;
- `nncf`: NNCF's post-training quantization (`nncf.quantize`, its defaults, on the calibration split) of the
  fp32 IR of the same weights (a QAT model's float twin: `keras_convert.float_twin`): NNCF places FakeQuantize
  where OpenVINO's CPU plugin fuses best.

`make bench-frameworks` quotes the race of the Keras quickstart's build (benchmarks/RESULTS.md). All are timed in interleaved fresh-process rounds (`precision.race`); the
fastest that beats `tflite` by more than `MARGIN` (within it, the .tflite's reading wins: one file's scales on
both runtimes) and agrees with the quantized model on at least `AGREEMENT` of the validation images (NNCF's is
a second quantization of the weights: it must not change the answers) is shipped. The export's notes give
every time and why the winner won. When the device cannot time them (its runtime is missing here, a board is
down), the .tflite's reading is shipped with a warning.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecompress.errors import DeviceError

if TYPE_CHECKING:
    from edgecompress.context import RunContext
    from edgecompress.frameworks.keras import KerasQuantized
    from edgecompress.recipe import ExportSpec

#: NNCF's IR is shipped only when faster than the .tflite's reading by more than this.
MARGIN = 0.03
#: ...and when it agrees with the quantized model on at least this fraction of the validation images.
AGREEMENT = 0.99
#: Calibration images NNCF's quantization takes (its default subset size).
NNCF_SAMPLES = 300
#: The candidates, as the notes name them.
WHAT = {
    "tflite": "the int8 .tflite read by OpenVINO",
    "qat": "TFMOT's QAT model read by OpenVINO",
    "nncf": "NNCF's quantization of the fp32 IR",
}


def tflite_ir(model: KerasQuantized, name: str, out_dir: Path, ctx: RunContext) -> Any:
    """OpenVINO's reading of the int8 .tflite (an ov.Model)."""
    import openvino as ov

    from edgecompress.exporters.conversion import converting

    source = out_dir / f"{name}.int8-source.tflite"
    source.write_bytes(model.tflite)
    try:
        with converting(name, "OpenVINO conversion of the int8 .tflite", ui=ctx.ui):
            return ov.convert_model(str(source))
    finally:
        source.unlink(missing_ok=True)


def qat_ir(model: KerasQuantized, ctx: RunContext, name: str) -> Any | None:
    """OpenVINO's TensorFlow frontend on TFMOT's QAT model (its fake-quant ops become FakeQuantize with the
    learnt ranges: the .tflite's quantization without the TFLite frontend's layout transposes); None for a
    PTQ model, which has no fake quantization."""
    import openvino as ov

    from edgecompress.exporters.conversion import converting, native_stderr_captured

    if model.mode != "qat":
        return None
    with converting(name, "OpenVINO conversion of the QAT model", ui=ctx.ui), native_stderr_captured(ctx.ui):
        return ov.convert_model(model.model, input=[ov.PartialShape([1, *ctx.input_shape[1:]])])


def nncf_ir(model: KerasQuantized, ctx: RunContext, name: str) -> Any:
    """NNCF's int8 quantization of the fp32 IR of `model`'s weights, calibrated on the calibration split."""
    import nncf
    import openvino as ov

    from edgecompress.exporters.conversion import converting, native_stderr_captured
    from edgecompress.frameworks.keras_convert import float_twin
    from edgecompress.stages.quantize.stage import calibration_images

    images = calibration_images(ctx, min(NNCF_SAMPLES, len(ctx.data.calibration)))
    nncf.set_log_level(logging.ERROR)  # its INFO lines; its progress bars go to stdout, kept off below
    with (
        converting(name, "NNCF quantization of the fp32 IR", ui=ctx.ui),
        native_stderr_captured(ctx.ui),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        fp32 = ov.convert_model(float_twin(model.model), input=[ov.PartialShape([1, *ctx.input_shape[1:]])])
        dataset = nncf.Dataset([image[None] for image in np.ascontiguousarray(images, dtype=np.float32)])
        return nncf.quantize(fp32, dataset, subset_size=len(images))


def choose(
    model: KerasQuantized,
    candidates: dict[str, Any],
    spec: ExportSpec,
    ctx: RunContext,
    *,
    finish: Any,
) -> tuple[str, str]:
    """The candidate to ship (a key of `candidates`: "tflite", "qat", "nncf") and a note saying why: the
    fastest that beats the .tflite's reading by more than MARGIN and agrees with the quantized model on at
    least AGREEMENT of the validation images, else "tflite". `candidates`: key -> ov.Model;
    `finish(ov_model, spec, ctx, xml)` writes one as an artifact (for the race)."""
    from edgecompress.exporters.parity import run_artifact
    from edgecompress.precision import race
    from edgecompress.specs import load_device

    if list(candidates) == ["tflite"]:
        return "tflite", (
            "the .tflite's reading, not raced: it alone has the ops its precision plan or keep_float made float"
        )
    device_name = spec.device or (ctx.recipe.devices[0] if ctx.recipe.devices else "desktop")
    with tempfile.TemporaryDirectory(prefix="edgecompress-ov-int8-") as tmp:
        artifacts = {
            key: finish(
                ir,
                spec.model_copy(update={"name": f"{spec.artifact_name}-{key}"}),
                ctx,
                Path(tmp) / f"{key}.xml",
            )
            for key, ir in candidates.items()
        }
        try:
            device = load_device(device_name, base_dir=ctx.recipe_path.parent)
            timed = dict(
                zip(
                    artifacts,
                    race(list(artifacts.values()), device, ctx, ctx.ui, what=spec.artifact_name),
                    strict=True,
                )
            )
        except DeviceError as exc:
            ctx.ui.warn(
                f"{spec.artifact_name}: cannot race OpenVINO's int8 candidates on {device_name} ({exc}); "
                "shipping the int8 .tflite's reading"
            )
            return "tflite", f"not raced against NNCF's quantization ({device_name} could not time them)"
        base = timed["tflite"][0]
        line = f"raced on {device_name} ({len(timed['tflite'][1])} interleaved rounds): " + ", ".join(
            f"{WHAT[key]} {ms:.3f} ms" for key, (ms, _) in timed.items()
        )
        faster = sorted(
            (key for key in timed if key != "tflite" and timed[key][0] < base * (1 - MARGIN)),
            key=lambda k: timed[k][0],
        )
        if not faster:
            return "tflite", f"{line}; the .tflite's reading kept (none is faster by more than {MARGIN:.0%})"
        val = ctx.data.val if len(ctx.data.val) else ctx.data.calibration
        reference = ctx.adapter.predict(model, val.x).argmax(1)
        refused = []
        for key in faster:
            logits = run_artifact(
                artifacts[key], val.x, num_outputs=ctx.data.num_classes, threads=1, ui=ctx.ui
            ).logits
            agree = float((logits.argmax(1) == reference).mean())
            if agree >= AGREEMENT:
                passed_over = f"; refused, faster still: {'; '.join(refused)}" if refused else ""
                return key, (
                    f"{line}; {WHAT[key]} shipped ({base / timed[key][0]:.2f}x as fast as the .tflite's reading; "
                    f"agrees with the quantized model on {agree:.1%} of the validation images){passed_over}"
                )
            refused.append(
                f"{WHAT[key]} agrees with the quantized model on {agree:.1%} of the validation images"
            )
    return "tflite", (
        f"{line}; faster but refused (< {AGREEMENT:.0%} agreement): {'; '.join(refused)}; the .tflite's reading "
        "kept"
    )
