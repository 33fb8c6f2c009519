"""Parity: an exported artifact run on its own runtime, image by image, against the framework model's logits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgecompress.errors import ExportError
from edgecompress.exporters.conversion import first_line, native_stderr_captured

if TYPE_CHECKING:
    from edgecompress.console import UI
    from edgecompress.exporters.base import Artifact


class ParityResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    n: int = Field(description="Test images compared.")
    accuracy: float = Field(description="Top-1 accuracy of the artifact against the labels.")
    agreement: float = Field(
        description="Share of images where the artifact's top-1 equals the framework model's."
    )
    max_abs_diff: float = Field(description="Largest absolute logit difference to the framework model.")
    mean_abs_diff: float = Field(description="Mean absolute logit difference to the framework model.")
    execution_precision: str = Field(description="Precision the runtime computed in (e.g. f32, bf16).")


@dataclass(frozen=True)
class ArtifactOutputs:
    """An artifact's logits for a batch of images, and the precision its runtime computed in."""

    logits: np.ndarray
    execution_precision: str


def run_artifact(
    artifact: Artifact, x: np.ndarray, *, num_outputs: int, threads: int, ui: UI
) -> ArtifactOutputs:
    """Run `artifact` in this process on its runtime, one image per call (the exports have a batch-1 input),
    compiled with its runtime options as profiling compiles it; an option that takes no effect here is a
    one-line warning through `ui`.

    ExportError if the artifact cannot be loaded or run, or gives other than `num_outputs` values per image.
    """
    from edgecompress.runtimes.sessions import open_session

    if len(x) == 0:
        raise ExportError(f"{artifact.name}: no images to run it on")
    try:
        with native_stderr_captured(ui):
            session = open_session(
                artifact.runtime,
                artifact.path,
                threads=threads,
                inference_precision=artifact.inference_precision,
                runtime_options=artifact.runtime_options,
            )
    except Exception as exc:
        raise ExportError(
            f"{artifact.name}: cannot load {artifact.path.name} on {artifact.runtime}: {first_line(exc)}"
        ) from exc
    if session.input_shape[0] != 1 or session.input_shape[1:] != list(x.shape[1:]):
        raise ExportError(
            f"{artifact.name}: artifact input {session.input_shape} does not take images of {list(x.shape[1:])} one at a time"
        )
    for warning in session.warnings:
        ui.warn(f"{artifact.name}: {warning}")
    logits = np.empty((len(x), num_outputs), dtype=np.float32)
    with ui.progress(f"parity {artifact.name}", total=len(x)) as task:
        for i in range(len(x)):
            try:
                out = session.run(x[i : i + 1])
            except Exception as exc:
                raise ExportError(
                    f"{artifact.name}: inference on {artifact.runtime} failed: {first_line(exc)}"
                ) from exc
            if out.size != num_outputs:  # one row of logits per image
                raise ExportError(
                    f"{artifact.name}: artifact output {list(out.shape)} does not match the model's [1, {num_outputs}]"
                )
            logits[i] = out.reshape(-1)
            if i % 16 == 15 or i == len(x) - 1:
                task.advance(i % 16 + 1)
    return ArtifactOutputs(logits=logits, execution_precision=session.execution_precision)


def compare_logits(
    logits: np.ndarray, reference_logits: np.ndarray, labels: np.ndarray, *, execution_precision: str
) -> ParityResult:
    """Accuracy of `logits` and their top-1 agreement / absolute differences against `reference_logits`."""
    reference = np.asarray(reference_logits, dtype=np.float32).reshape(len(logits), -1)
    diff = np.abs(logits - reference)
    top1 = logits.argmax(1)
    return ParityResult(
        n=len(logits),
        accuracy=float((top1 == np.asarray(labels)).mean()),
        agreement=float((top1 == reference.argmax(1)).mean()),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        execution_precision=execution_precision,
    )


def check_parity(
    artifact: Artifact,
    x: np.ndarray,
    reference_logits: np.ndarray,
    labels: np.ndarray,
    *,
    threads: int,
    ui: UI,
) -> ParityResult:
    """Run `artifact` on its runtime over `x` and compare with `reference_logits` (the framework model on x).

    ExportError if the artifact cannot be loaded or run, or its outputs do not match the reference's shape.
    """
    if not (len(x) == len(reference_logits) == len(labels)) or len(x) == 0:
        raise ExportError(
            f"{artifact.name}: parity needs as many images, reference logits and labels (got {len(x)}, "
            f"{len(reference_logits)}, {len(labels)}), and at least one"
        )
    reference = np.asarray(reference_logits, dtype=np.float32).reshape(len(x), -1)
    out = run_artifact(artifact, x, num_outputs=reference.shape[1], threads=threads, ui=ui)
    return compare_logits(out.logits, reference, labels, execution_precision=out.execution_precision)
