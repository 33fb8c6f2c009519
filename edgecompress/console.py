"""Console output: messages by verbosity and rich progress bars for every long step."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class _NullTask:
    def advance(self, n: float = 1, **fields: object) -> None:
        pass


class _Task:
    def __init__(self, progress: Progress, task_id: int) -> None:
        self._progress = progress
        self._id = task_id

    def advance(self, n: float = 1, **fields: object) -> None:
        """Move the bar by n; keyword fields (e.g. loss=0.31) are shown after it."""
        info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
        self._progress.update(self._id, advance=n, info=info)


@dataclass
class UI:
    """Verbosity: 0 quiet (errors and the final line), 1 normal, 2 verbose."""

    verbosity: int = 1
    #: Wide enough for the summary table when stderr is a file or a CI log (rich assumes 80 columns there).
    console: Console = field(
        default_factory=lambda: Console(stderr=True, width=None if sys.stderr.isatty() else 140)
    )

    def info(self, message: str) -> None:
        if self.verbosity >= 1:
            self.console.print(message, highlight=False, emoji=False)

    def debug(self, message: str) -> None:
        if self.verbosity >= 2:
            self.console.print(f"[dim]{message}[/dim]", highlight=False, emoji=False)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, emoji=False)

    @contextmanager
    def progress(self, description: str, total: float | None) -> Iterator[_Task | _NullTask]:
        """A progress bar for a long step; silent when quiet or when output is not a terminal in CI."""
        if self.verbosity < 1:
            yield _NullTask()
            return
        columns = [
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
        ]
        with Progress(*columns, console=self.console, transient=self.verbosity < 2) as progress:
            task_id = progress.add_task(description, total=total, info="")
            yield _Task(progress, task_id)
