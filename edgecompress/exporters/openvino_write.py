"""Writing an OpenVINO IR whatever framework made it: saved (fp16: weights compressed), read back for its
input/output facts, and its sidecar written (`finish_openvino`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecompress.exporters.base import Artifact
from edgecompress.exporters.conversion import converting
from edgecompress.exporters.openvino import OpenVINOExporter
from edgecompress.exporters.sidecar import finish_artifact

if TYPE_CHECKING:
    from edgecompress.context import RunContext
    from edgecompress.recipe import ExportSpec


def finish_openvino(
    ov_model: Any,
    spec: ExportSpec,
    ctx: RunContext,
    xml: Path,
    *,
    task: Any | None,
    notes: dict[str, Any],
    converter: dict[str, str],
    inference_precision: str | None,
) -> Artifact:
    """`ov_model` saved as `xml` + `.bin` (fp16: weights stored as float16), read back (one input, one output)
    and its sidecar written; `task` (a progress bar's, if any) advances once."""
    import openvino as ov

    with converting(spec.artifact_name, "saving the OpenVINO IR", ui=ctx.ui):
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
    if task is not None:
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
        converter=converter,
        notes=notes,
        inference_precision=inference_precision,
    )


def int8_note(ov_model: Any, name: str, *, source: str, scheme: str, inference_precision: str | None) -> str:
    """The int8 note of an OpenVINO export: how many FakeQuantize ops carry `source`'s scales. ExportError when
    OpenVINO read none (the model would run in float)."""
    from edgecompress.errors import ExportError

    fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in ov_model.get_ops())
    if not fake_quantize:
        raise ExportError(f"{name}: OpenVINO read no FakeQuantize op from {source}; it would run in float")
    return (
        f"{fake_quantize} FakeQuantize ops carrying {source}'s scales ({scheme}); the CPU plugin runs the "
        "quantized convolutions/matmuls as int8 kernels and the remaining float ops in the "
        f"INFERENCE_PRECISION_HINT ({inference_precision or 'plugin default'})"
    )
