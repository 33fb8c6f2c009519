"""The recipe: a YAML file parsed into a strict, frozen pydantic model.

`load_recipe(path)` parses, validates and cross-checks a recipe; every error names the file, the line,
the key path and, where it can, the closest valid key or value. Nothing here imports a framework.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from edgecompress.errors import EdgeCompressError, RecipeError
from edgecompress.registry import EXPORTERS, STAGES, did_you_mean
from edgecompress.specs import find_spec_file
from edgecompress.stages.base import StageConfig

MODEL_SUFFIXES = {
    ".pt2": "torch",
    ".pt": "torch",
    ".pth": "torch",
    ".ts": "torch",
    ".torchscript": "torch",
    ".keras": "keras",
    ".h5": "keras",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    source: str = Field(
        description="Where the model comes from: 'path/file.py:function', 'package.module:function', "
        "a torch.export '.pt2', a TorchScript file ('.pt'/'.ts'), or a Keras file. Python entries and "
        "TorchScript/pickle files execute code when loaded: only use sources you trust."
    )
    input_shape: list[Annotated[int, Field(gt=0)]] = Field(
        description="Shape of one input batch in the model's own layout, batch first, e.g. [1, 1, 32, 32]."
    )
    checkpoint: str | None = Field(
        default=None, description="Optional state_dict file loaded into the model after it is built."
    )
    framework: Literal["torch", "keras"] | None = Field(
        default=None, description="The model's framework; inferred from `source` when omitted."
    )
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments passed to a python-entry model factory."
    )

    @field_validator("input_shape")
    @classmethod
    def _rank(cls, v: list[int]) -> list[int]:
        if len(v) < 2:
            raise ValueError("input_shape needs a batch dimension and at least one more, e.g. [1, 1, 32, 32]")
        return v

    @property
    def resolved_framework(self) -> str:
        if self.framework:
            return self.framework
        suffix = Path(self.source.split(":")[0]).suffix.lower()
        if suffix in MODEL_SUFFIXES:
            return MODEL_SUFFIXES[suffix]
        if ":" not in self.source and suffix == "":
            return "keras"  # a SavedModel directory
        return "torch"


class Normalize(_Strict):
    mean: list[float] = Field(description="Per-channel mean subtracted from pixels scaled to [0, 1].")
    std: list[Annotated[float, Field(gt=0)]] = Field(
        description="Per-channel divisor applied after the mean."
    )

    @model_validator(mode="after")
    def _same_length(self) -> Normalize:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values but std has {len(self.std)}")
        return self


class SplitSpec(_Strict):
    val: float = Field(
        default=0.15, gt=0, lt=0.5, description="Fraction of the data held out for validation."
    )
    test: float = Field(default=0.2, gt=0, lt=0.5, description="Fraction held out for the final test.")
    calibration: int = Field(
        default=256, gt=0, description="Training images set aside (copied, not removed) for calibration."
    )


class AugmentSpec(_Strict):
    shift: int = Field(
        default=0,
        ge=0,
        le=16,
        description="Random translation of each training image by up to this many pixels in each direction "
        "(a new draw per image and step; the edge pixels are repeated into the uncovered border).",
    )
    hflip: bool = Field(
        default=False,
        description="Random horizontal flips (off for digits and text, where a flip changes the class).",
    )


#: Least images per split of `digits-deformed`: one of each of the ten digit classes.
MIN_DEFORMED_SPLIT = 10
_DeformedCount = Annotated[int, Field(strict=True, ge=MIN_DEFORMED_SPLIT, le=1_000_000)]


class DeformedSpec(_Strict):
    """Sizes and seed of the generated `digits-deformed` dataset (see edgecompress/datasets_deformed.py)."""

    train: _DeformedCount = Field(default=10_000, description="Generated training images.")
    val: _DeformedCount = Field(default=2_000, description="Generated validation images.")
    test: _DeformedCount = Field(default=3_000, description="Generated test images.")
    seed: int = Field(
        default=0,
        strict=True,
        ge=0,
        description="Seed of the source-digit split and of every deformation; independent of the recipe's "
        "`seed`, so that training seeds can vary on the same data. Same seed, sizes, image size and "
        "channels: the same images, generated once and then read from the cache.",
    )

    @field_validator("train", "val", "test", mode="before")
    @classmethod
    def _every_class(cls, v: Any) -> Any:
        """Say why a split needs 10 images (before pydantic's bare 'greater than or equal to 10')."""
        if isinstance(v, int) and not isinstance(v, bool) and v < MIN_DEFORMED_SPLIT:
            raise ValueError(
                f"needs at least {MIN_DEFORMED_SPLIT} images so that every digit class appears; got {v}"
            )
        return v


class DataSpec(_Strict):
    dataset: str = Field(
        default="digits",
        description="'digits' (bundled with scikit-learn), 'digits-deformed' (those digits with seeded "
        "elastic and affine deformations, clutter and noise, generated at image_size and channels and "
        "cached; sizes in `deformed`), 'folder' (one subfolder per class), 'npz' (arrays x and y), or a "
        "python entry 'file.py:function' returning (x, y) or a dict of splits.",
    )
    path: str | None = Field(default=None, description="Folder or .npz file for 'folder' and 'npz'.")
    image_size: tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]] = Field(
        default=(32, 32), description="Height and width images are resized to."
    )
    channels: Literal[1, 3] = Field(default=1, description="1 for grayscale, 3 for RGB.")
    layout: Literal["NCHW", "NHWC"] = Field(
        default="NCHW", description="Layout of the model's input; the exports keep it and record it."
    )
    normalize: Normalize | None = Field(
        default=None,
        description="Per-channel normalisation after scaling pixels to [0, 1]; recorded in exports.",
    )
    batch_size: int = Field(default=64, gt=0, description="Training and evaluation batch size.")
    augment: AugmentSpec = Field(
        default_factory=AugmentSpec,
        description="Augmentation of training batches in every training stage (train, distill, QAT); with "
        "distillation the teacher sees the same augmented images (its targets are computed per batch).",
    )
    split: SplitSpec = Field(
        default_factory=SplitSpec,
        description="How data is split (seeded, stratified). digits-deformed generates its own splits, so "
        "only `calibration` applies to it.",
    )
    deformed: DeformedSpec | None = Field(
        default=None,
        description="digits-deformed only: images per split and the generator's seed, e.g. {train: 10000, "
        "val: 2000, test: 3000, seed: 0} (the defaults). Train, validation and test are drawn from disjoint "
        "source digits; `split` fractions are not used.",
    )


