"""Sparsity masks held through `TorchAdapter.fit`: a plan's zeros stay exactly zero after every optimizer step,
and a polynomial plan reaches its sparsity over the fit (Zhu & Gupta 2017, cubic: s_t = s_f (1 - (1 - t/T)^3)).

The masks are re-applied to the weights after each step (exact whatever the optimizer's momentum or decay
does). Each layer ramps to its own sparsity in the plan (with global ranking, the shares the prune stage
allocated on the trained weights, so the files are checked against what the ramp reached), on the schedule
of `sparsity.MaskRamp`; an update never revives a zero (new mask AND old).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecompress.errors import ModelError
from edgecompress.sparsity import LayerPattern, MaskRamp, keep_mask


class TorchMasks:
    """The masks of one fit. `after_step(step)` after every optimizer step; `settled(step)` says whether the
    weights are at the plan's full sparsity from then on."""

    def __init__(self, model: Any, plan: dict[str, Any], *, steps: int, steps_per_epoch: int) -> None:
        import torch

        modules = dict(model.named_modules())
        self.layers: dict[str, tuple[Any, LayerPattern]] = {}
        for name, data in plan["layers"].items():
            module = modules.get(name)
            if module is None or not isinstance(getattr(module, "weight", None), torch.Tensor):
                raise ModelError(
                    f"sparsity: the layer {name} of the prune stage's plan is not in the model any more"
                )
            self.layers[name] = (module.weight, LayerPattern.from_json(data))
        self.ramp = MaskRamp(plan, steps=steps, steps_per_epoch=steps_per_epoch)
        self.masks = {name: (w.detach() != 0).cpu() for name, (w, _) in self.layers.items()}
        self._placed: dict[str, Any] = {}

    def settled(self, step: int) -> bool:
        return self.ramp.settled(step)

    def after_step(self, step: int) -> None:
        """Update the masks when the ramp says so, then zero the masked weights."""
        import torch

        fraction = self.ramp.fraction(step)
        if fraction is not None:
            self._update(fraction)
        with torch.no_grad():
            for name, (w, _) in self.layers.items():
                mask = self._placed.get(name)
                if mask is None or mask.device != w.device:
                    mask = self._placed[name] = self.masks[name].to(w.device, dtype=w.dtype)
                w.mul_(mask)

    def _update(self, fraction: float) -> None:
        import torch

        for name, (w, pattern) in self.layers.items():
            keep = keep_mask(w.detach().cpu().numpy(), pattern, fraction=fraction)
            self.masks[name] = self.masks[name] & torch.from_numpy(np.ascontiguousarray(keep))
        self._placed.clear()
