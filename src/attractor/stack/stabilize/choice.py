"""From the trials to one trainer: the Pareto front, the choice within a tolerance, and which
setting moved the spread.

* ``pareto``: trials no other trial beats on both error and spread (ties count as not beaten).
* The choice: among trials whose error is at most the best error + ``tolerance``, the one
  with the lowest spread (ties: lower error, then the earlier trial). A stable trainer that
  is much worse is not a choice; ``tolerance = 0`` picks the most stable of the best.
* Which setting moved the spread: fANOVA importances (Optuna's evaluator) of the knobs'
  applied values for the spread over the trials, and the direction: Spearman's rank
  correlation of the knob's applied value with the spread (off counts as none: no
  clipping as a norm above every one tried, no SWA as starting at the end, no EMA, SAM or
  weight decay as 0).

References:
    Hutter, Hoos & Leyton-Brown (2014), "An Efficient Approach for Assessing Hyperparameter
    Importance" (fANOVA).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from attractor.errors import require


def pareto(error: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """``[trials]`` True where no trial is at least as good on both and better on one."""
    at_least = (error[None, :] <= error[:, None]) & (spread[None, :] <= spread[:, None])
    better = (error[None, :] < error[:, None]) | (spread[None, :] < spread[:, None])
    return ~(at_least & better).any(1)


def choose(trials: pd.DataFrame, tolerance: float) -> int:
    """Row index of the chosen trial (see the module docstring)."""
    within = trials[trials["error"] <= trials["error"].min() + tolerance]
    ranked = within.sort_values(["spread", "error", "trial"], kind="stable")
    return int(ranked.index[0])


def _applied(values: pd.Series, knob: str) -> pd.Series:
    """A knob's applied values as numbers for ranking (off placed where "none" belongs)."""
    if knob == "clip_norm":
        return values.astype(object).where(values.notna(), math.inf).astype(float)
    if knob == "swa_start":
        return values.astype(object).where(values.notna(), 1.0).astype(float)
    return pd.to_numeric(values, errors="coerce")


def importance(trials: pd.DataFrame, knobs: list[str], seed: int) -> pd.DataFrame:
    """Per searched knob: ``importance`` (fANOVA share of the spread's variance over the
    trials) and ``rho`` (rank correlation of its value with the spread; NaN for optimizer).

    fANOVA sees the values the trials *trained with* (an intervention switched off counts as
    its "none" value), not the values the sampler asked and the trainer then ignored: a
    forest's splits depend on the order of values only, so off can sit at the end of a range.
    """
    columns = ["knob", "importance", "rho"]
    varied = [k for k in knobs if k in trials and trials[k].astype(str).nunique() > 1]
    if len(trials) < 3 or trials["spread"].nunique() < 2 or not varied:
        return pd.DataFrame(columns=columns)
    optuna = require("optuna", "optuna")
    study = optuna.create_study(direction="minimize")
    numbers = {
        k: _applied(trials[k], k).replace(math.inf, np.nan) for k in varied if k != "optimizer"
    }
    for k, v in numbers.items():  # off clipping: above every norm tried
        numbers[k] = v.fillna(2 * v.max() if v.notna().any() else 1.0)
    distributions: dict[str, Any] = {
        k: optuna.distributions.FloatDistribution(float(v.min()), float(v.max()))
        for k, v in numbers.items()
    }
    if "optimizer" in varied:
        choices = tuple(sorted(trials["optimizer"].unique()))
        distributions["optimizer"] = optuna.distributions.CategoricalDistribution(choices)
    for i in range(len(trials)):
        params = {k: float(v.iloc[i]) for k, v in numbers.items()}
        if "optimizer" in varied:
            params["optimizer"] = trials["optimizer"].iloc[i]
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions=distributions,
                value=float(trials["spread"].iloc[i]),
            )
        )
    shares = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed), normalize=True
    )
    rows = []
    for knob, share in sorted(shares.items(), key=lambda kv: -kv[1]):
        rho = math.nan
        if knob in numbers:
            rho = float(numbers[knob].rank().corr(trials["spread"].rank()))
        rows.append({"knob": knob, "importance": float(share), "rho": rho})
    return pd.DataFrame(rows, columns=columns)
