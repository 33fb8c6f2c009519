"""Keras backend of `prune` (method: channel): structured channel pruning that physically removes filters from
functional and Sequential tf_keras models.

The channel analysis (edgecompress.frameworks.keras_groups.channel_graph) groups the channels that must go
together: a conv's or dense's filters, the batch norms, activations, pooling and depthwise convs they pass,
every branch of a residual add, a squeeze-excitation gate's last dense (through its Multiply), the rows of a
Dense after Flatten; a Concatenate's inputs keep their own groups and its consumers are sliced at their
offsets. `rebuild` clones the model from its layers' configs with fewer `filters`/`units` (batch norms,
depthwise convs and PReLUs size themselves from their inputs, Reshape targets are updated) and copies the kept
weights, so the result is a smaller dense model that computes exactly what the original computes with the
removed channels' contributions zeroed (`zeroed`).

Options mirror the torch backend (Torch-Pruning): uniform `ratio` per group, `layer_ratios` globs, `ignore`,
`ignore_classifier`, `global_ranking` with `max_layer_ratio` (scores normalised by their group's mean, one
threshold for all), `round_to`, `iterative_steps` (re-ranked after each), and `macs_target`/`params_target`
by bisection on the ratio. Channel importance sums over a group's producing layers (its convs, denses and
depthwise convs; Torch-Pruning also averages in the consumers' input weights and the batch norms): l1
(sum |w|) and l2 (sum w^2) of each filter, taylor (|w * dL/dw| with gradients summed over `taylor_batches`
training batches) and bn_scale (|gamma| of the group's batch norms; a group without one is not pruned, as in
Torch-Pruning). Ties are broken by a seeded jitter of a millionth of the mean score, as in the torch backend.
The driver is the torch backend's (`channel_common.prune_channels`): the target bisection, latency budgets
(`latency_budget.py`, `keras_budget.py`) and `round_to: auto` (each group's width snapped to the right edge of
its latency plateau on the recipe's export targets, `widths.py`, `keras_widths.py`) are the same code; this
module gives the plan, the importances, the rebuild and counting. Precrop is not available for Keras models
yet (`edgecompress validate` says so).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from edgecompress.errors import ModelError
from edgecompress.frameworks.keras_groups import ChannelGraph, ChannelGroup, channel_graph
from edgecompress.frameworks.keras_layers import (
    count_macs,
    count_params,
    ensure_graph,
    find_classifier,
    weight_role,
)
from edgecompress.stages.base import match_globs
from edgecompress.stages.prune import channel_common

if TYPE_CHECKING:
    from edgecompress.context import RunContext
    from edgecompress.stages.prune.stage import PruneConfig

__all__ = ["ChannelGroup", "channel_groups", "prune", "rebuild", "zeroed"]

_WIDTHS = {"Conv2D": "filters", "SeparableConv2D": "filters", "Conv2DTranspose": "filters", "Dense": "units"}


def channel_groups(model: Any) -> list[ChannelGroup]:
    """The model's channel dependency groups in graph order (frozen ones too, see ChannelGroup.frozen)."""
    return channel_graph(model).groups


# ---------------------------------------------------------------------------------------------------- rebuild


def rebuild(model: Any, keep: dict[str, np.ndarray], *, analysis: ChannelGraph | None = None) -> Any:
    """A new model with only the kept channels: `keep` maps a group's name to the indices of its channels that
    stay (groups not named keep all). Layer names, configs and the unchanged weights are the original's."""
    from edgecompress.frameworks import keras_env

    keras = keras_env.keras()
    analysis = analysis or channel_graph(model)
    _check_keep(analysis, keep)
    alive = analysis.alive(keep)

    def kept(arr: np.ndarray) -> np.ndarray:
        return np.flatnonzero(alive[arr])

    def clone(layer: Any) -> Any:
        kind = type(layer).__name__
        config = layer.get_config()
        outs = analysis.out_maps.get(layer.name)
        if kind in _WIDTHS and outs:
            config[_WIDTHS[kind]] = len(kept(outs[0]))
        elif kind == "Reshape" and outs and config["target_shape"][-1] != -1:
            config["target_shape"] = (*tuple(config["target_shape"])[:-1], len(kept(outs[0])))
        try:
            return layer.__class__.from_config(config)
        except Exception as exc:
            if not layer.weights:  # e.g. a Lambda that cannot be deserialised: shared, it has no weights
                return layer
            raise ModelError(
                f"prune: layer '{layer.name}' ({kind}) cannot be rebuilt from its config: {_one_line(exc)}"
            ) from exc

    try:
        new = keras.models.clone_model(model, clone_function=clone)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"prune: the model could not be rebuilt from its layers: {_one_line(exc)}") from exc
    for node in analysis.nodes:
        layer = node.layer
        if not layer.weights:
            continue
        ins = [kept(a) for a in analysis.in_maps[node.name]]
        outs = [kept(a) for a in analysis.out_maps[node.name]]
        weights = _sliced(layer, node.kind, ins, outs, analysis.in_maps[node.name])
        target = new.get_layer(node.name)
        target.set_weights(
            [weights[weight_role(w)] for w in target.weights] if weights else layer.get_weights()
        )
    return new


