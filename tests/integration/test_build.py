"""End to end: a small recipe built for real — train, prune, distill, export to both runtimes, profile."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from edgecompress.errors import GateFailed, RecipeError
from edgecompress.pipeline import run_build
from edgecompress.report import Report
from tests.conftest import EXAMPLES, REPO

pytestmark = pytest.mark.integration

RECIPE = f"""\
name: e2e
seed: 1
model: {{source: {EXAMPLES}:tiny_cnn, input_shape: [1, 1, 16, 16]}}
data: {{dataset: digits, image_size: [16, 16], normalize: {{mean: [0.5], std: [0.5]}}}}
stages:
  - {{type: train, epochs: 4, lr: 0.005}}
  - {{type: prune, ratio: 0.3, round_to: 2}}
  - {{type: distill, epochs: 2}}
export:
  - {{format: tflite, precision: fp32}}
  - {{format: openvino, precision: fp32}}
profile: {{runs: 30, warmup_seconds: 0.2, rounds: 2}}
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE)
    out = root / "out"
    report = run_build(recipe, out=out, verbosity=0)
    return recipe, out, report


def test_outputs_written(built):
    _, out, report = built
    names = {p.name for p in out.iterdir()}
    assert {
        "report.json",
        "report.md",
        "recipe.lock.yaml",
        "model.pt2",
        "tflite-fp32.tflite",
        "tflite-fp32.json",
        "openvino-fp32.xml",
        "openvino-fp32.bin",
        "openvino-fp32.json",
    } <= names
    assert Report.model_validate_json((out / "report.json").read_text()) == report
    lock = yaml.safe_load((out / "recipe.lock.yaml").read_text())
    assert lock["recipe_hash"] == report.recipe_hash and lock["seed"] == 1 and "torch" in lock["versions"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".out")], "no temporary directory left"


def test_steps_show_what_each_stage_bought(built):
    _, _, report = built
    assert [s.name for s in report.steps] == ["baseline", "0:train", "1:prune", "2:distill"]
    assert report.reference_step == "0:train"
    trained, pruned, distilled = report.steps[1:]
    assert trained.test_accuracy > 0.8
    assert pruned.macs < 0.7 * trained.macs and pruned.params < trained.params
    assert distilled.macs == pruned.macs
    assert pruned.notes, "prune records what it removed"


def test_artifacts_verified_and_profiled(built):
    _, _, report = built
    assert [a.name for a in report.artifacts] == ["tflite-fp32", "openvino-fp32"]
    for a in report.artifacts:
        assert a.parity.n == report.data["test"]
        assert a.parity.agreement >= 0.99
        m = a.measurements["desktop"]
        assert m.latency.runs == 30 and 0 < m.latency.p50_ms <= m.latency.p99_ms
        assert len(m.latency.rounds_p50_ms) == 2 and m.latency.p50_ms == min(
            m.latency.rounds_p50_ms
        )  # the fastest round
        assert m.op_profile is not None  # taken in the first round
        assert m.peak_rss_mb >= m.baseline_rss_mb > 0 and m.file_size_bytes > 0
    assert all(g.passed for g in report.gates)


