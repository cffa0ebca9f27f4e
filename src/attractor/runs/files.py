"""Writing files so that a crash never leaves half of one: temp file beside it, fsync, rename."""

from __future__ import annotations

import errno
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

from attractor.errors import UserError
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
    tmp = ""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except Exception as exc:
        reason = _out_of_space(exc)
        if reason is None:
            raise
        raise UserError(
            f"cannot write '{target}': {reason}; free space (or raise the file size limit) "
            "and run the same command again (nothing was half-written)"
        ) from None
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


#: What a full disk, a quota or a file size limit look like, as errno or in the message of
#: the libraries that wrap them (safetensors, pyarrow).
_NO_SPACE = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for this process's file size limit",
}


def _out_of_space(exc: BaseException) -> str | None:
    """The reason ``exc`` is a full disk, a quota or a size limit, else None."""
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return _NO_SPACE[exc.errno]
    text = str(exc)
    for code, reason in _NO_SPACE.items():
        if os.strerror(code) in text:
            return reason
    return None


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
