"""Errors that are the user's to fix: the CLI prints their one line and exits with code 2."""

from __future__ import annotations

import importlib
from types import ModuleType


class UserError(Exception):
    """Bad input (config, paths, run directories, weights): one line naming the problem and the
    fix.
    """


def require(module: str, extra: str) -> ModuleType:
    """Import an optional heavy dependency lazily, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(
            f"this needs the optional dependency '{module}'; install it with: pip install "
            f"'attractor[{extra}]'"
        ) from None
