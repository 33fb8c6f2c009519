"""`prune`: structured pruning that physically removes channels (method: channel)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgecompress.stages.base import Stage, StageConfig


class LatencyBudget(BaseModel):
    """A latency budget on one export of the recipe, measured on its device (see `prune.latency`)."""

    model_config = ConfigDict(extra="forbid")

    export: str = Field(
        description="The export the budget is on, by its artifact name (e.g. tflite-int8, openvino-auto): its "
        "format, precision (int8 for int8/auto) and device are what is timed."
    )
    device: str | None = Field(
        default=None,
        description="One of the recipe's devices; default the export's device (its `device:`, else the "
        "recipe's first).",
    )
    speedup: float | None = Field(
        default=None,
        gt=1,
        description="Times faster than the unpruned model's export in the same format and precision, which "
        "the build exports and measures as the reference.",
    )
    ms: float | None = Field(default=None, gt=0, description="Alternative to speedup: p50 latency in ms.")

    @model_validator(mode="after")
    def _one_budget(self) -> LatencyBudget:
        if (self.speedup is None) == (self.ms is None):
            raise ValueError("give one of speedup or ms")
        return self


class PruneConfig(StageConfig):
    type: Literal["prune"] = "prune"
    method: Literal["channel", "precrop"] = Field(
        default="channel",
        description="channel: dependency-aware removal of output channels (Torch-Pruning DepGraph), "
        "kept consistent across residual adds, concatenations, depthwise/grouped convs, BN and linear layers. "
        "precrop: PreCropping (Cai et al. 2022): layer-wise densities from pruning-at-initialization scores "
        "(criterion magnitude (= l1/l2), snip or synflow) thresholded globally, turned into per-group channel "
        "keep ratios (log-space least squares) and scaled to the macs_target, params_target or latency budget "
        "(by the latency model's prediction); each group keeps its channels of highest summed score. For an "
        "untrained model before train (the report then compares with the unpruned model trained by the same "
        "recipe, see `reference`), or a trained one before distill.",
    )
    ratio: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Fraction of channels removed from every prunable layer (uniform). MACs fall roughly "
        "by (1 - ratio)^2.",
    )
    layer_ratios: dict[str, float] = Field(
        default_factory=dict,
        description="Per-layer ratios by module-name glob, e.g. {'stage3.*': 0.6}; the first matching glob wins "
        "and overrides `ratio` for that layer.",
    )
    macs_target: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Alternative to `ratio`: keep at most this fraction of the model's MACs (0.5 = half).",
    )
    params_target: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Alternative to `ratio`: keep at most this fraction of the model's parameters.",
    )
    latency: list[LatencyBudget] = Field(
        default_factory=list,
        description="Alternative to `ratio`: prune until the export(s) meet a latency budget on their device, "
        "e.g. {export: tflite-int8, speedup: 2.5} or a list of such (the tightest binds). Per-group widths "
        "are chosen from the device's latency model (plateau edges only) and channel importance (`taylor` "
        "recommended) as a multiple-choice knapsack (HALP), over `iterative_steps` with `finetune_epochs` of "
        "distillation between steps; the result is exported, measured, and corrected when it misses.",
    )
    finetune_epochs: int = Field(
        default=0,
        ge=0,
        description="Latency budgets: epochs of distillation from the teacher after each pruning step but the "
        "last (the recipe's distill stage follows the last).",
    )
    finetune_lr: float = Field(default=1e-3, gt=0, description="Learning rate of those epochs.")
    global_ranking: bool = Field(
        default=False,
        description="Rank channels across all layers together (global pruning) instead of the same ratio per layer.",
    )
    max_layer_ratio: float = Field(
        default=0.9, gt=0, lt=1, description="With global ranking, the most any one layer may lose."
    )
    criterion: Literal["l1", "l2", "taylor", "bn_scale", "magnitude", "snip", "synflow"] = Field(
        default="l1",
        description="Channel importance: l1/l2 weight magnitude, taylor (first-order, |w * grad| on training "
        "batches), or bn_scale (|gamma| of the following BatchNorm, as in Network Slimming). With method "
        "precrop, the per-weight pruning-at-initialization score: magnitude (|w|; l1 and l2 mean the same), snip "
        "(|w * dL/dw| on taylor_batches training batches) or synflow (data-free synaptic flow).",
    )
    reference: str | None = Field(
        default=None,
        description="method precrop before the first train stage: the unpruned model trained by the same "
        "recipe, as a model file in any form model.source accepts (e.g. a previous build's model.pt2), "
        "evaluated on this build's test and val splits; the report states the accuracy cost of cropping "
        "against it. Default: the build trains it alongside (the recipe's stages without this one, same seed "
        "and data, not exported). A python entry, a TorchScript file or a pickle runs code when loaded: only "
        "give files you trust.",
    )
    round_to: int | Literal["auto"] | None = Field(
        default=None,
        description="Keep channel counts a multiple of this (8 suits SIMD widths), or 'auto': each group's width "
        "snapped up to the right edge of its latency plateau on the recipe's export targets (measured on their "
        "devices; never fewer channels than asked), recorded as an explicit per-group width plan.",
    )
    ignore: list[str] = Field(
        default_factory=list, description="Module-name globs whose output channels are never pruned."
    )
    ignore_classifier: bool = Field(
        default=True, description="Never prune the output layer (its channels are the classes)."
    )
    iterative_steps: int = Field(
        default=1, gt=0, description="Reach the ratio in this many steps, re-ranking channels after each."
    )
    taylor_batches: int = Field(
        default=8, gt=0, description="Training batches used to accumulate gradients for the taylor criterion."
    )

    @field_validator("latency", mode="before")
    @classmethod
    def _budget_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _one_target(self) -> PruneConfig:
        if isinstance(self.round_to, int) and self.round_to < 1:
            raise ValueError(f"round_to must be at least 1 or 'auto' (got {self.round_to})")
        if self.criterion in ("magnitude", "snip", "synflow") and self.method != "precrop":
            raise ValueError(
                f"criterion {self.criterion} scores single weights at initialization: it needs method: precrop "
                "(method channel ranks channels by l1, l2, taylor or bn_scale)"
            )
        if self.reference is not None and self.method != "precrop":
            raise ValueError("reference is the trained unpruned model of a precrop: it needs method: precrop")
        if self.method == "precrop":
            if self.ratio is not None or self.layer_ratios:
                raise ValueError(
                    "method precrop chooses every layer's ratio from its scores: give a macs_target, a "
                    "params_target or a latency budget, not ratio or layer_ratios"
                )
            if self.macs_target is None and self.params_target is None and not self.latency:
                raise ValueError("method precrop needs a macs_target, a params_target or a latency budget")
            if self.criterion not in ("l1", "l2", "magnitude", "snip", "synflow"):
                raise ValueError(
                    f"method precrop scores weights by magnitude (l1/l2), snip or synflow, not {self.criterion}"
                )
            if self.global_ranking:
                raise ValueError("method precrop ranks weights globally itself: drop global_ranking")
            if self.round_to == "auto":
                raise ValueError(
                    "method precrop does not take round_to auto (its snap re-crops by l1, not by the PaI "
                    "scores): give an integer round_to"
                )
        given = [k for k in ("ratio", "macs_target", "params_target") if getattr(self, k) is not None]
        if self.latency:
            given.append("latency")
        if len(given) > 1:
            raise ValueError(
                f"give one of ratio, macs_target, params_target, latency (got {', '.join(given)})"
            )
        if not given and not self.layer_ratios:
            raise ValueError("give a ratio, a macs_target, a params_target, a latency budget or layer_ratios")
        # precrop rejects those itself above, and applies an integer round_to to its own widths
        if (
            self.latency
            and self.method == "channel"
            and (self.layer_ratios or self.global_ranking or self.round_to is not None)
        ):
            raise ValueError(
                "latency budgets choose every group's width themselves (plateau edges on the target): drop "
                "layer_ratios, global_ranking and round_to"
            )
        for pattern, r in self.layer_ratios.items():
            if not 0 < r < 1:
                raise ValueError(f"layer_ratios['{pattern}'] = {r} must be between 0 and 1 (exclusive)")
        return self


class PruneStage(Stage):
    """Channel pruning: removes whole output channels and everything that depends on them.

    ```yaml
    - {type: prune, method: channel, ratio: 0.5, criterion: l1, round_to: 8}
    - {type: prune, macs_target: 0.5, global_ranking: true, layer_ratios: {"stem.*": 0.2}}
    - {type: prune, ratio: 0.5, criterion: taylor, round_to: auto}   # widths the target runtimes like
    - {type: prune, criterion: taylor, latency: {export: tflite-int8, speedup: 2.5}, iterative_steps: 3,
       finetune_epochs: 2}                                            # a budget measured on the device
    - {type: prune, method: precrop, criterion: synflow, macs_target: 0.3}  # PreCropping, before train
    - {type: prune, method: precrop, criterion: snip, latency: {export: tflite-int8, speedup: 2}}
    ```
    """

    name = "prune"
    Config = PruneConfig
    backends: ClassVar[dict[str, str]] = {"torch": "edgecompress.stages.prune.torch_backend:prune"}

    def precheck(self, model: Any, ctx: Any, index: int) -> None:
        """A latency budget the model cannot reach is a recipe error (exit 2), before any training."""
        from edgecompress.registry import import_object

        if self.config.latency:
            import_object(self.prechecks[ctx.framework])(model, self.config, ctx, index)

    prechecks: ClassVar[dict[str, str]] = {"torch": "edgecompress.stages.prune.torch_budget:precheck"}
    #: The unpruned model exported as each latency budget's reference artifact, after the stages.
    references: ClassVar[dict[str, str]] = {
        "torch": "edgecompress.stages.prune.torch_budget:reference_artifacts"
    }
    #: `edgecompress plan`: the width plan of a latency budget, without pruning.
    planners: ClassVar[dict[str, str]] = {"torch": "edgecompress.stages.prune.torch_budget:plan_widths"}
