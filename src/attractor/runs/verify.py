"""Check a whole run or experiment directory against the sums recorded when it was written.

Every file with a recorded sha256 (:mod:`attractor.runs.checksums`) is read and hashed: the
run's plan and metrics, each finished member's snapshots and metrics, every result's
tables, the manifest's and every result's own content (their sums are inside them), and
the same again for each run an experiment trained inside its directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attractor.runs.checksums import content_sha256, sha256_file
from attractor.runs.directory import CONTENT_SUM, MANIFEST, Directory
from attractor.runs.owned import is_attractor_manifest
from attractor.runs.results import read_stored
from attractor.runs.trust import SIGNATURE


def damaged_json(root: Path) -> tuple[list[dict[str, str]], int]:
    """The manifests and results of ``root`` (and runs inside it) whose content differs from
    the sum written inside them; and how many were checked.
    """
    found, checked = [], 0
    for manifest_path in sorted(root.rglob(MANIFEST)):
        if not is_attractor_manifest(manifest_path):
            continue
        directory = Directory(manifest_path.parent)
        manifest = directory.manifest()
        recorded = manifest.get(CONTENT_SUM)
        checked += isinstance(recorded, str)
        if isinstance(recorded, str) and recorded != _manifest_sum(manifest):
            found.append({"path": str(manifest_path), "problem": EDITED})
        for path in sorted(directory.root.glob("*.json")):
            stored = None if path.name == MANIFEST else read_stored(path, verify_body=False)
            if stored is None:
                if path.name != MANIFEST and _begins_as_result(path):
                    found.append({"path": str(path), "problem": UNREADABLE})
                continue
            checked += stored.body_sha256 is not None
            if not stored.intact:
                found.append({"path": str(path), "problem": EDITED})
    return found, checked


EDITED = "content differs from the sha256 recorded in it"
UNREADABLE = "begins as an attractor result but cannot be read as one (cut short or damaged)"
#: How every result file attractor writes begins (``write_json``: indent 2, header first).
RESULT_MARKER = '{\n  "result": {\n    "header":'


def _begins_as_result(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(RESULT_MARKER)) == RESULT_MARKER.encode()


def _manifest_sum(manifest: dict[str, Any]) -> str | None:
    try:
        return content_sha256(manifest, CONTENT_SUM, SIGNATURE)
    except ValueError:  # NaN in a file that should be strict JSON
        return None


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
    stored_results = (read_stored(p, verify_body=False) for p in sorted(root.glob("*.json")))
    for stored in (r for r in stored_results if r is not None):
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
    damaged, json_checked = damaged_json(root)
    for path, expected in sorted(sums.items()):
        if not path.is_file():
            damaged.append({"path": str(path), "problem": "missing"})
        elif sha256_file(path) != expected:
            damaged.append({"path": str(path), "problem": "sha256 differs from the recorded one"})
    return {
        "dir": str(root),
        "ok": not damaged,
        "checked": len(sums) + json_checked,
        "damaged": damaged,
        "unrecorded": unrecorded,
    }
