"""``attractor stabilize CONFIG --out DIR``: search for the trainer whose runs land in one basin.

The loop (the specification)::

    rows = [plan]'s rows: the first `members` for the search, the next `confirm_members` to
           confirm on (seeds checked disjoint)
    fit, validation = a seeded split of the training split
    for round r:                                          # parallel trials per round
        trainers = the study's sampler asks `parallel` trainers (settings + interventions)
        train every trainer x every search row as one ensemble on fit
        tell each trial (error, spread) on validation, with bootstrap intervals
    front = trials no other beats on both; chosen = the least spread within tolerance of
            the best error
    confirm: chosen vs [trainer] on the confirmation rows, whole training split, test split,
             paired multi-bootstrap; says plainly when the choice does not hold
    importance: which setting moved the spread over the trials (fANOVA)

The study is kept in ``DIR/stabilize.db`` (SQLite): a killed search reopened with the same
settings goes on where it stopped.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from attractor.config import Config, TrainerConfig
from attractor.errors import UserError, require
from attractor.experiments import Experiment, run_experiment
from attractor.plan import PlanRow, build_plan
from attractor.runs.launch import resolve_strategy
from attractor.runs.progress import Progress, Stages
from attractor.runs.results import Result
from attractor.runs.store import RunStore
from attractor.stack.fit import trial_task, validation_split
from attractor.stack.stabilize import choice
from attractor.stack.stabilize.confirm import RANDOMNESS, check_disjoint, confirm
from attractor.stack.stabilize.result import StabilizeResult
from attractor.stack.stabilize.settings import StabilizeSettings
from attractor.stack.stabilize.space import KNOBS, TrialTrainer, chosen_knobs
from attractor.stack.stabilize.study import search, storage_url, trials_table
from attractor.tasks import build_task
from attractor.tasks.base import Task

#: The study's file in the experiment directory (listed among what attractor writes).
STUDY_FILE = "stabilize.db"


class StabilizeRun(BaseModel):
    """What ``attractor stabilize`` runs: the starting config and the stabilize settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: Config = Field(
        description="[task], [trainer] (the starting trainer), [plan] (what members differ "
        "in; search rows first, then confirmation rows) and [run]."
    )
    stabilize: StabilizeSettings = Field(description="The search, the choice, the confirmation.")


def blocks(config: Config, settings: StabilizeSettings, task: Task) -> tuple[list[PlanRow], ...]:
    """``(search, confirm)`` rows of the plan, refused (one line) if their seeds overlap."""
    rows = build_plan(config.plan, config.trainer, task.group_ids).rows()
    search_rows = rows[: settings.members]
    confirm_rows = rows[settings.members : settings.members + settings.confirm_members]
    check_disjoint(search_rows, confirm_rows, config.plan.vary)
    return search_rows, confirm_rows


def stabilize(
    config: Config,
    settings: StabilizeSettings,
    out: str | Path | None = None,
    *,
    progress: bool = False,
) -> StabilizeResult:
    """Search, choose and confirm (the module docstring); ``out``: where the study is kept
    (``out/stabilize.db``; None: in memory, nothing written).
    """
    require("optuna", "optuna")
    check(StabilizeRun(config=config, stabilize=settings))
    threads = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        with Stages("stabilize", 3, progress) as stages:
            return _stabilize(config, settings, out, stages)
    finally:
        torch.set_num_threads(threads)


