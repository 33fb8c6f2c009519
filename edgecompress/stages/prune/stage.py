"""`prune`: structured pruning that physically removes channels (method: channel, precrop) or pattern sparsity
that zeroes weights in a pattern kept to the exported files (method: magnitude, block, nm, kernel_pattern)."""

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
    method: Literal["channel", "precrop", "magnitude", "block", "nm", "kernel_pattern"] = Field(
        default="channel",
        description="channel: dependency-aware removal of output channels (Torch-Pruning DepGraph), "
        "kept consistent across residual adds, concatenations, depthwise/grouped convs, BN and linear layers. "
        "precrop: PreCropping (Cai et al. 2022): layer-wise densities from pruning-at-initialization scores "
        "(criterion magnitude (= l1/l2), snip or synflow) thresholded globally, turned into per-group channel "
        "keep ratios (log-space least squares) and scaled to the macs_target, params_target or latency budget "
        "(by the latency model's prediction); each group keeps its channels of highest summed score. For an "
        "untrained model before train (the report then compares with the unpruned model trained by the same "
        "recipe, see `reference`), or a trained one before distill. "
        "Pattern sparsity (weights zeroed, shapes unchanged; the zeros are held through every later training "
        "stage, BN folding and int8 conversion, and read back from the exported files): magnitude (unstructured; "
        "per layer, or Global MP with global_ranking), block (`block: [r, c]` output x input weights ranked by "
        "norm), nm (`n` of every `m` consecutive input channels kept), kernel_pattern (each 3x3 kernel keeps "
        "`kernel_positions` of 9 in one of `patterns` shapes chosen from the weights, PatDNN).",
    )
    sparsity: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Pattern methods: the fraction of each pruned layer's weights zeroed (with global_ranking: of "
        "all of them). nm: 1 - n/m (may be omitted); kernel_pattern: at least 1 - kernel_positions/9, the rest "
        "by removing whole kernels (connectivity pruning).",
    )
    layer_sparsity: dict[str, float] = Field(
        default_factory=dict,
        description="Pattern methods: per-layer sparsities by module-name glob, e.g. {'features.1*': 0.3}; the "
        "first matching glob wins over `sparsity`.",
    )
    sparsity_schedule: Literal["oneshot", "polynomial"] = Field(
        default="oneshot",
        description="Pattern methods: oneshot zeroes the weights here; polynomial ramps the sparsity from 0 over "
        "the steps of the next training stage (train or distill) by Zhu & Gupta's cubic schedule, masks updated "
        "about 32 times and the last epoch at the full sparsity (best-epoch restoring only from there).",
    )
    min_density: float = Field(
        default=0.02,
        gt=0,
        lt=1,
        description="Pattern methods with global_ranking: every layer keeps at least this fraction of its "
        "weights (Global MP's minimum threshold, against layer collapse).",
    )
    block: tuple[int, int] | None = Field(
        default=None,
        description="method block: [r, c], the block of r output x c input weights (at one kernel position) "
        "zeroed together, e.g. [1, 4], [4, 1], [2, 2], [4, 4].",
    )
    block_remainder: Literal["skip", "pad"] = Field(
        default="skip",
        description="method block: a layer whose outputs/inputs the block does not divide is left dense with a "
        "warning (skip), or pruned with partial blocks at its edges (pad).",
    )
    n: int | None = Field(default=None, description="method nm: non-zeros kept in every group of m (e.g. 2).")
    m: int | None = Field(
        default=None,
        description="method nm: the group of consecutive input channels (e.g. 4; 2:4, 1:4, 4:8).",
    )
    kernel_positions: int = Field(
        default=4,
        description="method kernel_pattern: positions kept in each 3x3 kernel (1-8; PatDNN uses 4).",
    )
    patterns: int = Field(
        default=8,
        description="method kernel_pattern: how many distinct kernel shapes the model may use (1 to C(9, k)).",
    )
    connectivity: float | None = Field(
        default=None,
        ge=0,
        lt=1,
        description="method kernel_pattern: fraction of whole 3x3 kernels removed (connectivity pruning), "
        "weakest first; alternative to `sparsity`.",
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

    @property
    def pattern(self) -> bool:
        """Pattern sparsity (weights zeroed) rather than channel removal."""
        return self.method in ("magnitude", "block", "nm", "kernel_pattern")

    @model_validator(mode="after")
    def _one_target(self) -> PruneConfig:
        if self.pattern:
            return self._check_pattern()
        sparse_keys = [
            k for k in ("sparsity", "block", "n", "m", "connectivity") if getattr(self, k) is not None
        ] + (["layer_sparsity"] if self.layer_sparsity else [])
        if sparse_keys or self.sparsity_schedule != "oneshot":
            raise ValueError(
                f"{', '.join(sparse_keys) or 'sparsity_schedule'} belong to the pattern methods (magnitude, block, "
                f"nm, kernel_pattern); method {self.method} removes channels by ratio, targets or budgets"
            )
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

    def _check_pattern(self) -> PruneConfig:
        """The rules of the pattern methods (one line each, see `_one_target`)."""
        from edgecompress.sparsity import kernel_pattern_sparsity, pattern_count_limit

        channel_keys = [k for k in ("ratio", "macs_target", "params_target") if getattr(self, k) is not None]
        channel_keys += [k for k in ("latency", "layer_ratios") if getattr(self, k)]
        if self.round_to is not None:
            channel_keys.append("round_to")
        if channel_keys:
            raise ValueError(
                f"method {self.method} zeroes weights by `sparsity`; {', '.join(channel_keys)} belong to channel "
                "pruning (method channel or precrop)"
            )
        if self.criterion not in ("l1", "magnitude"):
            raise ValueError(
                f"method {self.method} ranks weights by magnitude; drop criterion {self.criterion}"
            )
        if self.global_ranking and self.method not in ("magnitude", "block"):
            raise ValueError(
                f"global_ranking ranks weights or blocks across layers: not for method {self.method}"
            )
        for glob, value in self.layer_sparsity.items():
            if not 0 < value < 1:
                raise ValueError(f"layer_sparsity['{glob}'] = {value} must be between 0 and 1 (exclusive)")
        if self.method != "block" and self.block is not None:
            raise ValueError(f"block is the block shape of method block, not of method {self.method}")
        if self.method != "nm" and (self.n is not None or self.m is not None):
            raise ValueError(f"n and m are the N:M of method nm, not of method {self.method}")
        if self.method != "kernel_pattern" and self.connectivity is not None:
            raise ValueError(f"connectivity is kernel_pattern's, not method {self.method}'s")
        if self.method == "nm":
            return self._check_nm()
        if self.method == "kernel_pattern":
            k = self.kernel_positions
            if not 1 <= k <= 8:
                raise ValueError(f"kernel_positions = {k} must be between 1 and 8 (of a 3x3 kernel's 9)")
            if not 1 <= self.patterns <= pattern_count_limit(k):
                raise ValueError(
                    f"patterns = {self.patterns} is out of range: {k} of 9 positions give 1 to "
                    f"{pattern_count_limit(k)} distinct patterns"
                )
            if self.layer_sparsity:
                raise ValueError(
                    "kernel_pattern sets every 3x3 layer's sparsity by kernel_positions: drop layer_sparsity"
                )
            if self.sparsity is not None and self.connectivity is not None:
                raise ValueError("give sparsity or connectivity for kernel_pattern, not both")
            least = kernel_pattern_sparsity(k, 0.0)
            if self.sparsity is not None and self.sparsity < least - 1e-9:
                raise ValueError(
                    f"sparsity = {self.sparsity} is below what {k}-of-9 kernel patterns zero ({least:.3f}); give "
                    f"sparsity >= {least:.3f} or more kernel_positions"
                )
            return self
        if self.sparsity is None and not self.layer_sparsity:
            raise ValueError(f"method {self.method} needs a sparsity (e.g. sparsity: 0.5) or layer_sparsity")
        if self.global_ranking and self.sparsity is None:
            raise ValueError(
                "global_ranking needs a sparsity (the fraction of all the layers' weights zeroed)"
            )
        if self.method == "block":
            if self.block is None:
                raise ValueError("method block needs a block shape, e.g. block: [1, 4]")
            if min(self.block) < 1 or self.block == (1, 1):
                raise ValueError(
                    f"block = {list(self.block)} must be two positive sizes, not [1, 1] (that is method magnitude)"
                )
        return self

    def _check_nm(self) -> PruneConfig:
        if self.n is None or self.m is None:
            raise ValueError("method nm needs n and m (e.g. n: 2, m: 4)")
        if self.n <= 0 or self.m <= self.n:
            raise ValueError(f"N:M needs 0 < n < m (got n = {self.n}, m = {self.m})")
        if self.layer_sparsity:
            raise ValueError("method nm zeroes 1 - n/m of every layer: drop layer_sparsity")
        if self.sparsity is not None and abs(self.sparsity - (1 - self.n / self.m)) > 1e-6:
            raise ValueError(
                f"sparsity = {self.sparsity} contradicts {self.n}:{self.m} (which zeroes {1 - self.n / self.m:.3f}); "
                "drop sparsity"
            )
        return self


class PruneStage(Stage):
    """Channel pruning (removes whole output channels and everything that depends on them) or pattern sparsity
    (zeroes weights in a pattern, held to the exported files).

    ```yaml
    - {type: prune, method: channel, ratio: 0.5, criterion: l1, round_to: 8}
    - {type: prune, macs_target: 0.5, global_ranking: true, layer_ratios: {"stem.*": 0.2}}
    - {type: prune, ratio: 0.5, criterion: taylor, round_to: auto}   # widths the target runtimes like
    - {type: prune, criterion: taylor, latency: {export: tflite-int8, speedup: 2.5}, iterative_steps: 3,
       finetune_epochs: 2}                                            # a budget measured on the device
    - {type: prune, method: precrop, criterion: synflow, macs_target: 0.3}  # PreCropping, before train
    - {type: prune, method: precrop, criterion: snip, latency: {export: tflite-int8, speedup: 2}}
    - {type: prune, method: magnitude, sparsity: 0.8, global_ranking: true, sparsity_schedule: polynomial}
    - {type: prune, method: block, block: [1, 4], sparsity: 0.5, ignore: ["stem*"]}
    - {type: prune, method: nm, n: 2, m: 4}
    - {type: prune, method: kernel_pattern, kernel_positions: 4, patterns: 8, connectivity: 0.2}
    ```
    """

    name = "prune"
    Config = PruneConfig
    backends: ClassVar[dict[str, str]] = {
        "torch": "edgecompress.stages.prune.torch_backend:prune",
        "keras": "edgecompress.stages.prune.keras_backend:prune",
    }

    def precheck(self, model: Any, ctx: Any, index: int) -> None:
        """Before any training, recipe errors (exit 2): a latency budget the model cannot reach; a pattern's
        glob that matches no layer, or a pattern no layer can take."""
        from edgecompress.registry import import_object

        if self.config.latency:
            import_object(self.prechecks[ctx.framework])(model, self.config, ctx, index)
        if self.config.pattern:
            import_object(self.pattern_prechecks[ctx.framework])(model, self.config, ctx, index)

    def unsupported(self, framework: str) -> tuple[str, str] | None:
        """Latency budgets and round_to auto stand on the latency model, precrop on its own backend: per
        framework, only where those exist."""
        c = self.config
        if c.latency and framework not in self.prechecks:
            return (
                "latency",
                f"latency budgets need the latency model, which {framework} models do not have yet",
            )
        if c.round_to == "auto" and framework not in self.round_to_auto_frameworks:
            return "round_to", (
                f"round_to auto needs the latency model, which {framework} models do not have yet; give an integer"
            )
        if c.method == "precrop" and framework not in self.precrop_frameworks:
            return "method", f"precrop is not available for {framework} models yet (method channel is)"
        return None

    #: Frameworks whose channel pruning snaps widths to latency plateaus (round_to auto).
    round_to_auto_frameworks: ClassVar[tuple[str, ...]] = ("torch", "keras")
    #: Frameworks whose backend carries out method precrop.
    precrop_frameworks: ClassVar[tuple[str, ...]] = ("torch",)
    prechecks: ClassVar[dict[str, str]] = {
        "torch": "edgecompress.stages.prune.latency_budget:precheck",
        "keras": "edgecompress.stages.prune.latency_budget:precheck",
    }
    pattern_prechecks: ClassVar[dict[str, str]] = {
        "torch": "edgecompress.stages.prune.torch_sparsity:precheck",
        "keras": "edgecompress.stages.prune.keras_sparsity:precheck",
    }
    #: The unpruned model exported as each latency budget's reference artifact, after the stages.
    references: ClassVar[dict[str, str]] = {
        "torch": "edgecompress.stages.prune.latency_budget:reference_artifacts",
        "keras": "edgecompress.stages.prune.latency_budget:reference_artifacts",
    }
    #: `edgecompress plan`: the width plan of a latency budget, without pruning.
    planners: ClassVar[dict[str, str]] = {
        "torch": "edgecompress.stages.prune.latency_budget:plan_widths",
        "keras": "edgecompress.stages.prune.latency_budget:plan_widths",
    }
