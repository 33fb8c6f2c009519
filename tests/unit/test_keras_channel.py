"""Keras channel pruning: dependency groups, a rebuild that is exact, the prune options, and bad inputs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgecompress.console import UI
from edgecompress.context import RunContext
from edgecompress.data import load_data
from edgecompress.errors import ModelError, RecipeError
from edgecompress.frameworks import keras_env
from edgecompress.frameworks.keras_layers import count_macs
from edgecompress.recipe import parse_recipe
from edgecompress.stages.prune.keras_channel import (
    channel_groups,
    out_channels,
    prune,
    rebuild,
    zeroed,
)
from edgecompress.stages.prune.stage import PruneConfig
from tests.conftest import needs_keras

pytestmark = needs_keras

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SHAPE = [1, 16, 16, 1]
RECIPE = (
    f"name: t\nmodel: {{source: '{EXAMPLES}/keras_models.py:mobilenetv2_digits', framework: keras, "
    f"input_shape: {SHAPE}}}\ndata: {{image_size: [16, 16], layout: NHWC, batch_size: 32}}\n"
)


@pytest.fixture(scope="module")
def L(keras):
    return keras.layers


@pytest.fixture(scope="module")
def examples(keras_examples):
    return keras_examples


@pytest.fixture(scope="module")
def digits():
    return load_data(parse_recipe(RECIPE).data, Path("recipe.yaml"), seed=0)


@pytest.fixture
def ctx(digits, tmp_path) -> RunContext:
    return RunContext(
        recipe=parse_recipe(RECIPE),
        recipe_path=tmp_path / "recipe.yaml",
        workdir=tmp_path,
        adapter=SimpleNamespace(name="keras"),
        data=digits,
        ui=UI(verbosity=0),
    )


@pytest.fixture(autouse=True)
def _seeded(keras) -> None:
    keras.utils.set_random_seed(0)


def notes(ctx: RunContext) -> dict:
    return ctx.notes[ctx.current_stage]


def groups(model) -> dict:
    return {g.name: g for g in channel_groups(model)}


def randomize_batch_norms(model, seed: int = 0) -> None:
    """Trained-looking batch norms (inference mode): their channels are no longer identities."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            c = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, c),
                    rng.uniform(-0.5, 0.5, c),
                    rng.uniform(-0.5, 0.5, c),
                    rng.uniform(0.5, 2, c),
                ]
            )


def residual_model(keras, L):
    """conv a -> bn -> relu -> conv b -> bn, plus a 1x1 shortcut conv s, added, pooled, dense."""
    inputs = keras.Input(SHAPE[1:], name="input")
    y = L.ReLU(name="a_relu")(
        L.BatchNormalization(name="a_bn")(L.Conv2D(6, 3, padding="same", name="a")(inputs))
    )
    y = L.BatchNormalization(name="b_bn")(L.Conv2D(6, 3, padding="same", name="b")(y))
    s = L.BatchNormalization(name="s_bn")(L.Conv2D(6, 1, name="s")(inputs))
    x = L.ReLU(name="relu")(L.Add(name="add")([y, s]))
    return keras.Model(inputs, L.Dense(10, name="fc")(L.GlobalAveragePooling2D(name="pool")(x)))


def kitchen_sink(keras, L):
    """Every layer the rebuild knows: residual add, SE gate, concatenation, depthwise (multiplier 2),
    separable and transposed convs, PReLU, Flatten -> Dense, a (1, 1, C) Reshape."""
    inputs = keras.Input((8, 8, 2), name="input")
    x = L.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = L.PReLU(name="stem_prelu")(L.BatchNormalization(name="stem_bn")(x))
    d = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    d = L.LeakyReLU(name="dw_leaky")(L.BatchNormalization(name="dw_bn")(d))
    y = L.Conv2D(8, 1, name="project")(L.Dropout(0.1, name="drop")(d))
    x = L.Add(name="add")([x, L.BatchNormalization(name="project_bn")(y)])
    squeeze = L.GlobalAveragePooling2D(name="se_pool")(x)
    gate = L.Dense(8, activation="hard_sigmoid", name="se_expand")(
        L.Dense(4, activation="relu", name="se_reduce")(squeeze)
    )
    x = L.Multiply(name="se_scale")([x, L.Reshape((1, 1, 8), name="se_reshape")(gate)])
    a = L.SeparableConv2D(6, 3, padding="same", name="sep")(x)
    b = L.Conv2D(5, 1, name="branch")(L.ZeroPadding2D(1, name="pad")(x))
    b = L.MaxPooling2D(3, 1, name="pool")(b)
    c = L.Concatenate(name="concat")([a, b])
    c = L.Conv2DTranspose(6, 2, strides=2, name="up")(L.AveragePooling2D(2, name="down")(c))
    c = L.Conv2D(4, 3, strides=2, padding="same", name="tail")(c)
    outputs = L.Dense(3, name="fc")(L.Flatten(name="flat")(L.ReLU(6.0, name="relu6")(c)))
    return keras.Model(inputs, outputs)


