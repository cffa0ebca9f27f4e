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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from attractor.config import Config
from attractor.errors import UserError, require
from attractor.experiments import Experiment, run_experiment
from attractor.measure.basins import Basins
from attractor.runs.launch import resolve_strategy
from attractor.runs.results import Result, strict_json
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
from attractor.stack.search import FACTORS, HPARAMS, run_studies
from attractor.stack.settings import Trainer2Settings
from attractor.tasks import build_task


@dataclass(frozen=True, eq=False)
class Trainer2Result:
    """Everything one trainer2 run measured.

    Attributes:
        config: the resolved config (task, trainer defaults, run).
        settings: the resolved trainer2 settings.
        trials: one row per (study, trial) (see the module docstring).
        studies: one row per study: initial condition, returned hyperparameters,
            ``best_value``, ``trainer``, test ``ensemble_accuracy`` / ``member_accuracy``,
            ``distance_to_center``, ``basin``, ``log10_lr``.
        trainers: one row per distinct returned trainer (see :class:`~attractor.stack.compare.Comparison`).
        distances: name -> ``[studies, studies]`` function-space distance of their trainers.
        basins: basins of the studies by ``js_mean``.
        function_spread: mean distances between studies with intervals, against the seed
            spread (:func:`~attractor.stack.compare.function_spread`).
        spread: spread of each outcome over studies (:func:`~attractor.stack.outcomes.spread_table`).
        variance: variance components by initial-condition factor (may be empty).
        dominant: outcome -> the factor that moves it most.
        validation: sizes and seed of the validation split.
        timings: seconds spent searching, training returned trainers, measuring.
        out: the experiment directory (None for a study run outside one).
    """

    kind: ClassVar[str] = "trainer2"
    schema: ClassVar[int] = 1

    config: dict[str, Any]
    settings: dict[str, Any]
    trials: pd.DataFrame
    studies: pd.DataFrame
    trainers: pd.DataFrame
    distances: dict[str, np.ndarray]
    basins: Basins
    function_spread: dict[str, Any]
    spread: pd.DataFrame
    variance: pd.DataFrame
    dominant: dict[str, dict[str, Any]]
    validation: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    out: Path | None = None

    @property
    def n_basins(self) -> int:
        """How many basins the returned trainers' models fall into."""
        return self.basins.n_basins

    @property
    def name(self) -> str:
        """The file stem: ``trainer2``."""
        return "trainer2"

    def to_tables(self) -> dict[str, pd.DataFrame]:
        """The trials (main table), studies, distinct trainers, spread and variance components."""
        return {"": self.trials, "studies": self.studies, "trainers": self.trainers, "spread": self.spread,
                "variance": self.variance}

    def to_json(self) -> dict[str, Any]:
        """JSON-able summary, NaN as null (the tables are repeated here)."""
        return strict_json({
            "config": self.config, "settings": self.settings, "validation": self.validation,
            "n_studies": len(self.studies), "n_trainers": len(self.trainers), "n_basins": self.n_basins,
            "dominant": self.dominant, "function_spread": self.function_spread, "timings": self.timings,
            "out": None if self.out is None else str(self.out),
            "studies": self.studies, "trainers": self.trainers, "spread": self.spread,
            "basins": self.basins.to_dict(), "distances": self.distances,
            "variance": self.variance, "trials": self.trials,
        })


def trainer2_study(
    config: Config, settings: Trainer2Settings, out: str | Path | None = None, *,
    on_round: Callable[[int, int], None] | None = None,
) -> Trainer2Result:
    """Run the trainer2 from every initial condition and compare the trainers it returns.

    Args:
        config: ``[task]``, ``[trainer]`` (values of everything not searched, and the
            training length) and ``[run]`` (strategy, evaluation batch size); ``[plan]`` is unused.
        settings: search space, trials, initial conditions (:class:`Trainer2Settings`).
        out: the experiment directory the result will be written to (recorded in it; this
            function writes nothing: :func:`run` is the experiment that does).
        on_round: progress callback ``(rounds done, rounds in all)`` of the search.

    Returns:
        :class:`Trainer2Result`.

    Raises:
        UserError: optuna missing, a task without classes, a held-out group the task lacks, a batch size larger than
            the fit split, or a study with no finite trial.
    """
    require("optuna", "optuna")
    threads = torch.get_num_threads()
    if settings.threads is not None:
        # Small members make tiny matmuls: on a busy CPU, threads mostly wait for each other
        # (measured: one round of examples/trainer2.toml took 35 s on 2 threads, 0.5 s on 1).
        torch.set_num_threads(settings.threads)
    try:
        return _study(config, settings, out, on_round)
    finally:
        torch.set_num_threads(threads)


