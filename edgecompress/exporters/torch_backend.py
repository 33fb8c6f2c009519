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
from edgecompress.exporters.sidecar import check_request, finish_artifact
from edgecompress.exporters.tflite import TFLiteExporter

if TYPE_CHECKING:
    from edgecompress.context import RunContext
    from edgecompress.recipe import ExportSpec

#: TFLite ops whose constant weights ai-edge-quantizer's FLOAT_CASTING stores as float16.
FP16_WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "CONV_2D_TRANSPOSE", "EMBEDDING_LOOKUP")


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


def float16_weights(tflite_model: bytes) -> bytes:
    """The same model with the weights of FP16_WEIGHT_OPS stored as float16, each behind a DEQUANTIZE op.

    The scheme of TensorFlow's converter with `supported_types = [tf.float16]` (float16 constants behind
    DEQUANTIZE ops), done with ai-edge-quantizer (FLOAT_CASTING, weight-only) so TensorFlow is not needed;
    unlike TensorFlow's, biases stay float32. Activations stay float32 and LiteRT computes in float32
    (XNNPACK unpacks the weights once at load): the gain is size, not speed.
    """
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer

    q = quantizer.Quantizer(bytearray(tflite_model))
    q.add_weight_only_config(
        regex=".*",
        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        num_bits=16,
        granularity=qtyping.QuantGranularity.TENSORWISE,
        algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING,
    )
    result = q.quantize(enable_progress_report=False)
    if result.quantized_model is None:
        raise RuntimeError("ai-edge-quantizer returned no model")
    return bytes(result.quantized_model)


def _tflite_io(path: Path) -> tuple[dict[str, Any], int]:
    """Input/output facts of a .tflite as the LiteRT interpreter reads it, and its count of float16 tensors."""
    from edgecompress.runtimes.sessions import LiteRTSession

    session = LiteRTSession(path, threads=1)
    io = {
        "input": {"name": session.input_name, "shape": session.input_shape, "dtype": session.input_dtype},
        "output": {"name": session.output_name, "shape": session.output_shape, "dtype": session.output_dtype},
    }
    return io, sum(dtype == "float16" for dtype in session.tensor_dtypes().values())


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
        if spec.precision == "fp16":
            with converting(name, "float16 weight cast (ai-edge-quantizer)", ui=ctx.ui):
                content = float16_weights(content)
            converter.update(package_versions("ai-edge-quantizer"))
            notes["fp16"] = (
                f"weights of {', '.join(FP16_WEIGHT_OPS)} stored as float16 behind DEQUANTIZE ops; "
                "biases and activations float32; computed in float32"
            )
            task.advance()
        path.write_bytes(content)
        if spec.options.get("sparse_weights", "auto") == "auto":
            encoded = _sparse_weights(path, ctx)
            if encoded:
                notes["sparse_weights"] = encoded
        with converting(name, "loading the written .tflite on LiteRT", ui=ctx.ui):
            io, fp16_tensors = _tflite_io(path)
        if spec.precision == "fp16" and fp16_tensors == 0:
            ctx.ui.warn(f"{name}: no weights were cast to float16 (no {'/'.join(FP16_WEIGHT_OPS)} ops)")
        task.advance()
    return finish_artifact(
        spec,
        ctx,
        runtime=TFLiteExporter.runtime,
        path=path,
        files=[path],
        io=io,
        converter=converter,
        notes=notes,
    )


#: Weights with at least this many zeros are stored sparse (TensorFlow's converter uses the same bar).
SPARSE_WEIGHTS_MIN = 0.3


def _sparse_weights(path: Path, ctx: RunContext) -> str | None:
    """After a pattern-sparsity stage: the .tflite rewritten with its sparse weights in TFLite's sparse format
    when that is smaller and gives the same outputs on test images (bitwise on the dense kernels; else the
    dense file stays, with a warning); a note of what was stored, or None when nothing was."""
    from edgecompress.exporters.tflite_sparse import encode_sparse
    from edgecompress.runtimes.sessions import LiteRTSession
    from edgecompress.sparsity import latest_plan

    plan = latest_plan(ctx.notes)
    if plan is None:
        return None
    shapes = {tuple(d["block"]) for d in plan["layers"].values() if d["kind"] == "block"}
    block = next(((1, c) for r, c in shapes if r == 1 and c > 1), None)
    sparse = path.with_name(path.stem + ".sparse.tflite")
    try:
        result = encode_sparse(path, sparse, min_sparsity=SPARSE_WEIGHTS_MIN, block=block)
        if not result.tensors:
            return None
        images = np.ascontiguousarray(ctx.data.test.x[:32], dtype=np.float32)
        sessions = LiteRTSession(path, threads=1), LiteRTSession(sparse, threads=1)
        dense_out, sparse_out = (np.stack([s.run(x[None]) for x in images]) for s in sessions)
        diff = float(np.abs(dense_out - sparse_out).max())
        if diff > 1e-5 * max(float(np.abs(dense_out).max()), 1.0):
            ctx.ui.warn(
                f"{path.name}: its sparse-encoded weights change the outputs (max abs diff {diff:.2e}); kept dense"
            )
            return None
        sparse.replace(path)
    finally:
        sparse.unlink(missing_ok=True)
    return (
        f"{len(result.tensors)} weights stored sparse (CSR behind DENSIFY): {result.bytes_before / 1024:.1f} -> "
        f"{result.bytes_after / 1024:.1f} KiB; same outputs on {len(images)} test images (max abs diff {diff:.1e})"
        + (f"; left dense: {len(result.skipped)}" if result.skipped else "")
    )


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
                fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in ov_model.get_ops())
                if not fake_quantize:
                    raise ExportError(
                        f"{name}: OpenVINO read no FakeQuantize op from the quantized graph; it would run in float"
                    )
                notes["int8"] = (
                    f"{fake_quantize} FakeQuantize ops carrying the quantize stage's scales ({_int8_scheme()}); "
                    "the CPU plugin runs the quantized convolutions/matmuls as int8 kernels and the remaining "
                    f"float ops in the INFERENCE_PRECISION_HINT ({inference_precision or 'plugin default'})"
                )
        task.advance()
        with converting(name, "saving the OpenVINO IR", ui=ctx.ui):
            ov.save_model(ov_model, str(xml), compress_to_fp16=spec.precision == "fp16")
            written = ov.Core().read_model(str(xml))
            if len(written.inputs) != 1 or len(written.outputs) != 1:
                raise ValueError(
                    f"expected one input and one output, got {len(written.inputs)} and {len(written.outputs)}"
                )
            inp, out = written.inputs[0], written.outputs[0]
            io = {
                "input": {
                    "name": inp.get_any_name(),
                    "shape": [int(d) for d in inp.get_shape()],
                    "dtype": np.dtype(inp.get_element_type().to_dtype()).name,
                },
                "output": {
                    "name": out.get_any_name() if out.get_names() else "",
                    "shape": [int(d) for d in out.get_shape()],
                    "dtype": np.dtype(out.get_element_type().to_dtype()).name,
                },
            }
        task.advance()
    if spec.precision == "fp16":
        notes["fp16"] = (
            "weights stored as float16 (compress_to_fp16); the CPU plugin decompresses them at load "
            "and computes in its INFERENCE_PRECISION_HINT"
        )
    return finish_artifact(
        spec,
        ctx,
        runtime=OpenVINOExporter.runtime,
        path=xml,
        files=[xml, xml.with_suffix(".bin")],
        io=io,
        converter=package_versions("torch", "openvino"),
        notes=notes,
        inference_precision=inference_precision,
    )
