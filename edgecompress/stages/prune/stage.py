"""`prune`: structured pruning that physically removes channels (method: channel)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from edgecompress.stages.base import Stage, StageConfig


class PruneConfig(StageConfig):
    type: Literal["prune"] = "prune"
    method: Literal["channel"] = Field(
        default="channel",
        description="channel: dependency-aware removal of output channels (Torch-Pruning DepGraph), "
        "kept consistent across residual adds, concatenations, depthwise/grouped convs, BN and linear layers.",
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
    global_ranking: bool = Field(
        default=False,
        description="Rank channels across all layers together (global pruning) instead of the same ratio per layer.",
    )
    max_layer_ratio: float = Field(
        default=0.9, gt=0, lt=1, description="With global ranking, the most any one layer may lose."
    )
    criterion: Literal["l1", "l2", "taylor", "bn_scale"] = Field(
        default="l1",
        description="Channel importance: l1/l2 weight magnitude, taylor (first-order, |w * grad| on training "
        "batches), or bn_scale (|gamma| of the following BatchNorm, as in Network Slimming).",
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

    @model_validator(mode="after")
    def _one_target(self) -> PruneConfig:
        if isinstance(self.round_to, int) and self.round_to < 1:
            raise ValueError(f"round_to must be at least 1 or 'auto' (got {self.round_to})")
        given = [k for k in ("ratio", "macs_target", "params_target") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of ratio, macs_target, params_target (got {', '.join(given)})")
        if not given and not self.layer_ratios:
            raise ValueError("give a ratio, a macs_target, a params_target or layer_ratios")
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
    ```
    """

    name = "prune"
    Config = PruneConfig
    backends: ClassVar[dict[str, str]] = {"torch": "edgecompress.stages.prune.torch_backend:prune"}
