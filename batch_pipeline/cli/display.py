"""How `run` and `demo` show progress: a bar per file on a terminal (rich, which Dagster
already installs), plain lines when stdout is a file or a pipe (logs stay greppable)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class Display:
    """Lines always; on a terminal, one bar per file: requests finished of the file's total."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.bars = self.stream.isatty()
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> Display:
        if self.bars:
            self._progress = Progress(
                TextColumn("{task.description:<28}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("requests  {task.fields[batches]}"),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
            )
            self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def line(self, text: str) -> None:
        """A line above the bars (or on its own when there are none)."""
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    @property
    def watch(self) -> Callable[[str, Mapping[str, Any]], None] | None:
        """What the driver calls with each status observation: the bars' update, or None for
        plain lines."""
        return self.update if self._progress is not None else None

    def update(self, name: str, status: Mapping[str, Any]) -> None:
        """Move `name`'s bar to what the status sensor observed."""
        assert self._progress is not None
        total = int(status.get("requests_total") or 0)
        done = int(status.get("requests_succeeded") or 0) + int(status.get("requests_failed") or 0)
        batches = f"{status.get('batches_finished')}/{status.get('batches_total')} batches"
        if name not in self._tasks:
            self._tasks[name] = self._progress.add_task(name, total=total, batches=batches)
        self._progress.update(self._tasks[name], total=total, completed=done, batches=batches)
