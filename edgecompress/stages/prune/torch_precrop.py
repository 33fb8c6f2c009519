"""`prune: {method: precrop}`: PreCropping (Cai et al., "Structured Pruning is All You Need for Pruning
CNNs at Initialization", 2022) for torch models.

The paper's observation: what a pruning-at-initialization (PaI) method really decides is each layer's
density (the fraction of its weights kept), not which weights; so crop whole channels to the same
layer-wise densities and the model stays dense. Steps:

1. Per-weight PaI scores of every conv/linear weight: `magnitude` (alias `l1`/`l2`: |w|), `snip`
   (|w * dL/dw|, cross-entropy summed over `taylor_batches` training batches, SNIP, Lee et al. 2019) or
   `synflow` (|w * dR/dw| with R the sum of the output of the model with every weight and buffer replaced
   by its absolute value on an all-ones input, in float64 with batch norm in eval mode, SynFlow, Tanaka et
   al. 2020; computed on a copy, the model's own weights are never touched).
2. Global unstructured thresholding of all those scores at the target density gives each layer's density
   d_l (the `macs_target` or `params_target`; with a `latency` budget, the binding budget's latency over
   the unpruned model's: latency roughly follows the weights kept, and step 4 meets the budget exactly).
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
   (each crops a copy as step 5 does), keeping the largest s whose model keeps at most the target.
   With a latency budget a trial is judged by the latency model of each budget's export and device,
   scaled to the measured unpruned model (`latency_budget.Solver.predict`, the prediction channel pruning's
   budgets are solved with), and no group is narrower than the budgets' floor (8 channels and
   `max_layer_ratio`, as for channel pruning: the pre-check before training holds the budget to it, and
   narrower layers' times are noise). The result meets the budget by prediction, not by a measured
   correction as channel pruning's does; the build exports and times the unpruned model beside it, so
   the report states the speedup measured.
5. The model is cropped to those widths in one Torch-Pruning step, each group keeping its channels of
   highest PaI score summed over the group's conv/linear layers (outputs and inputs alike): the channels
   are chosen by the same scores as the widths (on an untrained model, l1 of random weights would be
   noise, and SNIP's or SynFlow's scores are what the densities came from).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecompress.errors import ModelError
from edgecompress.frameworks.torch import count_macs, count_params
from edgecompress.stages.prune import torch_widths
from edgecompress.stages.prune.channel_common import TARGET_TOLERANCE, TARGET_WARNING
from edgecompress.stages.prune.torch_backend import out_channels
from edgecompress.stages.prune.widths import Group

if TYPE_CHECKING:
    from edgecompress.context import RunContext
    from edgecompress.stages.prune.stage import PruneConfig
    from edgecompress.stages.prune.torch_backend import _Plan

#: Bisection steps on the global factor (a step whose widths were already tried costs nothing).
SEARCH_STEPS = 40
#: A layer's density is floored at this before its logarithm is taken (a layer the global threshold
#: empties still keeps at least one channel).
MIN_DENSITY = 1e-3


@dataclasses.dataclass(frozen=True)
class Goal:
    """What the crop must meet, `measure(model) <= target`, and the density the PaI scores are cut at."""

    kind: str  # "macs", "params" or "latency"
    target: float
    density: float
    measure: Callable[[Any], float]

    def show(self, value: float) -> str:
        if self.kind == "latency":
            return f"{value:.1%} of the latency budget by prediction"
        return f"{value:.1%} of the {'MACs' if self.kind == 'macs' else 'parameters'}"


def precrop(model: Any, config: PruneConfig, ctx: RunContext, plan: _Plan) -> Any:
    """Crop `model` to PaI layer-wise densities scaled to the recipe's MAC, parameter or latency target."""
    import torch

    shape = [1, *ctx.input_shape[1:]]
    criterion = "magnitude" if config.criterion in ("l1", "l2") else config.criterion
    budgets: list[Any] = []  # latency: latency_budget.Target of each budget
    floor: dict[str, int] = {}  # latency: the narrowest width of each group
    slack = 0.0  # how far over the target the narrowest widths may be
    if config.latency:
        from edgecompress.stages.prune import latency_budget

        budgets = latency_budget.targets_of(config, ctx)
        solver = latency_budget.Solver(plan, ctx, budgets, out_channels(model))
        latency_budget.time_references(model, budgets, solver, ctx)
        binding = min(budgets, key=lambda t: t.relative)
        if binding.relative >= 1:
            ctx.ui.warn("prune: the unpruned model already meets every latency budget; nothing cropped")
            ctx.note("latency_budgets", [latency_budget.budget_note(t) for t in budgets])
            return model
        ctx.budget_unpruned = copy.deepcopy(model)  # the build exports it as each budget's reference
        floor = solver.floor(model)
        slack = latency_budget.OVER  # as the pre-check, which found the floor within it before training

        def latency(m: Any) -> float:  # at most 1: every budget met, aimed AIM under as a budget prune aims
            return max(solver.predict(m, t) / (t.target_ms * latency_budget.AIM) for t in budgets)

        goal = Goal("latency", 1.0, binding.aimed, latency)
    elif config.macs_target or config.params_target:
        kind = "macs" if config.macs_target else "params"
        count = (lambda m: count_macs(m, shape)) if kind == "macs" else count_params
        base = count(model)
        target = config.macs_target or config.params_target
        goal = Goal(kind, target, target, lambda m: count(m) / base)
    else:
        raise ModelError("prune: method precrop needs a macs_target, a params_target or a latency budget")

    scores = pai_scores(model, criterion, ctx, plan)
    density = layer_density(scores, goal.density)
    modules = dict(model.named_modules())
    ignored = [modules[n] for n in plan.ignored if n in modules]
    groups = torch_widths.pruning_groups(model, torch.zeros(shape), ignored)
    if not groups:
        raise ModelError("prune: precrop found no prunable channel group (every layer ignored?)")
    keep = keep_ratios(model, groups, density)
    ranked = channel_scores(model, scores, shape, plan)

    def widths_at(factor: float) -> dict[str, int]:
        out = {}
        for g in groups:
            w = min(g.channels, max(g.step, floor.get(g.root, 1), round(g.channels * keep[g.root] * factor)))
            out[g.root] = w - w % g.step if g.step > 1 else w
        return out

    def trial(widths: dict[str, int]) -> tuple[Any, float]:
        # cropped as the result is: which channels go can change a layer's shape (the slices of a
        # concatenation share their group's cut), hence its time
        candidate = crop(model, widths, ranked, plan)
        return candidate, goal.measure(candidate)

    lo, hi = 0.0, 1.0 / max(min(keep.values()), 1e-9)
    chosen = widths_at(lo)
    best, kept = trial(chosen)
    if kept > goal.target * (1 + slack):
        raise ModelError(
            f"prune: precrop cannot keep only {goal.show(goal.target)}: every group at its narrowest still "
            f"keeps {goal.show(kept)} (ignored layers or the classifier limit it); raise the target"
        )
    over: dict[str, int] | None = None  # the widths at hi (over the target), once tried
    for _ in range(SEARCH_STEPS):
        if goal.target - kept <= TARGET_TOLERANCE or hi - lo < 1e-4:
            break
        mid = (lo + hi) / 2
        widths = widths_at(mid)
        if widths == chosen:  # widths only grow with the factor: same widths, same result
            lo = mid
            continue
        if widths == over:
            hi = mid
            continue
        candidate, fraction = trial(widths)
        if fraction <= goal.target:
            lo, best, kept, chosen = mid, candidate, fraction, widths
        else:
            hi, over = mid, widths
    if kept > goal.target:
        ctx.ui.warn(f"prune: precrop keeps {goal.show(kept)} with every group at its narrowest")
    elif goal.target - kept > TARGET_WARNING:
        ctx.ui.warn(
            f"prune: precrop keeps {goal.show(kept)}, under the target {goal.target:.0%} (few channels per "
            "group make the steps large)"
        )
    after = out_channels(best)  # as cropped (an integer round_to may have rounded the planned widths down)
    if budgets:
        for t in budgets:
            t.predicted_ms.append(solver.predict(best, t))
        ctx.note("latency_budgets", [latency_budget.budget_note(t) for t in budgets])
    ctx.note(
        "precrop",
        {
            "criterion": criterion,
            "target": {goal.kind: [t.label for t in budgets] if budgets else goal.target},
            "kept": round(kept, 4),
            "factor": round(lo, 4),
            "formulation": "log-space least squares of layer param ratios vs PaI densities, global factor "
            "by bisection; channels kept by summed PaI score",
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
        f"prune: precrop ({criterion}) keeps {goal.show(kept)} (target {goal.target:.0%}), "
        f"{sum(1 for g in groups if after.get(g.root, g.channels) < g.channels)} of {len(groups)} groups cropped"
    )
    return best.eval()


def crop(model: Any, widths: dict[str, int], ranked: dict[str, Any], plan: _Plan) -> Any:
    """A copy of `model` cropped to `widths` (group root -> channels) in one Torch-Pruning step, each group
    keeping its channels of highest score in `ranked`."""
    cropped = copy.deepcopy(model)
    names = {m: n for n, m in cropped.named_modules()}
    ratios = torch_widths.widths_pruner(cropped, widths, out_channels(cropped))
    if ratios:
        plan.apply(
            cropped, 0.0, widths=ratios, criterion=lambda group: ranked.get(names[group[0].dep.target.module])
        )
    return cropped.eval()


def channel_scores(model: Any, scores: dict[str, Any], shape: list[int], plan: _Plan) -> dict[str, Any]:
    """Group root -> each channel's PaI score summed over the group's conv/linear layers, producers and
    readers (Torch-Pruning's group L1, which maps every layer's channels onto the root's through
    concatenations and grouped convs, read from a copy whose weights are the scores; depthwise convs,
    which it leaves out, added)."""
    import torch
    import torch_pruning as tp
    from torch import nn

    work = copy.deepcopy(model)
    # scaled to at most 1: Torch-Pruning sums in float32, which SynFlow's float64 scores may overflow
    top = max(float(s.max()) for s in scores.values()) or 1.0
    with torch.no_grad():
        for name, s in scores.items():
            work.get_submodule(name).weight.data = (s / top).float()
    modules = dict(work.named_modules())
    names = {m: n for n, m in modules.items()}
    importance = tp.importance.GroupMagnitudeImportance(
        p=1, group_reduction="sum", normalizer=None, target_types=[nn.modules.conv._ConvNd, nn.Linear]
    )
    depthwise = tp.pruner.function.prune_depthwise_conv_out_channels
    dg = tp.DependencyGraph().build_dependency(work, example_inputs=torch.zeros(shape))
    out = {}
    for group in dg.get_all_groups(
        ignored_layers=[modules[n] for n in plan.ignored], root_module_types=(nn.Conv2d, nn.Linear)
    ):
        total = importance(group)
        if total is None:
            continue
        for i, (dep, idxs) in enumerate(group):
            if dep.handler == depthwise:
                local = dep.target.module.weight.data[idxs].flatten(1).sum(1)
                total.scatter_add_(0, torch.tensor(group[i].root_idxs), local)
        out[names[group[0].dep.target.module]] = total
    return out


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
    raise ModelError(f"prune: precrop has no criterion '{criterion}' (use magnitude, snip or synflow)")


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


def keep_ratios(model: Any, groups: list[Group], density: dict[str, float]) -> dict[str, float]:
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
