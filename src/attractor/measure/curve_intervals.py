"""Intervals of perturbation curves: a member's mean with a Student-t interval over samples,
the area under its KL curve, and the ensemble's curve with a multi-bootstrap interval over
members and samples (see :func:`attractor.measure.structural.perturbation_curves`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from attractor.measure.bootstrap import multibootstrap

#: per_sample[name]: (level index, member index, values [samples]) in member-major order.
PerSample = dict[str, list[tuple[int, int, np.ndarray]]]


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval of the mean over samples (width 0 for one deterministic one)."""
    mean = float(values.mean())
    if len(values) < 2:
        return mean, mean, mean
    half = float(
        stats.t.ppf((1 + level) / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    )
    return mean, mean - half, mean + half


def member_row(
    member: int, level: float, accuracy: float, drop: np.ndarray, kl: np.ndarray
) -> dict[str, float]:
    """One (member, level) row of the table: means with 95 % t intervals over samples."""
    mean_d, low_d, high_d = t_interval(drop)
    mean_k, low_k, high_k = t_interval(kl)
    return {
        "member": member,
        "level": level,
        "accuracy": accuracy,
        "acc_drop_mean": mean_d,
        "acc_drop_low": low_d,
        "acc_drop_high": high_d,
        "kl_mean": mean_k,
        "kl_low": low_k,
        "kl_high": high_k,
    }


def member_aucs(
    table: pd.DataFrame,
    kl_samples: list[tuple[int, int, np.ndarray]],
    members: list[int],
    levels: list[float],
) -> tuple[dict[int, float], pd.DataFrame]:
    """Area under each member's mean KL curve, and the table with its t interval over samples."""
    auc = {
        int(m): float(
            np.trapezoid(g.sort_values("level")["kl_mean"], g.sort_values("level")["level"])
        )
        for m, g in table.groupby("member")
    }
    auc_rows = []
    for i, member in enumerate(members):
        curves = np.stack(
            [value for lj, li, value in sorted(kl_samples, key=lambda e: e[0]) if li == i]
        )  # [levels, samples]
        _, low, high = t_interval(np.trapezoid(curves, levels, axis=0))
        auc_rows.append(
            {"member": int(member), "auc": auc[int(member)], "auc_low": low, "auc_high": high}
        )
    return auc, pd.DataFrame(auc_rows)


def ensemble_curves(
    levels: list[float], per_sample: PerSample, seed: int, draws: int
) -> pd.DataFrame:
    """Per level: mean over members and samples, multi-bootstrap over members x samples."""
    rows = []
    for j, level in enumerate(levels):
        row: dict[str, float] = {"level": level}
        for name, entries in per_sample.items():
            matrix = np.stack([value for lj, _, value in entries if lj == j])  # [members, samples]
            est = multibootstrap(matrix, draws=draws, seed=seed)
            row.update({name: est.value, f"{name}_low": est.low, f"{name}_high": est.high})
        rows.append(row)
    return pd.DataFrame(rows)
