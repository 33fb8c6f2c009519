"""Latency-budget pruning, the framework-neutral part: knapsack, plateau edges, sweeps and the schedule."""

from __future__ import annotations

import itertools
import random

import pytest

from edgecompress.stages.prune.budget import (
    GroupChoice,
    plateau_edges,
    schedule,
    solve,
    solve_to_budget,
    sweep_counts,
)


def _random_groups(rng: random.Random) -> list[GroupChoice]:
    groups = []
    for g in range(rng.randint(1, 4)):
        n = rng.randint(1, 4)
        groups.append(
            GroupChoice(
                f"g{g}",
                tuple(sorted(rng.sample(range(1, 64), n))),
                tuple(sorted(rng.uniform(0, 5) for _ in range(n))),
                tuple(sorted(rng.uniform(0, 10) for _ in range(n))),
            )
        )
    return groups


def test_knapsack_matches_brute_force():
    rng = random.Random(0)
    for _ in range(200):
        groups = _random_groups(rng)
        need = rng.uniform(0, sum(g.costs[-1] - g.costs[0] for g in groups) * 1.2)
        feasible = []
        for combo in itertools.product(*(range(len(g.widths)) for g in groups)):
            saved = sum(g.costs[-1] - g.costs[k] for g, k in zip(groups, combo, strict=True))
            if saved >= need:
                feasible.append(sum(g.values[k] for g, k in zip(groups, combo, strict=True)))
        if not feasible:
            with pytest.raises(ValueError):
                solve(groups, need)
            continue
        widths = solve(groups, need, resolution=20000)
        picked = [g.widths.index(widths[g.root]) for g in groups]
        saved = sum(g.costs[-1] - g.costs[k] for g, k in zip(groups, picked, strict=True))
        value = sum(g.values[k] for g, k in zip(groups, picked, strict=True))
        assert saved >= need - 1e-9
        assert value >= max(feasible) - 1e-3 * max(1.0, max(feasible))


def test_no_saving_keeps_every_group_whole():
    groups = [GroupChoice("a", (8, 16), (1.0, 2.0), (1.0, 3.0))]
    assert solve(groups, 0.0) == {"a": 16}


def test_knapsack_spends_cuts_where_they_cost_least_value():
    # both groups save 1 ms by going narrow; b's narrow width loses far less importance
    groups = [
        GroupChoice("a", (8, 16), (1.0, 2.0), (1.0, 10.0)),
        GroupChoice("b", (8, 16), (1.0, 2.0), (9.0, 10.0)),
    ]
    assert solve(groups, 1.0) == {"a": 16, "b": 8}
    assert solve(groups, 2.0) == {"a": 8, "b": 8}


def test_plateau_edges_keep_the_widest_count_of_each_step():
    costs = {8: 1.0, 16: 1.01, 24: 1.5, 32: 1.52, 40: 2.0}
    assert plateau_edges(costs) == [16, 32, 40]
    # a wider count measured cheaper than a narrower edge makes that edge pointless
    assert plateau_edges({8: 1.0, 16: 2.0, 24: 0.9}) == [24]


def test_sweep_counts_are_tile_multiples_and_the_current_width():
    assert sweep_counts(100) == [8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 100]
    wide = sweep_counts(300)
    assert wide[-1] == 300 and all(c % 16 == 0 for c in wide if 256 <= c < 300)
    assert sweep_counts(48, step=6) == [12, 24, 48]  # multiples of the group's step
    assert sweep_counts(6) == [6]  # narrower than a tile: only itself
    assert sweep_counts(64, floor=40)[0] == 40


def test_schedule_is_geometric_and_ends_at_the_target():
    assert schedule(10.0, 2.5, 2) == pytest.approx([5.0, 2.5])
    assert schedule(4.0, 1.0, 1) == [1.0]
    with pytest.raises(ValueError):
        schedule(1.0, 0.5, 0)


def test_solve_to_budget_corrects_a_non_additive_prediction():
    """The knapsack adds savings; the whole model saves less (here 70% of the sum): the secant steps ask
    for more until the prediction meets the budget."""
    groups = [
        GroupChoice(
            f"g{i}",
            tuple(range(8, 72, 8)),
            tuple(0.1 * w / 8 for w in range(8, 72, 8)),
            tuple(range(8, 72, 8)),
        )
        for i in range(6)
    ]
    current = sum(g.costs[-1] for g in groups)

    def predict(widths: dict[str, int]) -> float:
        saved = sum(g.costs[-1] - g.costs[g.widths.index(widths[g.root])] for g in groups)
        return current - 0.7 * saved

    widths, predicted = solve_to_budget(groups, current, 0.6 * current, predict)
    assert predicted <= 0.6 * current * 1.01
    assert predicted >= 0.6 * current * 0.9  # not needlessly far below
    assert predict(widths) == predicted


