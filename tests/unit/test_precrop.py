"""PreCropping (prune method precrop): PaI layer densities -> per-group channel widths at a MAC, parameter or
latency target, channels kept by their PaI scores."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")
pytest.importorskip("scipy")
nn = torch.nn

from edgecompress.context import RunContext  # noqa: E402
from edgecompress.stages.prune.stage import PruneConfig  # noqa: E402
from edgecompress.stages.prune.torch_backend import make_plan, prune  # noqa: E402
from edgecompress.stages.prune.torch_precrop import channel_scores, pai_scores  # noqa: E402
from tests.conftest import BASE_RECIPE, EXAMPLES, recipe_error  # noqa: E402

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


@pytest.mark.parametrize("criterion", ["magnitude", "snip", "synflow"])
def test_each_criterion_meets_the_macs_target(make_ctx, criterion):
    ctx = make_ctx(**QUICKSTART)
    model = prune(load(ctx), PruneConfig(method="precrop", criterion=criterion, macs_target=0.4), ctx)
    n = notes(ctx)
    assert 0.4 - 0.03 <= n["macs_kept"] <= 0.4
    report = n["precrop"]
    assert report["criterion"] == criterion
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
    """Also: l1, the default criterion, is magnitude."""
    ctx = make_ctx(**QUICKSTART)
    model = prune(load(ctx), PruneConfig(method="precrop", params_target=0.35), ctx)
    assert notes(ctx)["precrop"]["criterion"] == "magnitude"
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


def budget_ctx(tmp_path, speedup: float) -> RunContext:
    """quickstart_cnn at 32x32 and width 32, as tests/integration/test_latency_budget.py (smaller, a layer's
    time is noise), cropped by snip to a tflite-fp32 latency budget on desktop; latency tables in tmp_path."""
    from edgecompress.console import UI
    from edgecompress.data import load_data
    from edgecompress.frameworks.torch import TorchAdapter
    from edgecompress.recipe import load_recipe

    path = tmp_path / "recipe.yaml"
    path.write_text(
        f"name: t\nmodel: {{source: '{EXAMPLES}:quickstart_cnn', input_shape: [1, 1, 32, 32]}}\n"
        "data: {image_size: [32, 32], batch_size: 32}\nexport: [{format: tflite, precision: fp32}]\n"
        "devices: [desktop]\nstages:\n  - {type: prune, method: precrop, criterion: snip, "
        f"latency: {{export: tflite-fp32, speedup: {speedup}}}}}\n"
    )
    recipe = load_recipe(path)
    data = load_data(recipe.data, path, seed=0)
    ctx = RunContext(
        recipe=recipe, recipe_path=path, workdir=tmp_path, adapter=TorchAdapter(), data=data, ui=UI(0)
    )
    ctx.current_stage = 0
    return ctx


def crop_to_budget(ctx: RunContext) -> tuple[object, object, dict]:
    """The model, cropped after the build's pre-check (which times the unpruned model), and its notes."""
    from edgecompress.stages.prune.stage import PruneStage

    model = load(ctx)
    PruneStage(ctx.recipe.stages[0]).precheck(model, ctx, 0)
    cropped = prune(model, ctx.recipe.stages[0], ctx)
    n = notes(ctx)
    (budget,) = n["latency_budgets"]
    assert budget["target"] == "desktop/tflite-fp32"
    # met by prediction (over only with every group at its floor, within the pre-check's 5%)
    assert budget["predicted_ms"] <= budget["target_ms"] * 1.05
    assert n["precrop"]["target"] == {"latency": ["desktop/tflite-fp32"]}
    assert ctx.budget_unpruned is not None  # the build exports and times it beside the cropped model
    return model, cropped, n


def test_latency_budget_factor_is_chosen_by_the_prediction(tmp_path, monkeypatch):
    """With a latency model whose prediction is the MAC count, a 1.3x budget is 1/1.3 of the MACs: met
    within the bisection's tolerance, whatever the machine's noise (the reference is still timed)."""
    pytest.importorskip("ai_edge_litert")
    from edgecompress.frameworks.torch import count_macs
    from edgecompress.stages.prune import latency_budget

    monkeypatch.setenv("EDGECOMPRESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(
        latency_budget.Solver,
        "predict",
        lambda self, m, t, raw=False: count_macs(m, self.shape) / 1e6 * (1.0 if raw else t.scale),
    )
    ctx = budget_ctx(tmp_path, 1.3)
    _, _, n = crop_to_budget(ctx)
    assert n["latency_budgets"][0]["predicted_ms"] <= n["latency_budgets"][0]["target_ms"] * 1.0001
    assert 1 / 1.3 - 0.03 <= n["macs_kept"] <= 1 / 1.3 + 1e-9
    assert 0.97 <= n["precrop"]["kept"] <= 1.0
    ratios = [g["keep_ratio"] for g in n["precrop"]["groups"].values()]
    assert max(ratios) - min(ratios) > 0.1  # layer-wise, not uniform


