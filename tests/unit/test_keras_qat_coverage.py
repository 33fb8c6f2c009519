"""TFMOT's QAT on the modern blocks of Keras models: layers TFMOT has no QuantizeConfig for but which carry no
weights (an input Rescaling, a squeeze-excitation gate's Multiply, a hard swish built of Rescaling and
Multiply, as Keras 3 files and keras.applications write it, an Activation TFMOT's config refuses such as
hard_sigmoid) are quantized at their output instead of
failing the build, and the model converts to a full-integer int8 .tflite."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import needs_keras

pytestmark = needs_keras


def _modern(keras):
    L = keras.layers
    x = inputs = keras.Input((16, 16, 1))
    x = L.Rescaling(1 / 255.0, name="scale_in")(x)
    x = L.Conv2D(16, 3, padding="same", name="stem")(x)
    gate = L.Rescaling(1 / 6.0, offset=0.5, name="hsig")(L.ReLU(6.0, name="relu6")(x))
    x = L.Multiply(name="hswish")([x, gate])  # hard swish: x * relu6(x + 3) / 6 (shifted)
    se = L.GlobalAveragePooling2D(keepdims=True, name="se_pool")(x)
    se = L.Conv2D(4, 1, activation="relu", name="se_reduce")(se)
    se = L.Activation("hard_sigmoid", name="se_gate")(L.Conv2D(16, 1, name="se_expand")(se))
    x = L.Multiply(name="se_scale")([x, se])
    outputs = L.Dense(10, name="fc")(L.GlobalAveragePooling2D(name="pool")(x))
    return keras.Model(inputs, outputs)


def test_weightless_layers_without_a_tfmot_config_are_quantized_at_their_output(keras):
    from edgecompress.exporters.tflite_int8 import weight_dtypes
    from edgecompress.frameworks.keras_convert import to_tflite
    from edgecompress.stages.quantize.keras_backend import _observe, _qat_model

    model = _modern(keras)
    images = np.random.default_rng(0).random((32, 16, 16, 1), dtype=np.float32) * 255
    qat = _qat_model(model, (), sparse=False)
    wrapped = {layer.layer.name: type(layer).__name__ for layer in qat.layers if hasattr(layer, "layer")}
    for name in ("scale_in", "hsig", "hswish", "se_gate", "se_scale"):
        assert name in wrapped, name  # annotated, not left float
    _observe(qat, images)
    content = to_tflite(qat, [1, 16, 16, 1], int8=True, calibration=images)  # full integer: every op int8
    assert weight_dtypes(content).get("INT8") == 4  # stem, se_reduce, se_expand, fc
    reference = np.asarray(qat(images, training=False))
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    rows = []
    for image in images:
        it.set_tensor(inp["index"], image[None])
        it.invoke()
        rows.append(it.get_tensor(out["index"])[0].copy())
    assert (np.stack(rows).argmax(1) == reference.argmax(1)).mean() >= 0.9


def test_a_layer_with_weights_tfmot_cannot_quantize_is_named(keras):
    from edgecompress.errors import ModelError
    from edgecompress.stages.quantize.keras_backend import _qat_model

    L = keras.layers
    inputs = keras.Input((8, 8, 2))
    outputs = L.Dense(10)(L.Flatten()(L.LayerNormalization(name="norm")(inputs)))
    with pytest.raises(
        ModelError, match=r"TFMOT cannot quantize this model: .*Layer norm.*quantize\.keep_float"
    ):
        _qat_model(keras.Model(inputs, outputs), (), sparse=False)


def test_separable_convs_quantize_beside_layers_with_keras_default_names(keras):
    """TFMOT splits a SeparableConv2D into a DepthwiseConv2D and a Conv2D named by Keras's counters
    ('conv2d', ...); a model whose own layers carry those names (Keras 3's defaults) used to fail QAT."""
    from edgecompress.frameworks.keras_convert import to_tflite
    from edgecompress.stages.quantize.keras_backend import _observe, _qat_model

    L = keras.layers
    x = inputs = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, padding="same", name="conv2d")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="depthwise_conv2d")(x)
    x = L.SeparableConv2D(8, 3, padding="same", name="sep")(x)
    model = keras.Model(inputs, L.Dense(10, name="fc")(L.GlobalAveragePooling2D(name="pool")(x)))
    qat = _qat_model(model, (), sparse=False)
    images = np.random.default_rng(0).random((16, 16, 16, 3), dtype=np.float32)
    _observe(qat, images)
    assert to_tflite(qat, [1, 16, 16, 3], int8=True, calibration=images)
