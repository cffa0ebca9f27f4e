"""A rich progress bar over member-steps, or nothing when progress is off."""

from __future__ import annotations

from types import TracebackType

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress


class Progress:
    """Context manager; ``advance(k)`` counts ``k`` member-steps done."""

    def __init__(self, total: int, enabled: bool, label: str) -> None:
        self.enabled = enabled and total > 0
        self._bar = (
            RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("member-steps"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=False,
            )
            if self.enabled
            else None
        )
        self._task = self._bar.add_task(label, total=total) if self._bar else None

    def __enter__(self) -> Progress:
        if self._bar:
            self._bar.start()
        return self

    def advance(self, k: int) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, k)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar:
            self._bar.stop()
