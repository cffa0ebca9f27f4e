"""Where chunks of members run. Every backend has one small contract (:class:`Backend`).

``backend.map(fn, jobs, on_result, on_step)`` calls ``fn(*job)`` for every job and
``on_result(fn's return)`` as each finishes, in the coordinating process, which alone
writes the manifest; ``on_step(k)`` counts ``k`` member-steps done (per step where it
can, else per chunk). ``shares_filesystem`` says whether workers may write the run
directory themselves; where they may not (Ray), ``fn`` returns the files as bytes.

Backends are named in :data:`BACKENDS`; a new backend is one module exposing an opener
(a context manager ``(run, out) -> Backend``) plus one line there. :func:`open_backend`
connects (a Ray cluster) before anything is written, so a bad address or a missing extra
is refused with one line and nothing overwritten.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from attractor.backends import local, process, ray_backend
from attractor.config import RunConfig
from attractor.errors import UserError, require

__all__ = ["BACKENDS", "Backend", "BackendSpec", "ChunkFn", "open_backend"]

ChunkFn = Callable[..., dict[str, Any]]


class Backend(Protocol):
    """Runs chunks of members somewhere and reports each result back to the coordinator."""

    name: str
    shares_filesystem: bool

    def map(
        self,
        fn: ChunkFn,
        jobs: list[tuple],
        on_result: Callable[[dict[str, Any]], None],
        on_step: Callable[[int], None],
    ) -> None:
        """Call ``fn(*job)`` for every job; ``on_result`` each return value as it arrives."""
        ...


@dataclass(frozen=True)
class BackendSpec:
    """A registered backend.

    Attributes:
        open: context manager ``(run, out) -> Backend``: ready on entry (connected, pool
            sized from ``run``), cleaned up on exit; ``out`` is the run directory.
        summary: one line saying where chunks run.
        needs: ``(module, extra)`` of an optional dependency, checked before opening.
    """

    open: Callable[[RunConfig, Path], AbstractContextManager[Backend]]
    summary: str
    needs: tuple[str, str] | None = None


BACKENDS: dict[str, BackendSpec] = {
    "local": BackendSpec(local.opened, "this process, one chunk after another"),
    "process": BackendSpec(process.opened, "a pool of spawned worker processes on this machine"),
    "ray": BackendSpec(
        ray_backend.connected, "Ray tasks on a local instance or a cluster", needs=("ray", "ray")
    ),
}


@contextmanager
def open_backend(run: RunConfig, out: Path) -> Iterator[Backend]:
    """The backend ``run.backend`` ready to map chunks; ``out`` is the run directory.

    Raises:
        UserError: an unknown backend name (the message lists the known ones) or a missing
            optional dependency (with its install hint), before anything is written.
    """
    spec = BACKENDS.get(run.backend)
    if spec is None:
        known = ", ".join(BACKENDS)
        raise UserError(f"unknown backend '{run.backend}'; known backends: {known}")
    if spec.needs is not None:
        require(*spec.needs)  # refuse before the caller writes anything
    with spec.open(run, out) as backend:
        yield backend