def _study(config: Config, settings: Trainer2Settings, out: str | Path | None,
           on_round: Callable[[int, int], None] | None) -> Trainer2Result:
    start = time.perf_counter()
    task = build_task(config.task)
    if task.num_classes is None:
        raise UserError(f"trainer2 compares trainers by the class probabilities of their models, but task '{task.name}' "
                        "has no classes; use a classification task")
    settings.check(task.group_ids)
    strategy = resolve_strategy(config, task)
    fit, val = validation_split(task.n_train, settings.validation_fraction, settings.split_seed)
    trials, _ = run_studies(trial_task(task, fit, val), config, settings, strategy, on_round=on_round)
    searched_at = time.perf_counter()

    best = trials[trials["best"]].rename(columns={"value": "best_value"})
    best = best[["study", *FACTORS, *HPARAMS, "best_value"]].reset_index(drop=True)
    comparison = compare(task, config, best, settings.final_members, strategy, settings.basin_threshold, settings.draws)
    trained_at = time.perf_counter()

    studies = outcome_columns(best.merge(comparison.studies, on="study"), settings.search)
    spread = spread_table(studies, [*searched(settings.search), *SUMMARY], settings.draws)
    variance, dominant = factor_variance(studies, comparison.p_true, settings.draws)
    timings = {"search_s": searched_at - start, "final_s": trained_at - searched_at, "measure_s": time.perf_counter() - trained_at}
    return Trainer2Result(
        config=config.resolved(), settings=settings.model_dump(mode="json"), trials=trials, studies=studies,
        trainers=comparison.trainers, distances=comparison.distances, basins=comparison.basins,
        function_spread=comparison.function_spread, spread=spread,
        variance=variance, dominant=dominant,
        validation={"n_fit": len(fit), "n_validation": len(val), "fraction": settings.validation_fraction,
                    "seed": settings.split_seed, "strategy": strategy},
        timings={k: round(v, 3) for k, v in timings.items()}, out=None if out is None else Path(out),
    )


def summary_lines(result: Trainer2Result) -> list[str]:
    """A few lines for the terminal: what was run, how far the results spread, what moved them."""
    spread = result.spread.set_index("quantity")
    lines = [f"{len(result.studies)} studies x {result.settings['trials']} trials -> {len(result.trainers)} distinct trainers, "
             f"{result.n_basins} basin(s) in function space"]
    for name, unit in (("log10_lr", "decades"), ("best_value", ""), ("ensemble_accuracy", "")):
        if name in spread.index:
            row = spread.loc[name]
            lines.append(f"  {name}: mean {row['mean']:.4g}, sd {row['sd']:.3g} [{row['sd_low']:.3g}, {row['sd_high']:.3g}], "
                         f"range {row['range']:.3g} {unit}".rstrip())
    js = result.function_spread
    if js.get("js_matched"):
        lines.append(f"  js between studies' models (seed-matched): {js['js_matched']['value']:.3g} nats; "
                     f"between seeds of one trainer: {js['seed_js']:.3g} (ratio {js['matched_over_seed']:.2f})")
    for outcome, top in result.dominant.items():
        if top["factor"] is not None:
            residual = " incl. residual" if top["top_with_residual"] else ""
            lines.append(f"  {outcome}: moved most by {top['factor']} (share {top['share']:.2f}); "
                         f"largest effect {top['top_effect']}{residual} ({top['top_share']:.2f})")
    return lines


class Trainer2Run(BaseModel):
    """What ``attractor trainer2`` runs: the base config and the trainer2 settings (its identity)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: Config = Field(description="[task], [trainer] (everything not searched) and [run]; [plan] is unused.")
    trainer2: Trainer2Settings = Field(description="Search space, trials and initial conditions.")


def run(settings: Trainer2Run, store: RunStore) -> list[Result]:
    """The studies from every initial condition, their trainers compared (nothing trained to disk)."""
    return [trainer2_study(settings.config, settings.trainer2, store.root)]


def run_trainer2(config: Config, settings: Trainer2Settings, out: str | Path, force: bool = False) -> Trainer2Result:
    """Run the ``trainer2`` experiment in directory ``out``; its result."""
    _, results = run_experiment("trainer2", Trainer2Run(config=config, trainer2=settings), out, force=force)
    result = results[0]
    assert isinstance(result, Trainer2Result)
    return result


EXPERIMENT = Experiment(
    name="trainer2", settings=Trainer2Run, run=run,
    summary="how stable is a hyperparameter search started from many initial conditions",
)
