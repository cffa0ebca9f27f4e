"""What attractor wrote in a directory, so that ``--force`` deletes that and nothing else.

A directory is attractor's only if it has an attractor manifest (the ``schema_version``
marker the store writes first; a truncated one still starts with it). Inside it, the files
the store writes are recognised by their place and name: the manifest, the plan, members'
snapshots, checkpoints and metrics, the run's metrics, results (JSON with a result header, plus the
tables and PNG the header's name gives them), ``report.html``, the lock, temporaries of
interrupted writes, and every run an experiment trained inside it (a sub-directory with
its own attractor manifest). Anything else is the user's and is kept.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from attractor.errors import UserError

MANIFEST = "manifest.json"
#: stabilize.db: the stabilize experiment's Optuna study (SQLite; journal while writing).
_FIXED = {
    MANIFEST,
    "plan.parquet",
    "metrics.parquet",
    "report.html",
    ".lock",
    ".lock.pid",
    "stabilize.db",
    "stabilize.db-journal",
}
_MEMBER_FILE = re.compile(r"^(step-\d+\.safetensors|metrics\.parquet|resume\.safetensors)$")
#: How every manifest the store writes begins (``write_json``: indent 2, schema first).
MARKER = '{\n  "schema_version":'


def is_attractor_manifest(path: Path) -> bool:
    """Whether ``path`` is a manifest attractor wrote (even a truncated or older one)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(MARKER)).decode("utf-8", "replace")
    except OSError:
        return False
    return head == MARKER


def protected(path: Path) -> str | None:
    """Why ``path`` may never be deleted ('.', home, '/', a parent of the cwd), or None."""
    target, cwd = path.resolve(), Path.cwd().resolve()
    if target == cwd:
        return "the current directory"
    if target == Path.home().resolve():
        return "your home directory"
    if target == Path(target.anchor):
        return "the root directory"
    if target in cwd.parents:
        return "a parent of the current directory"
    return None


def refuse_protected(path: Path, imported_ok: bool = False) -> None:
    """One line and no deletion if ``path`` is '.', home, '/' or a parent of the cwd, or (unless
    ``imported_ok``: only ``attractor import --force`` replaces one) a run of imported models.
    """
    why = protected(path)
    if why is not None:
        raise UserError(
            f"refusing to replace '{path}': it is {why}, which attractor never deletes; give "
            "the run's own directory (e.g. runs/NAME)"
        )
    source = None if imported_ok else imported_from(path)
    if source is not None:
        raise UserError(
            f"refusing to replace '{path}': it holds models imported from {source} (nothing to "
            "train or resume); give another --out, or replace it with `attractor import ... "
            "--force`"
        )


def imported_from(root: Path) -> str | None:
    """What ``attractor import`` made run ``root`` from, if its manifest records an import."""
    try:
        data = json.loads((root / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    record = data.get("imported") if isinstance(data, dict) else None
    if not isinstance(record, dict):
        return None
    spec = record.get("spec")
    return ", ".join(f"'{s}'" for s in spec) if isinstance(spec, list) and spec else "elsewhere"


def _result_files(path: Path) -> list[Path]:
    """``path`` and its tables/PNG if it is a result JSON (a header with kind and name)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return []
    header = data.get("result") if isinstance(data, dict) else None
    if not isinstance(header, dict) or header.get("name") != path.stem or "kind" not in header:
        return []
    keys = header.get("tables") if isinstance(header.get("tables"), list) else []
    tables = [f"{path.stem}.parquet" if k == "" else f"{path.stem}.{k}.parquet" for k in keys]
    return [path, *(path.with_name(n) for n in [*tables, f"{path.stem}.png"])]


def owned_files(root: Path) -> set[Path]:
    """Every file under attractor directory ``root`` that attractor wrote."""
    owned: set[Path] = set()
    for path in root.iterdir():
        if path.is_symlink():
            continue  # never follow a link out of the directory
        if path.is_dir():
            if path.name == "members":
                owned |= {
                    f
                    for d in path.iterdir()
                    if d.is_dir() and not d.is_symlink() and d.name.isdigit()
                    for f in d.iterdir()
                    if f.is_file() and (_MEMBER_FILE.match(f.name) or _temporary(f))
                }
            else:
                owned |= _nested_runs(path)
        elif path.name in _FIXED or _temporary(path):
            owned.add(path)
        elif path.suffix == ".json":
            owned |= {p for p in _result_files(path) if p.is_file()}
    return owned


def _temporary(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".tmp")


def _nested_runs(folder: Path) -> set[Path]:
    """Files of the attractor directories at or below ``folder`` (runs an experiment trained)."""
    if is_attractor_manifest(folder / MANIFEST):
        return owned_files(folder)
    found: set[Path] = set()
    for sub in folder.iterdir():
        if sub.is_dir() and not sub.is_symlink():
            found |= _nested_runs(sub)
    return found


def remove_owned(
    root: Path, keep: tuple[str, ...] = (".lock", ".lock.pid"), imported_ok: bool = False
) -> list[Path]:
    """Delete what attractor wrote in ``root`` (but ``keep``); the files left, named on stderr.

    Folders emptied by the deletion go too; ``root`` stays. Refuses a directory without an
    attractor manifest, the paths :func:`protected` names, and an imported run unless
    ``imported_ok`` (its files are links or copies of the sources; unlinking them never
    touches a source).
    """
    refuse_protected(root, imported_ok)
    if not is_attractor_manifest(root / MANIFEST):
        raise UserError(
            f"'{root}' is not an attractor directory (no attractor {MANIFEST}); attractor "
            "deletes only what it wrote: choose a new --out or empty it yourself"
        )
    owned = {p for p in owned_files(root) if not (p.parent == root and p.name in keep)}
    for path in sorted(owned, key=lambda p: -len(p.parts)):
        path.unlink(missing_ok=True)
    for folder in sorted({p.parent for p in owned}, key=lambda p: -len(p.parts)):
        while folder != root and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
    left = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if (p.is_file() or p.is_symlink()) and not (p.parent == root and p.name in keep)
    )
    if left:
        shown = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
        print(
            f"warning: kept {len(left)} file(s) in '{root}' that attractor did not write: {shown}",
            file=sys.stderr,
        )
    return [root / name for name in left]
