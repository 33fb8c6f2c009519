"""The training loop of Keras models: supervised cross-entropy or Hinton distillation, the same loss, optimizer,
schedule, best-epoch rule and sparsity masks as the PyTorch adapter's `fit` (`frameworks/torch.py`).

A custom loop (tf.GradientTape inside a tf.function) rather than `model.fit`, so the distillation loss sees the
teacher's logits per batch, masks are applied after every optimizer step, and TFMOT's QAT models train through
the same code.

The fit that ramps a polynomial sparsity plan trains a copy of the model with TFMOT's pruning wrappers around
the plan's TFMOT layers (`keras_tfmot_prune.TfmotRamp`: the wrappers step themselves in the training calls, the
weights are re-masked at every epoch end as TFMOT's UpdatePruningStep callback does), stripped into the given
model when the fit ends; the plan's other layers ramp through `keras_masks.KerasMasks` in the same fit.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecompress.entries import one_line
from edgecompress.errors import ModelError
from edgecompress.frameworks import keras_env
from edgecompress.frameworks.base import PROB_FLOOR, accuracy_and_loss

if TYPE_CHECKING:
    from edgecompress.console import UI
    from edgecompress.data import DataBundle
    from edgecompress.frameworks.base import FitOptions


def ends_in_softmax(model: Any) -> bool:
    """Whether the model's output is a softmax (probabilities) rather than logits. Keras models often end so;
    the losses then take log(probabilities) as the logits (equal up to a constant per image, which softmax,
    cross-entropy and the distillation KL ignore)."""
    keras = keras_env.keras()
    layer = model.layers[-1] if getattr(model, "layers", None) else None
    while layer is not None and hasattr(layer, "layer") and not isinstance(layer, keras.Model):
        layer = layer.layer  # TFMOT wrappers (pruning, quantization) hold the layer they wrap
    if layer is None:
        return False
    if isinstance(layer, keras.layers.Softmax):
        return True
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "") == "softmax"


def augment_batch(x: np.ndarray, *, shift: int, hflip: bool, rng: np.random.Generator) -> np.ndarray:
    """An NHWC batch randomly translated by up to `shift` pixels each way (edge pixels repeated into the
    border) and, with `hflip`, randomly mirrored; one draw per image (the torch adapter's `augment_batch`)."""
    n, height, width = x.shape[:3]
    if hflip:
        flip = rng.random(n) < 0.5
        x = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
    if shift > 0:
        padded = np.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="edge")
        dy = rng.integers(0, 2 * shift + 1, n)
        dx = rng.integers(0, 2 * shift + 1, n)
        rows = (dy[:, None] + np.arange(height))[:, :, None]
        cols = (dx[:, None] + np.arange(width))[:, None, :]
        x = padded[np.arange(n)[:, None, None], rows, cols]
    return np.ascontiguousarray(x, dtype=np.float32)


