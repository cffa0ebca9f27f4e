"""Figures and tables of the report's ``tangent`` section (:mod:`.tangent` composes them).

Growth of initial perturbations over training, the basin around each run (perturbed
replays against the tangent's prediction), hypergradients beside finite-scale
differences, and local beside global sensitivity; each from the tables a
``TangentResult`` stores.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from attractor.report import plots

#: Outcome names as the page shows them.
_OUTCOMES = {
    "test_loss": "test loss",
    "true_class_prob": "true-class probability (accuracy surrogate)",
    "logits_rms": "logits (RMS norm)",
}


#: Sobol outcome (``attractor sensitivity``) shown beside each tangent outcome.
_SOBOL_OUTCOME = {"test_loss": "test_loss", "true_class_prob": "test_accuracy"}


def basin_plot(basin: pd.DataFrame, members: pd.DataFrame) -> str:
    """Log-log final distance d(eps) of the perturbed replay per member, with the tangent's line
    eps |J v| dashed.
    """
    with plots.styled(6.4, 3.4) as fig:
        ax = fig.subplots()
        for i, (member, rows) in enumerate(basin.groupby("member", sort=True)):
            rows = rows.sort_values("eps")
            eps, distance = (
                rows["eps"].astype(float),
                pd.to_numeric(rows["distance"], errors="coerce"),
            )
            ax.plot(
                eps,
                distance,
                color=plots.color(i),
                marker="o",
                markersize=4,
                linewidth=1.4,
                label=f"member {member}",
            )
            ax.plot(
                eps,
                pd.to_numeric(rows["predicted"], errors="coerce"),
                color=plots.color(i),
                linestyle="--",
                linewidth=1.0,
            )
            broke = (
                members.loc[members["member"] == member, "basin_eps"]
                if "basin_eps" in members
                else pd.Series(dtype=float)
            )
            if len(broke) and pd.notna(broke.iloc[0]):
                hit = rows[rows["eps"] == float(broke.iloc[0])]
                ax.plot(
                    hit["eps"],
                    pd.to_numeric(hit["distance"], errors="coerce"),
                    marker="x",
                    markersize=10,
                    color=plots.color(i),
                    linestyle="none",
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("ε (initial perturbation ε·v, |v| = 1)")
        ax.set_ylabel("final distance |x_T(ε) − x_T(0)|")
        ax.set_title("replay (solid) vs tangent ε·|J v| (dashed); × = linear picture breaks")
        handles, names = ax.get_legend_handles_labels()
        if handles:
            fig.legend(handles[:12], names[:12], loc="outside right upper")
        return plots.figure_uri(fig)


def basin_table(basin: pd.DataFrame, members: pd.DataFrame) -> pd.DataFrame:
    """One row per member: the growth |J v|, the breakdown eps, and ratio / flips at every eps of
    the grid.
    """
    rows = []
    for member, group in basin.groupby("member", sort=True):
        broke = (
            members.loc[members["member"] == member, "basin_eps"]
            if "basin_eps" in members
            else pd.Series(dtype=float)
        )
        row: dict[str, Any] = {
            "member": member,
            "|J v| (float64)": float(group["predicted"].iloc[0] / group["eps"].iloc[0]),
            "breakdown ε": broke.iloc[0]
            if len(broke) and pd.notna(broke.iloc[0])
            else "never (on this grid)",
        }
        for _, r in group.sort_values("eps").iterrows():
            row[f"ratio @ {r['eps']:g}"] = r["ratio"]
            row[f"flips @ {r['eps']:g}"] = int(r["flips"]) if pd.notna(r["flips"]) else None
        rows.append(row)
    return pd.DataFrame(rows)


def local_global_table(
    sensitivity: pd.DataFrame, sobol: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """Local (derivative, per member) beside global (slope across the plan's members, Sobol
    indices) per hyperparameter and outcome.
    """
    sobol_rows = pd.DataFrame(sobol.get("table", [])) if sobol else pd.DataFrame()
    rows = []
    for _, r in sensitivity.iterrows():
        row: dict[str, Any] = {
            "hyperparameter": r["hyper"],
            "outcome": _OUTCOMES.get(r["outcome"], r["outcome"]),
            "local: d/dh, per member, mean": r["local_mean"],
            "local: sd": r["local_sd"],
        }
        if r["varied"]:
            row["global: slope across the plan's members"] = r["global_slope"]
            row["global: 95 % interval (bootstrap over members)"] = (
                f"[{r['global_low']:.4g}, {r['global_high']:.4g}]"
                if pd.notna(r["global_low"]) and pd.notna(r["global_high"])
                else "–"
            )
            row["plan range of h"] = (
                f"{r['h_min']:.4g} … {r['h_max']:.4g} ({int(r['global_members'])} members)"
            )
        else:
            row["global: slope across the plan's members"] = None
            row["global: 95 % interval (bootstrap over members)"] = "–"
            row["plan range of h"] = r["note"] or "not varied"
        if len(sobol_rows) and {"outcome", "factor"} <= set(sobol_rows):
            hit = sobol_rows[
                (sobol_rows["factor"] == r["hyper"])
                & (sobol_rows["outcome"] == _SOBOL_OUTCOME.get(r["outcome"]))
            ]
            row["Sobol S1"] = hit["S1"].iloc[0] if len(hit) and "S1" in hit else None
            row["Sobol ST"] = hit["ST"].iloc[0] if len(hit) and "ST" in hit else None
            row["Sobol outcome"] = (
                _SOBOL_OUTCOME.get(r["outcome"]) if len(hit) else "factor not in the Sobol plan"
            )
        if r.get("note") and r["varied"]:
            row["note"] = r["note"]
        rows.append(row)
    return pd.DataFrame(rows)


def growth_plot(curves: pd.DataFrame, members: pd.DataFrame) -> str:
    """Log-scale growth of the first random direction (weights, outputs) per member; power
    iteration's top growth as stars.
    """
    columns = [c for c in ("log_growth_top", "function_growth_top") if c in curves]
    with plots.styled(3.6 * len(columns) + 1.4, 3.0) as fig:
        axes = fig.subplots(1, len(columns), squeeze=False).ravel()
        for i, (member, rows) in enumerate(curves.groupby("member", sort=True)):
            rows = rows.sort_values("step")
            for ax, column in zip(axes, columns, strict=True):
                values = (
                    np.exp(rows[column].astype(float))
                    if column == "log_growth_top"
                    else rows[column].astype(float)
                )
                ax.plot(
                    rows["step"],
                    values,
                    color=plots.color(i),
                    marker="o",
                    markersize=3,
                    linewidth=1.4,
                    label=f"member {member}",
                )
            top = (
                members.loc[members["member"] == member, "power_top_growth"]
                if "power_top_growth" in members
                else pd.Series(dtype=float)
            )
            if len(top) and pd.notna(top.iloc[0]):
                axes[0].plot(
                    [rows["step"].max()],
                    [float(top.iloc[0])],
                    marker="*",
                    markersize=10,
                    color=plots.color(i),
                    linestyle="none",
                )
        titles = {
            "log_growth_top": "weights: |J_t v| (random v); ★ largest (power iteration)",
            "function_growth_top": "outputs: RMS |J_f J_t v| on the eval set",
        }
        for ax, column in zip(axes, columns, strict=True):
            ax.set_yscale("log")
            plots.step_axis(ax)
            ax.set_title(titles[column])
        handles, names = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles[:12], names[:12], loc="outside right upper")
        return plots.figure_uri(fig)


def hypergradient_table(hypergrads: pd.DataFrame, finite_scale: float | None) -> pd.DataFrame:
    """One row per (hyperparameter, outcome): the derivative and the finite-scale difference,
    spread across members.
    """
    rows = []
    for (hyper, outcome), group in hypergrads.groupby(["hyper", "outcome"], sort=False):
        derivative = pd.to_numeric(group["derivative"], errors="coerce")
        finite = pd.to_numeric(group["finite_scale"], errors="coerce")
        row = {
            "hyperparameter": hyper,
            "outcome": _OUTCOMES.get(outcome, outcome),
            "d/dh mean (local)": derivative.mean(),
            "d/dh sd": derivative.std(ddof=1) if len(group) > 1 else 0.0,
            "d/dh min": derivative.min(),
            "d/dh max": derivative.max(),
        }
        if finite.notna().any():
            row[f"Δ/Δh mean (±{finite_scale:g}×, finite scale)"] = finite.mean()
            row["Δ/Δh sd"] = finite.std(ddof=1) if len(group) > 1 else 0.0
        rows.append(row)
    return pd.DataFrame(rows)
