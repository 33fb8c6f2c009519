"""The adb runner with the REAL adb client against a loopback stand-in of the adb server (tests/adb_standin.py):
there is no Android phone here, so the stand-in runs the "device's" shell commands on this machine, with the
board's Python (numpy and ai-edge-litert only, tests/sshd.py) playing a Termux Python on the phone."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
litert_torch = pytest.importorskip("litert_torch")

from edgecompress.errors import ArtifactError, DeviceError  # noqa: E402
from edgecompress.exporters.base import Artifact  # noqa: E402
from edgecompress.runners.adb import AdbRunner  # noqa: E402
from edgecompress.specs import load_device  # noqa: E402
from tests import sshd  # noqa: E402
from tests.adb_standin import AdbStandIn  # noqa: E402
from tests.conftest import tiny_tflite  # noqa: E402

pytestmark = pytest.mark.integration

SHAPE = (1, 1, 16, 16)
PYTHON = str(sshd.BOARD_VENV / "bin" / "python")


@pytest.fixture
def phone(tmp_path, monkeypatch):
    if shutil.which("adb") is None:
        pytest.fail("the adb client is not installed: `make test` installs Debian's adb")
    if not Path(PYTHON).exists():
        pytest.fail(f"{PYTHON} is missing: `make test` builds the board's Python")
    standin = AdbStandIn("R5CT1234", cwd=tmp_path)
    standin.start()
    for key, value in standin.client_env().items():
        monkeypatch.setenv(key, value)
    (tmp_path / "data" / "local" / "tmp").mkdir(parents=True)
    yield standin
    standin.stop()


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Artifact:
    return tiny_tflite(tmp_path_factory.mktemp("adb_artifact"))


def _device(tmp_path: Path, *, serial: str = "R5CT1234", python: str = PYTHON, affinity: str | None = None):
    workdir = tmp_path / "data" / "local" / "tmp"
    conn = f"{{runner: adb, serial: {serial}, python: '{python}', workdir: '{workdir}', connect_timeout: 10"
    conn += f", affinity: '{affinity}'}}" if affinity else "}"
    (tmp_path / "devices").mkdir(exist_ok=True)
    (tmp_path / "devices" / "phone.yaml").write_text(
        "description: 'a phone over adb (loopback stand-in: no phone here)'\n"
        "cpu: {model: detect, arch: detect, cores: 2}\nmemory_mb: 1024\nthreads: 1\nruntimes: [litert]\n"
        f"connection: {conn}\n"
    )
    return load_device("phone", base_dir=tmp_path)


def _leftovers(tmp_path: Path) -> list[str]:
    return [p.name for p in (tmp_path / "data" / "local" / "tmp").iterdir()]


def test_measures_over_adb_pinned_to_the_mask(phone, tmp_path, artifact):
    device = _device(tmp_path, affinity="1")
    m = AdbRunner().run(artifact, device, runs=20, warmup_seconds=0.05, threads=1)
    assert m.device == "phone" and m.latency.runs == 20 and m.runtime_version.startswith("ai-edge-litert")
    assert m.file_size_bytes == artifact.path.stat().st_size and m.op_profile is not None
    shells = [c for c in phone.calls if "measure.py" in c]
    assert shells and all("taskset 1 " in c for c in shells), shells
    facts = AdbRunner().facts(device, "litert")
    assert facts.runtime_version == m.runtime_version
    batch = AdbRunner().run_batch([artifact, artifact], device, runs=5, warmup_seconds=0, threads=1, rounds=2)
    assert [len(t.rounds_p50_ms) for t in batch.timings] == [2, 2]
    # parity on the device: the phone's outputs for a few images, against this machine's
    import numpy as np

    from edgecompress.runtimes.sessions import open_session

    x = np.random.default_rng(0).standard_normal((5, *SHAPE[1:])).astype(np.float32)
    there, precision = AdbRunner().outputs(artifact, device, x, threads=1)
    session = open_session("litert", artifact.path, threads=1)
    here = np.stack([session.run(x[i : i + 1]).reshape(-1) for i in range(len(x))])
    assert there.shape == (5, 10) and precision == "f32" and np.array_equal(there, here)
    assert _leftovers(tmp_path) == []


def test_an_unauthorized_or_offline_phone_is_one_line(phone, tmp_path, artifact):
    phone.set_state("R5CT1234", "unauthorized")
    with pytest.raises(DeviceError) as info:
        AdbRunner().run(artifact, _device(tmp_path), runs=5, warmup_seconds=0, threads=1)
    assert str(info.value) == (
        "phone: R5CT1234 has not authorized this computer: unlock it and accept the USB debugging prompt"
    )
    phone.set_state("R5CT1234", "offline")
    with pytest.raises(DeviceError, match=r"^phone: R5CT1234 is offline: reconnect it"):
        AdbRunner().run(artifact, _device(tmp_path), runs=5, warmup_seconds=0, threads=1)
    with pytest.raises(DeviceError, match=r"^phone: NOSUCH is not reachable over adb"):
        AdbRunner().run(artifact, _device(tmp_path, serial="NOSUCH"), runs=5, warmup_seconds=0, threads=1)


def test_a_full_device_and_a_missing_runtime(phone, tmp_path, artifact):
    phone.push_limit = 1000
    with pytest.raises(DeviceError) as info:
        AdbRunner().run(artifact, _device(tmp_path), runs=5, warmup_seconds=0, threads=1)
    assert str(info.value).startswith("phone: copying measure.py to ") and "No space left on device" in str(
        info.value
    )
    assert _leftovers(tmp_path) == []
    phone.push_limit = None
    bare = tmp_path / "bare"
    shutil.copytree(sshd.BOARD_VENV, bare, symlinks=True)
    shutil.rmtree(next((bare / "lib").glob("python3*/site-packages")) / "ai_edge_litert")
    with pytest.raises(DeviceError, match=r"^phone: LiteRT is not installed: pip install ai-edge-litert"):
        AdbRunner().run(
            artifact,
            _device(tmp_path, python=str(bare / "bin" / "python")),
            runs=5,
            warmup_seconds=0,
            threads=1,
        )
    with pytest.raises(DeviceError, match=r"^phone: no /nonexistent/python on the device"):
        AdbRunner().run(
            artifact, _device(tmp_path, python="/nonexistent/python"), runs=5, warmup_seconds=0, threads=1
        )
    assert _leftovers(tmp_path) == []


def test_a_lost_phone_is_said_and_cleaned_up(phone, tmp_path, artifact):
    """adb 29 exits 0 when the connection dies before the exit packet: the runner must not take that for a
    success."""
    device = _device(tmp_path)

    def unplug() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any("measure.py" in c for c in phone.calls):
                time.sleep(0.5)
                phone.kill_connections()
                return
            time.sleep(0.02)

    killer = threading.Thread(target=unplug)
    killer.start()
    try:
        with pytest.raises(DeviceError) as info:
            AdbRunner().run(artifact, device, runs=500_000, warmup_seconds=0, threads=1)
    finally:
        killer.join()
    assert str(info.value).startswith("phone: the connection to R5CT1234 was lost")
    assert _leftovers(tmp_path) == []


def test_a_corrupt_artifact_is_named(phone, tmp_path, artifact):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(artifact.path.read_bytes()[:8] + b"\xff" * 4096)
    bad = artifact.model_copy(update={"path": broken, "files": [broken]})
    with pytest.raises(ArtifactError) as info:
        AdbRunner().run(bad, _device(tmp_path), runs=5, warmup_seconds=0, threads=1)
    assert str(info.value).startswith(f"phone: {broken}: LiteRT cannot load it: ")


def test_devices_probe_over_adb(phone, tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "devices" / "pixel.yaml"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgecompress.cli",
            "devices",
            "probe",
            "adb://R5CT1234",
            "--python",
            PYTHON,
            "--workdir",
            str(tmp_path / "data/local/tmp"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )
    assert res.returncode == 0, res.stderr
    device = load_device("pixel", base_dir=tmp_path)
    assert device.connection.runner == "adb" and device.connection.serial == "R5CT1234"
    assert device.runtimes == ["litert"] and device.probed["python"]["path"].startswith(str(sshd.BOARD_VENV))
    assert device.connection.workdir == str(tmp_path / "data/local/tmp") and _leftovers(tmp_path) == []
