"""Writing a `.tflite` whatever framework made it: the float16 weight cast, TFLite's sparse weight encoding
after a pattern-sparsity stage, the file loaded back on LiteRT and its sidecar written (`finish_tflite`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecompress.environment import package_versions
from edgecompress.exporters.base import Artifact
from edgecompress.exporters.conversion import converting
from edgecompress.exporters.sidecar import finish_artifact
from edgecompress.exporters.tflite import TFLiteExporter

if TYPE_CHECKING:
    from edgecompress.context import RunContext
    from edgecompress.recipe import ExportSpec

#: TFLite ops whose constant weights ai-edge-quantizer's FLOAT_CASTING stores as float16.
FP16_WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "CONV_2D_TRANSPOSE", "EMBEDDING_LOOKUP")


def finish_tflite(
    content: bytes,
    spec: ExportSpec,
    ctx: RunContext,
    path: Path,
    *,
    task: Any,
    notes: dict[str, Any],
    converter: dict[str, str],
) -> Artifact:
    """`content` (the converter's fp32 or int8 model) written to `path` as the export asks: fp16 casts the
    weights, a sparse model's weights are stored sparse (unless `options.sparse_weights: off`), the file is
    loaded back on LiteRT for its input/output facts, and the sidecar written. `task` advances twice for fp16,
    once otherwise."""
    name = spec.artifact_name
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
        encoded = sparse_weights(path, ctx)
        if encoded:
            notes["sparse_weights"] = encoded
    with converting(name, "loading the written .tflite on LiteRT", ui=ctx.ui):
        io, fp16_tensors = tflite_io(path)
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


def tflite_io(path: Path) -> tuple[dict[str, Any], int]:
    """Input/output facts of a .tflite as the LiteRT interpreter reads it, and its count of float16 tensors."""
    from edgecompress.runtimes.sessions import LiteRTSession

    session = LiteRTSession(path, threads=1)
    io = {
        "input": {"name": session.input_name, "shape": session.input_shape, "dtype": session.input_dtype},
        "output": {"name": session.output_name, "shape": session.output_shape, "dtype": session.output_dtype},
    }
    return io, sum(dtype == "float16" for dtype in session.tensor_dtypes().values())


#: Weights with at least this many zeros are stored sparse (TensorFlow's converter uses the same bar).
SPARSE_WEIGHTS_MIN = 0.3


def sparse_weights(path: Path, ctx: RunContext) -> str | None:
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
