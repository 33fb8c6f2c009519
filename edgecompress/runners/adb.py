"""Profile an artifact on an Android device over adb (the `adb` client binary, `-s SERIAL`): the same
measure.py protocol as the local and SSH runners, run by a Python on the device (`connection.python`, e.g.
Termux's), pinned to the cores of `connection.affinity` (a hex CPU mask, `taskset` on the device: big or
little cores).

Per measurement: `adb get-state` (an unauthorized or offline phone is one clear line), `mktemp -d` in
`connection.workdir` (default /data/local/tmp), `adb push` of measure.py, its siblings and the artifact's
files, `adb shell` of the quoted command line, its JSON read back, the directory removed, also when anything
failed. The command's exit status travels in a marker line: adb 29 exits 0 when the connection dies before
the shell protocol's exit packet, so an exit code alone cannot tell a success from a lost phone.

`connection.mode: native` runs LiteRT's `benchmark_model` on the phone instead (no Python there; default
/data/local/tmp/benchmark_model, or `connection.benchmark_model`), under the same taskset mask
(runners/native.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from edgecompress.errors import DeviceError
from edgecompress.runners.base import Completed, Job, ScriptRunner, quote, tail
from edgecompress.runtimes import DEVICE_SCRIPTS
from edgecompress.specs import DeviceProfile

MARKER = "__edgecompress_exit="
_MARKED = re.compile(rf"\n?{MARKER}(\d+)\n?$")


class AdbRunner(ScriptRunner):
    """measure.py on an Android device over adb; see the module docstring."""

    where = "the device"

    # ---------------------------------------------------------------------------------------------- adb

    def _adb(self, device: DeviceProfile, *args: str, timeout: float, stdin: str | None = None) -> Completed:
        binary = shutil.which("adb")
        if binary is None:
            raise DeviceError(
                f"{device.name}: the adb client is not installed here (Debian: apt install adb)"
            )
        try:
            proc = subprocess.run(
                [binary, "-s", device.connection.serial or "", *args],
                input=stdin,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{device.name}: adb {args[0]} took longer than {timeout:g} s") from None
        return Completed(proc.returncode, proc.stdout, proc.stderr)

    def shell(
        self, device: DeviceProfile, command: str, *, timeout: float, stdin: str | None = None
    ) -> Completed:
        """`command` (quoted by the caller) in the device's shell; its own exit status, read from a marker."""
        done = self._adb(device, "shell", f"{command}; echo {MARKER}$?", timeout=timeout, stdin=stdin)
        found = _MARKED.search(done.stdout)
        if found is None:
            raise DeviceError(
                f"{device.name}: the connection to {device.connection.serial} was lost (adb shell ended without "
                f"the command's exit status): {tail(done.stderr or done.stdout, 1)}"
            )
        return Completed(int(found.group(1)), done.stdout[: found.start()] + "\n", done.stderr)

    def _ready(self, device: DeviceProfile) -> None:
        serial = device.connection.serial
        done = self._adb(device, "get-state", timeout=device.connection.connect_timeout)
        state = done.stdout.strip()
        if done.returncode == 0 and state == "device":
            return
        text = done.stderr + "\n" + done.stdout
        said = next((line.strip() for line in text.splitlines() if line.strip()), "no answer")
        if "unauthorized" in text:
            raise DeviceError(
                f"{device.name}: {serial} has not authorized this computer: unlock it and accept the USB "
                "debugging prompt"
            )
        if "offline" in text:
            raise DeviceError(f"{device.name}: {serial} is offline: reconnect it (adb reconnect)")
        raise DeviceError(
            f"{device.name}: {serial} is not reachable over adb ({said}): is it connected? (adb devices)"
        )

    def _measure(self, device: DeviceProfile, job: Job) -> Completed:
        self._ready(device)
        timeout = device.connection.timeout
        base = (device.connection.workdir or "/data/local/tmp").rstrip("/")
        made = self.shell(device, f"mktemp -d {quote(base + '/edgecompress-XXXXXXXX')}", timeout=60)
        tmp = made.stdout.strip()
        if made.returncode != 0 or not tmp.startswith("/"):
            raise DeviceError(
                f"{device.name}: cannot make a temporary directory in {base} on the device "
                f"({tail(made.stderr or made.stdout, 1)}): set connection.workdir to a writable directory"
            )
        try:
            dirs: dict[Path, str] = {}
            for f in job.files:
                dirs.setdefault(f.parent, f"{tmp}/a{len(dirs)}")
            scripts = DEVICE_SCRIPTS if job.script is not None else []
            for path, remote in [(p, f"{tmp}/{p.name}") for p in scripts] + [
                (f, f"{dirs[f.parent]}/{f.name}") for f in job.files
            ]:
                pushed = self._adb(device, "push", str(path), remote, timeout=timeout)
                if pushed.returncode != 0:
                    lines = [
                        x.strip() for x in (pushed.stdout + "\n" + pushed.stderr).splitlines() if x.strip()
                    ]
                    # adb prints push errors on stdout, before its summary line
                    said = next(
                        (x for x in lines if "error" in x or "failed" in x), lines[-1] if lines else ""
                    )
                    raise DeviceError(
                        f"{device.name}: copying {path.name} to {tmp} on the device failed ({said}): free space "
                        "there, or set connection.workdir"
                    )

            def place(path: Path) -> str:
                return f"{dirs[path.parent]}/{path.name}"

            argv = job.command(place, device.connection.python, tmp)
            if device.connection.affinity:
                argv = ["taskset", device.connection.affinity, *argv]
            command = " ".join(quote(a) for a in argv)
            done = self.shell(device, command, timeout=timeout, stdin=job.stdin(place) if job.stdin else None)
            if done.returncode == 127 and not done.stdout.strip():
                program = job.command(place, device.connection.python, tmp)[0]
                raise DeviceError(
                    f"{device.name}: no {program} on the device ({tail(done.stderr, 1)}): {job.missing}"
                    + (" (e.g. Termux's)" if job.script is not None else "")
                )
            stdout, stderr = done.stdout, done.stderr
            for f in job.files:  # messages name the user's files, not the device's copies
                stdout, stderr = stdout.replace(place(f), str(f)), stderr.replace(place(f), str(f))
            return Completed(done.returncode, stdout, stderr)
        finally:
            try:
                self.shell(device, f"rm -rf -- {quote(tmp)}", timeout=60)
            except DeviceError as exc:
                import sys

                print(
                    f"{device.name}: could not remove {tmp} on the device ({exc}); remove it by hand",
                    file=sys.stderr,
                )
