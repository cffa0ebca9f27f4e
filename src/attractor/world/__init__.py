"""Worlds: the level of the stack a trained model acts on (see :mod:`attractor.world.base`).

A new built-in world is one file exposing ``make(**options) -> World`` and ``SUMMARY``,
plus one line in :data:`WORLDS`. A user world is any function returning a :class:`World`,
named ``module:function`` like a user task and imported the same way
(:mod:`attractor.tasks.user_code`: found on ``PYTHONPATH`` or in the current directory).
Only the user's own config names it: a world experiment's directory records the name, but
reopening it compares settings and rendering it reads results, so a shared directory never
makes attractor import a world.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from attractor.errors import UserError
from attractor.tasks.user_code import cwd_on_path, import_function
from attractor.world.base import Constants, Policy, World
from attractor.world.rollout import EnsemblePolicy, Rollout, rollout

#: name -> module exposing ``make`` and ``SUMMARY``. A fixed table, never read from a file.
WORLDS: dict[str, str] = {
    "double-well": "attractor.world.double_well",
    "cartpole": "attractor.world.cartpole",
    "denoise-digits": "attractor.world.denoise_digits",
    "lm-continuation": "attractor.world.lm_continuation",
}


def get_world(name: str, options: dict[str, Any] | None = None) -> World:
    """The world ``name`` (built-in, or ``module:function`` from the user's config) built
    with ``options``; one line naming what is wrong otherwise.
    """
    options = dict(options or {})
    if name not in WORLDS and ":" not in name:
        raise UserError(
            f"unknown world '{name}'; known: {', '.join(sorted(WORLDS))} (or module:function)"
        )
    # A user world's module (and its own lazy imports of siblings) may sit in the cwd.
    with cwd_on_path(name not in WORLDS):
        make = (
            importlib.import_module(WORLDS[name]).make
            if name in WORLDS
            else import_function(name, "world", search_cwd=True)
        )
        _check_options(name, make, options)
        world = make(**options)
    if not isinstance(world, World):
        raise UserError(f"world '{name}' returned {type(world).__name__}, not a World")
    return world


def _check_options(name: str, make: Any, options: dict[str, Any]) -> None:
    """One line naming an option the world's ``make`` does not take, before calling it."""
    accepted = inspect.signature(make).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = sorted(k for k in options if k not in accepted and not takes_any)
    if unknown:
        known = ", ".join(sorted(accepted)) or "none"
        raise UserError(f"world '{name}' has no option {unknown[0]!r}; its options: {known}")


def list_worlds() -> dict[str, str]:
    """Built-in world name -> one summary line."""
    return {name: importlib.import_module(path).SUMMARY for name, path in WORLDS.items()}


__all__ = [
    "WORLDS",
    "Constants",
    "EnsemblePolicy",
    "Policy",
    "Rollout",
    "World",
    "get_world",
    "list_worlds",
    "rollout",
]
