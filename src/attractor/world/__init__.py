"""Worlds: the level of the stack a trained model acts on (see :mod:`attractor.world.base`).

A new built-in world is one file exposing ``make(**options) -> World`` and ``SUMMARY``,
plus one line in :data:`WORLDS`. A user world is any function returning a :class:`World`,
named ``module:function`` like a user task (the user's own config names it; a run or
experiment directory never makes attractor import it).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from attractor.errors import UserError
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
    if name in WORLDS:
        make = importlib.import_module(WORLDS[name]).make
    elif ":" in name:
        module_name, _, function = name.partition(":")
        try:
            make = getattr(importlib.import_module(module_name), function)
        except (ImportError, AttributeError) as exc:
            raise UserError(
                f"cannot load world '{name}' ({exc}); check the module and function"
            ) from None
    else:
        raise UserError(
            f"unknown world '{name}'; known: {', '.join(sorted(WORLDS))} (or module:function)"
        )
    accepted = inspect.signature(make).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = sorted(k for k in options if k not in accepted and not takes_any)
    if unknown:
        known = ", ".join(sorted(accepted)) or "none"
        raise UserError(f"world '{name}' has no option {unknown[0]!r}; its options: {known}")
    world = make(**options)
    if not isinstance(world, World):
        raise UserError(f"world '{name}' returned {type(world).__name__}, not a World")
    return world


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
