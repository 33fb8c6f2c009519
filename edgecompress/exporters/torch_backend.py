"""Torch -> TFLite (litert-torch) and torch -> OpenVINO IR (ov.convert_model). Imported only when exporting.

Both go through torch.export on a real batch-1 test image, so both accept the same models (those
`torch.export` can capture) and the artifacts have a fixed batch-1 input of the recipe's shape and layout. (Handing the module itself to `ov.convert_model` would fall
back to TorchScript tracing, which silently bakes data-dependent branches into the graph.) A model that
is already TorchScript goes to OpenVINO as it is; litert-torch cannot read TorchScript.

int8 exports lower the model the `quantize` stage made (a PT2E graph of float ops between int8
quantize/dequantize pairs, `ctx.quantization` set): litert-torch turns the pairs into int8 TFLite ops
(its `QuantConfig` with the stage's PT2EQuantizer selects STATIC q/dq lowering) and OpenVINO reads them as
FakeQuantize ops, which its CPU plugin runs as int8 kernels. Both use the same scales. Float exports of a
quantized build take the model from before the quantize stage (the pipeline passes it).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecompress.environment import package_versions
from edgecompress.errors import ExportError
from edgecompress.exporters.base import Artifact
from edgecompress.exporters.conversion import converting
from edgecompress.exporters.openvino import OpenVINOExporter
from edgecompress.exporters.openvino_write import finish_openvino, int8_note
from edgecompress.exporters.sidecar import check_request
from edgecompress.exporters.tflite import TFLiteExporter
from edgecompress.exporters.tflite_write import finish_tflite

if TYPE_CHECKING:
    from edgecompress.context import RunContext
    from edgecompress.recipe import ExportSpec


def _sample(ctx: RunContext) -> Any:
    """One batch-1 input: the first test image when its shape matches the recipe, else zeros."""
    import torch

    shape = [1, *ctx.input_shape[1:]]
    x = ctx.data.test.x[:1]
    if list(x.shape) != shape:
        x = np.zeros(shape, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _checked_source(model: Any, spec: ExportSpec, ctx: RunContext) -> Any:
    """The quantization an int8 export lowers (None for float exports); ExportError when the model does not
    fit the precision: int8 needs the quantize stage's model, float precisions a float model."""
    quantized = _is_quantized(model)
    if spec.precision == "int8":
        if ctx.quantization is None or not quantized:
            raise ExportError(
                f"{spec.artifact_name}: int8 export needs a 'quantize' stage before it (the model is float)"
            )
        return ctx.quantization
    if quantized:
        raise ExportError(
            f"{spec.artifact_name}: {spec.precision} export of a quantized model; export the model from before "
            "the quantize stage (the pipeline does), or ask for int8"
        )
    return None


def _is_quantized(model: Any) -> bool:
    from edgecompress.stages.quantize.torch_backend import PT2EModule

    return isinstance(model, PT2EModule)


def _is_torchscript(model: Any) -> bool:
    import torch

    return isinstance(model, torch.jit.ScriptModule)


@contextmanager
def _inference_mode(model: Any) -> Iterator[Any]:
    """model.eval() and no grad for the conversion; the model's train/eval mode is restored after."""
    import torch

    was_training = bool(getattr(model, "training", False))
    if hasattr(model, "eval"):
        model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        if was_training:
            model.train()


@contextmanager
def _litert_progress(show: bool) -> Iterator[None]:
    """litert-torch prints its own step log unless told not to; it reads that switch from the environment."""
    key = "LITERT_TORCH_SHOW_PROGRESS"
    before = os.environ.get(key)
    os.environ[key] = "y" if show else "n"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _int8_scheme() -> str:
    from edgecompress.stages.quantize.stage import ACTIVATION_SCHEME, WEIGHT_SCHEME

    return f"weights {WEIGHT_SCHEME}, activations {ACTIVATION_SCHEME}"


