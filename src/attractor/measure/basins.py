"""Basins: groups of members that learned the same function.

Members are clustered by a function distance between them (a ``[members, members]``
matrix such as mean pairwise Jensen-Shannon divergence or disagreement) with
agglomerative clustering, average linkage: two groups stay apart when the average
distance between their members is at least the threshold.

How many basins, in order of precedence:

* ``n_basins=k``: exactly k clusters.
* ``threshold=t``: cut the tree at t, so any two basins are separated by an average
  distance >= t (t is in the units of the matrix: nats for JS, a share of inputs for
  disagreement).
* neither (default): scale-free. The number k in ``2 .. min(members - 1, max_basins)``
  with the best silhouette is kept if that silhouette is >= ``min_silhouette`` (0.5, the
  level from which Kaufman & Rousseeuw call a structure "reasonable"); otherwise all
  members form one basin. With fewer than 3 members there is nothing to compare a split
  with, so the default gives one basin (pass ``threshold`` to split two members).

    basins = find_basins(pairwise_js(probs).numpy())
    basins.labels, basins.sizes, basins.representatives, basins.order
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import silhouette_score

from attractor.errors import UserError

MIN_SILHOUETTE = 0.5
MAX_BASINS = 10


@dataclass(frozen=True)
class Basins:
    """Members grouped into basins.

    Attributes:
        members: member ids, in the row order of the distance matrix.
        labels: basin of each member (same order); basin 0 is the largest.
        sizes: members per basin.
        representatives: member id of each basin's medoid (least total distance to its basin).
        silhouette: mean silhouette of the labelling, or None for 1 basin or one per member.
        order: row positions grouped by basin, each basin's medoid first and the rest by
            distance to it: the order for heat maps.
        method: how the count was chosen: ``n_basins``, ``threshold`` or ``silhouette``.
        threshold: the distance threshold, when one was given.
    """

    members: list[int]
    labels: list[int]
    sizes: list[int]
    representatives: list[int]
    silhouette: float | None
    order: list[int]
    method: str
    threshold: float | None = None

    @property
    def n_basins(self) -> int:
        return len(self.sizes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"n_basins": self.n_basins}


def _check_distance(distance: Any) -> np.ndarray:
    if hasattr(distance, "detach"):
        distance = distance.detach().cpu().numpy()
    d = np.asarray(distance, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1] or d.shape[0] == 0:
        raise ValueError(
            f"expected a square [members, members] distance matrix, got shape {d.shape}"
        )
    if not np.isfinite(d).all() or (d < 0).any():
        raise ValueError("distances must be finite and non-negative")
    if not np.allclose(d, d.T, rtol=1e-6, atol=1e-9):
        raise ValueError("the distance matrix must be symmetric")
    d = (d + d.T) / 2  # remove rounding asymmetry so clustering and silhouette agree
    np.fill_diagonal(d, 0.0)
    return d


def _cluster(d: np.ndarray, n_clusters: int | None, threshold: float | None) -> np.ndarray:
    model = AgglomerativeClustering(
        n_clusters=n_clusters, distance_threshold=threshold, metric="precomputed", linkage="average"
    )
    return model.fit_predict(d)


def _silhouette(d: np.ndarray, labels: np.ndarray) -> float | None:
    k = len(np.unique(labels))
    return (
        float(silhouette_score(d, labels, metric="precomputed")) if 2 <= k <= len(d) - 1 else None
    )


def find_basins(
    distance: Any,
    members: list[int] | None = None,
    threshold: float | None = None,
    n_basins: int | None = None,
    min_silhouette: float = MIN_SILHOUETTE,
    max_basins: int = MAX_BASINS,
) -> Basins:
    """Cluster members into basins by a function distance (rules in the module docs).

    Args:
        distance: ``[members, members]`` symmetric non-negative distances.
        members: member ids of the rows (default ``0 .. members - 1``).
        threshold: average-linkage distance at or above which groups stay separate.
        n_basins: exact number of basins (takes precedence over ``threshold``).
        min_silhouette: default rule: the best split must reach this silhouette.
        max_basins: default rule: the largest number of basins tried.

    Returns:
        :class:`Basins`, labels renumbered so that basin 0 is the largest.

    References:
        Rousseeuw (1987), "Silhouettes: a graphical aid to the interpretation and validation
        of cluster analysis"; Fort, Hu & Lakshminarayanan (2019), "Deep Ensembles: A Loss
        Landscape Perspective" (members of different runs in different modes of function space).
    """
    d = _check_distance(distance)
    m = len(d)
    members = list(range(m)) if members is None else [int(x) for x in members]
    if len(members) != m:
        raise ValueError(f"{len(members)} member ids for a distance matrix of {m} members")
    if n_basins is not None and not 1 <= n_basins <= m:
        raise UserError(
            f"the number of basins must be between 1 and the number of members ({m}), got "
            f"{n_basins}"
        )
    if threshold is not None and not threshold > 0:
        raise UserError(f"the basin threshold must be a positive distance, got {threshold}")

    if m == 1 or n_basins == 1:
        labels, method = (
            np.zeros(m, dtype=int),
            "n_basins" if n_basins else "threshold" if threshold else "silhouette",
        )
    elif n_basins is not None:
        labels, method = _cluster(d, n_basins, None), "n_basins"
    elif threshold is not None:
        labels, method = _cluster(d, None, threshold), "threshold"
    else:
        labels, method = np.zeros(m, dtype=int), "silhouette"
        best: float | None = None
        for k in range(2, min(m - 1, max_basins) + 1):
            candidate = _cluster(d, k, None)
            score = _silhouette(d, candidate)
            # Strictly better only, so a tie keeps the smaller number of basins.
            if score is not None and score >= min_silhouette and (best is None or score > best):
                labels, best = candidate, score
    return _describe(d, members, labels, method, threshold)


def _describe(
    d: np.ndarray, members: list[int], labels: np.ndarray, method: str, threshold: float | None
) -> Basins:
    """Canonical labels (largest basin first, ties by first member), medoids and heat-map order."""
    groups = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    groups.sort(key=lambda rows: (-len(rows), rows[0]))
    canonical = np.empty(len(d), dtype=int)
    representatives, order = [], []
    for basin, rows in enumerate(groups):
        canonical[rows] = basin
        within = d[np.ix_(rows, rows)]
        medoid = rows[int(np.argmin(within.sum(1)))]  # argmin takes the first of ties
        representatives.append(members[medoid])
        order.extend(int(r) for r in rows[np.lexsort((d[medoid, rows], rows != medoid))])
    return Basins(
        members=members,
        labels=[int(x) for x in canonical],
        sizes=[len(rows) for rows in groups],
        representatives=representatives,
        silhouette=_silhouette(d, canonical),
        order=order,
        method=method,
        threshold=threshold,
    )