# --------------------------------------------------------------------------------------------------- groups


def test_residual_add_couples_both_branches(keras, L):
    found = groups(residual_model(keras, L))
    assert set(found) == {"input", "a", "s", "fc"}  # a group is named by the layer that made it first
    assert found["a"].prunable and found["a"].producers == ("a",) and found["a"].width == 6
    assert set(found["s"].producers) == {"b", "s"} and found["s"].coupling == ("residual add",)
    assert {"b_bn", "s_bn", "add", "relu", "pool", "fc"} <= set(found["s"].members)
    assert not found["fc"].prunable and found["fc"].reason == "reaches the model output"
    assert not found["input"].prunable


def test_se_gate_couples_the_gate_with_the_features(keras, L):
    found = groups(kitchen_sink(keras, L))
    assert found["stem"].producers == ("stem", "project", "se_expand")
    assert {"residual add", "SE gate", "depthwise conv"} <= set(found["stem"].coupling)
    assert found["stem"].width == 8
    assert found["se_reduce"].prunable and found["se_reduce"].width == 4


def test_concatenated_inputs_keep_their_own_groups(keras, L):
    found = groups(kitchen_sink(keras, L))
    assert found["sep"].width == 6 and found["branch"].width == 5
    assert found["sep"].producers == ("sep",) and found["branch"].producers == ("branch",)
    assert "up" in found["sep"].members and "up" in found["branch"].members  # sliced at their offsets
    assert found["tail"].prunable and "fc" in found["tail"].members  # through Flatten


def test_inverted_residual_groups(examples):
    found = groups(examples.mobilenetv2_digits(input_shape=SHAPE[1:], width=8))
    expand = found["block2_expand_conv"]
    assert expand.producers == ("block2_expand_conv",) and expand.coupling == ("depthwise conv",)
    assert {"block2_expand_bn", "block2_dw_conv", "block2_dw_bn", "block2_project_conv"} <= set(
        expand.members
    )
    project = found["block2_project_conv"]
    assert project.producers == ("block2_project_conv", "block3_project_conv")
    assert "block3_add" in project.members and "residual add" in project.coupling
    assert all(g.prunable for n, g in found.items() if n not in ("input", "classifier"))


# ---------------------------------------------------------------------------------------------------- rebuild


def test_rebuild_keeping_everything_gives_identical_outputs(keras, L, examples):
    for model in (kitchen_sink(keras, L), examples.mobilenetv2_digits(input_shape=SHAPE[1:], width=8)):
        randomize_batch_norms(model)
        x = np.random.default_rng(1).normal(size=(3, *model.input_shape[1:])).astype(np.float32)
        copy = rebuild(model, {})
        assert copy is not model and out_channels(copy) == out_channels(model)
        assert np.array_equal(copy(x).numpy(), model(x).numpy())


