"""The run directory: every write atomic, every finished member recorded, resumable.

Layout::

    RUN/manifest.json                   resolved config + hash, schema, versions, plan hash,
                                        snapshot steps, status of every member
    RUN/plan.parquet                    the plan table
    RUN/members/<id>/step-<k>.safetensors   weights (and buffers) at snapshot k
    RUN/members/<id>/metrics.parquet    that member's metrics at its snapshots
    RUN/metrics.parquet                 all members' metrics, one row per (member, step)
    RUN/<name>.json, RUN/<name>*.parquet   results of analyses (:mod:`attractor.runs.results`)

An *experiment* directory (hparam-map, instability, shortcuts, trainer2, diff, ...) has a
manifest too, naming the experiment and its resolved config, and holds that experiment's
results and the runs it trained.

A member is *finished* once the manifest says so, and the manifest is updated only after
all of that member's files are in place: a run killed at any moment loses at most the
members in flight, which are retrained from scratch (they depend only on their row).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from attractor.config import SCHEMA_VERSION, Config
from attractor.errors import UserError
from attractor.plan import Plan
from attractor.runs.files import atomic_path, config_digest, versions, write_json
from attractor.runs.results import (
    HEADER_SCHEMA,
    Result,
    StoredResult,
    check_result,
    read_stored,
    table_paths,
)

MANIFEST = "manifest.json"
FINISHED = ("done", "diverged")
#: Settings that say where and how a run executes or is recorded, never what it computes
#: (a member depends only on its plan row): a run may resume with other values of these.
PLACEMENT: dict[str, tuple[str, ...] | None] = {
    "run": ("backend", "workers", "num_cpus", "ray_address", "max_retries"),
    "track": None,  # the whole section
}


def identity(resolved: dict[str, Any]) -> dict[str, Any]:
    """A resolved config without its placement settings: what must match to resume a run."""
    kept = {k: dict(v) if isinstance(v, dict) else v for k, v in resolved.items()}
    for section, keys in PLACEMENT.items():
        if keys is None:
            kept.pop(section, None)
        elif isinstance(kept.get(section), dict):
            for key in keys:
                kept[section].pop(key, None)
    return kept


def snapshot_bytes(member: int, step: int, tensors: dict[str, torch.Tensor]) -> bytes:
    """A snapshot file's exact bytes, for workers that cannot write the run directory (Ray)."""
    from safetensors.torch import save

    return save(
        {k: v.contiguous() for k, v in tensors.items()},
        metadata={"member": str(member), "step": str(step)},
    )


