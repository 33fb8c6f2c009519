"""Profile an artifact on a board reached over SSH (asyncssh): the same measure.py protocol as the local
runner, run by the board's own Python.

Per measurement: connect (`~/.ssh/config`, keys and the agent honoured, as OpenSSH does); check the host key
against `~/.ssh/known_hosts` (or the config's UserKnownHostsFile): an unknown key is refused unless the
device's `connection.known_hosts` is `accept-new` (trust on first use: the key is recorded, and from then on
checked), a changed key is always refused; make a temporary directory on the board (`mktemp -d` in
`connection.workdir`, default the board's $TMPDIR or /tmp); copy measure.py, sessions.py, op_profiles.py and
the artifact's files there over SFTP; run `<connection.python> measure.py ...` with every argument quoted;
read its JSON; remove the directory, also when anything failed (over a new connection if the first one was
lost). Passwords are never asked for nor read from any file: a key (or the agent) is the only way in.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecompress.errors import DeviceError
from edgecompress.runners.base import Completed, Job, ScriptRunner, quote, tail
from edgecompress.runtimes import DEVICE_SCRIPTS
from edgecompress.specs import DeviceProfile


@dataclass(frozen=True)
class Target:
    """Where `connection.host` leads: the alias or address as written, and what ~/.ssh/config makes of it."""

    given: str  # "pi5" or "user@host[:port]"
    host: str  # the name asyncssh connects with (an alias of ~/.ssh/config, or the address)
    port: int | None  # None: the config's or 22
    username: str | None
    address: str  # the HostName after ~/.ssh/config
    effective_port: int
    known_hosts: list[Path]


def _asyncssh() -> Any:
    """asyncssh, imported with its own import-time deprecation warnings silenced: cryptography >= 47 warns
    that DSA is deprecated wherever asyncssh's type hints name it, which is noise to a user of this tool (DSA
    keys are not used unless a device offers only them)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="DSA is deprecated")
        import asyncssh
    return asyncssh


def _config_files() -> list[str]:
    config = Path("~", ".ssh", "config").expanduser()
    return [str(config)] if config.is_file() else []


def resolve(device: DeviceProfile) -> Target:
    """`connection.host` read the way OpenSSH reads it (through ~/.ssh/config); DeviceError when a file the
    config names is missing."""
    asyncssh = _asyncssh()

    given = device.connection.host or ""
    username: str | None = None
    host, port = given, None
    if "@" in host:
        username, host = host.rsplit("@", 1)
    if host.startswith("[") and "]" in host:  # [::1]:2222
        inside, _, rest = host[1:].partition("]")
        host, port = inside, int(rest[1:]) if rest.startswith(":") else None
    elif host.count(":") == 1:
        host, _, p = host.partition(":")
        port = int(p)
    try:
        options = asyncssh.SSHClientConnectionOptions(
            host=host, port=port or (), username=username or (), config=_config_files()
        )
    except FileNotFoundError as exc:  # an IdentityFile (or other file) ~/.ssh/config names
        raise DeviceError(
            f"{device.name}: {exc.filename or exc}: no such file (named in ~/.ssh/config for {given}?)"
        ) from None
    files = options.config.get("UserKnownHostsFile", None) or [str(Path("~", ".ssh", "known_hosts"))]
    return Target(
        given=given,
        host=host,
        port=port,
        username=username,
        address=str(options.host),
        effective_port=int(options.port),
        known_hosts=[Path(f).expanduser() for f in files],
    )


def _known_hosts_pattern(target: Target) -> str:
    """How known_hosts names the target: the bare address on port 22, [address]:port elsewhere."""
    return target.address if target.effective_port == 22 else f"[{target.address}]:{target.effective_port}"


def _known_hosts_line(target: Target, key: Any) -> str:
    return f"{_known_hosts_pattern(target)} {key.export_public_key('openssh').decode().strip()}\n"


