"""Progress of long command-line work (training, evaluation) with an ETA, drawn by rich on stderr.

Shown only on a terminal: with output to a file or a pipe, or with ``--json``, nothing is drawn, so
logs and machine-read output stay clean.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# fraction done (0..1) and what is being done now
FractionCallback = Callable[[float, str], None]


def shown(json_output: bool = False) -> bool:
    return not json_output and sys.stderr.isatty()


class Bar:
    """One task's bar; every method does nothing when the bar is not shown."""

    def __init__(self, progress: Progress | None, task: TaskID | None) -> None:
        self._progress, self._task = progress, task

    def at(self, completed: float, step: str = "") -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=completed, step=step[:60])

    def advance(self, units: float, step: str = "") -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=units, step=step[:60])


@contextmanager
def progress_bar(description: str, total: float, enabled: bool = True) -> Iterator[Bar]:
    """A bar on stderr for ``total`` units of work, with the time spent and an ETA."""
    if not enabled:
        yield Bar(None, None)
        return
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                        TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[step]}"),
                        console=Console(stderr=True))
    with progress:
        yield Bar(progress, progress.add_task(description, total=total, step=""))


@contextmanager
def fraction_progress(description: str, enabled: bool = True) -> Iterator[FractionCallback]:
    """A ``(fraction, message)`` callback, as the trainers report, drawing a bar with an ETA."""
    with progress_bar(description, 1.0, enabled) as bar:
        yield lambda fraction, message: bar.at(max(0.0, min(1.0, fraction)), message)
