"""What every framework's channel pruning shares: the bisection on a uniform (or global) ratio that meets a
`macs_target` / `params_target` (the least pruning whose result keeps at most the target fraction), and the
notes a channel-pruning stage records for the report."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgecompress.errors import ModelError

#: Bisection stops once a trial is at most this far under the target fraction.
TARGET_TOLERANCE = 0.005
#: A result this far under the target is reported as a warning.
TARGET_WARNING = 0.03
MAX_SEARCH_STEPS = 16


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
