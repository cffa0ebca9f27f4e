"""User code named ``module:function`` in the user's own config: a task, a world.

The one place that imports such a function. Only names from a config the user passed on
the command line (or a run the user trusts: :mod:`attractor.runs.trust`) reach it, never
a name read from a shared directory on its own.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from attractor.errors import UserError


@contextmanager
def cwd_on_path(search_cwd: bool) -> Iterator[None]:
    """Let ``module:function`` find a module file in the current directory, as ``python -m`` would
    (only with ``search_cwd``: a config the user gave, never a run directory's task).

    Appended (not prepended) so a file in the cwd never shadows an installed module, and
    kept while the function runs so its own lazy imports of sibling files work too.
    """
    cwd = os.getcwd()
    added = search_cwd and cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def import_function(name: str, kind: str, search_cwd: bool) -> Callable[..., Any]:
    """The function ``module:function`` names (call it inside :func:`cwd_on_path`).

    Args:
        name: ``module:function``.
        kind: what it makes (``task``, ``world``), for the messages.
        search_cwd: whether the current directory was searched (for the message).

    Raises:
        UserError: one line for a malformed name, a module that cannot be imported, or a
            missing function.
    """
    module_name, _, function_name = name.partition(":")
    if not module_name or not function_name or ":" in function_name:
        raise UserError(
            f"{kind} {name!r} is not of the form 'module:function' (e.g. 'my{kind}s:make_{kind}')"
        )
    importlib.invalidate_caches()  # the module file may have been written after startup
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name or module_name.startswith(f"{exc.name}."):
            where = (
                "or in the current directory"
                if search_cwd
                else f"(a run's {kind} is never imported from the current directory)"
            )
            raise UserError(
                f"cannot import module {module_name!r} for {kind} {name!r}; put it on "
                f"PYTHONPATH {where}"
            ) from None
        raise UserError(
            f"importing module {module_name!r} for {kind} {name!r} failed: {exc}"
        ) from None
    except ImportError as exc:
        raise UserError(
            f"importing module {module_name!r} for {kind} {name!r} failed: {exc}"
        ) from None
    function = getattr(module, function_name, None)
    if function is None or not callable(function):
        raise UserError(
            f"module {module_name!r} has no function {function_name!r} ({kind} {name!r})"
        )
    return function


def _failed(module_name: str, kind: str, name: str, exc: ImportError) -> UserError:
    return UserError(f"importing module {module_name!r} for {kind} {name!r} failed: {exc}")


def check_arguments(
    name: str, kind: str, function: Callable[..., Any], options: dict[str, Any]
) -> None:
    """Refuse options the function does not take, before calling it.

    Binding first (rather than catching ``TypeError`` from the call) keeps a ``TypeError``
    raised *inside* the user's function a real traceback instead of a misleading one-liner.
    """
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    try:
        signature.bind(**options)
    except TypeError as exc:
        given = ", ".join(f"{kind}.{key}" for key in options) or "no options"
        raise UserError(
            f"{kind} function {name!r} does not accept the given options ({given}): {exc}; its "
            f"signature is {signature}"
        ) from None


__all__ = ["check_arguments", "cwd_on_path", "import_function"]
