"""Trainer2: the stability of a hyperparameter search, measured like any other level.

``trainer2_study(config, settings)`` runs one Optuna study per initial condition
(sampler seed x validation resample x held-out group; :mod:`attractor.stack.search`),
trains an ensemble for every trainer the studies return and compares them in function
space on the test split (:mod:`attractor.stack.compare`), then summarises the spread and
decomposes it by initial condition (:mod:`attractor.stack.outcomes`). Its result (kind
``trainer2``), written by the run store into the experiment's directory ``OUT``:

* ``OUT/trainer2.parquet``: one row per (study, trial): initial condition, hyperparameters,
  validation ``value``, ``diverged`` members, ``best``;
* ``OUT/trainer2.{studies,trainers,spread,variance}.parquet``: those tables;
* ``OUT/trainer2.json``: :meth:`Trainer2Result.to_json` (settings, studies, trainers,
  distances, basins, spread, variance components, timings).

``attractor trainer2`` then renders ``OUT/report.html`` from them.

The same config and settings give the same studies, trial for trial: samplers are
seeded, the validation split and its resamples are seeded, and training is
deterministic (a member depends only on its row).

References:
    Bergstra et al. (2011) (TPE); Akiba et al. (2019) (Optuna).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from attractor.config import Config
from attractor.errors import UserError, require
from attractor.experiments import Experiment, run_experiment
from attractor.runs.launch import resolve_strategy
from attractor.runs.progress import Progress, Stages
from attractor.runs.results import Result
from attractor.runs.store import RunStore
from attractor.stack.compare import compare
from attractor.stack.fit import trial_task, validation_split
from attractor.stack.outcomes import (
    SUMMARY,
    factor_variance,
    outcome_columns,
    searched,
    spread_table,
)
from attractor.stack.result import Trainer2Result, summary_lines
from attractor.stack.search import FACTORS, HPARAMS, run_studies
from attractor.stack.settings import Trainer2Settings
from attractor.tasks import build_task
from attractor.tasks.base import Task


def trainer2_study(
    config: Config,
    settings: Trainer2Settings,
    out: str | Path | None = None,
    *,
    on_round: Callable[[int, int], None] | None = None,
    progress: bool = False,
) -> Trainer2Result:
    """Run the trainer2 from every initial condition and compare the trainers it returns.

    Args:
        config: ``[task]``, ``[trainer]`` (values of everything not searched, and the
            training length) and ``[run]`` (strategy, evaluation batch size); ``[plan]`` is unused.
        settings: search space, trials, initial conditions (:class:`Trainer2Settings`).
        out: the experiment directory the result will be written to (recorded in it; this
            function writes nothing: :func:`run` is the experiment that does).
        on_round: progress callback ``(rounds done, rounds in all)`` of the search.
        progress: on stderr, a line as each stage (search, final ensembles, spread)
            begins, and the search's rounds counted (off: the library is quiet).

    Returns:
        :class:`Trainer2Result`.

    Raises:
        UserError: optuna missing, a task without classes, a held-out group the task lacks, a batch
        size larger than
            the fit split, or a study with no finite trial.
    """
    require("optuna", "optuna")
    threads = torch.get_num_threads()
    if settings.threads is not None:
        # Small members make tiny matmuls: on a busy CPU, threads mostly wait for each other
        # (measured: one round of examples/trainer2.toml took 35 s on 2 threads, 0.5 s on 1).
        torch.set_num_threads(settings.threads)
    try:
        with Stages("trainer2", 3, progress) as stages:
            return _study(config, settings, out, stages, on_round)
    finally:
        torch.set_num_threads(threads)


def _search(
    task: Task,
    config: Config,
    settings: Trainer2Settings,
    strategy: str,
    stages: Stages,
    on_round: Callable[[int, int], None] | None,
) -> pd.DataFrame:
    """:func:`run_studies`' trials: the search's stage begun, its rounds counted on stderr
    (with the stages' progress) and passed on to ``on_round``.
    """
    s = settings
    order = "in lockstep" if s.lockstep else "one study after another"
    stages.begin(f"search: {s.n_studies} studies x {s.trials} trials ({order})")
    label = f"searching: {s.rounds} rounds of training"
    with Progress(s.rounds, stages.enabled, label, name="search", unit="rounds") as bar:

        def counted(done: int, rounds: int) -> None:
            bar.advance(1)
            if on_round is not None:
                on_round(done, rounds)

        trials, _ = run_studies(task, config, s, strategy, on_round=counted)
    return trials


def _study(
    config: Config,
    settings: Trainer2Settings,
    out: str | Path | None,
    stages: Stages,
    on_round: Callable[[int, int], None] | None,
) -> Trainer2Result:
    start = time.perf_counter()
    task = _classification_task(config, settings)
    strategy = resolve_strategy(config, task)
    fit, val = validation_split(task.n_train, settings.validation_fraction, settings.split_seed)
    trials = _search(trial_task(task, fit, val), config, settings, strategy, stages, on_round)
    searched_at = time.perf_counter()

    best = trials[trials["best"]].rename(columns={"value": "best_value"})
    best = best[["study", *FACTORS, *HPARAMS, "best_value"]].reset_index(drop=True)
    stages.begin(
        f"final ensembles: the trainers of {len(best)} studies, "
        f"{settings.final_members} members each, compared on the test split"
    )
    comparison = compare(
        task,
        config,
        best,
        settings.final_members,
        strategy,
        settings.basin_threshold,
        settings.draws,
    )
    trained_at = time.perf_counter()

    stages.begin("spread of the outcomes and what moves it")
    studies = outcome_columns(best.merge(comparison.studies, on="study"), settings.search)
    spread = spread_table(studies, [*searched(settings.search), *SUMMARY], settings.draws)
    variance, dominant = factor_variance(studies, comparison.p_true, settings.draws)
    timings = {
        "search_s": searched_at - start,
        "final_s": trained_at - searched_at,
        "measure_s": time.perf_counter() - trained_at,
    }
    return Trainer2Result(
        config=config.resolved(),
        settings=settings.model_dump(mode="json"),
        trials=trials,
        studies=studies,
        trainers=comparison.trainers,
        distances=comparison.distances,
        basins=comparison.basins,
        function_spread=comparison.function_spread,
        spread=spread,
        variance=variance,
        dominant=dominant,
        validation={
            "n_fit": len(fit),
            "n_validation": len(val),
            "fraction": settings.validation_fraction,
            "seed": settings.split_seed,
            "strategy": strategy,
        },
        timings={k: round(v, 3) for k, v in timings.items()},
        out=None if out is None else Path(out),
    )


def _classification_task(config: Config, settings: Trainer2Settings) -> Task:
    """``config``'s task, refused (one line) without classes or without the held-out groups."""
    task = build_task(config.task)
    if task.num_classes is None:
        raise UserError(
            f"trainer2 compares trainers by the class probabilities of their models, but task "
            f"'{task.name}' has no classes; use a classification task"
        )
    settings.check(task.group_ids)
    return task


class Trainer2Run(BaseModel):
    """What ``attractor trainer2`` runs: the base config and the trainer2 settings (its
    identity).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: Config = Field(
        description="[task], [trainer] (everything not searched) and [run]; [plan] is unused."
    )
    trainer2: Trainer2Settings = Field(description="Search space, trials and initial conditions.")


def run(settings: Trainer2Run, store: RunStore, progress: bool = False) -> list[Result]:
    """The studies from every initial condition, their trainers compared (nothing trained to
    disk); ``progress``: its stages and the search's rounds on stderr.
    """
    return [trainer2_study(settings.config, settings.trainer2, store.root, progress=progress)]


def run_trainer2(
    config: Config,
    settings: Trainer2Settings,
    out: str | Path,
    force: bool = False,
    progress: bool = False,
) -> Trainer2Result:
    """Run the ``trainer2`` experiment in directory ``out``; its result (``progress``: its
    stages and the search's rounds on stderr).
    """
    both = Trainer2Run(config=config, trainer2=settings)
    _, results = run_experiment("trainer2", both, out, force=force, progress=progress)
    result = results[0]
    assert isinstance(result, Trainer2Result)
    return result


EXPERIMENT = Experiment(
    name="trainer2",
    settings=Trainer2Run,
    run=run,
    summary="how stable is a hyperparameter search started from many initial conditions",
)

__all__ = [
    "EXPERIMENT",
    "Trainer2Result",
    "Trainer2Run",
    "run_trainer2",
    "summary_lines",
    "trainer2_study",
]
