"""TFMOT's prune_low_magnitude behind the Keras pattern-sparsity methods: which layers it prunes (the rest keep
edgecompress's masks, with the reason), that its zeros follow the plan's patterns in the canonical [out, in,
kh, kw] layout, that its wrappers are stripped (oneshot: in the prune stage; polynomial: when the ramping fit
ends) and that a later fit keeps the zeros. A small Conv2D + Dense model on synthetic 8x8x8 images."""

from __future__ import annotations

import numpy as np
import pytest

from edgecompress.console import UI
from edgecompress.context import RunContext
from edgecompress.data import DataBundle, Split
from edgecompress.recipe import parse_recipe
from edgecompress.sparsity import LayerPattern, check
from edgecompress.stages.base import run_stage
from tests.conftest import REPO, needs_keras

pytestmark = needs_keras

RECIPE = f"""\
name: t
seed: 0
model: {{source: '{REPO / "examples" / "keras_models.py"}:quickstart_cnn', framework: keras,
        input_shape: [1, 8, 8, 8]}}
data: {{dataset: digits, image_size: [8, 8], layout: NHWC, batch_size: 32}}
stages: [{{prune}}, {{type: train, epochs: 3, lr: 0.003}}, {{type: train, epochs: 1, lr: 0.001}}]
"""


def small_model(keras, dense_class=None):
    """A 3x3 conv, batch norm, a 1x1 conv, global pooling, a hidden Dense and the classifier (4 classes)."""
    L = keras.layers
    x = inputs = keras.Input((8, 8, 8))
    x = L.ReLU()(L.BatchNormalization(name="bn")(L.Conv2D(16, 3, padding="same", name="conv3")(x)))
    x = L.ReLU()(L.Conv2D(16, 1, name="conv1")(x))
    x = L.ReLU()((dense_class or L.Dense)(32, name="fc1")(L.GlobalAveragePooling2D()(x)))
    return keras.Model(inputs, L.Dense(4, name="head")(x))


def synthetic_data() -> DataBundle:
    """NHWC images whose class is the quadrant of two channels' means (learnable by the small model)."""
    rng = np.random.default_rng(0)

    def split(n: int) -> Split:
        x = rng.normal(size=(n, 8, 8, 8)).astype(np.float32)
        y = (x[..., 0].mean((1, 2)) > 0).astype(np.int64) * 2 + (x[..., 1].mean((1, 2)) > 0)
        return Split(x + 0.5 * np.eye(8, dtype=np.float32)[y * 2][:, None, None, :], y)

    return DataBundle(
        train=split(256),
        val=split(64),
        test=split(64),
        calibration=split(32),
        num_classes=4,
        class_names=["a", "b", "c", "d"],
        layout="NHWC",
        sample_shape=(8, 8, 8),
        mean=None,
        std=None,
    )


@pytest.fixture
def build(keras, tmp_path):
    """run(prune stage YAML, model=None, stages=3) -> (ctx, the model after each stage (one object when the
    stages work in place), the canonical weights after each stage)."""
    from edgecompress.frameworks.keras import KerasAdapter

    def run(prune: str, model=None, stages: int = 3) -> tuple[RunContext, list, list]:
        keras.utils.set_random_seed(0)
        model = model or small_model(keras)
        text = RECIPE.replace("{prune}", prune)
        ctx = RunContext(
            recipe=parse_recipe(text, source=str(tmp_path / "recipe.yaml")),
            recipe_path=tmp_path / "recipe.yaml",
            workdir=tmp_path,
            adapter=KerasAdapter(),
            data=synthetic_data(),
            ui=UI(verbosity=0),
        )
        models, weights = [], []
        for i, config in enumerate(ctx.recipe.stages[:stages]):
            model = run_stage(config, i, model, ctx)
            models.append(model)
            weights.append(ctx.adapter.weights(model))
        return ctx, models, weights

    return run


def engines(ctx: RunContext) -> dict[str, tuple[str, str]]:
    return {row["layer"]: (row["engine"], row["why"]) for row in ctx.notes[0]["sparsity_engines"]}


