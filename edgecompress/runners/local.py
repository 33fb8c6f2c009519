"""Profile an artifact on this machine, in a fresh Python process running the standalone measure.py."""

from __future__ import annotations

import errno
import subprocess
import sys

from edgecompress.errors import DeviceError
from edgecompress.profiling import RuntimeFacts
from edgecompress.runners.base import Completed, Job, ScriptRunner
from edgecompress.runtimes import MEASURE_SCRIPT
from edgecompress.specs import DeviceProfile


class LocalRunner(ScriptRunner):
    """Runs `python measure.py ...` with this interpreter (sys.executable) in a new process per artifact,
    so the peak resident memory it reports is that artifact's own, not the build's."""

    where = "this machine"

    def facts(self, device: DeviceProfile, runtime: str) -> RuntimeFacts:
        """This machine's CPU, ISA flags and the installed `runtime`'s version, spelled as measure.py spells
        them (`sessions.py`), read without loading the runtime."""
        import platform

        from edgecompress.runtimes.probe import cpu_info
        from edgecompress.runtimes.sessions import runtime_version

        if runtime not in device.runtimes:
            raise DeviceError(f"{device.name}: has no {runtime} runtime ({', '.join(device.runtimes)})")
        version = runtime_version(runtime)
        if version is None:
            raise DeviceError(
                f"{device.name}: {runtime} is not installed here (pip install 'edgecompress[all]')"
            )
        cpu_model, isa = cpu_info()
        return RuntimeFacts(
            runtime=runtime,
            runtime_version=version,
            cpu_model=cpu_model,
            isa_flags=isa,
            arch=platform.machine(),
        )

    def _measure(self, device: DeviceProfile, job: Job) -> Completed:
        cmd, what = job.command(str, sys.executable, str(MEASURE_SCRIPT.parent)), job.what
        try:
            proc = subprocess.run(
                cmd,
                input=job.stdin(str) if job.stdin else None,
                capture_output=True,
                text=True,
                timeout=self.timeout_seconds,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise DeviceError(
                f"{device.name}: profiling {what} took longer than {self.timeout_seconds:.0f} s"
            ) from exc
        except FileNotFoundError:
            raise DeviceError(f"{device.name}: no {cmd[0]} on this machine: {job.missing}") from None
        except OSError as exc:
            if exc.errno == errno.ENOEXEC:  # a program for another architecture: what the shell says (126)
                return Completed(126, "", f"{cmd[0]}: Exec format error")
            raise DeviceError(f"{device.name}: cannot start the profiling process: {exc}") from exc
        return Completed(proc.returncode, proc.stdout, proc.stderr)