class RunStore:
    """Reads and writes one run directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # ---- creating / resuming -------------------------------------------------------
    @classmethod
    def prepare(
        cls,
        root: str | Path,
        config: Config,
        plan: Plan,
        snapshot_steps: dict[int, list[int]],
        force: bool = False,
    ) -> RunStore:
        """Open ``root`` for training ``config``: create it, or resume it if it holds this very run.

        A directory made from another config (or plan) is refused unless ``force``, which
        deletes its previous contents first. Anything that is not a run directory is refused.
        """
        store = cls(root)
        root = store.root
        if root.exists() and not root.is_dir():
            raise UserError(f"--out '{root}' is a file; give a directory path for the run")
        manifest = root / MANIFEST
        if root.is_dir() and any(root.iterdir()) and not manifest.exists():
            raise UserError(
                f"'{root}' exists and is not an attractor run directory; choose a new --out or "
                "empty it"
            )
        if manifest.exists():
            try:
                old = store.manifest()
            except UserError:  # corrupt or from another schema: only --force may replace it
                if not force:
                    raise
                old = {}
            # Compared without placement settings, so a run killed under one backend may be
            # finished under another (or with tracking switched on).
            same = (
                identity(old.get("config", {})) == identity(config.resolved())
                and old.get("plan_hash") == plan.hash()
            )
            if same:
                store._remove_stale_temporaries()
                return store
            if not force:
                raise UserError(
                    f"'{root}' holds a run made from another config (hash "
                    f"{old.get('config_hash')}, this one {config.hash()}); "
                    "use another --out, or --force to delete it and start over"
                )
            shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
        with atomic_path(root / "plan.parquet") as tmp:
            plan.to_parquet(tmp)
        write_json(
            manifest,
            {
                "schema_version": SCHEMA_VERSION,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "config": config.resolved(),
                "config_hash": config.hash(),
                "plan_hash": plan.hash(),
                "versions": versions(),
                "snapshot_steps": {str(bs): steps for bs, steps in snapshot_steps.items()},
                "members": {str(m): {"status": "pending"} for m in plan.table["member"]},
            },
        )
        return store

    def _remove_stale_temporaries(self) -> None:
        """Temp files of writes that a killed run never finished: never read, safe to drop."""
        for stale in self.root.rglob(".*.tmp"):
            stale.unlink(missing_ok=True)

    # ---- reading ---------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        path = self.root / MANIFEST
        if not path.exists():
            raise UserError(
                f"'{self.root}' is not an attractor run directory (no {MANIFEST}); run `attractor "
                "run CONFIG --out DIR` first"
            )
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise UserError(
                f"'{path}' is corrupt (not valid JSON); re-run the config with --force to rebuild "
                "the run"
            ) from None
        if data.get("schema_version") != SCHEMA_VERSION:
            raise UserError(
                f"'{path}' has schema version {data.get('schema_version')}, this attractor reads "
                f"{SCHEMA_VERSION}; re-run with --force"
            )
        return data

    def status(self) -> dict[int, dict[str, Any]]:
        return {int(k): v for k, v in self.manifest()["members"].items()}

    def member_dir(self, member: int) -> Path:
        return self.root / "members" / str(member)

    def snapshot_path(self, member: int, step: int) -> Path:
        return self.member_dir(member) / f"step-{step}.safetensors"

    def load_snapshot(self, member: int, step: int) -> dict[str, torch.Tensor]:
        path = self.snapshot_path(member, step)
        if not path.exists():
            raise UserError(
                f"weights file '{path}' is missing; re-run the config on this directory to retrain "
                f"member {member}"
            )
        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise UserError(
                f"weights file '{path}' is truncated or corrupt ({str(exc).splitlines()[0]}); "
                f"re-run the config on this directory to retrain member {member}"
            ) from None

    def intact(self, member: int, steps: list[int]) -> bool:
        """Whether a finished member's files are all there and readable; if not, resume retrains
        it.
        """
        try:
            pq.read_metadata(self.member_dir(member) / "metrics.parquet")
            for step in steps:
                with safe_open(self.snapshot_path(member, step), framework="pt"):
                    pass
        except (SafetensorError, OSError, ValueError, RuntimeError):
            return False
        return True

    def read_table(self, path: Path) -> pd.DataFrame:
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise UserError(
                f"table '{path}' is missing or corrupt ({str(exc).splitlines()[0]}); re-run the "
                "config on this directory to rebuild it"
            ) from None

    def metrics(self) -> pd.DataFrame:
        """All finished members' metrics (from the per-member files if the run never finished)."""
        path = self.root / "metrics.parquet"
        if path.exists():
            return self.read_table(path)
        return self._gather_metrics()

    def _gather_metrics(self) -> pd.DataFrame:
        finished = sorted(m for m, s in self.status().items() if s["status"] in FINISHED)
        frames = [self.read_table(self.member_dir(m) / "metrics.parquet") for m in finished]
        return (
            pd.concat(frames, ignore_index=True)
            if frames
            else pd.DataFrame(columns=["member", "step"])
        )

    # ---- writing (workers write member files; only the coordinator writes the manifest)
    def save_snapshot(self, member: int, step: int, tensors: dict[str, torch.Tensor]) -> None:
        with atomic_path(self.snapshot_path(member, step)) as tmp:
            save_file(
                {k: v.contiguous() for k, v in tensors.items()},
                str(tmp),
                metadata={"member": str(member), "step": str(step)},
            )

    def save_snapshot_bytes(self, member: int, step: int, data: bytes) -> None:
        """Write a snapshot serialized elsewhere (a Ray worker): checked, then written
        atomically.
        """
        from safetensors.torch import load

        load(data)  # refuse bytes that are not a readable safetensors file before they land
        with atomic_path(self.snapshot_path(member, step)) as tmp:
            tmp.write_bytes(data)

    def save_member_metrics(self, member: int, rows: list[dict[str, Any]]) -> None:
        with atomic_path(self.member_dir(member) / "metrics.parquet") as tmp:
            pd.DataFrame(rows).to_parquet(tmp, index=False)

    def annotate(self, **fields: Any) -> None:
        """Record run-level facts (e.g. the resolved strategy) in the manifest."""
        data = self.manifest()
        data.update(fields)
        write_json(self.root / MANIFEST, data)

    def mark(self, outcomes: list[dict[str, Any]]) -> None:
        """Record finished members (each dict has ``member``, ``status``, ...)."""
        data = self.manifest()
        for outcome in outcomes:
            data["members"][str(outcome["member"])] = {
                k: v for k, v in outcome.items() if k != "member"
            }
        write_json(self.root / MANIFEST, data)

    def collect_metrics(self) -> pd.DataFrame:
        """Gather every finished member's metrics into ``metrics.parquet``."""
        table = self._gather_metrics()
        with atomic_path(self.root / "metrics.parquet") as tmp:
            table.to_parquet(tmp, index=False)
        return table

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
            old = read_stored(target)
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
        paths = {}
        for key, path in table_paths(self.root, result.name, list(tables)).items():
            with atomic_path(path) as tmp:
                tables[key].to_parquet(tmp, index=False)
            paths["parquet" if key == "" else f"parquet:{key}"] = str(path)
        header = {
            "header": HEADER_SCHEMA,
            "kind": result.kind,
            "schema": result.schema,
            "name": result.name,
            "tables": list(tables),
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_json(target, {"result": header, **payload})
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
        cls, root: str | Path, experiment: str, config: dict[str, Any], force: bool = False
    ) -> RunStore:
        """Open ``root`` for experiment ``experiment`` with resolved ``config`` (JSON-able).

        The same experiment and config reopen it (finished parts are reused); another one is
        refused unless ``force``, which deletes the directory first, like a run's.
        """
        store = cls(root)
        root = store.root
        if root.exists() and not root.is_dir():
            raise UserError(f"--out '{root}' is a file; give a directory path for the experiment")
        digest = config_digest(config)
        manifest = root / MANIFEST
        if root.is_dir() and any(root.iterdir()):
            if not manifest.exists():
                raise UserError(
                    f"'{root}' exists and is not an attractor directory; choose a new --out or "
                    "empty it"
                )
            try:
                old = json.loads(manifest.read_text())
            except (OSError, json.JSONDecodeError):
                old = {}
            if old.get("experiment") == experiment and old.get("config_hash") == digest:
                store._remove_stale_temporaries()
                return store
            if not force:
                what = f"a {old['experiment']} experiment" if old.get("experiment") else "a run"
                raise UserError(
                    f"'{root}' holds {what} made from another config; use another --out, "
                    "or --force to delete it and start over"
                )
            shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
        write_json(
            manifest,
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

    def experiment(self) -> str | None:
        """The experiment this directory holds, or None for an ensemble run."""
        return self.manifest().get("experiment")
