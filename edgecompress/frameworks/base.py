"""The contract every framework adapter fulfils. The pipeline and stages talk to models only through it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from edgecompress.console import UI
    from edgecompress.data import DataBundle, Split
    from edgecompress.recipe import DataSpec, ModelSpec


@dataclass(frozen=True)
class ModelStats:
    params: int
    macs: int


@dataclass(frozen=True)
class LayerInfo:
    """One layer as `edgecompress inspect` shows it."""

    name: str
    kind: str  # e.g. "Conv2d(depthwise)", "Linear", "BatchNorm2d"
    params: int
    macs: int
    out_channels: int | None
    prunable: bool  # whether channel pruning can remove this layer's output channels
    note: str = ""  # why not, or what it is coupled with


@dataclass(frozen=True)
class FitOptions:
    """One training loop serves `train` and `distill`: teacher=None means plain supervised training."""

    epochs: int
    lr: float
    batch_size: int = 64
    optimizer: str = "adamw"  # adamw | sgd
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | constant
    label_smoothing: float = 0.0
    teacher: Any = None
    temperature: float = 4.0
    alpha: float = 0.9  # weight of the distillation term; (1 - alpha) on the hard-label loss
    keep_best: bool = True  # restore the weights with the best validation accuracy
    augment_shift: int = 0  # random translation of training images by up to this many pixels
    augment_hflip: bool = False  # random horizontal flips of training images
    description: str = "train"
    device: str = "auto"  # auto (cuda when available, else cpu) | cpu | cuda; the model comes back on the cpu
    channels_last: bool = False  # train image models in channels_last on CPU (see channels_last_hooks)
    #: Called as `on_epoch_start(epoch, model)` (epoch from 0) after the model is put in train mode, before
    #: the epoch's first batch; e.g. QAT freezes its observers there.
    on_epoch_start: Callable[[int, Any], None] | None = None
    #: A sparsity plan to hold (edgecompress.sparsity.training_plan): its layers' zero weights stay zero after
    #: every step, and with `ramp` the plan's sparsity is reached over this fit (polynomial schedule); the
    #: best epoch is only taken once the full sparsity is.
    sparsity: dict[str, Any] | None = None

    @property
    def augmenting(self) -> bool:
        """Whether training batches are augmented (and a teacher must be asked per batch)."""
        return self.augment_shift > 0 or self.augment_hflip


#: log() of probabilities is floored at this (models whose output is a softmax).
PROB_FLOOR = 1e-12


def accuracy_and_loss(
    outputs: np.ndarray, labels: np.ndarray, *, probabilities: bool = False
) -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy of `outputs` (logits, or with `probabilities` a softmax's output,
    floored at PROB_FLOOR before the log) against integer `labels`; (nan, nan) for an empty split. What every
    adapter's `fit` chooses its best epoch by."""
    if len(labels) == 0:
        return float("nan"), float("nan")
    out = np.asarray(outputs, dtype=np.float64)
    if probabilities:
        log_probs = np.log(np.maximum(out, PROB_FLOOR))
    else:
        shifted = out - out.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-log_probs[np.arange(len(labels)), labels].mean())
    return float((out.argmax(axis=1) == labels).mean()), loss


#: Training fields shared by the train, distill and quantize (QAT) stage configs.
SHARED_FIT_FIELDS = ("epochs", "lr", "optimizer", "weight_decay", "schedule", "keep_best", "device")


def fit_options(config: Any, *, data: DataSpec, description: str, **extra: Any) -> FitOptions:
    """FitOptions from a stage config's shared training fields, the recipe's data section (batch size,
    augmentation) and stage-specific `extra` ones."""
    common = {name: getattr(config, name) for name in SHARED_FIT_FIELDS}
    return FitOptions(
        **common,
        batch_size=data.batch_size,
        augment_shift=data.augment.shift,
        augment_hflip=data.augment.hflip,
        description=description,
        **extra,
    )


class FrameworkAdapter(Protocol):
    name: str
    #: The suffix of the file `save` writes (the build's `model<suffix>`), e.g. ".pt2", ".keras".
    model_suffix: str
    #: Training examples `fit` has processed so far (each epoch counts its images again): the run reports
    #: images/s per stage from it.
    trained_images: int = 0

    def load(self, spec: ModelSpec, recipe_path: Path) -> Any:
        """Build or load the model. ModelError/RecipeError naming the file on failure."""

    def weights(self, model: Any) -> dict[str, np.ndarray]:
        """Conv and linear (dense) weights by layer name, in the canonical [out, in_per_group, kh, kw] layout
        (edgecompress.sparsity.canonical): what a sparse artifact's file is checked against."""

    def check(self, model: Any, input_shape: list[int], num_classes: int) -> None:
        """Run one forward pass on zeros; ModelError if it fails or the output is not (batch, num_classes)."""

    def stats(self, model: Any, input_shape: list[int]) -> ModelStats: ...

    def layers(self, model: Any, input_shape: list[int]) -> list[LayerInfo]: ...

    def copy(self, model: Any) -> Any: ...

    def fit(self, model: Any, data: DataBundle, options: FitOptions, *, seed: int, ui: UI) -> Any:
        """Train in place and return the model (best-on-validation weights when options.keep_best)."""

    def predict(self, model: Any, x: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
        """Logits for a float32 array in the model's layout."""

    def accuracy(self, model: Any, split: Split) -> float:
        """Top-1 accuracy of `model` on a data split."""
        return float((self.predict(model, split.x).argmax(1) == split.y).mean())

    def latency_layers(self, model: Any, input_shape: list[int]) -> list[Any]:
        """The model's computing ops, each able to give the `OpGraph` the latency model measures."""

    def save(self, model: Any, path: Path, input_shape: list[int]) -> Path:
        """Write the model in the framework's own format (torch: torch.export .pt2); return the file."""

    def checkpoint_save(self, model: Any, path: Path) -> None:
        """Write the whole model object to `path` for a stage checkpoint (`build --resume`): a pruned model is
        no longer what its source builds, so weights alone cannot restore it. ModelError when this kind of
        model cannot be checkpointed."""

    def checkpoint_load(self, path: Path) -> Any:
        """The model `checkpoint_save` wrote. It may execute code (torch: a pickle): only for the build's own
        checkpoint files."""
