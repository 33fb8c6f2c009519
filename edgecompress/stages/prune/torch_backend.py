"""Torch backend of `prune`: channel pruning with Torch-Pruning's dependency graph (DepGraph).

DepGraph traces the model once and groups every layer whose channels must shrink together (a conv, its
batch norm, the next layers' inputs, every branch of a residual add, the slices of a concatenation, a
depthwise conv's input and output). A group loses the same channel indices everywhere, so the pruned
model is a smaller dense model, not a masked one.

The driver is framework-neutral (`channel_common.prune_channels`): targets (`macs_target`, `params_target`)
are met by bisection on the uniform ratio (or on the global ratio with `global_ranking`), each trial pruning a
deep copy, and the closest trial at or under the target is kept; latency budgets (`latency_budget.py`,
`torch_budget.py`), precrop (`torch_precrop.py`) and `round_to: auto` (`widths.py`, `torch_widths.py`) take
their own paths. This module gives what is torch's: the plan (Torch-Pruning's pruner, its importances with a
seeded tie-break, round_to never emptying a layer), counting and checking the model.
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
from edgecompress.stages.prune import channel_common

if TYPE_CHECKING:
    from edgecompress.context import RunContext
    from edgecompress.stages.prune.stage import PruneConfig


def prune(model: Any, config: PruneConfig, ctx: RunContext) -> Any:
    """Remove output channels as `config` says (`channel_common.prune_channels`), or zero weights in a pattern
    (`torch_sparsity.py`); return the pruned model in eval mode.

    Records in the run notes: params and MACs before and after, the ratio used and, for every conv/linear
    layer that changed, its output channels before and after.
    """
    if config.pattern:
        from edgecompress.stages.prune.torch_sparsity import prune_pattern

        return prune_pattern(model, config, ctx)
    from edgecompress.stages.prune.torch_budget import TorchBudget
    from edgecompress.stages.prune.torch_precrop import precrop

    framework = channel_common.ChannelFramework(
        name="torch",
        budget=TorchBudget(),
        copy=copy.deepcopy,
        check=_check,
        count_params=count_params,
        count_macs=count_macs,
        out_channels=out_channels,
        precrop=precrop,
    )
    return channel_common.prune_channels(model, config, ctx, framework).eval()


def _check(model: Any, ctx: RunContext) -> None:
    try:
        ctx.adapter.check(model, ctx.input_shape, ctx.data.num_classes)
    except ModelError as exc:
        raise ModelError(f"prune: the pruned model does not run: {exc}") from exc


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
    channel_common.check_prunable(
        config,
        layers,
        "conv or linear",
        "BatchNorm",
        lambda: any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()),
    )
    ignored = channel_common.ignored_layers(
        config, layers, "conv or linear layer", lambda: find_classifier(model, shape, ctx.data.num_classes)
    )
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


class _Plan(channel_common.ChannelPlan):
    """Everything but the ratio: applies one pruning run to a model (in place)."""

    def __init__(
        self,
        config: PruneConfig,
        ctx: RunContext,
        ignored: list[str],
        layer_ratios: dict[str, tuple[list[str], float]],
    ) -> None:
        super().__init__(config, ctx, ignored)
        self.layer_ratios = layer_ratios

    def apply(
        self,
        model: Any,
        ratio: float,
        *,
        widths: dict[Any, float] | None = None,
        criterion: str | Callable[[Any], Any] | None = None,
    ) -> Any:
        """Prune `model` in place (and return it) at `ratio` (uniform per layer, or global with global_ranking); with
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
        return model.eval()

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


def _pruner_class() -> type:
    """BasePruner whose round_to never rounds a layer down to zero channels.

    Torch-Pruning 1.6.1 rounds the kept channels down to a multiple of round_to, so a layer keeping
    6 of 16 channels with round_to 8 would lose all 16. Here a layer keeps at least one multiple (or stays
    whole when it is narrower than round_to); with round_to 1 this also guarantees one channel per layer
    (`channel_common.rounded_width`, as the Keras backend rounds).
    """
    import torch_pruning as tp

    class RoundedPruner(tp.pruner.BasePruner):
        def _round_to(self, n_pruned: int, current_channels: int, round_to: int) -> int:
            keep = channel_common.rounded_width(current_channels - n_pruned, current_channels, round_to)
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
