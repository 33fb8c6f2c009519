"""What every stage is: a frozen config (the YAML entry) and a class that applies it to a model.

A stage module (`stages/<name>/stage.py`) imports no framework. Its framework code lives in
`<framework>_backend.py` and is named in `Stage.backends`, picked by `registry.resolve_backend`.
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgecompress.errors import RecipeError

if TYPE_CHECKING:
    from edgecompress.context import RunContext


class StageConfig(BaseModel):
    """Base of every stage's config. Unknown keys are errors; configs never change after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str


#: The training fields of the train, distill and quantize (QAT) configs that are declared alike.
TrainDevice = Annotated[
    Literal["auto", "cpu", "cuda"],
    Field(
        default="auto",
        description="Where to train: auto (cuda when torch sees a GPU, else cpu), cpu or cuda (an error "
        "without one). The model comes back on the cpu.",
    ),
]
ChannelsLast = Annotated[
    bool,
    Field(
        default=False,
        description="Train in channels_last memory format on CPU (image models in NCHW): oneDNN runs "
        "MobileNet-style CNNs 1.7-2.0x faster so (benchmarks/training_speed.py), 1x1 strided convolutions kept "
        "in NCHW (an oneDNN AVX-512 bug). Off by default: it changes the trained weights' rounding, and "
        "integration tests of the int8 float forms have not yet been shown to pass on models trained so.",
    ),
]


class Stage:
    """A compression or training step. Subclasses set `name`, `Config`, `backends`, `compresses`."""

    name: ClassVar[str]
    Config: ClassVar[type[StageConfig]]
    backends: ClassVar[dict[str, str]]
    #: True for stages that compress (the teacher is the model as it entered the first such stage).
    compresses: ClassVar[bool] = True

    def __init__(self, config: StageConfig) -> None:
        self.config = config

    def precheck(self, model: Any, ctx: RunContext, index: int) -> None:
        """Before any stage runs: input errors found only with the model in hand (RecipeError). None here."""

    def unsupported(self, framework: str) -> tuple[str, str] | None:
        """(config key, why) when this configuration asks for something the framework's backend lacks, found
        by `validate` before any training; None here."""
        return None

    def apply(self, model: Any, ctx: RunContext) -> Any:
        """Run the stage through the backend for the model's framework; return the new model."""
        from edgecompress.registry import resolve_backend

        backend = resolve_backend(self, ctx.framework)
        return backend(model, self.config, ctx)


def precheck_stages(model: Any, ctx: RunContext) -> None:
    """Every stage's pre-check, in order, before any stage runs: input errors before any training."""
    from edgecompress.registry import STAGES

    for i, config in enumerate(ctx.recipe.stages):
        ctx.current_stage = i
        STAGES.get(config.type)(config).precheck(model, ctx, i)


def run_stage(config: StageConfig, index: int, model: Any, ctx: RunContext) -> Any:
    """Stage `index` of the recipe applied as a build applies it: the model entering the first compressing
    stage becomes `ctx.teacher` (distillation's default teacher) unless one is set; returns the new model."""
    from edgecompress.registry import STAGES

    stage = STAGES.get(config.type)(config)
    if stage.compresses and ctx.teacher is None:
        ctx.teacher = ctx.adapter.copy(model)
    ctx.current_stage = index
    return stage.apply(model, ctx)


def match_globs(
    patterns: Any, names: list[str], key: str, what: str = "conv or linear layer"
) -> dict[str, str]:
    """Layer name -> the first glob that matches it (or one of its parent modules, dot-separated), in the
    globs' order. Every glob must match: RecipeError naming the recipe `key` (e.g. prune.ignore) and the layers
    otherwise."""
    found: dict[str, str] = {}
    for pattern in patterns:
        hits = [n for n in names if _matches(pattern, n)]
        if not hits:
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise RecipeError(f"{key}: '{pattern}' matches no {what}; the layers are: {shown}")
        for n in hits:
            found.setdefault(n, pattern)
    return found


def _matches(pattern: str, name: str) -> bool:
    parts = name.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[:i]), pattern) for i in range(1, len(parts) + 1))
