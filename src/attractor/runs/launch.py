"""From a config to a finished run directory: plan, group into chunks, train, record, resume."""

from __future__ import annotations

import functools
import json
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from attractor.backends import open_backend
from attractor.config import Config
from attractor.errors import UserError
from attractor.plan import PlanRow, build_plan
from attractor.runs.lock import hold
from attractor.runs.resume import Checkpoint, drop_checkpoint, load_checkpoint, save_checkpoint
from attractor.runs.store import FINISHED, RunStore, snapshot_bytes
from attractor.tasks import absolute_paths, build_task
from attractor.tasks.base import Task
from attractor.training import interrupt
from attractor.training.data import BatchStream, member_pool, member_targets
from attractor.training.device import free_bytes, resolve_device
from attractor.training.engine import Checkpoints, total_steps, train_chunk
from attractor.training.forward import can_vectorize, vectorizing_pays
from attractor.training.loss import check_loss_options
from attractor.training.memory import (
    check_memory,
    default_chunk_size,
    device_chunk_size,
    estimate_chunk,
)
from attractor.training.runtime import keep_freed_memory
from attractor.training.snapshots import snapshot_steps

#: A member's full state is checkpointed at every snapshot step and at least this often
#: (seconds of training), so SIGKILL loses at most this much of a chunk's work.
CHECKPOINT_SECONDS = 60.0


@functools.lru_cache(maxsize=4)
def _task_for(config_json: str) -> Task:
    return build_task(Config.model_validate_json(config_json).task)


def resolve_strategy(config: Config, task: Task) -> str:
    """``vectorized`` or ``loop``: what ``run.strategy`` means for this task's model.

    ``auto`` vectorizes where the engine can batch the model and batching is expected to
    beat the loop (:func:`~attractor.training.forward.vectorizing_pays`: everywhere but, on
    the CPU, a Hugging Face model that only vmap batches and a conv net with large
    activations). A rule of the model's kind and input shape, not a timed probe, so the
    choice, and with it a member's numbers, never depends on the machine's load.
    """
    if config.run.strategy == "loop":
        return "loop"
    model = task.make_model()
    if config.run.strategy == "auto" and not vectorizing_pays(
        model, resolve_device(config.run.device), task.x_train[:2]
    ):
        return "loop"
    reason = can_vectorize(model, task.x_train[:2], task.loss, task.y_train[:2])
    if reason is None:
        return "vectorized"
    if config.run.strategy == "vectorized":
        raise UserError(
            f"this model cannot be trained with strategy 'vectorized' ({reason}); set run.strategy "
            "= 'loop' or 'auto'"
        )
    return "loop"


def check_rows(task: Task, rows: list[PlanRow]) -> None:
    """Refuse rows the data cannot serve (held-out group, label noise, batch size) before
    anything is written.
    """
    for row in rows:
        BatchStream(member_pool(task, row), row.batch_size, row.data_seed)
        member_targets(task, row)


def plan_chunks(
    config: Config,
    task: Task,
    rows: list[PlanRow],
    strategy: str,
    resume_at: dict[int, int] | None = None,
) -> list[list[PlanRow]]:
    """Split rows into chunks that train together: same batch size, optimizer and (for
    members resuming from a checkpoint, ``resume_at``: member -> step) start step; bounded
    size.
    """
    if strategy == "loop":
        return [[row] for row in rows]
    size = config.run.chunk_size
    if size is None:
        free = free_bytes(resolve_device(config.run.device))
        estimate = estimate_chunk(config, task)
        if estimate is not None and free is not None:
            # On a GPU the chunk is sized by the card's free memory, not the CPU's budget.
            size = device_chunk_size(estimate.bytes_per_member, free)
        elif estimate is not None:
            # Activations count: a conv net's fill memory long before its weights do.
            size = default_chunk_size(estimate.parameters, estimate.bytes_per_member)
        else:
            n_params = sum(p.numel() for p in task.make_model().parameters())
            size = default_chunk_size(n_params)
    at = resume_at or {}
    groups: dict[tuple[int, str, int], list[PlanRow]] = {}
    for row in rows:
        groups.setdefault((row.batch_size, row.optimizer, at.get(row.member, 0)), []).append(row)
    return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]