def predict(model: Any, x: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """Float32 outputs of the model in inference mode, batch by batch."""
    arr = np.ascontiguousarray(x, dtype=np.float32)
    outs = [
        np.asarray(model(arr[i : i + batch_size], training=False), dtype=np.float32)
        for i in range(0, len(arr), batch_size)
    ]
    return np.concatenate(outs) if outs else np.zeros((0, 0), dtype=np.float32)


def fit(model: Any, data: DataBundle, options: FitOptions, *, seed: int, ui: UI, counter: list[int]) -> Any:
    """Train `model` in place (see the module docstring); `counter[0]` counts the training examples seen.

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, y); weight
    decay on kernels only (not biases or normalisation weights); a per-step cosine from `lr` to 0, or constant.
    Returns the model with the best-validation weights when `options.keep_best` (only among epochs at the
    plan's full sparsity)."""
    tf = keras_env.tf()
    keras = keras_env.keras()
    if not model.trainable_variables:
        raise ModelError(f"{options.description}: the model has no trainable weights")
    if data.train.x.ndim != 4 and options.augmenting:
        raise ModelError(
            f"{options.description}: data.augment needs image batches (4 dimensions); the training inputs have "
            f"shape {list(data.train.x.shape)}"
        )
    if data.layout != "NHWC" and data.train.x.ndim == 4:
        raise ModelError(
            f"{options.description}: Keras models take NHWC images; set data.layout: NHWC in the recipe"
        )
    tf.keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x, y = np.ascontiguousarray(data.train.x, dtype=np.float32), data.train.y.astype(np.int64)
    n, bs = len(y), options.batch_size
    steps_per_epoch = n // bs + (1 if n % bs > 1 else 0)
    steps = options.epochs * steps_per_epoch
    given, tfmot_ramp, masks_plan = model, None, options.sparsity
    if options.sparsity is not None:
        from edgecompress.frameworks.keras_tfmot_prune import TfmotRamp

        tfmot_ramp = TfmotRamp.for_fit(model, options.sparsity, steps=steps, steps_per_epoch=steps_per_epoch)
        if tfmot_ramp is not None:  # the wrapped copy trains; stripped into `given` at the end
            model, masks_plan = tfmot_ramp.model, tfmot_ramp.masks_plan
    if options.schedule == "cosine":
        lr: Any = keras.optimizers.schedules.CosineDecay(options.lr, decay_steps=max(steps, 1))
    else:
        lr = options.lr
    if options.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=lr, weight_decay=options.weight_decay)
    else:
        optimizer = keras.optimizers.SGD(
            learning_rate=lr, momentum=0.9, nesterov=True, weight_decay=options.weight_decay or None
        )
    variables = model.trainable_variables
    optimizer.exclude_from_weight_decay(var_list=[v for v in variables if len(v.shape) <= 1])
    student_softmax = ends_in_softmax(model)
    teacher = options.teacher
    teacher_softmax = teacher is not None and ends_in_softmax(teacher)
    temperature, alpha, smoothing = options.temperature, options.alpha, options.label_smoothing
    num_classes = int(data.num_classes)

    def logits_of(out: Any, softmax: bool) -> Any:
        return tf.math.log(tf.maximum(out, PROB_FLOOR)) if softmax else out

    @tf.function(reduce_retracing=True)
    def train_step(xb: Any, yb: Any, teacher_logits: Any) -> Any:
        with tf.GradientTape() as tape:
            logits = logits_of(model(xb, training=True), student_softmax)
            onehot = tf.one_hot(yb, num_classes)
            if smoothing:
                onehot = onehot * (1.0 - smoothing) + smoothing / num_classes
            loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(onehot, logits))
            if teacher is not None:
                soft = tf.nn.log_softmax(teacher_logits / temperature)
                kd = tf.reduce_mean(
                    tf.reduce_sum(tf.exp(soft) * (soft - tf.nn.log_softmax(logits / temperature)), axis=1)
                )
                loss = alpha * temperature**2 * kd + (1.0 - alpha) * loss
            loss += sum(model.losses) if model.losses else 0.0
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables, strict=True) if g is not None])
        return loss

    teacher_all = None
    if teacher is not None and not options.augmenting:  # fixed inputs: the teacher's targets once
        teacher_all = predict(teacher, x)
        if teacher_softmax:
            teacher_all = np.log(np.maximum(teacher_all, PROB_FLOOR))

    masks = None
    if masks_plan is not None:
        from edgecompress.frameworks.keras_masks import KerasMasks

        masks = KerasMasks(model, masks_plan, steps=steps, steps_per_epoch=steps_per_epoch)
    step = 0
    best_key: tuple[float, float] | None = None
    best_weights: list[np.ndarray] | None = None
    dummy = np.zeros((1, num_classes), dtype=np.float32)
    with ui.progress(options.description, total=options.epochs) as task:
        for epoch in range(options.epochs):
            if options.on_epoch_start is not None:
                options.on_epoch_start(epoch, model)
            order = rng.permutation(n)
            loss_sum, seen = 0.0, 0
            for start in range(0, n, bs):
                idx = order[start : start + bs]
                if len(idx) < 2 and start > 0:
                    break  # batch norm cannot train on a single example
                xb = x[idx]
                if options.augmenting:
                    xb = augment_batch(xb, shift=options.augment_shift, hflip=options.augment_hflip, rng=rng)
                if teacher is None:
                    targets = dummy
                elif teacher_all is not None:
                    targets = teacher_all[idx]
                else:  # the teacher sees the same augmented batch (consistent teaching)
                    targets = logits_of(teacher(xb, training=False), teacher_softmax)
                try:
                    loss = train_step(tf.constant(xb), tf.constant(y[idx]), tf.constant(targets))
                except (tf.errors.OpError, ValueError, TypeError) as exc:
                    raise ModelError(
                        f"{options.description}: a training step failed on a batch of shape {list(xb.shape)}: "
                        f"{one_line(exc)}"
                    ) from exc
                step += 1
                if masks is not None:
                    masks.after_step(step)
                loss_sum += float(loss) * len(idx)
                seen += len(idx)
                counter[0] += len(idx)
            if tfmot_ramp is not None:
                tfmot_ramp.epoch_end()
            val_acc, val_loss = accuracy_and_loss(
                predict(model, data.val.x) if len(data.val) else np.zeros((0, 0)),
                data.val.y,
                probabilities=student_softmax,
            )
            improved = best_key is None or (val_acc, -val_loss) > best_key
            settled = (masks is None or masks.settled(step)) and (
                tfmot_ramp is None or tfmot_ramp.settled(step)
            )
            if options.keep_best and not math.isnan(val_acc) and improved and settled:
                best_key = (val_acc, -val_loss)
                best_weights = model.get_weights()
            train_loss = loss_sum / max(seen, 1)
            ui.debug(
                f"{options.description} epoch {epoch + 1}/{options.epochs}: loss {train_loss:.4f}  "
                f"val_acc {val_acc:.4f}  val_loss {val_loss:.4f}"
            )
            task.advance(1, loss=train_loss, val_acc=val_acc)
    if best_weights is not None:  # a wrapped model's masks and pruning steps are among its weights
        model.set_weights(best_weights)
        ui.debug(f"{options.description}: kept the weights with the best val_acc {best_key[0]:.4f}")  # type: ignore[index]
    if tfmot_ramp is not None:
        model, masked, missed = tfmot_ramp.finish(given)
        ui.debug(
            f"{options.description}: TFMOT's wrappers stripped from {len(masked)} layers (masks at "
            + ", ".join(f"{n} {s:.1%}" for n, s in masked.items())
            + ")"
        )
        if missed:
            ui.warn(
                f"{options.description}: TFMOT's zeros missed the plan in {', '.join(missed)} (ties at its "
                "threshold); zeroed further to the plan"
            )
    return model
