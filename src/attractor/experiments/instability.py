"""Instability analysis: from which training step on does the outcome no longer depend on data order?

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

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import stats
from torch import Tensor

from attractor.config import Config
from attractor.errors import UserError
from attractor.experiments import Experiment, run_experiment
from attractor.measure.connectivity import barriers, path_curve
from attractor.plan import PlanRow
from attractor.runs.launch import resolve_strategy
from attractor.runs.results import Result, strict_json
from attractor.runs.store import RunStore
from attractor.seeds import derive_seed
from attractor.tasks import build_task
from attractor.tasks.base import Task
from attractor.training.engine import Start, total_steps, train_chunk

BARRIERS = ("barrier_error", "barrier_error_linear", "barrier_loss", "barrier_loss_linear")
_SEED_SPACE = 2**31
#: A training length no spawn step reaches: checks that do not need the task's length.
_NO_END = 2**62


@dataclass(frozen=True, eq=False)
class InstabilityResult:
    """Error barriers between children spawned at each step, with their summary.

    A result of kind ``instability``: ``instability.json`` (:meth:`to_json`),
    ``instability.parquet`` (the table), ``instability.curves.parquet`` and
    ``instability.summary.parquet``.

    Attributes:
        spawn_steps: sorted spawn steps ``k``; total_steps: training length.
        pairs: pairs of children per spawn step; threshold: stability threshold on the
            error barrier (Frankle form).
        table: one row per (spawn_step, pair): ``child_a``, ``child_b``, ``diverged``,
            the four :data:`BARRIERS` (NaN where a child diverged), and each child's
            final error ``error_a`` / ``error_b`` on the evaluation set.
        summary: one row per spawn step: ``pairs`` used, and for each barrier its
            ``_mean``, ``_sd``, ``_ci_low``, ``_ci_high`` (95 % t-interval over pairs).
        curves: every pair's path: ``spawn_step``, ``pair``, ``alpha``, ``loss``, ``error``.
        onset: the first spawn step from which on every mean error barrier is below
            ``threshold`` (``None`` if there is none); onset_upper: the same for the upper
            95 % bounds, the conservative reading.
        parent: the parent's ``init_seed`` and ``data_seed``.
    """

    kind: ClassVar[str] = "instability"
    schema: ClassVar[int] = 1

    spawn_steps: list[int]
    total_steps: int
    pairs: int
    threshold: float
    table: pd.DataFrame
    summary: pd.DataFrame
    curves: pd.DataFrame
    onset: int | None
    onset_upper: int | None
    parent: dict[str, int]

    @property
    def name(self) -> str:
        """The file stem: ``instability``."""
        return "instability"

    def for_report(self) -> dict[str, Any]:
        """The ``instability`` entry of :func:`attractor.report.render_report`'s measures."""
        curve = self.summary.rename(columns={"barrier_error_mean": "barrier_mean", "barrier_error_ci_low": "low", "barrier_error_ci_high": "high"})
        return {"curve": curve[["spawn_step", "pairs", "barrier_mean", "low", "high"]], "onset": self.onset,
                "onset_upper": self.onset_upper, "threshold": self.threshold}

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-ready data, NaN as null (the curves are a table of their own)."""
        return strict_json({
            "spawn_steps": self.spawn_steps, "total_steps": self.total_steps, "pairs": self.pairs,
            "threshold": self.threshold, "onset": self.onset, "onset_upper": self.onset_upper,
            "ci": "95% Student t-interval over pairs", "barrier": "error, Frankle et al. 2020 (max - mean of ends)",
            "parent": self.parent, "summary": self.summary, "table": self.table,
        })

    def to_tables(self) -> dict[str, pd.DataFrame]:
        """The per-pair table (main), every pair's path and the per-step summary."""
        return {"": self.table, "curves": self.curves, "summary": self.summary}


