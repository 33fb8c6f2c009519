"""connection.mode: native — the runtimes' own benchmark tools instead of measure.py, for devices without
Python: really run here (benchmark_app and ai-edge-litert's litert-benchmark of this environment), on the
loopback SSH board (its litert-benchmark, from the board's own Python environment) and through the adb
stand-in (no phone here: tests/adb_standin.py serves the adb protocol and runs the commands on this
machine). The C++ benchmark_model is not installed here; its output formats are tested in
tests/unit/test_native_tools.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("litert_torch")
ov = pytest.importorskip("openvino")

from edgecompress.errors import DeviceError  # noqa: E402
from edgecompress.exporters.base import Artifact, artifact_from_file  # noqa: E402
from edgecompress.runners.local import LocalRunner  # noqa: E402
from edgecompress.specs import load_device  # noqa: E402
from tests import sshd  # noqa: E402
from tests.conftest import tiny_tflite  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Artifact]:
    out = tmp_path_factory.mktemp("native")
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU()).eval()
    converted = ov.convert_model(model, example_input=torch.randn(1, 1, 16, 16), input=[1, 1, 16, 16])
    ov.save_model(converted, str(out / "tiny.xml"))
    return {"litert": tiny_tflite(out), "openvino": artifact_from_file(out / "tiny.xml")}


def _device(where: Path, runtimes: str, connection: str, name: str = "dev"):
    (where / "devices").mkdir(exist_ok=True)
    (where / "devices" / f"{name}.yaml").write_text(
        "description: 'native-mode test device'\ncpu: {model: detect, arch: detect, cores: 2}\n"
        f"memory_mb: 1024\nthreads: 1\nruntimes: [{runtimes}]\n"
        "power: {idle_watts: 2.0, active_watts_per_core: 1.5, source: 'test figures'}\n"
        f"connection: {connection}\n"
    )
    return load_device(name, base_dir=where)


def _launcher(directory: Path, python: str) -> str:
    """ai-edge-litert's litert-benchmark of the Python `python` (its console script's own shebang names the
    environment it was installed in, not the copy the board runs)."""
    path = directory / "litert-benchmark"
    path.write_text(f'#!/bin/sh\nexec {python} -m ai_edge_litert.tools.benchmark_litert_model "$@"\n')
    path.chmod(0o755)
    return str(path)


def test_native_tools_here(tmp_path, artifacts):
    device = _device(tmp_path, "litert, openvino", "{runner: local, mode: native}")
    runner = LocalRunner()
    lite = runner.run(artifacts["litert"], device, runs=50, warmup_seconds=0.1, threads=1)
    assert lite.tool == "litert-benchmark" and lite.latency.runs == 50 and lite.latency.p50_ms > 0
    assert lite.peak_rss_mb is None and lite.op_profile is None and lite.python_version == ""
    assert lite.energy is not None and lite.energy.kind == "estimated"  # no sampler: the power model only
    vino = runner.run(artifacts["openvino"], device, runs=50, warmup_seconds=0.1, threads=1)
    assert vino.tool == "benchmark_app" and vino.latency.runs == 50 and vino.latency.p50_ms > 0
    assert vino.runtime_version == ov.get_version().split("-")[0] and vino.load_ms > 0
    assert "not reported by benchmark_app" in vino.rss_text
    batch = runner.run_batch(list(artifacts.values()), device, runs=20, warmup_seconds=0, threads=1, rounds=2)
    assert [len(t.rounds_p50_ms) for t in batch.timings] == [2, 2]
    with pytest.raises(DeviceError, match=r"needs connection\.mode: script"):
        runner.outputs(artifacts["litert"], device, None, threads=1)


def test_a_missing_tool_and_a_failing_one(tmp_path, artifacts):
    missing = _device(tmp_path, "litert", "{runner: local, mode: native, benchmark_model: /nonexistent/bm}")
    with pytest.raises(
        DeviceError, match=r"no /nonexistent/bm on this machine: .*connection.benchmark_model"
    ):
        LocalRunner().run(artifacts["litert"], missing, runs=5, warmup_seconds=0, threads=1)
    failing = _device(tmp_path, "litert", "{runner: local, mode: native, benchmark_model: /bin/false}", "f")
    with pytest.raises(DeviceError, match="/bin/false failed on tflite-fp32"):
        LocalRunner().run(artifacts["litert"], failing, runs=5, warmup_seconds=0, threads=1)
    batch = LocalRunner().run_batch(
        [artifacts["litert"]], failing, runs=5, warmup_seconds=0, threads=1, rounds=2
    )
    assert batch.timings[0].error and not batch.timings[0].rounds_p50_ms  # one artifact's failure, said
    # a benchmark_model built for another CPU: an ELF header for AArch64 (or x86-64 on an ARM machine)
    import platform
    import struct

    machine = 0x3E if platform.machine() in ("aarch64", "arm64") else 0xB7
    foreign = tmp_path / "benchmark_model"
    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8) + struct.pack("<HHI", 2, machine, 1) + bytes(64)
    foreign.write_bytes(header)
    foreign.chmod(0o755)
    wrong = _device(tmp_path, "litert", f"{{runner: local, mode: native, benchmark_model: '{foreign}'}}", "w")
    with pytest.raises(
        DeviceError, match=r"^w: .*benchmark_model cannot run there .*another CPU architecture"
    ):
        LocalRunner().run(artifacts["litert"], wrong, runs=5, warmup_seconds=0, threads=1)


@pytest.mark.skipif(not sshd.BOARD_VENV.exists(), reason="make test builds the board's Python")
def test_native_over_ssh(tmp_path, artifacts, monkeypatch):
    pytest.importorskip("asyncssh")
    from edgecompress.runners.ssh import SSHRunner

    board = sshd.make_board()
    try:
        monkeypatch.setenv("HOME", str(board.home))
        monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
        tool = _launcher(board.root, board.python)
        (tmp_path / "devices").mkdir()
        (tmp_path / "devices" / "board.yaml").write_text(
            board.device_yaml("board", mode="native", benchmark_model=f"'{tool}'", workdir="'~'")
        )
        device = load_device("board", base_dir=tmp_path)
        m = SSHRunner().run(artifacts["litert"], device, runs=30, warmup_seconds=0.1, threads=1)
        assert m.tool == "litert-benchmark" and m.latency.runs == 30 and m.latency.p50_ms > 0
        facts = SSHRunner().facts(device, "litert")  # /proc/cpuinfo and uname over the connection
        assert facts.runtime_version == "litert-benchmark (native)" and facts.cpu_model and facts.arch
        home = Path(sshd.board_account()[1])  # workdir '~': the board login's home, expanded there
        assert not list(home.glob("edgecompress-*")) and not [
            p for p in Path("/tmp").glob("edgecompress-????????") if p.owner() == board.user
        ]
    finally:
        board.stop()
        shutil.rmtree(board.root, ignore_errors=True)


def test_native_over_adb(tmp_path, artifacts, monkeypatch):
    """The adb stand-in (no phone here) runs the pushed files and the tool on this machine."""
    from edgecompress.runners.adb import AdbRunner
    from tests.adb_standin import AdbStandIn

    if shutil.which("adb") is None:
        pytest.fail("the adb client is not installed: `make test` installs Debian's adb")
    standin = AdbStandIn("R5CT1234", cwd=tmp_path)
    standin.start()
    try:
        for key, value in standin.client_env().items():
            monkeypatch.setenv(key, value)
        workdir = tmp_path / "data" / "local" / "tmp"
        workdir.mkdir(parents=True)
        import sys

        tool = _launcher(tmp_path, sys.executable)
        device = _device(
            tmp_path,
            "litert",
            f"{{runner: adb, serial: R5CT1234, mode: native, benchmark_model: '{tool}', workdir: '{workdir}', "
            "affinity: '1'}",
            "phone",
        )
        m = AdbRunner().run(artifacts["litert"], device, runs=30, warmup_seconds=0.1, threads=1)
        assert m.tool == "litert-benchmark" and m.latency.p50_ms > 0
        shells = [c for c in standin.calls if tool in c]
        assert shells and all(f"taskset 1 {tool} --model" in c for c in shells), shells
        assert not any("measure.py" in c for c in standin.calls)  # no script pushed or run
        assert list(workdir.iterdir()) == []
        # no tool named and none on the phone (PATH, /data/local/tmp): one line with the fix
        bare = _device(
            tmp_path,
            "litert",
            f"{{runner: adb, serial: R5CT1234, mode: native, workdir: '{workdir}'}}",
            "bare",
        )
        with pytest.raises(
            DeviceError,
            match=r"^bare: no /data/local/tmp/benchmark_model on the device .*connection.benchmark_model",
        ):
            AdbRunner().run(artifacts["litert"], bare, runs=5, warmup_seconds=0, threads=1)
        # a phone without Python is probed with its shell: the tools found, CPU, memory, thermal zones
        import os
        import subprocess

        out = tmp_path / "devices" / "pixel.yaml"
        argv = [sys.executable, "-m", "edgecompress.cli", "devices", "probe", "adb://R5CT1234", "--native"]
        argv += ["--benchmark-model", tool, "--workdir", str(workdir), "--out", str(out)]
        res = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ))
        assert res.returncode == 0, res.stderr
        probed = load_device("pixel", base_dir=tmp_path)
        from edgecompress.runtimes.probe import cpu_info

        assert probed.connection.mode == "native" and probed.connection.benchmark_model == tool
        assert "litert" in probed.runtimes and probed.probed["runtimes"]["litert"].endswith(
            f"(native: {tool})"
        )
        assert probed.cpu.model == cpu_info()[0] and probed.cpu.isa == cpu_info()[1] and probed.memory_mb > 0
        assert probed.probed["python"] is None and list(workdir.iterdir()) == []
    finally:
        standin.stop()
