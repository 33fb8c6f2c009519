"""PreCropping (prune method precrop): PaI layer densities -> per-group channel widths at a MAC/param target."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")
pytest.importorskip("scipy")
nn = torch.nn

from edgecompress.context import RunContext  # noqa: E402
from edgecompress.stages.prune.stage import PruneConfig  # noqa: E402
from edgecompress.stages.prune.torch_backend import make_plan, prune  # noqa: E402
from edgecompress.stages.prune.torch_precrop import pai_scores  # noqa: E402
from tests.conftest import BASE_RECIPE, recipe_error  # noqa: E402

SHAPE = [1, 1, 16, 16]


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


#: The model most tests crop: quickstart_cnn at width 16 (residual adds, a concat, a depthwise conv).
QUICKSTART = {"function": "quickstart_cnn", "width": 16}


def load(ctx: RunContext):
    return ctx.adapter.load(ctx.recipe.model, ctx.recipe_path)


def notes(ctx: RunContext) -> dict:
    return ctx.notes[ctx.current_stage]


@pytest.mark.parametrize("criterion", ["l1", "snip", "synflow"])
def test_each_criterion_meets_the_macs_target(make_ctx, criterion):
    ctx = make_ctx(**QUICKSTART)
    model = prune(load(ctx), PruneConfig(method="precrop", criterion=criterion, macs_target=0.4), ctx)
    n = notes(ctx)
    assert 0.4 - 0.03 <= n["macs_kept"] <= 0.4
    report = n["precrop"]
    assert report["criterion"] == ("magnitude" if criterion == "l1" else criterion)
    assert report["target"] == {"macs": 0.4}
    ratios = [g["keep_ratio"] for g in report["groups"].values()]
    assert max(ratios) - min(ratios) > 0.1  # layer-wise, not uniform
    for root, (before, after) in ((r, g["width"]) for r, g in report["groups"].items()):
        assert 1 <= after <= before
        if after < before:
            assert n["channels"][root] == [before, after]
    assert "fc" not in n["channels"]
    ctx.adapter.check(model, ctx.input_shape, 10)
    assert model(torch.zeros(SHAPE)).shape == (1, 10)
    assert all(p.grad is None for p in model.parameters())


def test_params_target(make_ctx):
    ctx = make_ctx(**QUICKSTART)
    model = prune(load(ctx), PruneConfig(method="precrop", params_target=0.35), ctx)
    assert 0.35 - 0.03 <= notes(ctx)["params_kept"] <= 0.35
    assert notes(ctx)["precrop"]["target"] == {"params": 0.35}
    ctx.adapter.check(model, ctx.input_shape, 10)


def test_depthwise_grouped_concat_and_se(make_ctx):
    """tiny_mobile_v3: a conv writing two concatenated groups, grouped convs (even widths), SE gates."""
    ctx = make_ctx("tiny_mobile_v3")
    model = prune(load(ctx), PruneConfig(method="precrop", criterion="snip", params_target=0.6), ctx)
    assert 0.6 - 0.03 <= notes(ctx)["params_kept"] <= 0.6
    groups = notes(ctx)["precrop"]["groups"]
    assert groups["block2.grouped.0"]["width"][1] % 2 == 0
    assert any(g["width"][1] < g["width"][0] for g in groups.values())
    ctx.adapter.check(model, ctx.input_shape, 10)


def test_integer_round_to(make_ctx):
    ctx = make_ctx(**QUICKSTART)
    model = prune(load(ctx), PruneConfig(method="precrop", macs_target=0.4, round_to=4), ctx)
    assert notes(ctx)["macs_kept"] <= 0.4
    for root, g in notes(ctx)["precrop"]["groups"].items():
        assert g["width"][1] == model.get_submodule(root).out_channels
        if root != "layer2.shortcut.0":  # the concatenated group: the sum of its slices is rounded
            assert g["width"][1] % 4 == 0, (root, g)


def test_magnitude_keeps_more_channels_where_weights_are_larger(make_ctx):
    """layer2's block scaled 10x: its inner channels (layer2.conv1 out = layer2.conv2 in) keep far more.

    Scaling layer2.conv1 alone moves its width little: the same channels are layer2.conv2's inputs, whose
    density the scaling lowers, and a group's width is the compromise of both layers' densities."""

    def width(scale: float) -> int:
        ctx = make_ctx(**QUICKSTART)
        torch.manual_seed(0)
        model = load(ctx)
        with torch.no_grad():
            model.layer2.conv1[0].weight.mul_(scale)
            model.layer2.conv2[0].weight.mul_(scale)
        pruned = prune(model, PruneConfig(method="precrop", macs_target=0.4), ctx)
        assert 0.37 <= notes(ctx)["macs_kept"] <= 0.4
        return pruned.layer2.conv1[0].out_channels

    plain, scaled = width(1.0), width(10.0)
    assert scaled >= plain + 8, (plain, scaled)


def test_scores_leave_the_model_as_it_was(make_ctx):
    ctx = make_ctx(**QUICKSTART)
    model = load(ctx)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # negative entries that |.| would change if left applied
            m.running_mean.uniform_(-1, 1)
            m.weight.data.uniform_(-1, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = make_plan(model, PruneConfig(method="precrop", macs_target=0.5), ctx)
    for criterion in ("synflow", "snip"):
        scores = pai_scores(model, criterion, ctx, plan)
        assert set(scores) >= {"stem.0", "layer2.conv1.0", "fc"}
        assert all(torch.isfinite(s).all() and (s >= 0).all() for s in scores.values())
        assert scores["layer2.conv1.0"].sum() > 0
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)
        assert all(p.grad is None for p in model.parameters())


def test_synflow_is_data_free_and_differs_from_magnitude(make_ctx):
    ctx = make_ctx(**QUICKSTART)
    model = load(ctx)
    plan = make_plan(model, PruneConfig(method="precrop", macs_target=0.5), ctx)
    synflow = pai_scores(model, "synflow", ctx, plan)
    magnitude = pai_scores(model, "magnitude", ctx, plan)
    assert synflow["stem.0"].dtype == torch.float64
    assert not torch.allclose(
        synflow["stem.0"] / synflow["stem.0"].sum(), magnitude["stem.0"] / magnitude["stem.0"].sum()
    )


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ("{type: prune, ratio: 0.5, criterion: snip}", "needs method: precrop"),
        ("{type: prune, macs_target: 0.5, criterion: synflow}", "needs method: precrop"),
        ("{type: prune, method: precrop}", "method precrop needs a macs_target or a params_target"),
        ("{type: prune, method: precrop, ratio: 0.5}", "not ratio, latency or layer_ratios"),
        (
            "{type: prune, method: precrop, macs_target: 0.5, layer_ratios: {'stem*': 0.5}}",
            "not ratio, latency",
        ),
        ("{type: prune, method: precrop, macs_target: 0.5, criterion: taylor}", "not taylor"),
        ("{type: prune, method: precrop, macs_target: 0.5, global_ranking: true}", "drop global_ranking"),
    ],
)
def test_recipe_validation(stage, message):
    assert message in recipe_error(BASE_RECIPE + f"stages:\n  - {stage}\n")


def test_valid_precrop_recipe():
    config = PruneConfig(method="precrop", criterion="snip", params_target=0.3)
    assert config.method == "precrop" and config.criterion == "snip"
