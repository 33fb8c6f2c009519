"""What every exporter does after converting: the JSON sidecar beside the artifact and the Artifact record.

The sidecar `<name>.json` tells an app how to feed the model: input name, shape, dtype and layout, output
shape, precision, the preprocessing the data went through (`DataBundle.describe()`), the converter
versions that produced it, and how to compile it: `runtime_config` in the runtime's own property names (for
an app: `core.compile_model(xml, "CPU", runtime_config)`) and `runtime_options` in the recipe's keys (read
back by `artifact_from_file`, so `edgecompress profile FILE` runs it the same way). Input and output facts are read back from the written file on its runtime, so
they describe the artifact, not what the exporter meant to write.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecompress.errors import ExportError
from edgecompress.exporters.base import Artifact

if TYPE_CHECKING:
    from edgecompress.context import RunContext
    from edgecompress.recipe import ExportSpec


def check_request(spec: ExportSpec, *, precisions: tuple[str, ...], options: tuple[str, ...] = ()) -> None:
    """ExportError when the spec asks for a precision or converter option this exporter does not have."""
    if spec.precision not in precisions:
        raise ExportError(
            f"{spec.artifact_name}: {spec.format} export does not support precision '{spec.precision}' yet; "
            f"supported: {', '.join(precisions)}"
        )
    unknown = sorted(set(spec.options) - set(options))
    if unknown:
        raise ExportError(
            f"{spec.artifact_name}: unknown {spec.format} option(s) {', '.join(unknown)}; "
            f"valid: {', '.join(options) or 'none'}"
        )


def finish_artifact(
    spec: ExportSpec,
    ctx: RunContext,
    *,
    runtime: str,
    path: Path,
    files: list[Path],
    io: dict[str, Any],
    converter: dict[str, str],
    notes: dict[str, Any] | None = None,
    inference_precision: str | None = None,
) -> Artifact:
    """Write `<out_dir>/<name>.json` and return the Artifact.

    `io` is {"input": {"name", "shape", "dtype"}, "output": {"name", "shape", "dtype"}} as the runtime reads
    the file. The sidecar is not one of `Artifact.files` (those are what the runtime loads; their sizes are
    the artifact's size). `spec.runtime_options` go into the sidecar and the Artifact.
    """
    from edgecompress.runtimes.sessions import runtime_properties

    runtime_config = {
        **({"INFERENCE_PRECISION_HINT": inference_precision} if inference_precision else {}),
        **runtime_properties(runtime, spec.runtime_options),
    }
    input_info = {**io["input"], "layout": ctx.data.layout}
    sidecar = {
        "artifact": spec.artifact_name,
        "format": spec.format,
        "runtime": runtime,
        "precision": spec.precision,
        "files": [f.name for f in files],
        "input": input_info,
        "output": {**io["output"], "meaning": "logits, one per class (apply softmax for probabilities)"},
        "preprocessing": ctx.data.describe(),
        "converter": converter,
        "runtime_config": runtime_config,
        "runtime_options": dict(spec.runtime_options),
        **({"notes": notes} if notes else {}),
    }
    path.with_name(f"{spec.artifact_name}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return Artifact(
        name=spec.artifact_name,
        format=spec.format,
        runtime=runtime,
        precision=spec.precision,
        path=path,
        files=files,
        size_bytes=sum(f.stat().st_size for f in files),
        input_shape=[int(d) for d in io["input"]["shape"]],
        layout=ctx.data.layout,
        inference_precision=inference_precision,
        runtime_options=dict(spec.runtime_options),
    )
