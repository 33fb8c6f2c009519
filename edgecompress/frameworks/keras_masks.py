"""Sparsity masks held through the Keras adapter's `fit`, as `torch_masks.py` holds them for PyTorch: a plan's
zeros stay exactly zero after every optimizer step, and a polynomial plan reaches its sparsity over the fit on
the schedule of `sparsity.MaskRamp`, an update never reviving a zero.

Masks are made in the canonical [out, in_per_group, kh, kw] layout the plan is defined in (the same
`sparsity.keep_mask` as PyTorch's), turned into the kernel's own Keras layout once per update, and applied
after each step by one multiply per kernel.

A plan's layers pruned by TFMOT (`keras_tfmot_prune.py`) are left out of the fit that ramps them (TFMOT's
wrappers do it); in every other fit they are held here like the rest: a fixed mask of their zeros as read from
the weights once TFMOT's wrappers are stripped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecompress.errors import ModelError
from edgecompress.frameworks.keras_layers import WRAPPERS, canonical_weight, keras_array, kernel_variable
from edgecompress.sparsity import LayerPattern, MaskRamp, keep_mask


def _layers_by_name(model: Any) -> dict[str, tuple[Any, Any]]:
    """The model's layers by name, each with the TFMOT QAT wrapper around it, which holds its kernel variable
    once wrapped (None when not wrapped)."""
    out = {}
    for layer in model.layers:
        inner, holder = layer, None
        while hasattr(inner, "layer") and type(inner).__name__ in WRAPPERS:
            holder, inner = inner, inner.layer
        out[inner.name] = (inner, holder)
    return out


class KerasMasks:
    """The masks of one fit. `after_step(step)` after every optimizer step; `settled(step)` says whether the
    weights are at the plan's full sparsity from then on."""

    def __init__(self, model: Any, plan: dict[str, Any], *, steps: int, steps_per_epoch: int) -> None:
        layers = _layers_by_name(model)
        self.layers: dict[str, tuple[tuple[Any, Any], LayerPattern]] = {}
        for name, data in plan["layers"].items():
            found = layers.get(name.partition("/")[0])  # a SeparableConv2D's 'name/depthwise'
            if found is None:
                raise ModelError(
                    f"sparsity: the layer {name} of the prune stage's plan is not in the model any more"
                )
            self.layers[name] = (found, LayerPattern.from_json(data))
        self.ramp = MaskRamp(plan, steps=steps, steps_per_epoch=steps_per_epoch)
        self.masks = {
            name: canonical_weight(layer, name, holder=holder) != 0
            for name, ((layer, holder), _) in self.layers.items()
        }
        self._placed: dict[str, Any] = {}
        self._place()

    def settled(self, step: int) -> bool:
        return self.ramp.settled(step)

    def after_step(self, step: int) -> None:
        """Update the masks when the ramp says so, then zero the masked weights."""
        fraction = self.ramp.fraction(step)
        if fraction is not None:
            for name, ((layer, holder), pattern) in self.layers.items():
                keep = keep_mask(canonical_weight(layer, name, holder=holder), pattern, fraction=fraction)
                self.masks[name] = self.masks[name] & keep
            self._place()
        for name, ((layer, holder), _) in self.layers.items():
            variable = kernel_variable(layer, name, holder)[0]
            variable.assign(variable * self._placed[name])

    def _place(self) -> None:
        self._placed = {
            name: keras_array(layer, self.masks[name].astype(np.float32), name, holder=holder)
            for name, ((layer, holder), _) in self.layers.items()
        }
