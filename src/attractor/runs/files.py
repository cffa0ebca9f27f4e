"""Writing files so that a crash never leaves half of one: temp file beside it, fsync, rename."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from attractor.runs.results import strict_json


@functools.cache
def _umask() -> int:
    """The process's umask, read once: from /proc where it can be read without changing it;
    else set and restored at once (``os.umask`` has no read-only form).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` in one rename.

    The file gets the mode any new file gets (``0o666`` less the umask), not mkstemp's 0600.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(target: Path, data: Any) -> None:
    with atomic_path(target) as tmp:
        # Insertion order, not sorted: the order of [plan.levels] and [plan.ranges] sets the
        # plan (which factor is which SALib column), so a reloaded config must keep it.
        tmp.write_text(json.dumps(strict_json(data), indent=2, allow_nan=False))


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "torch": torch.__version__}
    for package in ("attractor", "numpy", "pandas", "safetensors", "pydantic"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def config_digest(config: dict[str, Any]) -> str:
    """A short hash of a resolved, JSON-able config (key order ignored)."""
    canonical = json.dumps(strict_json(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
