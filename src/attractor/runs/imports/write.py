"""Writing an imported run: an ordinary run directory whose members are the imported snapshots.

The directory is made by :meth:`RunStore.prepare` like a trained run's (plan, manifest with
every member pending), then member by member: its snapshots placed under
``members/<id>/step-<k>.safetensors``, its metrics evaluated on the task's splits as
training would have recorded them, and the member marked done with the sha256 of every
file, so ``Ensemble``, ``verify`` and every measure read it as they read a trained run.
The manifest's ``imported`` record says what each file was made from (path and sha256).

A file that needs no change is copied, or with ``link`` hard-linked (a symbolic link
where the source is on another file system): the run then holds no second copy, and
``attractor verify`` notices if the source changes. A file is placed by renaming a
temporary name, never written through, so a source is never modified.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attractor.config import Config
from attractor.errors import UserError
from attractor.plan import Plan
from attractor.runs.checksums import sha256_file
from attractor.runs.files import atomic_path
from attractor.runs.imports.fit import Fitted, fit
from attractor.runs.imports.sources import SourceMember
from attractor.runs.store import RunStore
from attractor.tasks.base import Task
from attractor.training.device import module_on, task_on
from attractor.training.evaluate import evaluate
from attractor.training.forward import batched_forward, single_forward


@dataclass(frozen=True)
class Target:
    """Where and how the run is written."""

    store: RunStore
    config: Config
    plan: Plan
    steps: dict[int, list[int]]  # batch size -> snapshot steps
    strategy: str
    link: bool
    device: torch.device = torch.device("cpu")  # where the metrics are evaluated


def write_run(
    target: Target,
    task: Task,
    template: nn.Module,
    members: list[SourceMember],
    checked: list[dict[int, dict[str, str]]],
    record: dict[str, Any],
    own_factors: list[dict[str, Any]],
) -> dict[str, int]:
    """Write every member; how many files were copied, linked and written.

    Args:
        checked: per member, step -> the sums its sources had when they were checked.
        record: the manifest's ``imported`` record (members are added here).
        own_factors: per member, the factors of the user's own (not plan factors).
    """
    store = target.store
    store.annotate(strategy=target.strategy, imported={**record, "members": {}})
    # The metrics are computed on the device with a copy of the template there (the one given
    # keeps checking files on the CPU); the snapshots written are the CPU tensors as read.
    evaluator = module_on(template, target.device)
    task = task_on(task, target.device)
    forward = (
        batched_forward(evaluator) if target.strategy == "vectorized" else single_forward(evaluator)
    )
    counts = {"copied": 0, "linked": 0, "written": 0}
    files: dict[str, Any] = {}
    for index, member in enumerate(members):
        sums: dict[str, str] = {}
        placed: dict[str, Any] = {}
        rows = []
        for step, source in sorted(member.files.items()):
            fitted = fit(source, template, task.name)
            if fitted.sums != checked[index][step]:
                raise UserError(
                    f"'{source.path}' changed while it was being imported; run the import again"
                )
            name = store.snapshot_path(index, step).name
            how, sums[name] = _place(store, index, step, fitted, target.link)
            counts["linked" if how.endswith("linked") else how] += 1
            placed[name] = {"placed": how, "sources": fitted.sums, "notes": list(fitted.notes)}
            values = _metrics(task, evaluator, forward, fitted.tensors, target.config)
            rows.append({"member": index, "step": step, **values})
        sums["metrics.parquet"] = store.save_member_metrics(index, rows)
        files[str(index)] = {"name": member.name, "factors": own_factors[index], "files": placed}
        store.mark(
            [
                {
                    "member": index,
                    "status": "done",
                    "steps": max(member.files),
                    "diverged_step": None,
                    "sha256": sums,
                }
            ]
        )
    store.annotate(imported={**record, "members": files})
    store.collect_metrics()
    return counts


def _place(store: RunStore, member: int, step: int, fitted: Fitted, link: bool) -> tuple[str, str]:
    """Put one snapshot in place: ``(how, sha256 of the placed file)``."""
    if not fitted.as_is:
        return "written", store.save_snapshot(member, step, fitted.tensors)
    (source,) = fitted.sums
    expected = fitted.sums[source]
    target = store.snapshot_path(member, step)
    if link:
        how = _link(Path(source), target)
    else:
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
        how = "copied"
    digest = sha256_file(target)
    if digest != expected:  # the source changed between the check and the copy
        target.unlink(missing_ok=True)
        raise UserError(f"'{source}' changed while it was being imported; run the import again")
    return how, digest


def _link(source: Path, target: Path) -> str:
    """Hard-link ``source`` at ``target`` (a symbolic link across file systems), atomically.

    Not through :func:`atomic_path`, which sets the mode of what it wrote: through a link
    that would change the user's own file.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
    try:
        try:
            os.link(source, tmp)
            how = "hard-linked"
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            os.symlink(source.resolve(), tmp)
            how = "symlinked"
        os.replace(tmp, target)
    finally:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
    return how


@torch.no_grad()
def _metrics(
    task: Task, template: nn.Module, forward: Any, tensors: dict[str, Tensor], config: Config
) -> dict[str, float]:
    """One snapshot's metrics on the train and test splits, as training records them."""
    names = {name for name, _ in template.named_parameters()}
    device = next(iter(template.parameters()), torch.empty(0)).device
    params = {k: v[None].to(device) for k, v in tensors.items() if k in names}
    buffers = {k: v[None].to(device) for k, v in tensors.items() if k not in names}
    values = evaluate(task, template, forward, params, buffers, config.run.eval_batch_size)
    return {name: float(value[0]) for name, value in values.items()}


__all__ = ["Target", "write_run"]
