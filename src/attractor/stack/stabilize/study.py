"""The search: a multi-objective Optuna study whose every trial is a whole ensemble.

Round ``r`` asks the study for ``parallel`` trials at once, trains all their members as one
ensemble (``parallel x members`` rows; trainers that differ only in member-wise settings
share a chunk) on the fit part of the training split, scores each trial's members on the
validation part (:mod:`~attractor.stack.stabilize.objectives`) and tells the study both
objectives, error and spread, to be minimized.

Every trial trains the same plan rows, the search block of ``[plan]`` (common random
numbers: two trials differ only by their trainers).

Resumable: the study lives in an SQLite file in the experiment's directory (Optuna's RDB
storage). The sampler of round ``r`` is seeded from ``(seed, r)`` and sees only the
finished trials, so a killed search goes on with the trials it would have asked; trials
that were running when it was killed are marked failed and their round asked again.

References:
    Deb, Pratap, Agarwal & Meyarivan (2002), "A fast and elitist multiobjective genetic
    algorithm: NSGA-II"; Akiba et al. (2019), "Optuna"; Ozaki et al. (2020), "Multiobjective
    tree-structured Parzen estimator for computationally expensive optimization problems".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from torch import Tensor

from attractor.config import Config
from attractor.errors import require
from attractor.plan import PlanRow
from attractor.seeds import derive_seed
from attractor.stack.fit import train_predict
from attractor.stack.stabilize import objectives
from attractor.stack.stabilize.settings import StabilizeSettings
from attractor.stack.stabilize.space import (
    KNOBS,
    ROW_FIELDS,
    TrialTrainer,
    chosen_knobs,
    suggest,
)
from attractor.tasks.base import Task
from attractor.training.chunk import MEMBERWISE

STUDY = "stabilize"


def storage_url(path: Path) -> str:
    """SQLAlchemy URL of the study's SQLite file."""
    return f"sqlite:///{path.resolve()}"


def _sampler(settings: StabilizeSettings, round_: int) -> Any:
    optuna = require("optuna", "optuna")
    seed = derive_seed("stabilize-sampler", settings.seed, round_) % 2**32
    if settings.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=max(2, settings.parallel), seed=seed)
    if settings.sampler == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=settings.startup_trials, multivariate=True
        )
    return optuna.samplers.RandomSampler(seed=seed)


def open_study(settings: StabilizeSettings, storage: Any, round_: int) -> Any:
    """The study (created, or loaded from ``storage``: a URL or an Optuna storage) with round
    ``round_``'s sampler.
    """
    optuna = require("optuna", "optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=STUDY,
        storage=storage,
        directions=["minimize", "minimize"],
        sampler=_sampler(settings, round_),
        load_if_exists=True,
    )


def train_trials(
    task: Task,
    config: Config,
    trials: list[tuple[TrialTrainer, list[PlanRow]]],
    strategy: str,
    x_eval: Tensor,
) -> list[tuple[Tensor, Tensor]]:
    """Each trial's members trained and run on ``x_eval``: ``(outputs [members, n, ...],
    diverged [members])`` per trial (a diverged member is scored at its initial weights).

    Trials whose trainers agree on everything but the member-wise settings (the rows' and
    :data:`~attractor.training.chunk.MEMBERWISE`) train together, as one ensemble; those with
    SAM apart from those without.
    """
    groups: dict[str, list[int]] = {}
    for i, (trial, _) in enumerate(trials):
        shared = trial.trainer.model_dump(exclude=set(MEMBERWISE) | set(ROW_FIELDS))
        # Once one member of a chunk uses SAM every member takes its second pass: trainers
        # without SAM train apart rather than pay for it.
        shared["uses_sam"] = trial.trainer.sam_rho > 0
        groups.setdefault(repr(sorted(shared.items())), []).append(i)
    outputs: list[tuple[Tensor, Tensor] | None] = [None] * len(trials)
    for members in groups.values():
        rows = [row for i in members for row in trials[i][1]]
        # The rows carry the row settings; the trainers differ in the member-wise ones only.
        first = trials[members[0]][0].trainer
        same_rows = {name: getattr(first, name) for name in ROW_FIELDS}
        trainers = [
            trials[i][0].trainer.model_copy(update=same_rows) for i in members for _ in trials[i][1]
        ]
        group_config = config.model_copy(update={"trainer": trainers[0]})
        logits, diverged = train_predict(
            task, group_config, rows, strategy, x_eval, trainers=trainers
        )
        sizes = [len(trials[i][1]) for i in members]
        parts = zip(members, logits.split(sizes), diverged.split(sizes), strict=True)
        for i, part, lost in parts:
            outputs[i] = (part, lost)
    return [o for o in outputs if o is not None]


