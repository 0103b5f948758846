"""Progress of long command-line work (training, evaluation) with an ETA, drawn by rich on stderr.

Drawn only on a terminal. With output to a file or a pipe (a log, the journal) a trainer's progress is
plain lines instead, one per new stage and at most one every few seconds within a stage; with ``--json``
nothing is written, so machine-read output stays clean.
"""

from __future__ import annotations

import re
import sys
import time
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


LINE_EVERY_S = 5.0


class LineReport:
    """Progress as plain lines off a terminal: a line when the stage changes (the message without its
    numbers, e.g. "epoch 3/30" -> "epoch /"), else at most every LINE_EVERY_S."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.stage: str | None = None
        self.last_line = 0.0

    def __call__(self, fraction: float, message: str) -> None:
        stage, now = re.sub(r"\d+", "", message), time.monotonic()
        if stage == self.stage and now - self.last_line < LINE_EVERY_S:
            return
        self.stage, self.last_line = stage, now
        print(f"{self.description}: {fraction * 100:3.0f}% {message}", file=sys.stderr, flush=True)


@contextmanager
def fraction_progress(description: str, enabled: bool = True, lines: bool = False) -> Iterator[FractionCallback]:
    """A ``(fraction, message)`` callback, as the trainers report, drawing a bar with an ETA; when the bar
    is not drawn and ``lines`` is set, plain progress lines (LineReport)."""
    if not enabled and lines:
        yield LineReport(description)
        return
    with progress_bar(description, 1.0, enabled) as bar:
        yield lambda fraction, message: bar.at(max(0.0, min(1.0, fraction)), message)
