"""Run chunks as Ray tasks (a local Ray instance, or the cluster ``ray.init`` finds)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attractor.errors import require


def run(fn: Callable[..., list[dict[str, Any]]], jobs: list[tuple], on_result: Callable[[list[dict[str, Any]]], None], on_step: Callable[[int], None]) -> None:
    ray = require("ray", "ray")
    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True, log_to_driver=False)
    remote = ray.remote(fn)
    pending = [remote.remote(*job) for job in jobs]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        outcomes = ray.get(done[0])
        on_result(outcomes)
        on_step(sum(o["steps"] for o in outcomes))
