"""The trainer2's search, run from many initial conditions, all studies in lockstep.

A *study* is one Optuna study (TPE by default) started from one initial condition, a
cell of the crossing ``sampler_seed x validation_bootstrap x holdout_group``:

* ``sampler_seed`` seeds the sampler (``TPESampler(seed=...)``);
* ``validation_bootstrap`` ``b`` scores every trial of the study on the ``b``-th
  with-replacement resample of the validation split (stream ``trainer2-validation-
  bootstrap``), ``None`` on the split itself;
* ``holdout_group`` ``g`` leaves the training examples of group ``g`` out of every
  trial's training data (``None``: nothing left out).

A *trial* trains ``trial_members`` members with the asked hyperparameters, member ``k``
with init and data-order seed ``trial_seed(k)`` (common random numbers: every trial of
every study uses the same seeds, so two trials differ only by their hyperparameters and
the study's data). Its value is the mean over members of the (resample-weighted)
validation accuracy, or loss (``objective``); a diverged member counts at its initial
weights. A non-finite value fails the trial (Optuna skips it).

Lockstep: round ``r`` asks every study for its ``r``-th trial (Optuna's ask-and-tell
interface), trains all of them as one ensemble and tells each study its value. Since a
member depends only on its plan row, this gives exactly the trials each study would run
alone, in a fraction of the time (one vectorized pass instead of one per study).

References:
    Bergstra, Bardenet, Bengio & Kégl (2011), "Algorithms for Hyper-Parameter
    Optimization", NeurIPS (TPE); Akiba, Sano, Yanase, Ohta & Koyama (2019), "Optuna: A
    Next-generation Hyperparameter Optimization Framework", KDD.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from attractor.config import Config
from attractor.errors import UserError, require
from attractor.plan import PlanRow
from attractor.seeds import derive_seed, numpy_generator
from attractor.stack.fit import train_predict
from attractor.stack.settings import SearchSpace, Trainer2Settings, fixed_trainer
from attractor.tasks.base import Task, accuracy

HPARAMS = ("lr", "momentum", "weight_decay", "batch_size", "optimizer")
FACTORS = ("sampler_seed", "validation_bootstrap", "holdout_group")


@dataclass(frozen=True)
class InitialCondition:
    """Where one study starts: its sampler seed, validation resample and held-out group."""

    study: int
    sampler_seed: int
    validation_bootstrap: int | None
    holdout_group: int | None


def initial_conditions(settings: Trainer2Settings) -> list[InitialCondition]:
    """The crossing of the three factors, sampler seed slowest, holdout group fastest."""
    cells = itertools.product(settings.seeds, settings.bootstraps, settings.groups)
    return [InitialCondition(i, s, b, g) for i, (s, b, g) in enumerate(cells)]


def trial_seed(k: int) -> int:
    """Init and data-order seed of member ``k`` of every trial (distinct from the final
    ensembles').
    """
    return derive_seed("trainer2-trial", k) % 2**31


def validation_weights(n: int, bootstrap: int | None) -> Tensor:
    """``[n]`` float64 counts of each validation example in resample ``bootstrap`` (ones for
    None).
    """
    if bootstrap is None:
        return torch.ones(n, dtype=torch.float64)
    draw = numpy_generator("trainer2-validation-bootstrap", bootstrap).integers(0, n, size=n)
    return torch.from_numpy(np.bincount(draw, minlength=n).astype(np.float64))


def suggest(trial: Any, space: SearchSpace, fixed: dict[str, Any]) -> dict[str, Any]:
    """Ask ``trial`` for every searched hyperparameter; the rest keep their ``fixed`` value."""
    chosen = dict(fixed)
    chosen["lr"] = trial.suggest_float("lr", *space.lr, log=True)
    if space.momentum is not None:
        chosen["momentum"] = trial.suggest_float("momentum", *space.momentum)
    if space.weight_decay is not None:
        # 0 is not on a log scale: a yes/no choice first, then the (conditional) value.
        use = (
            trial.suggest_categorical("use_weight_decay", [False, True])
            if space.weight_decay_zero
            else True
        )
        chosen["weight_decay"] = (
            trial.suggest_float("weight_decay", *space.weight_decay, log=True) if use else 0.0
        )
    if space.batch_sizes is not None:
        chosen["batch_size"] = int(trial.suggest_categorical("batch_size", list(space.batch_sizes)))
    if space.optimizers is not None:
        chosen["optimizer"] = str(trial.suggest_categorical("optimizer", list(space.optimizers)))
    return chosen


def make_study(settings: Trainer2Settings, seed: int) -> Any:
    """A fresh in-memory Optuna study with a seeded sampler."""
    optuna = require("optuna", "optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if settings.sampler == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=settings.startup_trials)
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed)
    return optuna.create_study(
        direction="maximize" if settings.objective == "accuracy" else "minimize", sampler=sampler
    )


def score(outputs: Tensor, targets: Tensor, weights: Tensor, task: Task, objective: str) -> float:
    """Mean over members of the weighted validation score: ``outputs [m, n, C]``, ``weights
    [n]``.
    """
    y = targets.unsqueeze(0).expand(outputs.shape[0], *targets.shape)
    per_example = (accuracy if objective == "accuracy" else task.loss)(outputs, y).to(
        torch.float64
    )  # [m, n]
    return float((per_example @ weights / weights.sum()).mean())


def run_studies(
    task: Task,
    config: Config,
    settings: Trainer2Settings,
    strategy: str,
    lockstep: bool | None = None,
    on_round: Callable[[int, int], None] | None = None,
) -> tuple[pd.DataFrame, list[Any]]:
    """Run every study's trials on the trial task (training on fit, scoring on validation).

    Args:
        task: the trial task (:func:`attractor.stack.fit.trial_task`).
        config: trainer settings not searched, and ``[run]``.
        settings: the trainer2 settings.
        strategy: ``vectorized`` or ``loop``.
        lockstep: override ``settings.lockstep`` (all studies together, or one after another).
        on_round: called with ``(rounds done, rounds in all)`` after each round.

    Returns:
        ``(trials, studies)``: one row per (study, trial) with the initial condition, the
        hyperparameters, ``value``, ``diverged`` (members) and ``best`` (the study's
        returned trial); and the Optuna studies, in the order of :func:`initial_conditions`.
    """
    require("optuna", "optuna")  # one install hint before any study starts
    conditions = initial_conditions(settings)
    studies = [make_study(settings, c.sampler_seed) for c in conditions]
    weights = {b: validation_weights(len(task.y_test), b) for b in settings.bootstraps}
    lockstep = settings.lockstep if lockstep is None else lockstep
    groups = [conditions] if lockstep else [[c] for c in conditions]
    records: list[dict[str, Any]] = []
    rounds, done = settings.trials * len(groups), 0
    for group in groups:
        for number in range(settings.trials):
            records += _round(task, config, settings, strategy, studies, group, number, weights)
            done += 1
            if on_round is not None:
                on_round(done, rounds)
    return _trials(records, conditions, studies), studies


def _round(
    task: Task,
    config: Config,
    settings: Trainer2Settings,
    strategy: str,
    studies: list[Any],
    group: list[InitialCondition],
    number: int,
    weights: dict[int | None, Tensor],
) -> list[dict[str, Any]]:
    """Trial ``number`` of every study in ``group``: asked, trained together, scored, told."""
    optuna = require("optuna", "optuna")
    fixed = fixed_trainer(config.trainer)
    asked = [(c, studies[c.study].ask()) for c in group]
    chosen = [suggest(trial, settings.search, fixed) for _, trial in asked]
    rows = [
        PlanRow(
            member=i * settings.trial_members + k,
            init_seed=trial_seed(k),
            data_seed=trial_seed(k),
            holdout_group=c.holdout_group,
            **{name: h[name] for name in HPARAMS},
        )
        for i, ((c, _), h) in enumerate(zip(asked, chosen, strict=True))
        for k in range(settings.trial_members)
    ]
    outputs, diverged = train_predict(task, config, rows, strategy, task.x_test)
    records = []
    for i, ((c, trial), h) in enumerate(zip(asked, chosen, strict=True)):
        members = slice(i * settings.trial_members, (i + 1) * settings.trial_members)
        value = score(
            outputs[members], task.y_test, weights[c.validation_bootstrap], task, settings.objective
        )
        if math.isfinite(value):
            studies[c.study].tell(trial, value)
        else:
            studies[c.study].tell(trial, state=optuna.trial.TrialState.FAIL)
        records.append(
            {
                "study": c.study,
                "sampler_seed": c.sampler_seed,
                "validation_bootstrap": c.validation_bootstrap,
                "holdout_group": c.holdout_group,
                "trial": number,
                **h,
                "value": value,
                "diverged": int(diverged[members].sum()),
            }
        )
    return records


def _trials(
    records: list[dict[str, Any]], conditions: list[InitialCondition], studies: list[Any]
) -> pd.DataFrame:
    """The trials' table with each study's returned trial marked ``best``."""
    optuna = require("optuna", "optuna")
    trials = (
        pd.DataFrame(records).sort_values(["study", "trial"], kind="stable").reset_index(drop=True)
    )
    complete = optuna.trial.TrialState.COMPLETE
    for c, study in zip(conditions, studies, strict=True):
        if not any(t.state == complete for t in study.trials):
            raise UserError(
                f"study {c.study} (sampler seed {c.sampler_seed}) has no trial with a finite "
                "validation score; "
                "narrow trainer2.search (e.g. a lower lr range)"
            )
    best = {(s, study.best_trial.number) for s, study in enumerate(studies)}
    trials["best"] = [(s, t) in best for s, t in zip(trials["study"], trials["trial"], strict=True)]
    for name in ("validation_bootstrap", "holdout_group"):
        trials[name] = trials[name].astype("Int64")
    return trials
