"""TFMOT's `prune_low_magnitude` for the Keras pattern-sparsity methods: which layers of a prune stage's plan
TFMOT prunes (engine "tfmot") and which keep edgecompress's own masks (engine "masks", `keras_masks.py`), the
wrapping, the pruning steps of a custom fit loop and the stripping. Read against TFMOT 0.8.1's source
(`tensorflow_model_optimization/python/core/sparsity/keras/`).

TFMOT prunes (each layer gets its own `prune_low_magnitude` parameters):

- magnitude (per layer, or `global_ranking`, whose per-layer sparsities become each layer's target): Dense,
  Conv2D and Conv2DTranspose kernels — TFMOT ranks |w| over the whole kernel, whatever its layout
  (`pruning_impl.Pruning._update_mask`);
- block `[r, c]`: Dense kernels, `block_size=(c, r)`: TFMOT's blocks are over the rank-2 kernel as Keras stores
  it, [in, out], and edgecompress's block is r outputs x c inputs of the canonical [out, in] one;
- nm with the oneshot schedule: Dense and Conv2D (grouped too), `sparsity_m_by_n=(m - n, m)` (TFMOT counts
  zeros: (2, 4) keeps 2 of 4). TFMOT's groups (`pruning_utils.weights_rearrange`) run along the last axis of
  the kernel rearranged to the TFLite layout: a Conv2D's [kh, kw, in, out] becomes [out * kh * kw, in] and a
  Dense's [in, out] becomes [out, in], so every m consecutive input channels at one (output, position) keep
  n — the product's contract, consecutive in a .tflite's OHWI kernel.

edgecompress's masks keep (the reason is recorded per layer): kernel_pattern (edgecompress's own pattern);
blocks in conv kernels, 1x1 ones too (`Pruning._validate_block` takes rank-2 weights only), and in a Dense
with a single input or output (TFMOT squeezes the kernel before pooling its blocks); N:M in a
Conv2DTranspose (its kernel is [kh, kw, out, in]: TFMOT's groups would run along its outputs); N:M with the
polynomial schedule (TFMOT makes an m-by-n mask once, at pruning step 1, whatever the schedule:
`Pruning.conditional_mask_update`, so it cannot ramp N:M); DepthwiseConv2D (TFMOT's registry prunes none of
its weights) and SeparableConv2D (TFMOT prunes only its pointwise kernel, while the plan has one entry per
half); a layer whose plan zeroes all its weights (TFMOT keeps at least one); a layer `prune_low_magnitude`
rejects.

When TFMOT works, and where its wrappers go (a wrapped model never leaves one stage: stage checkpoints, the
saved model and every later stage see plain tf_keras layers, so nothing has to load a wrapper):

- oneshot, in the prune stage: a wrapped copy of the model with `ConstantSparsity(target, begin_step=0,
  frequency=1)` per layer, TFMOT's mask update of the first training step (pruning step 1) made once without
  training, the weights masked, `strip_pruning`, and the weights written back into the model;
- polynomial, in the first train or distill stage after the prune stage (the fit whose plan has `ramp`): the
  fit trains a wrapped copy with `PolynomialDecay(0, target, begin_step=0, end_step=E, frequency=f)` per layer,
  the same cubic ramp as `sparsity.MaskRamp` (Zhu & Gupta) ending at its step (before the last epoch when
  there are several, so the best epoch is taken at full sparsity), rounded down to a multiple of
  f = end // RAMP_UPDATES; the copy is stripped when that fit ends (after its best-epoch restore, which
  restores the wrappers' masks and steps with the weights: only epochs after the ramp are candidates).
  Stripping at the end of the ramp is the one place: no later fit re-wraps (a new wrapper's schedule would
  start again from step 0).

After stripping, a TFMOT-pruned layer is held like any other by `keras_masks.KerasMasks` in later fits: a
fixed mask of its zeros as read from the weights. A layer's TFMOT target is the plan's count of zeroed
weights (blocks) over their number, so TFMOT's `round(size * (1 - target))` keeps exactly what
`sparsity.check` asks; a TFMOT layer whose zeros still miss the plan (ties at TFMOT's threshold) is zeroed
further by `sparsity.keep_mask`, which keeps every zero it has.

Pruning steps in a custom loop (TFMOT 0.8.1): the wrapper increments its own `pruning_step` in every call with
`training=True` and then updates its masks when the schedule says (`pruning_wrapper.PruneLowMagnitude.call`);
`pruning_callbacks.UpdatePruningStep` only sets the steps from -1 to 0 `on_train_begin` and re-masks the
weights `on_epoch_end` (an optimizer step moves masked weights, the next call masks them again). The fit calls
those two through the callback itself and calls the model with `training=True`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgecompress.entries import one_line
from edgecompress.errors import ModelError
from edgecompress.frameworks import keras_env
from edgecompress.frameworks.keras_layers import (
    canonical_weight,
    kernel_variable,
    set_canonical_weight,
    weight_layers,
)
from edgecompress.sparsity import RAMP_UPDATES, LayerPattern, MaskRamp, check, keep_mask

TFMOT = "tfmot"
MASKS = "masks"
#: Layer classes whose kernel TFMOT's registry prunes whole (`prune_registry`: ['kernel']).
_KERNEL_CLASSES = ("Dense", "Conv2D", "Conv2DTranspose")
_WRAPPER = "PruneLowMagnitude"


def choose_engines(model: Any, plan: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Per layer of `plan` (a prune stage's pattern plan on `model`): (engine, why) — "tfmot" where TFMOT can
    carry out the layer's pattern and schedule, "masks" with the reason where it cannot."""
    layers = weight_layers(model)
    out = {}
    for name, data in plan["layers"].items():
        why = _not_for_tfmot(layers[name][0], name, LayerPattern.from_json(data), plan["schedule"])
        out[name] = (MASKS, why) if why else (TFMOT, "")
    return out


