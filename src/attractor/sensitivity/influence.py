"""Leave-group-out influence: how much each group of training data moves the outcome and spread.

A plan that varies ``holdout_group`` trains each member without one group of training
examples (``None``: with all data). For group ``g`` let ``M_g`` be the members trained
without it and ``R_g`` the reference members:

* the members with ``holdout_group = None`` (all data) when the plan has any, or a
  separate reference ensemble trained on all data when one is given;
* otherwise every member that held out *another* group (leave-one-group-out contrast:
  "without g" against "without some other group", the usual jackknife comparison when
  no member saw all the data).

Definitions, per group and on the evaluation split:

* **effect** on an outcome = ``mean_{i in M_g} score_i - mean_{j in R_g} score_j``,
  ``score`` = test accuracy (share, not %) or test loss (nats) per member, averaged over
  examples. Interval: the paired multi-bootstrap
  (:func:`attractor.measure.bootstrap.paired_multibootstrap`): examples resampled once for
  both sides, members of each side independently, so seed noise is inside the interval.
  ``p`` is the share of draws with effect <= 0.
* **spread** = mean pairwise Jensen-Shannon divergence (nats) between members of ``M_g``
  (``spread_without``) and of ``R_g`` (``spread_with``), each with its own multi-bootstrap
  interval over members and examples (:func:`pairwise_multibootstrap`); NaN when a side has
  fewer than 2 members. ``spread_change = spread_without - spread_with`` is a point value:
  the two intervals are separate, not an interval of the difference.

Single training examples: :mod:`attractor.sensitivity.training_examples`.

Diverged members take their step-0 predictions (see ``_outcomes``).

References:
    Koh & Liang (2017), "Understanding Black-box Predictions via Influence Functions"
    (influence of training data); Sellam et al. (2021), MultiBERTs (the multi-bootstrap).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from attractor.errors import UserError
from attractor.measure.bootstrap import paired_multibootstrap, pairwise_multibootstrap
from attractor.measure.function import pairwise_js, per_example_loss_accuracy, probabilities
from attractor.runs.ensemble import Ensemble
from attractor.runs.results import strict_json
from attractor.sensitivity._outcomes import check_finished, diverged_count, member_logits


@dataclass(frozen=True, eq=False)
class GroupInfluence:
    """Leave-group-out effects of each held-out group.

    Attributes:
        table: one row per group: ``group, members, reference, reference_members``,
            per outcome ``O`` in (accuracy, loss): ``O_without, O_with, O_effect, O_low,
            O_high, O_p``; ``spread_without`` / ``_low`` / ``_high``, ``spread_with`` /
            ``_low`` / ``_high``, ``spread_change`` (see the module docstring).
        reference: ``"all-data members"``, ``"reference ensemble"`` or ``"other groups"``.
        members, diverged: plan rows, and how many diverged (taken at init).
        split, draws, level, seed: evaluation split and bootstrap settings.
    """

    table: pd.DataFrame
    reference: str
    members: int
    diverged: int
    split: str
    draws: int
    level: float
    seed: int

    kind: ClassVar[str] = "sensitivity-influence"
    schema: ClassVar[int] = 1

    @property
    def name(self) -> str:
        return "sensitivity-influence"

    def to_json(self) -> dict[str, Any]:
        return self.to_dict()

    def to_tables(self) -> dict[str, pd.DataFrame]:
        return {"": self.table}

    def to_dict(self) -> dict[str, Any]:
        rows = strict_json(self.table)
        return {
            "reference": self.reference,
            "members": self.members,
            "diverged": self.diverged,
            "split": self.split,
            "draws": self.draws,
            "level": self.level,
            "seed": self.seed,
            "table": rows,
        }


def group_effects(
    groups: Any,
    scores: dict[str, Any],
    probs: torch.Tensor | None = None,
    reference_scores: dict[str, Any] | None = None,
    reference_probs: torch.Tensor | None = None,
    draws: int = 500,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[pd.DataFrame, str]:
    """Effects of each held-out group from per-member, per-example scores (the pure core).

    Args:
        groups: ``[members]`` held-out group per member, ``None`` / NaN = all data.
        scores: name -> ``[members, examples]`` per-example scores (e.g. correctness, loss).
        probs: ``[members, examples, classes]`` probabilities for the spread (None: no spread).
        reference_scores, reference_probs: a separate all-data ensemble (overrides the None rows).
        draws, seed, level: bootstrap settings.

    Returns:
        ``(table, reference)`` as in :class:`GroupInfluence`.
    """
    labels = pd.Series(list(groups), dtype="object")
    held = labels.notna().to_numpy()
    codes = np.array([int(g) if h else -1 for g, h in zip(labels, held, strict=True)])
    ids = sorted({int(c) for c in codes[held]})
    reference = _reference_kind(held, ids, reference_scores is not None)
    js = pairwise_js(probs, per_example=True) if probs is not None else None
    ref_js = pairwise_js(reference_probs, per_example=True) if reference_probs is not None else None
    rows = []
    for g in ids:
        without = held & (codes == g)
        # None: the other side is the separate reference ensemble.
        ref = (
            None
            if reference_scores is not None
            else (~held if reference == "all-data members" else held & ~without)
        )
        row: dict[str, Any] = {
            "group": g,
            "members": int(without.sum()),
            "reference_members": int(
                len(next(iter(reference_scores.values()))) if ref is None else ref.sum()
            ),
        }
        for name, values in scores.items():
            a = np.asarray(values, dtype=np.float64)[without]
            b = (
                np.asarray(reference_scores[name], dtype=np.float64)
                if ref is None
                else np.asarray(values, dtype=np.float64)[ref]
            )
            row.update(_effect_columns(name, a, b, draws, seed, level))
        if js is not None:
            outer_js = ref_js if ref is None else js[np.ix_(ref, ref)]
            row.update(_spread_columns(js[np.ix_(without, without)], outer_js, draws, seed, level))
        rows.append(row)
    return pd.DataFrame(rows), reference


def _reference_kind(held: np.ndarray, ids: list[int], given: bool) -> str:
    """What each group is compared with (see the module docstring); refuses a plan with none."""
    if not ids:
        raise UserError(
            "no member held out a group: the plan must vary holdout_group (vary = "
            '["holdout_group", ...])'
        )
    if given:
        return "reference ensemble"
    if (~held).any():
        return "all-data members"
    if len(ids) >= 2:
        return "other groups"
    raise UserError(
        "one held-out group and no all-data member: nothing to compare with; give a reference "
        "ensemble"
    )


def _effect_columns(
    name: str, a: np.ndarray, b: np.ndarray, draws: int, seed: int, level: float
) -> dict[str, float]:
    """``name_without, _with, _effect, _low, _high, _p`` of scores ``a`` (without) vs ``b``."""
    est = paired_multibootstrap(a, b, draws=draws, seed=seed, level=level)
    return {
        f"{name}_without": est.a,
        f"{name}_with": est.b,
        f"{name}_effect": est.difference,
        f"{name}_low": est.low,
        f"{name}_high": est.high,
        f"{name}_p": est.p,
    }


def _spread_columns(
    inner_js: torch.Tensor, outer_js: torch.Tensor | None, draws: int, seed: int, level: float
) -> dict[str, float]:
    """``spread_without`` / ``spread_with`` with their intervals, and ``spread_change``."""
    inner = _spread(inner_js, draws, seed, level)
    outer = _spread(outer_js, draws, seed, level)
    return {
        "spread_without": inner[0],
        "spread_without_low": inner[1],
        "spread_without_high": inner[2],
        "spread_with": outer[0],
        "spread_with_low": outer[1],
        "spread_with_high": outer[2],
        "spread_change": inner[0] - outer[0],
    }


def group_influence(
    ens: Ensemble,
    reference: Ensemble | None = None,
    split: str = "test",
    draws: int = 500,
    seed: int = 0,
    level: float = 0.95,
) -> GroupInfluence:
    """Leave-group-out influence of each held-out group of a trained plan.

    Args:
        ens: a finished :class:`~attractor.runs.ensemble.Ensemble` whose plan varies
        ``holdout_group``.
        reference: optional ensemble of the same task trained on all data (the ``with`` side).
        split: evaluation split; draws, seed, level: bootstrap settings.
    """
    plan = check_finished(ens)
    x, y = ens.eval_set(split)
    scores, probs = _scores(member_logits(ens, x), y)
    ref_scores = ref_probs = None
    if reference is not None:
        ref_scores, ref_probs = _scores(member_logits(reference, x), y)
    table, kind = group_effects(
        plan["holdout_group"], scores, probs, ref_scores, ref_probs, draws, seed, level
    )
    return GroupInfluence(table, kind, len(plan), diverged_count(ens), split, draws, level, seed)


def write_influence(ens: Ensemble, result: GroupInfluence) -> dict[str, str]:
    """``RUN/sensitivity-influence.parquet`` (the table) and ``.json`` (everything)."""
    return ens.store.write(result)


def _scores(logits: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, np.ndarray], torch.Tensor]:
    loss, correct = per_example_loss_accuracy(logits, y)
    return {"accuracy": correct.numpy(), "loss": loss.numpy()}, probabilities(logits)


def _spread(
    js: torch.Tensor | None, draws: int, seed: int, level: float
) -> tuple[float, float, float]:
    """Mean pairwise JS of ``js [m, m, examples]`` with its interval; NaN below 2 members."""
    if js is None or js.shape[0] < 2:
        return (np.nan, np.nan, np.nan)
    est = pairwise_multibootstrap(js, draws=draws, seed=seed, level=level)
    return est.value, est.low, est.high
