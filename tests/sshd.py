"""A real OpenSSH server on 127.0.0.1 for the SSH runner's tests, and the "board" behind it.

`Board` starts Debian's sshd (openssh-server; `make test` installs it when missing) with a generated host
key, accepting one generated user key, for a non-root account ("ecboard", made here when the tests run as
root, as CI does; otherwise the current user). The client side gets a temporary HOME with ~/.ssh/config
(alias `board`), the key, and known_hosts holding the server's key. The board's Python is `.board/`, a
venv with numpy and ai-edge-litert only (`make test` builds it), copied where the board account can read it:
like a Raspberry Pi, it has no torch, no OpenVINO and no edgecompress.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BOARD_VENV = REPO / ".board"
BOARD_USER = "ecboard"


def find_sshd() -> str:
    found = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
    if found is None:
        raise RuntimeError("sshd is not installed: `make test` installs openssh-server (apt-get)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path, comment: str) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True
    )
    return path.with_suffix(".pub").read_text().strip()


def board_account() -> tuple[str, Path]:
    """The account the board logs in as, and its home: a non-root user when running as root."""
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return entry.pw_name, Path(entry.pw_dir)
    try:
        entry = pwd.getpwnam(BOARD_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--create-home", "--shell", "/bin/sh", BOARD_USER], check=True, capture_output=True
        )
        entry = pwd.getpwnam(BOARD_USER)
    # sshd refuses locked accounts ("!" in shadow) without PAM; "*" is no password, not a lock
    subprocess.run(["usermod", "-p", "*", BOARD_USER], check=True, capture_output=True)
    return entry.pw_name, Path(entry.pw_dir)


@dataclass
class Board:
    root: Path  # a world-readable directory (the board account reads the Python from it)
    home: Path  # the client's HOME
    port: int
    user: str
    python: str  # the board's Python (numpy + ai-edge-litert)
    host_key: Path
    process: subprocess.Popen | None = None

    @property
    def known_hosts(self) -> Path:
        return self.home / ".ssh" / "known_hosts"

    def device_yaml(self, name: str = "board", **connection: object) -> str:
        lines = {"runner": "ssh", "host": "board", "python": self.python, "connect_timeout": 10} | connection
        conn = ", ".join(f"{k}: {v}" for k, v in lines.items())
        return (
            f"description: 'loopback board over SSH (test fixture)'\n"
            "cpu: {model: detect, arch: detect, cores: 2}\n"
            "memory_mb: 1024\nthreads: 1\nruntimes: [litert]\n"
            f"connection: {{{conn}}}\n"
        )

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
            if self.process.poll() is None:
                self.process.kill()

    def start(self) -> None:
        self.stop()
        self.process = subprocess.Popen(
            [find_sshd(), "-D", "-e", "-f", str(self.root / "sshd_config")],
            stdout=subprocess.DEVNULL,
            stderr=(self.root / "sshd.log").open("a"),
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not start: {(self.root / 'sshd.log').read_text()[-2000:]}")

    def new_host_key(self) -> None:
        """The server presents another host key from its next start (a reinstalled device)."""
        self.host_key.unlink()
        self.host_key.with_suffix(".pub").unlink()
        keygen(self.host_key, "board-host-2")
        self.start()


def make_board() -> Board:
    if not (BOARD_VENV / "bin" / "python").exists():
        raise RuntimeError(
            f"{BOARD_VENV} is missing: `make test` builds the board's Python (numpy, ai-edge-litert)"
        )
    user, _ = board_account()
    root = Path(tempfile.mkdtemp(prefix="edgecompress-board-", dir="/tmp"))
    root.chmod(0o755)
    shutil.copytree(BOARD_VENV, root / "venv", symlinks=True)
    etc = root / "etc"
    etc.mkdir(mode=0o755)
    host_key = etc / "host_ed25519"
    keygen(host_key, "board-host")
    home = root / "client"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    public = keygen(home / ".ssh" / "id_ed25519", "edgecompress-test")
    authorized = etc / "authorized_keys"
    authorized.write_text(public + "\n")
    authorized.chmod(0o644)
    port = free_port()
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nAuthorizedKeysFile {authorized}\n"
        f"PidFile {root / 'sshd.pid'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"PubkeyAuthentication yes\nUsePAM no\nStrictModes no\nAllowUsers {user}\nSubsystem sftp internal-sftp\n"
        "LogLevel VERBOSE\n"
    )
    (home / ".ssh" / "config").write_text(
        f"Host board\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n"
        f"  IdentityFile {home / '.ssh' / 'id_ed25519'}\n  IdentitiesOnly yes\n"
    )
    (home / ".ssh" / "known_hosts").write_text(
        f"[127.0.0.1]:{port} {' '.join(host_key.with_suffix('.pub').read_text().split()[:2])}\n"
    )
    board = Board(
        root=root,
        home=home,
        port=port,
        user=user,
        python=str(root / "venv" / "bin" / "python"),
        host_key=host_key,
    )
    board.start()
    return board