def _not_for_tfmot(layer: Any, key: str, pattern: LayerPattern, schedule: str) -> str | None:
    kind = type(layer).__name__
    if kind == "DepthwiseConv2D":
        return "TFMOT prunes no weight of a DepthwiseConv2D (its prune_registry entry is empty)"
    if kind == "SeparableConv2D":
        return "TFMOT prunes only a SeparableConv2D's pointwise kernel; the plan has one entry per half"
    if kind not in _KERNEL_CLASSES:
        return f"TFMOT's registry does not prune {kind} kernels"
    shape = tuple(kernel_variable(layer, key)[0].shape)
    if pattern.kind == "kernel_pattern":
        return "kernel patterns are edgecompress's own"
    if pattern.kind == "block":
        if kind != "Dense":
            return f"TFMOT's block_size takes 2-D weights only; this kernel is {len(shape)}-D"
        if min(shape) == 1:
            return "TFMOT squeezes a kernel before pooling its blocks: one input or output loses an axis"
    if pattern.kind == "nm":
        if kind == "Conv2DTranspose":
            return "TFMOT's m-by-n groups would run along a Conv2DTranspose's outputs, not its inputs"
        if schedule == "polynomial":
            return "TFMOT makes m-by-n masks once, at the first step, whatever the schedule: no N:M ramp"
    if pattern.kind != "nm" and _target(pattern, shape) >= 1.0:
        return "the plan zeroes every weight of it; TFMOT keeps at least one"
    return None


def _target(pattern: LayerPattern, shape: tuple[int, ...]) -> float:
    """The plan's zeroed units (weights, or blocks of a Dense [in, out] kernel) over their number."""
    if pattern.kind == "block":
        r, c = pattern.block
        units = math.ceil(shape[0] / c) * math.ceil(shape[1] / r)
    else:
        units = math.prod(shape)
    return round(pattern.sparsity * units) / max(units, 1)


def _params(layer: Any, key: str, pattern: LayerPattern, schedule: Any) -> dict[str, Any]:
    """`prune_low_magnitude`'s arguments for one layer; `schedule(target)` makes its pruning schedule."""
    target = _target(pattern, tuple(kernel_variable(layer, key)[0].shape))
    params: dict[str, Any] = {"pruning_schedule": schedule(target)}
    if pattern.kind == "block":
        r, c = pattern.block
        params["block_size"] = (int(c), int(r))  # Keras [in, out]: c inputs high, r outputs wide
    elif pattern.kind == "nm":
        params["sparsity_m_by_n"] = (int(pattern.m - pattern.n), int(pattern.m))
    return params


