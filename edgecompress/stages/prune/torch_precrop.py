"""`prune: {method: precrop}`: PreCropping (Cai et al., "Structured Pruning is All You Need for Pruning
CNNs at Initialization", 2022) for torch models.

The paper's observation: what a pruning-at-initialization (PaI) method really decides is each layer's
density (the fraction of its weights kept), not which weights; so crop whole channels to the same
layer-wise densities and the model stays dense. Steps:

1. Per-weight PaI scores of every conv/linear weight: `l1`/`l2` (magnitude, |w|), `snip` (|w * dL/dw|,
   cross-entropy summed over `taylor_batches` training batches, SNIP, Lee et al. 2019) or `synflow`
   (|w * dR/dw| with R the sum of the output of the model with every weight and buffer replaced by its
   absolute value on an all-ones input, in float64 with batch norm in eval mode, SynFlow, Tanaka et al.
   2020; computed on a copy, the model's own weights are never touched).
2. Global unstructured thresholding of all those scores at the target density (`macs_target` or
   `params_target`) gives each layer's density d_l.
3. Channel keep ratios: one variable per Torch-Pruning group (coupled layers share one width), k_g. A
   layer's parameter ratio is k_out * k_in (its output group times its input group; a depthwise conv only
   k_g; a layer writing or reading several groups, e.g. the slices of a concatenation, the channel-weighted
   mix of their log ratios).
   In log space, x_g = log k_g, the paper's convex (geometric programming) formulation becomes a bounded
   linear least squares problem:

       minimise  sum_l (sum_g a_lg x_g - log d_l)^2     subject to  log(1 / C_g) <= x_g <= 0

   (every layer's log parameter ratio as close as possible to its log density; a_lg the exponents
   above; solved with scipy's `lsq_linear`). A group's width is thus the least-squares compromise of its
   layers' densities (for a group whose layers touch no other group: their geometric mean).
4. The target is met exactly as the paper does not: the MAC/parameter count of the cropped model is not
   a convex function of the ratios once layers are coupled through residual adds, so the ratios are
   scaled by one global factor s (k_g * s, clipped to [1 channel, all]) found by bisection on real trials
   (each prunes a copy), keeping the largest s whose model keeps at most the target.
5. The model is cropped to those widths in one Torch-Pruning step, choosing the channels within a group
   by l1 magnitude (first version: not by the PaI channel scores).
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecompress.errors import ModelError
from edgecompress.frameworks.torch import count_macs, count_params
from edgecompress.stages.prune import torch_widths
from edgecompress.stages.prune.torch_backend import TARGET_TOLERANCE, TARGET_WARNING, out_channels

if TYPE_CHECKING:
    from edgecompress.context import RunContext
    from edgecompress.stages.prune.stage import PruneConfig
    from edgecompress.stages.prune.torch_backend import _Plan

#: Bisection steps on the global factor (a step whose widths were already tried costs nothing).
SEARCH_STEPS = 40
#: A layer's density is floored at this before its logarithm is taken (a layer the global threshold
#: empties still keeps at least one channel).
MIN_DENSITY = 1e-3


def precrop(model: Any, config: PruneConfig, ctx: RunContext, plan: _Plan) -> Any:
    """Crop `model` to PaI layer-wise densities scaled to the recipe's MAC or parameter target."""
    import torch

    from edgecompress.stages.prune import torch_widths

    shape = [1, *ctx.input_shape[1:]]
    criterion = {"l1": "magnitude", "l2": "magnitude"}.get(config.criterion, config.criterion)
    target = config.macs_target or config.params_target
    if target is None:
        raise ModelError("prune: method precrop needs a macs_target or a params_target")
    what = "MACs" if config.macs_target else "parameters"
    if config.macs_target:
        base = count_macs(model, shape)

        def measure(m: Any) -> float:
            return count_macs(m, shape) / base
    else:
        base = count_params(model)

        def measure(m: Any) -> float:
            return count_params(m) / base

    scores = pai_scores(model, criterion, ctx, plan)
    density = layer_density(scores, target)
    modules = dict(model.named_modules())
    ignored = [modules[n] for n in plan.ignored if n in modules]
    groups = torch_widths.pruning_groups(model, torch.zeros(shape), ignored)
    if not groups:
        raise ModelError("prune: precrop found no prunable channel group (every layer ignored?)")
    keep = keep_ratios(model, groups, density)
    original = out_channels(model)

    def widths_at(factor: float) -> dict[str, int]:
        out = {}
        for g in groups:
            w = min(g.channels, max(g.step, round(g.channels * keep[g.root] * factor)))
            out[g.root] = w - w % g.step if g.step > 1 else w
        return out

    def trial(factor: float) -> tuple[Any, float, dict[str, int]]:
        widths = widths_at(factor)
        candidate = copy.deepcopy(model)
        plan.apply(
            candidate, 0.0, widths=torch_widths.widths_pruner(candidate, widths, original), criterion="l1"
        )
        return candidate, measure(candidate), widths

    lo, hi = 0.0, 1.0 / max(min(keep.values()), 1e-9)
    best, kept, chosen = trial(lo)
    if kept > target:
        raise ModelError(
            f"prune: precrop cannot keep only {target:.0%} of the {what}: one channel per group still keeps "
            f"{kept:.1%} (ignored layers or the classifier limit it); raise the target"
        )
    over: dict[str, int] | None = None  # the widths at hi (over the target), once tried
    for _ in range(SEARCH_STEPS):
        if target - kept <= TARGET_TOLERANCE or hi - lo < 1e-4:
            break
        mid = (lo + hi) / 2
        widths = widths_at(mid)
        if widths == chosen:  # widths only grow with the factor: same widths, same result
            lo = mid
            continue
        if widths == over:
            hi = mid
            continue
        candidate, fraction, widths = trial(mid)
        if fraction <= target:
            lo, best, kept, chosen = mid, candidate, fraction, widths
        else:
            hi, over = mid, widths
    if target - kept > TARGET_WARNING:
        ctx.ui.warn(
            f"prune: precrop keeps {kept:.1%} of the {what}, under the target {target:.0%} (few channels "
            "per group make the steps large)"
        )
    after = out_channels(best)  # as cropped (an integer round_to may have rounded the planned widths down)
    ctx.note(
        "precrop",
        {
            "criterion": criterion,
            "target": {"macs" if config.macs_target else "params": target},
            "kept": round(kept, 4),
            "factor": round(lo, 4),
            "formulation": "log-space least squares of layer param ratios vs PaI densities, global factor "
            "by bisection",
            "layer_density": {n: round(d, 4) for n, d in density.items()},
            "groups": {
                g.root: {
                    "keep_ratio": round(min(1.0, keep[g.root] * lo), 4),
                    "width": [g.channels, after.get(g.root, chosen[g.root])],
                }
                for g in groups
            },
        },
    )
    ctx.ui.info(
        f"prune: precrop ({criterion}) keeps {kept:.1%} of the {what} (target {target:.0%}), "
        f"{sum(1 for g in groups if after.get(g.root, g.channels) < g.channels)} of {len(groups)} groups cropped"
    )
    return best.eval()


