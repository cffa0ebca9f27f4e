"""What :func:`attractor.measure.lm_compare.compare_models` keeps while it streams a corpus.

Per document, the sum of every statistic and the count of positions (for ratio means and
a bootstrap over documents); a seeded uniform reservoir of positions (for quantiles); the
``top_k`` positions by one statistic. Memory is one row per document plus the reservoir.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attractor.measure.bootstrap import Estimate


class RunningStats:
    """Streaming accumulators over positions, fed one batch ``[positions, stats]`` at a time."""

    def __init__(self, n_stats: int, reservoir: int, top_k: int, seed: int) -> None:
        self.sums: list[np.ndarray] = []  # per document: sum of every statistic
        self.counts: list[int] = []
        self.reservoir = reservoir
        self.top_k = top_k
        self._gen = torch.Generator().manual_seed(seed)
        self._keys = torch.empty(0, dtype=torch.float64)
        self._kept = torch.empty(0, n_stats, dtype=torch.float64)
        self._top: list[tuple[float, Any]] = []

    def add(self, table: Tensor, owners: list[int]) -> None:
        """Positions ``table [positions, stats]`` (float64) of documents ``owners``."""
        owner = torch.tensor(owners)
        for doc in torch.unique(owner).tolist():
            while len(self.sums) <= doc:
                self.sums.append(np.zeros(table.shape[1]))
                self.counts.append(0)
            mask = owner == doc
            self.sums[doc] += table[mask].sum(0).numpy()
            self.counts[doc] += int(mask.sum())
        # Reservoir by random keys: keeping the smallest keys is a uniform sample of all
        # positions seen, whatever the batching.
        keys = torch.rand(len(table), generator=self._gen, dtype=torch.float64)
        self._keys, self._kept = torch.cat([self._keys, keys]), torch.cat([self._kept, table])
        if len(self._keys) > self.reservoir:
            order = torch.topk(self._keys, self.reservoir, largest=False).indices
            self._keys, self._kept = self._keys[order], self._kept[order]

    def offer_top(self, column: Tensor, describe: Callable[[int], Any]) -> None:
        """Keep the positions of this batch whose ``column`` value enters the top ``k``;
        ``describe(j)`` builds what is kept for position ``j`` (only for those)."""
        if not self.top_k:
            return
        floor = self._top[-1][0] if len(self._top) >= self.top_k else -math.inf
        for j in torch.topk(column, min(self.top_k, len(column))).indices.tolist():
            value = float(column[j])
            if value <= floor:
                break
            self._top.append((value, describe(j)))
        self._top = sorted(self._top, key=lambda t: -t[0])[: self.top_k]

    def top_items(self) -> list[Any]:
        """What ``describe`` built for the top positions, largest value first."""
        return [item for _, item in self._top]

    def per_document(self) -> tuple[np.ndarray, np.ndarray]:
        """``sums [documents, stats]`` and ``counts [documents]`` (float64)."""
        return np.stack(self.sums), np.asarray(self.counts, dtype=np.float64)

    def quantiles(self, levels: Sequence[float]) -> Tensor:
        """``[levels, stats]`` quantiles of the reservoir (NaN when it is empty)."""
        at = torch.tensor(tuple(levels), dtype=torch.float64)
        if not len(self._kept):
            return torch.full((len(at), self._kept.shape[1]), math.nan)
        return torch.quantile(self._kept, at, dim=0)


#: Documents a bootstrap over documents needs before its interval means anything.
MIN_DOCUMENTS = 2


def document_bootstrap(
    sums: np.ndarray, counts: np.ndarray, names: Sequence[str], draws: int, level: float, seed: int
) -> dict[str, Estimate]:
    """Ratio means (all positions weigh equally) with percentile intervals over resampled
    documents: ``sums [documents, stats]``, ``counts [documents]`` -> ``{name: Estimate}``.

    With fewer than :data:`MIN_DOCUMENTS` documents no interval can be estimated: ``low`` and
    ``high`` are None and ``draws`` 0.

    References:
        Sellam et al. (2021), "The MultiBERTs" (bootstrap over evaluation units).
    """
    value = sums.sum(0) / counts.sum()
    d = len(counts)
    if d < MIN_DOCUMENTS:
        # Resampling one document only redraws it: an interval of zero width would claim
        # certainty the data cannot give, so the interval is unknown (None, JSON null).
        return {s: Estimate(float(value[k]), None, None, 0, level) for k, s in enumerate(names)}
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, d, size=(draws, d))
    # How often each document is drawn in each resample: [draws, documents].
    weights = (
        np.bincount((picks + d * np.arange(draws)[:, None]).ravel(), minlength=draws * d)
        .reshape(draws, d)
        .astype(np.float64)
    )
    boot = (weights @ sums) / (weights @ counts)[:, None]  # [draws, stats]
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return {
        s: Estimate(float(value[k]), float(low[k]), float(high[k]), draws, level)
        for k, s in enumerate(names)
    }