def _tfmot_layers(plan: dict[str, Any]) -> list[str]:
    engines = plan.get("engines", {})
    return [n for n in plan["layers"] if engines.get(n) == TFMOT]


# ------------------------------------------------------------------------------------------ wrapped copies


class _Wrapped:
    """A copy of a model (fresh layers, the same weights) with TFMOT's wrappers around the layers of
    `params`; `rejected` holds the ones `prune_low_magnitude` refused, with its message."""

    def __init__(self, model: Any, params: dict[str, dict[str, Any]]) -> None:
        keras, tfmot = keras_env.keras(), keras_env.tfmot()
        self.rejected: dict[str, str] = {}

        def clone(layer: Any) -> Any:
            fresh = layer.__class__.from_config(layer.get_config())
            if layer.name not in params:
                return fresh
            try:
                return tfmot.sparsity.keras.prune_low_magnitude(fresh, **params[layer.name])
            except ValueError as exc:
                self.rejected[layer.name] = one_line(exc)
                return layer.__class__.from_config(layer.get_config())

        self.model = keras.models.clone_model(model, clone_function=clone)
        _copy_weights(model, self.model)
        self.wrappers = {
            layer.layer.name: layer for layer in self.model.layers if type(layer).__name__ == _WRAPPER
        }
        self.callback = tfmot.sparsity.keras.UpdatePruningStep()
        self.callback.set_model(self.model)
        self.callback.on_train_begin()  # pruning steps -1 -> 0

    def strip_into(self, model: Any) -> None:
        """The weights masked (the callback's `on_epoch_end`), the wrappers stripped (`strip_pruning`) and the
        plain model's weights written into `model`, the model this copy was made from."""
        self.callback.on_epoch_end(0)
        stripped = keras_env.tfmot().sparsity.keras.strip_pruning(self.model)
        _copy_weights(stripped, model)


def _inner_layers(model: Any) -> dict[str, Any]:
    """The model's layers by name, TFMOT's pruning wrappers replaced by the layers they wrap."""
    return {
        (inner := layer.layer if type(layer).__name__ == _WRAPPER else layer).name: inner
        for layer in model.layers
    }


def _copy_weights(source: Any, target: Any) -> None:
    """Every layer's weights from `source` into the layer of the same name in `target` (wrappers looked into:
    a wrapper's own masks and steps stay)."""
    found = _inner_layers(source)
    for name, layer in _inner_layers(target).items():
        if layer.weights:
            layer.set_weights(found[name].get_weights())


def _hold_plan(model: Any, plan: dict[str, Any], names: list[str]) -> list[str]:
    """The layers of `names` whose zeros miss the plan, zeroed further by `keep_mask` (every zero kept)."""
    layers = weight_layers(model)
    missed = []
    for name in names:
        layer, pattern = layers[name][0], LayerPattern.from_json(plan["layers"][name])
        weight = canonical_weight(layer, name)
        if not check(weight, pattern).holds:
            set_canonical_weight(layer, weight * keep_mask(weight, pattern), name)
            missed.append(name)
    return missed


# ------------------------------------------------------------------------------------------ the prune stage