class ExportSpec(_Strict):
    format: str = Field(description="Deployment format: 'tflite' (LiteRT) or 'openvino' (IR).")
    precision: Literal["fp32", "fp16", "int8", "auto"] = Field(
        default="fp32",
        description="Numeric precision. int8: every op with a fast int8 form on this runtime in int8 (its fastest "
        "form, measured on the device); auto: int8 or float per op, whichever the device runs faster, never past "
        "gates.max_accuracy_drop, and the whole model never slower than its all-int8 and fp32 exports. int8 "
        "and auto need a quantize stage.",
    )
    name: str | None = Field(default=None, description="Artifact name; defaults to '<format>-<precision>'.")
    options: dict[str, Any] = Field(default_factory=dict, description="Converter options for this format.")
    runtime_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Runtime options the artifact is compiled with wherever it runs (parity, profiling, per-op "
        "profiles), e.g. {sparse_weights_decompression_rate: 0.5}. openvino: sparse_weights_decompression_rate "
        "(0 to 1, default 1 = off; int8 and auto exports), OpenVINO's CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE: int8 "
        "FullyConnected layers whose weights are at least this fraction zeros, both dimensions multiples of 64, keep "
        "them packed; Intel AMX CPUs only, ignored elsewhere with a one-line warning. tflite: none.",
    )
    device: str | None = Field(
        default=None,
        description="int8/auto: the device the precision plan is measured on (one of `devices`; default the "
        "first). List an export twice, with names, for one artifact per device.",
    )
    plan: str | None = Field(
        default=None,
        description="int8/auto: a recipe.lock.yaml (or plan file) whose plan for this artifact is used instead "
        "of measuring: a build that reproduces on another CPU, or without the device.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_target_file(cls, data: Any, info: Any) -> Any:
        """`{target: NAME}` loads targets/NAME.yaml; keys given beside it override the file."""
        if isinstance(data, dict) and "target" in data:
            data = dict(data)
            name = data.pop("target")
            base = (info.context or {}).get("base_dir") if info.context else None
            path = find_spec_file("targets", str(name), base_dir=base)
            loaded = yaml.safe_load(path.read_text()) or {}
            loaded.setdefault("name", str(name))
            data = {**loaded, **data}
        return data

    @field_validator("format")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in EXPORTERS:
            raise ValueError(
                f"unknown format '{v}'{did_you_mean(v, EXPORTERS.names())}; valid: {', '.join(EXPORTERS.names())}"
            )
        return v

    @model_validator(mode="after")
    def _known_runtime_options(self) -> ExportSpec:
        """runtime_options: keys of the format's runtime (sessions.RUNTIME_OPTIONS) with values in range; the
        sparse weight decompression only for int8/auto (OpenVINO packs int8 weights only)."""
        if not self.runtime_options:
            return self
        from edgecompress.runtimes.sessions import runtime_properties

        # a ValueError here is a recipe error with the file, line and key
        runtime_properties(EXPORTERS.get(self.format).runtime, self.runtime_options)
        sparse = "sparse_weights_decompression_rate" in self.runtime_options
        if sparse and self.precision not in ("int8", "auto"):
            raise ValueError(
                f"runtime_options.sparse_weights_decompression_rate applies to int8 and auto exports (OpenVINO "
                f"packs sparse int8 FullyConnected weights only); this export is {self.precision}"
            )
        return self

    @property
    def artifact_name(self) -> str:
        return self.name or f"{self.format}-{self.precision}"


class ProfileSpec(_Strict):
    runs: int = Field(default=200, gt=0, description="Timed inferences after warm-up.")
    warmup_seconds: float = Field(
        default=1.0, ge=0, description="Seconds of untimed inference before timing."
    )
    threads: int | None = Field(default=None, gt=0, description="Inference threads; default: the device's.")
    rounds: int = Field(
        default=3,
        ge=1,
        le=50,
        description="Fresh-process measurements of each artifact, interleaved across the artifacts of a "
        "device (artifact A, B, C, then A, B, C again ...); the reported p50 is the lowest of the rounds' p50s "
        "(interference only slows a run) and their spread is kept, so a speedup inside the spread is "
        "reported as no measurable difference.",
    )
    enabled: bool = Field(default=True, description="Set false to skip latency and memory profiling.")
    energy: bool = Field(
        default=False,
        description="Measure energy per inference on every device with an energy source (its profile's "
        "`energy`), once per artifact: idle, `energy_windows` windows of back-to-back inference, idle again. "
        "Costs about (energy_windows + 1) x energy_window_seconds per artifact. Off: estimated from the power "
        "model only (labelled so). Turned on by a max_energy_mj gate.",
    )
    energy_window_seconds: float = Field(
        default=10.0, ge=10.0, description="Length of each timed energy window (at least 10 s)."
    )
    energy_windows: int = Field(
        default=3, ge=1, le=20, description="Timed energy windows; the median is kept."
    )
    cooldown_seconds: float = Field(
        default=0.0,
        ge=0,
        description="Pause between profiling rounds, for devices that heat up and throttle.",
    )
    parity_on_device: bool = Field(
        default=False,
        description="Run the test split through every artifact on each remote device (ssh, adb) and compare "
        "with the local run: does it give the same answers there? (top-1 agreement, max abs difference)",
    )


class ParitySpec(_Strict):
    min_agreement: float = Field(
        default=0.99,
        ge=0,
        le=1,
        description="Least top-1 agreement of each artifact with the framework model.",
    )


class GatesSpec(_Strict):
    max_accuracy_drop: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Largest allowed drop from the baseline's test accuracy (0.01 = 1 point).",
    )
    min_accuracy: float | None = Field(
        default=None, ge=0, le=1, description="Least test accuracy of every artifact."
    )
    max_size_kb: float | None = Field(default=None, gt=0, description="Largest artifact file size in KiB.")
    max_latency_ms: dict[str, float] = Field(
        default_factory=dict,
        description="Largest p50 latency per 'device/artifact' (globs allowed), e.g. {'desktop/tflite-*': 2.0}.",
    )
    max_energy_mj: dict[str, float] = Field(
        default_factory=dict,
        description="Largest energy per inference (mJ) per 'device/artifact' (globs allowed). Measured where the "
        "device has an energy source (this gate turns profile.energy on); an estimate fails it only with "
        "allow_estimated: true, else the gate fails for want of a measurement.",
    )
    allow_estimated: bool = Field(
        default=False, description="Let max_energy_mj be judged on estimated energy (power model) too."
    )


