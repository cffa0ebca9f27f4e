"""Variance components: which discrete factor of a crossed plan drives the spread of an outcome.

On a balanced crossed plan (every combination of the factors' levels present ``r >= 1``
times, e.g. a ``factorial`` plan over ``init_seed`` x ``data_seed`` x ``bootstrap``
levels) the outcome ``y`` of a member is decomposed as in the full factorial ANOVA:

    y = mu + sum over non-empty subsets S of the factors of effect_S + residual,

``effect_S`` being the inclusion-exclusion of marginal means (main effects, two-way
interactions, ...). Two estimators are reported per effect, both exact for the table:

* ``ss_share`` = ``SS_S / SS_total`` (eta squared). The effects are orthogonal in a
  balanced design, so the shares (residual included) sum to 1 exactly. Descriptive: it
  counts the levels that happened to be drawn, and noise alone gives a main effect of
  ``df_S / df_total`` in expectation.
* ``component`` = the ANOVA (method-of-moments, Henderson method I) estimate of the
  random-effects variance component ``sigma^2_S``, solving the balanced all-random
  expected mean squares ``E[MS_S] = sigma^2_e + sum_{T ⊇ S} c_T sigma^2_T`` with
  ``c_T = N / prod_{f in T} L_f`` from the highest interaction down, then **clipped at
  0**; ``share`` = component / sum of clipped components (sums to 1 unless all are 0).
  This is the variance a fresh draw of the factor adds: seeds are random effects.
  With one member per cell (``r = 1``) the residual cannot be separated from the highest
  interaction; that row is flagged ``with_residual`` and the residual row is 0.

A factor whose value is distinct on every row (a drawn seed) is not crossed: it is the
replicate index, and its variance is the residual. Levelled trainer factors (lr,
momentum levels of a factorial plan) are fixed, not random: read their ``ss_share``;
their ``component`` is the variance among the chosen levels, not of a population.

Per-example outcomes (``[members, examples]``, e.g. the probability of the true class):
sums of squares and unclipped components are computed per example, summed (SS) or
averaged (components) over examples, then clipped and normalised: the share of the
per-example prediction variance due to each factor, averaged over examples.

Intervals: the pigeonhole bootstrap for crossed random effects (Owen 2007): each draw
resamples the levels of every factor independently and the examples, and the replicates
within each cell, all with replacement, and recomputes the shares; percentile intervals.
They are approximate: a level drawn twice adds no variance, so draws lean towards
smaller components, and with 2 or 3 levels per factor (or replicates) the intervals are
wide and coarse, and for small interactions the point estimate can even fall outside
its interval. Read them as a warning sign only below about 5 levels per factor: the
sums of squares and shares themselves are exact for the table; more levels narrow the
intervals.

References:
    Searle, Casella & McCulloch (1992), "Variance Components", ch. 4 (balanced ANOVA
    estimators); Owen (2007), "The pigeonhole bootstrap", Ann. Appl. Stat. 1(2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from attractor.config import FACTORS
from attractor.runs.ensemble import Ensemble
from attractor.runs.results import strict_json
from attractor.sensitivity._outcomes import OUTCOMES, check_finished, diverged_count, outcome_values
from attractor.sensitivity.anova import anova, normalised, pigeonhole, ratio, subsets, to_cube

RESIDUAL = "residual"


@dataclass(frozen=True, eq=False)
class VarianceComponents:
    """Variance decomposition of each outcome over the crossed factors of a plan.

    Attributes:
        factors: the crossed factors, in the order of the effect names.
        levels: factor -> number of levels.
        replicates: members per cell.
        table: one row per (outcome, effect): ``outcome, effect, order`` (0 = residual),
            ``df, ss, ms, ss_share, ss_share_low, ss_share_high, component, share,
            share_low, share_high, with_residual`` (see the module docstring).
        members: plan rows used; diverged: how many of them diverged (taken at init).
        draws, level, seed: bootstrap settings.
    """

    factors: list[str]
    levels: dict[str, int]
    replicates: int
    table: pd.DataFrame
    members: int
    diverged: int
    draws: int
    level: float
    seed: int

    kind: ClassVar[str] = "sensitivity-variance"
    schema: ClassVar[int] = 1

    @property
    def name(self) -> str:
        return "sensitivity-variance"

    def to_json(self) -> dict[str, Any]:
        return self.to_dict()

    def to_tables(self) -> dict[str, pd.DataFrame]:
        return {"": self.table}

    def to_dict(self) -> dict[str, Any]:
        rows = strict_json(self.table)
        return {
            "factors": self.factors,
            "levels": self.levels,
            "replicates": self.replicates,
            "members": self.members,
            "diverged": self.diverged,
            "draws": self.draws,
            "level": self.level,
            "seed": self.seed,
            "table": rows,
        }


def crossed_factors(design: pd.DataFrame) -> list[str]:
    """Plan factors with at least 2 levels that repeat across rows (distinct-per-row seeds are
    replicates).
    """
    out = []
    for name in FACTORS:
        if name in design:
            count = int(design[name].nunique(dropna=False))
            if 1 < count < len(design):
                out.append(name)
    return out


def decompose(
    design: pd.DataFrame,
    factors: Sequence[str],
    values: Any,
    outcome: str = "y",
    draws: int = 500,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """ANOVA decomposition of ``values`` over the crossed ``factors`` of ``design``.

    Args:
        design: one row per member with a column per factor (levels may include NA).
        factors: the crossed factors (a balanced crossing of their levels is required).
        values: ``[members]`` or ``[members, examples]`` outcomes, rows aligned with ``design``.
        outcome: name written in the ``outcome`` column.
        draws: pigeonhole bootstrap draws (0: no intervals).
        seed: seed of the bootstrap generator.
        level: coverage of the percentile intervals.

    Returns:
        The rows of :attr:`VarianceComponents.table` for this outcome.

    Raises:
        UserError: no factor, or an unbalanced / incomplete crossing (the message says which cell).
    """
    cube = to_cube(design, list(factors), np.asarray(values, dtype=np.float64))  # [B, L1..Lk, r]
    effects = subsets(len(factors))
    ss, df, comp = anova(cube, effects)
    names = [":".join(factors[i] for i in s) for s in effects] + [RESIDUAL]
    (slows, shighs), (lows, highs) = _intervals(cube, effects, draws, seed, level)
    ss_share = ratio(ss.sum(1), ss.sum(0).sum())
    share = normalised(comp.mean(1))
    with_residual = cube.shape[-1] == 1
    rows = []
    for e, name in enumerate(names):
        order = len(effects[e]) if e < len(effects) else 0
        rows.append(
            {
                "outcome": outcome,
                "effect": name,
                "order": order,
                "df": int(df[e]),
                "ss": float(ss[e].sum()),
                "ms": float(ss[e].sum() / df[e]) if df[e] else np.nan,
                "ss_share": float(ss_share[e]),
                "ss_share_low": float(slows[e]),
                "ss_share_high": float(shighs[e]),
                "component": float(max(comp[e].mean(), 0.0)),
                "share": float(share[e]),
                "share_low": float(lows[e]),
                "share_high": float(highs[e]),
                "with_residual": bool(with_residual and order == len(factors)),
            }
        )
    return pd.DataFrame(rows)


def _intervals(
    cube: np.ndarray, effects: list[tuple[int, ...]], draws: int, seed: int, level: float
) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """``((ss_share lows, highs), (share lows, highs))`` per effect and the residual (NaN: none).

    Percentile intervals of the pigeonhole bootstrap; NaN without draws or where no draw
    has a finite share.
    """
    if draws <= 0:
        none = [np.nan] * (len(effects) + 1)
        return (none, none), (none, none)
    stats = pigeonhole(cube, effects, draws, seed)  # [draws, 2, E + 1]
    q = [(1 - level) / 2, (1 + level) / 2]
    ss_bounds, share_bounds = (
        np.nanquantile(stats[:, j], q, axis=0)
        if np.isfinite(stats[:, j]).any()
        else np.full((2, len(effects) + 1), np.nan)
        for j in (0, 1)
    )
    return (ss_bounds[0], ss_bounds[1]), (share_bounds[0], share_bounds[1])


def variance_components(
    ens: Ensemble,
    factors: Sequence[str] | None = None,
    outcomes: Sequence[str] = OUTCOMES,
    split: str = "test",
    draws: int = 500,
    seed: int = 0,
    level: float = 0.95,
) -> VarianceComponents:
    """Variance components of each outcome of a trained crossed plan (diverged members at init).

    Args:
        ens: a finished :class:`~attractor.runs.ensemble.Ensemble` of a balanced crossed plan.
        factors: crossed factors (default: :func:`crossed_factors` of the plan).
        outcomes: names from ``test_loss, test_accuracy, kl_to_mean, p_true``.
        split: split of the function-space outcomes.
        draws, seed, level: pigeonhole bootstrap settings.
    """
    plan = check_finished(ens)
    factors = crossed_factors(plan) if factors is None else list(factors)
    values = outcome_values(ens, tuple(outcomes), split)
    table = pd.concat(
        [decompose(plan, factors, v, name, draws, seed, level) for name, v in values.items()],
        ignore_index=True,
    )
    levels = {f: int(plan[f].nunique(dropna=False)) for f in factors}
    replicates = len(plan) // int(np.prod(list(levels.values())))
    return VarianceComponents(
        factors, levels, replicates, table, len(plan), diverged_count(ens), draws, level, seed
    )


def write_variance(ens: Ensemble, result: VarianceComponents) -> dict[str, str]:
    """``RUN/sensitivity-variance.parquet`` (the table) and ``.json`` (everything)."""
    return ens.store.write(result)
