"""Torch backend of `prune`: channel pruning with Torch-Pruning's dependency graph (DepGraph).

DepGraph traces the model once and groups every layer whose channels must shrink together (a conv, its
batch norm, the next layers' inputs, every branch of a residual add, the slices of a concatenation, a
depthwise conv's input and output). A group loses the same channel indices everywhere, so the pruned
model is a smaller dense model, not a masked one.

Targets (`macs_target`, `params_target`) are met by bisection on the uniform ratio (or on the global
ratio with `global_ranking`), each trial pruning a deep copy, and the closest trial at or under the
target is kept.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecompress.errors import ModelError
from edgecompress.frameworks.torch import count_macs, count_params, find_classifier
from edgecompress.frameworks.torch_loading import one_line
from edgecompress.stages.base import match_globs
from edgecompress.stages.prune.channel_common import note_channel_pruning, search_ratio

if TYPE_CHECKING:
    from edgecompress.context import RunContext
    from edgecompress.stages.prune.stage import PruneConfig


def prune(model: Any, config: PruneConfig, ctx: RunContext) -> Any:
    """Remove output channels as `config` says; return the pruned model in eval mode.

    Records in the run notes: params and MACs before and after, the ratio used and, for every conv/linear
    layer that changed, its output channels before and after.
    """
    if config.pattern:
        from edgecompress.stages.prune.torch_sparsity import prune_pattern

        return prune_pattern(model, config, ctx)
    shape = [1, *ctx.input_shape[1:]]
    plan = make_plan(model, config, ctx)
    ignored = plan.ignored

    params_before, macs_before = count_params(model), count_macs(model, shape)
    channels_before = out_channels(model)
    unpruned = copy.deepcopy(model) if config.round_to == "auto" else None
    target = config.macs_target or config.params_target
    if config.method == "precrop":
        from edgecompress.stages.prune.torch_precrop import precrop

        ratio = None
        model = precrop(model, config, ctx, plan)
    elif target is not None:
        measure = (
            (lambda m: count_macs(m, shape) / macs_before)
            if config.macs_target
            else (lambda m: count_params(m) / params_before)
        )
        ratio, model = _search(model, plan, target, measure, "MACs" if config.macs_target else "parameters")
    elif config.latency:
        from edgecompress.stages.prune.latency_budget import prune_to_budget

        ratio = None
        model = prune_to_budget(model, config, ctx, plan)
    else:
        ratio = config.ratio or 0.0
        plan.apply(model, ratio)

    if unpruned is not None:
        model = _snap_to_plateaus(unpruned, model, plan, ctx)
    try:
        ctx.adapter.check(model, ctx.input_shape, ctx.data.num_classes)
    except ModelError as exc:
        raise ModelError(f"prune: the pruned model does not run: {exc}") from exc
    note_channel_pruning(
        ctx,
        config,
        ratio=ratio,
        ignored=ignored,
        params=(params_before, count_params(model)),
        macs=(macs_before, count_macs(model, shape)),
        before=channels_before,
        after=out_channels(model),
    )
    return model.eval()


def make_plan(model: Any, config: PruneConfig, ctx: RunContext) -> _Plan:
    """Checks the model can be pruned as `config` says and resolves its globs: the ignored layers (and the
    classifier) and the layers of each `layer_ratios` glob."""
    import torch
    from torch import nn

    if isinstance(model, torch.jit.ScriptModule) or not isinstance(model, nn.Module):
        raise ModelError(
            "prune: a TorchScript model's graph is frozen, so its channels cannot be removed; give model.source "
            "as a python entry 'file.py:function' or a torch.export .pt2"
        )
    shape = [1, *ctx.input_shape[1:]]
    layers = _layer_names(model)
    if not layers:
        raise ModelError("prune: the model has no conv or linear layers to prune")
    if config.criterion == "bn_scale" and not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
    ):
        raise ModelError(
            "prune: criterion bn_scale ranks channels by BatchNorm scales, but the model has no BatchNorm; use l1, l2 or taylor"
        )

    ignored = list(match_globs(config.ignore, layers, "prune.ignore"))
    if config.ignore_classifier:
        classifier = find_classifier(model, shape, ctx.data.num_classes)
        if classifier is not None and classifier not in ignored:
            ignored.append(classifier)
    assigned = match_globs(config.layer_ratios, layers, "prune.layer_ratios")
    layer_ratios = {
        pattern: [n for n, p in assigned.items() if p == pattern] for pattern in config.layer_ratios
    }
    return _Plan(
        config,
        ctx,
        ignored,
        {p: (names, config.layer_ratios[p]) for p, names in layer_ratios.items() if names},
    )


class _Plan:
    """Everything but the ratio: applies one pruning run to a model (in place)."""

    def __init__(
        self,
        config: PruneConfig,
        ctx: RunContext,
        ignored: list[str],
        layer_ratios: dict[str, tuple[list[str], float]],
    ) -> None:
        self.config = config
        self.ctx = ctx
        self.ignored = ignored
        self.layer_ratios = layer_ratios

    def apply(
        self,
        model: Any,
        ratio: float,
        *,
        widths: dict[Any, float] | None = None,
        criterion: str | Callable[[Any], Any] | None = None,
    ) -> None:
        """Prune `model` in place at `ratio` (uniform per layer, or global with global_ranking); with
        `widths` (module -> ratio that leaves an exact width) only those groups, locally, in one step.
        `criterion` overrides the recipe's: a criterion name (a trial whose shape alone matters needs no
        gradients), or a function of a Torch-Pruning group giving its channels' scores (PreCropping's)."""
        import torch
        import torch_pruning as tp

        config = self.config
        criterion = criterion or config.criterion
        modules = dict(model.named_modules())
        importance = (
            criterion
            if callable(criterion)
            else {
                "l1": lambda: tp.importance.MagnitudeImportance(p=1),
                "l2": lambda: tp.importance.MagnitudeImportance(p=2),
                "taylor": lambda: tp.importance.TaylorImportance(),
                "bn_scale": lambda: tp.importance.BNScaleImportance(),
            }[criterion]()
        )
        importance = _TieBreak(importance, seed=self.ctx.seed)
        ratio_dict = {tuple(modules[n] for n in names): r for names, r in self.layer_ratios.values()}
        steps = 1 if widths is not None else config.iterative_steps
        try:
            pruner = _pruner_class()(
                model,
                torch.zeros([1, *self.ctx.input_shape[1:]]),
                importance=importance,
                global_pruning=config.global_ranking and widths is None,
                pruning_ratio=0.0 if widths is not None else ratio,
                pruning_ratio_dict=(widths if widths is not None else ratio_dict) or None,
                max_pruning_ratio=config.max_layer_ratio if config.global_ranking and widths is None else 1.0,
                iterative_steps=steps,
                ignored_layers=[modules[n] for n in self.ignored],
                round_to=config.round_to if isinstance(config.round_to, int) else 1,
            )
        except Exception as exc:
            raise ModelError(
                f"prune: Torch-Pruning could not trace the model's dependency graph: {one_line(exc)}"
            ) from exc
        for _ in range(steps):
            if criterion == "taylor":
                self.accumulate_gradients(model)
            try:
                pruner.step()
            except Exception as exc:
                raise ModelError(
                    f"prune: Torch-Pruning failed while removing channels: {one_line(exc)}"
                ) from exc
        model.zero_grad(set_to_none=True)
        model.eval()

    def accumulate_gradients(self, model: Any) -> None:
        """Sum cross-entropy gradients over `taylor_batches` seeded training batches (eval-mode batch norm)."""
        import torch
        from torch.nn import functional as F

        data = self.ctx.data.train
        batch = self.ctx.recipe.data.batch_size
        order = np.random.default_rng(self.ctx.seed).permutation(len(data))
        model.eval()
        model.zero_grad(set_to_none=True)
        for p in model.parameters():
            p.requires_grad_(True)
        for b in range(self.config.taylor_batches):
            idx = np.sort(order[b * batch : (b + 1) * batch])
            if len(idx) == 0:
                break
            x = torch.from_numpy(np.ascontiguousarray(data.x[idx], dtype=np.float32))
            F.cross_entropy(model(x), torch.from_numpy(data.y[idx].astype(np.int64))).backward()


class _TieBreak:
    """Adds a tiny seeded jitter to channel importances so that equal scores do not tie.

    Ties are common in fresh or symmetric models (all batch-norm scales 1). Torch-Pruning's global
    threshold removes every channel tied at it, and its local ranking then takes the first indices, which
    can empty one side of a concatenation (and the whole group is skipped). The jitter, a millionth of
    the mean score, only reorders scores that close together.
    """

    def __init__(self, inner: Any, *, seed: int) -> None:
        import torch

        self.inner = inner
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, group: Any) -> Any:
        import torch

        scores = self.inner(group)
        if scores is None:
            return None
        scores = scores.double()  # float32 cannot hold a 1e-6 jitter on scores near 1 apart
        jitter = torch.rand(scores.shape, generator=self.generator, dtype=torch.float64)
        return scores + 1e-6 * scores.abs().mean() * jitter


def _snap_to_plateaus(unpruned: Any, wanted: Any, plan: _Plan, ctx: RunContext) -> Any:
    """round_to auto: the unpruned model pruned to the width plan of `widths.snap_widths` (each group
    at the right edge of its latency plateau, at least as wide as in `wanted`)."""
    import torch

    from edgecompress.frameworks.torch_layers import float_graph, layer_ops
    from edgecompress.stages.prune import torch_widths
    from edgecompress.stages.prune import widths as width_plans

    shape = [1, *ctx.input_shape[1:]]
    modules = dict(wanted.named_modules())
    ignored = [modules[n] for n in plan.ignored if n in modules]
    original = out_channels(unpruned)
    groups = [
        width_plans.Group(**{**g.__dict__, "original": original.get(g.root, g.channels)})
        for g in torch_widths.pruning_groups(wanted, torch.zeros(shape), ignored)
    ]

    def layers(model: Any) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for layer in layer_ops(float_graph(model, shape), shape):
            if layer.kind in ("conv", "linear"):
                out.setdefault(layer.module, []).append(layer)
        return out

    widths, info = width_plans.snap_widths(wanted, groups, ctx, layers=layers)
    plan.apply(unpruned, 0.0, widths=torch_widths.widths_pruner(unpruned, widths, original))
    width_plans.note_snap(ctx, groups, widths, out_channels(unpruned), info)
    return unpruned.eval()


def _search(model: Any, plan: _Plan, target: float, measure: Any, what: str) -> tuple[float, Any]:
    """Bisection on the ratio (`channel_common.search_ratio`), each trial pruning a copy."""

    def trial(ratio: float) -> tuple[Any, float]:
        candidate = copy.deepcopy(model)
        plan.apply(candidate, ratio)
        return candidate, measure(candidate)

    return search_ratio(trial, target, what, plan.ctx.ui)


def _pruner_class() -> type:
    """BasePruner whose round_to never rounds a layer down to zero channels.

    Torch-Pruning 1.6.1 rounds the kept channels down to a multiple of round_to, so a layer keeping
    6 of 16 channels with round_to 8 would lose all 16. Here a layer keeps at least one multiple (or stays
    whole when it is narrower than round_to); with round_to 1 this also guarantees one channel per layer.
    """
    import torch_pruning as tp

    class RoundedPruner(tp.pruner.BasePruner):
        def _round_to(self, n_pruned: int, current_channels: int, round_to: int) -> int:
            keep = current_channels - n_pruned
            keep = max(keep - keep % round_to, min(round_to, current_channels))
            return max(current_channels - keep, 0)

    return RoundedPruner


def _layer_names(model: Any) -> list[str]:
    from torch import nn

    return [n for n, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd | nn.Linear)]


def out_channels(model: Any) -> dict[str, int]:
    """Output channels (features) of every conv and linear layer, by name."""
    from torch import nn

    out: dict[str, int] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            out[name] = m.out_channels
        elif isinstance(m, nn.Linear):
            out[name] = m.out_features
    return out
