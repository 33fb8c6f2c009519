"""Running a converter: its failures become ExportError, its native log noise is kept off the console.

Converters and runtimes (litert-torch's MLIR passes, XNNPACK, absl logging, torchao) write straight to
file descriptor 2, below Python. `converting(...)` sends fd 2 to a temporary file while the UI's own console keeps
writing to the terminal, and shows the captured lines only when the step fails.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from edgecompress.errors import BackendUnavailable, ExportError

if TYPE_CHECKING:
    from edgecompress.console import UI


def first_line(exc: BaseException) -> str:
    """The exception's type and the first non-empty line of its message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


@contextmanager
def native_stderr_captured(ui: UI) -> Iterator[list[str]]:
    """Unless `ui` is verbose (2), send fd 2 (native logs and Python-level stderr alike) to a temporary file
    and ignore Python warnings while inside, keeping `ui`'s own console on the real stderr. The yielded
    list receives the captured text on exit."""
    captured: list[str] = []
    try:
        saved_fd = -1 if ui.verbosity >= 2 else os.dup(2)
    except OSError:  # no fd 2 (a detached process): nothing to keep quiet
        saved_fd = -1
    if saved_fd < 0:
        yield captured
        return
    sys.stderr.flush()
    console = ui.console
    console_file = getattr(console, "_file", None)  # None: rich follows sys.stderr
    terminal = os.fdopen(os.dup(saved_fd), "w", buffering=1, errors="backslashreplace")
    with tempfile.TemporaryFile() as log, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(log.fileno(), 2)
        if console_file is None and console.file is sys.stderr and _writes_to_fd2(sys.stderr):
            console.file = terminal
        try:
            yield captured
        finally:
            sys.stderr.flush()
            console.file = console_file
            terminal.close()
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            log.seek(0)
            captured.append(log.read().decode(errors="replace"))


def _writes_to_fd2(stream: object) -> bool:
    try:
        return stream.fileno() == 2  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False


@contextmanager
def converting(name: str, step: str, *, ui: UI) -> Iterator[None]:
    """Run a conversion step: any failure becomes ExportError('<name>: <step> failed: <cause>') chained to
    the cause, with the last lines the converter printed (kept off the console unless `ui` is verbose); a
    missing package becomes BackendUnavailable."""
    error: Exception | None = None
    with native_stderr_captured(ui) as captured:
        try:
            yield
        except ExportError:
            raise
        except ModuleNotFoundError as exc:
            raise BackendUnavailable(
                f"{name}: {step} needs the Python package '{exc.name}', which is not installed "
                "(pip install 'edgecompress[all]')"
            ) from exc
        except Exception as exc:
            error = exc
    if error is not None:
        lines = [line for line in "".join(captured).splitlines() if line.strip()]
        tail = "\n".join(f"  {line}" for line in lines[-6:])
        raise ExportError(
            f"{name}: {step} failed: {first_line(error)}"
            + (f"\nconverter output (last lines):\n{tail}" if tail else "")
        ) from error