def _sliced(layer: Any, kind: str, ins: list, outs: list, in_maps: list) -> dict[str, np.ndarray] | None:
    """The layer's weights by role, cut to the kept input (`ins`) and output (`outs`) positions; None for a
    layer whose weights are copied whole."""
    w = {weight_role(v): v.numpy() for v in layer.weights}
    if kind == "Conv2D" and layer.groups == 1:
        w["kernel"] = w["kernel"][:, :, ins[0]][..., outs[0]]
    elif kind == "Conv2DTranspose":
        w["kernel"] = w["kernel"][:, :, outs[0]][..., ins[0]]
    elif kind == "Dense":
        w["kernel"] = w["kernel"][ins[0]][:, outs[0]]
    elif kind in ("DepthwiseConv2D", "SeparableConv2D"):
        w["depthwise_kernel"] = w["depthwise_kernel"][:, :, ins[0]]
        if kind == "SeparableConv2D":
            alive_in = np.zeros(len(in_maps[0]), dtype=bool)
            alive_in[ins[0]] = True
            middle = np.flatnonzero(np.repeat(alive_in, layer.depth_multiplier))
            w["pointwise_kernel"] = w["pointwise_kernel"][:, :, middle][..., outs[0]]
    elif kind == "BatchNormalization":
        return {role: value[outs[0]] for role, value in w.items()}
    elif kind == "PReLU":
        if w["alpha"].shape[-1] > 1:
            w["alpha"] = w["alpha"][..., outs[0]]
        return w
    else:
        return None
    if "bias" in w:
        w["bias"] = w["bias"][outs[0]]
    return w


def zeroed(model: Any, keep: dict[str, np.ndarray]) -> Any:
    """A full-width copy of `model` in which the channels `keep` removes no longer reach any kept channel:
    every conv/dense input row that reads one is zero. `rebuild(model, keep)` computes exactly this model."""
    from edgecompress.frameworks import keras_env

    analysis = channel_graph(model)
    _check_keep(analysis, keep)
    alive = analysis.alive(keep)
    copy = keras_env.keras().models.clone_model(model)
    copy.set_weights(model.get_weights())
    for node in analysis.nodes:
        if not node.inputs or node.kind not in _WIDTHS:
            continue
        gone = np.flatnonzero(~alive[analysis.in_maps[node.name][0]])
        layer = copy.get_layer(node.name)
        if node.kind == "Conv2D" and layer.groups == 1:
            variable, index = layer.kernel, (slice(None), slice(None), gone)
        elif node.kind == "Conv2DTranspose":
            variable, index = layer.kernel, (..., gone)
        elif node.kind == "SeparableConv2D":
            variable, index = layer.depthwise_kernel, (slice(None), slice(None), gone)
        elif node.kind == "Dense":
            variable, index = layer.kernel, (gone,)
        else:
            continue
        value = variable.numpy()
        value[index] = 0
        variable.assign(value)
    return copy


def _check_keep(analysis: ChannelGraph, keep: dict[str, np.ndarray]) -> None:
    groups = {g.name: g for g in analysis.groups}
    for name, indices in keep.items():
        group = groups.get(name)
        if group is None:
            raise ModelError(
                f"prune: no channel group is named '{name}'; the groups are named by their first layer"
            )
        idx = np.asarray(indices, dtype=int)
        if len(idx) == 0 or len(set(idx.tolist())) != len(idx) or idx.min() < 0 or idx.max() >= group.width:
            raise ModelError(
                f"prune: group '{name}' keeps {idx.tolist()}: give distinct indices below its width "
                f"{group.width}, at least one"
            )
        if len(idx) < group.width and not group.prunable:
            raise ModelError(f"prune: group '{name}' cannot lose channels: {group.reason}")
        for segment, producer in zip(_segments(analysis, group), group.producers, strict=True):
            if len(segment) and not np.isin(segment, idx).any():
                raise ModelError(
                    f"prune: keeping {idx.tolist()} of group '{name}' leaves layer '{producer}' without "
                    f"filters; keep one of its channels {segment.tolist()}"
                )


