"""Plots of the world level: basin map, phase portrait, curves (final states per
basin: :func:`attractor.report.plots.image_grid`).

Plain functions of the world result's tables (columns: :data:`attractor.world.result.TABLES`)
that return PNG data URIs, in the report's shared style.
"""

from __future__ import annotations

import pandas as pd

from attractor.report.style import color, figure_uri, styled


def basin_map(grid: pd.DataFrame, title: str) -> str:
    """Share of members reaching the goal (or the cell's majority basin) over two factors
    (a heat map), or over one (a curve).
    """
    factor_a, factor_b = str(grid["factor_a"].iloc[0]), str(grid["factor_b"].iloc[0])
    if not factor_b or grid["b"].isna().all():
        with styled(6.0, 3.0) as fig:
            ax = fig.add_subplot()
            rows = grid.sort_values("a")
            ax.plot(rows["a"], rows["share"], color=color(0), marker="o", ms=3)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel(factor_a)
            ax.set_ylabel("share of members")
            ax.set_title(title)
            return figure_uri(fig)
    pivot = grid.pivot_table(index="b", columns="a", values="share")
    with styled(5.4, 4.4) as fig:
        ax = fig.add_subplot()
        extent = (pivot.columns.min(), pivot.columns.max(), pivot.index.min(), pivot.index.max())
        image = ax.imshow(
            pivot.to_numpy(),
            origin="lower",
            aspect="auto",
            extent=extent,
            cmap="viridis",
            vmin=0.0,
            vmax=1.0,
            interpolation="nearest",
        )
        ax.grid(False)
        ax.set_xlabel(factor_a)
        ax.set_ylabel(factor_b)
        ax.set_title(title)
        fig.colorbar(image, ax=ax, shrink=0.85, label="share of members")
        return figure_uri(fig)


def phase_portrait(paths: pd.DataFrame, title: str, xlabel: str, ylabel: str) -> str:
    """Every (member, initial state) trajectory in the world's 2-D projection; start dots."""
    with styled(5.6, 4.4) as fig:
        ax = fig.add_subplot()
        for (member, _state), rows in paths.groupby(["member", "state"], sort=True):
            rows = rows.sort_values("t")
            ax.plot(rows["px"], rows["py"], color=color(int(member)), linewidth=0.8, alpha=0.6)
            ax.plot(rows["px"].iloc[0], rows["py"].iloc[0], "o", color=color(int(member)), ms=2.5)
            ax.plot(rows["px"].iloc[-1], rows["py"].iloc[-1], "x", color="#222222", ms=4)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        return figure_uri(fig)


def spread_over_time(spread: pd.DataFrame, title: str) -> str:
    """Mean distance of trajectories from their centre against the step."""
    with styled(6.4, 2.8) as fig:
        ax = fig.add_subplot()
        ax.plot(spread["t"], spread["spread"], color=color(0), linewidth=1.6)
        ax.set_yscale("log" if (spread["spread"] > 0).all() else "linear")
        ax.set_xlabel("world step")
        ax.set_ylabel("spread")
        ax.set_title(title)
        return figure_uri(fig)


def share_curves(frame: pd.DataFrame, x: str, group: str, title: str, xlabel: str) -> str:
    """Basin share with its interval against ``x``, one line per value of ``group``."""
    with styled(7.0, 3.2) as fig:
        ax = fig.add_subplot()
        for i, (name, rows) in enumerate(frame.groupby(group, sort=False)):
            rows = rows.sort_values(x)
            ax.fill_between(rows[x], rows["low"], rows["high"], color=color(i), alpha=0.15, lw=0)
            ax.plot(rows[x], rows["share"], color=color(i), marker="o", ms=3.5, label=str(name))
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("basin share")
        ax.set_title(title)
        fig.legend(loc="outside right upper")
        return figure_uri(fig)