class SSHRunner(ScriptRunner):
    """measure.py on a board over SSH; see the module docstring."""

    where = "the device"

    #: Seconds the clean-up of the board's temporary directory may take.
    CLEANUP_SECONDS = 30.0

    def _measure(self, device: DeviceProfile, job: Job) -> Completed:
        return _run(self._remote(device, job))

    # ------------------------------------------------------------------------------------------ connecting

    async def _connect(self, device: DeviceProfile) -> Any:
        asyncssh = _asyncssh()

        target = resolve(device)
        timeout = device.connection.connect_timeout
        files = [str(f) for f in target.known_hosts if f.is_file()]
        known = asyncssh.read_known_hosts(files) if files else asyncssh.import_known_hosts("")
        trusted = known.match(target.address, "", target.effective_port)[0]
        if not trusted and device.connection.known_hosts == "accept-new":
            await self._accept_new(device, target)
        kwargs: dict[str, Any] = {
            "config": _config_files(),
            "known_hosts": [str(f) for f in target.known_hosts if f.is_file()],
            "connect_timeout": timeout,
            "login_timeout": timeout,
            "password_auth": False,
            "kbdint_auth": False,
        }
        if target.port:
            kwargs["port"] = target.port
        if target.username:
            kwargs["username"] = target.username
        try:
            return await asyncssh.connect(target.host, **kwargs)
        except asyncssh.HostKeyNotVerifiable:
            if not trusted:
                raise DeviceError(
                    f"{device.name}: the host key of {target.given} is not in {target.known_hosts[0]}: check its "
                    f"fingerprint and add it (ssh-keyscan -p {target.effective_port} {target.address} >> "
                    f"{target.known_hosts[0]}), or set connection.known_hosts: accept-new to trust it on first use"
                ) from None
            raise DeviceError(
                f"{device.name}: the host key of {target.given} does not match the one recorded in "
                f"{target.known_hosts[0]} — the device was reinstalled, or this is not the device: if you "
                f"know why, remove the old key (ssh-keygen -R '{_known_hosts_pattern(target)}') "
                "and add the new one"
            ) from None
        except FileNotFoundError as exc:  # an IdentityFile (or other file) ~/.ssh/config names
            raise DeviceError(
                f"{device.name}: {exc.filename or exc}: no such file (named in ~/.ssh/config for {target.given}?)"
            ) from None
        except asyncssh.PermissionDenied:
            raise DeviceError(
                f"{device.name}: {target.given} refused every key (authentication failed): add your key to "
                "the device's ~/.ssh/authorized_keys and to ssh-agent, or name it with IdentityFile in "
                "~/.ssh/config (passwords are not used)"
            ) from None
        except (OSError, asyncio.TimeoutError, asyncssh.Error) as exc:
            raise DeviceError(
                f"{device.name}: cannot reach {target.address}:{target.effective_port} ({_reason(exc)}): is "
                "the device on and its SSH server running? (connection.connect_timeout: "
                f"{timeout:g} s)"
            ) from None

    async def _accept_new(self, device: DeviceProfile, target: Target) -> None:
        """Trust on first use: record the key the device presents now (it was unknown, never changed)."""
        asyncssh = _asyncssh()

        try:
            key = await asyncssh.get_server_host_key(
                target.host,
                target.port or (),
                config=_config_files(),
                options=asyncssh.SSHClientConnectionOptions(
                    connect_timeout=device.connection.connect_timeout
                ),
            )
        except (OSError, asyncio.TimeoutError, asyncssh.Error) as exc:
            raise DeviceError(
                f"{device.name}: cannot reach {target.address}:{target.effective_port} ({_reason(exc)})"
            ) from None
        if key is None:
            raise DeviceError(f"{device.name}: {target.given} presented no host key to record")
        path = target.known_hosts[0]
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(_known_hosts_line(target, key))
        device_fp = key.get_fingerprint()
        print(
            f"{device.name}: trusted the host key of {target.given} on first use ({device_fp}), recorded in {path}",
            file=sys.stderr,
        )

    # ------------------------------------------------------------------------------------------- measuring

    async def _remote(self, device: DeviceProfile, job: Job) -> Completed:
        asyncssh = _asyncssh()

        files, what, stdin = job.files, job.what, job.stdin
        conn = await self._connect(device)
        tmp: str | None = None
        lost = False
        try:
            timeout = device.connection.timeout
            try:  # a board that stops answering mid-copy is a timeout, not a hang
                tmp = await asyncio.wait_for(self._mktemp(conn, device), device.connection.connect_timeout)
                dirs = await asyncio.wait_for(
                    self._upload(conn, device, tmp, files, scripts=job.script is not None), timeout
                )
            except asyncio.TimeoutError:
                raise DeviceError(
                    f"{device.name}: the device stopped answering while {what} was copied to it "
                    f"(connection.connect_timeout / connection.timeout)"
                ) from None

            def place(path: Path) -> str:
                return f"{dirs[path.parent]}/{path.name}"

            command = " ".join(quote(a) for a in job.command(place, device.connection.python, tmp))
            try:
                result = await asyncio.wait_for(
                    conn.run(command, input=stdin(place) if stdin else None, check=False),
                    device.connection.timeout,
                )
            except asyncio.TimeoutError:
                raise DeviceError(
                    f"{device.name}: profiling {what} took longer than {device.connection.timeout:g} s "
                    "(connection.timeout)"
                ) from None
            if result.exit_status is None:  # killed by a signal on the device
                raise DeviceError(
                    f"{device.name}: profiling {what} was killed on the device ({result.exit_signal}):\n"
                    f"{tail(str(result.stderr))}"
                )
            if result.exit_status == 127 and not str(result.stdout).strip():
                program = job.command(place, device.connection.python, tmp)[0]
                raise DeviceError(
                    f"{device.name}: no {program} on the device ({tail(str(result.stderr), 1)}): {job.missing}"
                )
            stdout, stderr = str(result.stdout), str(result.stderr)
            for f in files:  # messages name the user's files, not the board's temporary copies
                stdout, stderr = stdout.replace(place(f), str(f)), stderr.replace(place(f), str(f))
            return Completed(result.exit_status, stdout, stderr)
        except (asyncssh.ConnectionLost, asyncssh.DisconnectError, BrokenPipeError, ConnectionError) as exc:
            lost = True
            raise DeviceError(
                f"{device.name}: the connection was lost while profiling {what} ({_reason(exc)})"
            ) from None
        finally:
            await self._cleanup(conn, device, tmp, lost)

    async def _mktemp(self, conn: Any, device: DeviceProfile) -> str:
        base = device.connection.workdir
        template = f"{base.rstrip('/')}/edgecompress-XXXXXXXX" if base else None
        command = f"mktemp -d {quote(template)}" if template else "mktemp -d -t edgecompress-XXXXXXXX"
        result = await conn.run(command, check=False)
        made = str(result.stdout).strip()
        if result.exit_status != 0 or not made.startswith("/"):
            where = base or "its temporary directory ($TMPDIR or /tmp)"
            raise DeviceError(
                f"{device.name}: cannot make a temporary directory in {where} on the device "
                f"({tail(str(result.stderr), 1)}): free space there or set connection.workdir to a writable one"
            )
        return made

    async def _upload(
        self, conn: Any, device: DeviceProfile, tmp: str, files: list[Path], *, scripts: bool = True
    ) -> dict[Path, str]:
        """The scripts (unless a native tool runs) into `tmp`, each artifact's files into a subdirectory per
        local directory (an OpenVINO .xml keeps its .bin beside it; two artifacts of one name from two
        directories do not collide)."""
        asyncssh = _asyncssh()

        dirs: dict[Path, str] = {}
        try:
            async with conn.start_sftp_client() as sftp:
                if scripts:
                    await sftp.put([str(p) for p in DEVICE_SCRIPTS], tmp)
                for f in files:
                    if f.parent not in dirs:
                        dirs[f.parent] = f"{tmp}/a{len(dirs)}"
                        await sftp.mkdir(dirs[f.parent])
                    await sftp.put(str(f), f"{dirs[f.parent]}/{f.name}")
        except asyncssh.SFTPError as exc:
            raise DeviceError(
                f"{device.name}: copying to {tmp} on the device failed ({exc.reason}): free space there, or set "
                "connection.workdir to a writable directory with room for the artifact"
            ) from None
        return dirs

    async def _cleanup(self, conn: Any, device: DeviceProfile, tmp: str | None, lost: bool) -> None:
        """The temporary directory removed (over a new connection if this one was lost); a failure is said, not
        raised over the error that brought us here."""
        try:
            if tmp is not None:
                command = f"rm -rf -- {quote(tmp)}"
                try:
                    if lost:
                        raise ConnectionError
                    await asyncio.wait_for(conn.run(command, check=False), self.CLEANUP_SECONDS)
                except Exception:
                    async with await self._connect(device) as again:
                        await asyncio.wait_for(again.run(command, check=False), self.CLEANUP_SECONDS)
        except Exception as exc:
            print(
                f"{device.name}: could not remove {tmp} on the device ({_reason(exc)}); remove it by hand",
                file=sys.stderr,
            )
        finally:
            conn.close()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _run(coroutine: Any) -> Any:
    """Run one of the runner's coroutines to its end from synchronous code. Ctrl-C or SIGTERM cancels it,
    and its `finally` (the board's clean-up) still runs."""
    return asyncio.run(coroutine)
