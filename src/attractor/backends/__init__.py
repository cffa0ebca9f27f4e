"""Where chunks of members run. Every backend has one contract::

    backend(fn, jobs, on_result, on_step) -> None

calls ``fn(*job)`` for every job, ``on_result(fn's return)`` as each finishes (in the
coordinating process, which alone writes the manifest) and ``on_step(k)`` for every
``k`` member-steps done (per step where it can, else per chunk).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attractor.backends import local, process, ray_backend
from attractor.errors import UserError, require

Backend = Callable[[Callable[..., list[dict[str, Any]]], list[tuple], Callable[[list[dict[str, Any]]], None], Callable[[int], None]], None]

#: Backends that need an optional dependency: name -> (module, extra).
NEEDS: dict[str, tuple[str, str]] = {"ray": ("ray", "ray")}

BACKENDS: dict[str, Backend] = {
    "local": local.run,
    "process": process.run,
    "ray": ray_backend.run,
}


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise UserError(f"unknown backend '{name}'; known backends: {', '.join(BACKENDS)}")
    if name in NEEDS:
        require(*NEEDS[name])  # refuse before the caller writes anything
    return BACKENDS[name]