def pai_scores(model: Any, criterion: str, ctx: RunContext, plan: _Plan) -> dict[str, Any]:
    """Layer name -> per-weight PaI score tensor (float64) of every conv and linear weight."""
    import torch
    from torch import nn

    names = [n for n, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd | nn.Linear)]
    if criterion == "magnitude":
        return {n: model.get_submodule(n).weight.detach().abs().double() for n in names}
    if criterion == "snip":
        work = copy.deepcopy(model)
        plan.accumulate_gradients(work)
        out = {}
        for n in names:
            w = work.get_submodule(n).weight
            grad = w.grad if w.grad is not None else torch.zeros_like(w)
            out[n] = (w.detach() * grad).abs().double()
        return out
    if criterion == "synflow":
        return synflow_scores(model, [1, *ctx.input_shape[1:]], names)
    raise ModelError(f"prune: precrop has no criterion '{criterion}' (use l1, snip or synflow)")


def synflow_scores(model: Any, shape: list[int], names: list[str]) -> dict[str, Any]:
    """SynFlow |w * dR/dw|, R = sum(f_|w|(ones)), in float64 on a copy of the model (batch norm in eval)."""
    import torch

    work = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for value in work.state_dict().values():
            if value.is_floating_point():
                value.abs_()
    for p in work.parameters():
        p.requires_grad_(True)
        p.grad = None
    out = work(torch.ones(shape, dtype=torch.float64))
    torch.sum(out).backward()
    scores = {}
    for n in names:
        w = work.get_submodule(n).weight
        grad = w.grad if w.grad is not None else torch.zeros_like(w)
        scores[n] = (w.detach() * grad).abs()
    return scores


def layer_density(scores: dict[str, Any], density: float) -> dict[str, float]:
    """Each layer's fraction of weights above the global threshold that keeps `density` of all weights."""
    import torch

    flat = torch.cat([s.flatten() for s in scores.values()])
    keep = max(1, round(density * flat.numel()))
    threshold = torch.topk(flat, keep, sorted=True).values[-1]
    return {n: float((s >= threshold).double().mean()) for n, s in scores.items()}


def keep_ratios(model: Any, groups: list[torch_widths.Group], density: dict[str, float]) -> dict[str, float]:
    """Group root -> channel keep ratio k_g: the bounded log-space least squares fit of every layer's
    parameter ratio (product of its output and input groups' k) to its PaI density."""
    from scipy.optimize import lsq_linear
    from torch import nn

    index = {g.root: i for i, g in enumerate(groups)}
    rows, rhs = [], []
    for name, d in density.items():
        module = model.get_submodule(name)
        depthwise = (
            isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels
        )
        row = np.zeros(len(groups))
        # a layer writing (or reading) several groups, e.g. the slices of a concatenation: the channel-weighted
        # mix of their log ratios (the log of the mixed ratio, to first order)
        writes = [g for g in groups if name in g.producers]
        reads = [] if depthwise else [g for g in groups if name in g.readers]
        for role in (writes, reads):
            total = sum(g.channels for g in role)
            for g in role:
                row[index[g.root]] += g.channels / total
        if not row.any():
            continue  # ignored layer in no group (e.g. the classifier reading an ignored group)
        rows.append(row)
        rhs.append(math.log(max(d, MIN_DENSITY)))
    lower = np.array([math.log(1.0 / g.channels) for g in groups])
    if not rows:
        return {g.root: 1.0 for g in groups}
    upper = np.zeros(len(groups))
    lower = np.minimum(lower, upper - 1e-9)
    solution = lsq_linear(np.array(rows), np.array(rhs), bounds=(lower, upper))
    return {g.root: float(math.exp(x)) for g, x in zip(groups, solution.x, strict=True)}
