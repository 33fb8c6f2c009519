"""Keras 3 `.keras` files brought over to tf_keras (edgecompress.frameworks.keras3_convert).

One child process (Keras 3, without TF_USE_LEGACY_KERAS) builds small seeded models on 16x16x1 inputs, saves
each as `<name>.keras` with its outputs on fixed inputs (`<name>.npz`); this process loads them as tf_keras
models and compares. Neither tf_keras nor Keras 3 is imported at collection: importing either here would
import TensorFlow before `keras_env` sets TF_USE_LEGACY_KERAS, and this process must never import Keras 3.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

from edgecompress.errors import ModelError

pytestmark = pytest.mark.skipif(
    find_spec("tf_keras") is None or find_spec("keras") is None, reason="needs tf_keras and Keras 3"
)

#: Run by a Keras 3 child: argv[1] is the output directory.
KERAS3_MODELS = r"""
import sys
from pathlib import Path

import keras
import numpy as np
from keras import layers as L

out = Path(sys.argv[1])
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(4, 16, 16, 1)).astype("float32")
np.save(out / "x.npy", x)


def inp():
    return keras.Input((16, 16, 1), name="image")


def conv_bn_relu(t, filters, name):
    t = L.Conv2D(filters, 3, padding="same", name=f"{name}_conv")(t)
    t = L.BatchNormalization(name=f"{name}_bn")(t)
    return L.ReLU(name=f"{name}_relu")(t)


@keras.saving.register_keras_serializable(package="my_pkg")
class MyBlock(L.Layer):
    def call(self, t):
        return t * 2.0


models = {}
models["sequential_cnn"] = keras.Sequential(
    [inp(), L.Conv2D(4, 3, name="conv"), L.BatchNormalization(name="bn"), L.ReLU(), L.MaxPooling2D(),
     L.Flatten(), L.Dense(3, name="logits")],
    name="sequential_cnn",
)

i = inp()
a = conv_bn_relu(i, 4, "stem")
b = L.BatchNormalization(name="block_bn")(L.Conv2D(4, 3, padding="same", use_bias=False, name="block_conv")(a))
t = L.ReLU(name="out_relu")(L.Add(name="residual")([a, b]))
models["residual"] = keras.Model(i, L.Dense(3)(L.GlobalAveragePooling2D()(t)))

i = inp()
t = conv_bn_relu(i, 8, "stem")
s = L.GlobalAveragePooling2D(keepdims=True, name="se_pool")(t)
s = L.Dense(2, activation="relu", name="se_reduce")(s)
s = L.Dense(8, activation="sigmoid", name="se_expand")(s)
t = L.Multiply(name="se_scale")([t, s])
models["se_block"] = keras.Model(i, L.Dense(3)(L.GlobalMaxPooling2D()(t)))

i = inp()
t = L.Rescaling(1 / 4.0, offset=-0.5)(i)
t = L.ZeroPadding2D(1)(L.Conv2D(4, 3, name="stem")(t))
d = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(t)
p = L.SeparableConv2D(8, 3, padding="same", name="sep")(t)
t = L.Concatenate(name="concat")([L.PReLU(name="prelu")(d), L.LeakyReLU(0.1)(p)])
t = L.Dropout(0.5)(L.AveragePooling2D(2)(t))
t = L.Reshape((8, 8 * 16))(t)
models["separable"] = keras.Model(i, L.Dense(3)(L.Flatten()(t)))

i = inp()
t = L.Conv2D(4, 3, padding="same", activation="hard_sigmoid", name="conv_hs")(i)
names = ["relu", "relu6", "sigmoid", "hard_sigmoid", "swish", "hard_swish", "softmax", "linear", "tanh", "gelu"]
models["activations"] = keras.Model(i, L.Concatenate()([L.Activation(n, name=f"act_{n}")(t) for n in names]))

i = keras.Input((8, 8, 4))
inner = keras.Model(i, conv_bn_relu(i, 4, "inner"), name="inner_block")
inner_seq = keras.Sequential([keras.Input((8, 8, 4)), L.Conv2D(4, 1, activation="hard_swish")], name="inner_seq")
i = inp()
t = L.Conv2D(4, 3, strides=2, padding="same", name="stem")(i)
shared = L.Conv2D(4, 1, name="shared")
t = L.Add()([shared(inner(inner(t))), shared(inner_seq(t))])
models["nested"] = keras.Model(i, [L.Flatten()(t), L.Dense(2)(L.GlobalAveragePooling2D()(t))])

i = inp()
t = L.Conv2D(4, 3, name="conv")(i)
h = L.ReLU(6.0)(t + 3.0) * (1.0 / 6.0)
models["operations"] = keras.Model(i, [t * h, 2.0 - t / 4.0, t - h])

for name, model in models.items():
    for v in model.weights:
        if "kernel" not in v.path:  # distinct BN statistics, biases and PReLU slopes: a swap shows
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
    model.save(out / f"{name}.keras")
    outputs = model(x, training=False)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    np.savez(out / f"{name}.npz", *[np.asarray(o) for o in outputs])

