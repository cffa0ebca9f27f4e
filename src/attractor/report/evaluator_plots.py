"""Plots of the learned-evaluator experiment: proxy vs true, design curves (image grids:
:func:`attractor.report.plots.image_grid`).

Plain functions of the evaluator result's tables (columns:
:data:`attractor.stack.learned.result.TABLES`) that return PNG data URIs.
"""

from __future__ import annotations

import pandas as pd

from attractor.report.style import color, figure_uri, styled


def proxy_vs_true(rounds: pd.DataFrame, members: pd.DataFrame, title: str) -> str:
    """Mean proxy reward and true preference per round (bands: 95 % intervals), every
    member's true preference faintly behind.
    """
    with styled(8.0, 3.2) as fig:
        left, right = fig.subplots(1, 2)
        for _, rows in members.groupby("member"):
            right.plot(rows["round"], rows["true"], color=color(1), alpha=0.2, lw=0.8)
            left.plot(rows["round"], rows["proxy"], color=color(0), alpha=0.2, lw=0.8)
        for ax, key, i in ((left, "proxy", 0), (right, "true", 1)):
            ax.fill_between(
                rounds["round"],
                rounds[f"{key}_low"],
                rounds[f"{key}_high"],
                color=color(i),
                alpha=0.2,
                lw=0,
            )
            ax.plot(rounds["round"], rounds[key], color=color(i), marker="o", ms=3.5)
            ax.set_xlabel("round (0 = the base generator)")
        left.set_ylabel("evaluator's reward (proxy)")
        right.set_ylabel("true preference")
        fig.suptitle(title)
        return figure_uri(fig)


def design_curves(structural: pd.DataFrame, title: str) -> str:
    """True preference (mean, 95 % band) against each perturbed design parameter."""
    groups = list(structural.groupby("parameter", sort=False))
    with styled(3.2 * len(groups) + 0.6, 3.0) as fig:
        axes = fig.subplots(1, len(groups), squeeze=False)[0]
        for i, (name, rows) in enumerate(groups):
            rows = rows.sort_values("level")
            ax = axes[i]
            ax.fill_between(
                rows["level"], rows["true_low"], rows["true_high"], color=color(i), alpha=0.2, lw=0
            )
            ax.plot(rows["level"], rows["true"], color=color(i), marker="o", ms=3.5)
            ax.set_xlabel(str(name))
            ax.set_ylim(-0.02, 1.02)
        axes[0].set_ylabel("true preference")
        fig.suptitle(title)
        return figure_uri(fig)


__all__ = ["design_curves", "proxy_vs_true"]
