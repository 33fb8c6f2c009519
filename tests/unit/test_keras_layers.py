"""Graph facts of tf_keras models: parameters, MACs, the classifier, layer infos and canonical kernels."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edgecompress.errors import ModelError
from edgecompress.frameworks.keras_layers import (
    canonical_weight,
    canonical_weights,
    count_macs,
    count_params,
    find_classifier,
    layer_infos,
    set_canonical_weight,
    weight_layers,
)
from tests.conftest import needs_keras

pytestmark = needs_keras

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def examples(keras_examples):
    return keras_examples


@pytest.fixture(autouse=True)
def _seeded(keras) -> None:
    keras.utils.set_random_seed(0)


def every_kernel_model(keras):
    """Conv, batch norm, depthwise (multiplier 2), separable (stride 2), transposed conv, dense on a 4-D
    input, flatten and dense, on 8x8x3 inputs."""
    L = keras.layers
    x = inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same", name="conv")(x)
    x = L.BatchNormalization(name="bn")(x)
    x = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    x = L.SeparableConv2D(6, 3, strides=2, padding="same", name="sep")(x)
    x = L.Conv2DTranspose(5, 2, strides=2, name="up")(x)
    x = L.Dense(7, name="dense4d")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(3, name="fc")(x)
    return keras.Model(inputs, L.Softmax(name="probs")(x))


def test_params_and_macs_match_hand_counts(keras):
    model = every_kernel_model(keras)
    macs = {
        "conv": 3 * 3 * 3 * 4 * 64,
        "dw": 3 * 3 * 4 * 2 * 64,
        "sep": 3 * 3 * 8 * 16 + 8 * 6 * 16,  # depthwise at 4x4 + pointwise
        "up": 2 * 2 * 6 * 5 * 16,  # every input pixel scatters a 2x2x5 kernel
        "dense4d": 5 * 7 * 64,
        "fc": 8 * 8 * 7 * 3,
    }
    params = {"conv": 112, "bn": 8, "dw": 80, "sep": 72 + 48 + 6, "up": 125, "dense4d": 42, "fc": 448 * 3 + 3}
    assert count_macs(model, [1, 8, 8, 3]) == sum(macs.values())
    # batch-norm moving statistics are buffers in torch: not counted, so Keras and torch twins agree
    assert count_params(model) == sum(params.values()) == model.count_params() - 8
    infos = {i.name: i for i in layer_infos(model, [1, 8, 8, 3])}
    assert {n: i.macs for n, i in infos.items() if i.macs} == macs
    assert {n: i.params for n, i in infos.items()} == params


def test_macs_follow_the_given_input_shape_and_grouped_convs(keras):
    L = keras.layers
    inputs = keras.Input((None, None, 4))
    x = L.Conv2D(8, 1, groups=2, name="grouped")(inputs)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2, name="fc")(x))
    assert count_macs(model, [1, 6, 6, 4]) == 2 * 8 * 36 + 8 * 2
    assert count_macs(model, [1, 3, 3, 4]) == 2 * 8 * 9 + 8 * 2
    grouped = next(i for i in layer_infos(model, [1, 6, 6, 4]) if i.name == "grouped")
    assert grouped.kind == "Conv2D(grouped, groups=2)" and not grouped.prunable
    assert "grouped conv" in grouped.note


def test_sequential_models_without_an_input_are_built_from_the_shape(keras):
    L = keras.layers
    model = keras.Sequential([L.Conv2D(4, 3, name="c"), L.Flatten(), L.Dense(2, name="fc")])
    assert count_macs(model, [1, 5, 5, 1]) == 9 * 4 * 9 + 36 * 2
    assert find_classifier(model) == "fc"


def test_keras_quickstart_twin_has_the_torch_model_s_params_and_macs(examples):
    pytest.importorskip("torch")
    torch_models = _load("models.py")
    from edgecompress.frameworks.torch import count_macs as torch_macs
    from edgecompress.frameworks.torch import count_params as torch_params

    keras_model = examples.quickstart_cnn(input_shape=(16, 16, 1), width=8)
    torch_model = torch_models.quickstart_cnn(width=8)
    assert count_params(keras_model) == torch_params(torch_model)
    assert count_macs(keras_model, [1, 16, 16, 1]) == torch_macs(torch_model, [1, 1, 16, 16])


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name[:-3]}", EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_classifier_is_found_through_softmax_flatten_and_pooling(keras, examples):
    assert find_classifier(every_kernel_model(keras)) == "fc"
    assert find_classifier(examples.mobilenetv2_digits(input_shape=(16, 16, 1), width=8)) == "classifier"
    L = keras.layers
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(5, 1, name="head")(L.Conv2D(4, 3, name="body")(inputs))  # fully convolutional
    conv_model = keras.Model(inputs, L.Activation("softmax")(L.GlobalAveragePooling2D()(x)))
    assert find_classifier(conv_model) == "head"
    a, b = L.Dense(3, name="a")(L.Flatten()(inputs)), L.Dense(3, name="b")(L.Flatten()(inputs))
    assert find_classifier(keras.Model(inputs, L.Add()([a, b]))) is None


def test_layer_infos_say_what_is_prunable_and_why(examples):
    model = examples.mobilenetv2_digits(input_shape=(16, 16, 1), width=8)
    infos = {i.name: i for i in layer_infos(model, [1, 16, 16, 1])}
    assert (
        infos["classifier"].note == "classifier: its outputs are the classes"
        and not infos["classifier"].prunable
    )
    assert infos["block2_expand_conv"].prunable and infos["block2_expand_conv"].out_channels == 32
    assert infos["head_bn"].note == "channels follow head_conv"
    assert (
        infos["block2_expand_bn"].note == "coupled with block2_expand_conv, block2_dw_conv via depthwise conv"
    )
    assert infos["block2_dw_conv"].kind == "DepthwiseConv2D"
    assert "via depthwise conv" in infos["block2_dw_conv"].note
    assert (
        "block3_project_conv" in infos["block2_project_conv"].note
        and "residual add" in infos["block2_project_conv"].note
    )
    assert sum(i.macs for i in infos.values()) == count_macs(model, [1, 16, 16, 1])


# ------------------------------------------------------------------------------------------ canonical kernels


def test_weight_layers_in_graph_order_with_groups(keras):
    entries = {k: g for k, (_, g) in weight_layers(every_kernel_model(keras)).items()}
    assert list(entries) == ["conv", "dw", "sep/depthwise", "sep/pointwise", "up", "dense4d", "fc"]
    assert entries == {
        "conv": 1,
        "dw": 4,
        "sep/depthwise": 8,
        "sep/pointwise": 1,
        "up": 1,
        "dense4d": 1,
        "fc": 1,
    }


def test_canonical_layouts(keras):
    model = every_kernel_model(keras)
    weights = canonical_weights(model)
    assert {k: w.shape for k, w in weights.items()} == {
        "conv": (4, 3, 3, 3),
        "dw": (8, 1, 3, 3),
        "sep/depthwise": (8, 1, 3, 3),
        "sep/pointwise": (6, 8, 1, 1),
        "up": (5, 6, 2, 2),
        "dense4d": (7, 5, 1, 1),
        "fc": (3, 448, 1, 1),
    }
    conv = model.get_layer("conv").kernel.numpy()
    assert np.array_equal(weights["conv"][2, 1], conv[:, :, 1, 2])
    assert np.array_equal(weights["fc"][:, :, 0, 0], model.get_layer("fc").kernel.numpy().T)
    up = model.get_layer("up").kernel.numpy()  # [kh, kw, out, in]
    assert np.array_equal(weights["up"][4, 5], up[:, :, 4, 5])


def test_depthwise_canonical_order_is_tensorflow_s_output_order(keras):
    """Output channel k of a depthwise conv with multiplier m reads input channel k // m: canonical row k is
    that filter (checked by running the layer on an input with one channel lit)."""
    layer = keras.layers.DepthwiseConv2D(1, depth_multiplier=3, use_bias=False)
    layer.build((None, 1, 1, 4))
    layer.depthwise_kernel.assign(np.arange(1, 13, dtype=np.float32).reshape(1, 1, 4, 3))
    canonical = canonical_weight(layer)
    for c in range(4):
        x = np.zeros((1, 1, 1, 4), np.float32)
        x[..., c] = 1
        out = layer(x).numpy().reshape(-1)
        assert np.array_equal(out, canonical[:, 0, 0, 0] * (np.arange(12) // 3 == c))


@pytest.mark.parametrize("key", ["conv", "dw", "sep/depthwise", "sep/pointwise", "up", "dense4d", "fc"])
def test_canonical_round_trip(keras, key):
    model = every_kernel_model(keras)
    layer = weight_layers(model)[key][0]
    before = [w.copy() for w in layer.get_weights()]
    original = canonical_weight(layer, key)
    set_canonical_weight(layer, original, key)
    assert all(np.array_equal(a, b) for a, b in zip(before, layer.get_weights(), strict=True))
    changed = original.copy()
    changed[0] = 0
    set_canonical_weight(layer, changed, key)
    assert np.array_equal(canonical_weight(layer, key), changed)
    assert not np.array_equal(canonical_weight(layer, key), original)


def test_zeroing_a_canonical_filter_silences_its_output_channel(keras):
    model = every_kernel_model(keras)
    layer = model.get_layer("conv")
    w = canonical_weight(layer)
    w[1] = 0
    set_canonical_weight(layer, w)
    layer.bias.assign(np.zeros(4, np.float32))
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    out = keras.Model(model.input, layer.output)(x).numpy()
    assert np.all(out[..., 1] == 0) and np.all(np.abs(out[..., [0, 2, 3]]).sum((0, 1, 2)) > 0)


def test_canonical_weight_errors_name_the_layer(keras):
    model = every_kernel_model(keras)
    with pytest.raises(ModelError, match=r"'sep' .*sep/depthwise"):
        canonical_weight(model.get_layer("sep"))
    with pytest.raises(ModelError, match=r"layer 'conv'.*does not fit its kernel"):
        set_canonical_weight(model.get_layer("conv"), np.zeros((4, 3, 1, 1)))
    with pytest.raises(ModelError, match=r"'bn' .*no conv or dense kernel"):
        canonical_weight(model.get_layer("bn"))


def test_subclassed_models_are_explained(keras):
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3)
            self.pool = keras.layers.GlobalAveragePooling2D()
            self.fc = keras.layers.Dense(2)

        def call(self, x):
            return self.fc(self.pool(self.conv(x)))

    net = Net()
    net(np.zeros((1, 8, 8, 1), np.float32))
    with pytest.raises(ModelError, match=r"subclassed Keras model.*functional or Sequential"):
        count_macs(net, [1, 8, 8, 1])
    infos = layer_infos(net, [1, 8, 8, 1])
    assert {i.kind for i in infos} == {"Conv2D", "Dense"}
    assert all(not i.prunable and "subclassed" in i.note for i in infos)