# ------------------------------------------------------------------------------------------------- importance


def importance(
    model: Any,
    analysis: ChannelGraph,
    criterion: str,
    gradients: dict[str, dict[str, np.ndarray]] | None = None,
) -> dict[str, np.ndarray]:
    """Channel scores of every prunable group (higher = more important) by `criterion`: l1, l2, taylor (needs
    `gradients`: layer -> role -> summed gradient) or bn_scale (groups without a batch norm are left out)."""
    score = np.zeros(len(analysis.unit_group))
    found = np.zeros(len(analysis.unit_group), dtype=bool)
    for node in analysis.nodes:
        layer, kind = node.layer, node.kind
        outs = analysis.out_maps[node.name]
        if criterion == "bn_scale":
            if kind == "BatchNormalization" and layer.scale:
                np.add.at(score, outs[0], np.abs(layer.gamma.numpy()))
                found[outs[0]] = True
            continue
        role = {"DepthwiseConv2D": "depthwise_kernel", "SeparableConv2D": "pointwise_kernel"}.get(
            kind, "kernel"
        )
        if kind not in (*_WIDTHS, "DepthwiseConv2D") or (kind == "Conv2D" and layer.groups > 1):
            continue
        w = getattr(layer, role).numpy()
        if criterion == "taylor":
            w = w * (gradients or {}).get(node.name, {}).get(role, 0.0)
        if kind == "DepthwiseConv2D":
            w = w.reshape(-1, w.shape[2] * w.shape[3])
        elif kind == "Conv2DTranspose":
            w = w.transpose(0, 1, 3, 2)
        filters = w.reshape(-1, w.shape[-1])  # one column per output channel
        per_filter = (filters**2 if criterion == "l2" else np.abs(filters)).sum(0)
        np.add.at(score, outs[0], per_filter)
        found[outs[0]] = True
    out = {}
    for g, group in enumerate(analysis.groups):
        units = np.flatnonzero(analysis.unit_group == g)
        if group.prunable and found[units].any():
            out[group.name] = np.bincount(
                analysis.unit_index[units], weights=score[units], minlength=group.width
            ).astype(np.float64)
    return out


