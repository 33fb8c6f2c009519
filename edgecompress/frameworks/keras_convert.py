"""Keras model -> `.tflite` with TensorFlow's converter, at a fixed batch-1 input (as every edgecompress
artifact has): float32, or int8 (a TFMOT QAT model's learnt ranges, or post-training calibration on images).

int8 models are full-integer inside (int8 weights per output channel, int8 activations per tensor, every op
an int8 kernel or the conversion fails) with a float32 input and output behind QUANTIZE/DEQUANTIZE ops, so
they are fed like the float ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from edgecompress.entries import one_line
from edgecompress.errors import ModelError
from edgecompress.frameworks import keras_env


def to_tflite(
    model: Any,
    input_shape: list[int],
    *,
    int8: bool = False,
    calibration: np.ndarray | None = None,
    full_integer: bool = True,
) -> bytes:
    """The model as `.tflite` bytes with a [1, ...] float32 input. `int8` with `calibration` images: PTQ of a
    float model (the converter's representative dataset; a QAT model keeps its learnt ranges, the images only
    cover tensors without one)."""
    tf = keras_env.tf()
    spec = tf.TensorSpec([1, *input_shape[1:]], tf.float32, name="input")
    function = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if calibration is not None:

            def representative() -> Iterator[list[np.ndarray]]:
                for image in np.ascontiguousarray(calibration, dtype=np.float32):
                    yield [image[None]]

            converter.representative_dataset = representative
        if full_integer:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        return bytes(converter.convert())
    except Exception as exc:
        what = "int8 conversion" if int8 else "conversion"
        hint = (
            " (an op without an int8 kernel: keep its layer float with quantize.keep_float)"
            if int8 and full_integer
            else ""
        )
        raise ModelError(f"TFLite {what} of the Keras model failed{hint}: {one_line(exc)}") from exc


def float_twin(model: Any) -> Any:
    """A float tf_keras model computing what TFMOT's QAT model `model` computes without its fake quantization:
    the wrapped layers unwrapped (their trained weights copied), TFMOT's QuantizeLayers as identities. A
    float model is returned as it is."""
    from edgecompress.frameworks.keras_layers import WRAPPERS, weight_role

    keras = keras_env.keras()
    inner: dict[str, Any] = {}

    def unwrap(layer: Any) -> Any:
        source = layer
        while type(source).__name__ in WRAPPERS and hasattr(source, "layer"):
            source = source.layer
        if type(source).__name__ == "QuantizeLayer":
            return keras.layers.Activation("linear", name=source.name)
        inner[source.name] = layer  # the wrapper holds the float variables (its layer's kernel attribute
        config = source.get_config()  # is the fake-quantized tensor once it has run)
        if "activation" in config:  # TFMOT's QuantizeAwareActivation around the original (NoOp: linear)
            act = getattr(source.activation, "activation", source.activation)
            plain = type(act).__name__ == "NoOpActivation"
            config["activation"] = "linear" if plain else keras.activations.serialize(act)
        return source.__class__.from_config(config)

    if not any(type(layer).__name__ in (*WRAPPERS, "QuantizeLayer") for layer in model.layers):
        return model
    twin = keras.models.clone_model(model, clone_function=unwrap)
    for layer in twin.layers:
        holder = inner.get(layer.name)
        if holder is not None and layer.weights:
            own = {weight_role(w): w for w in holder.weights if w.name.startswith(f"{layer.name}/")}
            layer.set_weights([own[weight_role(w)].numpy() for w in layer.weights])
    return twin
