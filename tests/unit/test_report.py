"""Build cost in the report: per-stage time and training images/s, resumed steps, the phases' wall time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgecompress.console import UI
from edgecompress.report import Report, Step
from edgecompress.summary import print_summary, summary_table


def _step(name: str, stage_type: str | None, seconds: float, images: int, **kw) -> Step:
    return Step(
        name=name,
        stage_type=stage_type,
        test_accuracy=0.9,
        val_accuracy=0.9,
        params=100,
        macs=1000,
        seconds=seconds,
        images=images,
        **kw,
    )


def _report(**kw) -> Report:
    fields = dict(
        edgecompress_version="0",
        recipe_name="cost",
        recipe_hash="ab" * 32,
        created="now",
        seed=0,
        framework="torch",
        machine={},
        versions={},
        data={"dataset": "digits"},
        steps=[
            _step("baseline", None, 0.0, 0),
            _step("0:train", "train", 4.0, 10_000, resumed=True),
            _step("1:prune", "prune", 0.5, 0),
        ],
        reference_step="0:train",
        artifacts=[],
        gates=[],
        wall_seconds=9.0,
        phase_seconds={"stages": 4.6, "export": 3.1, "profile": 1.2},
    )
    return Report(**{**fields, **kw})


def test_images_per_second_over_the_stage_wall_time():
    assert _step("0:train", "train", 4.0, 10_000).images_per_second == 2500.0
    assert _step("1:prune", "prune", 0.5, 0).images_per_second is None, "no training: no rate"
    assert _step("baseline", None, 0.0, 0).images_per_second is None
    dumped = json.loads(_step("0:train", "train", 4.0, 10_000).model_dump_json())
    assert dumped["images"] == 10_000 and dumped["images_per_second"] == 2500.0


def test_report_round_trips_with_the_computed_rate():
    report = _report()
    assert Report.model_validate_json(report.model_dump_json()) == report


def test_reports_written_before_build_cost_still_load():
    old = json.loads(_report().model_dump_json())
    del old["phase_seconds"]
    for step in old["steps"]:
        for key in ("images", "resumed", "images_per_second"):
            del step[key]
    report = Report.model_validate(old)
    assert report.phase_seconds == {} and report.steps[1].images == 0 and not report.steps[1].resumed
    md = report.to_markdown()
    assert "- build wall time 9.0 s\n" in md
    assert "| 0:train (reference) | 0.9000 | +0.00 pt | 1,000 | — | 100 | 4.0 | — |" in md


def test_markdown_shows_time_rate_resumed_and_phases():
    md = _report().to_markdown()
    assert "- build wall time 9.0 s (stages 4.6 s, export 3.1 s, profile 1.2 s)" in md
    assert "| step | test acc | Δ vs reference | MACs | vs reference | params | time (s) | images/s |" in md
    assert "| 0:train (reference) (resumed) | 0.9000 | +0.00 pt | 1,000 | — | 100 | 4.0 | 2,500 |" in md
    assert "| 1:prune | 0.9000 | +0.00 pt | 1,000 | — | 100 | 0.5 | — |" in md
    assert "loaded from stage checkpoints" in md


def test_console_summary_has_time_and_rate_per_stage(capsys: pytest.CaptureFixture[str]):
    report = _report()
    table = summary_table(report)
    columns = [c.header for c in table.columns]
    assert columns[5:7] == ["time s", "img/s"]
    assert list(table.columns[5].cells) == ["", "4.0", "0.5"], "the baseline ran no stage"
    assert list(table.columns[6].cells) == ["", "2,500", "—"]
    assert list(table.columns[0].cells)[1] == "0:train (reference) (resumed)"
    print_summary(report, Path("out"), UI(verbosity=0))
    assert "in 9.0 s (stages 4.6 s, export 3.1 s, profile 1.2 s)" in capsys.readouterr().err
