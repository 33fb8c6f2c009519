"""Stage checkpoints and `build --resume`: an interrupted build resumes after its last finished stage, with
the same results as a build that was never interrupted; changed or damaged checkpoints are not used."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from edgecompress.checkpoints import StageCheckpoints, checkpoint_dir, stage_keys
from edgecompress.console import UI
from edgecompress.frameworks.torch import TorchAdapter
from edgecompress.pipeline import run_build
from edgecompress.recipe import parse_recipe
from edgecompress.report import Report, Step
from edgecompress.stages.distill.stage import DistillStage
from tests.conftest import EXAMPLES, REPO

pytestmark = pytest.mark.integration

RECIPE = f"""\
name: resume
seed: 1
model: {{source: {EXAMPLES}:tiny_cnn, input_shape: [1, 1, 16, 16]}}
data: {{dataset: digits, image_size: [16, 16], normalize: {{mean: [0.5], std: [0.5]}}}}
stages:
  - {{type: train, epochs: 3, lr: 0.005}}
  - {{type: prune, ratio: 0.3, round_to: 2}}
  - {{type: distill, epochs: 1}}
profile: {{enabled: false}}
"""


def _build(recipe: Path, out: Path, **kw) -> tuple[Report, str]:
    """run_build and its console output, lines joined (rich writes to whatever sys.stderr is when it prints,
    and wraps long lines)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        report = run_build(recipe, out=out, **kw)
    return report, " ".join(err.getvalue().split())


def _interrupt_distill(*args, **kwargs):
    raise KeyboardInterrupt


def _stages(out: Path) -> list[str]:
    return sorted(p.name for p in checkpoint_dir(out).iterdir())


def _saved_step(out: Path, name: str) -> Step:
    return Step.model_validate(
        json.loads((checkpoint_dir(out) / name / "checkpoint.json").read_text())["step"]
    )


def _copy(root: Path, to: Path, text: str = RECIPE) -> tuple[Path, Path]:
    """The interrupted build's recipe (or `text`) and checkpoints, under `to`: each test changes its own copy."""
    recipe = to / "recipe.yaml"
    recipe.write_text(text)
    shutil.copytree(checkpoint_dir(root / "out"), checkpoint_dir(to / "out"))
    return recipe, to / "out"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Report:
    root = tmp_path_factory.mktemp("whole")
    (root / "recipe.yaml").write_text(RECIPE)
    return run_build(root / "recipe.yaml", out=root / "out", verbosity=0)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """A build stopped (as by Ctrl-C) in its distill stage, after train and prune finished."""
    root = tmp_path_factory.mktemp("interrupted")
    (root / "recipe.yaml").write_text(RECIPE)
    with pytest.MonkeyPatch.context() as mp, pytest.raises(KeyboardInterrupt):
        mp.setattr(DistillStage, "apply", _interrupt_distill)
        run_build(root / "recipe.yaml", out=root / "out", verbosity=0)
    return root


@pytest.fixture(scope="module")
def resumed(interrupted, tmp_path_factory) -> tuple[Path, Report, str]:
    root = tmp_path_factory.mktemp("resumed")
    recipe, out = _copy(interrupted, root)
    report, console = _build(recipe, out, resume=True)
    return out, report, console


def test_interrupted_build_leaves_checkpoints_of_its_finished_stages(interrupted):
    out = interrupted / "out"
    assert not out.exists(), "no output from a failed build"
    assert _stages(out) == ["0-train", "1-prune"]
    prune = checkpoint_dir(out) / "1-prune"
    assert sorted(p.name for p in prune.iterdir()) == ["checkpoint.json", "model.ckpt", "teacher.ckpt"]
    assert sum(p.stat().st_size for p in checkpoint_dir(out).rglob("*")) < 1_000_000
    assert [p.name for p in interrupted.iterdir() if p.name.startswith(".out")] == [], (
        "no temporary directory"
    )


