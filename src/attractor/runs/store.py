"""The run directory: every write atomic, every finished member recorded, resumable.

Layout::

    RUN/manifest.json                   resolved config + hash, schema, versions, plan hash,
                                        snapshot steps, status of every member
    RUN/plan.parquet                    the plan table
    RUN/members/<id>/step-<k>.safetensors   weights (and buffers) at snapshot k
    RUN/members/<id>/metrics.parquet    that member's metrics at its snapshots
    RUN/members/<id>/resume.safetensors a member in flight: its checkpoint
    RUN/metrics.parquet                 all members' metrics, one row per (member, step)
    RUN/<name>.json, RUN/<name>*.parquet   results of analyses (:mod:`attractor.runs.results`)

An *experiment* directory (hparam-map, instability, shortcuts, trainer2, diff, ...) has a
manifest too, naming the experiment and its resolved config, and holds that experiment's
results and the runs it trained.

A member is *finished* once the manifest says so, and the manifest is updated only after
all of that member's files are in place. A member in flight keeps a checkpoint of its
whole training state (``members/<id>/resume.safetensors``, :mod:`attractor.runs.resume`):
a run killed at any moment goes on from there, bitwise as if never stopped.

Every snapshot and table is recorded with its sha256 (:mod:`attractor.runs.checksums`) and
checked when read; a finished member whose files changed is retrained on resume. One
process writes a directory at a time (``RUN/.lock``, :mod:`attractor.runs.lock`), and
``--force`` deletes only what attractor wrote there (:mod:`attractor.runs.owned`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load, save_file

from attractor.config import SCHEMA_VERSION, Config
from attractor.errors import UserError
from attractor.plan import Plan
from attractor.runs.checksums import (
    check_recorded,
    damaged,
    recorded_sum,
    sha256_bytes,
    sha256_file,
)
from attractor.runs.directory import MANIFEST, Directory
from attractor.runs.files import atomic_path, versions
from attractor.runs.identity import identity
from attractor.runs.lock import hold
from attractor.runs.owned import refuse_protected, remove_owned

FINISHED = ("done", "diverged")


def _filled(resolved: dict[str, Any]) -> dict[str, Any]:
    """A recorded config with the defaults of fields added since it was written filled in
    (a field is added with the default that does what attractor did before it), so a run
    made by an older attractor resumes; as recorded where it no longer parses.
    """
    from attractor.config import parse_config

    try:
        return parse_config(resolved, source="the run's manifest").resolved()
    except (UserError, ValueError, TypeError):
        return resolved


def snapshot_bytes(member: int, step: int, tensors: dict[str, torch.Tensor]) -> bytes:
    """A snapshot file's exact bytes, for workers that cannot write the run directory (Ray)."""
    from safetensors.torch import save

    return save(
        {k: v.contiguous() for k, v in tensors.items()},
        metadata={"member": str(member), "step": str(step)},
    )


