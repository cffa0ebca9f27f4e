"""Run chunks one after another in this process (progress per step)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class LocalBackend:
    name = "local"
    shares_filesystem = True

    def map(self, fn: Callable[..., dict[str, Any]], jobs: list[tuple], on_result: Callable[[dict[str, Any]], None],
            on_step: Callable[[int], None]) -> None:
        for job in jobs:
            on_result(fn(*job, on_step=on_step))
