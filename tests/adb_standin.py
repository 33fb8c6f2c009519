"""A loopback stand-in for the adb server, so the real `adb` client can be tested with no phone.

There is no Android phone (nor emulator) on this machine, so the adb runner's tests point the REAL adb
client (Debian's `adb`, `make test` installs it) at this server instead of the real adb server on
port 5037. `AdbStandIn` listens on 127.0.0.1:<free port> and speaks the *server* side of the adb
smart-socket protocol, the one between the adb client and the adb server (not the device-side USB/TCP
protocol between the server and adbd). What a device would do, it does locally: shell commands run
with `/bin/sh -c CMD` in a given working directory and environment, pushed files land at their remote
path taken literally (tests use remote paths under a temporary directory, e.g.
/tmp/xyz/data/local/tmp/model.tflite), pulled files are read from there.

Implemented (requests are 4 hex digits of length + payload; replies OKAY, or FAIL + 4 hex + message):
  host:version             OKAY + "0029": server version 41, the client's own (ADB_SERVER_VERSION), so
                           the client neither kills it nor starts a real server
  host:kill                OKAY and close (the stand-in keeps running)
  host:devices[-l]         every simulated device with its state (device, offline, unauthorized, ...)
  host:features, host-serial:S:features, host-transport-id:N:features    the device's feature list
  host:host-features       the features this stand-in implements
  host[-serial:S]:get-state / get-serialno / get-devpath
  host[-serial:S]:wait-for-TRANSPORT-STATE    OKAY, then OKAY once a device is in STATE
  host:transport:S, transport-any/-usb/-local, transport-id:N; host:tport:serial:S / tport:any/usb/local
                           (tport answers OKAY + the 8-byte little-endian transport id)
  then, on the switched connection, the device services:
  shell:CMD                legacy raw stream, stdout and stderr merged, no exit code (`adb shell -x`)
  shell,v2[,raw|pty][,TERM=..]:CMD   the shell protocol: packets [id:1][len:u32 LE][data] for
                           stdin(0) stdout(1) stderr(2) exit(3) close-stdin(4) window-size(5); the exit
                           packet carries the command's exit status (0x80|signal when killed), which the
                           client turns into its own exit code. No pty is allocated for `pty`.
  exec:CMD                 raw stream (`adb exec-out`)
  sync:                    STAT (lstat v1), LST2/STA2 (lstat/stat v2), LIST/LIS2, SEND (regular files
                           and symlinks; DATA chunks up to 64 KiB; DONE carries the mtime; OKAY/FAIL),
                           RECV (DATA chunks then DONE), QUIT
  anything else            FAIL "closed" (what the real server relays when adbd closes an unknown
                           service), or FAIL "unknown host service" for host services
Device features advertised: shell_v2, stat_v2, ls_v2, fixed_push_mkdir, fixed_push_symlink_timestamp.
Not advertised, so the client never uses them: cmd, abb, abb_exec, apex, remount_shell, sendrecv_v2
(SND2/RCV2) and ls_v2/stat_v2 successors, compression.

Simulated failures: `set_state(serial, "offline"|"unauthorized"|...)` adds or changes a device (the real
server's error messages: "device offline", "device unauthorized. ..."), `set_state(serial, None)` removes
it; `push_limit = N` makes every push write N bytes and then fail as adbd does on a full disk ("write
failed: No space left on device", the partial file removed); `kill_connections()` drops every open
client connection (and kills the commands they run) as the real server does when a device goes away.

Protocol documents and sources followed (AOSP platform/system/core, tag platform-tools-29.0.6, commit
589da1a0e0220d9443dbdd03e9fb2a659bfd2f8c, the source of Debian's adb 29.0.6): adb/SERVICES.TXT,
adb/SYNC.TXT, adb/protocol.txt, adb/file_sync_protocol.h, adb/shell_protocol.h, adb/services.h,
adb/client/adb_client.cpp, adb/client/commandline.cpp, adb/client/file_sync_client.cpp, adb/adb.cpp
(handle_host_request), adb/sockets.cpp (smart_socket_enqueue), adb/services.cpp (wait-for), adb/transport.cpp
(acquire_one_transport, list_transports, feature names), adb/daemon/services.cpp (ShellService),
adb/daemon/shell_service.cpp (exit codes) and adb/daemon/file_sync_service.cpp (what adbd answers).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable

ADB_SERVER_VERSION = 41  # adb/adb.h; the client kills (and replaces) a server reporting another version
SYNC_DATA_MAX = 64 * 1024  # adb/file_sync_protocol.h
MAX_PAYLOAD = 1024 * 1024  # adb/adb.h (a request's length limit)
DEVICE_FEATURES = ("shell_v2", "stat_v2", "ls_v2", "fixed_push_mkdir", "fixed_push_symlink_timestamp")
STATES = ("device", "offline", "unauthorized", "bootloader", "recovery", "rescue", "sideload",
          "authorizing", "connecting")  # fmt: skip

# shell protocol packet ids (adb/shell_protocol.h)
SHELL_STDIN, SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT, SHELL_CLOSE_STDIN, SHELL_WINDOW = 0, 1, 2, 3, 4, 5

STAT_V2 = struct.Struct("<4sIQQIIIIQqqq")  # syncmsg.stat_v2: 72 bytes
DENT_V1 = struct.Struct("<4sIIII")  # syncmsg.dent_v1 (+ name)
DENT_V2 = struct.Struct("<4sIQQIIIIQqqqI")  # syncmsg.dent_v2 (+ name)


class _Closed(Exception):
    """The client's side of the connection ended (EOF or reset)."""