class RunStore(Directory):
    """Reads and writes one run directory: its plan, members' snapshots and metrics.

    What every attractor directory has (manifest, results, experiment directories) is in
    :class:`~attractor.runs.directory.Directory`.
    """

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
        deletes what attractor wrote there first (:func:`~attractor.runs.owned.remove_owned`).
        Anything that is not a run directory is refused; so is a directory another process
        holds (:mod:`attractor.runs.lock`; the caller may hold it already, as ``train`` does).
        """
        store = cls(root)
        root = store.root
        store.check_target(force, "run")
        with hold(root):
            if store._reopen(config, plan, force):
                return store
            with atomic_path(root / "plan.parquet") as tmp:
                plan.to_parquet(tmp)
                plan_sum = sha256_file(tmp)
            store.write_manifest(
                {
                    "schema_version": SCHEMA_VERSION,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "config": config.resolved(),
                    "config_hash": config.hash(),
                    "plan_hash": plan.hash(),
                    "versions": versions(),
                    "snapshot_steps": {str(bs): steps for bs, steps in snapshot_steps.items()},
                    "sha256": {"plan.parquet": plan_sum},
                    "members": {str(m): {"status": "pending"} for m in plan.table["member"]},
                },
            )
        return store

    def _reopen(self, config: Config, plan: Plan, force: bool) -> bool:
        """True if the directory holds this very run (resume it); else make room or refuse."""
        root = self.root
        manifest = root / MANIFEST
        if not manifest.exists():
            return False
        try:
            old = self.manifest()
        except UserError:  # corrupt or from another schema: only --force may replace it
            if not force:
                raise
            old = {}
        if old.get("imported"):
            refuse_protected(root)  # one line naming the import: nothing to train or resume
        # Compared without placement settings, so a run killed under one backend may be
        # finished under another (or with tracking switched on).
        same = (
            identity(_filled(old.get("config", {}))) == identity(config.resolved())
            and old.get("plan_hash") == plan.hash()
        )
        if same:
            self._remove_stale_temporaries()
            return True
        if not force:
            raise UserError(f"'{root}' holds a run {self._difference(old, config, plan)}")
        remove_owned(root)
        return False

    @staticmethod
    def _difference(old: dict[str, Any], config: Config, plan: Plan) -> str:
        """What differs between the run on disk and this one, with both hashes."""
        advice = "use another --out, or --force to delete it and start over"
        if identity(_filled(old.get("config", {}))) != identity(config.resolved()):
            return (
                f"made from another config (hash {old.get('config_hash')}, this one "
                f"{config.hash()}); {advice}"
            )
        return (
            f"made from this config (hash {config.hash()}) but with another plan (plan hash "
            f"{old.get('plan_hash')}, this one {plan.hash()}; another attractor version or "
            f"task data may have made it); {advice}"
        )

    # ---- reading ---------------------------------------------------------------------
    def status(self) -> dict[int, dict[str, Any]]:
        return {int(k): v for k, v in self.manifest()["members"].items()}

    def member_dir(self, member: int) -> Path:
        return self.root / "members" / str(member)

    def snapshot_path(self, member: int, step: int) -> Path:
        return self.member_dir(member) / f"step-{step}.safetensors"

    def load_snapshot(self, member: int, step: int) -> dict[str, torch.Tensor]:
        """Member ``member``'s tensors at ``step``, checked against the sum recorded with it."""
        path = self.snapshot_path(member, step)
        if not path.exists():
            raise UserError(
                f"weights file '{path}' is missing; re-run the config on this directory to retrain "
                f"member {member}"
            )
        retrain = f"re-run the config on this directory to retrain member {member}"
        try:
            data = path.read_bytes()
            check_recorded(self.root, path, retrain, data)
            tensors = load(data)
            # Sorted by name, as load_file returns them: load(bytes) gives a hash map's order,
            # which changes from call to call, and consumers that draw random numbers per
            # tensor (structural perturbations) must see one order.
            return {name: tensors[name] for name in sorted(tensors)}
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise UserError(
                f"weights file '{path}' is truncated or corrupt ({str(exc).splitlines()[0]}); "
                f"re-run the config on this directory to retrain member {member}"
            ) from None

    def intact(self, member: int, steps: list[int]) -> bool:
        """Whether a finished member's files are all there, readable and (where a sum was
        recorded) unchanged since they were written; if not, resume retrains it.
        """
        paths = [self.member_dir(member) / "metrics.parquet"]
        paths += [self.snapshot_path(member, step) for step in steps]
        try:
            pq.read_metadata(paths[0])
            for path in paths[1:]:
                with safe_open(path, framework="pt"):
                    pass
            return not any(damaged(p, recorded_sum(self.root, p)) for p in paths)
        except (SafetensorError, OSError, ValueError, RuntimeError):
            return False

    def read_table(self, path: Path) -> pd.DataFrame:
        """A Parquet table of the run, checked against its recorded sum (if any)."""
        rebuild = "re-run the config on this directory to rebuild it"
        try:
            check_recorded(self.root, path, rebuild)
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
    # Each returns the written file's sha256, recorded in the manifest with the member's
    # status (:meth:`mark`, ``outcome["sha256"]``).
    def save_snapshot(self, member: int, step: int, tensors: dict[str, torch.Tensor]) -> str:
        """Write member ``member``'s snapshot at ``step``; its sha256."""
        with atomic_path(self.snapshot_path(member, step)) as tmp:
            save_file(
                {k: v.contiguous() for k, v in tensors.items()},
                str(tmp),
                metadata={"member": str(member), "step": str(step)},
            )
            return sha256_file(tmp)

    def save_snapshot_bytes(self, member: int, step: int, data: bytes) -> str:
        """Write a snapshot serialized elsewhere (a Ray worker): checked, then written
        atomically; its sha256.
        """
        load(data)  # refuse bytes that are not a readable safetensors file before they land
        with atomic_path(self.snapshot_path(member, step)) as tmp:
            tmp.write_bytes(data)
        return sha256_bytes(data)

    def save_member_metrics(self, member: int, rows: list[dict[str, Any]]) -> str:
        """Write member ``member``'s metrics table; its sha256."""
        with atomic_path(self.member_dir(member) / "metrics.parquet") as tmp:
            pd.DataFrame(rows).to_parquet(tmp, index=False)
            return sha256_file(tmp)

    def annotate(self, **fields: Any) -> None:
        """Record run-level facts (e.g. the resolved strategy) in the manifest."""
        data = self.manifest()
        data.update(fields)
        self.write_manifest(data)

    def mark(self, outcomes: list[dict[str, Any]]) -> None:
        """Record finished members (each dict has ``member``, ``status``, ...)."""
        data = self.manifest()
        for outcome in outcomes:
            data["members"][str(outcome["member"])] = {
                k: v for k, v in outcome.items() if k != "member"
            }
        self.write_manifest(data)

    def collect_metrics(self) -> pd.DataFrame:
        """Gather every finished member's metrics into ``metrics.parquet``."""
        table = self._gather_metrics()
        with atomic_path(self.root / "metrics.parquet") as tmp:
            table.to_parquet(tmp, index=False)
            digest = sha256_file(tmp)
        data = self.manifest()
        data["sha256"] = {**data.get("sha256", {}), "metrics.parquet": digest}
        self.write_manifest(data)
        return table
