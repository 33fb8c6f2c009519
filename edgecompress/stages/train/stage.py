"""`train`: plain supervised training (for demos that start from scratch, or to fine-tune)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from edgecompress.stages.base import ChannelsLast, Stage, StageConfig, TrainDevice

if TYPE_CHECKING:
    from edgecompress.context import RunContext


class TrainConfig(StageConfig):
    type: Literal["train"] = "train"
    epochs: int = Field(default=15, gt=0, description="Passes over the training split.")
    lr: float = Field(default=2e-3, gt=0, description="Peak learning rate.")
    optimizer: Literal["adamw", "sgd"] = Field(
        default="adamw", description="adamw, or sgd with momentum 0.9."
    )
    weight_decay: float = Field(default=5e-4, ge=0, description="Decoupled weight decay.")
    schedule: Literal["cosine", "constant"] = Field(default="cosine", description="Learning-rate schedule.")
    label_smoothing: float = Field(
        default=0.0, ge=0, lt=1, description="Label smoothing of the cross-entropy."
    )
    keep_best: bool = Field(default=True, description="Keep the weights with the best validation accuracy.")
    device: TrainDevice
    channels_last: ChannelsLast


class TrainStage(Stage):
    """Supervised training with cross-entropy.

    ```yaml
    - {type: train, epochs: 15, lr: 0.002, optimizer: adamw, schedule: cosine}
    ```
    """

    name = "train"
    Config = TrainConfig
    compresses = False
    backends: ClassVar[dict[str, str]] = {
        "torch": "edgecompress.stages.train.stage:fit_backend",
        "keras": "edgecompress.stages.train.stage:fit_backend",
    }


def fit_backend(model: Any, config: TrainConfig, ctx: RunContext) -> Any:
    """Framework-neutral: every adapter implements `fit`, so one function serves every framework."""
    from edgecompress.frameworks.base import fit_options
    from edgecompress.sparsity import note_sparsity, training_plan

    options = fit_options(
        config,
        data=ctx.recipe.data,
        description="train",
        label_smoothing=config.label_smoothing,
        channels_last=config.channels_last,
        sparsity=training_plan(ctx.notes, [s.type for s in ctx.recipe.stages], ctx.current_stage),
    )
    model = ctx.adapter.fit(model, ctx.data, options, seed=ctx.seed, ui=ctx.ui)
    if options.sparsity is not None and options.sparsity["ramp"]:  # the sparsity the ramp reached, per layer
        note_sparsity(ctx, ctx.adapter.weights(model), options.sparsity)
    return model