def check_spawn_steps(spawn_steps: list[int], steps: int) -> list[int]:
    """Sorted spawn steps, or a :class:`UserError` naming the first bad one."""
    if not spawn_steps:
        raise UserError("no spawn steps given; pass at least one, e.g. --spawn-steps 0,5,20,100")
    for k in spawn_steps:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
            raise UserError(f"spawn step {k!r} is not a non-negative integer; spawn steps count optimizer steps from 0")
        if k >= steps:
            raise UserError(f"spawn step {k} is at or past the end of training ({steps} steps); choose steps below {steps}")
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
) -> InstabilityResult:
    """Run the instability analysis of Frankle et al. (2020) for ``config``'s task and trainer.

    Args:
        config: task and trainer; ``[plan].seed`` seeds parent and children.
        spawn_steps: steps ``k`` to spawn children at, each in ``[0, total_steps)``.
        pairs: pairs of children per spawn step (``>= 2``, for an interval).
        threshold: error barrier below which copies count as stable (0.02 = 2 % error).
        x, y: evaluation set, ``[batch, ...]``; default the task's test split.
        points: points along each linear path, ends included.

    Raises:
        UserError: bad spawn steps, fewer than 2 pairs, a threshold outside ``(0, 1)``, a
            task without classes, or a parent that diverged before a spawn step.
    """
    task = build_task(config.task)
    trainer = config.trainer
    steps = total_steps(config, task, trainer.batch_size)
    spawn = check_spawn_steps(list(spawn_steps), steps)
    _check_pairs_threshold(pairs, threshold)
    if task.num_classes is None:
        raise UserError(f"task '{task.name}' has no classes, so there is no error barrier; use a classification task")
    x = task.x_test if x is None else x
    y = task.y_test if y is None else y
    vectorized = resolve_strategy(config, task) == "vectorized"
    seed = config.plan.seed

    def row(member: int, data_seed: int) -> PlanRow:
        return PlanRow(
            member=member, init_seed=derive_seed("instability-init", seed) % _SEED_SPACE, data_seed=data_seed,
            lr=trainer.lr, momentum=trainer.momentum, weight_decay=trainer.weight_decay,
            batch_size=trainer.batch_size, optimizer=trainer.optimizer,
        )

    parent = row(0, derive_seed("instability-parent-data", seed) % _SEED_SPACE)
    starts: dict[int, Start] = {}
    parent_config = _with_snapshots(config, spawn)
    outcome = train_chunk(task, parent_config, [parent], vectorized, lambda *_: None,
                          on_state=lambda _row, step, state: starts.__setitem__(step, state))[0]
    missing = [k for k in spawn if k not in starts]
    if missing:
        raise UserError(f"the parent diverged at step {outcome.diverged_step}, before spawn step {missing[0]}; lower trainer.lr")

    children = [row(j, derive_seed("instability-child-data", seed, j) % _SEED_SPACE) for j in range(2 * pairs)]
    child_config = _with_snapshots(config, [])
    with torch.random.fork_rng(devices=[]):  # the template's draws must not move the caller's RNG
        template = task.make_model()
    records, curves = [], []
    for k in spawn:
        final = _train_children(task, child_config, children, vectorized, starts[k], steps)
        for i in range(pairs):
            record, curve = _pair(task, template, final, k, i, x, y, points)
            records.append(record)
            if curve is not None:
                curves.append(curve)

    table = pd.DataFrame(records)
    summary = summarize(table)
    result = InstabilityResult(
        spawn_steps=spawn, total_steps=steps, pairs=pairs, threshold=threshold, table=table, summary=summary,
        curves=pd.concat(curves, ignore_index=True)[["spawn_step", "pair", "alpha", "loss", "error"]] if curves else pd.DataFrame(),
        onset=onset(summary, "barrier_error_mean", threshold), onset_upper=onset(summary, "barrier_error_ci_high", threshold),
        parent={"init_seed": parent.init_seed, "data_seed": parent.data_seed},
    )
    return result


