"""Check a whole run or experiment directory against the sums recorded when it was written.

Every file with a recorded sha256 (:mod:`attractor.runs.checksums`) is read and hashed: the
run's plan and metrics, each finished member's snapshots and metrics, every result's
tables, and the same again for each run an experiment trained inside its directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attractor.runs.checksums import sha256_file
from attractor.runs.directory import MANIFEST, Directory
from attractor.runs.owned import is_attractor_manifest


def recorded_files(root: Path) -> tuple[dict[Path, str], list[str]]:
    """Every file of ``root`` (and runs inside it) with its recorded sum; and what has none.

    Raises:
        UserError: ``root`` is not an attractor directory or its manifest is unreadable.
    """
    directory = Directory(root)
    manifest = directory.manifest()
    sums: dict[Path, str] = {root / rel: s for rel, s in manifest.get("sha256", {}).items()}
    unrecorded: list[str] = []
    for member, record in manifest.get("members", {}).items():
        if record.get("status") not in ("done", "diverged"):
            continue
        files = record.get("sha256")
        if not files:
            unrecorded.append(f"{root}/members/{member}")
            continue
        sums |= {root / "members" / member / name: s for name, s in files.items()}
    for stored in directory.results():
        if stored.sha256 is None:
            unrecorded.append(str(stored.path))
            continue
        for key, digest in stored.sha256.items():
            name = f"{stored.name}.parquet" if key == "" else f"{stored.name}.{key}.parquet"
            sums[root / name] = digest
    for sub in sorted(root.rglob(MANIFEST)):
        if sub.parent != root and is_attractor_manifest(sub):
            inner, missing = recorded_files(sub.parent)
            sums |= inner
            unrecorded += missing
    return sums, unrecorded


def verify_directory(root: str | Path) -> dict[str, Any]:
    """Hash every recorded file of ``root``: ``{"dir", "ok", "checked", "damaged",
    "unrecorded"}``, ``damaged`` a list of ``{"path", "problem"}``.
    """
    root = Path(root)
    sums, unrecorded = recorded_files(root)
    damaged = []
    for path, expected in sorted(sums.items()):
        if not path.is_file():
            damaged.append({"path": str(path), "problem": "missing"})
        elif sha256_file(path) != expected:
            damaged.append({"path": str(path), "problem": "sha256 differs from the recorded one"})
    return {
        "dir": str(root),
        "ok": not damaged,
        "checked": len(sums),
        "damaged": damaged,
        "unrecorded": unrecorded,
    }
