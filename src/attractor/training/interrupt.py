"""Ctrl-C and SIGTERM during training: finish the current step, keep what is done, say so.

While :func:`watching` is active, SIGINT and SIGTERM only record that a stop was asked
for; training checks :func:`requested` between steps (the engine's ``should_stop``) and
after every finished chunk, and ``runs/launch.py`` turns the stop into :class:`Interrupted`,
whose one line the CLI prints before exiting ``128 + signal`` (130 for SIGINT, 143 for
SIGTERM). A second signal in the coordinator stops at once (KeyboardInterrupt): a user
who presses Ctrl-C twice does not wait for the step.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)

# The first stop signal received while watching (None: none). Module state because a signal
# handler has nowhere else to put it; one process trains one run at a time.
_received: int | None = None
_depth = 0


class Interrupted(Exception):
    """Training stopped on a signal; finished members are written and a re-run resumes.

    Attributes:
        signum: the signal that stopped it.
        exit_code: ``128 + signum``, the shell's convention (130 for Ctrl-C).
    """

    def __init__(self, signum: int, done: int | None = None, total: int | None = None) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        if done is None or total is None:
            line = f"interrupted ({signal.Signals(signum).name})"
        else:
            line = f"interrupted: {done} of {total} members done; run the same command to resume"
        super().__init__(line)


def requested() -> int | None:
    """The stop signal received while watching, or ``None``."""
    return _received


def _record(signum: int, frame: FrameType | None) -> None:
    global _received
    if _received is None:
        _received = signum


def _record_and_forward(signum: int, frame: FrameType | None) -> None:
    global _received
    if _received is not None:  # second signal: the user does not want to wait
        raise KeyboardInterrupt
    _received = signum
    # Worker processes of the process backend see a terminal's Ctrl-C themselves (same
    # process group) but not a SIGTERM sent to this pid: pass it on so they stop too.
    for child in multiprocessing.active_children():
        if child.pid is not None:
            try:
                os.kill(child.pid, signum)
            except ProcessLookupError:  # exited meanwhile
                pass


@contextmanager
def watching(coordinator: bool = False) -> Iterator[None]:
    """Record SIGINT/SIGTERM instead of dying, for the duration of the block.

    Args:
        coordinator: the process the user started (a second signal stops it at once, and
            signals are passed on to its worker processes); ``False`` in a worker, which
            only records (see :func:`record_in_worker`).

    Nested blocks share the outer one's handlers. Outside the main thread (signal handlers
    cannot be set there) this does nothing: the default Ctrl-C behaviour remains.
    """
    global _received, _depth
    if _depth or threading.current_thread() is not threading.main_thread():
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
        return
    handler = _record_and_forward if coordinator else _record
    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    _received, _depth = None, 1
    try:
        yield
    finally:
        _depth = 0
        for sig, old in previous.items():
            signal.signal(sig, old)


def check() -> None:
    """Raise :class:`Interrupted` if a stop signal was received while watching."""
    if _received is not None:
        raise Interrupted(_received)


@contextmanager
def stopping(progress: Callable[[], tuple[int, int]]) -> Iterator[None]:
    """Watch as the coordinator; a stop signal ends the block with :class:`Interrupted`.

    Whatever ends the block after a signal (the engine's ``StopRequested``, a worker pool
    broken by the Ctrl-C, :func:`check`, a second Ctrl-C) becomes one ``Interrupted``
    carrying ``progress()``, the ``(done, total)`` members, for its message; so does a
    block that finishes although a signal came (the user asked to stop: no later ``&&``).
    """
    with watching(coordinator=True):
        try:
            yield
        except BaseException as exc:
            if _received is None:
                raise
            raise Interrupted(_received, *progress()) from exc
        if _received is not None:
            raise Interrupted(_received, *progress())


def record_in_worker() -> None:
    """In a worker process of ours: record stop signals for good (idempotent).

    Kept for the worker's whole life, not per chunk: a Ctrl-C reaching an idle worker
    between chunks must not kill it (a dead worker breaks the pool and its other chunks).
    """
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, _record)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def exit_on_sigterm() -> None:
    """Make SIGTERM raise :class:`Interrupted` (the CLI's one line and exit 143), not kill
    silently; call once from the main thread of the command line.
    """
    signal.signal(signal.SIGTERM, _terminate)


__all__ = [
    "SIGNALS",
    "Interrupted",
    "check",
    "exit_on_sigterm",
    "record_in_worker",
    "requested",
    "stopping",
    "watching",
]
