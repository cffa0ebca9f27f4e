"""Train plan rows in memory and predict an evaluation set: the trainer2's unit of work.

Trials of a study and the ensembles of the returned trainers are small, short-lived and
many, so they are trained with the engine directly (:func:`train_chunk`, grouped into
chunks by :func:`plan_chunks` like any run) and never written to a run directory: a
trial only needs its members' outputs on the validation split, a returned trainer only
its ensemble's outputs on the test split.

The validation split is carved from the training split once, seeded, and is the same
for every study: the *trial task* trains on the rest (``fit``) and is scored on it.
The test split is never seen by a study.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from attractor.config import Config, TrainerConfig
from attractor.plan import PlanRow
from attractor.runs.launch import check_rows, plan_chunks
from attractor.seeds import torch_generator
from attractor.tasks.base import Task
from attractor.training.chunk import MEMBERWISE
from attractor.training.engine import train_chunk
from attractor.training.forward import Params, batched_forward, single_forward


def validation_split(n_train: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """``(fit, validation)`` indices into the training split: a seeded random partition.

    ``round(fraction * n_train)`` examples (at least 1, at most ``n_train - 1``) go to
    validation, drawn uniformly without replacement from the ``trainer2-validation``
    stream of ``seed``; both index tensors are sorted.
    """
    n_val = min(n_train - 1, max(1, round(fraction * n_train)))
    order = torch.randperm(n_train, generator=torch_generator("trainer2-validation", seed))
    return order[n_val:].sort().values, order[:n_val].sort().values


def trial_task(task: Task, fit: Tensor, validation: Tensor) -> Task:
    """The task a study tunes on: train on ``fit``, "test" on ``validation`` (both from the training
    split).

    Groups follow their examples, so ``holdout_group`` leaves out the group's fit examples.
    """
    groups = task.train_groups
    return dataclasses.replace(
        task,
        x_train=task.x_train[fit],
        y_train=task.y_train[fit],
        x_test=task.x_train[validation],
        y_test=task.y_train[validation],
        groups=None if groups is None else groups[fit],
        probes={},
    )


def train_predict(
    task: Task,
    config: Config,
    rows: list[PlanRow],
    strategy: str,
    x_eval: Tensor,
    trainers: list[TrainerConfig] | None = None,
) -> tuple[Tensor, Tensor]:
    """Train ``rows`` on ``task`` and return their outputs on ``x_eval``.

    Members are trained in chunks of equal batch size and optimizer; a member's numbers
    depend only on its row (the engine's contract), so any grouping of rows gives the
    same outputs bit for bit. A diverged member is evaluated at its initial weights
    (step 0): diverging is as bad as not training, never better.

    Args:
        task: what is learned (its training split is what the rows train on).
        config: trainer settings not in the rows (length, schedule, ...) and ``[run]``.
        rows: one :class:`PlanRow` per member (``member`` ids are ignored).
        strategy: ``vectorized`` or ``loop`` (see :func:`attractor.runs.launch.resolve_strategy`).
        x_eval: ``[n, ...]`` evaluation inputs.
        trainers: one trainer per row, which the caller keeps equal to ``config.trainer``
            outside :data:`~attractor.training.chunk.MEMBERWISE` (a member's stability
            interventions); ``None``: ``config.trainer`` for every row.

    Returns:
        ``(outputs [rows, n, ...], diverged [rows] bool)`` in the order of ``rows``.
    """
    given = [config.trainer] * len(rows) if trainers is None else trainers
    if len(given) != len(rows):
        raise ValueError(f"train_predict needs one trainer per row ({len(rows)}); got {len(given)}")
    # Identical rows with identical trainers give identical members (a member depends only
    # on its row and trainer), so each distinct pair is trained once: studies that share a
    # sampler seed ask the same random start-up trials, and studies that return the same
    # trainer share its ensemble.
    distinct: dict[tuple[PlanRow, tuple[object, ...]], int] = {}
    trainer_of: dict[int, TrainerConfig] = {}
    index: list[int] = []
    for row, trainer in zip(rows, given, strict=True):
        own = tuple(getattr(trainer, k) for k in MEMBERWISE)  # the rest is config.trainer's
        index.append(distinct.setdefault((dataclasses.replace(row, member=0), own), len(distinct)))
        trainer_of.setdefault(index[-1], trainer)
    rows = [dataclasses.replace(r, member=i) for (r, _), i in distinct.items()]
    check_rows(task, rows)
    # Only the final weights matter (step 0 is kept for members that diverge).
    config = config.model_copy(
        update={"run": config.run.model_copy(update={"snapshots": 1, "track_path": False})}
    )
    last: dict[int, Params] = {}
    diverged: dict[int, bool] = {}

    def sink(row: PlanRow, step: int, tensors: Params, metrics: dict[str, float]) -> None:
        last[row.member] = tensors  # snapshots arrive in step order: the last one wins

    for chunk in plan_chunks(config, task, rows, strategy):
        chunk_trainers = [trainer_of[r.member] for r in chunk]
        vectorized = strategy == "vectorized"
        for outcome in train_chunk(task, config, chunk, vectorized, sink, trainers=chunk_trainers):
            diverged[outcome.member] = outcome.status == "diverged"
    outputs = _outputs(
        task, rows, last, strategy == "vectorized", x_eval, config.run.eval_batch_size
    )
    picked = torch.tensor(index)
    return outputs[picked], torch.tensor([diverged[r.member] for r in rows])[picked]


def _outputs(
    task: Task,
    rows: list[PlanRow],
    last: dict[int, Params],
    vectorized: bool,
    x_eval: Tensor,
    step: int,
) -> Tensor:
    """``[rows, n, ...]``: each row's model (its ``last`` weights) on ``x_eval``, ``step``
    examples at a time.
    """
    with torch.random.fork_rng(devices=[]):
        template = task.make_model().eval()
    names = {k for k, _ in template.named_parameters()}
    forward = batched_forward(template) if vectorized else single_forward(template)
    outputs = []
    with torch.no_grad():
        for start in range(0, len(rows), 64):  # bound memory: 64 members' activations at a time
            states = [last[r.member] for r in rows[start : start + 64]]
            # As in the engine, one member is padded with a copy of itself: a batch of one
            # takes another matmul kernel, and a member's outputs must not depend on its block.
            padded = states + states[:1] if vectorized and len(states) == 1 else states
            params = {k: torch.stack([s[k] for s in padded]) for k in padded[0] if k in names}
            buffers = {k: torch.stack([s[k] for s in padded]) for k in padded[0] if k not in names}
            pieces = [
                forward(params, buffers, xb.unsqueeze(0).expand(len(padded), *xb.shape))
                for xb in x_eval.split(step)
            ]
            outputs.append(torch.cat(pieces, dim=1)[: len(states)])
    return torch.cat(outputs)