class Recipe(_Strict):
    """A whole build: model, data, stages, exports, devices, profiling and gates."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Run name; output goes to runs/<name>."
    )
    seed: int = Field(default=0, description="Seed for data splits, training and pruning.")
    model: ModelSpec = Field(description="The trained model to compress.")
    data: DataSpec = Field(default_factory=DataSpec, description="Dataset, preprocessing and splits.")
    stages: list[SerializeAsAny[StageConfig]] = Field(
        default_factory=list, description="Stages run in order; see `edgecompress schema`."
    )
    export: list[ExportSpec] = Field(default_factory=list, description="Artifacts to export and verify.")
    devices: list[str] = Field(
        default_factory=lambda: ["desktop"], description="Device profiles (devices/*.yaml)."
    )
    profile: ProfileSpec = Field(default_factory=ProfileSpec, description="Latency and memory measurement.")
    parity: ParitySpec = Field(default_factory=ParitySpec, description="Artifact vs framework model checks.")
    gates: GatesSpec = Field(
        default_factory=GatesSpec, description="Limits that fail the build when exceeded."
    )

    @field_validator("stages", mode="before")
    @classmethod
    def _stage_configs(cls, value: Any) -> Any:
        """Validate each entry through the config class its `type` names in the stage registry."""
        if not isinstance(value, list):
            return value
        out = []
        for i, entry in enumerate(value):
            if isinstance(entry, StageConfig):
                out.append(entry)
                continue
            if not isinstance(entry, dict) or "type" not in entry:
                raise _NestedError(
                    ("stages", i), f"each stage needs a 'type', one of: {', '.join(STAGES.names())}"
                )
            kind = str(entry["type"])
            if kind not in STAGES:
                raise _NestedError(
                    ("stages", i, "type"),
                    f"unknown stage '{kind}'{did_you_mean(kind, STAGES.names())}; valid: {', '.join(STAGES.names())}",
                )
            config_cls = STAGES.get(kind).Config
            try:
                out.append(config_cls.model_validate(entry))
            except ValidationError as exc:
                raise _NestedError(("stages", i), exc, config_cls) from None
        return out

    @model_validator(mode="after")
    def _unique_artifacts(self) -> Recipe:
        names = [e.artifact_name for e in self.export]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"export names must be unique; repeated: {', '.join(dupes)} (set 'name:' on one)"
            )
        return self

    def content_hash(self) -> str:
        """sha256 of the resolved recipe: two recipes with the same hash build the same thing."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