def _gradients(model: Any, ctx: RunContext, batches: int) -> dict[str, dict[str, np.ndarray]]:
    """Cross-entropy gradients of every conv/dense kernel summed over `batches` seeded training batches, batch
    norms in inference mode."""
    from edgecompress.frameworks import keras_env

    tf, keras = keras_env.tf(), keras_env.keras()
    data = ctx.data.train
    batch = ctx.recipe.data.batch_size
    order = np.random.default_rng(ctx.seed).permutation(len(data))
    variables = [
        (layer.name, weight_role(v), v)
        for layer in model.layers
        for v in layer.trainable_weights
        if weight_role(v) in ("kernel", "depthwise_kernel", "pointwise_kernel")
    ]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not _ends_in_softmax(model))
    total = [np.zeros(v.shape, dtype=np.float64) for _, _, v in variables]
    count = min(batches, -(-len(data) // batch))
    with ctx.ui.progress("prune: taylor gradients", total=count) as task:
        for b in range(count):
            idx = np.sort(order[b * batch : (b + 1) * batch])
            with tf.GradientTape() as tape:
                value = loss(data.y[idx], model(data.x[idx].astype(np.float32), training=False))
            for t, grad in zip(total, tape.gradient(value, [v for _, _, v in variables]), strict=True):
                if grad is not None:
                    t += tf.convert_to_tensor(grad).numpy()
            task.advance()
    out: dict[str, dict[str, np.ndarray]] = {}
    for (name, role, _), grad in zip(variables, total, strict=True):
        out.setdefault(name, {})[role] = grad
    return out


def _ends_in_softmax(model: Any) -> bool:
    """Whether the model's first output is a softmax (probabilities, not logits)."""
    layer = model.outputs[0]._keras_history.layer
    activation = getattr(layer, "activation", None)
    return type(layer).__name__ == "Softmax" or getattr(activation, "__name__", "") == "softmax"


# ------------------------------------------------------------------------------------------------------ prune


def prune(model: Any, config: PruneConfig, ctx: RunContext) -> Any:
    """Remove output channels as `config` says (`channel_common.prune_channels`); return the pruned (new)
    model.

    Records in the run notes what the torch backend records: params and MACs before and after, the ratio used
    and, for every conv/dense layer that changed, its output channels before and after.
    """
    from edgecompress.stages.prune.keras_budget import KerasBudget

    ensure_graph(model, [1, *ctx.input_shape[1:]])
    framework = channel_common.ChannelFramework(
        name="keras",
        budget=KerasBudget(),
        copy=lambda m: m,  # a pruned model is rebuilt: the model itself stays as it is
        check=_check,
        count_params=count_params,
        count_macs=count_macs,
        out_channels=out_channels,
    )
    return channel_common.prune_channels(model, config, ctx, framework)


def _check(model: Any, ctx: RunContext) -> None:
    shape = [1, *ctx.input_shape[1:]]
    try:
        out = np.asarray(model(np.zeros(shape, dtype=np.float32), training=False))
    except Exception as exc:
        raise ModelError(f"prune: the pruned model does not run: {_one_line(exc)}") from exc
    if out.shape != (1, ctx.data.num_classes):
        raise ModelError(
            f"prune: the pruned model gives outputs of shape {list(out.shape)}, not "
            f"[1, {ctx.data.num_classes}]"
        )


def make_plan(model: Any, config: PruneConfig, ctx: RunContext) -> _Plan:
    """Checks the model can be pruned as `config` says and resolves its globs: the ignored layers (and the
    classifier), the frozen groups, and each group's `layer_ratios` ratio."""
    analysis = channel_graph(model)
    names = [n.name for n in analysis.nodes]
    convs = [n.name for n in analysis.nodes if n.kind in (*_WIDTHS, "DepthwiseConv2D")]
    channel_common.check_prunable(
        config,
        convs,
        "conv or dense",
        "BatchNormalization",
        lambda: any(n.kind == "BatchNormalization" for n in analysis.nodes),
    )
    ignored = channel_common.ignored_layers(config, names, "layer", lambda: find_classifier(model))
    blocked = {
        int(analysis.unit_group[u])
        for name in ignored
        for arr in analysis.out_maps[name]
        for u in arr.tolist()
    }
    for g, group in enumerate(analysis.groups):
        kinds = {kind for kind, _, _ in group.frozen}
        if g in blocked or kinds != {"opaque"}:
            continue
        layer, text = next(((lay, t) for _, lay, t in group.frozen if lay not in ignored), (None, ""))
        if layer is not None:
            raise ModelError(
                f"prune: {text}; add '{layer}' to prune.ignore to keep the channels it touches (or build it "
                "from tf_keras layers)"
            )
    assigned = match_globs(config.layer_ratios, convs, "prune.layer_ratios", "conv or dense layer")
    ratios = {}
    for group in analysis.groups:
        pattern = next((assigned[p] for p in group.producers if p in assigned), None)
        if pattern is not None:
            ratios[group.name] = config.layer_ratios[pattern]
    frozen = {analysis.groups[g].name for g in blocked}
    return _Plan(config, ctx, ignored, frozen, ratios)


class _Plan(channel_common.ChannelPlan):
    """Everything but the ratio: prunes a model (into a new one) at a ratio."""

    def __init__(
        self,
        config: PruneConfig,
        ctx: RunContext,
        ignored: list[str],
        frozen: set[str],
        ratios: dict[str, float],
    ) -> None:
        super().__init__(config, ctx, ignored)
        self.frozen = frozen  # groups kept whole: an ignored layer writes their channels
        self.ratios = ratios  # group -> layer_ratios ratio
        self._scores: tuple[Any, dict[str, np.ndarray]] | None = None  # the first step's, reused by trials

    def apply(
        self, model: Any, ratio: float, *, plan: dict[str, int] | None = None, criterion: str | None = None
    ) -> Any:
        """The model pruned at `ratio` over `iterative_steps` steps, channels re-ranked after each; or, given a
        width `plan` (group name -> channels kept), pruned to exactly those widths in one step. `criterion`:
        rank by it instead of the recipe's (l1 for a latency trial, where which channels go does not matter)."""
        config = self.config
        rng = np.random.default_rng(self.ctx.seed)
        analysis = channel_graph(model)
        widths = {g.name: g.width for g in analysis.groups}
        current = model
        steps = 1 if plan is not None else config.iterative_steps
        for step in range(1, steps + 1):
            if current is not model:
                analysis = channel_graph(current)
            scores = (
                importance(current, analysis, criterion)
                if criterion
                else self._importance(current, analysis, first=step == 1)
            )
            scores = {
                name: s + 1e-6 * np.abs(s).mean() * rng.random(len(s))
                for name, s in scores.items()
                if name not in self.frozen
            }
            fraction = step / steps
            if plan is not None:
                counts = dict(plan)
            else:
                counts = self._global(scores, widths, ratio * fraction) if config.global_ranking else {}
            keep = {}
            for group in analysis.groups:
                if group.name not in scores:
                    continue
                if group.name not in counts:
                    if plan is not None:
                        continue
                    r = self.ratios.get(group.name, ratio) * fraction
                    counts[group.name] = int(widths.get(group.name, group.width) * (1 - r))
                n = self._round(counts[group.name], group.width) if plan is None else counts[group.name]
                if n < group.width:
                    keep[group.name] = _top(scores[group.name], n, _segments(analysis, group))
            if keep:
                current = rebuild(current, keep, analysis=analysis)
        return current

    def _importance(self, model: Any, analysis: ChannelGraph, *, first: bool) -> dict[str, np.ndarray]:
        if first and self._scores is not None and self._scores[0] is model:
            return self._scores[1]
        criterion = self.config.criterion
        gradients = _gradients(model, self.ctx, self.config.taylor_batches) if criterion == "taylor" else None
        scores = importance(model, analysis, criterion, gradients)
        if first:
            self._scores = (model, scores)
        return scores

    def _global(self, scores: dict[str, np.ndarray], widths: dict[str, int], ratio: float) -> dict[str, int]:
        """Kept channels per group when one threshold on mean-normalised scores removes `ratio` of all the
        channels of the groups without a layer_ratios ratio, each keeping at least 1 - max_layer_ratio."""
        names = [n for n in scores if n not in self.ratios]
        if not names:
            return {}
        flat = np.concatenate([scores[n] / max(scores[n].mean(), 1e-12) for n in names])
        owner = np.concatenate([[i] * len(scores[n]) for i, n in enumerate(names)])
        current = np.array([len(scores[n]) for n in names])
        original = np.array([widths.get(n, len(scores[n])) for n in names])
        floor = np.maximum((original * (1 - self.config.max_layer_ratio)).astype(int), 1)
        to_remove = int(current.sum()) - int(original.sum() * (1 - ratio))
        kept = current.copy()
        for i in np.argsort(flat, kind="stable"):
            if to_remove <= 0:
                break
            if kept[owner[i]] > floor[owner[i]]:
                kept[owner[i]] -= 1
                to_remove -= 1
        return {n: int(k) for n, k in zip(names, kept, strict=True)}

    def _round(self, keep: int, width: int) -> int:
        """round_to as the torch backend applies it (`channel_common.rounded_width`)."""
        step = self.config.round_to if isinstance(self.config.round_to, int) else 1
        return channel_common.rounded_width(keep, width, step)


def _segments(analysis: ChannelGraph, group: ChannelGroup) -> list[np.ndarray]:
    """The group's channel indices each of its producers writes (a concatenation's inputs write parts)."""
    g = analysis.groups.index(group)
    return [
        np.unique(analysis.unit_index[arr[analysis.unit_group[arr] == g]])
        for p in group.producers
        for arr in analysis.out_maps[p][:1]
    ]


def _top(scores: np.ndarray, n: int, segments: list[np.ndarray]) -> np.ndarray:
    """The `n` best channels, with at least one of every producer's (a layer left without filters cannot be
    built; Torch-Pruning skips such a group instead): a producer's best channel replaces the weakest kept
    channel that no other producer needs."""
    order = np.argsort(-scores, kind="stable")
    keep = list(order[:n])
    for segment in segments:
        if len(segment) == 0 or np.isin(segment, keep).any():
            continue
        sole = {int(s[np.isin(s, keep)][0]) for s in segments if np.isin(s, keep).sum() == 1}
        spare = [i for i in reversed(keep) if i not in sole]
        if spare:
            keep.remove(spare[0])
        keep.append(int(segment[np.argmax(scores[segment])]))
    return np.sort(np.asarray(keep, dtype=int))


def out_channels(model: Any) -> dict[str, int]:
    """Output channels (units) of every conv and dense layer, by name."""
    out = {}
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in _WIDTHS:
            out[layer.name] = int(getattr(layer, _WIDTHS[kind]))
        elif kind == "DepthwiseConv2D":
            out[layer.name] = int(layer.depthwise_kernel.shape[2] * layer.depth_multiplier)
    return out


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:300] + "...") if len(text) > 300 else text or type(exc).__name__