def test_resume_skips_the_finished_stages(resumed, interrupted):
    out, report, console = resumed
    assert "stage 0: train — resumed from checkpoint (saved " in console
    assert "stage 1: prune — resumed from checkpoint (saved " in console
    assert "stage 2: distill 2:distill: test acc" in console and "stage 2: distill —" not in console
    assert [s.resumed for s in report.steps] == [False, True, True, False]
    for step in report.steps[1:3]:
        saved = _saved_step(interrupted / "out", step.name.replace(":", "-"))
        assert step == saved.model_copy(update={"resumed": True})
    assert report.reference_step == "0:train", "the teacher is restored with the stages"
    assert _stages(out) == ["0-train", "1-prune", "2-distill"], "kept after a successful build"
    assert "0:train (reference) (resumed)" in (out / "report.md").read_text()


def test_resumed_build_gets_what_an_uninterrupted_one_gets(resumed, uninterrupted):
    _, report, _ = resumed
    for a, b in zip(report.steps, uninterrupted.steps, strict=True):
        assert (a.name, a.test_accuracy, a.val_accuracy, a.params, a.macs) == (
            b.name,
            b.test_accuracy,
            b.val_accuracy,
            b.params,
            b.macs,
        )
        assert json.dumps(a.notes) == json.dumps(b.notes)


@pytest.mark.skipif(
    not hasattr(TorchAdapter(), "trained_images"),
    reason="the torch adapter does not count training images yet",
)
def test_steps_count_the_images_their_stage_trained_on(uninterrupted):
    train, prune, distill = uninterrupted.steps[1:]
    assert train.images == 3 * uninterrupted.data["train"] and distill.images == uninterrupted.data["train"]
    assert prune.images == 0 and prune.images_per_second is None
    assert train.images_per_second == pytest.approx(train.images / train.seconds)


def test_checkpointed_model_is_the_one_its_step_describes(interrupted):
    from edgecompress.data import load_data

    recipe = parse_recipe(RECIPE)
    data = load_data(recipe.data, interrupted / "recipe.yaml", seed=recipe.seed)
    adapter = TorchAdapter()
    adapter.load(recipe.model, interrupted / "recipe.yaml")  # imports the model file its classes come from
    model = adapter.checkpoint_load(checkpoint_dir(interrupted / "out") / "1-prune" / "model.ckpt")
    accuracy = float((adapter.predict(model, data.test.x).argmax(1) == data.test.y).mean())
    assert accuracy == _saved_step(interrupted / "out", "1-prune").test_accuracy


def test_changed_stage_invalidates_its_checkpoint_and_later_ones_only(interrupted, tmp_path):
    recipe, out = _copy(interrupted, tmp_path, RECIPE.replace("ratio: 0.3", "ratio: 0.4"))
    train = (checkpoint_dir(out) / "0-train" / "checkpoint.json").read_text()
    report, console = _build(recipe, out, resume=True)
    assert "stage 0: train — resumed" in console
    assert (
        "stage 1: prune — checkpoint ignored: made for another model, data, seed, stage configs up to it or"
        in console
    )
    assert [s.resumed for s in report.steps] == [False, True, False, False]
    assert report.steps[2].notes["ratio"] == 0.4
    assert (checkpoint_dir(out) / "0-train" / "checkpoint.json").read_text() == train
    assert _stages(out) == ["0-train", "1-prune", "2-distill"]
    rewritten = _saved_step(out, "1-prune").model_dump(mode="json")
    assert rewritten == report.steps[2].model_dump(mode="json"), "rewritten by the stage that ran"


def test_damaged_checkpoint_is_ignored(interrupted, tmp_path):
    recipe, out = _copy(interrupted, tmp_path)
    model = checkpoint_dir(out) / "1-prune" / "model.ckpt"
    model.write_bytes(model.read_bytes()[:-100])
    report, console = _build(recipe, out, resume=True)
    assert "stage 0: train — resumed" in console
    assert (
        "stage 1: prune — checkpoint ignored: damaged (ValueError: model.ckpt does not match its checksum)"
        in (console)
    )
    assert [s.resumed for s in report.steps] == [False, True, False, False]