def export_tflite(model: Any, spec: ExportSpec, ctx: RunContext, out_dir: Path) -> Artifact:
    """Torch module -> `<out_dir>/<name>.tflite` (+ `<name>.json`) via litert-torch; fp16 casts weights after;
    int8 lowers the quantized graph to int8 ops behind a float32 interface."""
    check_request(spec, precisions=TFLiteExporter.precisions)
    name = spec.artifact_name
    quantization = _checked_source(model, spec, ctx)
    notes: dict[str, Any] = {}
    if _is_torchscript(model):
        raise ExportError(
            f"{name}: litert-torch cannot convert TorchScript models (it needs torch.export); give the model as a "
            "python entry 'file.py:function' or a torch.export '.pt2', or export this one to openvino only"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.tflite"
    converter = package_versions("torch", "litert-torch", "litert-converter")
    with ctx.ui.progress(f"export {name}", total=2 if spec.precision == "fp32" else 3) as task:
        with (
            converting(name, "litert-torch conversion", ui=ctx.ui),
            _inference_mode(model) as m,
            _litert_progress(ctx.ui.verbosity >= 2),
        ):
            import litert_torch

            quant_config = quantization.quant_config if quantization is not None else None
            content = litert_torch.convert(m, (_sample(ctx),), quant_config=quant_config).model_content()
        task.advance()
        if spec.precision == "int8":
            from edgecompress.exporters.tflite_int8 import float_interface, weight_dtypes

            with converting(name, "float32 interface for the int8 model", ui=ctx.ui):
                content, wrapped = float_interface(content)
            float_tags = getattr(model, "float_op_tags", ())
            if float_tags:
                from edgecompress.exporters.tflite_float_ops import float_ops

                with converting(name, "ops the plan keeps in float", ui=ctx.ui):
                    content, floated = float_ops(content, float_tags)
                notes["float_ops"] = floated
            weights = weight_dtypes(content)
            if not weights.get("INT8"):
                raise ExportError(
                    f"{name}: litert-torch wrote no int8 weights (weight tensors: {weights or 'none'}); "
                    "the quantized graph was not lowered to int8 ops"
                )
            notes["int8"] = (
                f"{weights['INT8']} int8 weight tensors ({_int8_scheme()}); "
                f"{sum(weights.values()) - weights['INT8']} float weight tensors (layers kept float: "
                f"{', '.join(quantization.float_layers) or 'none'}); float32 input/output"
                + (" through QUANTIZE/DEQUANTIZE ops" if wrapped else "")
            )
            task.advance()
        return finish_tflite(content, spec, ctx, path, task=task, notes=notes, converter=converter)


def export_openvino(model: Any, spec: ExportSpec, ctx: RunContext, out_dir: Path) -> Artifact:
    """Torch module -> `<out_dir>/<name>.xml/.bin` (+ `<name>.json`); fp16 compresses the weights on save;
    int8 converts the quantized graph, whose quantize/dequantize pairs become FakeQuantize ops."""
    check_request(spec, precisions=OpenVINOExporter.precisions, options=tuple(OpenVINOExporter.options))
    requested = spec.options.get("inference_precision", "f32")
    inference_precision = None if requested == "auto" else requested
    name = spec.artifact_name
    _checked_source(model, spec, ctx)
    notes: dict[str, Any] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    xml = out_dir / f"{name}.xml"
    with ctx.ui.progress(f"export {name}", total=2) as task:
        sample = _sample(ctx)
        if _is_torchscript(model):  # already a fixed graph: OpenVINO's TorchScript frontend reads it as is
            source, kwargs = model, {"example_input": sample}
        else:
            with converting(name, "torch.export", ui=ctx.ui), _inference_mode(model) as m:
                import torch

                source, kwargs = torch.export.export(m, (sample,)), {}
        with converting(name, "OpenVINO conversion", ui=ctx.ui), _inference_mode(model):
            import openvino as ov

            # ov.convert_model forks OpenVINO's telemetry sender; with JAX loaded (litert-torch loads it)
            # Python warns about fork + threads on every build. The child only sends telemetry (the user's
            # opt-in/out is left alone), so the warning is noise to a user of this tool.
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)

            ov_model = ov.convert_model(source, input=[ov.PartialShape(list(sample.shape))], **kwargs)
            if spec.precision == "int8":
                notes["int8"] = int8_note(
                    ov_model,
                    name,
                    source="the quantized graph",
                    scheme=_int8_scheme(),
                    inference_precision=inference_precision,
                )
        task.advance()
        return finish_openvino(
            ov_model,
            spec,
            ctx,
            xml,
            task=task,
            notes=notes,
            converter=package_versions("torch", "openvino"),
            inference_precision=inference_precision,
        )