class _NestedError(Exception):
    """Carries a stage-config error out of pydantic with its full location (pydantic would flatten it)."""

    def __init__(
        self, loc: tuple[Any, ...], error: ValidationError | str, model: type[BaseModel] | None = None
    ):
        super().__init__(str(error))
        self.loc = loc
        self.error = error
        self.model = model


def _check_latency_budgets(recipe: Recipe, recipe_path: Path, fail: Any) -> None:
    """prune.latency: each budget's export and device exist and its runtime can be measured here, checked
    before any training (a budget found wrong after an hour of training is an hour lost)."""
    budgets = [
        (i, j, b)
        for i, s in enumerate(recipe.stages)
        for j, b in enumerate(getattr(s, "latency", None) or [])
    ]
    if not budgets:
        return
    from edgecompress.registry import EXPORTERS
    from edgecompress.runtimes.sessions import runtime_version
    from edgecompress.specs import load_device

    exports = {e.artifact_name: e for e in recipe.export}
    for i, j, budget in budgets:
        where = ("stages", i, "latency", j)
        spec = exports.get(budget.export)
        if spec is None:
            raise fail(
                (*where, "export"),
                f"'{budget.export}' is not one of the recipe's exports ({', '.join(exports) or 'none'})"
                f"{did_you_mean(budget.export, list(exports))}",
            )
        device = budget.device or spec.device or (recipe.devices[0] if recipe.devices else None)
        if device is None or device not in recipe.devices:
            raise fail(
                (*where, "device"),
                f"'{device}' is not one of the recipe's devices ({', '.join(recipe.devices) or 'none'})",
            )
        profile = load_device(device, base_dir=recipe_path.parent)
        runtime = EXPORTERS.get(spec.format).runtime
        # a remote device's runtime is checked when its facts are read, in the prune stage's pre-check
        if profile.connection.runner == "local" and runtime_version(runtime) is None:
            raise fail(
                (*where, "export"),
                f"no latency model of {device}/{runtime} and no way to measure one: {runtime} is not "
                "installed here (pip install 'edgecompress[all]')",
            )