def _check_pairs_threshold(pairs: int, threshold: float) -> None:
    if pairs < 2:
        raise UserError(f"pairs must be at least 2 (an interval over pairs needs two); got {pairs}")
    if not 0 < threshold < 1:
        raise UserError(f"threshold is an error rate in (0, 1); got {threshold}")


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Per spawn step: pairs used and mean, sd and 95 % t-interval of each barrier over pairs."""
    rows = []
    for k, group in table.groupby("spawn_step", sort=True):
        done = group[~group["diverged"].astype(bool)]
        summary: dict[str, Any] = {"spawn_step": int(k), "pairs": len(done)}
        for column in BARRIERS:
            values = done[column].to_numpy(dtype=np.float64)
            n = len(values)
            mean = float(values.mean()) if n else float("nan")
            sd = float(values.std(ddof=1)) if n > 1 else float("nan")
            half = float(stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)) if n > 1 else float("nan")
            summary |= {f"{column}_mean": mean, f"{column}_sd": sd, f"{column}_ci_low": mean - half, f"{column}_ci_high": mean + half}
        rows.append(summary)
    return pd.DataFrame(rows)


def onset(summary: pd.DataFrame, column: str, threshold: float) -> int | None:
    """The first spawn step from which on ``column`` stays below ``threshold``, else ``None``.

    "From which on" rather than "first below": a noisy dip below the threshold followed by
    a rise is not stability. Undefined values (NaN) count as not below.
    """
    below = (summary[column] < threshold).to_numpy()
    steps = summary["spawn_step"].to_numpy()
    for i in range(len(steps)):
        if below[i:].all():
            return int(steps[i])
    return None


def _pair(task: Task, template: torch.nn.Module, final: dict[int, dict[str, Tensor]], k: int,
          i: int, x: Tensor, y: Tensor, points: int) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """Pair ``i`` of spawn step ``k``: its record (barriers, end errors) and path, if both trained."""
    a, b = 2 * i, 2 * i + 1
    record: dict[str, Any] = {"spawn_step": k, "pair": i, "child_a": a, "child_b": b}
    if a not in final or b not in final:  # divergence is data: recorded, its barriers undefined
        nan = float("nan")
        undefined = {**dict.fromkeys(BARRIERS, nan), "error_a": nan, "error_b": nan}
        return record | {"diverged": True, **undefined}, None
    curve = path_curve(task, template, final[a], final[b], x, y, points)
    record |= {"diverged": False, **barriers(curve)}
    record |= {"error_a": float(curve["error"].iloc[0]), "error_b": float(curve["error"].iloc[-1])}
    return record, curve.assign(spawn_step=k, pair=i)


def _train_children(task: Task, config: Config, children: list[PlanRow], vectorized: bool, start: Start, steps: int) -> dict[int, dict[str, Tensor]]:
    """Final parameters and buffers of every child that did not diverge, all spawned from ``start``."""
    final: dict[int, dict[str, Tensor]] = {}

    def keep(child: PlanRow, step: int, state: dict[str, Tensor], _metrics: dict[str, float]) -> None:
        if step == steps:
            final[child.member] = state

    train_chunk(task, config, children, vectorized, keep, start=[start] * len(children))
    return final


def _with_snapshots(config: Config, steps: list[int]) -> Config:
    """``config`` with ``run.snapshots`` set to ``steps`` (0 and the last step are always in)."""
    data = config.resolved()
    data["run"]["snapshots"] = list(steps) if steps else 1
    return Config.model_validate(data)


class InstabilitySettings(BaseModel):
    """What ``attractor instability`` runs: task and trainer, spawn steps, pairs (its identity)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: Config = Field(description="Task and trainer; [plan].seed seeds parent and children.")
    spawn_steps: list[int] = Field(description="Steps k to spawn copies at, each below the run's length.")
    pairs: int = Field(4, description="Pairs of copies per spawn step (at least 2, for the interval).")
    threshold: float = Field(0.02, description="Error barrier below which copies count as stable.")
    points: int = Field(30, ge=2, description="Points along each linear path, ends included.")

    @model_validator(mode="after")
    def _cheap_checks(self) -> InstabilitySettings:
        # What needs no task is refused before the experiment directory exists; a spawn step
        # past the end of training is refused by instability_analysis (it needs the task).
        check_spawn_steps(list(self.spawn_steps), _NO_END)
        _check_pairs_threshold(self.pairs, self.threshold)
        return self


def run(settings: InstabilitySettings, store: RunStore) -> list[Result]:
    """The analysis on the task's test split (the children train in memory, not in ``store``)."""
    del store  # nothing is trained into the directory: only the result is written there
    result = instability_analysis(settings.config, list(settings.spawn_steps), settings.pairs,
                                  settings.threshold, points=settings.points)
    return [result]


def run_instability(settings: InstabilitySettings, out: str | Path, force: bool = False) -> InstabilityResult:
    """Run the ``instability`` experiment in directory ``out``; its result."""
    _, results = run_experiment("instability", settings, out, force=force)
    result = results[0]
    assert isinstance(result, InstabilityResult)
    return result


EXPERIMENT = Experiment(
    name="instability", settings=InstabilitySettings, run=run,
    summary="instability analysis (Frankle et al. 2020): from which step on do copies land in one basin",
)
