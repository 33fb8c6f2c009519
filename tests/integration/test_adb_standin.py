"""The REAL adb client (Debian's `adb`) against tests/adb_standin.py, the loopback stand-in for the adb
server (there is no phone here): devices, shell exit codes and quoting, push/pull of a 3 MB file, a full
target, offline and unauthorized devices, and a connection dropped mid-command."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.adb_standin import AdbStandIn

pytestmark = pytest.mark.integration

TIMEOUT = 20


def adb_binary() -> str:
    found = shutil.which("adb")
    if found is None:
        pytest.fail("the adb client is not installed: `make test` installs it (apt-get install adb)")
    return found


@pytest.fixture
def device_dir(tmp_path: Path) -> Path:
    """Where the stand-in's shell commands run; remote paths of the tests live under it."""
    d = tmp_path / "device"
    d.mkdir()
    return d


@pytest.fixture
def standin(device_dir: Path):
    adb_binary()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "STANDIN_VAR": "x  y"}
    with AdbStandIn(env=env, cwd=device_dir) as s:
        yield s


def adb(standin: AdbStandIn, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [adb_binary(), *args],
        env=standin.client_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_devices_lists_the_serial(standin: AdbStandIn) -> None:
    result = adb(standin, "devices")
    assert result.returncode == 0, result.stderr
    assert f"{standin.serial}\tdevice" in result.stdout.splitlines()
    long = adb(standin, "devices", "-l")
    assert re.search(rf"^{re.escape(standin.serial)}\s+device .*transport_id:\d+$", long.stdout, re.M)
    state = adb(standin, "-s", standin.serial, "get-state")
    assert (state.returncode, state.stdout) == (0, "device\n")
    # the client accepted the stand-in's version and never asked it (or anything) to die
    assert "host:version" in standin.calls and "host:kill" not in standin.calls
    assert "daemon" not in result.stderr + long.stderr


def test_shell_prints_and_returns_the_exit_code(standin: AdbStandIn) -> None:
    result = adb(standin, "-s", standin.serial, "shell", "echo hi; echo oops >&2; exit 3")
    assert result.returncode == 3
    assert result.stdout == "hi\n"
    assert result.stderr == "oops\n"  # shell_v2 keeps stderr apart
    assert any(
        c.startswith("shell,v2,") and c.endswith(":echo hi; echo oops >&2; exit 3") for c in standin.calls
    )
    assert adb(standin, "-s", standin.serial, "shell", "exit 0").returncode == 0
    killed = adb(standin, "-s", standin.serial, "shell", "kill -9 $$")
    assert killed.returncode == 128 + 9  # adbd reports 0x80 | signal


def test_shell_quoting_env_and_cwd_are_as_sh_does(standin: AdbStandIn, device_dir: Path) -> None:
    command = 'printf \'[%s]\\n\' "$STANDIN_VAR" \'lit $HOME\' "a  b" $STANDIN_VAR "$(pwd)"'
    result = adb(standin, "-s", standin.serial, "shell", command)
    local = subprocess.run(
        ["/bin/sh", "-c", command], env=standin.env, cwd=device_dir, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == local.stdout
    assert result.stdout == f"[x  y]\n[lit $HOME]\n[a  b]\n[x]\n[y]\n[{device_dir}]\n"


def test_a_serial_with_a_colon(device_dir: Path) -> None:
    adb_binary()
    with AdbStandIn(serial="127.0.0.1:5555", cwd=device_dir) as s:
        result = adb(s, "-s", s.serial, "shell", "echo ok")
        assert (result.returncode, result.stdout) == (0, "ok\n"), result.stderr
        assert "host-serial:127.0.0.1:5555:features" in s.calls


def test_push_and_pull_3mb_byte_identical(standin: AdbStandIn, tmp_path: Path, device_dir: Path) -> None:
    local = tmp_path / "model.bin"
    local.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    remote = device_dir / "data" / "local" / "tmp" / "model.bin"  # parents created as adbd does
    pushed = adb(standin, "-s", standin.serial, "push", str(local), str(remote))
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert "1 file pushed" in pushed.stdout
    assert sha256(remote) == sha256(local)
    back = tmp_path / "back.bin"
    pulled = adb(standin, "-s", standin.serial, "pull", str(remote), str(back))
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert sha256(back) == sha256(local)
    kinds = [kind for kind, _ in standin.sync_requests]
    assert kinds == ["STA2", "SEND", "QUIT", "STA2", "RECV", "QUIT"]
    missing = adb(standin, "-s", standin.serial, "pull", str(device_dir / "nope"), str(tmp_path / "x"))
    assert missing.returncode != 0 and "No such file or directory" in missing.stdout + missing.stderr


def test_push_to_a_full_target_fails_naming_no_space(
    standin: AdbStandIn, tmp_path: Path, device_dir: Path
) -> None:
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(1024 * 1024))
    remote = device_dir / "data" / "big.bin"
    standin.push_limit = 200_000
    result = adb(standin, "-s", standin.serial, "push", str(local), str(remote))
    assert result.returncode != 0
    # adb 29.0.6 prints the failure on stdout: "adb: error: failed to copy ... remote write failed: ..."
    assert "No space left on device" in result.stdout + result.stderr
    assert not remote.exists()  # adbd removes the partial file
    standin.push_limit = None
    assert adb(standin, "-s", standin.serial, "push", str(local), str(remote)).returncode == 0
    assert sha256(remote) == sha256(local)


def test_offline_and_unauthorized_devices_fail(standin: AdbStandIn) -> None:
    standin.set_state("OFFLINE01", "offline")
    standin.set_state("UNAUTH01", "unauthorized")
    listing = adb(standin, "devices").stdout.splitlines()
    assert "OFFLINE01\toffline" in listing and "UNAUTH01\tunauthorized" in listing
    offline = adb(standin, "-s", "OFFLINE01", "shell", "true")
    assert offline.returncode != 0 and "error: device offline" in offline.stderr
    unauthorized = adb(standin, "-s", "UNAUTH01", "shell", "true")
    assert unauthorized.returncode != 0 and "device unauthorized" in unauthorized.stderr
    absent = adb(standin, "-s", "NOSUCH01", "shell", "true")
    assert absent.returncode != 0 and "device 'NOSUCH01' not found" in absent.stderr
    assert adb(standin, "-s", "OFFLINE01", "get-state").returncode != 0
    # the online one still works, and no shell ever ran for the others
    assert adb(standin, "-s", standin.serial, "shell", "true").returncode == 0
    assert sum(c.startswith("shell") for c in standin.calls) == 1


def test_killed_connection_ends_the_shell_early(standin: AdbStandIn, device_dir: Path) -> None:
    pidfile = device_dir / "pid"
    threading.Timer(1.0, standin.kill_connections).start()
    start = time.monotonic()
    result = adb(standin, "-s", standin.serial, "shell", f"echo $$ > {pidfile}; sleep 5; echo done")
    elapsed = time.monotonic() - start
    assert elapsed < 4, "the client should end when its connection drops, not when the command does"
    assert "done" not in result.stdout
    # A dropped connection ends the client WITHOUT the command's exit status. adb 29.0.6 (Debian) then
    # exits 0: read_and_dump() returns 0 when no exit packet came; current adb returns 255, like ssh. A
    # runner must therefore not trust the exit code alone (e.g. append `; echo "<marker>$?"` and require
    # the marker).
    assert result.returncode in (0, 255), result
    # and the stand-in killed the command, as adbd does when the connection goes away
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the command's shell (pid {pid}) still runs after its connection was killed")


def test_stopped_standin_fails_without_starting_a_real_server(device_dir: Path) -> None:
    adb_binary()
    s = AdbStandIn(cwd=device_dir)
    s.start()
    env = s.client_env()
    home = s.home
    s.stop()
    os.makedirs(home, exist_ok=True)  # the client gets a HOME, as it would from client_env() while running
    try:
        result = subprocess.run(
            [adb_binary(), "devices"], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=TIMEOUT,
        )  # fmt: skip
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert result.returncode != 0
    assert "cannot start server on remote host" in result.stderr