def _missing_file(source: str, recipe_path: Path) -> str | None:
    """The file a model source names ('file.py:function' or a model file) when it does not exist."""
    file_part = source.split(":")[0] if source.count(":") == 1 else source
    looks_like_path = file_part.endswith(".py") or Path(file_part).suffix.lower() in MODEL_SUFFIXES
    return file_part if looks_like_path and not resolve_path(file_part, recipe_path).exists() else None


def _check_precrop_references(recipe: Recipe, recipe_path: Path, fail: Any) -> None:
    """prune.reference: only on a precrop before the first train stage, naming a model that exists."""
    from edgecompress.stages.prune.precrop_reference import cropped_before_train

    before_train = cropped_before_train(recipe.stages)
    for i, stage in enumerate(recipe.stages):
        reference = getattr(stage, "reference", None)
        if reference is None:
            continue
        if i not in before_train:
            trains = [j for j, s in enumerate(recipe.stages) if s.type == "train"]
            why = f"stage {trains[0]} trains before it" if trains else "the recipe has no train stage"
            raise fail(
                ("stages", i, "reference"),
                f"applies to a precrop before the first train stage (an untrained model cropped, with no "
                f"trained unpruned counterpart in the build); {why}",
            )
        missing = _missing_file(reference, recipe_path)
        if missing:
            raise fail(("stages", i, "reference"), f"file not found: {missing}")


# ---------------------------------------------------------------------------------------------- loading


