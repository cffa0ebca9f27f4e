"""The two objectives of a trial, each with its interval: error, and the members' spread.

A trial's ``k`` members are scored on the same examples (``logits [k, n, C]``):

* ``error``: mean over members of the share of examples they get wrong;
* ``spread`` (the config's choice):
  - ``js``: mean over pairs of distinct members of the Jensen-Shannon divergence (nats)
    between their predictive distributions, averaged over examples;
  - ``disagreement``: mean over pairs of the share of examples they label differently;
  - ``accuracy_sd``: standard deviation over members of their accuracy;
  - ``minority``: share of members outside the largest basin (members clustered on their
    mean pairwise JS, :func:`~attractor.measure.basins.find_basins`).

Intervals are multi-bootstraps (members and examples resampled); for ``minority`` the
basins are found once and the members resampled. :func:`paired` compares two trainers
trained on the same seeds and scored on the same examples, as ``compare`` does two runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attractor.measure.basins import find_basins
from attractor.measure.bootstrap import (
    Estimate,
    PairedEstimate,
    multibootstrap,
    paired_estimate,
    paired_multibootstrap,
    paired_pairwise_multibootstrap,
    pairwise_multibootstrap,
)
from attractor.measure.function import pairwise_disagreement, pairwise_js, probabilities


@dataclass(frozen=True)
class Scores:
    """What the objectives need of ``k`` members on ``n`` examples (numpy, float64)."""

    wrong: np.ndarray  # [k, n] 0/1
    pairs: np.ndarray | None  # [k, k, n] per-example pair values (js, disagreement)
    basins: np.ndarray | None  # [k] basin labels, 0 the largest (minority)


def scores(logits: Tensor, y: Tensor, spread: str) -> Scores:
    """The per-member and per-pair values of ``logits [k, n, C]`` against ``y [n]``."""
    wrong = (logits.argmax(-1) != y).to(torch.float64).numpy()
    pairs = basins = None
    if spread == "disagreement":
        pairs = pairwise_disagreement(logits.argmax(-1), per_example=True).numpy()
    elif spread in ("js", "minority"):
        pairs = pairwise_js(probabilities(logits), per_example=True).numpy()
        if spread == "minority":
            basins, pairs = np.asarray(find_basins(pairs.mean(-1)).labels), None
    return Scores(wrong, pairs, basins)


def _estimate(value: float, low: float, high: float) -> dict[str, float]:
    return {"value": value, "low": low, "high": high}


def error(s: Scores, draws: int, seed: int, level: float) -> dict[str, float]:
    """Mean member error with its interval (``value``, ``low``, ``high``)."""
    if draws == 0:
        value = float(s.wrong.mean())
        return _estimate(value, value, value)
    e = multibootstrap(s.wrong, np.mean, draws=draws, seed=seed, level=level)
    return _estimate(e.value, e.low, e.high)


def spread(s: Scores, name: str, draws: int, seed: int, level: float) -> dict[str, float]:
    """The chosen spread with its interval (``value``, ``low``, ``high``)."""
    if name == "minority":
        assert s.basins is not None
        value = _minority(s.basins[None, :])[0]
        if draws == 0:
            return _estimate(value, value, value)
        rng = np.random.default_rng(seed)
        drawn = s.basins[rng.integers(0, len(s.basins), (draws, len(s.basins)))]
        low, high = np.quantile(_minority(drawn), [(1 - level) / 2, (1 + level) / 2])
        return _estimate(value, float(low), float(high))
    if draws == 0:
        value = _point(s, name)
        return _estimate(value, value, value)
    e: Estimate
    if name == "accuracy_sd":
        e = multibootstrap(1 - s.wrong, np.std, draws=draws, seed=seed, level=level)
    else:
        assert s.pairs is not None
        e = pairwise_multibootstrap(s.pairs, draws=draws, seed=seed, level=level)
    return _estimate(e.value, e.low, e.high)


def _point(s: Scores, name: str) -> float:
    if name == "accuracy_sd":
        return float((1 - s.wrong).mean(-1).std())
    assert s.pairs is not None
    off = ~np.eye(len(s.pairs), dtype=bool)
    return float(s.pairs.mean(-1)[off].mean())


def _minority(labels: np.ndarray) -> np.ndarray:
    """``[draws]`` share of each row of ``labels [draws, k]`` outside its most common label."""
    counts = np.stack([(labels == b).sum(1) for b in np.unique(labels)], axis=1)
    return 1.0 - counts.max(1) / labels.shape[1]


def paired(
    a: Scores, b: Scores, name: str, draws: int, seed: int, level: float
) -> dict[str, dict[str, Any]]:
    """``a`` against ``b`` on the same examples: error and spread, each ``a - b`` with intervals.

    Returns:
        ``{"error": PairedEstimate dict, "spread": PairedEstimate dict}``.
    """
    draws = max(draws, 1)
    out = {"error": paired_multibootstrap(a.wrong, b.wrong, draws=draws, seed=seed, level=level)}
    if name == "accuracy_sd":
        out["spread"] = paired_multibootstrap(
            1 - a.wrong, 1 - b.wrong, np.std, draws=draws, seed=seed, level=level
        )
    elif name == "minority":
        out["spread"] = _paired_minority(a, b, draws, seed, level)
    else:
        assert a.pairs is not None and b.pairs is not None
        out["spread"] = paired_pairwise_multibootstrap(
            a.pairs, b.pairs, draws=draws, seed=seed, level=level
        )
    return {k: v.to_dict() for k, v in out.items()}


def _paired_minority(a: Scores, b: Scores, draws: int, seed: int, level: float) -> PairedEstimate:
    """Members of each trainer resampled independently, the basins kept as found."""
    assert a.basins is not None and b.basins is not None
    rng = np.random.default_rng(seed)
    stats = [_minority(x[rng.integers(0, len(x), (draws, len(x)))]) for x in (a.basins, b.basins)]
    value_a, value_b = (float(_minority(x[None, :])[0]) for x in (a.basins, b.basins))
    return paired_estimate(value_a, value_b, stats[0], stats[1], level)
