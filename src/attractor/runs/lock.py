"""One writer per directory: ``ROOT/.lock`` (the ``filelock`` package) and its holder's pid.

Training and experiments hold the lock while they write; a second process that wants the
same directory is refused at once with one line naming the holder's pid (``ROOT/.lock.pid``),
and ``--force`` never deletes a directory whose lock another process holds. Within one
process the lock is re-entrant (an experiment trains runs and writes results while holding
its directory), counted per resolved path.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from attractor.errors import UserError

LOCK = ".lock"
PID = ".lock.pid"
_HELD: dict[Path, tuple[FileLock, int]] = {}


def holder(root: Path) -> str:
    """The pid written beside ``root``'s lock, or ``unknown`` if it cannot be read."""
    try:
        text = (Path(root) / PID).read_text().strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


def held_here(root: str | Path) -> bool:
    """Whether this process holds ``root``'s lock."""
    return Path(root).resolve() in _HELD


@contextmanager
def hold(root: str | Path) -> Iterator[None]:
    """Hold ``root``'s lock for the block (creating ``root``); refuse if another process has it.

    Raises:
        UserError: another process holds the lock (the message names its pid).
    """
    key = Path(root).resolve()
    if key in _HELD:
        lock, count = _HELD[key]
        _HELD[key] = (lock, count + 1)
        try:
            yield
        finally:
            _release(key)
        return
    key.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(key / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(
            f"'{root}' is in use by another attractor process (pid {holder(key)}); wait for it "
            "to finish, or use another --out"
        ) from None
    _HELD[key] = (lock, 1)
    try:
        (key / PID).write_text(f"{os.getpid()}\n")
        yield
    finally:
        _release(key)


def _release(key: Path) -> None:
    lock, count = _HELD[key]
    if count > 1:
        _HELD[key] = (lock, count - 1)
        return
    del _HELD[key]
    # The pid file goes first, so a reader never sees the pid of a process that let go.
    (key / PID).unlink(missing_ok=True)
    lock.release()
