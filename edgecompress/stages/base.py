"""What every stage is: a frozen config (the YAML entry) and a class that applies it to a model.

A stage module (`stages/<name>/stage.py`) imports no framework. Its framework code lives in
`<framework>_backend.py` and is named in `Stage.backends`, picked by `registry.resolve_backend`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from edgecompress.context import RunContext


class StageConfig(BaseModel):
    """Base of every stage's config. Unknown keys are errors; configs never change after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str


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

    def apply(self, model: Any, ctx: RunContext) -> Any:
        """Run the stage through the backend for the model's framework; return the new model."""
        from edgecompress.registry import resolve_backend

        backend = resolve_backend(self, ctx.framework)
        return backend(model, self.config, ctx)
