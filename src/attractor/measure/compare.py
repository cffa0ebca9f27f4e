"""Two runs on the same examples (e.g. two trainers): which is better, with a paired interval."""

from __future__ import annotations

from typing import Any, Literal

from attractor.errors import UserError
from attractor.measure.bootstrap import paired_multibootstrap
from attractor.measure.function import per_example_loss_accuracy
from attractor.runs.ensemble import Ensemble

Metric = Literal["accuracy", "loss"]


def compare_runs(
    run_a: Ensemble,
    run_b: Ensemble,
    metric: Metric = "accuracy",
    split: Literal["test", "train"] = "test",
    draws: int = 500,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired multi-bootstrap of ``metric``: both scores, ``a - b`` with its interval, and ``p``.

    Both runs must come from the same task (same examples in the same order): examples are
    resampled once per draw for both runs, members of each run independently. ``p`` is the
    share of draws where ``a - b <= 0``.

    References:
        Sellam et al. (2021), "The MultiBERTs: BERT Reproductions for Robustness Analysis".
    """
    if run_a.config.task != run_b.config.task:
        raise UserError(
            f"'{run_a.store.root}' and '{run_b.store.root}' were made from different [task] "
            "sections; "
            "compare runs of the same task, so both are scored on the same examples"
        )
    scores = []
    for run in (run_a, run_b):
        if not run.members:
            raise UserError(f"'{run.store.root}' has no finished members to compare")
        x, y = run.eval_set(split)
        loss, correct = per_example_loss_accuracy(run.predict(x), y)
        scores.append((correct if metric == "accuracy" else loss).numpy())
    estimate = paired_multibootstrap(scores[0], scores[1], draws=draws, seed=seed)
    return {
        "metric": f"{split}_{metric}",
        "run_a": str(run_a.store.root),
        "run_b": str(run_b.store.root),
        "members_a": len(scores[0]),
        "members_b": len(scores[1]),
        **estimate.to_dict(),
    }
