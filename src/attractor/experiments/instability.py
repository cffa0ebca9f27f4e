"""Instability analysis: from which training step on does the outcome no longer depend on data
order?

The protocol of Frankle et al. (2020): train a *parent*; at each spawn step ``k`` copy its
complete training state (weights, buffers, optimizer state, step count) into ``2 * pairs``
*children* that train on to the end, each with its own data-order seed; then measure the
error barrier along the linear path between the two children of every pair. A network is
*stable* at ``k`` when that barrier is below a threshold (2 % error by default): from ``k``
on, SGD noise no longer sends copies into different linearly connected basins.

Seeds. The parent's ``init_seed`` and ``data_seed`` are derived from ``[plan].seed``; child
``j`` gets the data-order seed ``derive_seed("instability-child-data", plan seed, j)`` at
*every* spawn step, so spawn steps are compared on the same data orders (a paired design).
Only ``[plan].seed`` of the plan is used; every child has the ``[trainer]`` hyperparameters.

Uncertainty. Pairs are independent replicates (disjoint children), and there are few of
them, so each spawn step's 95 % interval is Student's t-interval over pairs,
``mean ± t(0.975, n - 1) · sd / sqrt(n)``; a percentile bootstrap of 4 values would be
too narrow.

References:
    Frankle, Dziugaite, Roy & Carbin, "Linear Mode Connectivity and the Lottery Ticket
    Hypothesis", ICML 2020 (instability analysis, error barrier); Entezari et al., ICLR
    2022 (the barrier above the chord, reported beside it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from attractor.config import Config
from attractor.errors import UserError
from attractor.experiments import Experiment, run_experiment
from attractor.experiments.instability_result import (
    BARRIERS,
    InstabilityResult,
    onset,
    summarize,
)
from attractor.experiments.spawn import (
    SEED_SPACE,
    spawn_row,
    train_children,
    train_parent,
    with_snapshots,
)
from attractor.measure.connectivity import barriers, path_curve
from attractor.measure.repair import batchnorm_layers
from attractor.runs.launch import resolve_strategy
from attractor.runs.progress import Stages
from attractor.runs.results import Result
from attractor.runs.store import RunStore
from attractor.seeds import derive_seed
from attractor.tasks import build_task
from attractor.tasks.base import Task
from attractor.training.engine import Start, total_steps

#: A training length no spawn step reaches: checks that do not need the task's length.
_NO_END = 2**62


def check_spawn_steps(spawn_steps: list[int], steps: int) -> list[int]:
    """Sorted spawn steps, or a :class:`UserError` naming the first bad one."""
    if not spawn_steps:
        raise UserError("no spawn steps given; pass at least one, e.g. --spawn-steps 0,5,20,100")
    for k in spawn_steps:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
            raise UserError(
                f"spawn step {k!r} is not a non-negative integer; spawn steps count optimizer "
                "steps from 0"
            )
        if k >= steps:
            raise UserError(
                f"spawn step {k} is at or past the end of training ({steps} steps); choose steps "
                f"below {steps}"
            )
    repeated = [k for i, k in enumerate(spawn_steps) if k in spawn_steps[:i]]
    if repeated:
        raise UserError(f"spawn step {repeated[0]} is given twice; list each step once")
    return sorted(int(k) for k in spawn_steps)


def instability_analysis(
    config: Config,
    spawn_steps: list[int],
    pairs: int = 4,
    threshold: float = 0.02,
    x: Tensor | None = None,
    y: Tensor | None = None,
    points: int = 30,
    repair: str = "none",
    progress: bool = False,
) -> InstabilityResult:
    """Run the instability analysis of Frankle et al. (2020) for ``config``'s task and trainer.

    Args:
        config: task and trainer; ``[plan].seed`` seeds parent and children.
        spawn_steps: steps ``k`` to spawn children at, each in ``[0, total_steps)``.
        pairs: pairs of children per spawn step (``>= 2``, for an interval).
        threshold: error barrier below which copies count as stable (0.02 = 2 % error).
        x, y: evaluation set, ``[batch, ...]``; default the task's test split.
        points: points along each linear path, ends included.
        repair: BatchNorm statistics of every point of a path: ``"none"`` (the interpolated
            running statistics, as Frankle et al. measure), ``"reset"`` (recomputed on
            training data) or ``"repair"`` (REPAIR, Jordan et al. 2022); no-op without
            BatchNorm (:func:`~attractor.measure.connectivity.path_curve`).
        progress: a line on stderr as the parent and each spawn step's copies begin training.

    Raises:
        UserError: bad spawn steps, fewer than 2 pairs, a threshold outside ``(0, 1)``, a
            task without classes, or a parent that diverged before a spawn step.
    """
    task = build_task(config.task)
    steps = total_steps(config, task, config.trainer.batch_size)
    spawn = check_spawn_steps(list(spawn_steps), steps)
    _check_pairs_threshold(pairs, threshold)
    if task.num_classes is None:
        raise UserError(
            f"task '{task.name}' has no classes, so there is no error barrier; "
            "use a classification task"
        )
    x = task.x_test if x is None else x
    y = task.y_test if y is None else y
    vectorized = resolve_strategy(config, task) == "vectorized"
    with torch.random.fork_rng(devices=[]):  # the template's draws must not move the caller's RNG
        template = task.make_model()
    with Stages("instability", 1 + len(spawn), progress) as stages:
        stages.begin(f"training the parent: {steps} steps")
        parent, starts = train_parent(task, config, spawn, vectorized)
        spawned = {k: starts[k] for k in spawn}
        table, curves = _spawned_pairs(
            task,
            template,
            config,
            spawned,
            pairs,
            vectorized,
            steps,
            (x, y),
            (points, repair),
            stages,
        )
    summary = summarize(table)
    return InstabilityResult(
        spawn_steps=spawn,
        total_steps=steps,
        pairs=pairs,
        threshold=threshold,
        table=table,
        summary=summary,
        curves=curves,
        onset=onset(summary, "barrier_error_mean", threshold),
        onset_upper=onset(summary, "barrier_error_ci_high", threshold),
        parent={"init_seed": parent.init_seed, "data_seed": parent.data_seed},
        # A reset of a model without BatchNorm changes nothing: say what was done.
        repair="none" if repair == "reset" and not batchnorm_layers(template) else repair,
    )


def _spawned_pairs(
    task: Task,
    template: torch.nn.Module,
    config: Config,
    starts: dict[int, Start],
    pairs: int,
    vectorized: bool,
    steps: int,
    data: tuple[Tensor, Tensor],
    path: tuple[int, str],
    stages: Stages,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Children spawned from each state of ``starts`` (spawn step -> the parent's state, in
    order), their pairs' table and paths (measured with the architecture ``template``); a
    stage per spawn step.
    """
    seed = config.plan.seed
    children = [
        spawn_row(config, j, derive_seed("instability-child-data", seed, j) % SEED_SPACE)
        for j in range(2 * pairs)
    ]
    child_config = with_snapshots(config, [])
    records, curves = [], []
    for k, start in starts.items():
        stages.begin(
            f"spawn step {k}: training {2 * pairs} copies for {steps - k} steps, {pairs} paths"
        )
        final = train_children(task, child_config, children, vectorized, start, steps)
        for i in range(pairs):
            record, curve = _pair(task, template, final, k, i, *data, *path)
            records.append(record)
            if curve is not None:
                curves.append(curve)
    columns = ["spawn_step", "pair", "alpha", "loss", "error"]
    paths = pd.concat(curves, ignore_index=True)[columns] if curves else pd.DataFrame()
    return pd.DataFrame(records), paths


