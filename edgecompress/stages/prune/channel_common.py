"""The channel pruning every framework shares; `torch_backend.py` and `keras_channel.py` give only what is
their own (a `ChannelFramework`: counting, checking and copying a model, and the framework's budget backend;
a `ChannelPlan`: groups, importances and pruning at a ratio).

`prune_channels` is the driver: a uniform `ratio` (with `layer_ratios`, `global_ranking`) as the plan applies
it; a `macs_target` / `params_target` met by bisection on that ratio (`search_ratio`: the least pruning whose
result keeps at most the target fraction); a latency budget (`latency_budget.py`); precrop (torch:
`torch_precrop.py`); then `round_to: auto` (`snap_to_plateaus`: each group at the right edge of its latency
plateau on the recipe's export targets, `widths.py`). Also here: the parts of a plan both frameworks resolve
alike (ignored layers, round_to) and the notes a channel-pruning stage records for the report."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgecompress.errors import ModelError
from edgecompress.stages.base import match_globs

if TYPE_CHECKING:
    from edgecompress.context import RunContext
    from edgecompress.stages.prune.stage import PruneConfig

#: Bisection stops once a trial is at most this far under the target fraction.
TARGET_TOLERANCE = 0.005
#: A result this far under the target is reported as a warning.
TARGET_WARNING = 0.03
MAX_SEARCH_STEPS = 16


@dataclasses.dataclass(frozen=True)
class ChannelFramework:
    """What `prune_channels` asks of a framework besides its budget backend."""

    name: str  # in a message: "torch", "keras"
    #: The framework's budget backend (`torch_budget.TorchBudget`, `keras_budget.KerasBudget`): its plan
    #: (`make_plan`), pruning groups and widths, and pruning to a width plan (`prune_to`).
    budget: Any
    #: A copy of the model that pruning the model leaves as it is (torch prunes in place: a deep copy;
    #: Keras rebuilds a new model: the model itself).
    copy: Callable[[Any], Any]
    #: ModelError "prune: the pruned model does not run: ..." when a forward pass fails or its output is not
    #: [1, num_classes].
    check: Callable[[Any, RunContext], None]
    count_params: Callable[[Any], int]
    count_macs: Callable[[Any, list[int]], int]
    #: Output channels of every conv / linear (dense) layer by name: the notes' before and after.
    out_channels: Callable[[Any], dict[str, int]]
    #: method precrop (`torch_precrop.precrop`); None where the framework has none.
    precrop: Callable[[Any, PruneConfig, RunContext, Any], Any] | None = None


class ChannelPlan:
    """Everything but the ratio, as a framework resolves it from the recipe for one model (`make_plan` of
    `torch_backend`, `keras_channel`): the ignored layers, and how to prune the model at a ratio."""

    def __init__(self, config: PruneConfig, ctx: RunContext, ignored: list[str]) -> None:
        self.config = config
        self.ctx = ctx
        self.ignored = ignored  # layer names, the classifier among them with ignore_classifier

    def apply(self, model: Any, ratio: float) -> Any:
        """The model pruned at `ratio` (torch: in place, and returned; Keras: a new model)."""
        raise NotImplementedError


def prune_channels(model: Any, config: PruneConfig, ctx: RunContext, framework: ChannelFramework) -> Any:
    """Remove output channels as `config` says; return the pruned model (`framework.copy` says whether it
    is `model`, pruned in place, or a new one).

    Records in the run notes (`note_channel_pruning`): params and MACs before and after, the ratio used and,
    for every conv/linear layer that changed, its output channels before and after; with round_to auto also
    the snap (`widths.note_snap`).
    """
    shape = [1, *ctx.input_shape[1:]]
    plan = framework.budget.make_plan(model, config, ctx)
    params_before, macs_before = framework.count_params(model), framework.count_macs(model, shape)
    channels_before = framework.out_channels(model)
    unpruned = framework.copy(model) if config.round_to == "auto" else None
    target = config.macs_target or config.params_target
    ratio: float | None = None  # per group: precrop, latency budget
    if config.method == "precrop":
        if framework.precrop is None:
            raise ModelError(
                f"prune: precrop is not available for {framework.name} models yet (method channel is)"
            )
        model = framework.precrop(model, config, ctx, plan)
    elif target is not None:
        if config.macs_target:
            what, measure = "MACs", lambda m: framework.count_macs(m, shape) / macs_before
        else:
            what, measure = "parameters", lambda m: framework.count_params(m) / params_before

        def trial(r: float) -> tuple[Any, float]:
            candidate = plan.apply(framework.copy(model), r)
            return candidate, measure(candidate)

        ratio, model = search_ratio(trial, target, what, ctx.ui)
    elif config.latency:
        from edgecompress.stages.prune.latency_budget import prune_to_budget

        model = prune_to_budget(model, config, ctx, plan)
    else:
        ratio = config.ratio or 0.0
        model = plan.apply(model, ratio)
    if unpruned is not None:
        model = snap_to_plateaus(unpruned, model, plan, ctx, framework.budget)
    framework.check(model, ctx)
    note_channel_pruning(
        ctx,
        config,
        ratio=ratio,
        ignored=plan.ignored,
        params=(params_before, framework.count_params(model)),
        macs=(macs_before, framework.count_macs(model, shape)),
        before=channels_before,
        after=framework.out_channels(model),
    )
    return model


def search_ratio(
    trial: Callable[[float], tuple[Any, float]], target: float, what: str, ui: Any
) -> tuple[float, Any]:
    """`trial(ratio)` prunes a copy at `ratio` and returns (model, kept fraction of `what`); the ratio and model
    of the least pruning found at or under `target`. ModelError when even ratio 0.95 keeps more."""
    lo, hi = 0.0, 0.95
    best, kept = trial(hi)
    if kept > target:
        raise ModelError(
            f"prune: cannot keep only {target:.0%} of the {what}: pruning at ratio {hi} still keeps {kept:.1%} "
            "(ignored layers, the classifier, max_layer_ratio or round_to limit it); raise the target"
        )
    for _ in range(MAX_SEARCH_STEPS):
        if target - kept <= TARGET_TOLERANCE or hi - lo < 1e-3:
            break
        mid = (lo + hi) / 2
        candidate, fraction = trial(mid)
        if fraction <= target:
            hi, best, kept = mid, candidate, fraction
        else:
            lo = mid
    ui.debug(f"prune: ratio {hi:.4f} keeps {kept:.4f} of the {what} (target {target})")
    if target - kept > TARGET_WARNING:
        ui.warn(
            f"prune: the closest ratio keeps {kept:.1%} of the {what}, under the target {target:.0%} "
            "(few channels per layer or a coarse round_to make the steps large)"
        )
    return hi, best


def snap_to_plateaus(unpruned: Any, wanted: Any, plan: Any, ctx: RunContext, budget: Any) -> Any:
    """round_to auto: `unpruned` pruned (by `budget.prune_to`) to the width plan of `widths.snap_widths`: each
    of `wanted`'s pruning groups at the right edge of its latency plateau on the recipe's export targets, at
    least as wide as in `wanted` (the model pruned at round_to 1)."""
    from edgecompress.stages.prune.widths import note_snap, snap_widths

    shape = [1, *ctx.input_shape[1:]]
    original = budget.widths(unpruned)
    groups = [
        dataclasses.replace(g, original=original.get(g.root, g.channels))
        for g in budget.groups(wanted, plan, shape)
    ]

    def layers(model: Any) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for layer in ctx.adapter.latency_layers(model, shape):
            if layer.kind in ("conv", "linear"):
                out.setdefault(budget.layer_key(layer), []).append(layer)
        return out

    widths, info = snap_widths(wanted, groups, ctx, layers=layers)
    model = budget.prune_to(unpruned, widths, plan)
    note_snap(ctx, groups, widths, budget.widths(model), info)
    return model


def check_prunable(
    config: PruneConfig, layers: list[str], kinds: str, batchnorm: str, has_batchnorm: Callable[[], bool]
) -> None:
    """ModelError when the model has none of the `layers` (its `kinds` of layers) to prune, or when criterion
    bn_scale finds no batch norm (`batchnorm`, the framework's name for it) to rank channels by."""
    if not layers:
        raise ModelError(f"prune: the model has no {kinds} layers to prune")
    if config.criterion == "bn_scale" and not has_batchnorm():
        raise ModelError(
            f"prune: criterion bn_scale ranks channels by BatchNorm scales, but the model has no {batchnorm}; "
            "use l1, l2 or taylor"
        )


def ignored_layers(
    config: PruneConfig, names: list[str], what: str, classifier: Callable[[], str | None]
) -> list[str]:
    """The layers `prune.ignore` names (globs over `names`: RecipeError naming `what` when one matches none)
    and, with ignore_classifier, the classifier (`classifier()`, None when the model has none)."""
    ignored = list(match_globs(config.ignore, names, "prune.ignore", what))
    if config.ignore_classifier:
        found = classifier()
        if found is not None and found not in ignored:
            ignored.append(found)
    return ignored


def rounded_width(keep: int, width: int, step: int) -> int:
    """Torch-Pruning's round_to as both backends amend it: of a group `width` wide, keep `keep` rounded down
    to a multiple of `step`, never fewer than one multiple (or the whole group when it is narrower), and at least one
    channel (Torch-Pruning 1.6.1 would round 6 of 16 channels at round_to 8 down to none)."""
    keep = min(max(keep, 0), width)
    return max(keep - keep % step, min(step, width), 1)


def note_channel_pruning(
    ctx: Any,
    config: Any,
    *,
    ratio: float | None,
    ignored: list[str],
    params: tuple[int, int],
    macs: tuple[int, int],
    before: dict[str, int],
    after: dict[str, int],
) -> None:
    """The stage's notes (criterion, ratio, ignored layers, params and MACs before/after, the layers narrowed
    and those that kept their width although not ignored), and its console line. `ratio` None: per group
    (precrop, latency budget)."""
    changed = {n: [c, after[n]] for n, c in before.items() if n in after and after[n] != c}
    # kept their width although not ignored: coupled to an ignored layer or the output, too narrow for
    # round_to, or in a group that cannot shrink (a concatenation side that would empty, channels mixed)
    unchanged = [n for n in after if n not in changed and n not in ignored]
    if not changed:
        ctx.ui.warn(
            "prune: no channel was removed (every layer is ignored, too small, or below one round_to step)"
        )
    (params_before, params_after), (macs_before, macs_after) = params, macs
    per_group = "precrop" if config.method == "precrop" else "latency budget"
    ctx.note("criterion", config.criterion)
    ctx.note("global_ranking", config.global_ranking)
    ctx.note("ratio", round(ratio, 4) if ratio is not None else f"per group ({per_group})")
    ctx.note("ignored", ignored)
    ctx.note("params_before", params_before)
    ctx.note("params_after", params_after)
    ctx.note("macs_before", macs_before)
    ctx.note("macs_after", macs_after)
    ctx.note("macs_kept", round(macs_after / macs_before, 4) if macs_before else None)
    ctx.note("params_kept", round(params_after / params_before, 4) if params_before else None)
    ctx.note("channels", changed)
    ctx.note("unchanged", unchanged)
    how = f"ratio {ratio:.3f}" if ratio is not None else per_group
    ctx.ui.info(
        f"prune: {how}, MACs {macs_before:,} -> {macs_after:,} ({macs_after / max(macs_before, 1):.1%}), "
        f"params {params_before:,} -> {params_after:,}, {len(changed)} layers narrowed"
    )
