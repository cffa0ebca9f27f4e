"""Influence of single training examples: members that trained on one against those that did not.

Plans whose members train on different pools (``bootstrap`` and / or ``holdout_group``):
for example ``i``, the members whose pool holds it and those whose pool does not are
compared on their distance to the ensemble mean, ``KL(p_m || mean p)`` on the evaluation
split: ``effect = mean(without) - mean(with)`` and Welch's ``t``. With a bootstrap each
example is out of about 37 % of the pools, so this needs many members; with few, the top
of a ranking over thousands of examples is mostly noise (read ``t`` and the member
counts).

Diverged members take their step-0 predictions (see ``_outcomes``).

References:
    Koh & Liang (2017), "Understanding Black-box Predictions via Influence Functions"
    (influence of training data).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from attractor.measure.function import probabilities
from attractor.runs.ensemble import Ensemble
from attractor.sensitivity._outcomes import check_finished, member_logits

__all__ = ["example_effects", "example_influence"]


def example_effects(counts: np.ndarray, distance: np.ndarray) -> pd.DataFrame:
    """Per training example, how the members that trained on it differ in distance to the ensemble
    mean.

    Args:
        counts: ``[members, n_train]`` copies of each training example in each member's pool
            (bootstrap multiplicity; 0 = held out or not drawn).
        distance: ``[members]`` each member's ``KL(p_i || mean p)`` on the evaluation split.

    Returns:
        One row per training example with at least 2 members on each side: ``example,
        members_with, members_without, distance_with, distance_without, effect`` (=
        without - with: positive when training on it pulls a member towards the consensus)
        and Welch's ``t`` of that difference (NaN when both sides are constant).
    """
    seen = np.asarray(counts) > 0
    d = np.asarray(distance, dtype=np.float64)[:, None]
    n_with, n_without = seen.sum(0), (~seen).sum(0)
    ok = (n_with >= 2) & (n_without >= 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_with = (seen * d).sum(0) / n_with
        mean_without = (~seen * d).sum(0) / n_without
        var_with = (seen * (d - mean_with) ** 2).sum(0) / (n_with - 1)
        var_without = (~seen * (d - mean_without) ** 2).sum(0) / (n_without - 1)
        effect = mean_without - mean_with
        t = effect / np.sqrt(var_with / n_with + var_without / n_without)
    index = np.flatnonzero(ok)
    return pd.DataFrame(
        {
            "example": index,
            "members_with": n_with[index],
            "members_without": n_without[index],
            "distance_with": mean_with[index],
            "distance_without": mean_without[index],
            "effect": effect[index],
            "t": np.where(np.isfinite(t[index]), t[index], np.nan),
        }
    )


def example_influence(ens: Ensemble, split: str = "test") -> pd.DataFrame:
    """:func:`example_effects` of a trained run whose members train on different pools (bootstrap /
    holdout).

    Each member's pool is rebuilt from its plan row (:func:`attractor.training.data.member_pool`);
    the distance is its KL to the ensemble mean on ``split`` (diverged members at init).
    """
    from attractor.measure.function import kl_to_mean
    from attractor.plan import Plan
    from attractor.training.data import member_pool

    plan = check_finished(ens)
    task = ens.task
    counts = np.stack(
        [
            np.bincount(member_pool(task, row).numpy(), minlength=task.n_train)
            for row in Plan(plan).rows()
        ]
    )
    distance = kl_to_mean(probabilities(member_logits(ens, ens.eval_set(split)[0]))).numpy()
    return example_effects(counts, distance)