def assert_plain(model) -> None:
    assert not [layer.name for layer in model.layers if type(layer).__name__ == "PruneLowMagnitude"]


def assert_holds(ctx: RunContext, weights: dict[str, np.ndarray]) -> dict[str, float]:
    """Every planned layer holds its pattern; returns each one's fraction of zeros."""
    plan = ctx.notes[0]["sparsity_plan"]
    out = {}
    for name, data in plan["layers"].items():
        result = check(weights[name], LayerPattern.from_json(data))
        assert result.holds, (name, result.detail)
        out[name] = result.sparsity
    return out


def zeros(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {n: w == 0 for n, w in weights.items()}


def test_magnitude_oneshot_is_tfmots_stripped_in_the_prune_stage_and_kept_by_later_fits(build):
    ctx, models, (pruned, _, again) = build("{type: prune, method: magnitude, sparsity: 0.5}")
    assert engines(ctx) == {n: ("tfmot", "") for n in ("conv3", "conv1", "fc1")}  # the classifier stays dense
    assert ctx.notes[0]["sparsity_plan"]["engines"] == {"conv3": "tfmot", "conv1": "tfmot", "fc1": "tfmot"}
    assert models[0] is models[1] is models[2]  # the model object goes on; TFMOT worked on a copy
    assert_plain(models[0])
    assert assert_holds(ctx, pruned) == {"conv3": 0.5, "conv1": 0.5, "fc1": 0.5}
    for name in ("conv3", "conv1", "fc1"):  # the same zeros, exactly, through two fits
        np.testing.assert_array_equal(zeros(again)[name], zeros(pruned)[name])
        assert not np.array_equal(again[name], pruned[name])  # which trained the other weights


def test_magnitude_polynomial_ramps_in_the_next_fit_and_is_stripped_at_its_end(build):
    ctx, models, (pruned, trained, again) = build(
        "{type: prune, method: magnitude, sparsity: 0.5, sparsity_schedule: polynomial}"
    )
    assert {n: e for n, (e, _) in engines(ctx).items()} == {
        "conv3": "tfmot",
        "conv1": "tfmot",
        "fc1": "tfmot",
    }
    assert not any(z.any() for z in zeros(pruned).values())  # the ramp is the next fit's
    assert models[1] is models[0]  # the wrapped copy's weights were written back into the model
    assert_plain(models[1])
    assert assert_holds(ctx, trained) == {"conv3": 0.5, "conv1": 0.5, "fc1": 0.5}
    assert ctx.notes[1]["weight_sparsity"] > 0.4  # the ramping stage's notes measure it
    for name in ("conv3", "conv1", "fc1"):  # a later fit holds them as fixed masks
        np.testing.assert_array_equal(zeros(again)[name], zeros(trained)[name])
    assert ctx.adapter.accuracy(models[2], ctx.data.test) > 0.4  # 4 classes (chance 0.25): it learned


def test_global_ranking_gives_each_layer_its_allocated_sparsity(build):
    ctx, _, (_, trained) = build(
        "{type: prune, method: magnitude, sparsity: 0.6, global_ranking: true, sparsity_schedule: polynomial}",
        stages=2,
    )
    plan = ctx.notes[0]["sparsity_plan"]
    assert set(plan["engines"].values()) == {"tfmot"}
    held = assert_holds(ctx, trained)
    for name, data in plan["layers"].items():
        assert abs(held[name] - data["sparsity"]) <= 1 / trained[name].size, name
    assert len({round(d["sparsity"], 3) for d in plan["layers"].values()}) > 1  # the allocation differs


def test_block_on_dense_is_tfmots_in_canonical_blocks_and_convs_keep_the_masks(build):
    ctx, _, (pruned, trained) = build("{type: prune, method: block, block: [1, 4], sparsity: 0.5}", stages=2)
    found = engines(ctx)
    assert found["fc1"] == ("tfmot", "")
    for name in ("conv3", "conv1"):  # 4-D kernels, even the 1x1 one
        assert found[name][0] == "masks" and "2-D weights only" in found[name][1]
    for weights in (pruned, trained):
        w = weights["fc1"][:, :, 0, 0]  # canonical [out, in] = [32, 16]
        nonzero = (w != 0).reshape(32, 16 // 4, 4)  # 1 output x 4 consecutive inputs
        assert (nonzero.all(-1) | ~nonzero.any(-1)).all()  # every block kept whole or zeroed whole
        assert (~nonzero.any(-1)).mean() == 0.5
        assert_holds(ctx, weights)


def test_block_in_a_3x3_conv_uses_the_masks(build):
    ctx, _, (pruned,) = build("{type: prune, method: block, block: [2, 2], sparsity: 0.5}", stages=1)
    found = engines(ctx)
    assert found["conv3"][0] == "masks" and found["fc1"][0] == "tfmot"
    assert_holds(ctx, pruned)
    nonzero = (pruned["conv3"] != 0).reshape(8, 2, 4, 2, 9)  # [16, 8, 3, 3]: 2 outputs x 2 inputs
    assert (nonzero.all((1, 3)) | ~nonzero.any((1, 3))).all()


def test_two_four_is_tfmots_along_the_input_channels(build):
    ctx, models, (pruned, trained) = build("{type: prune, method: nm, n: 2, m: 4}", stages=2)
    tfmot_layers = [n for n, (e, _) in engines(ctx).items() if e == "tfmot"]
    assert tfmot_layers == ["conv3", "conv1", "fc1"]
    for weights in (pruned, trained):
        for name in tfmot_layers:
            w = weights[name]  # canonical [out, in, kh, kw]: groups of 4 consecutive inputs
            groups = np.moveaxis(w, 1, -1).reshape(-1, w.shape[1] // 4, 4)
            assert ((groups != 0).sum(-1) <= 2).all(), name
            assert (w == 0).mean() == 0.5, name
    assert_plain(models[1])


def test_two_four_ramped_keeps_the_masks(build):
    ctx, _, _ = build("{type: prune, method: nm, n: 2, m: 4, sparsity_schedule: polynomial}", stages=1)
    for engine, why in engines(ctx).values():
        assert engine == "masks" and "no N:M ramp" in why


def test_a_layer_tfmot_rejects_falls_back_to_the_masks(build, keras):
    class Dense(keras.layers.Dense):  # not the registry's class: prune_low_magnitude refuses it
        pass

    model = small_model(keras, dense_class=Dense)
    ctx, _, (pruned,) = build("{type: prune, method: magnitude, sparsity: 0.5}", model=model, stages=1)
    found = engines(ctx)
    assert found["fc1"][0] == "masks" and "rejected" in found["fc1"][1]
    assert found["conv3"] == ("tfmot", "")
    assert assert_holds(ctx, pruned)["fc1"] == 0.5


def test_tfmot_parameters_map_the_canonical_pattern(keras):
    from edgecompress.frameworks.keras_tfmot_prune import _params

    model = small_model(keras)
    fc1, conv = model.get_layer("fc1"), model.get_layer("conv3")
    block = _params(fc1, "fc1", LayerPattern("block", 0.3, block=(2, 4)), lambda t: t)
    assert block["block_size"] == (4, 2)  # Keras [in, out]: 4 inputs high, 2 outputs wide
    assert block["pruning_schedule"] == round(0.3 * 4 * 16) / 64  # the plan's count of the 64 blocks
    nm = _params(conv, "conv3", LayerPattern("nm", 0.75, n=1, m=4), lambda t: t)
    assert nm["sparsity_m_by_n"] == (3, 4)  # TFMOT counts the zeros of each group


def test_checkpoint_of_the_stripped_model_round_trips(build, tmp_path):
    ctx, models, (_, trained) = build(
        "{type: prune, method: block, block: [1, 4], sparsity: 0.5, sparsity_schedule: polynomial}", stages=2
    )
    ctx.adapter.checkpoint_save(models[1], tmp_path / "m.ckpt")
    loaded = ctx.adapter.weights(ctx.adapter.checkpoint_load(tmp_path / "m.ckpt"))
    for name, w in trained.items():
        np.testing.assert_array_equal(loaded[name], w)
