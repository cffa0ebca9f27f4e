"""What the learned-evaluator experiment measures of its members, with intervals.

Every function takes plain tensors of the pipeline's outputs (one row per member of the
factorial design) and returns small tables; none trains anything:

* :func:`outcome_spread`: the final models' spread: the true preference's mean and sd over
  members (multi-bootstrap over members and evaluation noises), the mean pairwise JS
  between their generated-class distributions, and their basins (the class each model
  generates most);
* :func:`sources`: the share of the true preference's variance each factor of the design
  adds (resample of the human's examples, evaluator seed, trainer seed), by the crossed
  random-effects ANOVA of ``attractor sensitivity`` with pigeonhole intervals;
* :func:`rounds`: proxy (evaluator) reward and true preference along the trainer's rounds,
  mean over members with intervals;
* :func:`parting`: per member, the first round where the proxy still rises while the true
  preference falls (reward hacking), and the share of members that part.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from attractor.measure.bootstrap import Estimate, multibootstrap, pairwise_multibootstrap
from attractor.measure.function import pairwise_js
from attractor.sensitivity.variance import decompose

#: The design's factors, in the order of a member's index (resample slowest).
FACTORS = ("resample", "evaluator_seed", "trainer_seed")
CLASSES = 10


def class_distributions(classes: Tensor, classes_count: int = CLASSES) -> Tensor:
    """``int64 [m, e]`` classes read off each member's images -> ``float64 [m, C]`` shares."""
    counts = torch.nn.functional.one_hot(classes, classes_count).double().sum(1)
    return counts / counts.sum(-1, keepdim=True)


def _row(name: str, estimate: Estimate, note: str) -> dict[str, object]:
    return {
        "measure": name,
        "value": estimate.value,
        "low": estimate.low,
        "high": estimate.high,
        "note": note,
    }


def outcome_spread(
    true: Tensor,
    classes: Tensor | None,
    draws: int = 1000,
    seed: int = 0,
    distances: Tensor | None = None,
    distance: tuple[str, str] = ("function-space distance", ""),
) -> tuple[pd.DataFrame, dict[str, object]]:
    """The spread of the final models.

    Args:
        true: ``[m, e]`` each member's true preference of its sample from each evaluation
            noise or seed (the same for every member).
        classes: ``int64 [m, e]`` the class read off each sample (images; None for text):
            adds the mean pairwise JS between the members' class distributions, and basins.
        distances: ``[m, m, k]`` the members' distance in function space on ``k`` shared
            items (optional), named and explained by ``distance``: its mean over pairs with
            a multi-bootstrap interval over members and items.

    Returns:
        Rows ``measure, value, low, high, note`` and the basins: ``basin`` (the class each
        member generates most), ``majority``, its ``share`` of the members and ``count``
        (``basin`` None without classes).
    """
    values = true.double().numpy()
    rows = [
        _row(
            "true preference (mean)",
            multibootstrap(values, np.mean, draws, seed),
            "the preferred share of the models' samples, mean over models",
        ),
        _row(
            "true preference (sd across members)",
            multibootstrap(values, np.std, draws, seed),
            "the spread of the outcome",
        ),
    ]
    basins: dict[str, object] = {"basin": None}
    if classes is not None:
        dists = class_distributions(classes)
        if len(values) >= 2:
            rows.append(
                _row(
                    "generated classes (mean pairwise JS)",
                    pairwise_multibootstrap(pairwise_js(dists.unsqueeze(1)).numpy(), draws, seed),
                    "nats, between members' generated-class distributions",
                )
            )
        basin = dists.argmax(-1)
        majority = int(torch.mode(basin).values)
        basins = {
            "basin": basin.tolist(),
            "majority": majority,
            "share": float((basin == majority).double().mean()),
            "count": int(len(torch.unique(basin))),
        }
    if distances is not None and len(values) >= 2:
        name, note = distance
        rows.append(_row(name, pairwise_multibootstrap(distances.numpy(), draws, seed), note))
    return pd.DataFrame(rows), basins


def design_frame(resamples: int, evaluator_seeds: int, trainer_seeds: int) -> pd.DataFrame:
    """The full factorial, one row per member (member ``i`` = row ``i``; resample slowest)."""
    grid = np.indices((resamples, evaluator_seeds, trainer_seeds)).reshape(3, -1)
    return pd.DataFrame(dict(zip(FACTORS, grid, strict=True)))


def sources(design: pd.DataFrame, values: Tensor, draws: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The variance of a per-member outcome ``values [m]`` split over the design's crossed
    factors (those with 2 or more levels): ``effect, component, share, share_low,
    share_high, ss_share`` per main effect, interaction and residual.
    """
    crossed = [f for f in FACTORS if design[f].nunique() >= 2]
    frame = decompose(design, crossed, values.double().numpy(), "y", draws, seed, 0.95)
    keep = ["effect", "component", "share", "share_low", "share_high", "ss_share"]
    return frame[[c for c in keep if c in frame]].reset_index(drop=True)


def rounds(proxy: Tensor, true: Tensor, draws: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Mean proxy reward and true preference over members after each round (0 = the base),
    with multi-bootstrap intervals over members: ``round, proxy, proxy_low, proxy_high,
    true, true_low, true_high``.
    """
    rows = []
    for r in range(proxy.shape[1]):
        p = multibootstrap(proxy[:, r].double().numpy(), np.mean, draws, seed)
        t = multibootstrap(true[:, r].double().numpy(), np.mean, draws, seed)
        rows.append(
            {
                "round": r,
                "proxy": p.value,
                "proxy_low": p.low,
                "proxy_high": p.high,
                "true": t.value,
                "true_low": t.low,
                "true_high": t.high,
            }
        )
    return pd.DataFrame(rows)


def parting_rounds(proxy: Tensor, true: Tensor, tolerance: float) -> Tensor:
    """``float64 [m]``: each member's first round ``r >= 1`` where the proxy rose
    (``proxy[r] > proxy[r-1]``) while the true preference fell by more than ``tolerance``
    (``true[r] < true[r-1] - tolerance``): the evaluator is being climbed past the rule.
    NaN for a member whose proxy and truth never part.
    """
    up = proxy[:, 1:] > proxy[:, :-1]
    down = true[:, 1:] < true[:, :-1] - tolerance
    parts = up & down
    first = parts.double().argmax(-1) + 1
    return torch.where(parts.any(-1), first.double(), torch.full_like(first.double(), np.nan))


def parting(
    proxy: Tensor, true: Tensor, tolerance: float, draws: int = 1000, seed: int = 0
) -> dict[str, object]:
    """The share of members whose proxy and truth part, and their median parting round,
    each with a bootstrap interval over members.
    """
    found = parting_rounds(proxy, true, tolerance).numpy()
    parted = np.isfinite(found).astype(np.float64)
    share = multibootstrap(parted, np.mean, draws, seed)
    summary: dict[str, object] = {
        "rounds": [None if not np.isfinite(r) else int(r) for r in found],
        "share": share.value,
        "share_low": share.low,
        "share_high": share.high,
        "tolerance": tolerance,
    }
    if parted.sum() >= 1:
        median = multibootstrap(found[np.isfinite(found)], np.median, draws, seed)
        summary |= {"median": median.value, "median_low": median.low, "median_high": median.high}
    return summary


__all__ = [
    "FACTORS",
    "class_distributions",
    "design_frame",
    "outcome_spread",
    "parting",
    "parting_rounds",
    "rounds",
    "sources",
]
