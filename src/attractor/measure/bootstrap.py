"""Confidence intervals over seeds and examples: the multi-bootstrap of MultiBERTs.

A score measured on an ensemble is uncertain twice over: another set of seeds would give
other members, and another eval set other examples. Each bootstrap draw therefore
resamples the members (seeds) *and* the eval examples, jointly and with replacement,
averages the scores per member over the resampled examples first (so each member counts
equally however its scores vary), and applies the statistic across the resampled members.
The interval is the percentile interval of the draws.

    est = multibootstrap(correct)            # correct [members, examples] -> Estimate
    est.value, est.low, est.high             # mean accuracy and its 95 % interval

Inputs may be numpy arrays or torch tensors; all work is float64 numpy with a seeded
``numpy.random.Generator``, so the same seed gives the same interval.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: A numpy reduction with an ``axis`` keyword, applied across members: np.mean, np.std, ...
Statistic = Callable[..., Any]
# Bytes the [draws, members, members] pair weights of one chunk of draws may take.
_PAIR_CHUNK_BYTES = 64 << 20


@dataclass(frozen=True)
class Estimate:
    """A statistic on the full data with its bootstrap percentile interval."""

    value: float
    low: float
    high: float
    draws: int
    level: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class PairedEstimate:
    """Two runs scored on the same examples: both values, ``a - b`` and its interval.

    ``p`` is the share of draws in which ``a - b <= 0``: a one-sided bootstrap p-value for
    "run a scores higher than run b" (about 0.5 when the runs are alike).
    """

    a: float
    b: float
    difference: float
    low: float
    high: float
    p: float
    draws: int
    level: float
    a_low: float
    a_high: float
    b_low: float
    b_high: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _matrix(scores: Any, ndim: int) -> np.ndarray:
    """float64 array with the example axis last; a missing example axis becomes length 1."""
    if hasattr(scores, "detach"):
        scores = scores.detach().cpu().numpy()
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim == ndim - 1:
        array = array[..., None]
    if array.ndim != ndim or array.shape[0] == 0 or array.shape[-1] == 0:
        raise ValueError(
            f"expected a non-empty array of {ndim} dimensions (example axis last), got shape "
            f"{array.shape}"
        )
    if not np.isfinite(array).all():
        raise ValueError("scores must be finite (a diverged member should be left out first)")
    return array


def _example_counts(rng: np.random.Generator, n: int, draws: int) -> np.ndarray:
    """``[draws, n]``: how often each example is picked in n draws with replacement.

    Integer counts, divided by n only after summing scores, so constant scores stay exact.
    """
    return _counts(rng.integers(0, n, size=(draws, n)), n)


def _counts(indices: np.ndarray, n: int) -> np.ndarray:
    """Per row of ``indices [draws, k]``, how often each of ``0..n-1`` occurs: ``[draws, n]``."""
    offsets = indices + n * np.arange(indices.shape[0])[:, None]
    return (
        np.bincount(offsets.ravel(), minlength=indices.shape[0] * n)
        .reshape(-1, n)
        .astype(np.float64)
    )


def _interval(stats: np.ndarray, level: float) -> tuple[float, float]:
    low, high = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _check(draws: int, level: float) -> None:
    if draws < 1 or not 0 < level < 1:
        raise ValueError(f"need draws >= 1 and 0 < level < 1, got draws={draws}, level={level}")


def _draw_statistic(
    scores: np.ndarray, counts: np.ndarray, members: np.ndarray, statistic: Statistic
) -> np.ndarray:
    """Statistic per draw: ``scores [m, n]``, ``counts [D, n]``, ``members [D, m]`` -> ``[D]``."""
    per_member = (
        scores @ counts.T / scores.shape[1]
    )  # [m, D]: each member's mean over each draw's examples
    picked = per_member[members, np.arange(len(counts))[:, None]]  # [D, m]
    return np.asarray(statistic(picked, axis=-1), dtype=np.float64)


def multibootstrap(
    per_member_example: Any,
    statistic: Statistic = np.mean,
    draws: int = 500,
    seed: int = 0,
    level: float = 0.95,
) -> Estimate:
    """Multi-bootstrap interval of a statistic across members of per-example scores.

    Args:
        per_member_example: ``[members, examples]`` scores (e.g. 0/1 correctness, loss);
            ``[members]`` is one score per member (only members are resampled).
        statistic: reduction across members of their mean scores, called with
            ``axis=-1`` (``np.mean`` for the average, ``np.std`` for the seed spread).
        draws: bootstrap draws.
        seed: seed of the ``numpy.random.Generator``.
        level: coverage of the percentile interval.

    Returns:
        :class:`Estimate`: the statistic on the full data and its interval.

    References:
        Sellam et al. (2021), "The MultiBERTs: BERT Reproductions for Robustness Analysis"
        (the multi-bootstrap).
    """
    _check(draws, level)
    scores = _matrix(per_member_example, 2)
    m, n = scores.shape
    rng = np.random.default_rng(seed)
    counts = _example_counts(rng, n, draws)
    stats = _draw_statistic(scores, counts, rng.integers(0, m, size=(draws, m)), statistic)
    value = float(statistic(scores.mean(-1), axis=-1))
    return Estimate(value, *_interval(stats, level), draws=draws, level=level)


def pairwise_multibootstrap(
    per_pair_example: Any, draws: int = 500, seed: int = 0, level: float = 0.95
) -> Estimate:
    """Multi-bootstrap interval of the mean over pairs of distinct members of a pair metric.

    Each draw resamples members and examples with replacement. A member drawn ``c_i``
    times enters with all its copies: the pair (i, j), i != j, counts ``c_i * c_j`` times,
    while pairs of a member with its own copy are dropped (their distance is 0 by
    definition and would pull the spread towards 0). Draws that picked one member only
    (no pair left; likely for 2 or 3 members) are skipped, so ``draws`` in the result
    may be smaller than asked.

    Args:
        per_pair_example: ``[members, members, examples]`` per-example pair values (e.g.
            ``pairwise_js(probs, per_example=True)``); ``[members, members]`` is one value
            per pair (only members are resampled).
        draws: bootstrap draws.
        seed: seed of the ``numpy.random.Generator``.
        level: coverage of the percentile interval.

    Returns:
        :class:`Estimate` of the mean over pairs i != j (value on the full data).

    References:
        Sellam et al. (2021), "The MultiBERTs: BERT Reproductions for Robustness Analysis".
    """
    _check(draws, level)
    values = _matrix(per_pair_example, 3)
    m, m2, n = values.shape
    if m != m2 or m < 2:
        raise ValueError(
            "expected [members, members, examples] with at least 2 members, got shape "
            f"{values.shape}"
        )
    rng = np.random.default_rng(seed)
    example_counts = _example_counts(rng, n, draws)
    stats = _pair_draws(values, example_counts, rng.integers(0, m, size=(draws, m)))
    stats = stats[np.isfinite(stats)]
    off_diagonal = ~np.eye(m, dtype=bool)
    value = float(values.mean(-1)[off_diagonal].mean())
    return Estimate(value, *_interval(stats, level), draws=len(stats), level=level)


def _pair_draws(values: np.ndarray, example_counts: np.ndarray, drawn: np.ndarray) -> np.ndarray:
    """``[draws]`` mean over pairs of distinct members of ``values [m, m, n]`` in each draw.

    ``example_counts [D, n]`` weigh the examples, ``drawn [D, m]`` are the members drawn. A
    member drawn ``c_i`` times enters with all its copies (pair weight ``c_i c_j``), pairs of
    a member with its own copy are dropped; a draw with no pair left is NaN.
    """
    m, _, n = values.shape
    draws = len(drawn)
    counts = _counts(drawn, m)  # [D, m]: copies of each member
    flat = values.reshape(m * m, n)
    stats = np.empty(draws)
    chunk = max(1, _PAIR_CHUNK_BYTES // (8 * m * m))
    for start in range(0, draws, chunk):
        part = slice(start, start + chunk)
        pair_means = (flat @ example_counts[part].T / n).reshape(m, m, -1)  # [m, m, d]
        pair_weights = counts[part, :, None] * counts[part, None, :]  # [d, m, m]
        pair_weights[:, np.arange(m), np.arange(m)] = 0.0
        total = pair_weights.sum((1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            stats[part] = np.einsum("dij,ijd->d", pair_weights, pair_means) / total
    return stats


def paired_pairwise_multibootstrap(
    a: Any, b: Any, draws: int = 500, seed: int = 0, level: float = 0.95
) -> PairedEstimate:
    """Compare two runs' mean pair metric on the same examples: ``mean_pairs(a) - mean_pairs(b)``.

    As :func:`pairwise_multibootstrap` for each run, paired as :func:`paired_multibootstrap`:
    each draw resamples the examples once for both runs and the members of each run
    independently. Draws in which either run kept no pair are skipped.

    Args:
        a: ``[members_a, members_a, examples]`` per-example pair values of run a.
        b: ``[members_b, members_b, examples]`` the same for run b, same examples in order.
        draws, seed, level: as :func:`paired_multibootstrap`.

    References:
        Sellam et al. (2021), "The MultiBERTs: BERT Reproductions for Robustness Analysis".
    """
    _check(draws, level)
    values_a, values_b = _matrix(a, 3), _matrix(b, 3)
    if values_a.shape[2] != values_b.shape[2] or min(len(values_a), len(values_b)) < 2:
        raise ValueError(
            "expected [members, members, examples] pair values with at least 2 members on the "
            f"same examples, got {values_a.shape} and {values_b.shape}"
        )
    rng = np.random.default_rng(seed)
    counts = _example_counts(rng, values_a.shape[2], draws)
    stats_a = _pair_draws(values_a, counts, rng.integers(0, len(values_a), (draws, len(values_a))))
    stats_b = _pair_draws(values_b, counts, rng.integers(0, len(values_b), (draws, len(values_b))))
    kept = np.isfinite(stats_a) & np.isfinite(stats_b)
    stats_a, stats_b = stats_a[kept], stats_b[kept]
    off_a, off_b = ~np.eye(len(values_a), dtype=bool), ~np.eye(len(values_b), dtype=bool)
    value_a = float(values_a.mean(-1)[off_a].mean())
    value_b = float(values_b.mean(-1)[off_b].mean())
    return paired_estimate(value_a, value_b, stats_a, stats_b, level)


def paired_multibootstrap(
    a: Any,
    b: Any,
    statistic: Statistic = np.mean,
    draws: int = 500,
    seed: int = 0,
    level: float = 0.95,
) -> PairedEstimate:
    """Compare two runs scored on the same examples: ``statistic(a) - statistic(b)``.

    Each draw resamples the examples once for both runs (the comparison is paired on
    examples) and the members of each run independently (their seeds are unrelated).

    Args:
        a: ``[members_a, examples]`` per-example scores of run a.
        b: ``[members_b, examples]`` per-example scores of run b, same examples in the same order.
        statistic: reduction across members, called with ``axis=-1`` (default ``np.mean``).
        draws: bootstrap draws.
        seed: seed of the ``numpy.random.Generator``.
        level: coverage of the percentile intervals.

    Returns:
        :class:`PairedEstimate`: both values, the difference ``a - b`` with its interval,
        ``p`` = share of draws with difference <= 0, and each run's own interval.

    References:
        Sellam et al. (2021), "The MultiBERTs: BERT Reproductions for Robustness Analysis"
        (the paired multi-bootstrap).
    """
    _check(draws, level)
    scores_a, scores_b = _matrix(a, 2), _matrix(b, 2)
    if scores_a.shape[1] != scores_b.shape[1]:
        raise ValueError(
            f"runs must be scored on the same examples: {scores_a.shape[1]} vs {scores_b.shape[1]}"
        )
    stats_a, stats_b = _paired_draws(scores_a, scores_b, statistic, draws, seed)
    value_a = float(statistic(scores_a.mean(-1), axis=-1))
    value_b = float(statistic(scores_b.mean(-1), axis=-1))
    return paired_estimate(value_a, value_b, stats_a, stats_b, level)


def paired_estimate(
    value_a: float, value_b: float, stats_a: np.ndarray, stats_b: np.ndarray, level: float
) -> PairedEstimate:
    """Two runs' values and their paired bootstrap draws ``[draws]``, as an estimate."""
    difference = stats_a - stats_b
    (low, high), (a_low, a_high), (b_low, b_high) = (
        _interval(s, level) for s in (difference, stats_a, stats_b)
    )
    return PairedEstimate(
        a=value_a,
        b=value_b,
        difference=value_a - value_b,
        low=low,
        high=high,
        p=float((difference <= 0).mean()),
        draws=len(difference),
        level=level,
        a_low=a_low,
        a_high=a_high,
        b_low=b_low,
        b_high=b_high,
    )


def _paired_draws(
    scores_a: np.ndarray, scores_b: np.ndarray, statistic: Statistic, draws: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``[draws]`` statistic of each run: examples drawn once for both, members per run."""
    rng = np.random.default_rng(seed)
    counts = _example_counts(rng, scores_a.shape[1], draws)
    members_a = rng.integers(0, len(scores_a), size=(draws, len(scores_a)))
    members_b = rng.integers(0, len(scores_b), size=(draws, len(scores_b)))
    stats_a = _draw_statistic(scores_a, counts, members_a, statistic)
    stats_b = _draw_statistic(scores_b, counts, members_b, statistic)
    return stats_a, stats_b
