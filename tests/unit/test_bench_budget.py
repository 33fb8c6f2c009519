"""The budget benchmark's arithmetic (benchmarks/budget_suite.py): curves compared at equal latency by
interpolation, the hand chain's latency at equal accuracy, budgets met, and the targets' verdicts."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
budget_suite = pytest.importorskip("budget_suite")
Timing = budget_suite.Timing
Variant = budget_suite.Variant


def _variant(method: str, knob: float, ms: float, acc: float, seed: int = 0) -> Variant:
    v = Variant(method, knob, seed)
    v.timing = {r: Timing((ms, ms * 1.02)) for r in budget_suite.RUNTIMES}
    v.accuracy = dict.fromkeys(budget_suite.RUNTIMES, acc)
    return v


def _settings(**kw):
    import argparse

    args = argparse.Namespace(
        quick=True,
        long=False,
        models=None,
        train=None,
        base_epochs=None,
        finetune_epochs=None,
        budgets=None,
        budget_exports=None,
        rounds=None,
    )
    s = budget_suite.settings_from(args)
    return s.__class__(**(s.__dict__ | kw))


def test_interpolate_inside_the_range_only():
    pts = [(1.0, 0.80), (2.0, 0.90)]
    assert budget_suite.interpolate(pts, 1.5) == pytest.approx(0.85)
    assert budget_suite.interpolate(pts, 2.0) == pytest.approx(0.90)
    assert budget_suite.interpolate(pts, 0.9) is None and budget_suite.interpolate(pts, 2.1) is None


def test_latency_at_accuracy_is_where_the_curve_first_reaches_it():
    pts = [(1.0, 0.80), (2.0, 0.90), (3.0, 0.92)]
    assert budget_suite.latency_at_accuracy(pts, 0.85) == pytest.approx(1.5)
    assert budget_suite.latency_at_accuracy(pts, 0.70) == pytest.approx(1.0)
    assert budget_suite.latency_at_accuracy(pts, 0.95) is None


def test_compare_and_targets():
    variants = [
        _variant("unpruned", 1.0, 4.0, 0.93),
        _variant("budget", 2.0, 2.0, 0.91),
        _variant("budget", 4.0, 1.02, 0.85),
        _variant("uniform", 0.3, 2.5, 0.90),
        _variant("uniform", 0.6, 1.0, 0.80),
        _variant("macs", 0.5, 2.2, 0.905),
        _variant("macs", 0.2, 0.9, 0.78),
        _variant("hand", 0.3, 2.6, 0.88),
        _variant("hand", 0.6, 1.1, 0.70),
    ]
    result = {"model": "MobileNetV2-digits", "variants": variants}
    rows = {(r["speedup"], r["runtime"]): r for r in budget_suite.compare(result)}
    row = rows[(2.0, "litert")]
    assert row["measured_speedup"] == pytest.approx(2.0)
    # uniform at 2.0 ms: between (1.0, 0.80) and (2.5, 0.90)
    assert row["uniform"] == pytest.approx(0.80 + 0.10 * (1.0 / 1.5))
    assert row["hand_latency_ratio"] is None  # the hand chain never reaches 91%
    s = _settings(budgets=(2.0, 4.0), budget_exports=("tflite-int8",))
    hits = budget_suite.budget_hits(s, result)
    assert [h["met"] for h in hits] == [True, True]  # 2.0 vs 2.0 ms; 1.02 vs 1.0 ms (+2%)
    lines = "\n".join(budget_suite.targets(s, [result]))
    assert "at every budget: 4 of 4 comparable (budget, runtime) points — **holds**" in lines
    assert "+1 pt over both at 3x and 4x on at least one model: 2 of 2 points — **holds**" in lines
    assert (
        "Budget met within +5% in ≥90% of builds: 2 of 2; also within 15% below: 2 of 2 — **holds**" in lines
    )


def test_a_missed_budget_fails_the_target():
    variants = [
        _variant("unpruned", 1.0, 4.0, 0.93),
        _variant("budget", 2.0, 2.0, 0.91),
        _variant("budget", 4.0, 1.1, 0.85),
    ]
    result = {"model": "m", "variants": variants}
    s = _settings(budgets=(2.0, 4.0), budget_exports=("tflite-int8",))
    assert [h["met"] for h in budget_suite.budget_hits(s, result)] == [True, False]  # 1.1 ms vs 1.0: +10%
    lines = "\n".join(budget_suite.targets(s, [result]))
    assert (
        "Budget met within +5% in ≥90% of builds: 1 of 2; also within 15% below: 1 of 2 — **does not hold**"
        in lines
    )