def test_checkpoint_that_does_not_load_falls_back_to_the_one_before(interrupted, tmp_path):
    recipe, out = _copy(interrupted, tmp_path)
    folder = checkpoint_dir(out) / "1-prune"
    (folder / "model.ckpt").write_bytes(b"not a pickle")
    meta = json.loads((folder / "checkpoint.json").read_text())
    meta["files"]["model"]["sha256"] = hashlib.sha256(b"not a pickle").hexdigest()
    (folder / "checkpoint.json").write_text(json.dumps(meta))
    report, console = _build(recipe, out, resume=True)
    assert "stage 1: prune — checkpoint ignored: it does not load" in console
    assert [s.resumed for s in report.steps] == [False, True, False, False]


def test_cli_resume_in_a_new_process(resumed, tmp_path):
    """Another process imports the model file under another module name: the pickled classes still load."""
    out, report, _ = resumed
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    shutil.copytree(checkpoint_dir(out), checkpoint_dir(tmp_path / "out"))
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgecompress.cli",
            "build",
            str(recipe),
            "--out",
            str(tmp_path / "out"),
            "--resume",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("— resumed from checkpoint") == 3
    again = Report.model_validate_json((tmp_path / "out" / "report.json").read_text())
    assert [s.test_accuracy for s in again.steps] == [s.test_accuracy for s in report.steps]


def test_without_checkpoints_resume_runs_every_stage(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        RECIPE.replace("  - {type: prune, ratio: 0.3, round_to: 2}\n  - {type: distill, epochs: 1}\n", "")
    )
    report, console = _build(recipe, tmp_path / "out", resume=True)
    where = checkpoint_dir(tmp_path / "out")
    assert f"--resume: no usable stage checkpoint in {where}; running every stage" in console
    assert not any(s.resumed for s in report.steps)


def test_quantize_stage_is_not_checkpointed(make_ctx, tmp_path):
    ctx = make_ctx()
    ctx.quantization = object()  # what `quantize` leaves for the int8 exporters
    recipe = parse_recipe(RECIPE.split("stages:")[0] + "stages: [{type: quantize, mode: ptq}]\n")
    ui = UI(verbosity=1, console=Console(file=io.StringIO()))
    checkpoints = StageCheckpoints(tmp_path / "stages", recipe, tmp_path / "recipe.yaml", ui)
    step = Step(
        name="0:quantize", stage_type="quantize", test_accuracy=1, val_accuracy=1, params=1, macs=1, seconds=1
    )
    checkpoints.save(0, ctx, None, step)
    assert not (tmp_path / "stages").exists()
    assert (
        "stage 0: quantize is not checkpointed: its quantization state is not saved"
        in ui.console.file.getvalue()
    )


def test_keys_cover_the_prefix_and_what_it_reads(tmp_path):
    path = tmp_path / "recipe.yaml"
    keys = stage_keys(parse_recipe(RECIPE), path)
    assert len(set(keys)) == 3
    distill = stage_keys(parse_recipe(RECIPE.replace("epochs: 1", "epochs: 2")), path)
    assert distill[:2] == keys[:2] and distill[2] != keys[2]
    seed = stage_keys(parse_recipe(RECIPE.replace("seed: 1", "seed: 2")), path)
    assert not set(seed) & set(keys)
    exported = RECIPE + "export: [{format: tflite}]\n"
    assert stage_keys(parse_recipe(exported), path) == keys, "no stage here measures the exports"
    auto = RECIPE.replace("round_to: 2", "round_to: auto")
    auto_keys = stage_keys(parse_recipe(auto), path)
    changed = stage_keys(parse_recipe(auto + "export: [{format: tflite}]\n"), path)
    assert changed[0] == auto_keys[0] and changed[1:] != auto_keys[1:] and changed[2] != auto_keys[2]


def test_keys_follow_the_model_file(tmp_path):
    models = tmp_path / "models.py"
    shutil.copy(EXAMPLES, models)
    text = RECIPE.replace(str(EXAMPLES), "models.py")
    keys = stage_keys(parse_recipe(text), tmp_path / "recipe.yaml")
    models.write_text(models.read_text() + "\n# edited\n")
    assert not set(stage_keys(parse_recipe(text), tmp_path / "recipe.yaml")) & set(keys)
