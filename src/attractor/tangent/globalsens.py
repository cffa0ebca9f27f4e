"""Local next to global sensitivity: each hypergradient beside the slope across the plan's members.

*Local* sensitivity is the forward-mode derivative ``d outcome / d h`` of each member at its
own setting (:mod:`attractor.tangent.hypergrad`), summarised over members as mean and sd.
*Global* sensitivity is what the ensemble itself says when the plan varies ``h`` across
members: the least-squares slope of the members' final eval outcome against their setting
of ``h``, over the plan's range of ``h``, with a percentile bootstrap interval that
resamples members with replacement. (:func:`attractor.measure.bootstrap.multibootstrap`
resamples a ``[members, examples]`` score matrix for a statistic of one value per member;
a slope needs the pairs ``(h_i, outcome_i)`` resampled together, so it is done here with
the same kind of seeded ``numpy`` generator.)

The two agree when the outcome is close to linear in ``h`` over the plan's range and the
other factors the plan varies (seeds, data order) add no correlated trend; they differ
when the outcome curves, or when the seed-to-seed spread drowns the trend (then the
global interval is wide). A plan that does not vary ``h`` has no global number, and the
table says so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

# : Outcomes with one value per member (the logits' RMS hypergradient has no per-member value to
# regress).
OUTCOMES = ("test_loss", "true_class_prob")


def slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of ``y`` on ``x`` (with intercept); NaN when ``x`` is constant."""
    dx = x - x.mean()
    var = float(dx @ dx)
    return float(dx @ (y - y.mean()) / var) if var > 0 else float("nan")


def bootstrap_slope(
    x: np.ndarray, y: np.ndarray, draws: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the slope over ``draws`` resamples of the members (pairs kept
    together).

    Resamples in which every picked member has the same ``x`` have no slope and are left out.
    """
    n = len(x)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, size=(draws, n))
    xs, ys = x[index], y[index]
    dx = xs - xs.mean(1, keepdims=True)
    var = (dx * dx).sum(1)
    ok = var > 0
    slopes = (dx * (ys - ys.mean(1, keepdims=True))).sum(1)[ok] / var[ok]
    if not len(slopes):
        return float("nan"), float("nan")
    low, high = np.quantile(slopes, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _varies(x: np.ndarray) -> bool:
    return len(x) > 1 and float(np.ptp(x)) > 1e-12 * max(1.0, float(np.abs(x).max()))


def global_sensitivity(
    members: pd.DataFrame,
    hypergrads: pd.DataFrame,
    hypers: Sequence[str],
    draws: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """One row per (hyperparameter, outcome): local derivative (mean, sd over members) and global
    slope across the plan.

    Args:
        members: one row per member with its setting of every ``h`` (columns named as the
            hyperparameters) and its final eval outcomes (``test_loss``, ``true_class_prob``).
        hypergrads: ``member, hyper, outcome, derivative`` rows.
        hypers: the hyperparameters differentiated.

    Columns: ``hyper, outcome, local_mean, local_sd, local_members, varied, h_min, h_max,
    global_slope, global_low, global_high, global_members, note``. Members with a
    non-finite outcome (diverged) are left out of the slope.
    """
    rows = []
    for h in hypers:
        for outcome in OUTCOMES:
            row = _local_row(hypergrads, h, outcome)
            if h not in members or outcome not in members:
                row["note"] = f"members carry no {h if h not in members else outcome}"
            else:
                _add_global(row, members[h], members[outcome], draws, seed, level)
            rows.append(row)
    return pd.DataFrame(rows, columns=_COLUMNS)


_COLUMNS = [
    "hyper", "outcome", "local_mean", "local_sd", "local_members", "varied", "h_min", "h_max",
    "global_slope", "global_low", "global_high", "global_members", "note",
]  # fmt: skip


def _local_row(hypergrads: pd.DataFrame, h: str, outcome: str) -> dict:
    """The row of ``(h, outcome)`` with its local derivative over members filled in."""
    if len(hypergrads):
        hypergrads = hypergrads[(hypergrads["hyper"] == h) & (hypergrads["outcome"] == outcome)]
    derivative = (
        pd.to_numeric(hypergrads["derivative"], errors="coerce").dropna()
        if len(hypergrads)
        else pd.Series(dtype=float)
    )
    row: dict = dict.fromkeys(_COLUMNS)
    row.update(hyper=h, outcome=outcome, local_members=len(derivative), varied=False,
               global_members=0, note="")  # fmt: skip
    if len(derivative):
        row["local_mean"] = float(derivative.mean())
    if len(derivative) > 1:
        row["local_sd"] = float(derivative.std(ddof=1))
    return row


def _add_global(row: dict, h_values: pd.Series, outcomes: pd.Series, draws: int, seed: int,
                level: float) -> None:  # fmt: skip
    """Fill in the slope of ``outcomes`` over ``h_values`` across the (finite) members."""
    pairs = pd.DataFrame({"x": pd.to_numeric(h_values, errors="coerce"),
                          "y": pd.to_numeric(outcomes, errors="coerce")})  # fmt: skip
    pairs = pairs[np.isfinite(pairs["x"]) & np.isfinite(pairs["y"])]
    x, y = pairs["x"].to_numpy(np.float64), pairs["y"].to_numpy(np.float64)
    row.update(
        global_members=len(x),
        h_min=float(x.min()) if len(x) else None,
        h_max=float(x.max()) if len(x) else None,
    )
    if not _varies(x):
        row["note"] = f"the plan does not vary {row['hyper']}: no global number"
        return
    row.update(varied=True, global_slope=slope(x, y))
    if len(x) >= 3:
        row["global_low"], row["global_high"] = bootstrap_slope(x, y, draws, seed, level)
    else:
        row["note"] = "two members: a slope without an interval"