@pytest.mark.integration
def test_latency_budget_met_by_the_real_latency_model(tmp_path, monkeypatch):
    """The export's latency model, measured here into a fresh cache and scaled to the measured unpruned
    model. Its layers take tens of microseconds: on a loaded machine their tables are noisy enough for the
    pre-check to find the floor over the budget (as tests/integration/test_latency_budget.py can)."""
    pytest.importorskip("ai_edge_litert")
    from edgecompress.errors import RecipeError
    from edgecompress.frameworks.torch import count_macs

    monkeypatch.setenv("EDGECOMPRESS_CACHE", str(tmp_path / "cache"))
    ctx = budget_ctx(tmp_path, 1.3)
    try:
        model, cropped, n = crop_to_budget(ctx)
    except RecipeError as exc:  # the build would stop there too, before training
        pytest.skip(f"the latency tables measured here put the floor over the budget: {exc}")
    assert n["latency_budgets"][0]["target_ms"] == pytest.approx(
        n["latency_budgets"][0]["reference_ms"] / 1.3, rel=1e-3
    )
    assert 0.5 <= n["precrop"]["kept"] <= 1.05  # the predicted share of the budget
    assert count_macs(cropped, [1, 1, 32, 32]) < count_macs(model, [1, 1, 32, 32])


def tag_channels(model) -> None:
    """Every batch norm's bias set to its channel index / 1000: a cropped model's biases name the channels
    each group kept (PaI scores read conv/linear weights only; SynFlow's move a little, and are read after)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.bias.copy_(torch.arange(m.num_features) / 1000)


def kept_channels(model, root: str) -> list[int]:
    bias = model.get_submodule(root.removesuffix(".0") + ".1").bias
    return sorted(round(float(b) * 1000) for b in bias.detach())


@pytest.mark.parametrize("criterion", ["snip", "synflow"])
def test_each_group_keeps_its_channels_of_highest_summed_score(make_ctx, criterion):
    ctx = make_ctx(**QUICKSTART)
    model = load(ctx)
    tag_channels(model)
    config = PruneConfig(method="precrop", criterion=criterion, macs_target=0.4)
    plan = make_plan(model, config, ctx)
    scores = pai_scores(model, criterion, ctx, plan)
    ranked = channel_scores(model, scores, SHAPE, plan)
    # a group's score: its producers' output channels and its readers' input channels (scaled alike)
    own = scores["layer1.conv1.0"].sum((1, 2, 3)) + scores["layer1.conv2.0"].sum((0, 2, 3))
    ratio = ranked["layer1.conv1.0"].double() / own
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-4)
    cropped = prune(model, config, ctx)
    by_l1 = 0
    cropped_groups = [r for r, g in notes(ctx)["precrop"]["groups"].items() if g["width"][1] < g["width"][0]]
    assert len(cropped_groups) >= 2
    for root in cropped_groups:
        width = cropped.get_submodule(root).out_channels
        assert kept_channels(cropped, root) == sorted(torch.topk(ranked[root], width).indices.tolist()), root
        l1 = model.get_submodule(root).weight.detach().abs().sum((1, 2, 3))
        by_l1 += kept_channels(cropped, root) != sorted(torch.topk(l1, width).indices.tolist())
    assert by_l1, "the PaI choice differs from l1's somewhere (else this test shows nothing)"


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ("{type: prune, ratio: 0.5, criterion: snip}", "needs method: precrop"),
        ("{type: prune, macs_target: 0.5, criterion: synflow}", "needs method: precrop"),
        ("{type: prune, macs_target: 0.5, criterion: magnitude}", "needs method: precrop"),
        (
            "{type: prune, method: precrop}",
            "method precrop needs a macs_target, a params_target or a latency budget",
        ),
        ("{type: prune, method: precrop, ratio: 0.5}", "not ratio or layer_ratios"),
        (
            "{type: prune, method: precrop, macs_target: 0.5, layer_ratios: {'stem*': 0.5}}",
            "not ratio or layer_ratios",
        ),
        ("{type: prune, method: precrop, macs_target: 0.5, criterion: taylor}", "not taylor"),
        ("{type: prune, method: precrop, macs_target: 0.5, global_ranking: true}", "drop global_ranking"),
        ("{type: prune, method: precrop, macs_target: 0.5, round_to: auto}", "does not take round_to auto"),
        (
            "{type: prune, method: precrop, latency: {export: tflite-fp32, speedup: 2}, round_to: auto}",
            "does not take round_to auto",
        ),
        (
            "{type: prune, ratio: 0.5, reference: m.pt2}",
            "reference is the trained unpruned model of a precrop",
        ),
    ],
)
def test_recipe_validation(stage, message):
    assert message in recipe_error(BASE_RECIPE + f"stages:\n  - {stage}\n")


def test_valid_precrop_recipe():
    config = PruneConfig(method="precrop", criterion="snip", params_target=0.3)
    assert config.method == "precrop" and config.criterion == "snip"
    budget = {"export": "tflite-int8", "speedup": 2}
    config = PruneConfig(
        method="precrop", criterion="magnitude", latency=budget, round_to=8, reference="m.pt2"
    )
    assert config.latency[0].speedup == 2 and config.round_to == 8
