"""Keras backend of `quantize`: TFMOT quantization-aware training, or post-training quantization by the TFLite
converter on the calibration split; both end as one int8 `.tflite` (float32 input and output).

- qat: `tfmot.quantization.keras.quantize_apply` wraps the layers in fake quantization (8-bit, weights per
  output channel, activations per tensor: the same scheme as the PyTorch path and TFLite's int8 kernels) and
  the model is fine-tuned through the adapter's loop, with distillation from the teacher when `distill`. A
  sparse model (after a pattern-sparsity stage) is quantized with TFMOT's prune-preserving scheme
  (`Default8BitPrunePreserveQuantizeScheme`), so its zero weights stay zero through QAT; the build reads them
  back from the exported files. The converter takes the learnt ranges.
- ptq: the float model converted with the calibration images as the converter's representative dataset.

Layers named by `keep_float` compute in float32 in the .tflite, with their float weights, between a DEQUANTIZE
and a QUANTIZE: TFMOT leaves them out of its annotation (QAT), and since the converter quantizes every layer of
an int8 model all the same (calibrated on the representative images), their ops are then rewritten in the
flatbuffer (`exporters/tflite_float_ops.float_layers`).

The result (`frameworks.keras.KerasQuantized`) holds the int8 .tflite; the int8 exports are that file (TFLite)
and OpenVINO's reading of it, so both runtimes run one quantized model with the same scales.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecompress.entries import one_line
from edgecompress.errors import ModelError, RecipeError
from edgecompress.exporters.conversion import native_stderr_captured
from edgecompress.frameworks import keras_env
from edgecompress.frameworks.keras import KerasQuantized
from edgecompress.frameworks.keras_convert import to_tflite
from edgecompress.stages.base import match_globs
from edgecompress.stages.quantize.stage import (
    ACTIVATION_SCHEME,
    WEIGHT_SCHEME,
    calibration_images,
    qat_fit_options,
)

if TYPE_CHECKING:
    from edgecompress.context import RunContext
    from edgecompress.stages.quantize.stage import QuantizeConfig


def quantize(model: Any, config: QuantizeConfig, ctx: RunContext) -> KerasQuantized:
    """Quantize `model` as `config` says (see the module docstring); sets `ctx.quantization` and records the
    mode, schemes, calibration images, layers kept float, int8 weight tensors and validation accuracy before
    and after in the run notes."""
    from edgecompress.exporters.tflite_int8 import weight_dtypes
    from edgecompress.sparsity import latest_plan

    if isinstance(model, KerasQuantized) or ctx.quantization is not None:
        raise RecipeError("quantize: the model is already quantized; give one 'quantize' stage")
    images = calibration_images(ctx, config.calibration_samples)
    float_layers = _keep_float(model, config)
    sparse = latest_plan(ctx.notes) is not None
    ctx.note("mode", config.mode)
    ctx.note("weights", WEIGHT_SCHEME)
    ctx.note("activations", ACTIVATION_SCHEME)
    ctx.note("calibration_samples", len(images))
    ctx.note("keep_float", list(float_layers))
    val_before = ctx.adapter.accuracy(model, ctx.data.val) if len(ctx.data.val) else float("nan")
    if config.mode == "qat":
        scheme = "TFMOT prune-preserving 8-bit QAT" if sparse else "TFMOT default 8-bit QAT"
        qat_model = _qat_model(model, float_layers, sparse=sparse)
        _observe(qat_model, images)
        qat_model = _fine_tune(qat_model, model, config, ctx)
        with (
            ctx.ui.progress("quantize: int8 conversion (TFLite converter)", total=1) as task,
            native_stderr_captured(ctx.ui),
        ):
            content = to_tflite(
                qat_model, ctx.input_shape, int8=True, calibration=images, full_integer=not float_layers
            )
            result = with_float_layers(KerasQuantized(qat_model, content, "qat", scheme, float_layers), ctx)
            task.advance()
    else:
        scheme = "TFLite converter post-training int8 (representative dataset: the calibration split)"
        with (
            ctx.ui.progress("quantize: int8 calibration and conversion (TFLite converter)", total=1) as task,
            native_stderr_captured(ctx.ui),
        ):
            content = to_tflite(
                model, ctx.input_shape, int8=True, calibration=images, full_integer=not float_layers
            )
            result = KerasQuantized(ctx.adapter.copy(model), content, "ptq", scheme, float_layers)
            result = with_float_layers(result, ctx)
            task.advance()
    weights = weight_dtypes(result.tflite)
    if not weights.get("INT8"):
        raise ModelError(
            f"quantize: the TFLite converter wrote no int8 weights (weight tensors: {weights or 'none'})"
        )
    ctx.quantization = result
    ctx.note("scheme", scheme)
    ctx.note("quantized_weight_ops", weights["INT8"])
    ctx.note("float_weight_ops", sum(weights.values()) - weights["INT8"])
    ctx.note("val_accuracy_float", round(val_before, 4))
    if len(ctx.data.val):
        ctx.note("val_accuracy_int8", round(ctx.adapter.accuracy(result, ctx.data.val), 4))
    return result


def with_float_layers(quantized: KerasQuantized, ctx: RunContext) -> KerasQuantized:
    """`quantized` with the ops of its `float_layers` computing in float32 with their float weights
    (`exporters.tflite_float_ops.float_layers`; the converter quantizes every layer of an int8 model, those
    TFMOT left unannotated too). The fp32 conversion it takes the weights from stays on the result."""
    if not quantized.float_layers:
        return quantized
    from edgecompress.exporters.tflite_float_ops import float_layers

    floated, _ = float_layers(
        quantized.tflite, quantized.float_tflite(ctx.input_shape), quantized.float_layers
    )
    return replace(quantized, tflite=floated)


def _keep_float(model: Any, config: QuantizeConfig) -> tuple[str, ...]:
    """The layers `keep_float` names (globs over layer names); RecipeError for a glob matching none."""
    names = [layer.name for layer in model.layers]
    return tuple(match_globs(config.keep_float, names, "quantize.keep_float", "layer of the model"))


def _qat_model(model: Any, float_layers: tuple[str, ...], *, sparse: bool) -> Any:
    """TFMOT's QAT model of `model`: every layer annotated but `float_layers`, the default 8-bit scheme (the
    prune-preserving one for a sparse model). ModelError naming the layer TFMOT rejects."""
    keras = keras_env.keras()
    tfmot = keras_env.tfmot()
    q = tfmot.quantization.keras
    if not isinstance(model, keras.Sequential) and not getattr(model, "_is_graph_network", False):
        raise ModelError(
            f"quantize: {type(model).__name__} is a subclassed Keras model; TFMOT's QAT needs a functional or "
            "Sequential model (rebuild it with the functional API), or use mode: ptq"
        )

    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_configs as configs,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry,
    )

    known = registry.Default8BitQuantizeRegistry()
    float_layers = _with_their_norms(model, float_layers)

    def annotate(layer: Any) -> Any:
        fresh = layer.__class__.from_config(layer.get_config())
        if layer.name in float_layers or isinstance(layer, keras.layers.InputLayer):
            return fresh
        if not layer.weights and (not known.supports(layer) or _unsupported_activation(layer, keras)):
            # a weightless layer TFMOT has no config for (Rescaling, Multiply of an SE gate or a hard swish):
            # its output quantized, as TFLite's int8 MUL / ADD kernels take it
            return q.quantize_annotate_layer(fresh, quantize_config=configs.Default8BitOutputQuantizeConfig())
        return q.quantize_annotate_layer(fresh)

    scope = {"Default8BitOutputQuantizeConfig": configs.Default8BitOutputQuantizeConfig}
    _names_past(model, ("conv2d", "depthwise_conv2d"))
    try:
        annotated = keras.models.clone_model(model, clone_function=annotate)
        annotated.set_weights(model.get_weights())
        if sparse:
            scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
            with q.quantize_scope(scope):
                return q.quantize_apply(annotated, scheme)
        with q.quantize_scope(scope):
            return q.quantize_apply(annotated)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ModelError(
            f"quantize: TFMOT cannot quantize this model: {one_line(exc)} — keep that layer float with "
            "quantize.keep_float: [<layer name>], or use mode: ptq"
        ) from exc


def _with_their_norms(model: Any, float_layers: tuple[str, ...]) -> tuple[str, ...]:
    """`float_layers` and the BatchNormalization after each (folded into its conv by the converter; TFMOT has
    no config for a batch norm alone, only for the conv + batch norm pair)."""
    from edgecompress.frameworks.keras_layers import graph

    if not float_layers:
        return float_layers
    extra = [
        node.name
        for node in graph(model)
        if node.kind == "BatchNormalization" and len(node.inputs) == 1 and node.inputs[0][0] in float_layers
    ]
    return tuple(dict.fromkeys([*float_layers, *extra]))


#: The activation functions TFMOT's Activation config quantizes (Default8BitActivationQuantizeConfig).
TFMOT_ACTIVATIONS = ("relu", "swish", "gelu", "linear", "softmax", "sigmoid", "tanh")


def _unsupported_activation(layer: Any, keras: Any) -> bool:
    """An Activation layer whose function TFMOT's Activation config refuses (hard_sigmoid, relu6, hard_silu,
    elu, ...): it is quantized at its output instead, as TFLite's int8 kernels take it."""
    name = getattr(getattr(layer, "activation", None), "__name__", "")
    return isinstance(layer, keras.layers.Activation) and name not in TFMOT_ACTIVATIONS