def search(
    task: Task,
    config: Config,
    settings: StabilizeSettings,
    block: list[PlanRow],
    strategy: str,
    url: str | None,
    on_round: Callable[[int, int], None] | None = None,
) -> Any:
    """Run (or go on with) the search on the trial task; the study, every round finished.

    Args:
        task: the trial task (train on fit, score on validation: ``task.x_test``).
        config: the starting config; ``config.trainer`` is what every trial changes.
        settings: the stabilize settings.
        block: the search block of the plan, the rows every trial trains.
        strategy: ``vectorized`` or ``loop``.
        url: the study's storage (None: in memory).
        on_round: called with ``(rounds done, rounds in all)``.
    """
    optuna = require("optuna", "optuna")
    storage = optuna.storages.InMemoryStorage() if url is None else url
    study = open_study(settings, storage, 0)
    for trial in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.RUNNING]):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    finished = len(_asked_trials(study))
    rounds, done = settings.rounds, finished // settings.parallel
    if on_round is not None and done:
        on_round(done, rounds)
    while finished < settings.trials:
        r = finished // settings.parallel
        study = open_study(settings, storage, r)
        wanted = min(settings.parallel * (r + 1), settings.trials) - finished
        finished += _round(task, config, settings, block, strategy, study, r, wanted)
        if on_round is not None:
            on_round(r + 1, rounds)
    return study


def _round(
    task: Task,
    config: Config,
    settings: StabilizeSettings,
    block: list[PlanRow],
    strategy: str,
    study: Any,
    round_: int,
    wanted: int,
) -> int:
    """Ask ``wanted`` trials, train them as one ensemble, tell each its objectives."""
    optuna = require("optuna", "optuna")
    asked = [study.ask() for _ in range(wanted)]
    chosen = chosen_knobs(settings.search)
    trainers = [suggest(t, settings.search, config.trainer) for t in asked]
    trials = [(t, t.rows(block, i * len(block), chosen)) for i, t in enumerate(trainers)]
    outputs = train_trials(task, config, trials, strategy, task.x_test)
    for i, (trial, trainer, (logits, diverged)) in enumerate(
        zip(asked, trainers, outputs, strict=True)
    ):
        s = objectives.scores(logits, task.y_test, settings.spread)
        # By place in the round, not trial number: a resumed search numbers trials on.
        seed = derive_seed("stabilize-bootstrap", settings.seed, round_, i) % 2**32
        error = objectives.error(s, settings.draws, seed, settings.level)
        spread = objectives.spread(s, settings.spread, settings.draws, seed, settings.level)
        knobs = trainer.knobs()
        for name, value in knobs.items():
            trial.set_user_attr(name, value)
        trial.set_user_attr("round", round_)
        trial.set_user_attr("diverged", int(diverged.sum()))
        for name, estimate in (("error", error), ("spread", spread)):
            trial.set_user_attr(f"{name}_low", estimate["low"])
            trial.set_user_attr(f"{name}_high", estimate["high"])
        values = [error["value"], spread["value"]]
        if all(math.isfinite(v) for v in values):
            study.tell(trial, values)
        else:
            trial.set_user_attr("unscored", True)  # counts as asked: resuming skips it
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return wanted


def _asked_trials(study: Any) -> list[Any]:
    """Trials a round asked and scored: finished, or failed with a non-finite objective."""
    optuna = require("optuna", "optuna")
    states = [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]
    trials = study.get_trials(deepcopy=False, states=states)
    return [t for t in trials if t.state == states[0] or t.user_attrs.get("unscored")]


def finished_trials(study: Any) -> list[Any]:
    """The study's complete trials, in order."""
    optuna = require("optuna", "optuna")
    return study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])


def trials_table(study: Any) -> pd.DataFrame:
    """One row per finished trial: number, round, knobs, objectives and their intervals."""
    records = []
    for t in finished_trials(study):
        attrs = t.user_attrs
        records.append(
            {
                "trial": t.number,
                "round": attrs["round"],
                **{name: attrs.get(name) for name in KNOBS},
                "error": t.values[0],
                "error_low": attrs["error_low"],
                "error_high": attrs["error_high"],
                "spread": t.values[1],
                "spread_low": attrs["spread_low"],
                "spread_high": attrs["spread_high"],
                "diverged": attrs["diverged"],
            }
        )
    return pd.DataFrame(records)
