"""Profile an artifact on this machine, in a fresh Python process running the standalone measure.py."""

from __future__ import annotations

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

    def command(
        self, artifact, *, runs: int, warmup_seconds: float, threads: int, op_profile: bool
    ) -> list[str]:
        """The command line that profiles `artifact` here (what the official-tools benchmark compares)."""
        return [
            sys.executable,
            str(MEASURE_SCRIPT),
            *self.arguments(
                artifact,
                str,
                runs=runs,
                warmup_seconds=warmup_seconds,
                threads=threads,
                op_profile=op_profile,
            ),
        ]

    def facts(self, device: DeviceProfile, runtime: str) -> RuntimeFacts:
        """This machine's CPU, ISA flags and the installed `runtime`'s version, spelled as measure.py spells
        them (`sessions.py`), read without loading the runtime."""
        import platform

        from edgecompress.runtimes.measure import cpu_info
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
        cmd, what = [sys.executable, str(MEASURE_SCRIPT.parent / job.script), *job.argv(str)], job.what
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
        except OSError as exc:
            raise DeviceError(f"{device.name}: cannot start the profiling process: {exc}") from exc
        return Completed(proc.returncode, proc.stdout, proc.stderr)
