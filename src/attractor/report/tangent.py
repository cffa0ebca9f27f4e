"""The report's ``tangent`` section: perturbation growth curves and hypergradients with their spread."""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attractor.report import plots
from attractor.report.html import collapsible, figure, section, table, write_page

#: Outcome names as the page shows them.
_OUTCOMES = {"test_loss": "test loss", "true_class_prob": "true-class probability (accuracy surrogate)", "logits_rms": "logits (RMS norm)"}


def _frames(data: Any) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, Mapping[str, Any]]:
    """Curves, members, hypergradients and settings from a ``TangentResult`` or its ``to_dict()``."""
    if isinstance(data, Mapping):
        return pd.DataFrame(data.get("curves", [])), pd.DataFrame(data.get("members", [])), pd.DataFrame(data.get("hypergrads", [])), data
    return data.curves, data.members, data.hypergrads, data.to_dict()


def growth_plot(curves: pd.DataFrame, members: pd.DataFrame) -> str:
    """Log-scale growth of the first random direction (weights, outputs) per member; power iteration's top growth as stars."""
    columns = [c for c in ("log_growth_top", "function_growth_top") if c in curves]
    with plots.styled(3.6 * len(columns) + 1.4, 3.0) as fig:
        axes = fig.subplots(1, len(columns), squeeze=False).ravel()
        for i, (member, rows) in enumerate(curves.groupby("member", sort=True)):
            rows = rows.sort_values("step")
            for ax, column in zip(axes, columns, strict=True):
                values = np.exp(rows[column].astype(float)) if column == "log_growth_top" else rows[column].astype(float)
                ax.plot(rows["step"], values, color=plots.color(i), marker="o", markersize=3, linewidth=1.4, label=f"member {member}")
            top = members.loc[members["member"] == member, "power_top_growth"] if "power_top_growth" in members else pd.Series(dtype=float)
            if len(top) and pd.notna(top.iloc[0]):
                axes[0].plot([rows["step"].max()], [float(top.iloc[0])], marker="*", markersize=10, color=plots.color(i), linestyle="none")
        titles = {"log_growth_top": "weights: |J_t v| (random v); ★ largest (power iteration)", "function_growth_top": "outputs: RMS |J_f J_t v| on the eval set"}
        for ax, column in zip(axes, columns, strict=True):
            ax.set_yscale("log")
            plots.step_axis(ax)
            ax.set_title(titles[column])
        handles, names = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles[:12], names[:12], loc="outside right upper")
        return plots.figure_uri(fig)


def hypergradient_table(hypergrads: pd.DataFrame, finite_scale: float | None) -> pd.DataFrame:
    """One row per (hyperparameter, outcome): the derivative and the finite-scale difference, spread across members."""
    rows = []
    for (hyper, outcome), group in hypergrads.groupby(["hyper", "outcome"], sort=False):
        derivative = pd.to_numeric(group["derivative"], errors="coerce")
        finite = pd.to_numeric(group["finite_scale"], errors="coerce")
        row = {"hyperparameter": hyper, "outcome": _OUTCOMES.get(outcome, outcome),
               "d/dh mean (local)": derivative.mean(), "d/dh sd": derivative.std(ddof=1) if len(group) > 1 else 0.0,
               "d/dh min": derivative.min(), "d/dh max": derivative.max()}
        if finite.notna().any():
            row[f"Δ/Δh mean (±{finite_scale:g}×, finite scale)"] = finite.mean()
            row["Δ/Δh sd"] = finite.std(ddof=1) if len(group) > 1 else 0.0
        rows.append(row)
    return pd.DataFrame(rows)


def tangent_section(data: Any) -> str:
    """Section ``tangent`` from a :class:`~attractor.tangent.TangentResult` or the dict in ``tangent.json``."""
    curves, members, hypergrads, settings = _frames(data)
    body = []
    if len(curves) and "log_growth_top" in curves:
        body.append(figure(growth_plot(curves, members), "growth of initial perturbations over training (log scale)"))
    if len(members):
        shown = [c for c in ("member", "optimizer", "lr", "momentum", "leading_exponent", "random_growth", "power_top_growth",
                             "function_growth_top", "diverged_step", "engine_max_abs_diff") if c in members]
        body.append(table(members[shown]))
    if len(hypergrads):
        body.append(table(hypergradient_table(hypergrads, settings.get("finite_scale"))))
        body.append(collapsible(f"hypergradients of all {members['member'].nunique() if len(members) else 0} members", table(hypergrads), open_=False))
    lead = (f"Forward mode through each member's own training run ({settings.get('dtype', '')}, {settings.get('directions', 0)} random directions, "
            f"QR every {settings.get('reorth_every', '')} steps). Exponents are finite-time Lyapunov exponents in nats per step (< 0: initial "
            "perturbations of the weights shrink); random growth = |J v| of a random direction (typical), power top growth = largest singular "
            "value of the training map (worst case). d/dh is the local derivative at the member's own setting (forward-mode hypergradient); "
            "Δ/Δh is a central difference of two whole runs at ± the stated relative step (finite-scale sensitivity): for ReLU nets they differ "
            "because activation patterns flip along the way.")
    return section("tangent", "Derivatives through training", lead, "".join(body))


def render_tangent_report(data: Any, path: str | Path) -> Path:
    """A page with the tangent section alone, for a directory that holds no engine run."""
    out = data["out"] if isinstance(data, Mapping) else data.out
    header = f'<header><h1>attractor · derivatives through training</h1><p class="run">{html.escape(str(out))}</p></header>'
    return write_page(path, "attractor tangent", [header, tangent_section(data)])