def run_chunk(
    config_json: str,
    run_dir: str | None,
    rows: list[dict[str, Any]],
    strategy: str,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train one chunk; returns ``{"outcomes": [...], "snapshots": [...], "metrics": {...},
    "trained": member-steps}``.

    A plain function of plain data so any backend (process pool, Ray) can ship it. With a
    ``run_dir`` (workers on the coordinator's filesystem) it writes its members' files
    there (checkpointing its members and resuming them from their checkpoints: see
    :mod:`attractor.runs.resume`) and returns only outcomes; with ``None`` (Ray workers on
    other machines) it returns snapshots as ``(member, step, safetensors bytes)`` and
    metrics rows for the coordinator to write: tensors cross machines as safetensors,
    never as pickles.
    """
    keep_freed_memory()
    if multiprocessing.parent_process() is not None:  # a process-backend worker
        interrupt.record_in_worker()
    config = Config.model_validate_json(config_json)
    task = _task_for(config_json)
    store = RunStore(run_dir) if run_dir is not None else None
    plan_rows = [PlanRow(**r) for r in rows]
    metrics: dict[int, list[dict[str, Any]]] = {r.member: [] for r in plan_rows}
    snapshots: list[tuple[int, int, bytes]] = []
    sums: dict[int, dict[str, str]] = {r.member: {} for r in plan_rows}  # file name -> sha256
    kept = _resumable(store, plan_rows)
    for member, checkpoint in (kept or {}).items():
        metrics[member], sums[member] = list(checkpoint.metrics), dict(checkpoint.sums)

    def sink(row: PlanRow, step: int, tensors: dict, values: dict[str, float]) -> None:
        if store is not None:
            path = store.snapshot_path(row.member, step)
            sums[row.member][path.name] = store.save_snapshot(row.member, step, tensors)
        else:
            snapshots.append((row.member, step, snapshot_bytes(row.member, step, tensors)))
        metrics[row.member].append({"member": row.member, "step": step, **values})

    def keep(step: int, states: list) -> None:
        assert store is not None
        for row, state in states:
            member_dir = store.member_dir(row.member)
            checkpoint = Checkpoint(state, metrics[row.member], sums[row.member])
            save_checkpoint(member_dir, row.member, checkpoint)

    outcomes = train_chunk(
        task,
        config,
        plan_rows,
        strategy == "vectorized",
        sink,
        on_step,
        start=None if kept is None else [kept[r.member].state for r in plan_rows],
        resume=kept is not None,
        # Workers that cannot write the run directory (Ray) keep no checkpoints.
        checkpoints=None if store is None else Checkpoints(keep, _every(CHECKPOINT_SECONDS)),
        should_stop=interrupt.requested,  # Ctrl-C / SIGTERM: stop between two steps
    )
    if store is not None:
        for member, rows_ in metrics.items():
            sums[member]["metrics.parquet"] = store.save_member_metrics(member, rows_)
        metrics, snapshots = {}, []
    # The sums travel with the outcomes, so the manifest records them with the status.
    done = [{**asdict(o), "sha256": sums[o.member]} for o in outcomes]
    first = 0 if kept is None else next(iter(kept.values())).state.step
    trained = sum(o.steps - first for o in outcomes)  # member-steps taken here, for progress
    return {"outcomes": done, "snapshots": snapshots, "metrics": metrics, "trained": trained}


def _resumable(store: RunStore | None, rows: list[PlanRow]) -> dict[int, Checkpoint] | None:
    """The chunk's members' checkpoints if every one has a sound one at one step, else None.

    The coordinator groups members by their checkpoints' steps (:func:`resume_points`), so
    a chunk either resumes whole or (a checkpoint damaged since) starts over whole.
    """
    if store is None:
        return None
    kept = {r.member: load_checkpoint(store.member_dir(r.member), r.member) for r in rows}
    found = [c for c in kept.values() if c is not None]
    if len(found) != len(rows) or len({c.state.step for c in found}) != 1:
        return None
    return {member: c for member, c in kept.items() if c is not None}


def resume_points(store: RunStore, rows: list[PlanRow]) -> dict[int, int]:
    """member -> the step its sound checkpoint is at, for the members that have one."""
    points = {}
    for row in rows:
        checkpoint = load_checkpoint(store.member_dir(row.member), row.member)
        if checkpoint is not None:
            points[row.member] = checkpoint.state.step
    return points


def _every(seconds: float) -> Callable[[], bool]:
    """True at most once per ``seconds`` of wall time (a checkpoint is due)."""
    last = time.monotonic()

    def due() -> bool:
        nonlocal last
        now = time.monotonic()
        if now - last < seconds:
            return False
        last = now
        return True

    return due


def record_chunk(store: RunStore, result: dict[str, Any]) -> None:
    """Write what a chunk returned (files first, each atomically), then mark its members
    finished.
    """
    sums: dict[int, dict[str, str]] = {}
    for member, step, data in result["snapshots"]:
        name = store.snapshot_path(member, step).name
        sums.setdefault(member, {})[name] = store.save_snapshot_bytes(member, step, data)
    for member, rows in result["metrics"].items():
        sums.setdefault(int(member), {})["metrics.parquet"] = store.save_member_metrics(
            int(member), rows
        )
    outcomes = [
        {**o, "sha256": {**o.get("sha256", {}), **sums.get(o["member"], {})}}
        for o in result["outcomes"]
    ]
    store.mark(outcomes)
    for outcome in outcomes:  # finished: its checkpoint has served
        drop_checkpoint(store.member_dir(int(outcome["member"])))


def train(config: Config, out: str | Path, force: bool = False, progress: bool = False):
    """Train every member of ``config``'s plan into run directory ``out``; resumes if it exists.

    Returns the :class:`~attractor.runs.ensemble.Ensemble` of the finished run.
    """
    from attractor.runs.ensemble import Ensemble
    from attractor.runs.progress import Progress

    # The directory records an image task's data root as an absolute path: measured later
    # from anywhere, it still finds its data.
    config = config.model_copy(update={"task": absolute_paths(config.task)})
    task = build_task(config.task)
    plan = build_plan(config.plan, config.trainer, task.group_ids)
    steps = {
        bs: snapshot_steps(config.run.snapshots, total_steps(config, task, bs))
        for bs in sorted(set(plan.table["batch_size"]))
    }
    # Every refusal comes before RunStore.prepare, which may create or (--force) delete OUT;
    # opening the backend (connecting to a Ray cluster) is one of them.
    device = resolve_device(config.run.device)  # a CUDA device this machine lacks
    # Before the model is first built for real; on a GPU against the card's free memory.
    check_memory(config, task, free_bytes(device))
    strategy = resolve_strategy(config, task)
    check_rows(task, plan.rows())
    check_loss_options(task, config.trainer)
    RunStore(out).check_target(force, "run")
    # OUT's lock is held from before --force may delete anything until the last file is written.
    with open_backend(config.run, Path(out)) as backend, hold(out):
        store = RunStore.prepare(out, config, plan, steps, force=force)
        status = store.status()

        def needs_training(row: PlanRow) -> bool:
            state = status[row.member]["status"]
            return state not in FINISHED or (
                state == "done" and not store.intact(row.member, steps[row.batch_size])
            )

        pending = [row for row in plan.rows() if needs_training(row)]
        training = {row.member for row in pending}
        for row in plan.rows():
            # A kill between marking a member done and dropping its checkpoint leaves one
            # behind that nothing would read again.
            if row.member not in training and status[row.member]["status"] in FINISHED:
                drop_checkpoint(store.member_dir(row.member))
        if pending:
            store.annotate(strategy=strategy, device=str(device))
        else:
            strategy = store.manifest().get("strategy", strategy)
        # Members killed mid-chunk go on from their checkpoints where workers can read them.
        at = resume_points(store, pending) if backend.shares_filesystem else {}
        chunks = plan_chunks(config, task, pending, strategy, at)
        config_json = json.dumps(config.resolved())
        work = sum(
            (total_steps(config, task, c[0].batch_size) - at.get(c[0].member, 0)) * len(c)
            for c in chunks
        )
        run_dir = str(store.root) if backend.shares_filesystem else None
        label = (
            f"training {len(pending)} of {len(plan)} members ({strategy}, {len(chunks)} "
            "chunks "
            f"on {backend.name})"
        )
        jobs = [(config_json, run_dir, [asdict(r) for r in chunk], strategy) for chunk in chunks]

        def on_result(result: dict[str, Any]) -> None:
            record_chunk(store, result)
            interrupt.check()  # backends whose workers did not see the signal stop here

        def members_done() -> tuple[int, int]:
            states = store.status().values()
            return sum(s["status"] in FINISHED for s in states), len(plan)

        # A signal finishes the current step, keeps every finished chunk, and ends here
        # with Interrupted (the CLI's one line, exit 130 / 143).
        with Progress(total=work, enabled=progress, label=label) as bar:
            with interrupt.stopping(members_done):
                backend.map(run_chunk, jobs, on_result, bar.advance)
        store.collect_metrics()
    return Ensemble.load(store.root, task=task)  # the task built from the user's own config
