"""Where chunks of members run. Every backend has one small contract (:class:`Backend`).

``backend.map(fn, jobs, on_result, on_step)`` calls ``fn(*job)`` for every job and
``on_result(fn's return)`` as each finishes, in the coordinating process, which alone
writes the manifest; ``on_step(k)`` counts ``k`` member-steps done (per step where it
can, else per chunk). ``shares_filesystem`` says whether workers may write the run
directory themselves; where they may not (Ray), ``fn`` returns the files as bytes.

:func:`open_backend` connects (a Ray cluster) before anything is written, so a bad
address or a missing extra is refused with one line and nothing overwritten.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from attractor.config import RunConfig
from attractor.errors import UserError, require

ChunkFn = Callable[..., dict[str, Any]]


class Backend(Protocol):
    name: str
    shares_filesystem: bool

    def map(self, fn: ChunkFn, jobs: list[tuple], on_result: Callable[[dict[str, Any]], None],
            on_step: Callable[[int], None]) -> None: ...


#: Backends that need an optional dependency: name -> (module, extra).
NEEDS: dict[str, tuple[str, str]] = {"ray": ("ray", "ray")}
KNOWN = ("local", "process", "ray")


@contextmanager
def open_backend(run: RunConfig, out: Path) -> Iterator[Backend]:
    """The backend ``run.backend`` ready to map chunks; ``out`` is the run directory (Ray's temp dir goes beside it)."""
    if run.backend not in KNOWN:
        raise UserError(f"unknown backend '{run.backend}'; known backends: {', '.join(KNOWN)}")
    if run.backend in NEEDS:
        require(*NEEDS[run.backend])  # refuse before the caller writes anything
    if run.backend == "local":
        from attractor.backends.local import LocalBackend

        yield LocalBackend()
    elif run.backend == "process":
        from attractor.backends.process import ProcessBackend

        yield ProcessBackend(workers=run.workers, threads=run.num_cpus)
    else:
        from attractor.backends.ray_backend import connected

        with connected(run, out) as backend:
            yield backend
