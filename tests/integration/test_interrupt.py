"""A build stopped by SIGINT (Ctrl-C) or SIGTERM (a scheduler, `kill`): exit 130 / 143 with one line saying
so, its temporary build directory removed, its child processes (the fresh profiling processes) stopped, and
the previous output left as it was. The signal is sent while the build is profiling, i.e. while it has a
child process, so that all three are exercised."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import EXAMPLES

pytestmark = pytest.mark.integration

RECIPE = f"""\
name: stopped
seed: 1
model: {{source: {EXAMPLES}:tiny_cnn, input_shape: [1, 1, 16, 16]}}
data: {{dataset: digits, image_size: [16, 16]}}
stages:
  - {{type: train, epochs: 1, lr: 0.005}}
export:
  - {{format: tflite, precision: fp32}}
profile: {{runs: 20000, warmup_seconds: 5, rounds: 3}}
"""


def _first_child(proc: subprocess.Popen, timeout: float = 300.0) -> list[psutil.Process]:
    """The build's child processes, as soon as it has one (the first profiling process)."""
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the build ended (exit {proc.returncode}) before it started a child process")
        children = parent.children(recursive=True)
        if children:
            return children
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the build started no child process in time")


@pytest.mark.parametrize(
    ("sig", "code", "name"), [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")]
)
def test_a_stopped_build_cleans_up_and_keeps_the_previous_output(tmp_path, sig, code, name):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("the previous build's report\n")  # what a previous good build left
    err_path = tmp_path / "stderr.txt"
    with err_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgecompress.cli", "build", str(recipe), "--out", str(out), "-q"],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            children = _first_child(proc)
            assert list(tmp_path.glob(".out.building-*")), "the build writes into a temporary directory"
            proc.send_signal(sig)
            rc = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    stderr = err_path.read_text().strip().splitlines()
    assert rc == code, stderr
    assert stderr[-1] == f"interrupted by {name}: stopped; temporary files removed, previous output kept"
    assert not [line for line in stderr if "Traceback" in line], stderr
    assert not list(tmp_path.glob(".out.building-*"))
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]
    assert (out / "report.md").read_text() == "the previous build's report\n"
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
