"""Keras -> TFLite (TensorFlow's converter) and Keras -> OpenVINO IR (ov.convert_model). Imported only when
exporting.

Float exports convert the float Keras model at a fixed batch-1 input. int8 exports are the `quantize` stage's
int8 `.tflite` (TFMOT QAT or the converter's PTQ; float32 input and output), and for OpenVINO the faster of
that same file read by OpenVINO's TFLite frontend (its int8 tensors become FakeQuantize ops with the same
scales: one quantized model on both runtimes) and NNCF's quantization of the fp32 IR, raced on the export's
device (`keras_openvino_int8.py`: never slower than NNCF).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecompress.environment import package_versions
from edgecompress.errors import ExportError
from edgecompress.exporters.base import Artifact
from edgecompress.exporters.conversion import converting
from edgecompress.exporters.openvino import OpenVINOExporter
from edgecompress.exporters.openvino_write import finish_openvino, int8_note
from edgecompress.exporters.sidecar import check_request
from edgecompress.exporters.tflite import TFLiteExporter
from edgecompress.exporters.tflite_write import finish_tflite
from edgecompress.frameworks.keras import KerasQuantized

if TYPE_CHECKING:
    from edgecompress.context import RunContext
    from edgecompress.recipe import ExportSpec


def _checked(model: Any, spec: ExportSpec) -> None:
    """ExportError when the model does not fit the precision: int8 needs the quantize stage's model, float
    precisions a float model."""
    quantized = isinstance(model, KerasQuantized)
    if spec.precision == "int8" and not quantized:
        raise ExportError(
            f"{spec.artifact_name}: int8 export needs a 'quantize' stage before it (the model is float)"
        )
    if spec.precision != "int8" and quantized:
        raise ExportError(
            f"{spec.artifact_name}: {spec.precision} export of a quantized model; export the model from before "
            "the quantize stage (the pipeline does), or ask for int8"
        )


def _int8_note(content: bytes, model: KerasQuantized) -> str:
    from edgecompress.exporters.tflite_int8 import weight_dtypes

    weights = weight_dtypes(content)
    return (
        f"{weights.get('INT8', 0)} int8 weight tensors ({model.scheme}); "
        f"{sum(weights.values()) - weights.get('INT8', 0)} float weight tensors (layers kept float: "
        f"{', '.join(model.float_layers) or 'none'}); float32 input/output through QUANTIZE/DEQUANTIZE ops"
    )


def export_tflite(model: Any, spec: ExportSpec, ctx: RunContext, out_dir: Path) -> Artifact:
    """Keras model -> `<out_dir>/<name>.tflite` (+ `<name>.json`): fp32 by TensorFlow's converter, fp16 with
    the weights cast after, int8 the quantize stage's file."""
    check_request(spec, precisions=TFLiteExporter.precisions)
    _checked(model, spec)
    name = spec.artifact_name
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.tflite"
    notes: dict[str, Any] = {}
    converter = package_versions("tensorflow", "tf-keras", "tensorflow-model-optimization")
    with ctx.ui.progress(f"export {name}", total=3 if spec.precision == "fp16" else 2) as task:
        if isinstance(model, KerasQuantized):
            content = model.tflite
            notes["int8"] = _int8_note(content, model)
        else:
            from edgecompress.frameworks.keras_convert import to_tflite

            with converting(name, "TFLite conversion (TensorFlow)", ui=ctx.ui):
                content = to_tflite(model, ctx.input_shape)
        task.advance()
        return finish_tflite(content, spec, ctx, path, task=task, notes=notes, converter=converter)


def export_openvino(model: Any, spec: ExportSpec, ctx: RunContext, out_dir: Path) -> Artifact:
    """Keras model -> `<out_dir>/<name>.xml/.bin` (+ `<name>.json`): float models through OpenVINO's
    TensorFlow frontend; int8 is the faster of OpenVINO's reading of the quantize stage's int8 .tflite and NNCF's
    quantization of the fp32 IR (`keras_openvino_int8.choose`)."""
    check_request(spec, precisions=OpenVINOExporter.precisions, options=tuple(OpenVINOExporter.options))
    _checked(model, spec)
    requested = spec.options.get("inference_precision", "f32")
    inference_precision = None if requested == "auto" else requested
    name = spec.artifact_name
    notes: dict[str, Any] = {}
    versions = ["tensorflow", "tf-keras", "openvino"]
    out_dir.mkdir(parents=True, exist_ok=True)
    xml = out_dir / f"{name}.xml"
    shape = [1, *ctx.input_shape[1:]]
    with ctx.ui.progress(f"export {name}", total=2) as task:
        import openvino as ov

        if isinstance(model, KerasQuantized):
            from edgecompress.exporters import keras_openvino_int8 as race

            candidates = {
                "tflite": race.tflite_ir(model, name, out_dir, ctx),
                # a plan's float ops are made in the .tflite only: the QAT model still fake-quantizes them
                "qat": None if model.plan else race.qat_ir(model, ctx, name),
                # NNCF quantizes every layer: not a candidate when the plan keeps some float
                "nncf": None if model.float_layers else race.nncf_ir(model, ctx, name),
            }
            candidates = {key: ir for key, ir in candidates.items() if ir is not None}

            def candidate(ir: Any, candidate_spec: ExportSpec, run_ctx: RunContext, path: Path) -> Any:
                return finish_openvino(
                    ir,
                    candidate_spec,
                    run_ctx,
                    path,
                    task=None,
                    notes={},
                    converter=package_versions("tensorflow", "tf-keras", "openvino", "nncf"),
                    inference_precision=inference_precision,
                )

            chosen, notes["int8_race"] = race.choose(model, candidates, spec, ctx, finish=candidate)
            if chosen == "nncf":
                versions.append("nncf")
            ov_model = candidates[chosen]
            source = {"tflite": "the int8 .tflite", "qat": "the QAT model"}.get(
                chosen, "NNCF's quantization of the fp32 IR"
            )
            scheme = model.scheme if chosen != "nncf" else "nncf.quantize defaults on the calibration split"
            notes["int8"] = int8_note(
                ov_model, name, source=source, scheme=scheme, inference_precision=inference_precision
            )
        else:
            with converting(name, "OpenVINO conversion (TensorFlow frontend)", ui=ctx.ui):
                ov_model = ov.convert_model(model, input=[ov.PartialShape(shape)])
        task.advance()
        return finish_openvino(
            ov_model,
            spec,
            ctx,
            xml,
            task=task,
            notes=notes,
            converter=package_versions(*versions),
            inference_precision=inference_precision,
        )
