"""Run state shared by the stages of one build (configs stay frozen; state lives here)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecompress.console import UI
from edgecompress.data import DataBundle
from edgecompress.frameworks.base import FrameworkAdapter
from edgecompress.recipe import Recipe

#: The models in a RunContext that stage checkpoints save and `build --resume` restores (checkpoints.py, which
#: also keeps `notes` and `budget_references`): state a later stage reads must be one of them or be saved there.
CHECKPOINTED_MODELS = ("teacher", "budget_unpruned", "sparsity_dense")


@dataclass
class RunContext:
    recipe: Recipe
    recipe_path: Path
    workdir: Path  # the temporary build directory; moved to the output directory on success
    adapter: FrameworkAdapter
    data: DataBundle
    ui: UI
    #: The model as it entered the first compressing stage; distillation's default teacher.
    teacher: Any = None
    #: Facts a stage wants in the report (e.g. per-layer channel counts), keyed by stage index.
    notes: dict[int, dict[str, Any]] = field(default_factory=dict)
    current_stage: int = -1
    #: Set by the `quantize` stage: what an int8 exporter needs to lower the quantized model (backend-defined).
    quantization: Any = None
    #: Rebuild the latency tables this build uses instead of reading the cache (`--recalibrate`).
    recalibrate: bool = False
    #: Latency budgets (prune.latency): "<device>/<export>" -> (unpruned model measured ms, latency model's
    #: raw prediction), timed once per build, before training.
    budget_references: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: The model as it entered a latency-budget prune stage: exported as the budgets' reference artifacts.
    budget_unpruned: Any = None
    #: The model as it entered the first pattern-sparsity prune stage: exported as each export's dense twin, so
    #: the report measures what the zeros buy (size, compressed size, latency) on every runtime.
    sparsity_dense: Any = None

    @property
    def framework(self) -> str:
        return self.adapter.name

    @property
    def seed(self) -> int:
        return self.recipe.seed

    @property
    def input_shape(self) -> list[int]:
        return list(self.recipe.model.input_shape)

    def note(self, key: str, value: Any) -> None:
        """Record a fact about the current stage for the report."""
        self.notes.setdefault(self.current_stage, {})[key] = value

    @contextmanager
    def scratch(self, index: int) -> Iterator[None]:
        """While inside: a quiet UI, notes going to a scratch stage (`-1000 - index`, dropped on exit) and no
        quantization, for work a stage does on the side (a reference export, a trial quantization); the
        UI, current stage and quantization are put back on exit."""
        saved = (self.ui, self.current_stage, self.quantization)
        self.ui = UI(verbosity=0, console=self.ui.console)
        self.current_stage = -1000 - index
        self.quantization = None
        try:
            yield
        finally:
            self.notes.pop(self.current_stage, None)
            self.ui, self.current_stage, self.quantization = saved
