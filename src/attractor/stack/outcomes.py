"""How far the trainer2's results spread, and which initial condition moves them most.

Outcomes of a study (one value per study; ``p_true`` one per study and test input):

* ``log10_lr``, ``momentum``, ``log10_weight_decay`` (0 decay as ``-inf`` is not
  summarised: ``weight_decay`` itself is), ``batch_size``: the returned trainer, for the
  hyperparameters that were searched;
* ``best_value``: its validation score (on the study's own validation resample);
* ``ensemble_accuracy``, ``member_accuracy``: test accuracy of the models it produces;
* ``distance_to_center``: JS of its ensemble's predictions to the mean over studies;
* ``p_true``: per test input, its ensemble's probability of the true class.

Spread (:func:`spread_table`): mean, sd (``ddof=1``) with a 95 % bootstrap interval over
studies (:func:`attractor.measure.bootstrap.multibootstrap` with studies as members),
min, max and range. The studies of a crossed design are not i.i.d. draws, so the
interval is a guide to how stable the sd is, not an exact coverage statement.

Which factor (:func:`factor_variance`): the studies are a balanced crossing of
``sampler_seed x validation_bootstrap x holdout_group`` with one study per cell, so
:func:`attractor.sensitivity.variance.decompose` applies over the factors with at least
2 levels (the highest interaction absorbs the residual and is flagged so). The factor
that moves an outcome most is the main effect with the largest variance-component
``share`` (all-zero components fall back to ``ss_share``); ``top_effect`` names the
largest effect of any order by the same measure (an interaction, or ``residual``, can
outweigh every main effect).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from attractor.measure.bootstrap import multibootstrap
from attractor.sensitivity.variance import decompose
from attractor.stack.search import FACTORS
from attractor.stack.settings import SearchSpace

SUMMARY = ("best_value", "ensemble_accuracy", "member_accuracy", "distance_to_center")
DECOMPOSED = ("log10_lr", "best_value", "ensemble_accuracy", "distance_to_center", "p_true")


def outcome_columns(studies: pd.DataFrame, space: SearchSpace) -> pd.DataFrame:
    """``studies`` plus the derived columns ``log10_lr`` and (when decay is searched)
    ``log10_weight_decay``.
    """
    studies = studies.copy()
    studies["log10_lr"] = np.log10(studies["lr"].astype(float))
    if space.weight_decay is not None:
        decay = studies["weight_decay"].astype(float)
        studies["log10_weight_decay"] = np.where(
            decay > 0, np.log10(decay.where(decay > 0, 1.0)), np.nan
        )
    return studies


def searched(space: SearchSpace) -> list[str]:
    """Numeric study columns of the searched hyperparameters."""
    names = ["log10_lr"]
    names += ["momentum"] if space.momentum is not None else []
    names += ["weight_decay", "log10_weight_decay"] if space.weight_decay is not None else []
    names += ["batch_size"] if space.batch_sizes is not None else []
    return names


def _sd(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.std(values, axis=axis, ddof=1)


def spread_table(
    studies: pd.DataFrame, columns: list[str], draws: int = 200, seed: int = 0
) -> pd.DataFrame:
    """One row per outcome column: ``quantity, mean, sd, sd_low, sd_high, min, max, range,
    studies``.
    """
    rows = []
    for name in columns:
        values = studies[name].astype(float).dropna().to_numpy()
        row: dict[str, Any] = {
            "quantity": name,
            "studies": len(values),
            "mean": np.nan,
            "sd": np.nan,
            "sd_low": np.nan,
            "sd_high": np.nan,
            "min": np.nan,
            "max": np.nan,
            "range": np.nan,
        }
        if len(values):
            row.update(
                {
                    "mean": float(values.mean()),
                    "min": float(values.min()),
                    "max": float(values.max()),
                    "range": float(np.ptp(values)),
                }
            )
        if len(values) >= 2:
            row["sd"] = float(_sd(values))
            if draws > 0:
                estimate = multibootstrap(values, statistic=_sd, draws=draws, seed=seed)
                row["sd_low"], row["sd_high"] = estimate.low, estimate.high
        rows.append(row)
    return pd.DataFrame(rows)


def varied_factors(studies: pd.DataFrame) -> list[str]:
    """Initial-condition factors with at least 2 levels."""
    return [f for f in FACTORS if studies[f].nunique(dropna=False) > 1]


def factor_variance(
    studies: pd.DataFrame, p_true: np.ndarray, draws: int = 200, seed: int = 0
) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """Variance components of each outcome over the varied initial-condition factors.

    Args:
        studies: one row per study with the factor columns and the outcome columns.
        p_true: ``[studies, n_test]`` probability of the true class (a per-example outcome).
        draws, seed: pigeonhole bootstrap settings of :func:`decompose`.

    Returns:
        ``(table, dominant)``: the concatenated :func:`decompose` rows, and per outcome the
        main effect that moves it most: ``{"factor", "share", "ss_share", "top_effect",
        "top_share", "top_with_residual"}`` (factor ``None`` when the outcome does not vary
        at all; ``top_with_residual``: the largest effect is the highest interaction, which
        with one study per cell also holds the study-to-study residual).
    """
    factors = varied_factors(studies)
    if not factors:
        return pd.DataFrame(), {}
    design = studies[factors].astype(object)
    values = {
        name: studies[name].astype(float).to_numpy() for name in DECOMPOSED if name != "p_true"
    }
    values["p_true"] = p_true
    table = pd.concat(
        [decompose(design, factors, v, name, draws, seed) for name, v in values.items()],
        ignore_index=True,
    )
    dominant: dict[str, dict[str, Any]] = {}
    for name, rows in table.groupby("outcome", sort=False):
        main = rows[rows["order"] == 1]
        key = "share" if main["share"].fillna(0).max() > 0 else "ss_share"
        if main[key].fillna(0).max() <= 0:
            dominant[str(name)] = {
                "factor": None,
                "share": 0.0,
                "ss_share": 0.0,
                "top_effect": None,
                "top_share": 0.0,
                "top_with_residual": False,
            }
            continue
        top = main.loc[main[key].fillna(-1).idxmax()]
        # An interaction can outweigh every main effect (the factors matter only together).
        effect = rows.loc[rows[key].fillna(-1).idxmax()]
        dominant[str(name)] = {
            "factor": str(top["effect"]),
            "share": float(top["share"]),
            "ss_share": float(top["ss_share"]),
            "top_effect": str(effect["effect"]),
            "top_share": float(effect[key]),
            "top_with_residual": bool(effect["with_residual"]),
        }
    return table, dominant
