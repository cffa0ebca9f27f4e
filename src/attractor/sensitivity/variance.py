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

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from attractor.config import FACTORS
from attractor.errors import UserError
from attractor.runs.ensemble import Ensemble
from attractor.sensitivity._outcomes import OUTCOMES, check_finished, diverged_count, outcome_values

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
        rows = self.table.astype(object).where(self.table.notna(), None).to_dict("records")
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
    cube = _cube(design, list(factors), np.asarray(values, dtype=np.float64))  # [B, L1..Lk, r]
    k = len(factors)
    effects = _subsets(k)
    ss, df, comp = _anova(cube, effects)
    total = ss.sum(0)  # [B]
    ss_share = _ratio(ss.sum(1), total.sum())
    share = _normalised(comp.mean(1))
    with_residual = cube.shape[-1] == 1
    rows = []
    names = [":".join(factors[i] for i in s) for s in effects] + [RESIDUAL]
    lows = highs = slows = shighs = [np.nan] * len(names)
    if draws > 0:
        stats = _bootstrap(cube, effects, draws, seed)  # [draws, 2, E + 1]
        q = [(1 - level) / 2, (1 + level) / 2]
        (slows, shighs), (lows, highs) = (
            np.nanquantile(stats[:, j], q, axis=0)
            if np.isfinite(stats[:, j]).any()
            else np.full((2, len(names)), np.nan)
            for j in (0, 1)
        )
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
                "with_residual": bool(with_residual and order == k),
            }
        )
    return pd.DataFrame(rows)


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


# ---- the decomposition ------------------------------------------------------------------


def _subsets(k: int) -> list[tuple[int, ...]]:
    return [s for size in range(1, k + 1) for s in itertools.combinations(range(k), size)]


def _cube(design: pd.DataFrame, factors: list[str], values: np.ndarray) -> np.ndarray:
    """Rows arranged as ``[B, L_1, ..., L_k, r]`` (B = examples, 1 for a scalar outcome)."""
    if not factors:
        raise UserError(
            "no crossed factor to decompose over: the plan needs factors with repeated levels "
            '(design = "factorial" with [plan.levels], e.g. init_seed = [0, 1, 2])'
        )
    missing = [f for f in factors if f not in design]
    if missing:
        raise UserError(f"factor {missing[0]!r} is not a column of the plan")
    if values.shape[0] != len(design):
        raise ValueError(f"values have {values.shape[0]} rows, the design {len(design)}")
    values = values.reshape(len(design), -1)
    codes = [
        pd.factorize(design[f].astype(object), sort=False, use_na_sentinel=False) for f in factors
    ]
    shape = [len(uniques) for _, uniques in codes]
    cell = np.ravel_multi_index([c for c, _ in codes], shape)
    counts = np.bincount(cell, minlength=int(np.prod(shape)))
    if counts.min() != counts.max():
        bad = np.unravel_index(int(np.argmin(counts)), shape)
        where = ", ".join(f"{f}={codes[i][1][bad[i]]}" for i, f in enumerate(factors))
        raise UserError(
            f"the plan is not a balanced crossing of {', '.join(factors)}: cell ({where}) has "
            f"{counts.min()} members, others up to {counts.max()}; use a factorial plan with "
            "[plan.levels]"
        )
    order = np.argsort(cell, kind="stable")  # replicates keep plan order within a cell
    cube = values[order].reshape(*shape, int(counts[0]), values.shape[1])
    return np.moveaxis(cube, -1, 0)


def _anova(
    cube: np.ndarray, effects: list[tuple[int, ...]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``cube [B, L1..Lk, r]`` -> per-example ``ss [E+1, B]``, ``df [E+1]``, unclipped components
    ``[E+1, B]``.

    The last entry of each is the residual (within-cell) term.
    """
    k = cube.ndim - 2
    levels, r = cube.shape[1:-1], cube.shape[-1]
    n = r * int(np.prod(levels))
    means = {}
    for size in range(k + 1):
        for t in itertools.combinations(range(k), size):
            axes = tuple(1 + i for i in range(k) if i not in t) + (k + 1,)
            means[t] = cube.mean(axis=axes, keepdims=True)
    ss, df = [], []
    for s in effects:
        effect = sum(
            (-1) ** (len(s) - len(t)) * means[t]
            for size in range(len(s) + 1)
            for t in itertools.combinations(s, size)
        )
        ss.append((effect**2).reshape(len(cube), -1).sum(1) * n / np.prod([levels[i] for i in s]))
        df.append(int(np.prod([levels[i] - 1 for i in s])))
    residual = cube - means[tuple(range(k))]
    ss.append((residual**2).reshape(len(cube), -1).sum(1))
    df.append(int(np.prod(levels)) * (r - 1))
    ss_a, df_a = np.array(ss), np.array(df)
    sigma_e = ss_a[-1] / df_a[-1] if df_a[-1] else np.zeros(len(cube))
    comp = np.zeros_like(ss_a)
    comp[-1] = sigma_e
    coef = [n / np.prod([levels[i] for i in s]) for s in effects]
    # Back-substitution from the highest interaction down (unclipped: the ANOVA estimator).
    for e in sorted(range(len(effects)), key=lambda e: -len(effects[e])):
        s = set(effects[e])
        above = sum(
            (coef[u] * comp[u] for u in range(len(effects)) if set(effects[u]) > s),
            np.zeros(len(cube)),
        )
        comp[e] = (ss_a[e] / df_a[e] - sigma_e - above) / coef[e]
    return ss_a, df_a, comp


def _ratio(part: np.ndarray, whole: float) -> np.ndarray:
    return part / whole if whole > 0 else np.full(len(part), np.nan)


def _normalised(components: np.ndarray) -> np.ndarray:
    clipped = np.clip(components, 0.0, None)
    return _ratio(clipped, float(clipped.sum()))


def _bootstrap(
    cube: np.ndarray, effects: list[tuple[int, ...]], draws: int, seed: int
) -> np.ndarray:
    """``[draws, 2, E + 1]``: ss shares and component shares under the pigeonhole bootstrap."""
    rng = np.random.default_rng(seed)
    out = np.empty((draws, 2, len(effects) + 1))
    b, *levels, r = cube.shape
    for d in range(draws):
        picked = cube[np.ix_(*(rng.integers(0, size, size) for size in cube.shape[:-1]))]
        # Replicates are nested in cells (a seed in one cell is unrelated to one in another):
        # resampled within each cell independently.
        within = rng.integers(0, r, size=(1, *levels, r))
        ss, _, comp = _anova(
            np.take_along_axis(picked, np.broadcast_to(within, picked.shape), -1), effects
        )
        out[d, 0] = _ratio(ss.sum(1), float(ss.sum()))
        out[d, 1] = _normalised(comp.mean(1))
    return out
