"""Progress of long commands on stderr: a rich bar on a terminal, plain periodic lines in a
log, nothing when progress is off.

:class:`Progress` counts units of work (training counts member-steps, the report its
sections); :class:`Stages` names the few long stages of a command, one line as each begins.
Both are off unless asked for: the library is quiet, the CLI switches them on (not with
``--json``), and they write to stderr, so results on stdout stay clean.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress

# A plain line at least every this many seconds, and at every tenth of the work.
LINE_SECONDS = 10.0
LINE_FRACTION = 0.1


class PlainLines:
    """Progress for a stream that is not a terminal (a log, a pipe): one line now and then.

    ``training: 1200/4000 member-steps (30 %), 12 s``, every ~10 % of the work or
    :data:`LINE_SECONDS`, whichever comes first, and at the end; a redrawn bar would
    leave only ``0… 0…`` in a log.
    """

    def __init__(
        self,
        total: int,
        label: str,
        stream: TextIO,
        name: str = "training",
        unit: str = "member-steps",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.label, self.stream = total, label, stream
        self.name, self.unit, self.clock = name, unit, clock
        self.done = 0
        self._start = self._last_time = clock()
        self._last_done = 0

    def start(self) -> None:
        """Print the label once (what is being done)."""
        self._write(self.label)

    def advance(self, k: int) -> None:
        """Count ``k`` more done; print a line when a tenth of the work or time has passed."""
        self.done = min(self.total, self.done + k)
        now = self.clock()
        step = max(1, int(self.total * LINE_FRACTION))
        if self.done - self._last_done >= step or now - self._last_time >= LINE_SECONDS:
            self._line(now)

    def stop(self) -> None:
        """A last line, unless the last one already said as much."""
        if self.done != self._last_done:
            self._line(self.clock())

    def _line(self, now: float) -> None:
        self._last_done, self._last_time = self.done, now
        percent = 100 * self.done // max(1, self.total)
        self._write(
            f"{self.name}: {self.done}/{self.total} {self.unit} ({percent} %), "
            f"{now - self._start:.0f} s"
        )

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()


def _rich_bar(stream: TextIO, unit: str) -> RichProgress:
    return RichProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit, markup=False),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
        console=Console(file=stream),
    )


class Progress:
    """Context manager; ``advance(k)`` counts ``k`` units done (by default member-steps).

    Writes to ``stream`` (default ``sys.stderr``, so results on stdout stay clean): a rich
    bar when it is a terminal, :class:`PlainLines` otherwise, whose lines read
    ``{name}: {done}/{total} {unit} ({percent} %), {seconds} s``.
    """

    def __init__(
        self,
        total: int,
        enabled: bool,
        label: str,
        stream: TextIO | None = None,
        *,
        name: str = "training",
        unit: str = "member-steps",
    ) -> None:
        self.enabled = enabled and total > 0
        out = stream if stream is not None else sys.stderr
        self._bar: RichProgress | None = None
        self._plain: PlainLines | None = None
        self._task = None
        if not self.enabled:
            return
        if out.isatty():
            self._bar = _rich_bar(out, unit)
            self._task = self._bar.add_task(label, total=total)
        else:
            self._plain = PlainLines(total, label, out, name=name, unit=unit)

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        if self._plain is not None:
            self._plain.start()
        return self

    def advance(self, k: int = 1) -> None:
        """Count ``k`` units done."""
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, k)
        if self._plain is not None:
            self._plain.advance(k)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
        if self._plain is not None:
            self._plain.stop()


class Stages:
    """The few long stages of a command, one line on ``stream`` as each begins, and one at the end.

    ``hparam-map [2/2] at 9 s: measuring 13 cells``, then ``hparam-map: done in 10 s``
    (nothing at the end when a stage raised: the error says what happened). Lines on a
    terminal too, never a live display: a stage may draw its own bar (``train`` does), and
    two live displays on one terminal overwrite each other. A stage that did not begin
    (``total`` too high) is harmless; one begun past ``total`` shows as ``[4/3]``.
    """

    def __init__(
        self,
        name: str,
        total: int,
        enabled: bool,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name, self.total, self.enabled, self.clock = name, total, enabled, clock
        # Read when made, not at import: a test (or a caller) may have replaced sys.stderr.
        self.stream = stream if stream is not None else sys.stderr
        self.begun = 0
        self._start = clock()

    def begin(self, what: str) -> None:
        """Say that the next stage, ``what``, starts now."""
        self.begun += 1
        self._write(
            f"{self.name} [{self.begun}/{self.total}] at {self.clock() - self._start:.0f} s: {what}"
        )

    def __enter__(self) -> Stages:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self._write(f"{self.name}: done in {self.clock() - self._start:.0f} s")

    def _write(self, line: str) -> None:
        if self.enabled:
            self.stream.write(line + "\n")
            self.stream.flush()