def test_solve_to_budget_past_the_additive_savings_asks_the_prediction():
    """The groups' own layers save at most 2.8 ms; the whole model saves twice that (its activations
    shrink with them, as MobileNetV3's hardswish layers do): a budget beyond the additive total is
    reached, not refused."""
    groups = [
        GroupChoice(f"g{i}", (8, 16, 24, 32), (0.1, 0.4, 0.7, 0.8), (1.0, 2.0, 3.0, 4.0)) for i in range(4)
    ]
    current = 10.0

    def predict(widths: dict[str, int]) -> float:
        saved = sum(g.costs[-1] - g.costs[g.widths.index(widths[g.root])] for g in groups)
        return current - 2 * saved

    widths, predicted = solve_to_budget(groups, current, 6.0, predict)
    assert 6.0 * 0.9 <= predicted <= 6.0 * 1.01
    assert predict(widths) == predicted
    with pytest.raises(ValueError):  # asking beyond the additive total with nothing tried still says so
        solve(groups, 3.0)


def test_solve_to_budget_already_within_budget_keeps_everything():
    groups = [GroupChoice("a", (8, 16), (1.0, 2.0), (1.0, 3.0))]
    assert solve_to_budget(groups, 2.0, 3.0, lambda w: 2.0) == ({"a": 16}, 2.0)


def test_solve_to_budget_never_stalls_short_of_a_reachable_budget():
    """Coarse candidates and a whole model that saves 47% of the additive savings: asking a little more saving
    returns the same widths, so the secant steps crawl and ten solves all miss a budget the narrowest widths
    beat by far (found by a random search; the torch quickstart's 1.5x budget missed its aim so on one CI
    machine). The whole-model prediction then narrows group by group until the budget is met."""
    groups = [
        GroupChoice("a", (16, 24, 32, 48), (0.0371, 0.0605, 0.0658, 0.0668), (1.06, 2.09, 7.76, 8.32)),
        GroupChoice("b", (8, 16, 24, 48), (0.0427, 0.0505, 0.0528, 0.0618), (3.81, 4.86, 6.44, 8.44)),
        GroupChoice(
            "c", (8, 16, 24, 32, 56), (0.0115, 0.0208, 0.0364, 0.0391, 0.0507), (0.16, 1.49, 1.97, 6.06, 7.30)
        ),
        GroupChoice("d", (16, 40, 48, 56), (0.0128, 0.014, 0.0164, 0.0517), (0.02, 0.15, 8.58, 9.50)),
    ]
    current = 0.11

    def predict(widths: dict[str, int]) -> float:
        saved = sum(g.costs[-1] - g.costs[g.widths.index(widths[g.root])] for g in groups)
        return current - 0.46995 * saved

    budget = 0.092183
    assert predict({g.root: g.widths[0] for g in groups}) < 0.6 * budget  # the floor is far below
    widths, predicted = solve_to_budget(groups, current, budget, predict)
    assert predicted <= budget * 1.01
    assert predict(widths) == predicted


def test_a_correction_towards_a_slower_model_never_aims_at_the_unpruned_one():
    """A pruned model measured far under its budget (a noisy reading of a 0.1 ms model) once made the
    correction aim past the reference and keep every channel (test_frameworks' Keras budget, 1 run in 3).
    The aim stays under the secant through the unpruned model and the measured one; too slow a model is
    rescaled by its miss as before; and a faster measurement never asks for a faster model."""
    from edgecompress.stages.prune.latency_budget import AIM, correction_aim

    budget = 1 / 1.5
    aimed = budget * AIM
    aims = [correction_aim(aimed, miss, budget, budget) for miss in (0.3, 0.5, 0.6, 0.75, 0.9, 0.97)]
    assert all(aimed < a < 1 for a in aims), aims
    assert aims == sorted(aims, reverse=True)  # the faster it measured, the slower the model aimed at
    for miss in (1.05, 1.2, 2.0):
        assert correction_aim(aimed, miss, budget, budget) == pytest.approx(aimed * AIM / miss)
