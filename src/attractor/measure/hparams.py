"""Learning rate x momentum maps of a trainer: cells, the good-lr range, LR sensitivity.

Pure functions of the members' outcomes (:func:`~attractor.measure.outcomes.member_outcomes`,
where a diverged member counts at its initial values) and of the grid's ensemble;
:mod:`attractor.experiments.hparam_map` trains the grid and calls them. Definitions
(exact, because the issue leaves them open):

* **Good-lr range** (per momentum). Error ``e(lr) = 1 - mean final accuracy`` of the cell;
  ``e* = min_lr e(lr)``. A learning rate is *good* when ``e(lr) <= e* · (1 + tolerance)``
  (``tolerance = 0.1``: within 10 % of the best accuracy gap). The range is the
  **contiguous** run of good learning rates on the sorted grid that contains the best one;
  good learning rates separated from it by a bad one do not widen it. Its width is
  ``log10(lr_max / lr_min)``, 0 when only the best learning rate is good.
* **Width CI.** Seeds are resampled with replacement within each cell, the cell means and
  the width recomputed, ``draws`` times; the 95 % percentile interval.
* **LR sensitivity** (per momentum). Per member ``min(final loss, loss at init)``
  (diverged: the loss at init), averaged over the cell's seeds to ``capped_loss``; the
  sensitivity is ``mean_lr capped_loss - min_lr capped_loss``. It is 0 when every learning
  rate is as good as the best and grows as learning rates fail.
* **Seed spread** (per cell): mean pairwise Jensen-Shannon divergence between the
  finished members' test predictions (NaN with fewer than two).

References:
    Wortsman et al., "Small-scale proxies for large-scale Transformer training
    instabilities", ICLR 2024 (arXiv 2309.14322), section 3.1 (LR sensitivity).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from attractor.seeds import numpy_generator

if TYPE_CHECKING:
    from attractor.runs.ensemble import Ensemble

#: The columns that name a cell of the map.
CELL = ["lr", "momentum"]


def summarize_cells(members: pd.DataFrame) -> pd.DataFrame:
    """Cell table from :func:`~attractor.measure.outcomes.member_outcomes` rows (``spread_js``
    is added by :func:`cell_spreads`).
    """
    members = members.assign(capped=np.minimum(members["final_loss"], members["init_loss"]))
    grouped = members.groupby(CELL, sort=True)
    cells = pd.DataFrame(
        {
            "seeds": grouped.size(),
            "loss_mean": grouped["final_loss"].mean(),
            "loss_sd": grouped["final_loss"].std(ddof=1),
            "accuracy_mean": grouped["final_accuracy"].mean(),
            "accuracy_sd": grouped["final_accuracy"].std(ddof=1),
            "init_loss": grouped["init_loss"].mean(),
            "capped_loss": grouped["capped"].mean(),
            "diverged": grouped["diverged"].mean().astype(float),
        }
    )
    return cells.reset_index()


def good_lr_range(
    lrs: np.ndarray, accuracy: np.ndarray, tolerance: float
) -> tuple[float, float, float]:
    """``(width, lr_min, lr_max)`` of the contiguous good range around the best lr.

    Args:
        lrs: ``[n]`` learning rates (any order); accuracy: ``[n]`` mean final accuracy per lr.
        tolerance: an lr is good if its error is at most ``e* · (1 + tolerance)``.
    """
    order = np.argsort(lrs)
    lrs, error = np.asarray(lrs, float)[order], 1.0 - np.asarray(accuracy, float)[order]
    best = int(np.nanargmin(error))
    good = error <= error[best] * (1.0 + tolerance)
    lo = hi = best
    while lo > 0 and good[lo - 1]:
        lo -= 1
    while hi < len(lrs) - 1 and good[hi + 1]:
        hi += 1
    return float(math.log10(lrs[hi] / lrs[lo])), float(lrs[lo]), float(lrs[hi])


def lr_sensitivity(capped_loss: np.ndarray) -> float:
    """Wortsman et al.'s LR sensitivity from ``[n]`` per-lr capped losses: mean minus min."""
    capped = np.asarray(capped_loss, float)
    return float(np.mean(capped) - np.min(capped))


def range_table(
    cells: pd.DataFrame, members: pd.DataFrame, tolerance: float, draws: int = 500, seed: int = 0
) -> pd.DataFrame:
    """Per momentum: good-lr width with its seed-bootstrap 95 % interval, range and sensitivity."""
    rng = numpy_generator("hparam-map-bootstrap", seed)
    rows = []
    for momentum, part in cells.groupby("momentum", sort=True):
        width, lr_min, lr_max = good_lr_range(
            part["lr"].to_numpy(), part["accuracy_mean"].to_numpy(), tolerance
        )
        # Per lr the seeds' accuracies; resample each cell's seeds independently.
        lrs = part["lr"].to_numpy()
        accs = [
            members.loc[
                (members["momentum"] == momentum) & (members["lr"] == lr), "final_accuracy"
            ].to_numpy()
            for lr in lrs
        ]
        widths = np.empty(draws)
        for d in range(draws):
            means = np.array([a[rng.integers(len(a), size=len(a))].mean() for a in accs])
            widths[d] = good_lr_range(lrs, means, tolerance)[0]
        low, high = np.percentile(widths, [2.5, 97.5])
        best_lr = float(lrs[int(np.argmax(part["accuracy_mean"].to_numpy()))])
        rows.append(
            {
                "momentum": float(momentum),
                "width": width,
                "low": float(low),
                "high": float(high),
                "lr_min": lr_min,
                "lr_max": lr_max,
                "best_lr": best_lr,
                "sensitivity": lr_sensitivity(part["capped_loss"].to_numpy()),
            }
        )
    return pd.DataFrame(rows)


def cell_spreads(ens: Ensemble, members: pd.DataFrame, cells: pd.DataFrame) -> list[float]:
    """Per row of ``cells``: mean pairwise JS between its finished members' test predictions.

    NaN for a cell with fewer than two finished members.
    """
    from attractor.measure.function import pairwise_js, probabilities

    done = members.merge(ens.plan[["member", "status"]], on="member")
    spreads = []
    for cell in cells.itertuples():
        here = (
            (done["lr"] == cell.lr)
            & (done["momentum"] == cell.momentum)
            & (done["status"] == "done")
        )
        ids = [int(i) for i in done.loc[here, "member"]]
        if len(ids) < 2:
            spreads.append(math.nan)
            continue
        js = pairwise_js(probabilities(ens.predict(ens.task.x_test, members=ids)))
        n = js.shape[0]
        # The mean over off-diagonal pairs (the diagonal is 0).
        spreads.append(float(js.sum() / (n * (n - 1))))
    return spreads