def prune_stage(model: Any, plan: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The prune stage's TFMOT part on `model` (in place) for `plan`: each layer's (engine, why). Oneshot: the
    TFMOT layers are pruned here (see the module docstring); polynomial: they are wrapped once to see that
    TFMOT takes them (the next fit prunes them). A layer TFMOT rejects, or a wrapped copy that cannot be made,
    falls back to the masks with the reason."""
    engines = choose_engines(model, plan)
    names = [n for n, (e, _) in engines.items() if e == TFMOT]
    if not names:
        return engines
    tfmot = keras_env.tfmot().sparsity.keras
    layers = weight_layers(model)
    params = {
        n: _params(
            layers[n][0],
            n,
            LayerPattern.from_json(plan["layers"][n]),
            lambda t: tfmot.ConstantSparsity(t, begin_step=0, frequency=1),
        )
        for n in names
    }
    try:
        wrapped = _Wrapped(model, params)
    except Exception as exc:  # TFMOT could not wrap the model (a layer it builds badly): our masks for all
        why = f"TFMOT could not wrap the model: {one_line(exc)}"
        return {**engines, **{n: (MASKS, why) for n in names}}
    for name, message in wrapped.rejected.items():
        engines[name] = (MASKS, f"prune_low_magnitude rejected it: {message}")
    if plan["schedule"] != "oneshot":
        return engines
    for wrapper in wrapped.wrappers.values():
        wrapper.pruning_step.assign(1)  # what the first training call makes it, before its mask update
        wrapper.pruning_obj.conditional_mask_update()
    wrapped.strip_into(model)
    done = [n for n in names if n in wrapped.wrappers]
    for name in _hold_plan(model, plan, done):
        engines[name] = (MASKS, "TFMOT's zeros missed the plan (ties at its threshold): zeroed by the masks")
    return engines


# ------------------------------------------------------------------------------------------ a fit's ramp


class TfmotRamp:
    """TFMOT's part of the fit that ramps a polynomial plan: `model` is the wrapped copy the fit trains,
    `masks_plan` the plan of the layers `keras_masks.KerasMasks` ramps in the same fit; `epoch_end()` after
    every epoch, `settled(step)` as KerasMasks', `finish(model)` at the end."""

    def __init__(self, model: Any, plan: dict[str, Any], *, steps: int, steps_per_epoch: int) -> None:
        tfmot = keras_env.tfmot().sparsity.keras
        names = _tfmot_layers(plan)
        ramp_end = MaskRamp(plan, steps=steps, steps_per_epoch=steps_per_epoch).end
        frequency = max(ramp_end // RAMP_UPDATES, 1)
        self.end = frequency * (ramp_end // frequency)

        def schedule(target: float) -> Any:
            return tfmot.PolynomialDecay(0.0, target, begin_step=0, end_step=self.end, frequency=frequency)

        layers = weight_layers(model)
        gone = [n for n in names if n not in layers]
        if gone:
            raise ModelError(
                f"sparsity: the layer {gone[0]} of the prune stage's plan is not in the model any more"
            )
        params = {
            n: _params(layers[n][0], n, LayerPattern.from_json(plan["layers"][n]), schedule) for n in names
        }
        try:
            self._wrapped = _Wrapped(model, params)
        except Exception as exc:
            raise ModelError(f"sparsity: TFMOT could not wrap the model's layers: {one_line(exc)}") from exc
        if self._wrapped.rejected:
            name, message = next(iter(self._wrapped.rejected.items()))
            raise ModelError(f"sparsity: TFMOT rejected {name}, which the prune stage gave it: {message}")
        self.plan = plan
        self.names = names
        self.model = self._wrapped.model
        self.masks_plan = {**plan, "layers": {n: d for n, d in plan["layers"].items() if n not in names}}

    @classmethod
    def for_fit(
        cls, model: Any, plan: dict[str, Any], *, steps: int, steps_per_epoch: int
    ) -> TfmotRamp | None:
        """The ramp of a fit holding `plan` (None: the fit does not ramp, or TFMOT has no layer of it)."""
        if not plan.get("ramp") or not _tfmot_layers(plan):
            return None
        return cls(model, plan, steps=steps, steps_per_epoch=steps_per_epoch)

    def settled(self, step: int) -> bool:
        """Whether the TFMOT layers are at their full sparsity after `step` optimizer steps (TFMOT's update at
        pruning step s runs in the s-th step's forward pass)."""
        return step >= self.end

    def epoch_end(self) -> None:
        """The weights masked, as UpdatePruningStep does at the end of an epoch (before the validation)."""
        self._wrapped.callback.on_epoch_end(0)

    def finish(self, model: Any) -> tuple[Any, dict[str, float], list[str]]:
        """The wrapped copy stripped into `model` (the model the fit was given, returned): (model, each TFMOT
        layer's fraction of zeros in its wrapper's mask before stripping, the layers whose zeros missed the
        plan and were zeroed further by the masks)."""
        before = {
            n: float(1.0 - np.mean(self._wrapped.wrappers[n].pruning_vars[0][1].numpy())) for n in self.names
        }
        self._wrapped.strip_into(model)
        return model, before, _hold_plan(model, self.plan, self.names)
