"""The command line: exit codes, one-line errors, schema, devices."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import EXAMPLES, REPO

GOOD = f"""\
name: cli
model: {{source: {EXAMPLES}:tiny_cnn, input_shape: [1, 1, 16, 16]}}
data: {{dataset: digits, image_size: [16, 16]}}
stages: [{{type: prune, ratio: 0.3}}]
export: [{{format: tflite}}]
"""


def run_cli(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgecompress.cli", *args], capture_output=True, text=True, cwd=cwd
    )


def test_validate_ok(write_recipe):
    out = run_cli("validate", str(write_recipe(GOOD)))
    assert out.returncode == 0, out.stderr
    assert "ok — torch model, 1 stage(s) [prune], 1 export(s)" in out.stdout


def test_validate_bad_key_is_one_line_exit_2(write_recipe):
    path = write_recipe(GOOD.replace("ratio: 0.3", "ratoi: 0.3"))
    out = run_cli("validate", str(path))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"error: {path}:4: stages.0.ratoi: unknown key 'ratoi' (did you mean 'ratio'?)"
    )


def test_missing_recipe_exit_2(tmp_path):
    out = run_cli("validate", str(tmp_path / "none.yaml"))
    assert out.returncode == 2 and "recipe file not found" in out.stderr


def test_debug_shows_traceback(tmp_path):
    out = run_cli("--debug", "validate", str(tmp_path / "none.yaml"))
    assert out.returncode == 2 and "Traceback" in out.stderr


def test_unknown_command_exit_2():
    assert run_cli("bulid").returncode == 2


def test_schema_includes_every_stage():
    out = run_cli("schema")
    assert out.returncode == 0
    schema = json.loads(out.stdout)
    assert {"TrainConfig", "PruneConfig", "DistillConfig"} <= set(schema["$defs"])
    assert schema["$defs"]["PruneConfig"]["properties"]["criterion"]["description"]


def test_devices_lists_desktop():
    out = run_cli("devices")
    assert out.returncode == 0 and out.stdout.startswith("desktop")


def test_failed_build_leaves_no_output(write_recipe, tmp_path):
    path = write_recipe(GOOD.replace("[1, 1, 16, 16]", "[1, 1, 20, 20]"))
    out_dir = tmp_path / "out"
    out = run_cli("build", str(path), "--out", str(out_dir), "-q")
    assert out.returncode == 2
    assert "does not match the data" in out.stderr
    assert not out_dir.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_inspect_lists_layers_and_totals(write_recipe):
    out = run_cli("inspect", str(write_recipe(GOOD)))
    assert out.returncode == 0, out.stderr
    assert "Conv2d" in out.stdout and "total:" in out.stdout
    assert "prunable" in out.stdout
