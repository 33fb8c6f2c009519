"""`distill`: fine-tune the student with knowledge distillation from a teacher (Hinton et al.)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from edgecompress.stages.base import ChannelsLast, Stage, StageConfig, TrainDevice

if TYPE_CHECKING:
    from edgecompress.context import RunContext


class DistillConfig(StageConfig):
    type: Literal["distill"] = "distill"
    epochs: int = Field(default=10, gt=0, description="Passes over the training split.")
    lr: float = Field(default=1e-3, gt=0, description="Peak learning rate.")
    optimizer: Literal["adamw", "sgd"] = Field(
        default="adamw", description="adamw, or sgd with momentum 0.9."
    )
    weight_decay: float = Field(default=1e-4, ge=0, description="Decoupled weight decay.")
    schedule: Literal["cosine", "constant"] = Field(default="cosine", description="Learning-rate schedule.")
    temperature: float = Field(default=4.0, gt=0, description="Softmax temperature T of the soft targets.")
    alpha: float = Field(
        default=0.9,
        ge=0,
        le=1,
        description="Weight of the KL term (scaled by T^2); 1 - alpha goes to the hard-label cross-entropy.",
    )
    teacher: str | None = Field(
        default=None,
        description="Teacher model source (same forms as model.source); default: the model as it entered "
        "the first compressing stage.",
    )
    keep_best: bool = Field(default=True, description="Keep the weights with the best validation accuracy.")
    device: TrainDevice
    channels_last: ChannelsLast


class DistillStage(Stage):
    """Knowledge distillation: loss = alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y).

    ```yaml
    - {type: distill, epochs: 10, temperature: 4.0, alpha: 0.9}
    ```
    """

    name = "distill"
    Config = DistillConfig
    backends: ClassVar[dict[str, str]] = {
        "torch": "edgecompress.stages.distill.stage:distill_backend",
        "keras": "edgecompress.stages.distill.stage:distill_backend",
    }


def distill_backend(model: Any, config: DistillConfig, ctx: RunContext) -> Any:
    """Framework-neutral: the adapter's `fit` implements the distillation loss."""
    from edgecompress.frameworks.base import fit_options
    from edgecompress.recipe import ModelSpec
    from edgecompress.sparsity import note_sparsity, training_plan

    if config.teacher:
        spec = ModelSpec(source=config.teacher, input_shape=ctx.input_shape, framework=ctx.framework)
        teacher = ctx.adapter.load(spec, ctx.recipe_path)
    else:
        teacher = ctx.teacher
    if teacher is None:
        teacher = ctx.adapter.copy(model)
        ctx.ui.warn("distill: no compressing stage ran before it; the teacher is a copy of the current model")
    ctx.note("teacher", config.teacher or "model before the first compressing stage")
    options = fit_options(
        config,
        data=ctx.recipe.data,
        description="distill",
        teacher=teacher,
        temperature=config.temperature,
        alpha=config.alpha,
        channels_last=config.channels_last,
        sparsity=training_plan(ctx.notes, [s.type for s in ctx.recipe.stages], ctx.current_stage),
    )
    model = ctx.adapter.fit(model, ctx.data, options, seed=ctx.seed, ui=ctx.ui)
    if options.sparsity is not None and options.sparsity["ramp"]:  # the sparsity the ramp reached, per layer
        note_sparsity(ctx, ctx.adapter.weights(model), options.sparsity)
    return model
