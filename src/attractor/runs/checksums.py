"""SHA-256 sums of the files the store writes: recorded when written, checked when read.

Where a sum is recorded:

* a member's snapshots and metrics: ``manifest["members"][id]["sha256"][file name]``,
  written with the member's status (the coordinator marks a member only after its files);
* run-level files (``plan.parquet``, ``metrics.parquet``): ``manifest["sha256"][path]``;
* a result's tables: the result JSON's header, ``"sha256": {table key: sum}`` (results are
  written by analyses while a run may still be training, so they never touch the manifest);
  the result's own content: the header's ``"body_sha256"`` (:func:`content_sha256`);
* the manifest's own content: its ``"content_sha256"`` (checked by ``attractor verify``;
  who wrote it is the signature's business, :mod:`attractor.runs.trust`).

A file without a recorded sum (a run directory from before sums) is read as it is.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from attractor.errors import UserError

MANIFEST = "manifest.json"
_CHUNK = 1 << 20
# Manifests read for their sums, keyed by (path, mtime_ns, size): loading every snapshot of a
# big run must not re-parse the manifest once per file.
_MANIFESTS: dict[Path, tuple[tuple[int, int], dict[str, Any]]] = {}


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def content_sha256(data: dict[str, Any], *without: str) -> str:
    """Hex SHA-256 of ``data``'s canonical JSON (sorted keys, no spaces), less keys ``without``.

    For JSON files whose text may be re-indented but whose content must not change (a
    manifest, a result): the sum is written inside the file it covers. ``data`` must be
    strict JSON already (:func:`attractor.runs.results.strict_json`), as read back.
    """
    body = {k: v for k, v in data.items() if k not in without}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return sha256_bytes(canonical.encode())


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of the file at ``path`` (read in chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    try:
        stat = path.stat()
        key = (stat.st_mtime_ns, stat.st_size)
        cached = _MANIFESTS.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    data = data if isinstance(data, dict) else {}
    _MANIFESTS[path] = (key, data)
    return data


def recorded_sum(root: Path, path: Path) -> str | None:
    """The sum ``root``'s manifest records for ``path`` (a file inside ``root``), or None."""
    try:
        rel = Path(path).relative_to(root)
    except ValueError:
        return None
    data = _manifest(Path(root))
    parts = rel.parts
    if len(parts) == 3 and parts[0] == "members":
        members = data.get("members")
        member = members.get(parts[1]) if isinstance(members, dict) else None
        sums, name = (member.get("sha256") if isinstance(member, dict) else None), parts[2]
    else:
        sums, name = data.get("sha256"), rel.as_posix()
    value = sums.get(name) if isinstance(sums, dict) else None
    return value if isinstance(value, str) else None


def damaged(path: Path, expected: str | None, data: bytes | None = None) -> bool:
    """Whether ``path`` (or its already-read bytes ``data``) differs from sum ``expected``."""
    if expected is None:
        return False
    actual = sha256_bytes(data) if data is not None else sha256_file(path)
    return actual != expected


def check(path: Path, expected: str | None, advice: str, data: bytes | None = None) -> None:
    """Refuse ``path`` with one line (naming it and ``advice``) if its sum is not ``expected``."""
    if damaged(path, expected, data):
        raise UserError(
            f"'{path}' is truncated or corrupt (its sha256 differs from the one recorded when it "
            f"was written); {advice}"
        )


def check_recorded(root: Path, path: Path, advice: str, data: bytes | None = None) -> None:
    """:func:`check` against the sum ``root``'s manifest records for ``path`` (if any)."""
    check(path, recorded_sum(Path(root), Path(path)), advice, data)
