"""Small functional tf_keras models for the Keras example recipes and tests (NHWC inputs).

Like examples/models.py, every model has what makes channel pruning non-trivial: residual adds (coupled
channels), depthwise convolutions (in = out channels) and, in `quickstart_cnn`, a channel concatenation.
tf_keras is imported through edgecompress's Keras door inside each function, so importing this file
loads no TensorFlow.
"""

from __future__ import annotations

from typing import Any

#: PyTorch's BatchNorm defaults (running statistics move 10% per step; Keras's own default, 1%, leaves them
#: far from the data after the few epochs of a fine-tune), so the twins train alike.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def _keras() -> Any:
    from edgecompress.frameworks import keras_env

    return keras_env.keras()


def _conv_bn(
    x: Any, filters: int, kernel: int, name: str, *, stride: int = 1, act: str | None = "relu"
) -> Any:
    """Conv (no bias) -> BatchNorm (-> ReLU or ReLU6), layers named `name`_conv, _bn, _relu."""
    layers = _keras().layers
    x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    if act == "relu":
        x = layers.ReLU(name=f"{name}_relu")(x)
    elif act == "relu6":
        x = layers.ReLU(6.0, name=f"{name}_relu")(x)
    return x


def quickstart_cnn(num_classes: int = 10, input_shape: tuple[int, ...] = (32, 32, 1), width: int = 32) -> Any:
    """The Keras twin of examples/models.py:quickstart_cnn (SmallResNet), NHWC: stem 3x3 stride 2 -> basic
    block -> basic block (stride 2, twice as wide, 1x1 projection shortcut) -> mix block (depthwise 3x3 ->
    pointwise 1x1 to half the channels, concatenated with a 1x1 branch to the other half, added to the
    input) -> global average pool -> dense. Same layers, parameters and MACs as the torch model (8.8 M MACs,
    82 k parameters at width 32 on 32x32); "same" padding puts a stride-2 conv's extra row at the bottom."""
    keras = _keras()
    layers = keras.layers
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = _conv_bn(inputs, width, 3, "stem", stride=2)
    # layer1: BasicBlock(width, width)
    y = _conv_bn(x, width, 3, "layer1_conv1")
    y = _conv_bn(y, width, 3, "layer1_conv2", act=None)
    x = layers.ReLU(name="layer1_relu")(layers.Add(name="layer1_add")([y, x]))
    # layer2: BasicBlock(width, 2 * width, stride 2) with a projection shortcut
    y = _conv_bn(x, 2 * width, 3, "layer2_conv1", stride=2)
    y = _conv_bn(y, 2 * width, 3, "layer2_conv2", act=None)
    shortcut = _conv_bn(x, 2 * width, 1, "layer2_shortcut", stride=2, act=None)
    x = layers.ReLU(name="layer2_relu")(layers.Add(name="layer2_add")([y, shortcut]))
    # mix: cat(pointwise(depthwise(x)), branch(x)) + x
    half = width  # (2 * width) // 2
    d = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="mix_depthwise_conv")(x)
    d = layers.ReLU(name="mix_depthwise_relu")(
        layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name="mix_depthwise_bn")(d)
    )
    a = _conv_bn(d, half, 1, "mix_pointwise", act=None)
    b = _conv_bn(x, 2 * width - half, 1, "mix_branch", act=None)
    mixed = layers.Concatenate(name="mix_concat")([a, b])
    x = layers.ReLU(name="mix_relu")(layers.Add(name="mix_add")([mixed, x]))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, name="fc")(x)
    return keras.Model(inputs, outputs, name="quickstart_cnn")


def _inverted_residual(x: Any, cout: int, stride: int, expand: int, name: str) -> Any:
    """MobileNetV2 block: 1x1 expand -> BN -> ReLU6 -> depthwise 3x3 -> BN -> ReLU6 -> 1x1 project -> BN, plus
    the input when the shape is kept."""
    layers = _keras().layers
    cin = x.shape[-1]
    y = _conv_bn(x, cin * expand, 1, f"{name}_expand", act="relu6") if expand != 1 else x
    y = layers.DepthwiseConv2D(3, stride, padding="same", use_bias=False, name=f"{name}_dw_conv")(y)
    y = layers.ReLU(6.0, name=f"{name}_dw_relu")(
        layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_dw_bn")(y)
    )
    y = _conv_bn(y, cout, 1, f"{name}_project", act=None)
    if stride == 1 and cin == cout:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def mobilenetv2_digits(
    num_classes: int = 10, input_shape: tuple[int, ...] = (32, 32, 1), width: int = 16
) -> Any:
    """A MobileNetV2-style CNN for small digits: stem 3x3 (`width` channels) -> inverted residual blocks
    (expansion 4; widths width, 1.5x, 2x, 3x; two downsamplings; residual adds where the shape is kept) ->
    1x1 conv to 4x width -> global average pool -> dense. 7.2 M MACs and 63 k parameters at width 16 on
    32x32 (0.51 M and 19 k at width 8 on 16x16)."""
    keras = _keras()
    layers = keras.layers
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = _conv_bn(inputs, width, 3, "stem", act="relu6")
    settings = ((1, width, 1, 1), (4, width * 3 // 2, 2, 2), (4, 2 * width, 2, 2), (4, 3 * width, 2, 1))
    index = 0
    for expand, cout, repeats, stride in settings:
        for i in range(repeats):
            index += 1
            x = _inverted_residual(x, cout, stride if i == 0 else 1, expand, f"block{index}")
    x = _conv_bn(x, 4 * width, 1, "head", act="relu6")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name="mobilenetv2_digits")