def _check_pairs_threshold(pairs: int, threshold: float) -> None:
    if pairs < 2:
        raise UserError(f"pairs must be at least 2 (an interval over pairs needs two); got {pairs}")
    if not 0 < threshold < 1:
        raise UserError(f"threshold is an error rate in (0, 1); got {threshold}")


def _pair(
    task: Task,
    template: torch.nn.Module,
    final: dict[int, dict[str, Tensor]],
    k: int,
    i: int,
    x: Tensor,
    y: Tensor,
    points: int,
    repair: str,
) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """Pair ``i`` of spawn step ``k``: its record (barriers, end errors) and path, if both
    trained.
    """
    a, b = 2 * i, 2 * i + 1
    record: dict[str, Any] = {"spawn_step": k, "pair": i, "child_a": a, "child_b": b}
    if a not in final or b not in final:  # divergence is data: recorded, its barriers undefined
        nan = float("nan")
        undefined = {**dict.fromkeys(BARRIERS, nan), "error_a": nan, "error_b": nan}
        return record | {"diverged": True, **undefined}, None
    curve = path_curve(task, template, final[a], final[b], x, y, points, repair=repair)
    record |= {"diverged": False, **barriers(curve)}
    record |= {"error_a": float(curve["error"].iloc[0]), "error_b": float(curve["error"].iloc[-1])}
    return record, curve.assign(spawn_step=k, pair=i)


