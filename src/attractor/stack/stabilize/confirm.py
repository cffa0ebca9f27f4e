"""The confirmation: the chosen trainer against the starting one, on seeds the search never saw.

Both trainers train the confirmation block of ``[plan]`` (the rows after the search's;
their seeds are checked disjoint from the search's) on the whole training split, and are
scored on the test split, which the search never saw either. Each quantity is the chosen
trainer minus the starting one, with a paired multi-bootstrap interval
(:func:`~attractor.stack.stabilize.objectives.paired`).

The choice *confirms* when the spread's interval lies below 0: the chosen trainer's models
agree more, on fresh seeds and unseen inputs, than the starting trainer's. Otherwise the
verdict says plainly that it did not.
"""

from __future__ import annotations

from typing import Any

from attractor.config import Config
from attractor.errors import UserError
from attractor.plan import PlanRow
from attractor.seeds import derive_seed
from attractor.stack.stabilize import objectives
from attractor.stack.stabilize.settings import StabilizeSettings
from attractor.stack.stabilize.space import TrialTrainer, chosen_knobs
from attractor.stack.stabilize.study import train_trials
from attractor.tasks.base import Task

#: Plan columns that make a member's randomness: the seeds and what the data is made of.
RANDOMNESS = ("init_seed", "data_seed", "noise_seed", "bootstrap", "holdout_group")


def seed_keys(rows: list[PlanRow], vary: list[str]) -> set[tuple[Any, ...]]:
    """The varied random factors of each row, as tuples (what must not repeat)."""
    names = [n for n in RANDOMNESS if n in vary]
    return {tuple(getattr(r, n) for n in names) for r in rows}


def check_disjoint(search: list[PlanRow], confirm: list[PlanRow], vary: list[str]) -> None:
    """Refuse a confirmation block that repeats a search row's seeds (one line)."""
    if not any(n in vary for n in RANDOMNESS):
        raise UserError(
            "[plan] varies no seed, so the confirmation could not use fresh seeds; vary at "
            'least one of them, e.g. [plan] vary = ["init_seed", "data_seed"]'
        )
    shared = seed_keys(search, vary) & seed_keys(confirm, vary)
    if shared:
        raise UserError(
            f"[plan] gives the search and the confirmation the same seeds {sorted(shared)[0]}; "
            "let the plan draw its seeds (no [plan.levels] for seed factors) or give more levels"
        )


def confirm(
    task: Task,
    config: Config,
    settings: StabilizeSettings,
    start: TrialTrainer,
    chosen: TrialTrainer,
    block: list[PlanRow],
    strategy: str,
) -> dict[str, Any]:
    """Train both trainers on ``block`` and compare them on the test split.

    Returns:
        ``{"error": ..., "spread": ..., "confirmed": bool, "verdict": str}`` where error and
        spread are paired estimates of chosen (``a``) minus start (``b``).
    """
    searched = chosen_knobs(settings.search)
    trials = [
        (chosen, chosen.rows(block, 0, searched)),
        (start, start.rows(block, len(block), [])),
    ]
    (a, _), (b, _) = train_trials(task, config, trials, strategy, task.x_test)
    sa, sb = (objectives.scores(x, task.y_test, settings.spread) for x in (a, b))
    seed = derive_seed("stabilize-confirm", settings.seed) % 2**32
    compared = objectives.paired(sa, sb, settings.spread, settings.draws, seed, settings.level)
    spread, error = compared["spread"], compared["error"]
    confirmed = bool(spread["high"] < 0)
    return {**compared, "confirmed": confirmed, "verdict": verdict(settings, spread, error)}


def verdict(settings: StabilizeSettings, spread: dict[str, Any], error: dict[str, Any]) -> str:
    """One sentence: did the chosen trainer's spread drop on fresh seeds, and at what cost."""
    pct = round(100 * settings.level)
    cost = (
        f"error {error['a']:.3g} vs {error['b']:.3g} (difference {error['difference']:+.3g}, "
        f"{pct}% interval [{error['low']:+.3g}, {error['high']:+.3g}])"
    )
    change = (
        f"{settings.spread} {spread['a']:.3g} vs {spread['b']:.3g} (difference "
        f"{spread['difference']:+.3g}, {pct}% interval [{spread['low']:+.3g}, "
        f"{spread['high']:+.3g}])"
    )
    if spread["high"] < 0:
        return f"confirmed on fresh seeds: the chosen trainer spreads less, {change}; {cost}"
    if spread["low"] > 0:
        return f"not confirmed: on fresh seeds the chosen trainer spreads MORE, {change}; {cost}"
    return (
        f"not confirmed: on fresh seeds the chosen trainer's spread is not lower with "
        f"{pct}% confidence, {change}; {cost}"
    )