def test_artifacts_load_outside_edgecompress(built):
    """Plain runtime code, no edgecompress import: the artifacts agree with the saved torch model."""
    _, out, _ = built
    script = f"""
import json, numpy as np, torch
from ai_edge_litert.interpreter import Interpreter
import openvino as ov
from sklearn.datasets import load_digits
model = torch.export.load("{out}/model.pt2").module()
x = np.random.default_rng(0).standard_normal((20, 1, 16, 16)).astype(np.float32)
ref = model(torch.from_numpy(x)).detach().numpy().argmax(1)
it = Interpreter("{out}/tflite-fp32.tflite"); it.allocate_tensors()
i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
lite = []
for row in x:
    it.set_tensor(i, row[None]); it.invoke(); lite.append(it.get_tensor(o).argmax())
comp = ov.Core().compile_model("{out}/openvino-fp32.xml", "CPU")
vino = [comp(row[None])[0].argmax() for row in x]
print(json.dumps([float((np.array(lite) == ref).mean()), float((np.array(vino) == ref).mean())]))
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    lite, vino = json.loads(res.stdout.strip().splitlines()[-1])
    assert lite >= 0.95 and vino >= 0.95


def test_failed_gate_writes_report_then_fails(tmp_path):
    gated = tmp_path / "gated.yaml"
    gated.write_text(
        RECIPE.replace("stages:", "gates: {max_size_kb: 0.5}\nstages:")
        .replace("- {type: train, epochs: 4, lr: 0.005}", "- {type: train, epochs: 1}")
        .replace("runs: 30", "runs: 5, enabled: false")
    )
    out = tmp_path / "gated-out"
    with pytest.raises(GateFailed, match=r"max_size_kb \[tflite-fp32\]"):
        run_build(gated, out=out, verbosity=0)
    report = Report.model_validate_json((out / "report.json").read_text())
    assert [g.gate for g in report.failed_gates] == ["max_size_kb", "max_size_kb"]


def test_failed_build_keeps_previous_output(built, tmp_path):
    _, out, _ = built
    before = (out / "report.json").read_text()
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        RECIPE.replace(
            "{type: prune, ratio: 0.3, round_to: 2}",
            "{type: prune, ratio: 0.3, layer_ratios: {'no_such_layer*': 0.5}}",
        )
    )
    with pytest.raises(RecipeError, match="no_such_layer"):
        run_build(broken, out=out, verbosity=0)
    assert (out / "report.json").read_text() == before
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".out")]


def test_cli_build_exit_code_3_on_gate(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        RECIPE.replace("stages:", "gates: {min_accuracy: 0.999}\nstages:")
        .replace("epochs: 4", "epochs: 1")
        .replace("epochs: 2", "epochs: 1")
        .replace("runs: 30", "runs: 5, enabled: false")
    )
    res = subprocess.run(
        [sys.executable, "-m", "edgecompress.cli", "build", str(recipe), "--out", str(tmp_path / "o"), "-q"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert res.returncode == 3, res.stderr
    lines = res.stderr.strip().splitlines()
    assert [line.split(":")[0] for line in lines[-2:]] == ["gate failed", "gate failed"]
    assert lines[-2].startswith("gate failed: min_accuracy [tflite-fp32]")


def test_cli_profile_existing_artifact(built):
    _, out, _ = built
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgecompress.cli",
            "profile",
            str(out / "openvino-fp32.xml"),
            "--runs",
            "10",
            "--warmup",
            "0.1",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr
    m = json.loads(res.stdout)
    assert m["runtime"] == "openvino" and m["latency"]["runs"] == 10
    assert m["execution_precision"] == "f32", "the sidecar's inference precision is honoured"
    missing = subprocess.run(
        [sys.executable, "-m", "edgecompress.cli", "profile", str(out / "none.tflite")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert missing.returncode == 2 and "artifact file not found" in missing.stderr


@pytest.mark.parametrize(
    ("name", "damage", "says"),
    [
        (
            "tflite-fp32.tflite",
            lambda b: b[:3000],
            "LiteRT cannot load it: The model is not a valid Flatbuffer buffer",
        ),
        (
            "tflite-fp32.tflite",
            lambda b: b"\0" * 64,
            "not a TFLite model (no TFL3 file identifier at byte 4; 64 bytes)",
        ),
        ("openvino-fp32.bin", lambda b: b[:1000], "truncated: 1,000 bytes, the model reads up to byte"),
    ],
)
def test_cli_profile_corrupt_artifact_is_one_line_exit_2(built, tmp_path, name, damage, says):
    """A truncated or corrupt artifact: one line naming the file and what is wrong, exit 2 (it used to be the
    child process's traceback, nine lines, exit 1)."""
    _, out, _ = built
    for f in out.iterdir():
        if f.stem == name.rsplit(".", 1)[0]:
            (tmp_path / f.name).write_bytes(f.read_bytes())
    broken = tmp_path / name
    broken.write_bytes(damage(broken.read_bytes()))
    model = broken.with_suffix(".xml") if broken.suffix == ".bin" else broken
    res = subprocess.run(
        [sys.executable, "-m", "edgecompress.cli", "profile", str(model), "--runs", "5", "--warmup", "0"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: {broken}: ") and says in lines[0], lines
