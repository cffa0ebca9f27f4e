"""Run chunks in a pool of worker processes on this machine, one torch thread each."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any


def _init_worker() -> None:
    import torch

    # Workers share the cores: one BLAS thread each avoids oversubscription.
    torch.set_num_threads(1)


def run(fn: Callable[..., list[dict[str, Any]]], jobs: list[tuple], on_result: Callable[[list[dict[str, Any]]], None], on_step: Callable[[int], None]) -> None:
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    # spawn, not fork: forking a process that has started torch threads can deadlock.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
        futures = [pool.submit(fn, *job) for job in jobs]
        for future in as_completed(futures):
            outcomes = future.result()
            on_result(outcomes)
            on_step(sum(o["steps"] for o in outcomes))
