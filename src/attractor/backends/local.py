"""Run chunks one after another in this process (progress per step)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from attractor.config import RunConfig


class LocalBackend:
    """Every chunk in the calling process: the reference the other backends must match."""

    name = "local"
    shares_filesystem = True

    def map(
        self,
        fn: Callable[..., dict[str, Any]],
        jobs: list[tuple],
        on_result: Callable[[dict[str, Any]], None],
        on_step: Callable[[int], None],
    ) -> None:
        """Run ``fn(*job, on_step=on_step)`` for each job in order; report each result."""
        for job in jobs:
            on_result(fn(*job, on_step=on_step))


@contextmanager
def opened(run: RunConfig, out: Path) -> Iterator[LocalBackend]:
    """The local backend (nothing to connect or clean up)."""
    yield LocalBackend()
