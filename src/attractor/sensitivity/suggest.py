"""Active-learning suggestions: which examples and data groups a human should look at next.

Two rankings, each row with a score and a one-line reason:

* **examples** of a pool (default: the task's test split, read as unlabelled) ranked by
  the ensemble's mutual information ``I(y; member) = H(mean_i p_i) - mean_i H(p_i)``
  (nats): the BALD score, high where members are individually confident but disagree,
  i.e. where a label would most reduce the spread between members. Diverged members
  enter with their step-0 predictions.
* **groups** of training data (plans that vary ``holdout_group``) ranked by ``|spread
  change|`` when held out (:mod:`attractor.sensitivity.influence`); the reason also
  gives the move of test accuracy with its multi-bootstrap interval.
* **training examples** (plans that vary ``bootstrap``) ranked by ``|t|`` of the
  difference in distance to the ensemble mean between members that trained on the
  example and members that did not
  (:func:`~attractor.sensitivity.training_examples.example_effects`), only those with
  ``|t| >= 2``: noisy with few members, as its docstring says.

References:
    Houlsby, Huszár, Ghahramani & Lengyel (2011), "Bayesian Active Learning for
    Classification and Preference Learning" (BALD); Gal, Islam & Ghahramani (2017),
    "Deep Bayesian Active Learning with Image Data".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from attractor.errors import UserError
from attractor.measure.function import mutual_information, probabilities
from attractor.runs.ensemble import Ensemble
from attractor.runs.results import strict_json
from attractor.sensitivity._outcomes import check_finished, member_logits

COLUMNS = ["rank", "kind", "id", "score", "unit", "reason"]


@dataclass(frozen=True, eq=False)
class Suggestions:
    """Top rows to look at next.

    Attributes:
        rows: ``rank`` (1 = first, per kind), ``kind`` (``"group"``, ``"training_example"``
            or ``"example"``), ``id`` (group id, index into the training split, or index
            into the pool), ``score``, ``unit`` and ``reason``; in that order of kinds.
        pool: which inputs the examples index (``"test"``, ``"train"`` or ``"given"``).
        k: rows asked for per kind; members: members whose predictions were used.
    """

    rows: pd.DataFrame
    pool: str
    k: int
    members: int

    kind: ClassVar[str] = "suggestions"
    schema: ClassVar[int] = 1

    @property
    def name(self) -> str:
        return "suggestions"

    def to_json(self) -> dict[str, Any]:
        return self.to_dict()

    def to_tables(self) -> dict[str, pd.DataFrame]:
        return {"": self.rows}

    def to_dict(self) -> dict[str, Any]:
        rows = strict_json(self.rows)
        return {"pool": self.pool, "k": self.k, "members": self.members, "rows": rows}


def rank_examples(probs: Tensor, k: int) -> pd.DataFrame:
    """Top ``k`` examples of ``probs [members, n, classes]`` by mutual information (BALD)."""
    if probs.shape[0] < 2:
        raise UserError("ranking by disagreement needs at least 2 members")
    p = probs.to(torch.float64)
    info = mutual_information(p, per_example=True).numpy()  # [n]
    mean = p.mean(0)  # [n, C]
    votes = p.argmax(-1)  # [m, n]
    order = np.argsort(-info, kind="stable")[:k]
    rows = []
    for rank, i in enumerate(order, start=1):
        top = int(mean[i].argmax())
        classes = len(torch.unique(votes[:, i]))
        reason = (
            f"members disagree most (MI {info[i]:.2f} nats): {classes} different predicted "
            "classes, "
            f"mean prediction {top} at {float(mean[i, top]):.0%}"
        )
        rows.append(
            {
                "rank": rank,
                "kind": "example",
                "id": int(i),
                "score": float(info[i]),
                "unit": "nats",
                "reason": reason,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def rank_groups(influence: pd.DataFrame, k: int, split: str = "test") -> pd.DataFrame:
    """Top ``k`` groups of an influence table (:class:`GroupInfluence.table`) by |spread change|.

    Without a spread (fewer than 2 members per side) groups are ranked by |accuracy effect|.
    """
    table = influence.copy()
    has_spread = "spread_change" in table and table["spread_change"].notna().any()
    key = "spread_change" if has_spread else "accuracy_effect"
    # Groups without a spread (one member held it out) come after, by |accuracy effect|.
    table = table.assign(_score=table[key].abs(), _accuracy=table["accuracy_effect"].abs())
    table = table.sort_values(
        ["_score", "_accuracy"], ascending=False, na_position="last", kind="stable"
    ).head(k)
    rows = []
    for rank, row in enumerate(table.itertuples(index=False), start=1):
        reason = (
            f"holding out group {row.group} moves {split} accuracy by "
            f"{100 * row.accuracy_effect:+.1f} % "
            f"[{100 * row.accuracy_low:+.1f}, {100 * row.accuracy_high:+.1f}]"
        )
        if has_spread and not math.isnan(row.spread_change):
            reason += f" and the spread (mean pairwise JS) by {row.spread_change:+.3g} nats"
        rows.append(
            {
                "rank": rank,
                "kind": "group",
                "id": int(row.group),
                "score": float(getattr(row, key)),
                "unit": "nats (JS)" if has_spread else "accuracy",
                "reason": reason,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def rank_training_examples(effects: pd.DataFrame, k: int, min_t: float = 2.0) -> pd.DataFrame:
    """Top ``k`` training examples of an
    :func:`~attractor.sensitivity.training_examples.example_effects` table by |t|.

    Only examples with ``|t| >= min_t`` are listed: with few members most differences are
    noise, and an empty list says so better than a ranking of ties.
    """
    table = effects.assign(_score=effects["t"].abs())
    table = (
        table[table["_score"] >= min_t]
        .sort_values("_score", ascending=False, kind="stable")
        .head(k)
    )
    rows = []
    for rank, row in enumerate(table.itertuples(index=False), start=1):
        way = "closer to" if row.effect >= 0 else "farther from"
        reason = (
            f"members that trained on it are {abs(row.effect):.3g} nats {way} the ensemble mean "
            f"(t = {row.t:.1f}; {row.members_with} with, {row.members_without} without)"
        )
        rows.append(
            {
                "rank": rank,
                "kind": "training_example",
                "id": int(row.example),
                "score": float(row.t),
                "unit": "t",
                "reason": reason,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def suggest(
    ens: Ensemble,
    k: int = 20,
    pool: str = "test",
    x: Tensor | None = None,
    draws: int = 500,
    seed: int = 0,
) -> Suggestions:
    """The ``k`` examples and ``k`` groups whose labels / data would most reduce the spread.

    Args:
        ens: a finished :class:`~attractor.runs.ensemble.Ensemble` (2 members or more).
        k: rows per kind (at least 1).
        pool: ``"test"`` or ``"train"`` split of the task as the pool of examples; ignored if ``x``
        is given.
        x: ``[n, ...]`` inputs of an unlabelled pool (overrides ``pool``).
        draws, seed: bootstrap settings of the group influence (when the plan varies
        ``holdout_group``).
    """
    if k < 1:
        raise UserError(f"k must be at least 1, got {k}")
    if x is None and pool not in ("test", "train"):
        raise UserError(f"pool must be 'test' or 'train', got {pool!r}")
    plan = check_finished(ens)
    inputs = ens.eval_set(pool)[0] if x is None else x
    parts = []
    if plan["holdout_group"].notna().any():
        from attractor.sensitivity.influence import group_influence

        parts.append(rank_groups(group_influence(ens, draws=draws, seed=seed).table, k))
    if plan["bootstrap"].nunique() > 1:  # members saw different training examples
        from attractor.sensitivity.training_examples import example_influence

        parts.append(rank_training_examples(example_influence(ens), k))
    parts.append(rank_examples(probabilities(member_logits(ens, inputs)), k))
    rows = pd.concat([p for p in parts if len(p)], ignore_index=True)
    return Suggestions(rows, "given" if x is not None else pool, k, len(plan))


def write_suggestions(ens: Ensemble, result: Suggestions) -> dict[str, str]:
    """``RUN/suggestions.parquet`` (the rows) and ``RUN/suggestions.json`` (everything)."""
    return ens.store.write(result)
