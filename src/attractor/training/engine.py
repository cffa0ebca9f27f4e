"""The training loop: a chunk of members, each on its own data, with its own hyperparameters.

This file is the specification of what training *means*; read :func:`train_chunk` top to
bottom. The vectorized and loop strategies run this same loop and differ only in the
forward pass (``batched_forward`` for many members at once, ``single_forward`` one member
at a time). What the loop steps -- the members' weights, data streams, optimizer state,
divergence bookkeeping and snapshots -- is :class:`~attractor.training.chunk.Chunk`.

The engine does no I/O: snapshots, states and progress leave through the callbacks
(``on_snapshot``, ``on_state``, ``on_step``) that the caller (``runs/launch.py``) owns.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from attractor.config import Config, TrainerConfig
from attractor.optim.schedules import trainer_lr_factor
from attractor.plan import PlanRow
from attractor.seeds import derive_seed
from attractor.tasks.base import Task
from attractor.training.chunk import Chunk, SnapshotSink, Start, StateSink, evaluate
from attractor.training.data import steps_per_epoch
from attractor.training.snapshots import snapshot_steps


@dataclass(frozen=True)
class Outcome:
    """How a member's training ended."""

    member: int
    status: str  # "done" | "diverged"
    steps: int
    diverged_step: int | None = None


#: Receives every healthy member's full state at a checkpoint: (step, [(row, state)]).
CheckpointSink = Callable[[int, list[tuple[PlanRow, Start]]], None]


@dataclass(frozen=True)
class Checkpoints:
    """Where and when members' full states are kept so a killed run can go on exactly.

    A checkpoint is taken after every snapshot step, whenever ``due()`` says so (wall
    time), and when training is asked to stop; never at the last step (the member is
    finished then). ``save`` receives the states, the forward pass's random state included.
    """

    save: CheckpointSink
    due: Callable[[], bool] = lambda: False


class StopRequested(Exception):
    """Training was asked to stop (``should_stop``) and ended between two steps.

    Nothing of the chunk is reported finished; snapshots already passed to ``on_snapshot``
    stay the caller's.
    """


def total_steps(config: Config, task: Task, batch_size: int) -> int:
    """Optimizer steps of a member: ``trainer.steps``, or ``epochs`` passes of ``n_train //
    batch_size``.
    """
    if config.trainer.steps is not None:
        return config.trainer.steps
    return max(1, math.ceil(config.trainer.epochs * steps_per_epoch(task, batch_size)))