def _names_past(model: Any, prefixes: tuple[str, ...]) -> None:
    """Move Keras's layer-name counters past the model's own layer names: TFMOT's SeparableConv2D transform
    makes a DepthwiseConv2D and a Conv2D named by those counters ('conv2d', 'conv2d_1', ...), which clash with
    a model's layers of the same names (Keras 3's default names) and fail the QAT model's construction."""
    keras_env.keras()
    from tf_keras.src import backend  # get_default_graph_uid_map: what Layer() draws its names from

    counters = backend.get_default_graph_uid_map()
    names = {layer.name for layer in model.layers}
    for prefix in prefixes:
        taken = [
            int(found.group(1) or 0) for n in names if (found := re.fullmatch(rf"{prefix}(?:_(\d+))?", n))
        ]
        if taken:  # the next generated name is prefix_<count> ('conv2d' at 0), keyed (namespace, prefix)
            counters[("", prefix)] = max(counters[("", prefix)], max(taken) + 1)


def _observe(qat_model: Any, images: np.ndarray) -> None:
    """Activation ranges calibrated on the calibration images before QAT: TFMOT's moving-average quantizers
    start at [-6, 6] and move by 0.1% per training step (ema_decay 0.999), so a short QAT would train against
    ranges the activations never fill. Here each such quantizer's range becomes the min/max its tensor takes
    over the images (TFMOT's update called with decay 0, chunk by chunk, combined); BatchNorm's running
    statistics, which the training-mode passes move, are put back."""
    keras_env.tfmot()  # TensorFlow set up for tf_keras before TFMOT's module below is imported
    from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

    saved = [(v, v.numpy()) for v in qat_model.non_trainable_variables if "moving_" in v.name]
    original = quant_ops.MovingAvgQuantize
    seen: dict[int, Any] = {}

    def calibrating(inputs: Any, min_var: Any, max_var: Any, **kwargs: Any) -> Any:
        kwargs["ema_decay"] = 0.0  # the range of this chunk
        seen[id(min_var)], seen[id(max_var)] = min_var, max_var
        return original(inputs, min_var, max_var, **kwargs)

    low: dict[int, np.ndarray] = {}
    high: dict[int, np.ndarray] = {}
    quant_ops.MovingAvgQuantize = calibrating
    try:
        for start in range(0, len(images), 32):
            qat_model(images[start : start + 32], training=True)
            for key, var in seen.items():
                value = var.numpy()
                if var.name.endswith("_min:0"):
                    low[key] = np.minimum(low.get(key, value), value)
                else:
                    high[key] = np.maximum(high.get(key, value), value)
    finally:
        quant_ops.MovingAvgQuantize = original
    for key, value in {**low, **high}.items():
        seen[key].assign(value)
    for variable, value in saved:
        variable.assign(value)


def _fine_tune(qat_model: Any, float_model: Any, config: QuantizeConfig, ctx: RunContext) -> Any:
    """QAT through the adapter's loop, with distillation from the teacher when `config.distill`."""
    from edgecompress.sparsity import training_plan

    # a sparse model's zeros held exactly (the prune-preserving scheme keeps them in the fake-quantized
    # weights; these masks keep the float kernels the converter reads at zero too)
    plan = training_plan(ctx.notes, [s.type for s in ctx.recipe.stages], ctx.current_stage)
    options = qat_fit_options(config, ctx, float_model, sparsity=plan)
    return ctx.adapter.fit(qat_model, ctx.data, options, seed=ctx.seed, ui=ctx.ui)
