"""The balanced crossed ANOVA behind :mod:`attractor.sensitivity.variance`, on a cube of outcomes.

Rows arranged as ``[examples, L_1, ..., L_k, replicates]`` (:func:`to_cube`); per effect the
sums of squares, degrees of freedom and unclipped random-effects components
(:func:`anova`), and their shares under the pigeonhole bootstrap (:func:`pigeonhole`). The
estimators and the bootstrap are described in :mod:`attractor.sensitivity.variance`.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from attractor.errors import UserError

__all__ = ["anova", "normalised", "pigeonhole", "ratio", "subsets", "to_cube"]


def subsets(k: int) -> list[tuple[int, ...]]:
    """Every non-empty subset of factors ``0..k-1`` (the effects), main effects first."""
    return [s for size in range(1, k + 1) for s in itertools.combinations(range(k), size)]


def to_cube(design: pd.DataFrame, factors: list[str], values: np.ndarray) -> np.ndarray:
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


def anova(
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


def ratio(part: np.ndarray, whole: float) -> np.ndarray:
    """``part / whole``, NaN everywhere when there is nothing to share out."""
    return part / whole if whole > 0 else np.full(len(part), np.nan)


def normalised(components: np.ndarray) -> np.ndarray:
    """Components clipped at 0, as shares of their sum (the ``share`` column)."""
    clipped = np.clip(components, 0.0, None)
    return ratio(clipped, float(clipped.sum()))


def pigeonhole(
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
        ss, _, comp = anova(
            np.take_along_axis(picked, np.broadcast_to(within, picked.shape), -1), effects
        )
        out[d, 0] = ratio(ss.sum(1), float(ss.sum()))
        out[d, 1] = normalised(comp.mean(1))
    return out