def _line_map(text: str) -> dict[tuple[Any, ...], int]:
    """Key path -> 1-based line of every mapping key and sequence item in a YAML document."""
    lines: dict[tuple[Any, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, val in node.value:
                sub = (*path, key.value)
                lines[sub] = key.start_mark.line + 1
                walk(val, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[(*path, i)] = item.start_mark.line + 1
                walk(item, (*path, i))

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, ())
    return lines


def _fields_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str]:
    """Valid keys of the model reached by following `loc` (for did-you-mean on unknown keys)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return list(getattr(current, "model_fields", {})) if current is not None else []


def _describe(err: dict[str, Any], model: type[BaseModel] | None, loc: tuple[Any, ...]) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        key = loc[-1]
        valid = _fields_at(model, loc[:-1])
        return f"unknown key '{key}'{did_you_mean(str(key), valid)}" + (
            f"; valid: {', '.join(valid)}" if valid else ""
        )
    if kind == "missing":
        return "required key is missing"
    msg = err.get("msg", "invalid value").removeprefix("Value error, ")
    if kind == "literal_error":
        expected = [
            e.strip(" '") for e in str(err.get("ctx", {}).get("expected", "")).replace(" or ", ",").split(",")
        ]
        msg += did_you_mean(str(err.get("input")), [e for e in expected if e])
    if (
        "input" in err
        and kind not in {"missing", "model_type", "dict_type"}
        and not isinstance(err["input"], dict | list)
    ):
        msg += f" (got {err['input']!r})"
    return msg


def _format_errors(
    errors: list[dict[str, Any]],
    model: type[BaseModel] | None,
    prefix: tuple[Any, ...],
    where: str,
    lines: dict[tuple[Any, ...], int],
) -> str:
    out = []
    for err in errors:
        loc = tuple(p for p in err.get("loc", ()) if p not in ("function-after", "function-before"))
        full = (*prefix, *loc)
        line = next((lines[full[:n]] for n in range(len(full), 0, -1) if full[:n] in lines), None)
        key = ".".join(str(p) for p in full) or "(top level)"
        out.append(f"{where}{f':{line}' if line else ''}: {key}: {_describe(err, model, loc)}")
    return "\n".join(out)


def parse_recipe(text: str, *, source: str = "<recipe>", base_dir: Path | None = None) -> Recipe:
    """Parse and validate recipe text. Raises RecipeError with 'file:line: key: problem' lines."""
    try:
        data = yaml.safe_load(text)
        lines = _line_map(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise RecipeError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a YAML mapping with at least 'name' and 'model'")
    context = {"base_dir": base_dir}
    try:
        return Recipe.model_validate(data, context=context)
    except ValidationError as exc:
        raise RecipeError(_format_errors(exc.errors(), Recipe, (), source, lines)) from None
    except _NestedError as exc:
        if isinstance(exc.error, ValidationError):
            raise RecipeError(_format_errors(exc.error.errors(), exc.model, exc.loc, source, lines)) from None
        line = lines.get(exc.loc) or lines.get(exc.loc[:2])
        key = ".".join(str(p) for p in exc.loc)
        raise RecipeError(f"{source}{f':{line}' if line else ''}: {key}: {exc.error}") from None
    except EdgeCompressError as exc:  # a target file that does not exist, a plugin that fails to import
        raise RecipeError(f"{source}: {exc}") from None


def load_recipe(path: str | Path, *, check: bool = True) -> Recipe:
    """Read, validate and (by default) cross-check the recipe at `path`."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    recipe = parse_recipe(path.read_text(), source=str(path), base_dir=path.parent)
    if check:
        check_recipe(recipe, path)
    return recipe


def resolve_path(value: str, recipe_path: Path) -> Path:
    """A path from a recipe: absolute, relative to the recipe's folder, else relative to the current directory."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    beside = recipe_path.parent / p
    return beside if beside.exists() or not p.exists() else p


def check_recipe(recipe: Recipe, recipe_path: Path) -> None:
    """Cross-checks that need the file system or the registries. Raises RecipeError on the first problem."""
    from edgecompress.registry import FRAMEWORKS
    from edgecompress.specs import load_device

    where = str(recipe_path)
    lines = _line_map(recipe_path.read_text())

    def fail(loc: tuple[Any, ...], message: str) -> RecipeError:
        line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
        return RecipeError(f"{where}{f':{line}' if line else ''}: {'.'.join(map(str, loc))}: {message}")

    framework = recipe.model.resolved_framework
    if framework not in FRAMEWORKS:
        raise fail(
            ("model", "source"),
            f"{framework} models are not supported yet; supported: {', '.join(FRAMEWORKS.names())}",
        )
    missing = _missing_file(recipe.model.source, recipe_path)
    if missing:
        raise fail(("model", "source"), f"file not found: {missing}")
    from edgecompress.entries import missing_function

    for loc, source in [(("model", "source"), recipe.model.source)] + [
        (("stages", i, "teacher"), s.teacher)
        for i, s in enumerate(recipe.stages)
        if getattr(s, "teacher", None)
    ]:
        problem = missing_function(source, recipe_path)
        if problem:
            raise fail(loc, problem)
    if recipe.model.checkpoint and not resolve_path(recipe.model.checkpoint, recipe_path).exists():
        raise fail(("model", "checkpoint"), f"file not found: {recipe.model.checkpoint}")
    if recipe.data.dataset in {"folder", "npz"}:
        if not recipe.data.path:
            raise fail(("data", "dataset"), f"dataset '{recipe.data.dataset}' needs 'path:'")
        if not resolve_path(recipe.data.path, recipe_path).exists():
            raise fail(("data", "path"), f"not found: {recipe.data.path}")
    if recipe.data.deformed is not None and recipe.data.dataset != "digits-deformed":
        raise fail(
            ("data", "deformed"),
            f"applies to dataset 'digits-deformed' only (dataset is '{recipe.data.dataset}'); remove it",
        )
    if recipe.data.normalize and len(recipe.data.normalize.mean) not in {1, recipe.data.channels}:
        raise fail(("data", "normalize", "mean"), f"needs 1 or {recipe.data.channels} values (data.channels)")
    for i, stage in enumerate(recipe.stages):
        stage_class = STAGES.get(stage.type)
        if framework not in stage_class.backends:
            raise fail(
                ("stages", i, "type"),
                f"stage '{stage.type}' has no {framework} backend (it has: {', '.join(stage_class.backends)})",
            )
        problem = stage_class(stage).unsupported(framework)
        if problem is not None:
            raise fail(("stages", i, problem[0]), problem[1])
    has_quantize = any(s.type == "quantize" for s in recipe.stages)
    if has_quantize and recipe.stages[-1].type != "quantize":
        index = next(i for i, s in enumerate(recipe.stages) if s.type == "quantize")
        raise fail(
            ("stages", index, "type"),
            "quantize must be the last stage (later stages would train a quantized graph)",
        )
    for i, stage in enumerate(recipe.stages):
        earlier = [j for j, s in enumerate(recipe.stages[:i]) if getattr(s, "pattern", False)]
        if stage.type == "prune" and not getattr(stage, "pattern", False) and earlier:
            raise fail(
                ("stages", i, "method"),
                f"channel pruning after the pattern sparsity of stages.{earlier[0]} would change the shapes its "
                "pattern was made for (N:M groups, blocks); prune channels first, then sparsify",
            )
        if getattr(stage, "sparsity_schedule", "oneshot") != "polynomial":
            continue
        after = next((s for s in recipe.stages[i + 1 :] if s.type in ("train", "distill", "quantize")), None)
        if after is None or after.type == "quantize":
            raise fail(
                ("stages", i, "sparsity_schedule"),
                "polynomial ramps the sparsity over the next train or distill stage, and none follows before "
                "quantize; add one after this stage or use oneshot",
            )
    for i, spec in enumerate(recipe.export):
        exporter = EXPORTERS.get(spec.format)
        if framework not in exporter.backends:
            raise fail(("export", i, "format"), f"{spec.format} export has no {framework} backend")
        supported = (*exporter.precisions, "auto") if "int8" in exporter.precisions else exporter.precisions
        if spec.precision not in supported:
            raise fail(("export", i, "precision"), f"{spec.format} supports {', '.join(supported)}")
        for key, value in spec.options.items():
            if key not in exporter.options:
                valid = ", ".join(exporter.options) or "none"
                raise fail(
                    ("export", i, "options", key),
                    f"unknown {spec.format} option '{key}'{did_you_mean(key, exporter.options)}; valid: {valid}",
                )
            allowed = exporter.options[key]
            if allowed is not None and str(value) not in allowed:
                raise fail(
                    ("export", i, "options", key),
                    f"'{value}' is not one of {', '.join(allowed)}{did_you_mean(str(value), allowed)}",
                )
        planned = framework in STAGES.get("quantize").plan_backends
        if not planned and (spec.precision == "auto" or spec.plan is not None):
            key = "precision" if spec.precision == "auto" else "plan"
            raise fail(
                ("export", i, key),
                f"precision plans (precision auto, plan:) are made by the PyTorch path's precision planner, which "
                f"{framework} models do not have yet; export int8 (every layer the quantize stage quantized)",
            )
        if spec.precision in ("int8", "auto") and not has_quantize:
            raise fail(
                ("export", i, "precision"), f"{spec.precision} export needs a 'quantize' stage before it"
            )
        if spec.device is not None and spec.device not in recipe.devices:
            raise fail(
                ("export", i, "device"),
                f"'{spec.device}' is not one of the recipe's devices ({', '.join(recipe.devices)})"
                f"{did_you_mean(spec.device, recipe.devices)}",
            )
        if (spec.device is not None or spec.plan is not None) and spec.precision not in ("int8", "auto"):
            key = "device" if spec.device is not None else "plan"
            raise fail(
                ("export", i, key),
                f"'{key}' applies to int8 and auto exports only (precision is {spec.precision})",
            )
        if spec.plan is not None:
            from edgecompress.precision import pinned_entry

            path = resolve_path(spec.plan, recipe_path)
            if not path.is_file():
                raise fail(
                    ("export", i, "plan"),
                    f"file not found: {spec.plan} (a recipe.lock.yaml of an earlier build)",
                )
            try:
                pinned_entry(path, spec.artifact_name)
            except ValueError as exc:
                raise fail(
                    ("export", i, "plan"), f"{exc}: pin a lock file written by a build with this export"
                ) from None
    for i, name in enumerate(recipe.devices):
        try:
            device = load_device(name, base_dir=recipe_path.parent)
        except EdgeCompressError as exc:
            raise fail(("devices", i), str(exc)) from None
        if recipe.profile.parity_on_device and device.connection.mode == "native":
            raise fail(
                ("profile", "parity_on_device"),
                f"device {name} runs a native benchmark tool (connection.mode: native), which returns no "
                "outputs: set its mode to script (a Python with numpy and the runtime there) or turn this off",
            )
    _check_latency_budgets(recipe, recipe_path, fail)
    _check_precrop_references(recipe, recipe_path, fail)
    known = {f"{d}/{e.artifact_name}" for d in recipe.devices for e in recipe.export}
    for gate in ("max_latency_ms", "max_energy_mj"):
        for pattern in getattr(recipe.gates, gate):
            if not fnmatch.filter(known, pattern):
                raise fail(
                    ("gates", gate, pattern),
                    f"matches no 'device/artifact'; known: {', '.join(sorted(known)) or 'none'}",
                )