class InstabilitySettings(BaseModel):
    """What ``attractor instability`` runs: task and trainer, spawn steps, pairs (its identity)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: Config = Field(description="Task and trainer; [plan].seed seeds parent and children.")
    spawn_steps: list[int] = Field(
        description="Steps k to spawn copies at, each below the run's length."
    )
    pairs: int = Field(
        4, description="Pairs of copies per spawn step (at least 2, for the interval)."
    )
    threshold: float = Field(0.02, description="Error barrier below which copies count as stable.")
    points: int = Field(30, ge=2, description="Points along each linear path, ends included.")
    repair: Literal["none", "reset", "repair"] = Field(
        "none",
        description="BatchNorm statistics along the paths: none (interpolated, as Frankle et "
        "al.), reset (recomputed on training data) or repair (REPAIR); no-op without BatchNorm.",
    )

    @model_validator(mode="after")
    def _cheap_checks(self) -> InstabilitySettings:
        # What needs no task is refused before the experiment directory exists; a spawn step
        # past the end of training is refused by instability_analysis (it needs the task).
        check_spawn_steps(list(self.spawn_steps), _NO_END)
        _check_pairs_threshold(self.pairs, self.threshold)
        return self


def run(settings: InstabilitySettings, store: RunStore, progress: bool = False) -> list[Result]:
    """The analysis on the task's test split (the children train in memory, not in ``store``)."""
    del store  # nothing is trained into the directory: only the result is written there
    result = instability_analysis(
        settings.config,
        list(settings.spawn_steps),
        settings.pairs,
        settings.threshold,
        points=settings.points,
        repair=settings.repair,
        progress=progress,
    )
    return [result]


def run_instability(
    settings: InstabilitySettings, out: str | Path, force: bool = False, progress: bool = False
) -> InstabilityResult:
    """Run the ``instability`` experiment in directory ``out``; its result (``progress``: its
    stages on stderr).
    """
    _, results = run_experiment("instability", settings, out, force=force, progress=progress)
    result = results[0]
    assert isinstance(result, InstabilityResult)
    return result


EXPERIMENT = Experiment(
    name="instability",
    settings=InstabilitySettings,
    run=run,
    summary="instability analysis (Frankle et al. 2020): from which step on do copies land in one "
    "basin",
)

__all__ = [
    "BARRIERS",
    "EXPERIMENT",
    "InstabilityResult",
    "InstabilitySettings",
    "check_spawn_steps",
    "instability_analysis",
    "onset",
    "run_instability",
    "summarize",
]