def train_chunk(
    task: Task,
    config: Config,
    rows: list[PlanRow],
    vectorized: bool,
    on_snapshot: SnapshotSink,
    on_step: Callable[[int], None] | None = None,
    *,
    start: list[Start] | None = None,
    on_state: StateSink | None = None,
    should_stop: Callable[[], object] | None = None,
    resume: bool = False,
    checkpoints: Checkpoints | None = None,
    trainers: list[TrainerConfig] | None = None,
) -> list[Outcome]:
    """Train ``rows`` together (they must share ``batch_size`` and ``optimizer``).

    Args:
        on_snapshot: receives every healthy member's weights and metrics at every snapshot.
        on_step: called after every step with the number of members advanced.
        start: one :class:`Start` per row, all at the same step ``k``: each member begins
            from that state (weights, buffers, optimizer state) and takes steps
            ``k + 1 .. total``; only snapshots at steps ``>= k`` are taken. Its data
            stream starts afresh from its row's ``data_seed``. ``None``: every member
            starts at step 0 from its row's initial weights.
        on_state: receives every healthy member's full state at every snapshot step,
            the states a later ``start`` can spawn children from.
        should_stop: asked before every step (after the previous step's snapshot); a true
            answer ends training there with :class:`StopRequested` (a Ctrl-C waits for the
            current step, never tears one in half), after a checkpoint.
        resume: ``start`` holds these very members' own states from a killed run (kept by
            ``checkpoints``): their data streams, forward random state and path lengths go
            on from there, so the result is bitwise that of an uninterrupted run; the
            snapshot at the start step is not taken again.
        checkpoints: receives every healthy member's full state now and then (see
            :class:`Checkpoints`).
        trainers: one trainer per row, differing from ``config.trainer`` only in the
            :data:`~attractor.training.chunk.MEMBERWISE` options (length and schedule are
            ``config.trainer``'s); ``None``: ``config.trainer`` for every row.

    With ``run.track_path`` every snapshot's metrics also hold ``path_length`` (the sum of
    the members' step lengths ``|x_t - x_{t-1}|`` over all parameters, from the first step
    trained here: a spawned child's path starts at its spawn step) and ``init_distance``
    (``|x_t - x_0|`` to the row's own initial weights).
    """
    # Over 60 lines only by its docstring: the loop is kept whole to be read in one sitting.
    assert len({(r.batch_size, r.optimizer) for r in rows}) == 1, (
        "a chunk shares batch_size and optimizer"
    )
    trainer = config.trainer
    steps = total_steps(config, task, rows[0].batch_size)
    if start is not None:
        _check_start(start, len(rows), steps)
    chunk = Chunk(task, config, rows, vectorized, start, resume, trainers)
    snaps = {s for s in snapshot_steps(config.run.snapshots, steps) if s >= chunk.first}
    if resume:
        snaps.discard(chunk.first)  # taken before the run was killed

    def checkpoint(step: int) -> None:
        if checkpoints is not None and step < steps:
            checkpoints.save(step, chunk.healthy_states(step, torch.get_rng_state()))

    if chunk.first in snaps:
        chunk.snapshot(chunk.first, on_snapshot, on_state)
    chunk.template.train()
    # Randomness inside the forward pass (dropout) draws from the global RNG, seeded here
    # from the rows. Only the loop strategy gets here with such a model (vmap refuses
    # random ops), and it trains one row at a time, so each member draws its own stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(
            derive_seed("forward", *(seed for r in rows for seed in (r.noise_seed, r.data_seed)))
        )
        if resume and start is not None:
            _restore_forward_rng(start, vectorized)
        for step in range(chunk.first + 1, steps + 1):
            if should_stop is not None and should_stop():
                checkpoint(step - 1)
                raise StopRequested(f"training stopped after step {step - 1} of {steps}")
            x, y = chunk.next_batch()
            loss, grads = chunk.gradients(x, y)
            # Divergence is data, not a crash: a member whose loss is no longer finite is
            # frozen and recorded; the others' slices never see its numbers.
            chunk.freeze_diverged(loss, step)
            chunk.optimizer_step(grads, step, trainer_lr_factor(trainer, step, steps))
            chunk.update_average(step, steps)
            if on_step is not None:
                on_step(len(rows))
            if step in snaps:
                chunk.snapshot(step, on_snapshot, on_state)
            if checkpoints is not None and (step in snaps or checkpoints.due()):
                checkpoint(step)

    return [
        Outcome(
            row.member,
            "done" if chunk.diverged_at[i] is None else "diverged",
            steps,
            chunk.diverged_at[i],
        )
        for i, row in enumerate(rows)
    ]


def _restore_forward_rng(start: list[Start], vectorized: bool) -> None:
    """Continue the forward pass's random stream of a resumed chunk where it stopped.

    The loop strategy draws dropout from one stream per chunk, so a chunk resumes exactly
    only with the same members (launch keeps loop chunks to one member); the vectorized
    strategy never draws (vmap refuses random operations), so its members' states may
    come from different chunks.
    """
    states = [s.rng for s in start]
    if states[0] is None or vectorized:
        return
    if any(s is None or not torch.equal(s, states[0]) for s in states):
        raise ValueError("resumed loop-strategy members must come from one chunk")
    torch.set_rng_state(states[0])


def _check_start(start: list[Start], rows: int, steps: int) -> None:
    if len(start) != rows or len({s.step for s in start}) != 1:
        raise ValueError(
            f"start needs one state per row ({rows}), all at one step; got steps "
            f"{[s.step for s in start]}"
        )
    if not 0 <= start[0].step < steps:
        raise ValueError(f"start step {start[0].step} is outside training (0 .. {steps - 1})")


__all__ = [
    "CheckpointSink",
    "Checkpoints",
    "Outcome",
    "SnapshotSink",
    "Start",
    "StateSink",
    "StopRequested",
    "evaluate",
    "total_steps",
    "train_chunk",
]
