"""Run chunks in a pool of worker processes on this machine (spawn, few torch threads each).

Workers write their members' files into the run directory themselves (same machine);
the coordinator marks a chunk finished in the manifest as soon as its result arrives,
so a killed run resumes with every finished chunk kept.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from attractor.config import RunConfig
from attractor.training import interrupt


def _init_worker(threads: int) -> None:
    import torch

    # A Ctrl-C reaching a worker that is still starting must not kill it (a dead worker
    # breaks the pool): record stop signals from the start, as run_chunk does.
    interrupt.record_in_worker()
    # Workers share the cores: a few BLAS threads each avoids oversubscription.
    torch.set_num_threads(threads)


class ProcessBackend:
    """Chunks in a spawn pool of ``workers`` processes with ``threads`` torch threads each."""

    name = "process"
    shares_filesystem = True

    def __init__(self, workers: int | None = None, threads: int = 1) -> None:
        self.workers = workers
        self.threads = threads

    def map(
        self,
        fn: Callable[..., dict[str, Any]],
        jobs: list[tuple],
        on_result: Callable[[dict[str, Any]], None],
        on_step: Callable[[int], None],
    ) -> None:
        """Run the jobs in the pool; report each result (and its steps) as it finishes."""
        if not jobs:
            return
        default = max(1, (os.cpu_count() or 1) // self.threads)
        workers = max(1, min(len(jobs), self.workers or default))
        # spawn, not fork: forking a process that has started torch threads can deadlock.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(self.threads,),
        ) as pool:
            pending = {pool.submit(fn, *job) for job in jobs}
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        result = future.result()
                        on_result(result)
                        on_step(result["trained"])
            except BaseException:
                for future in pending:  # don't start chunks nobody will record
                    future.cancel()
                raise


@contextmanager
def opened(run: RunConfig, out: Path) -> Iterator[ProcessBackend]:
    """A process backend sized by ``run.workers`` and ``run.num_cpus`` threads per worker."""
    yield ProcessBackend(workers=run.workers, threads=run.num_cpus)
