"""What an exporter produces and promises."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from edgecompress.context import RunContext
    from edgecompress.recipe import ExportSpec


class Artifact(BaseModel):
    """A file (OpenVINO: the .xml, its .bin beside it) a runtime can load, and how to feed it."""

    model_config = ConfigDict(frozen=True)
    name: str  # e.g. "tflite-fp32"
    format: str  # "tflite" | "openvino"
    runtime: str  # "litert" | "openvino"
    precision: str
    path: Path
    files: list[Path]  # every file that belongs to the artifact (sizes add up to size_bytes)
    size_bytes: int
    input_shape: list[int]
    layout: str
    #: Arithmetic precision the runtime must be asked for (OpenVINO INFERENCE_PRECISION_HINT), or None for
    #: the runtime's default. Parity and profiling run the artifact this way; the sidecar records it.
    inference_precision: str | None = None
    runtime_options: dict[str, Any] = Field(
        default_factory=dict,
        description="The export's runtime_options (recipe keys, e.g. {sparse_weights_decompression_rate: 0.5}): "
        "compiled in wherever the artifact runs (parity, profiling, per-op profiles); the sidecar records them.",
    )


class Exporter:
    """Subclasses set `name`, `runtime`, `precisions`, `backends` ({framework: "module:function"}).

    A backend function is `export(model, spec, ctx, out_dir) -> Artifact`. `options` lists the keys a
    recipe may give in `export[].options` with their allowed values (None: any value); the recipe is
    checked against it at validation time.
    """

    options: ClassVar[dict[str, tuple[str, ...] | None]] = {}

    name: ClassVar[str]
    runtime: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]
    backends: ClassVar[dict[str, str]]

    def export(self, model: Any, spec: ExportSpec, ctx: RunContext, out_dir: Path) -> Artifact:
        """The backend's artifact, carrying `spec.runtime_options` (in its sidecar too) whichever backend
        made it, so every later run of it (parity, profiling, `edgecompress profile FILE`) compiles them in."""
        from edgecompress.registry import resolve_backend

        artifact = resolve_backend(self, ctx.framework)(model, spec, ctx, out_dir)
        return with_runtime_options(artifact, dict(spec.runtime_options))


def with_runtime_options(artifact: Artifact, options: dict[str, Any]) -> Artifact:
    """`artifact` with `options` as its runtime options, recorded in its sidecar (when it has one) as well."""
    import json

    sidecar = artifact.path.with_suffix(".json")
    if sidecar.is_file():
        data = json.loads(sidecar.read_text())
        if data.get("runtime_options", {}) != options:
            data["runtime_options"] = options
            sidecar.write_text(json.dumps(data, indent=2) + "\n")
    return artifact.model_copy(update={"runtime_options": options})


FORMAT_BY_SUFFIX = {".tflite": ("tflite", "litert"), ".xml": ("openvino", "openvino")}


def artifact_from_file(path: Path) -> Artifact:
    """An Artifact for a file made by edgecompress or anyone else (`edgecompress profile FILE`).

    The sidecar `<stem>.json` beside it, when present, supplies precision, layout, the inference precision
    and the runtime options the artifact is meant to run with; otherwise they are read as unknown/default.
    RecipeError for a runtime option the artifact's runtime does not have.
    """
    import json

    from edgecompress.errors import RecipeError
    from edgecompress.runtimes.sessions import runtime_properties

    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: artifact file not found")
    if path.suffix not in FORMAT_BY_SUFFIX:
        raise RecipeError(f"{path}: not an artifact edgecompress can run; give a .tflite or an OpenVINO .xml")
    fmt, runtime = FORMAT_BY_SUFFIX[path.suffix]
    files = [path] + ([path.with_suffix(".bin")] if fmt == "openvino" else [])
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise RecipeError(f"{path}: its weights file {missing[0].name} is missing")
    sidecar_path = path.with_suffix(".json")
    sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.is_file() else {}
    options = sidecar.get("runtime_options") or {}
    try:
        if not isinstance(options, dict):
            raise ValueError(f"runtime_options must be a mapping, got {options!r}")
        runtime_properties(runtime, options)
    except ValueError as exc:
        raise RecipeError(f"{sidecar_path}: {exc}") from None
    return Artifact(
        name=sidecar.get("artifact", path.stem),
        format=fmt,
        runtime=runtime,
        precision=sidecar.get("precision", "unknown"),
        path=path,
        files=files,
        size_bytes=sum(f.stat().st_size for f in files),
        input_shape=list(sidecar.get("input", {}).get("shape", [])),
        layout=sidecar.get("input", {}).get("layout", "unknown"),
        inference_precision=sidecar.get("runtime_config", {}).get("INFERENCE_PRECISION_HINT"),
        runtime_options=options,
    )


def copy_artifact(artifact: Artifact, name: str, out_dir: Path) -> Artifact:
    """The artifact's files copied to `out_dir` under the name `name` (its sidecar too, naming it): an
    artifact exported once, e.g. by the precision planner's race, becomes the build's export without a
    second conversion. Its runtime options come along (model_copy, and the sidecar's copy)."""
    import json
    import shutil

    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for f in artifact.files:
        target = out_dir / f"{name}{f.suffix}"
        shutil.copyfile(f, target)
        files.append(target)
    sidecar = artifact.path.with_suffix(".json")
    if sidecar.is_file():
        data = json.loads(sidecar.read_text())
        data["artifact"] = name
        data["files"] = [f.name for f in files]
        (out_dir / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    return artifact.model_copy(update={"name": name, "path": files[0], "files": files})
