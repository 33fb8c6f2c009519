"""The SSH runner against a real OpenSSH server on 127.0.0.1 (tests/sshd.py): a "board" account whose Python
has numpy and ai-edge-litert only. Measurements come back as the local runner's do; a wrong host key, an
unknown one (and accept-new), an unreachable port, a connection killed mid-run, a board without the runtime
and a full temporary directory each end in one line naming the device and the fix, with the board's
temporary files removed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
litert_torch = pytest.importorskip("litert_torch")
pytest.importorskip("asyncssh")

from edgecompress.errors import ArtifactError, DeviceError, RecipeError  # noqa: E402
from edgecompress.exporters.base import Artifact  # noqa: E402
from edgecompress.runners.local import LocalRunner  # noqa: E402
from edgecompress.runners.ssh import SSHRunner  # noqa: E402
from edgecompress.specs import load_device  # noqa: E402
from tests import sshd  # noqa: E402
from tests.conftest import tiny_tflite  # noqa: E402

pytestmark = pytest.mark.integration

SHAPE = (1, 1, 16, 16)


@pytest.fixture(scope="module")
def board():
    b = sshd.make_board()
    yield b
    b.stop()
    shutil.rmtree(b.root, ignore_errors=True)


@pytest.fixture
def client(board, monkeypatch):
    """This process as the SSH client: HOME with the fixture's ~/.ssh, no agent; known_hosts restored."""
    monkeypatch.setenv("HOME", str(board.home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    saved = board.known_hosts.read_text()
    yield board
    board.known_hosts.write_text(saved)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Artifact:
    return tiny_tflite(tmp_path_factory.mktemp("ssh_artifact"))


def _device(board, tmp_path: Path, name: str = "board", **connection):
    (tmp_path / "devices").mkdir(exist_ok=True)
    (tmp_path / "devices" / f"{name}.yaml").write_text(board.device_yaml(name, **connection))
    return load_device(name, base_dir=tmp_path)


def _leftovers(board) -> list[str]:
    """edgecompress-* directories in the board's /tmp (its TMPDIR) and the fixture's workdirs."""
    found = [p.name for p in Path("/tmp").glob("edgecompress-????????") if p.owner() == board.user]
    return found + [p.name for p in board.root.glob("work*/edgecompress-*")]


def test_the_board_python_has_numpy_and_litert_only(board):
    ok = subprocess.run([board.python, "-c", "import numpy, ai_edge_litert.interpreter"], capture_output=True)
    assert ok.returncode == 0, ok.stderr
    for absent in ("torch", "openvino", "edgecompress"):
        res = subprocess.run([board.python, "-c", f"import {absent}"], capture_output=True, cwd="/")
        assert res.returncode != 0, f"the board's Python must not have {absent}"


def test_measures_on_the_board_like_the_local_runner(client, tmp_path, artifact):
    device = _device(client, tmp_path)
    remote = SSHRunner().run(artifact, device, runs=30, warmup_seconds=0.1, threads=1)
    local = LocalRunner().run(artifact, device, runs=30, warmup_seconds=0.1, threads=1, op_profile=False)
    assert remote.device == "board" and remote.runtime == "litert" and remote.latency.runs == 30
    assert remote.runtime_version.startswith("ai-edge-litert ")
    assert remote.file_size_bytes == artifact.path.stat().st_size
    assert remote.peak_rss_mb > 0 and remote.load_ms > 0 and remote.latency.p50_ms > 0
    assert remote.isa_flags == local.isa_flags  # the same CPU behind the loopback
    assert remote.op_profile is not None and remote.op_profile.ops
    facts = SSHRunner().facts(device, "litert")
    assert facts.runtime_version == remote.runtime_version and facts.arch
    assert _leftovers(client) == []


def test_a_batch_of_two_artifacts_from_two_directories(client, tmp_path, artifact):
    other = tmp_path / "copy" / artifact.path.name  # the same file name in another directory
    other.parent.mkdir()
    shutil.copy(artifact.path, other)
    second = artifact.model_copy(update={"path": other, "files": [other]})
    result = SSHRunner().run_batch(
        [artifact, second], _device(client, tmp_path), runs=10, warmup_seconds=0.0, threads=1, rounds=2
    )
    assert [t.path for t in result.timings] == [str(artifact.path), str(other)]
    assert all(len(t.rounds_p50_ms) == 2 and t.error is None for t in result.timings)
    assert _leftovers(client) == []


def test_a_changed_host_key_is_refused_in_one_line(client, tmp_path, artifact):
    client.known_hosts.write_text(f"[127.0.0.1]:{client.port} " + _other_key(tmp_path) + "\n")
    with pytest.raises(DeviceError) as info:
        SSHRunner().run(artifact, _device(client, tmp_path), runs=5, warmup_seconds=0, threads=1)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("board: the host key of board does not match the one recorded in ")
    assert "ssh-keygen -R" in message


def test_an_unknown_host_key_is_refused_unless_accept_new(client, tmp_path, artifact):
    client.known_hosts.write_text("")
    with pytest.raises(DeviceError) as info:
        SSHRunner().run(artifact, _device(client, tmp_path), runs=5, warmup_seconds=0, threads=1)
    assert str(info.value).startswith("board: the host key of board is not in ")
    assert "known_hosts: accept-new" in str(info.value)
    device = _device(client, tmp_path, known_hosts="accept-new")
    SSHRunner().run(artifact, device, runs=5, warmup_seconds=0, threads=1, op_profile=False)
    recorded = client.known_hosts.read_text()
    assert recorded.startswith(f"[127.0.0.1]:{client.port} ssh-ed25519 ")
    # recorded once; a changed key is refused even with accept-new
    client.known_hosts.write_text(f"[127.0.0.1]:{client.port} " + _other_key(tmp_path) + "\n")
    with pytest.raises(DeviceError, match="does not match the one recorded"):
        SSHRunner().run(artifact, device, runs=5, warmup_seconds=0, threads=1)


def test_an_unreachable_port_is_one_line(client, tmp_path, artifact):
    device = _device(client, tmp_path, host=f"{client.user}@127.0.0.1:{sshd.free_port()}", connect_timeout=3)
    with pytest.raises(DeviceError) as info:
        SSHRunner().run(artifact, device, runs=5, warmup_seconds=0, threads=1)
    message = str(info.value)
    assert message.startswith("board: cannot reach 127.0.0.1:") and "\n" not in message


def test_a_refused_key_is_an_authentication_error(client, tmp_path, artifact):
    config = client.home / ".ssh" / "config"
    saved = config.read_text()
    sshd.keygen(tmp_path / "id_unknown", "not authorized on the board")
    try:
        config.write_text(
            saved.replace(str(client.home / ".ssh" / "id_ed25519"), str(tmp_path / "id_unknown"))
        )
        with pytest.raises(DeviceError) as info:
            SSHRunner().run(artifact, _device(client, tmp_path), runs=5, warmup_seconds=0, threads=1)
        assert str(info.value).startswith("board: board refused every key (authentication failed)")
        assert "passwords are not used" in str(info.value)
        config.write_text(saved.replace("id_ed25519", "id_missing"))
        with pytest.raises(
            DeviceError, match=r"id_missing: no such file \(named in ~/.ssh/config for board\?\)"
        ):
            SSHRunner().run(artifact, _device(client, tmp_path), runs=5, warmup_seconds=0, threads=1)
    finally:
        config.write_text(saved)


def test_a_board_without_the_runtime(client, tmp_path, artifact):
    """The board's plain Python (numpy only, no LiteRT): one line saying what to install where."""
    bare = client.root / "bare"
    if not bare.exists():
        shutil.copytree(client.root / "venv", bare, symlinks=True)
        site = next((bare / "lib").glob("python3*/site-packages"))
        shutil.rmtree(site / "ai_edge_litert")
    device = _device(client, tmp_path, python=str(bare / "bin" / "python"))
    with pytest.raises(DeviceError) as info:
        SSHRunner().run(artifact, device, runs=5, warmup_seconds=0, threads=1)
    assert str(info.value).startswith("board: LiteRT is not installed: pip install ai-edge-litert")
    with pytest.raises(DeviceError, match=r"litert is not installed for .*bare/bin/python on the device"):
        SSHRunner().facts(device, "litert")
    with pytest.raises(DeviceError, match="no /nonexistent/python on the device"):
        SSHRunner().run(
            artifact,
            _device(client, tmp_path, python="/nonexistent/python"),
            runs=5,
            warmup_seconds=0,
            threads=1,
        )
    assert _leftovers(client) == []


def test_a_full_or_read_only_workdir(client, tmp_path, artifact):
    """A workdir the board cannot write to, and one too small for the artifact (a 64 KiB tmpfs where the
    fixture runs as root; else a directory the board account cannot write)."""
    locked = client.root / "work-locked"
    locked.mkdir(mode=0o555, exist_ok=True)
    if client.user != "root":
        with pytest.raises(DeviceError) as info:
            SSHRunner().run(
                artifact, _device(client, tmp_path, workdir=str(locked)), runs=5, warmup_seconds=0, threads=1
            )
        assert str(info.value).startswith(
            f"board: cannot make a temporary directory in {locked} on the device"
        )
    small = client.root / "work-small"
    small.mkdir(exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=1777", "tmpfs", str(small)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip()}); the locked case ran"
        )
    try:
        big = artifact.path.parent / "big.tflite"
        big.write_bytes(artifact.path.read_bytes() + b"\0" * 200_000)
        large = artifact.model_copy(update={"path": big, "files": [big]})
        with pytest.raises(DeviceError) as info:
            SSHRunner().run(
                large, _device(client, tmp_path, workdir=str(small)), runs=5, warmup_seconds=0, threads=1
            )
        assert str(info.value).startswith(f"board: copying to {small}/edgecompress-")
        assert "free space there" in str(info.value)
        assert list(small.iterdir()) == []  # removed after the failure
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_a_connection_killed_mid_run_is_one_line_and_cleaned_up(client, tmp_path, artifact):
    device = _device(client, tmp_path)

    def kill_sessions() -> None:
        # once the profiling process runs on the board, kill the sshd session processes serving it
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = subprocess.run(
                ["pgrep", "-u", client.user, "-f", "measure.py"], capture_output=True, text=True
            )
            if found.stdout.strip():
                subprocess.run(["pkill", "-KILL", "-u", client.user, "-f", "@notty"], check=False)
                subprocess.run(["pkill", "-KILL", "-u", client.user, "-f", "measure.py"], check=False)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_sessions)
    killer.start()
    try:
        with pytest.raises(DeviceError) as info:
            SSHRunner().run(artifact, device, runs=200_000, warmup_seconds=0, threads=1)
    finally:
        killer.join()
    message = str(info.value)
    assert message.startswith("board: "), message
    assert "connection was lost" in message or "was killed on the device" in message, message
    assert _leftovers(client) == []  # removed over a new connection


def test_a_corrupt_artifact_on_the_device_names_the_file(client, tmp_path, artifact):
    broken = tmp_path / "broken.tflite"
    data = artifact.path.read_bytes()
    broken.write_bytes(data[:8] + b"\xff" * 4096)  # a sound header (root table inside), nonsense after it
    bad = artifact.model_copy(update={"path": broken, "files": [broken]})
    with pytest.raises(ArtifactError) as info:
        SSHRunner().run(bad, _device(client, tmp_path), runs=5, warmup_seconds=0, threads=1)
    assert str(info.value).startswith(
        f"board: {broken}: LiteRT cannot load it: "
    )  # the local name, not the board's
    assert _leftovers(client) == []


def test_device_files_never_hold_a_password(tmp_path):
    (tmp_path / "devices").mkdir()
    (tmp_path / "devices" / "pi.yaml").write_text(
        "description: x\ncpu: {model: a, arch: aarch64, cores: 4}\nmemory_mb: 1\nruntimes: [litert]\n"
        "connection: {runner: ssh, host: pi, password: hunter2}\n"
    )
    with pytest.raises(RecipeError) as info:
        load_device("pi", base_dir=tmp_path)
    assert "no password or passphrase in a device file" in str(info.value) and "hunter2" not in str(
        info.value
    )


def _other_key(tmp_path: Path) -> str:
    sshd.keygen(tmp_path / "other", "other")
    return " ".join((tmp_path / "other.pub").read_text().split()[:2])


BUILD = f"""\
name: two-devices
seed: 1
model: {{source: {sshd.REPO / "examples" / "models.py"}:tiny_cnn, input_shape: [1, 1, 16, 16]}}
data: {{dataset: digits, image_size: [16, 16]}}
stages:
  - {{type: train, epochs: 1, lr: 0.005}}
export:
  - {{format: tflite, precision: fp32}}
devices: [desktop, board]
profile: {{runs: 20, warmup_seconds: 0.05, rounds: 2}}
"""


def test_a_build_measures_on_desktop_and_the_board_side_by_side(client, tmp_path):
    """...and runs the test split through the artifact on the board (profile.parity_on_device): the same
    LiteRT on the same CPU gives the same answers."""
    from edgecompress.pipeline import run_build

    _device(client, tmp_path)
    (tmp_path / "recipe.yaml").write_text(BUILD.replace("rounds: 2}", "rounds: 2, parity_on_device: true}"))
    report = run_build(tmp_path / "recipe.yaml", out=tmp_path / "out", verbosity=0)
    (artifact,) = report.artifacts
    assert sorted(artifact.measurements) == ["board", "desktop"]
    board = artifact.measurements["board"]
    assert len(board.latency.rounds_p50_ms) == 2 and board.runtime_version.startswith("ai-edge-litert")
    assert [(d.name, d.runner, d.error) for d in report.devices] == [
        ("desktop", "local", None),
        ("board", "ssh", None),
    ]
    parity = artifact.device_parity["board"]
    assert parity.n == report.data["test"] and parity.agreement == 1.0 and parity.max_abs_diff == 0.0
    assert parity.accuracy == artifact.parity.accuracy and "desktop" not in artifact.device_parity
    assert any(g.subject == "board/tflite-fp32 vs here" and g.passed for g in report.gates)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| board | tflite-fp32 | " in text.split("## Parity on the device")[1]
    assert "Same answers on the device?" in (tmp_path / "out" / "report.html").read_text()
    assert "| board (loopback board over SSH (test fixture)) | ssh board | measured |" in text
    assert "| board | tflite-fp32 |" in text and "| desktop | tflite-fp32 |" in text
    assert _leftovers(client) == []


def test_a_failed_device_is_marked_and_the_others_kept(client, tmp_path):
    """The board's host key is unknown: the build still writes its output with the desktop's results and
    the board marked failed, then exits 1 naming the device."""
    _device(client, tmp_path)
    client.known_hosts.write_text("")
    (tmp_path / "recipe.yaml").write_text(BUILD)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgecompress.cli",
            "build",
            str(tmp_path / "recipe.yaml"),
            "--out",
            str(tmp_path / "out"),
            "-q",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(client.home)},
    )
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[-2].startswith("error: device board failed: board: the host key of board is not in ")
    assert lines[-1] == f"error: the other devices' results are in {tmp_path / 'out' / 'report.md'}"
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert list(saved["artifacts"][0]["measurements"]) == ["desktop"]
    board = next(d for d in saved["devices"] if d["name"] == "board")
    assert board["error"].startswith("board: the host key of board is not in ")
    assert "**failed**: board: the host key" in (tmp_path / "out" / "report.md").read_text()


