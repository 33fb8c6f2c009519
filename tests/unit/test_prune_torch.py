"""Channel pruning with Torch-Pruning: channels really go, across residual adds, concat and depthwise convs."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")
nn = torch.nn

from edgecompress.context import RunContext  # noqa: E402
from edgecompress.errors import ModelError, RecipeError  # noqa: E402
from edgecompress.frameworks.base import FitOptions  # noqa: E402
from edgecompress.recipe import ModelSpec  # noqa: E402
from edgecompress.stages.prune.stage import PruneConfig  # noqa: E402
from edgecompress.stages.prune.torch_backend import prune  # noqa: E402

SHAPE = [1, 1, 16, 16]


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


def load(ctx: RunContext):
    return ctx.adapter.load(ctx.recipe.model, ctx.recipe_path)


def run(ctx: RunContext, model=None, **config):
    model = load(ctx) if model is None else model
    return prune(model, PruneConfig(**config), ctx)


def widths(model) -> dict[str, int]:
    return {
        n: (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    }


def notes(ctx: RunContext) -> dict:
    return ctx.notes[ctx.current_stage]


def test_ratio_removes_channels_across_add_concat_and_depthwise(make_ctx):
    ctx = make_ctx()
    model = run(ctx, ratio=0.5)
    assert not model.training
    assert model.stem[0].out_channels == 4 and model.stem[1].num_features == 4
    assert model.layer1.conv1[0].in_channels == 4 and model.layer1.conv2[0].out_channels == 4  # residual add
    assert model.layer2.conv1[0].out_channels == 8 and model.layer2.shortcut[0].out_channels == 8
    dw = model.mix.depthwise[0]
    assert dw.in_channels == dw.out_channels == dw.groups == 8  # still depthwise
    assert model.mix.pointwise[0].out_channels + model.mix.branch[0].out_channels == 8  # concat + add
    assert model.fc.in_features == 8 and model.fc.out_features == 10
    assert model(torch.randn(3, *SHAPE[1:])).shape == (3, 10)
    assert 0.2 < notes(ctx)["macs_kept"] < 0.32  # about (1 - 0.5)^2


def test_dead_channels_are_removed_exactly(make_ctx):
    """Channels whose outputs are zero everywhere are the least important; removing them changes nothing."""
    ctx = make_ctx()
    model = load(ctx)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)

    def kill(block, channels):
        with torch.no_grad():
            for i in (0, 1):
                block[i].weight[channels] = 0
            block[1].bias[channels] = 0

    kill(model.stem, [3])
    kill(model.layer1.conv2, [3])  # residual stream channel 3 is now zero
    kill(model.layer1.conv1, [5])
    kill(model.layer2.conv1, [7, 9])
    for block in (model.layer2.conv2, model.layer2.shortcut, model.mix.depthwise):
        kill(block, [0, 15])
    kill(model.mix.pointwise, [0])  # concat channel 0
    kill(model.mix.branch, [7])  # concat channel 15
    x = torch.randn(4, *SHAPE[1:])
    with torch.no_grad():
        reference = model(x)
    pruned = run(ctx, model, ratio=0.125)
    assert widths(pruned) == {
        "stem.0": 7,
        "layer1.conv1.0": 7,
        "layer1.conv2.0": 7,
        "layer2.conv1.0": 14,
        "layer2.conv2.0": 14,
        "layer2.shortcut.0": 14,
        "mix.depthwise.0": 14,
        "mix.pointwise.0": 7,
        "mix.branch.0": 7,
        "fc": 10,
    }
    with torch.no_grad():
        assert torch.allclose(pruned(x), reference, atol=1e-5)


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_macs_fall_roughly_quadratically(make_ctx, ratio):
    ctx = make_ctx("quickstart_cnn", width=16)
    run(ctx, ratio=ratio)
    assert notes(ctx)["macs_kept"] == pytest.approx((1 - ratio) ** 2, abs=0.05)


@pytest.mark.parametrize("global_ranking", [False, True])
@pytest.mark.parametrize(("key", "target"), [("macs_target", 0.45), ("params_target", 0.3)])
def test_targets_are_met_within_tolerance(make_ctx, key, target, global_ranking):
    ctx = make_ctx("quickstart_cnn", width=32)
    model = run(ctx, **{key: target, "global_ranking": global_ranking})
    kept = notes(ctx)["macs_kept" if key == "macs_target" else "params_kept"]
    assert target - 0.03 <= kept <= target
    assert 0 < notes(ctx)["ratio"] < 1
    assert model(torch.zeros(SHAPE)).shape == (1, 10)


def test_unreachable_target_is_an_error(make_ctx):
    with pytest.raises(ModelError, match="cannot keep only 10% of the MACs"):
        run(make_ctx(), macs_target=0.1, ignore=["stem", "layer1", "layer2"])


def test_round_to(make_ctx):
    ctx = make_ctx("quickstart_cnn", width=16)
    model = run(ctx, ratio=0.3, round_to=4)
    w = widths(model)
    concat_slices = {"mix.pointwise.0", "mix.branch.0"}  # their sum, the concatenated width, is rounded
    assert all(c % 4 == 0 for n, c in w.items() if n not in concat_slices | {"fc"})
    assert (w["mix.pointwise.0"] + w["mix.branch.0"]) % 4 == 0
    assert w["stem.0"] < 16 and w["layer2.conv1.0"] < 32


def test_round_to_never_empties_a_layer(make_ctx):
    model = run(make_ctx(), ratio=0.6, round_to=8)
    w = widths(model)
    assert w["stem.0"] == 8 and w["layer1.conv1.0"] == 8  # narrower than one step after rounding: untouched
    assert w["layer2.conv1.0"] == 8 and w["layer2.conv2.0"] == 8  # 16 keeps at least one multiple of 8
    assert model(torch.zeros(SHAPE)).shape == (1, 10)


def test_ignore_globs_and_classifier(make_ctx):
    ctx = make_ctx()
    w = widths(run(ctx, ratio=0.5, ignore=["layer2.conv1"]))
    assert w["layer2.conv1.0"] == 16 and w["stem.0"] == 4 and w["fc"] == 10
    assert notes(ctx)["ignored"] == ["layer2.conv1.0", "fc"]
    w = widths(run(ctx, ratio=0.5, ignore=["st*"]))  # a coupled group stays whole
    assert w["stem.0"] == 8 and w["layer1.conv2.0"] == 8 and w["layer1.conv1.0"] == 4


@pytest.mark.parametrize("criterion", ["l1", "l2", "taylor", "bn_scale"])
def test_each_criterion(make_ctx, criterion):
    ctx = make_ctx()
    model = load(ctx)
    for m in model.modules():  # as after training: batch-norm scales differ (fresh ones are all 1, a tie)
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
    model = run(ctx, model, ratio=0.5, criterion=criterion)
    assert widths(model)["stem.0"] == 4 and widths(model)["layer2.conv2.0"] == 8
    assert all(p.grad is None for p in model.parameters())
    assert model(torch.zeros(SHAPE)).shape == (1, 10)


@pytest.mark.parametrize("global_ranking", [False, True])
def test_tied_scores_still_prune_every_group(make_ctx, global_ranking):
    """Fresh batch norms all have scale 1: ties must neither empty a concat slice nor prune all tied channels."""
    ctx = make_ctx()
    w = widths(run(ctx, ratio=0.5, criterion="bn_scale", global_ranking=global_ranking))
    assert 0 < w["mix.pointwise.0"] < 8 and 0 < w["mix.branch.0"] < 8
    assert w["layer2.conv2.0"] < 16 and w["stem.0"] < 8
    assert notes(ctx)["unchanged"] == []
    assert 0.15 < notes(ctx)["params_kept"] < 0.4


def test_taylor_ranks_by_gradients(make_ctx):
    """Same weights, different criteria: taylor keeps other channels than l1 does."""
    ctx = make_ctx()
    model = load(ctx)
    by_l1 = run(ctx, ctx.adapter.copy(model), ratio=0.5, criterion="l1")
    by_taylor = run(ctx, model, ratio=0.5, criterion="taylor")
    assert not torch.equal(by_l1.stem[0].weight, by_taylor.stem[0].weight)


def test_bn_scale_needs_batchnorm(make_ctx):
    plain = nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)
    )
    with pytest.raises(ModelError, match="no BatchNorm"):
        run(make_ctx(), plain, ratio=0.5, criterion="bn_scale")


def test_layer_ratios_first_match_wins(make_ctx):
    w = widths(run(make_ctx(), layer_ratios={"layer2.conv1*": 0.25, "layer2*": 0.5}))
    assert w["layer2.conv1.0"] == 12 and w["layer2.conv2.0"] == 8
    assert w["stem.0"] == 8 and w["layer1.conv1.0"] == 8  # no ratio: untouched


@pytest.mark.parametrize(
    ("config", "pattern"),
    [({"layer_ratios": {"stage9.*": 0.5}}, "stage9.*"), ({"ratio": 0.5, "ignore": ["head*"]}, "head*")],
)
def test_glob_matching_nothing_is_a_recipe_error(make_ctx, config, pattern):
    with pytest.raises(RecipeError) as err:
        run(make_ctx(), **config)
    assert f"'{pattern}'" in str(err.value) and "stem.0" in str(err.value)


def test_notes(make_ctx):
    ctx = make_ctx()
    ctx.current_stage = 2
    run(ctx, ratio=0.5)
    n = ctx.notes[2]
    assert n["ratio"] == 0.5 and n["criterion"] == "l1" and n["ignored"] == ["fc"]
    assert n["params_after"] < n["params_before"] and n["macs_after"] < n["macs_before"]
    assert n["channels"]["stem.0"] == [8, 4] and n["channels"]["layer2.conv2.0"] == [16, 8]
    assert "fc" not in n["channels"]


def test_torchscript_cannot_be_pruned(make_ctx):
    ctx = make_ctx()
    with pytest.raises(ModelError) as err:
        run(ctx, torch.jit.script(load(ctx)), ratio=0.5)
    assert "python entry" in str(err.value) and ".pt2" in str(err.value)


def test_exported_model_is_prunable(make_ctx, tmp_path):
    """A torch.export .pt2 gets real layers back on loading, so it prunes like a python model."""
    ctx = make_ctx()
    adapter = ctx.adapter

    def from_pt2(path: Path):
        return adapter.load(ModelSpec(source=str(path), input_shape=SHAPE), ctx.recipe_path)

    model = run(ctx, from_pt2(adapter.save(load(ctx), tmp_path / "tiny.pt2", SHAPE)), ratio=0.5)
    assert widths(model)["stem.0"] == 4 and widths(model)["mix.depthwise.0"] == 8
    again = from_pt2(adapter.save(model, tmp_path / "pruned.pt2", SHAPE))
    x = torch.randn(2, *SHAPE[1:])
    assert torch.allclose(again(x), model(x), atol=1e-5)


def test_iterative_steps(make_ctx):
    model = run(make_ctx(), ratio=0.5, iterative_steps=3, criterion="taylor")
    assert widths(model)["stem.0"] == 4 and widths(model)["layer2.conv2.0"] == 8


def test_pruned_model_fine_tunes(make_ctx):
    ctx = make_ctx()
    model = run(ctx, ratio=0.25)
    ctx.adapter.fit(model, ctx.data, FitOptions(epochs=5, lr=5e-3), seed=0, ui=ctx.ui)
    accuracy = (ctx.adapter.predict(model, ctx.data.test.x).argmax(1) == ctx.data.test.y).mean()
    assert accuracy > 0.8, accuracy
