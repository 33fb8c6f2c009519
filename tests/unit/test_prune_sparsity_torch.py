"""Pattern sparsity on torch models: the prune stage zeroes its pattern, names the layers it leaves dense,
training holds the zeros (and ramps a polynomial schedule), bad recipes fail with one line."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

torch = pytest.importorskip("torch")

from edgecompress.errors import RecipeError  # noqa: E402
from edgecompress.frameworks.base import FitOptions  # noqa: E402
from edgecompress.sparsity import LayerPattern, check, training_plan  # noqa: E402
from edgecompress.stages.prune.stage import PruneConfig  # noqa: E402
from edgecompress.stages.prune.torch_backend import prune  # noqa: E402
from edgecompress.stages.prune.torch_sparsity import precheck  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


def pruned(ctx, **config):
    ctx.current_stage = 1
    model = ctx.adapter.load(ctx.recipe.model, ctx.recipe_path)
    return prune(model, PruneConfig(type="prune", **config), ctx), ctx.notes[1]


def holds_everywhere(model, plan) -> None:
    modules = dict(model.named_modules())
    for name, data in plan["layers"].items():
        result = check(modules[name].weight.detach().numpy(), LayerPattern.from_json(data))
        assert result.holds, f"{name}: {result.detail}"


def test_nm_zeroes_two_of_four_and_leaves_the_stem_depthwise_and_classifier_dense(make_ctx):
    ctx = make_ctx()
    model, notes = pruned(ctx, method="nm", n=2, m=4)
    plan = notes["sparsity_plan"]
    dense = plan["dense"]
    assert "not divisible by m = 4" in dense["stem.0"]  # one input channel
    assert "depthwise" in dense["mix.depthwise.0"] and "classifier" in dense["fc"]
    assert set(plan["layers"]) == {r["layer"] for r in notes["sparse_layers"]}
    assert all(r["holds"] == "yes" and r["sparsity"] == "50.0%" for r in notes["sparse_layers"])
    holds_everywhere(model, plan)
    assert ctx.sparsity_dense is not None and not (ctx.sparsity_dense.layer1.conv1[0].weight == 0).any()


def test_kernel_patterns_plan_is_plain_json_and_holds(make_ctx):
    import json

    ctx = make_ctx()
    model, notes = pruned(ctx, method="kernel_pattern", kernel_positions=4, patterns=4, sparsity=0.7)
    plan = notes["sparsity_plan"]
    assert json.loads(json.dumps(plan)) == plan  # report.json and the stage checkpoint serialise it
    assert all(len(d["patterns"]) == 4 for d in plan["layers"].values())
    assert "1x1 kernels" in plan["dense"]["layer2.shortcut.0"]
    holds_everywhere(model, plan)


def test_global_magnitude_meets_the_total_over_the_pruned_layers(make_ctx):
    ctx = make_ctx()
    model, notes = pruned(ctx, method="magnitude", sparsity=0.8, global_ranking=True, min_density=0.05)
    plan = notes["sparsity_plan"]
    modules = dict(model.named_modules())
    weights = [modules[n].weight for n in plan["layers"]]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.8, abs=0.01)
    assert len({round(d["sparsity"], 3) for d in plan["layers"].values()}) > 1  # not uniform
    assert all(d["sparsity"] <= 0.95 + 1e-9 for d in plan["layers"].values())


def test_training_holds_the_zeros_and_a_polynomial_plan_ramps_to_its_sparsity(make_ctx):
    ctx = make_ctx()
    model, notes = pruned(ctx, method="block", block=[1, 4], sparsity=0.5, sparsity_schedule="polynomial")
    plan = notes["sparsity_plan"]
    assert not any((w == 0).any() for w in ctx.adapter.weights(model).values())  # zeroed by the ramp only
    stages = ["train", "prune", "distill"]
    options = FitOptions(epochs=3, lr=1e-3, sparsity=training_plan(ctx.notes, stages, 2))
    assert options.sparsity["ramp"]
    model = ctx.adapter.fit(model, ctx.data, options, seed=0, ui=ctx.ui)
    holds_everywhere(model, plan)
    zeros = {n: float((dict(model.named_modules())[n].weight == 0).float().mean()) for n in plan["layers"]}
    assert all(z == pytest.approx(0.5, abs=0.02) for z in zeros.values()), zeros
    # a later stage holds them: more training does not revive a weight
    before = {n: dict(model.named_modules())[n].weight.detach().clone() for n in plan["layers"]}
    again = FitOptions(epochs=1, lr=1e-2, sparsity=training_plan(ctx.notes, [*stages, "train"], 3))
    assert not again.sparsity["ramp"]
    model = ctx.adapter.fit(model, ctx.data, again, seed=1, ui=ctx.ui)
    for n, w in before.items():
        after = dict(model.named_modules())[n].weight
        assert torch.equal(after == 0, w == 0)
        assert not torch.equal(after, w)  # it did train


def test_a_global_ramp_reaches_every_layer_share_the_plan_records(make_ctx):
    ctx = make_ctx()
    model, notes = pruned(
        ctx, method="magnitude", sparsity=0.7, global_ranking=True, sparsity_schedule="polynomial"
    )
    plan = training_plan(ctx.notes, ["train", "prune", "train"], 2)
    assert plan["ramp"]
    model = ctx.adapter.fit(model, ctx.data, FitOptions(epochs=2, lr=1e-3, sparsity=plan), seed=0, ui=ctx.ui)
    holds_everywhere(model, notes["sparsity_plan"])  # the file check reads this plan


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"method": "nm", "n": 4, "m": 4}, "0 < n < m"),
        ({"method": "nm", "n": 0, "m": 4}, "0 < n < m"),
        ({"method": "nm", "n": 2}, "needs n and m"),
        ({"method": "nm", "n": 2, "m": 4, "sparsity": 0.3}, "contradicts 2:4"),
        ({"method": "block", "sparsity": 0.5}, "needs a block shape"),
        ({"method": "block", "block": [1, 1], "sparsity": 0.5}, r"not \[1, 1\]"),
        ({"method": "block", "block": [1, 4], "sparsity": 1.0}, "less than 1"),
        ({"method": "magnitude", "sparsity": 0.0}, "greater than 0"),
        ({"method": "magnitude"}, "needs a sparsity"),
        ({"method": "magnitude", "sparsity": 0.5, "layer_sparsity": {"x*": 1.5}}, "between 0 and 1"),
        ({"method": "kernel_pattern", "patterns": 200}, "out of range"),
        ({"method": "kernel_pattern", "kernel_positions": 9}, "between 1 and 8"),
        ({"method": "kernel_pattern", "sparsity": 0.3}, "below what 4-of-9"),
        ({"method": "nm", "n": 2, "m": 4, "global_ranking": True}, "global_ranking"),
        ({"method": "magnitude", "sparsity": 0.5, "ratio": 0.5}, "belong to channel pruning"),
        ({"method": "channel", "ratio": 0.5, "sparsity": 0.5}, "belong to the pattern methods"),
    ],
)
def test_bad_sparsity_configs_fail_with_one_line(config, message):
    with pytest.raises(ValidationError, match=message):
        PruneConfig(type="prune", **config)


def test_a_glob_matching_no_layer_is_a_recipe_error_naming_the_stage(make_ctx):
    ctx = make_ctx()
    model = ctx.adapter.load(ctx.recipe.model, ctx.recipe_path)
    config = PruneConfig(type="prune", method="magnitude", sparsity=0.5, layer_sparsity={"nothing*": 0.2})
    with pytest.raises(RecipeError, match=r"stages\.3: prune\.layer_sparsity: 'nothing\*' matches no"):
        precheck(model, config, ctx, 3)