def test_devices_probe_writes_a_profile_that_measures(client, tmp_path, artifact):
    out = tmp_path / "devices" / "probed.yaml"
    env = {**os.environ, "HOME": str(client.home)}
    env.pop("SSH_AUTH_SOCK", None)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgecompress.cli",
            "devices",
            "probe",
            "ssh://board",
            "--python",
            client.python,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"wrote {out}: ") and "runtimes: litert;" in res.stdout
    device = load_device("probed", base_dir=tmp_path)
    local = sshd.REPO / "edgecompress" / "runtimes" / "probe.py"
    here = json.loads(
        subprocess.run([sys.executable, str(local)], capture_output=True, text=True, check=True).stdout
    )
    assert device.cpu.model == here["cpu_model"] and device.cpu.isa == here["isa_flags"]  # the same CPU
    assert device.runtimes == ["litert"], "the board's Python has LiteRT and no OpenVINO"
    assert device.connection.runner == "ssh" and device.connection.host == "board"
    assert device.connection.python == client.python
    assert device.probed["python"]["path"].startswith(str(client.root))
    assert device.probed["runtimes"]["openvino"] is None and device.probed["runtimes"]["numpy"]
    assert device.memory_mb == here["memory_mb"] and device.threads == device.cpu.cores
    m = SSHRunner().run(artifact, device, runs=5, warmup_seconds=0, threads=1, op_profile=False)
    assert m.device == "probed" and m.latency.runs == 5
    listing = subprocess.run(
        [sys.executable, "-m", "edgecompress.cli", "devices"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    line = next(x for x in listing.stdout.splitlines() if x.startswith("probed "))
    assert "ssh board" in line and "probed 20" in line
    # a wrong host key: one line, exit 1, nothing written
    client.known_hosts.write_text(f"[127.0.0.1]:{client.port} " + _other_key(tmp_path) + "\n")
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgecompress.cli",
            "devices",
            "probe",
            "ssh://board",
            "--out",
            str(tmp_path / "x.yaml"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert again.returncode == 1 and not (tmp_path / "x.yaml").exists()
    (line,) = again.stderr.strip().splitlines()
    assert line.startswith("error: x: the host key of board does not match the one recorded in "), line


def _energy_device(board, tmp_path: Path, sysfs: Path):
    text = board.device_yaml("board") + f"energy: {{source: rapl, sysfs_root: '{sysfs}'}}\n"
    (tmp_path / "devices").mkdir(exist_ok=True)
    (tmp_path / "devices" / "board.yaml").write_text(text)
    return load_device("board", base_dir=tmp_path)


def test_energy_is_measured_on_the_board_through_a_wrapping_rapl_counter(client, tmp_path, artifact):
    """A powercap tree on the board (Documentation/power/powercap/powercap.rst layout) whose counter a thread
    here advances at 5 W and wraps every 0.4 s (max_energy_range_uj 2 J): the board reads it over its own
    windows; idle power 5 W, net energy per inference ~0 (the fake draws the same busy or idle)."""
    sysfs = client.root / "sysfs"
    zone = sysfs / "class" / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "name").write_text("package-0\n")
    (zone / "max_energy_range_uj").write_text("2000000\n")
    (zone / "energy_uj").write_text("0\n")
    for p in (sysfs, *sysfs.rglob("*")):
        p.chmod(0o755 if p.is_dir() else 0o644)
    stop = threading.Event()

    def advance() -> None:
        start = time.monotonic()
        while not stop.wait(0.005):
            uj = int((time.monotonic() - start) * 5_000_000) % 2_000_000
            (zone / ".next").write_text(f"{uj}\n")
            (zone / ".next").chmod(0o644)
            os.replace(zone / ".next", zone / "energy_uj")

    writer = threading.Thread(target=advance)
    writer.start()
    try:
        m = SSHRunner().run(
            artifact,
            _energy_device(client, tmp_path, sysfs),
            runs=20,
            warmup_seconds=0,
            threads=1,
            op_profile=False,
            energy=(1.0, 2),
        )
    finally:
        stop.set()
        writer.join()
    e = m.energy
    assert e is not None and e.label == "measured (rapl)" and e.windows == 2
    assert e.idle_watts == pytest.approx(5.0, rel=0.1)
    assert e.gross_mj_per_inference > 0 and abs(e.mj_per_inference) < 0.15 * e.gross_mj_per_inference
    assert m.thermal is not None
    with pytest.raises(DeviceError) as info:
        SSHRunner().run(
            artifact,
            _energy_device(client, tmp_path, client.root / "no-sysfs"),
            runs=5,
            warmup_seconds=0,
            threads=1,
            energy=(0.5, 1),
        )
    assert str(info.value).startswith("board: cannot measure energy: rapl: no RAPL package domains under ")
    assert _leftovers(client) == []


def test_the_latency_model_is_calibrated_through_the_ssh_runner(client, tmp_path, monkeypatch):
    """`edgecompress devices calibrate board`: the latency model's layer graphs are timed on the board by the
    SSH runner, unchanged, and cached under the board's facts (its LiteRT version, its CPU)."""
    monkeypatch.setenv("EDGECOMPRESS_CACHE", str(tmp_path / "cache"))
    _device(client, tmp_path)
    (tmp_path / "recipe.yaml").write_text(
        BUILD.replace("devices: [desktop, board]", "devices: [board]").replace(
            "stages:\n  - {type: train, epochs: 1, lr: 0.005}\n", ""
        )
    )
    env = {**os.environ, "HOME": str(client.home), "EDGECOMPRESS_CACHE": str(tmp_path / "cache")}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgecompress.cli",
            "devices",
            "calibrate",
            "board",
            "--recipe",
            str(tmp_path / "recipe.yaml"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert "board/litert:" in res.stderr and "measured now" in res.stderr  # the console is stderr
    tables = list((tmp_path / "cache").rglob("*.json"))
    assert tables, list((tmp_path / "cache").rglob("*"))
    text = " ".join(t.read_text() for t in tables)
    assert '"board"' in text and "ai-edge-litert" in text
    assert _leftovers(client) == []