class _Conn:
    """One client connection: its socket, the commands it runs, a write lock."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.procs: list[subprocess.Popen] = []
        self.wlock = threading.Lock()
        self.killed = False

    def recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except OSError as e:
                raise _Closed from e
            if not chunk:
                raise _Closed
            buf += chunk
        return bytes(buf)

    def send(self, data: bytes) -> None:
        with self.wlock:
            try:
                self.sock.sendall(data)
            except OSError as e:
                raise _Closed from e

    def okay(self, text: str | None = None) -> None:
        self.send(b"OKAY" + (b"" if text is None else _proto(text)))

    def fail(self, message: str) -> None:
        self.send(b"FAIL" + _proto(message))

    def kill_procs(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)

    def shutdown(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


def _proto(text: str | bytes) -> bytes:
    """A protocol string: 4 hex digits of length, then the bytes."""
    data = text.encode() if isinstance(text, str) else text
    return b"%04x" % len(data) + data


def _parse_mode(text: str) -> int:
    text = text.strip()
    if len(text) > 1 and text.startswith("0") and text[1] not in "xX":
        return int(text, 8)
    return int(text, 0)


class AdbStandIn:
    """A threaded adb server stand-in on 127.0.0.1; see the module docstring."""

    def __init__(
        self,
        serial: str = "emulator-5554",
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        *,
        push_limit: int | None = None,
    ) -> None:
        self.serial = serial
        self.env = dict(env) if env is not None else None  # None: this process's environment
        self.cwd = str(cwd) if cwd is not None else "/"  # adbd's shells start in /
        self.push_limit = push_limit  # bytes a push may write before "No space left on device"
        self.features: list[str] = list(DEVICE_FEATURES)
        self.calls: list[str] = []  # every service requested, in order
        self.sync_requests: list[tuple[str, str]] = []  # (id, path) of every sync request
        self.port: int | None = None
        self.home: str | None = None  # the client's fresh HOME (client_env)
        self._devices: dict[str, tuple[str, int]] = {}  # serial -> (state, transport id)
        self._next_id = 1
        self._lock = threading.Lock()
        self._conns: set[_Conn] = set()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.set_state(serial, "device")

    # ---- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.settimeout(0.2)
        self._listener = listener
        self.port = int(listener.getsockname()[1])
        self.home = tempfile.mkdtemp(prefix="adb-standin-home-")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._accept_loop, name="adb-standin", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.kill_connections()
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
            self.home = None

    def __enter__(self) -> AdbStandIn:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client_env(self) -> dict[str, str]:
        """Environment for the real adb client: this server, a fresh HOME, no inherited server/serial.

        ANDROID_ADB_SERVER_ADDRESS=127.0.0.1 (not "localhost") also makes the client treat the server as
        remote, so if the stand-in is down it fails ("cannot start server on remote host") rather than
        launching a real adb server."""
        if self.port is None or self.home is None:
            raise RuntimeError("AdbStandIn.client_env() before start()")
        env = {k: v for k, v in os.environ.items() if k not in ("ADB_SERVER_SOCKET", "ANDROID_SERIAL")}
        env.update(
            ANDROID_ADB_SERVER_ADDRESS="127.0.0.1",
            ANDROID_ADB_SERVER_PORT=str(self.port),
            HOME=self.home,
            ANDROID_SDK_HOME=self.home,
        )
        return env

    # ---- simulated devices and failures ------------------------------------------------------------------

    def set_state(self, serial: str, state: str | None) -> None:
        """Add a device, change its state ("device", "offline", "unauthorized", ...), or remove it (None)."""
        with self._lock:
            if state is None:
                self._devices.pop(serial, None)
                return
            if state not in STATES:
                raise ValueError(f"unknown adb device state {state!r}; one of {STATES}")
            if serial in self._devices:
                self._devices[serial] = (state, self._devices[serial][1])
            else:
                self._devices[serial] = (state, self._next_id)
                self._next_id += 1

    def kill_connections(self) -> int:
        """Drop every open client connection (killing the commands they run); returns how many."""
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.killed = True
            conn.kill_procs()
            conn.shutdown()
        return len(conns)

    # ---- server --------------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(sock)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name="adb-standin-conn", daemon=True).start()

    def _serve(self, conn: _Conn) -> None:
        try:
            self._dispatch(conn)
        except _Closed:
            pass
        finally:
            conn.kill_procs()
            conn.shutdown()
            conn.sock.close()
            with self._lock:
                self._conns.discard(conn)

    def _read_request(self, conn: _Conn) -> str:
        header = conn.recv_exact(4)
        try:
            length = int(header, 16)
        except ValueError:
            raise _Closed from None  # the real server drops a malformed request the same way
        if length == 0 or length > MAX_PAYLOAD:
            raise _Closed
        return conn.recv_exact(length).decode("utf-8", "replace")

    def _dispatch(self, conn: _Conn) -> None:
        transport: str | None = None  # serial of the device this connection switched to
        while True:
            service = self._read_request(conn)
            self.calls.append(service)
            if transport is None and service.startswith("host"):
                switched = self._host(conn, service)
                if switched is None:
                    return
                transport = switched
                continue
            if transport is None:
                conn.fail("device offline (no transport)")
                return
            state, _ = self._devices.get(transport, ("offline", 0))
            if state != "device":
                conn.fail("device offline")
                return
            self._device_service(conn, service)
            return

    # ---- host services (answered by the server itself) -----------------------------------------------------

    def _acquire(self, serial: str | None, transport_id: int | None = None) -> tuple[str | None, str]:
        """The real server's acquire_one_transport: (serial, "") or (None, error)."""
        with self._lock:
            devices = dict(self._devices)
        if transport_id is not None:
            found = [s for s, (_, tid) in devices.items() if tid == transport_id]
            error = f"no device with transport id '{transport_id}'"
        elif serial is not None:
            found = [s for s in devices if s == serial]
            error = f"device '{serial}' not found"
        else:
            found = list(devices)
            error = "no devices/emulators found"
            if len(found) > 1:
                return None, "more than one device/emulator"
        if not found:
            return None, error
        chosen = found[0]
        state = devices[chosen][0]
        if state == "offline":
            return None, "device offline"
        if state == "unauthorized":
            return None, (
                "device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set\n"
                "Try 'adb kill-server' if that seems wrong.\n"
                "Otherwise check for a confirmation dialog on your device."
            )
        if state in ("connecting", "authorizing"):
            return None, f"device still {state}"
        return chosen, ""

    def _split_host_service(self, service: str) -> tuple[str | None, int | None, str]:
        """host[-serial:S|-transport-id:N|-usb|-local]:CMD -> (serial, transport id, CMD)."""
        if service.startswith("host-serial:"):
            rest = service[len("host-serial:") :]
            with self._lock:
                known = sorted(self._devices, key=len, reverse=True)
            for serial in known:  # serials may hold colons (host:port)
                if rest.startswith(serial + ":"):
                    return serial, None, rest[len(serial) + 1 :]
            serial, _, command = rest.rpartition(":")
            return serial, None, command
        if service.startswith("host-transport-id:"):
            tid, _, command = service[len("host-transport-id:") :].partition(":")
            return None, int(tid) if tid.isdigit() else -1, command
        for prefix in ("host-usb:", "host-local:", "host:"):
            if service.startswith(prefix):
                return None, None, service[len(prefix) :]
        return None, None, service

    def _host(self, conn: _Conn, service: str) -> str | None:
        """Answer a host service; the serial switched to for transport requests, else None."""
        serial, transport_id, command = self._split_host_service(service)

        if command.startswith(("transport", "tport:")):
            legacy = not command.startswith("tport:")
            if command.startswith("tport:serial:"):
                serial = command[len("tport:serial:") :]
            elif command.startswith("transport:"):
                serial = command[len("transport:") :]
            elif command.startswith("transport-id:"):
                tid = command[len("transport-id:") :]
                if not tid.isdigit():
                    conn.fail("invalid transport id")
                    return None
                transport_id = int(tid)
            chosen, error = self._acquire(serial, transport_id)
            if chosen is None:
                conn.fail(error)
                return None
            conn.okay()
            if not legacy:
                conn.send(struct.pack("<Q", self._devices[chosen][1]))
            return chosen

        if command == "version":
            conn.okay(f"{ADB_SERVER_VERSION:04x}")
        elif command == "kill":
            conn.okay()
        elif command in ("devices", "devices-l"):
            conn.okay(self._device_list(long=command == "devices-l"))
        elif command == "features":
            chosen, error = self._acquire(serial, transport_id)
            if chosen is None:
                conn.fail(error)
            else:
                conn.okay(",".join(self.features))
        elif command == "host-features":
            conn.okay(",".join([*DEVICE_FEATURES, "push_sync"]))
        elif command in ("get-state", "get-serialno", "get-devpath"):
            chosen, error = self._acquire(serial, transport_id)
            if chosen is None:
                conn.fail(error)
            elif command == "get-state":
                conn.okay(self._devices[chosen][0])
            elif command == "get-serialno":
                conn.okay(chosen)
            else:
                conn.okay("unknown")
        elif command.startswith("wait-for-"):
            self._wait_for(conn, serial, transport_id, command)
        else:
            conn.fail("unknown host service")
        return None

    def _device_list(self, long: bool) -> str:
        with self._lock:
            devices = sorted(self._devices.items())
        lines = []
        for serial, (state, tid) in devices:
            if long:
                lines.append(
                    f"{serial:<22} {state} product:adb_standin model:adb_standin device:adb_standin "
                    f"transport_id:{tid}\n"
                )
            else:
                lines.append(f"{serial}\t{state}\n")
        return "".join(lines)

    def _wait_for(self, conn: _Conn, serial: str | None, transport_id: int | None, command: str) -> None:
        parts = command.split("-")  # wait-for-TRANSPORT-STATE
        if len(parts) != 4 or parts[2] not in ("any", "usb", "local"):
            conn.fail("unknown host service")
            return
        wanted = parts[3]
        conn.okay()
        while not self._stopping.is_set() and not conn.killed:
            chosen, error = self._acquire(serial, transport_id)
            if wanted == "disconnect":
                if chosen is None:
                    break
            elif chosen is not None and wanted in ("any", self._devices[chosen][0]):
                break
            elif error.startswith("more than one"):
                conn.fail(error)
                return
            time.sleep(0.1)
        conn.okay()

    # ---- device services (what adbd would do) --------------------------------------------------------------

    def _device_service(self, conn: _Conn, service: str) -> None:
        if service.startswith("shell"):
            args, sep, command = service[len("shell") :].partition(":")
            if not sep or (args and not args.startswith(",")):
                conn.fail("closed")
                return
            options = [a for a in args.split(",") if a]
            term = next((a[len("TERM=") :] for a in options if a.startswith("TERM=")), "dumb")
            if "v2" in options:
                self._shell_v2(conn, command, term)
            else:
                self._shell_raw(conn, command, term)
        elif service.startswith("exec:"):
            self._shell_raw(conn, service[len("exec:") :], "dumb")
        elif service == "sync:":
            conn.okay()
            self._sync(conn)
        else:
            conn.fail("closed")

    def _spawn(self, conn: _Conn, command: str, term: str, merge_stderr: bool) -> subprocess.Popen:
        env = dict(os.environ if self.env is None else self.env)
        env["TERM"] = term
        argv = ["/bin/sh", "-c", command] if command else ["/bin/sh"]
        proc = subprocess.Popen(
            argv,
            cwd=self.cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            start_new_session=True,  # adbd runs each shell in its own session; killpg reaches children
        )
        conn.procs.append(proc)
        if conn.killed:  # dropped while starting
            conn.kill_procs()
        return proc

    def _pump_stdin(self, conn: _Conn, proc: subprocess.Popen, packets: bool) -> None:
        """Client -> command's stdin, until the client closes it or goes away."""
        assert proc.stdin is not None
        stdin = proc.stdin
        try:
            while True:
                if packets:
                    kind, length = struct.unpack("<BI", conn.recv_exact(5))
                    data = conn.recv_exact(length) if length else b""
                    if kind == SHELL_CLOSE_STDIN:
                        with contextlib.suppress(OSError):
                            stdin.close()
                        continue  # keep reading: the client's end of the socket tells when it leaves
                    if kind != SHELL_STDIN or stdin.closed:
                        continue  # window size changes and unknown packets
                else:
                    try:
                        data = conn.sock.recv(SYNC_DATA_MAX)
                    except OSError:
                        data = b""
                    if not data:
                        raise _Closed
                with contextlib.suppress(OSError):
                    stdin.write(data)
                    stdin.flush()
        except _Closed:
            conn.kill_procs()  # the client went away: adbd kills the command
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _shell_v2(self, conn: _Conn, command: str, term: str) -> None:
        proc = self._spawn(conn, command, term, merge_stderr=False)
        conn.okay()
        threading.Thread(target=self._pump_stdin, args=(conn, proc, True), daemon=True).start()

        def pump(stream, kind: int) -> None:
            try:
                while chunk := os.read(stream.fileno(), SYNC_DATA_MAX):
                    conn.send(struct.pack("<BI", kind, len(chunk)) + chunk)
            except (_Closed, OSError):
                conn.kill_procs()

        pumps = [
            threading.Thread(target=pump, args=(proc.stdout, SHELL_STDOUT), daemon=True),
            threading.Thread(target=pump, args=(proc.stderr, SHELL_STDERR), daemon=True),
        ]
        for t in pumps:
            t.start()
        for t in pumps:
            t.join()
        code = proc.wait()
        code = 0x80 | -code if code < 0 else code  # adbd: 0x80 | signal when killed
        if not conn.killed:
            conn.send(struct.pack("<BIB", SHELL_EXIT, 1, code & 0xFF))

    def _shell_raw(self, conn: _Conn, command: str, term: str) -> None:
        proc = self._spawn(conn, command, term, merge_stderr=True)
        conn.okay()
        threading.Thread(target=self._pump_stdin, args=(conn, proc, False), daemon=True).start()
        assert proc.stdout is not None
        with contextlib.suppress(OSError):
            while chunk := os.read(proc.stdout.fileno(), SYNC_DATA_MAX):
                conn.send(chunk)
        proc.wait()

    # ---- sync ------------------------------------------------------------------------------------------

    def _sync(self, conn: _Conn) -> None:
        handlers: dict[bytes, Callable[[_Conn, bytes, str], bool]] = {
            b"STAT": self._sync_lstat_v1,
            b"LST2": self._sync_stat_v2,
            b"STA2": self._sync_stat_v2,
            b"LIST": self._sync_list,
            b"LIS2": self._sync_list,
            b"SEND": self._sync_send,
            b"RECV": self._sync_recv,
        }
        while True:
            request_id, length = struct.unpack("<4sI", conn.recv_exact(8))
            if length > 1024:
                self._sync_fail(conn, "path too long")
                return
            path = conn.recv_exact(length).decode("utf-8", "surrogateescape")
            self.sync_requests.append((request_id.decode("ascii", "replace"), path))
            if request_id == b"QUIT":
                return
            handler = handlers.get(request_id)
            if handler is None:
                self._sync_fail(conn, f"unknown command {struct.unpack('<I', request_id)[0]:08x}")
                return
            if not handler(conn, request_id, path):
                return

    @staticmethod
    def _sync_fail(conn: _Conn, reason: str) -> None:
        data = reason.encode()
        conn.send(struct.pack("<4sI", b"FAIL", len(data)) + data)

    @staticmethod
    def _sync_lstat_v1(conn: _Conn, request_id: bytes, path: str) -> bool:
        try:
            st = os.lstat(path)
            mode, size, mtime = st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime) & 0xFFFFFFFF
        except OSError:
            mode = size = mtime = 0
        conn.send(struct.pack("<4sIII", b"STAT", mode, size, mtime))
        return True

    @staticmethod
    def _stat_fields(st: os.stat_result) -> tuple[int, ...]:
        return (
            st.st_dev, st.st_ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid, st.st_size,
            int(st.st_atime), int(st.st_mtime), int(st.st_ctime),
        )  # fmt: skip

    def _sync_stat_v2(self, conn: _Conn, request_id: bytes, path: str) -> bool:
        try:
            st = os.stat(path) if request_id == b"STA2" else os.lstat(path)
        except OSError as e:
            conn.send(STAT_V2.pack(request_id, e.errno or 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
        else:
            conn.send(STAT_V2.pack(request_id, 0, *self._stat_fields(st)))
        return True

    def _sync_list(self, conn: _Conn, request_id: bytes, path: str) -> bool:
        v2 = request_id == b"LIS2"
        with contextlib.suppress(OSError):
            for name in [".", "..", *os.listdir(path)]:
                raw = os.fsencode(name)
                try:
                    st = os.lstat(os.path.join(path, name))
                except OSError as e:
                    if v2:
                        conn.send(DENT_V2.pack(b"DNT2", e.errno or 1, *[0] * 10, len(raw)) + raw)
                    continue
                if v2:
                    conn.send(DENT_V2.pack(b"DNT2", 0, *self._stat_fields(st), len(raw)) + raw)
                else:
                    fields = (st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime) & 0xFFFFFFFF, len(raw))
                    conn.send(DENT_V1.pack(b"DENT", *fields) + raw)
        done = DENT_V2.size if v2 else DENT_V1.size
        conn.send(b"DONE" + b"\0" * (done - 4))
        return True

    def _sync_send(self, conn: _Conn, request_id: bytes, spec: str) -> bool:
        path, comma, mode_text = spec.rpartition(",")
        if not comma:
            self._sync_fail(conn, "missing , in ID_SEND")
            return False
        try:
            mode = _parse_mode(mode_text)
        except ValueError:
            self._sync_fail(conn, "bad mode")
            return False
        if stat.S_ISLNK(mode):
            return self._sync_send_link(conn, path)
        mode &= 0o777
        mode |= (mode >> 3) & 0o070
        mode |= (mode >> 3) & 0o007
        try:
            st = os.lstat(path)
            do_unlink = stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)
        except OSError:
            do_unlink = True
        if do_unlink:
            with contextlib.suppress(OSError):
                os.unlink(path)

        error: str | None = None
        fd = -1
        try:
            os.makedirs(os.path.dirname(path) or "/", mode=0o775, exist_ok=True)
        except OSError as e:
            error = f"secure_mkdirs failed: {e.strerror}"
        if error is None:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
                os.fchmod(fd, mode)
            except OSError as e:
                error = f"couldn't create file: {e.strerror}"
        if error is not None:
            self._sync_fail(conn, error)
        written = 0
        limit = self.push_limit
        mtime = 0
        try:
            while True:
                kind, size = struct.unpack("<4sI", conn.recv_exact(8))
                if kind == b"DONE":
                    mtime = size
                    break
                if kind != b"DATA":
                    if error is None:
                        self._sync_fail(conn, "invalid data message")
                    error = error or "invalid data message"
                    break
                if size > SYNC_DATA_MAX:
                    if error is None:
                        self._sync_fail(conn, "oversize data message")
                    error = error or "oversize data message"
                    break
                data = conn.recv_exact(size)
                if error is not None:
                    continue  # adbd keeps reading (and dropping) DATA until DONE after a failure
                if limit is not None and written + len(data) > limit:
                    os.write(fd, data[: limit - written])
                    written = limit
                    error = "write failed: " + os.strerror(28)  # ENOSPC: No space left on device
                    self._sync_fail(conn, error)
                    continue
                try:
                    os.write(fd, data)
                    written += len(data)
                except OSError as e:
                    error = f"write failed: {e.strerror}"
                    self._sync_fail(conn, error)
        finally:
            if fd >= 0:
                os.close(fd)
            if error is not None and do_unlink:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        if error is not None:
            return False  # adbd ends the sync session (closes the socket) after a failed SEND
        with contextlib.suppress(OSError):
            os.utime(path, (mtime, mtime))
        conn.send(struct.pack("<4sI", b"OKAY", 0))
        return True

    def _sync_send_link(self, conn: _Conn, path: str) -> bool:
        kind, size = struct.unpack("<4sI", conn.recv_exact(8))
        if kind != b"DATA":
            self._sync_fail(conn, "invalid data message: expected ID_DATA")
            return False
        if size > SYNC_DATA_MAX:
            self._sync_fail(conn, "oversize data message")
            return False
        target = conn.recv_exact(size).split(b"\0", 1)[0]
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
            os.symlink(target, path)
        except OSError as e:
            self._sync_fail(conn, f"symlink failed: {e.strerror}")
            return False
        kind, mtime = struct.unpack("<4sI", conn.recv_exact(8))
        if kind != b"DONE":
            self._sync_fail(conn, "invalid data message: expected ID_DONE")
            return False
        with contextlib.suppress(OSError, NotImplementedError):
            os.utime(path, (mtime, mtime), follow_symlinks=False)
        conn.send(struct.pack("<4sI", b"OKAY", 0))
        return True

    def _sync_recv(self, conn: _Conn, request_id: bytes, path: str) -> bool:
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as e:
            self._sync_fail(conn, f"open failed: {e.strerror}")
            return False
        with f:
            while True:
                try:
                    chunk = f.read(SYNC_DATA_MAX - 8)
                except OSError as e:
                    self._sync_fail(conn, f"read failed: {e.strerror}")
                    return False
                if not chunk:
                    break
                conn.send(struct.pack("<4sI", b"DATA", len(chunk)) + chunk)
        conn.send(struct.pack("<4sI", b"DONE", 0))
        return True
