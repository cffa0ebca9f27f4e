"""What every attractor directory has, a run's or an experiment's: a manifest and results.

A run directory (:class:`~attractor.runs.store.RunStore`) adds the plan and the members'
files; an experiment directory (hparam-map, instability, shortcuts, trainer2, tangent,
diff) has a manifest naming the experiment and its resolved settings, its results, and
the runs it trained inside it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from attractor.config import SCHEMA_VERSION
from attractor.errors import UserError
from attractor.runs.checksums import content_sha256, sha256_file
from attractor.runs.files import atomic_path, config_digest, versions, write_json
from attractor.runs.identity import experiment_identity
from attractor.runs.lock import LOCK, PID, hold
from attractor.runs.owned import is_attractor_manifest, refuse_protected, remove_owned
from attractor.runs.results import (
    HEADER_SCHEMA,
    Result,
    StoredResult,
    check_result,
    read_stored,
    strict_json,
    table_paths,
)

MANIFEST = "manifest.json"
#: The manifest's own content sum (what ``attractor verify`` checks it against).
CONTENT_SUM = "content_sha256"


class Directory:
    """An attractor directory at ``root``: its manifest, and the results written into it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def write_manifest(self, data: dict[str, Any]) -> None:
        """Replace the manifest (atomically): the one place any manifest is written, signed
        with this user's key (:mod:`attractor.runs.trust`)."""
        from attractor.runs.trust import SIGNATURE, sign

        body = strict_json(data)
        body[CONTENT_SUM] = content_sha256(body, CONTENT_SUM, SIGNATURE)
        write_json(self.root / MANIFEST, sign(self.root / MANIFEST, body))

    def manifest(self) -> dict[str, Any]:
        path = self.root / MANIFEST
        if not path.exists():
            raise UserError(
                f"'{self.root}' is not an attractor run directory (no {MANIFEST}); run `attractor "
                "run CONFIG --out DIR` first"
            )
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            data = None
        if not isinstance(data, dict):
            raise UserError(
                f"'{path}' is corrupt (not a JSON object); re-run the config with --force to "
                "rebuild the run"
            )
        if data.get("schema_version") != SCHEMA_VERSION:
            raise UserError(
                f"'{path}' has schema version {data.get('schema_version')}, this attractor reads "
                f"{SCHEMA_VERSION}; re-run with --force"
            )
        return data

    def _remove_stale_temporaries(self) -> None:
        """Temp files of writes that a killed run never finished: never read, safe to drop."""
        for stale in self.root.rglob(".*.tmp"):
            stale.unlink(missing_ok=True)

    # ---- results of analyses (one writer for all: attractor.runs.results) -----------
    def write(self, result: Result) -> dict[str, str]:
        """Write ``result`` as ``ROOT/<name>.json`` plus its tables; the paths written.

        A result replaces an earlier one of the same name and kind (the same analysis run
        again); a file of that name holding another kind, or no result at all, is refused,
        so no result overwrites another silently.
        """
        check_result(result)
        target = self.root / f"{result.name}.json"
        payload = result.to_json()
        if target.exists() and not self._legacy_result(target, payload):
            old = read_stored(target, verify_body=False)  # a damaged result may be replaced
            if old is None or old.kind != result.kind:
                held = (
                    "something that is not an attractor result"
                    if old is None
                    else f"a {old.kind} result"
                )
                raise UserError(
                    f"'{target}' holds {held}; move it away or choose another output directory"
                )
        tables = result.to_tables()
        paths, sums = {}, {}
        for key, path in table_paths(self.root, result.name, list(tables)).items():
            with atomic_path(path) as tmp:
                tables[key].to_parquet(tmp, index=False)
                sums[key] = sha256_file(tmp)
            paths["parquet" if key == "" else f"parquet:{key}"] = str(path)
        body = strict_json(payload)
        header = {
            "header": HEADER_SCHEMA,
            "kind": result.kind,
            "schema": result.schema,
            "name": result.name,
            "tables": list(tables),
            "sha256": sums,  # checked when a table is read (StoredResult.table, verify)
            "body_sha256": content_sha256(body),  # checked when the result is read
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_json(target, {"result": header, **body})
        paths["json"] = str(target)
        return paths

    def _legacy_result(self, path: Path, payload: dict[str, Any]) -> bool:
        """Whether ``path`` is this same analysis as an attractor before the registry wrote it.

        Those were JSON objects without the ``result`` header, in a directory with a
        manifest, with the keys the analysis still writes; running it again replaces them
        rather than failing on every run directory made before. Any other file is kept.
        """
        if not (self.root / MANIFEST).is_file():
            return False
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return False
        return isinstance(data, dict) and "result" not in data and bool(set(data) & set(payload))

    def results(self, kind: str | None = None) -> list[StoredResult]:
        """The results this directory holds (of ``kind``, if given), ordered by name."""
        if not self.root.is_dir():
            return []
        found = (
            read_stored(path) for path in sorted(self.root.glob("*.json")) if path.name != MANIFEST
        )
        return [r for r in found if r is not None and (kind is None or r.kind == kind)]

    def result(self, name: str) -> StoredResult:
        """The result called ``name``; a clear error naming what the directory holds if absent."""
        path = self.root / f"{name}.json"
        stored = read_stored(path) if path.is_file() else None
        if stored is None:
            held = ", ".join(r.name for r in self.results()) or "none"
            raise UserError(f"'{self.root}' holds no result '{name}' (results: {held})")
        return stored

    # ---- experiment directories -------------------------------------------------------
    @classmethod
    def prepare_experiment(
        cls,
        root: str | Path,
        experiment: str,
        config: dict[str, Any],
        force: bool = False,
        current: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> Self:
        """Open ``root`` for experiment ``experiment`` with resolved ``config`` (JSON-able).

        The same experiment and config reopen it (finished parts are reused); another one is
        refused unless ``force``, which deletes what attractor wrote there first, like a
        run's (:func:`~attractor.runs.owned.remove_owned`); the directory's lock is held
        meanwhile (:mod:`attractor.runs.lock`). ``current`` turns a recorded config into
        today's form (the defaults of settings added since filled in), so a directory an
        older attractor wrote with the same settings reopens too.
        """
        store = cls(root)
        root = store.root
        store.check_target(force, "experiment")
        digest = config_digest(experiment_identity(config))
        with hold(root):  # re-entrant: run_experiment holds it for the whole experiment
            if store.contents():
                try:
                    old = json.loads((root / MANIFEST).read_text())
                except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                    old = {}
                old = old if isinstance(old, dict) else {}
                # Directories written before placement left the hash kept the whole config's.
                known = (digest, config_digest(config))
                same = old.get("config_hash") in known or _same_today(
                    current, old.get("config"), digest
                )
                if old.get("experiment") == experiment and same:
                    store._remove_stale_temporaries()
                    return store
                if not force:
                    what = f"a {old['experiment']} experiment" if old.get("experiment") else "a run"
                    raise UserError(
                        f"'{root}' holds {what} made from another config; use another --out, "
                        "or --force to delete it and start over"
                    )
                remove_owned(root)
            store.write_manifest(
                {
                    "schema_version": SCHEMA_VERSION,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "experiment": experiment,
                    "config": config,
                    "config_hash": digest,
                    "versions": versions(),
                },
            )
        return store

    def check_target(self, force: bool, what: str) -> None:
        """Refuse, before anything is created or locked, an ``--out`` that can never hold a
        ``what`` ("run" or "experiment"): a file, a folder that is not attractor's, or (with
        ``force``) '.', home, '/' or a parent of the working directory.
        """
        root = self.root
        if root.exists() and not root.is_dir():
            raise UserError(f"--out '{root}' is a file; give a directory path for the {what}")
        if force:
            refuse_protected(root)
        if self.contents() and not is_attractor_manifest(root / MANIFEST):
            kind = "run directory" if what == "run" else "directory"
            raise UserError(
                f"'{root}' exists and is not an attractor {kind}; choose a new --out or empty it"
            )

    def contents(self) -> list[Path]:
        """What the directory holds besides its lock (empty if it does not exist)."""
        if not self.root.is_dir():
            return []
        return [p for p in self.root.iterdir() if p.name not in (LOCK, PID)]

    def discard_if_unused(self) -> None:
        """Remove the directory if it holds nothing but its manifest (and lock): an experiment
        refused before it wrote anything, so that running it again is not "another config".
        """
        if [p.name for p in self.contents()] != [MANIFEST]:
            return
        (self.root / MANIFEST).unlink()
        for name in (PID, LOCK):  # the lock goes with it; its holder is about to let go
            (self.root / name).unlink(missing_ok=True)
        self.root.rmdir()

    def experiment(self) -> str | None:
        """The experiment this directory holds, or None for an ensemble run."""
        return self.manifest().get("experiment")


def _same_today(
    current: Callable[[dict[str, Any]], dict[str, Any]] | None, recorded: Any, digest: str
) -> bool:
    """Whether a recorded experiment config, in today's form, has identity ``digest``."""
    if current is None or not isinstance(recorded, dict):
        return False
    try:
        return config_digest(experiment_identity(current(recorded))) == digest
    except (UserError, ValueError, TypeError):  # no longer valid settings: another config
        return False