def _stabilize(
    config: Config, settings: StabilizeSettings, out: str | Path | None, stages: Stages
) -> StabilizeResult:
    started = time.perf_counter()
    task = build_task(config.task)
    strategy = resolve_strategy(config, task)
    search_rows, confirm_rows = blocks(config, settings, task)
    fit, val = validation_split(task.n_train, settings.validation_fraction, settings.split_seed)
    url = None if out is None else storage_url(Path(out) / STUDY_FILE)

    stages.begin(
        f"search: {settings.trials} trials x {settings.members} members, "
        f"{settings.parallel} trials per round ({settings.sampler})"
    )
    label = f"searching: {settings.rounds} rounds"
    with Progress(settings.rounds, stages.enabled, label, name="search", unit="rounds") as bar:
        seen = [0]

        def advanced(done: int, rounds: int) -> None:
            bar.advance(done - seen[0])
            seen[0] = done

        study = search(
            trial_task(task, fit, val), config, settings, search_rows, strategy, url, advanced
        )
    searched = time.perf_counter()

    trials = trials_table(study)
    trials["pareto"] = choice.pareto(trials["error"].to_numpy(), trials["spread"].to_numpy())
    picked = choice.choose(trials, settings.tolerance)
    trials["chosen"] = trials.index == picked
    best = trials.loc[picked]
    chosen_trainer = study.trials[int(best["trial"])]
    chosen = TrialTrainer(
        TrainerConfig.model_validate(
            config.trainer.model_dump() | {k: chosen_trainer.user_attrs[k] for k in KNOBS}
        )
    )

    stages.begin(
        f"confirmation: the chosen trainer and [trainer] on {settings.confirm_members} fresh "
        "seeds, test split"
    )
    start = TrialTrainer(config.trainer)
    confirmation = confirm(task, config, settings, start, chosen, confirm_rows, strategy)
    confirmed_at = time.perf_counter()

    stages.begin("which setting moved the spread")
    importance = choice.importance(trials, chosen_knobs(settings.search), settings.seed)
    return StabilizeResult(
        config=config.resolved(),
        settings=settings.model_dump(mode="json"),
        trials=trials,
        importance=importance,
        chosen={
            "trial": int(best["trial"]),
            "knobs": chosen.knobs(),
            **{k: float(best[k]) for k in _OBJECTIVE_COLUMNS},
            "trainer": chosen.trainer.model_dump(mode="json"),
        },
        start={**start.knobs()},
        confirmation=confirmation,
        seeds=_seeds(search_rows, confirm_rows),
        validation={
            "n_fit": len(fit),
            "n_validation": len(val),
            "fraction": settings.validation_fraction,
            "seed": settings.split_seed,
            "strategy": strategy,
        },
        timings={
            "search_s": round(searched - started, 3),
            "confirm_s": round(confirmed_at - searched, 3),
            "importance_s": round(time.perf_counter() - confirmed_at, 3),
        },
        out=None if out is None else Path(out),
    )


_OBJECTIVE_COLUMNS = ("error", "error_low", "error_high", "spread", "spread_low", "spread_high")


def _seeds(search_rows: list[PlanRow], confirm_rows: list[PlanRow]) -> pd.DataFrame:
    """The rows of both blocks and their random factors."""
    return pd.DataFrame(
        [
            {"block": block, "member": r.member, **{n: getattr(r, n) for n in RANDOMNESS}}
            for block, rows in (("search", search_rows), ("confirm", confirm_rows))
            for r in rows
        ]
    ).astype({"bootstrap": "Int64", "holdout_group": "Int64"})


def check(run: StabilizeRun) -> None:
    """Refuse, before anything is written, what cannot run (one line each)."""
    run.stabilize.check(run.config)
    task = build_task(run.config.task)
    if task.num_classes is None:
        raise UserError(
            f"stabilize measures spread by the class probabilities of the models, but task "
            f"'{task.name}' has no classes; use a classification task"
        )
    blocks(run.config, run.stabilize, task)


def run(settings: StabilizeRun, store: RunStore, progress: bool = False) -> list[Result]:
    """The search (kept in ``DIR/stabilize.db``), the choice and the confirmation."""
    return [stabilize(settings.config, settings.stabilize, store.root, progress=progress)]


def run_stabilize(
    config: Config,
    settings: StabilizeSettings,
    out: str | Path,
    force: bool = False,
    progress: bool = False,
) -> StabilizeResult:
    """Run the ``stabilize`` experiment in directory ``out``; its result."""
    both = StabilizeRun(config=config, stabilize=settings)
    _, results = run_experiment("stabilize", both, out, force=force, progress=progress)
    result = results[0]
    assert isinstance(result, StabilizeResult)
    return result


EXPERIMENT = Experiment(
    name="stabilize",
    settings=StabilizeRun,
    run=run,
    summary="search for the trainer whose runs spread least, and confirm it on fresh seeds",
    check=check,
)

__all__: list[Any] = ["EXPERIMENT", "StabilizeResult", "StabilizeRun", "run_stabilize", "stabilize"]
