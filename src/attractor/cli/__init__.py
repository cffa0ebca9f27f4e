"""`attractor` command line: a thin shell over the library. Every command takes ``--json``.

Bad input never ends in a traceback: a :class:`UserError` prints one line and exits 2.
Commands live by theme in ``core``, ``experiments`` (diff), ``lm``, ``measure``,
``trainer`` (instability, hparam-map), ``trainer_shortcuts``, ``trainer_stabilize``,
``trainer_stack`` (trainer2) and ``trainer_tangent``; importing them registers them on
the one Typer ``app`` (in that order, which is the order of ``attractor --help``).
"""

from __future__ import annotations

import sys
from typing import Any

import typer

# Importing the theme modules registers their commands (alphabetical = help order).
from attractor.cli import (  # noqa: F401
    core,
    experiments,
    import_cmd,
    lm,
    measure,
    trainer,
    trainer_evaluator,
    trainer_shortcuts,
    trainer_stabilize,
    trainer_stack,
    trainer_tangent,
    verify,
    world,
)
from attractor.cli._shared import app
from attractor.errors import UserError
from attractor.training.interrupt import Interrupted, exit_on_sigterm

try:  # typer >= 0.20 vendors click; older typer re-raises click's own exceptions
    from typer import TyperException as _CliError
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import ClickException as _CliError

__all__ = ["app", "main"]


def _usage_line(exc: Any) -> str:
    """A click/typer usage error as one line, with the command whose --help explains it."""
    ctx = getattr(exc, "ctx", None)
    where = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
    return f"error: {exc.format_message().rstrip('.')}{where}"


def main() -> None:
    """Console entry point: one line and exit code 2 for anything the user must fix.

    Ctrl-C and SIGTERM end every command with one line and exit 130 / 143 (training first
    finishes its current step and keeps what is done: ``training/interrupt.py``).
    """
    exit_on_sigterm()
    try:
        code = app(prog_name="attractor", standalone_mode=False)
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Interrupted as exc:
        typer.echo(str(exc), err=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _interrupted()
    except _CliError as exc:  # usage errors: missing or unknown options, bad option values
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `attractor`: show the help
            exc.show()
        else:
            typer.echo(_usage_line(exc), err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:  # a path the user gave cannot be read or written
        if exc.filename is None:
            raise
        reason = exc.strerror or type(exc).__name__
        typer.echo(
            f"error: '{exc.filename}': {reason}; check the path, its permissions and free disk "
            "space",
            err=True,
        )
        sys.exit(2)
    # Without standalone mode typer returns, not raises, the exit code of a typer.Exit raised
    # in a command, and of a KeyboardInterrupt (130), which it catches itself.
    if code == 130:
        _interrupted()
    if isinstance(code, int) and code:
        sys.exit(code)


def _interrupted() -> None:
    typer.echo("interrupted (an interrupted `attractor run` resumes when started again)", err=True)
    sys.exit(130)