i = inp()
keras.Model(i, L.Flatten()(MyBlock(name="my_block")(L.Conv2D(2, 3)(i)))).save(out / "custom.keras")
keras.Model(i, keras.ops.sqrt(i)).save(out / "sqrt.keras")
models["sequential_cnn"].save(out / "keras3.h5")
"""

OUTPUT_MODELS = ["sequential_cnn", "residual", "se_block", "separable", "activations", "nested", "operations"]


@pytest.fixture(scope="module")
def keras3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory the Keras 3 child wrote its models, inputs and outputs to."""
    out = tmp_path_factory.mktemp("keras3")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    done = subprocess.run(
        [sys.executable, "-c", KERAS3_MODELS, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.parametrize("name", OUTPUT_MODELS)
def test_outputs_match_keras3(keras3_dir: Path, name: str) -> None:
    from edgecompress.frameworks import keras_env
    from edgecompress.frameworks.keras3_convert import load_keras3

    keras_loaded_before = "keras" in sys.modules
    model = load_keras3(keras3_dir / f"{name}.keras")
    assert isinstance(model, keras_env.keras().Model)
    outputs = model(np.load(keras3_dir / "x.npy"), training=False)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    with np.load(keras3_dir / f"{name}.npz") as saved:
        expected = [saved[key] for key in saved.files]
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected, strict=True):
        assert got.shape == want.shape
        assert float(np.max(np.abs(got.numpy() - want))) < 1e-5
    if not keras_loaded_before:
        assert "keras" not in sys.modules, "the converter imported Keras 3"


def test_layers_keep_their_names_and_kind(keras3_dir: Path) -> None:
    from edgecompress.frameworks import keras_env
    from edgecompress.frameworks.keras3_convert import load_keras3

    keras = keras_env.keras()
    sequential = load_keras3(keras3_dir / "sequential_cnn.keras")
    assert isinstance(sequential, keras.Sequential)
    assert [layer.name for layer in sequential.layers][:2] == ["conv", "bn"]
    assert sequential.get_layer("bn").moving_variance.numpy().min() >= 0.5
    residual = load_keras3(keras3_dir / "residual.keras")
    assert isinstance(residual.get_layer("residual"), keras.layers.Add)
    assert residual.get_layer("block_conv").bias is None
    operations = load_keras3(keras3_dir / "operations.keras")
    assert {type(layer).__name__ for layer in operations.layers} >= {"Rescaling", "Multiply", "Subtract"}


def test_hard_activations_become_standard_layers(keras3_dir: Path) -> None:
    """Keras 3's hard_sigmoid (relu6(x + 3) / 6) is not tf_keras's: it is rebuilt from standard layers."""
    from edgecompress.frameworks.keras3_convert import load_keras3

    model = load_keras3(keras3_dir / "activations.keras")
    assert model.get_layer("conv_hs").get_config()["activation"] == "linear"
    assert model.get_layer("conv_hs_hard_sigmoid").get_config()["max_value"] == 1.0
    assert type(model.get_layer("act_hard_swish_hard_silu")).__name__ == "Multiply"
    nested = load_keras3(keras3_dir / "nested.keras")  # a Sequential with hard_swish comes back functional
    assert type(nested.get_layer("inner_seq")).__name__ == "Functional"


def test_converted_model_saves_and_loads_with_tf_keras(keras3_dir: Path, tmp_path: Path) -> None:
    from edgecompress.frameworks import keras_env
    from edgecompress.frameworks.keras3_convert import keras_file_version, load_keras3

    keras = keras_env.keras()
    model = load_keras3(keras3_dir / "nested.keras")
    model.save(tmp_path / "nested_tf_keras.keras")
    assert keras_file_version(tmp_path / "nested_tf_keras.keras") == 2
    again = keras.models.load_model(tmp_path / "nested_tf_keras.keras", compile=False)
    x = np.load(keras3_dir / "x.npy")
    for got, want in zip(again(x), model(x), strict=True):
        assert np.array_equal(got.numpy(), want.numpy())


def test_custom_layer_is_refused_by_name(keras3_dir: Path) -> None:
    from edgecompress.frameworks.keras3_convert import load_keras3

    with pytest.raises(ModelError) as info:
        load_keras3(keras3_dir / "custom.keras")
    message = str(info.value)
    assert "custom.keras" in message
    assert "'my_block'" in message
    assert "`my_pkg>MyBlock`" in message
    assert "TF_USE_LEGACY_KERAS=1" in message
    assert "\n" not in message


def test_unsupported_operation_is_refused_by_name(keras3_dir: Path) -> None:
    from edgecompress.frameworks.keras3_convert import load_keras3

    with pytest.raises(ModelError, match=r"sqrt\.keras`: layer 'sqrt' is the Keras 3 operation `Sqrt`"):
        load_keras3(keras3_dir / "sqrt.keras")


def test_keras_file_version(keras3_dir: Path, tmp_path: Path) -> None:
    from edgecompress.frameworks import keras_env
    from edgecompress.frameworks.keras3_convert import keras_file_version, load_keras3

    keras = keras_env.keras()
    assert keras_file_version(keras3_dir / "sequential_cnn.keras") == 3
    assert keras_file_version(keras3_dir / "keras3.h5") == 3  # Keras 3 writing the legacy format
    tf_keras_model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    tf_keras_model.save(tmp_path / "m.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tf_keras calls .h5 legacy
        tf_keras_model.save(tmp_path / "m.h5")
    assert keras_file_version(tmp_path / "m.keras") == 2
    assert keras_file_version(tmp_path / "m.h5") == 2
    with pytest.raises(ModelError, match="saved by tf_keras"):
        load_keras3(tmp_path / "m.keras")
    with pytest.raises(ModelError, match=r"Keras 3 \.h5 file"):
        load_keras3(keras3_dir / "keras3.h5")
    with pytest.raises(ModelError, match=r"neither a \.keras archive nor an HDF5"):
        keras_file_version(keras3_dir / "x.npy")
    with pytest.raises(ModelError, match="no such file"):
        keras_file_version(tmp_path / "missing.keras")