def test_rebuild_equals_the_original_with_removed_channels_zeroed(keras, L):
    model = kitchen_sink(keras, L)
    randomize_batch_norms(model)
    rng = np.random.default_rng(2)
    keep = {
        g.name: np.sort(rng.choice(g.width, max(1, g.width // 2), replace=False))
        for g in channel_groups(model)
        if g.prunable
    }
    pruned = rebuild(model, keep)
    assert out_channels(pruned) == {
        "stem": 4, "dw": 8, "project": 4, "se_reduce": 2, "se_expand": 4, "sep": 3, "branch": 2,
        "up": 3, "tail": 2, "fc": 3,
    }  # fmt: skip
    assert pruned.get_layer("stem_prelu").get_weights()[0].shape == (8, 8, 4)
    assert pruned.get_layer("se_reshape").target_shape == (1, 1, 4)
    assert pruned.get_layer("fc").kernel.shape == (4 * 4 * 2, 3)
    x = rng.normal(size=(4, 8, 8, 2)).astype(np.float32)
    masked = zeroed(model, keep)(x).numpy()
    assert np.abs(masked - model(x).numpy()).max() > 1e-2  # the removal matters
    np.testing.assert_allclose(pruned(x).numpy(), masked, atol=1e-5)


def test_tensorflow_element_wise_ops_keep_channels(keras, L):
    """A hand-written hardswish (TFOpLambda layers: add, relu6, multiply, divide) and a gate multiplied in
    with `*` pass channels through or couple them like Multiply; a per-channel constant freezes them."""
    tf = keras_env.tf()
    inputs = keras.Input((8, 8, 2))
    x = L.Conv2D(6, 3, padding="same", name="a")(inputs)
    x = x * tf.nn.relu6(x + 3.0) / 6.0
    gate = L.Dense(6, activation="sigmoid", name="gate")(L.GlobalAveragePooling2D()(x))
    x = x * L.Reshape((1, 1, 6))(gate)
    y = L.Conv2D(4, 1, name="b")(x) * tf.constant(np.arange(4, dtype=np.float32))
    model = keras.Model(inputs, L.Dense(3, name="fc")(L.Flatten()(L.Conv2D(5, 1, name="c")(y))))
    found = groups(model)
    assert found["a"].prunable and found["a"].producers == ("a", "gate") and "SE gate" in found["a"].coupling
    assert not found["b"].prunable and "tf.math.multiply" in found["b"].reason
    keep = {"a": np.array([0, 2, 5]), "c": np.array([1, 3])}
    x = np.random.default_rng(4).normal(size=(2, 8, 8, 2)).astype(np.float32)
    pruned = rebuild(model, keep)
    assert out_channels(pruned) == {"a": 3, "gate": 3, "b": 4, "c": 2, "fc": 3}
    np.testing.assert_allclose(pruned(x).numpy(), zeroed(model, keep)(x).numpy(), atol=1e-5)


def test_every_side_of_a_concatenation_keeps_a_channel(examples, ctx):
    """The residual stream of the mix block is one group written by two concatenated convs: a deep cut keeps
    one channel of each (a conv without filters cannot be built)."""
    model = examples.quickstart_cnn(input_shape=SHAPE[1:], width=4)
    pruned = prune(model, PruneConfig(ratio=0.9), ctx)
    widths = out_channels(pruned)
    assert widths["mix_pointwise_conv"] >= 1 and widths["mix_branch_conv"] >= 1
    assert widths["layer2_conv2_conv"] == widths["mix_pointwise_conv"] + widths["mix_branch_conv"]
    with pytest.raises(ModelError, match=r"leaves layer 'mix_(pointwise|branch)_conv' without filters"):
        rebuild(model, {groups(model)["layer2_shortcut_conv"].name: [0, 1]})


def kill(model, layer: str, channels: list[int], *, conv: bool = True) -> None:
    """Zero a conv's filters and its batch norm's gamma and beta: those channels are zero everywhere."""
    if conv:
        w = model.get_layer(layer).kernel.numpy()
        w[..., channels] = 0
        model.get_layer(layer).kernel.assign(w)
    bn = model.get_layer(f"{layer}_bn")
    gamma, beta, mean, var = bn.get_weights()
    gamma[channels], beta[channels] = 0, 0
    bn.set_weights([gamma, beta, mean, var])


@pytest.mark.parametrize("criterion", ["l1", "l2", "taylor", "bn_scale"])
def test_dead_channels_go_first_and_change_nothing(keras, L, ctx, criterion):
    model = residual_model(keras, L)
    randomize_batch_norms(model)
    conv = criterion != "bn_scale"
    kill(model, "a", [2], conv=conv)
    for layer in ("b", "s"):  # one channel of the residual stream
        kill(model, layer, [4], conv=conv)
    x = np.random.default_rng(3).normal(size=(4, *SHAPE[1:])).astype(np.float32)
    pruned = prune(model, PruneConfig(ratio=1 / 6, criterion=criterion), ctx)
    assert out_channels(pruned) == {"a": 5, "b": 5, "s": 5, "fc": 10}
    np.testing.assert_allclose(pruned(x).numpy(), model(x).numpy(), atol=1e-5)


# ------------------------------------------------------------------------------------------------------ prune


def test_ratio_halves_mobilenet_macs_and_notes_what_torch_notes(examples, ctx):
    model = examples.mobilenetv2_digits(input_shape=SHAPE[1:], width=8)
    pruned = prune(model, PruneConfig(ratio=0.5), ctx)
    n = notes(ctx)
    assert n["macs_kept"] <= 0.5 and n["macs_after"] == count_macs(pruned, SHAPE)
    assert set(n) == {
        "criterion", "global_ranking", "ratio", "ignored", "params_before", "params_after", "macs_before",
        "macs_after", "macs_kept", "params_kept", "channels", "unchanged",
    }  # fmt: skip
    assert n["channels"]["block2_expand_conv"] == [32, 16] and n["channels"]["block2_dw_conv"] == [32, 16]
    assert n["ignored"] == ["classifier"] and n["unchanged"] == []
    assert pruned(np.zeros(SHAPE, np.float32)).shape == (1, 10)


def test_round_to_keeps_multiples_and_never_less_than_one(examples, ctx):
    model = examples.mobilenetv2_digits(input_shape=SHAPE[1:], width=8)
    prune(model, PruneConfig(ratio=0.6, round_to=8), ctx)
    after = {name: a for name, (_, a) in notes(ctx)["channels"].items()}
    assert after and all(a % 8 == 0 for a in after.values())
    assert "stem_conv" not in after  # 8 wide: never below one round_to step
    assert after["block2_project_conv"] == 8  # 12 wide, 4 kept at 0.6: raised to one step


@pytest.mark.parametrize(("key", "target"), [("macs_target", 0.5), ("params_target", 0.4)])
def test_targets_are_met(examples, ctx, key, target):
    model = examples.quickstart_cnn(input_shape=SHAPE[1:], width=16)
    prune(model, PruneConfig(**{key: target}), ctx)
    kept = notes(ctx)["macs_kept" if key == "macs_target" else "params_kept"]
    assert target - 0.05 < kept <= target


def test_global_ranking_respects_max_layer_ratio(examples, ctx):
    model = examples.mobilenetv2_digits(input_shape=SHAPE[1:], width=8)
    before = out_channels(model)
    prune(model, PruneConfig(ratio=0.4, global_ranking=True, max_layer_ratio=0.5), ctx)
    changed = notes(ctx)["channels"]
    assert changed and all(a >= b // 2 for b, a in changed.values())
    assert len({round(a / b, 2) for b, a in changed.values()}) > 1  # not uniform
    assert sum(a for _, a in changed.values()) < 0.7 * sum(before[n] for n in changed)


def test_layer_ratios_ignore_and_iterative_steps(examples, ctx):
    model = examples.mobilenetv2_digits(input_shape=SHAPE[1:], width=8)
    config = PruneConfig(ratio=0.25, layer_ratios={"block2_*": 0.75}, ignore=["head_*"], iterative_steps=3)
    prune(model, config, ctx)
    n = notes(ctx)
    assert n["channels"]["block2_expand_conv"] == [32, 8] and n["channels"]["block3_expand_conv"] == [48, 36]
    assert "head_conv" not in n["channels"] and n["ignored"] == [
        "head_conv",
        "head_bn",
        "head_relu",
        "classifier",
    ]


def test_sequential_models_are_pruned(keras, L, ctx):
    model = keras.Sequential(
        [
            L.Conv2D(8, 3, name="c1"),
            L.BatchNormalization(),
            L.ReLU(),
            L.Conv2D(8, 3, name="c2"),
            L.Flatten(),
            L.Dense(10),
        ]
    )
    pruned = prune(model, PruneConfig(ratio=0.5), ctx)
    assert out_channels(pruned)["c1"] == 4 and out_channels(pruned)["c2"] == 4
    assert pruned.get_layer(model.layers[-1].name).kernel.shape == (12 * 12 * 4, 10)


# ------------------------------------------------------------------------------------------------- bad inputs


def test_subclassed_models_are_refused(keras, ctx):
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = keras.layers.Conv2D(4, 3), keras.layers.Dense(10)

        def call(self, x):
            return self.fc(keras.layers.Flatten()(self.conv(x)))

    net = Net()
    net(np.zeros(SHAPE, np.float32))
    with pytest.raises(ModelError, match=r"subclassed Keras model .*functional or Sequential model"):
        prune(net, PruneConfig(ratio=0.5), ctx)


def test_unknown_layers_are_named_and_can_be_ignored(keras, L, ctx):
    inputs = keras.Input(SHAPE[1:])
    x = L.LayerNormalization(name="norm")(L.Conv2D(6, 3, name="a")(inputs))
    x = L.Conv2D(6, 3, name="b")(x)
    model = keras.Model(inputs, L.Dense(10, name="fc")(L.Flatten()(x)))
    with pytest.raises(
        ModelError,
        match=r"layer 'norm' \(LayerNormalization\) is a layer the channel rebuild does not know; "
        r"add 'norm' to prune.ignore",
    ):
        prune(model, PruneConfig(ratio=0.5), ctx)
    pruned = prune(model, PruneConfig(ratio=0.5, ignore=["norm"]), ctx)
    assert out_channels(pruned) == {"a": 6, "b": 3, "fc": 10}
    assert notes(ctx)["unchanged"] == ["a"]


def test_custom_layers_are_named_unless_their_channels_stay(keras, L, ctx):
    class Double(keras.layers.Layer):
        def call(self, x):
            return 2.0 * x

    inputs = keras.Input(SHAPE[1:])
    x = Double(name="double")(L.Conv2D(6, 3, name="a")(inputs))
    x = L.Conv2D(6, 3, name="b")(x)
    model = keras.Model(inputs, Double(name="out_double")(L.Dense(10, name="fc")(L.Flatten()(x))))
    with pytest.raises(ModelError, match=r"layer 'double' \(Double\) runs custom code.*prune.ignore"):
        prune(model, PruneConfig(ratio=0.5), ctx)
    pruned = prune(
        model, PruneConfig(ratio=0.5, ignore=["double"]), ctx
    )  # out_double touches no pruned group
    x = np.random.default_rng(0).normal(size=(2, *SHAPE[1:])).astype(np.float32)
    assert out_channels(pruned) == {"a": 6, "b": 3, "fc": 10} and pruned(x).shape == (2, 10)


def test_shared_layers_are_refused(keras, L, ctx):
    inputs = keras.Input(SHAPE[1:])
    conv = L.Conv2D(1, 3, padding="same", name="shared")
    x = conv(conv(inputs))
    model = keras.Model(inputs, L.Dense(10)(L.Flatten()(x)))
    with pytest.raises(ModelError, match=r"layer 'shared' .*called 2 times.*shared layer"):
        prune(model, PruneConfig(ratio=0.5), ctx)


@pytest.mark.parametrize(
    ("config", "error", "message"),
    [
        ({"ratio": 0.5, "ignore": ["nope*"]}, RecipeError, "prune.ignore: 'nope\\*' matches no layer"),
        (
            {"layer_ratios": {"nope*": 0.5}},
            RecipeError,
            "prune.layer_ratios: 'nope\\*' matches no conv or dense",
        ),
    ],
)
def test_recipe_errors(keras, L, ctx, config, error, message):
    with pytest.raises(error, match=message):
        prune(residual_model(keras, L), PruneConfig(**config), ctx)


@pytest.mark.parametrize(
    ("config", "key", "message"),
    [
        ({"method": "precrop", "macs_target": 0.5}, "method", "precrop is not available for keras models"),
    ],
)
def test_what_keras_lacks_is_found_by_validation(config, key, message):
    from edgecompress.stages.prune.stage import PruneStage

    found = PruneStage(PruneConfig(**config)).unsupported("keras")
    assert found is not None and found[0] == key and message in found[1]
    assert PruneStage(PruneConfig(**config)).unsupported("torch") is None


def test_bn_scale_needs_batch_norms(keras, L, ctx):
    inputs = keras.Input(SHAPE[1:])
    model = keras.Model(inputs, L.Dense(10)(L.Flatten()(L.Conv2D(4, 3, name="a")(inputs))))
    with pytest.raises(ModelError, match=r"criterion bn_scale .*no BatchNormalization"):
        prune(model, PruneConfig(ratio=0.5, criterion="bn_scale"), ctx)


def test_rebuild_refuses_a_keep_it_cannot_honour(keras, L):
    model = residual_model(keras, L)
    with pytest.raises(ModelError, match="no channel group is named 'zzz'"):
        rebuild(model, {"zzz": [0]})
    with pytest.raises(ModelError, match="group 'a' keeps \\[\\]"):
        rebuild(model, {"a": []})
    with pytest.raises(ModelError, match="group 'fc' cannot lose channels: reaches the model output"):
        rebuild(model, {"fc": [0, 1]})
