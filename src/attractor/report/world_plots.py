"""Plots of the world level: basin map, phase portrait, curves (final states per
basin: :func:`attractor.report.plots.image_grid`).

Plain functions of the world result's tables (columns: :data:`attractor.world.result.TABLES`)
that return PNG data URIs, in the report's shared style.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from attractor.report.interactive import AXIS, LAYOUT, is_static, plotly, to_fragment
from attractor.report.style import color, figure_uri, styled

#: At most this many frames in the moving phase portrait (world steps thinned evenly).
MAX_FRAMES = 40


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
    """Every (member, initial state) trajectory in the world's 2-D projection; start dots.

    On an interactive page (:mod:`attractor.report.interactive`) the trajectories are faint
    lines and every state's current point moves along its line with a slider over world
    steps; hovering a point names its member and initial state.
    """
    if not is_static():
        return _phase_portrait_moving(paths, title, xlabel, ylabel)
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


def _phase_portrait_moving(paths: pd.DataFrame, title: str, xlabel: str, ylabel: str) -> str:
    """:func:`phase_portrait` as a plotly figure with a frame per (thinned) world step."""
    go = plotly()
    paths = paths.sort_values(["member", "state", "t"])
    traces = []
    for member, rows in paths.groupby("member", sort=True):
        # One trace per member (its states' lines split by gaps), so selection fades by member.
        parts = [
            pd.concat([part[["px", "py"]], pd.DataFrame({"px": [None], "py": [None]})])
            for _, part in rows.groupby("state", sort=True)
        ]
        line = pd.concat(parts)
        traces.append(
            go.Scatter(
                x=line["px"],
                y=line["py"],
                mode="lines",
                line={"color": color(int(member)), "width": 1},
                opacity=0.4,
                meta={"member": int(member), "opacity": 0.4},
                hoverinfo="skip",
                showlegend=False,
            )
        )
    times = np.sort(paths["t"].unique())
    if len(times) > MAX_FRAMES:
        times = times[np.unique(np.round(np.linspace(0, len(times) - 1, MAX_FRAMES)).astype(int))]
    starts = paths.groupby(["member", "state"], sort=True).head(1)[["member", "state"]]

    def at(t: float) -> object:
        """Each trajectory's point at world step ``t`` (its last one if it ended before)."""
        upto = paths[paths["t"] <= t].groupby(["member", "state"], sort=True).tail(1)
        here = starts.merge(upto, on=["member", "state"], how="left")
        return go.Scatter(
            x=here["px"],
            y=here["py"],
            mode="markers",
            customdata=here[["member", "state"]].to_numpy().tolist(),
            hovertemplate="<b>member %{customdata[0]}</b><br>initial state %{customdata[1]}"
            "<extra></extra>",
            marker={"size": 7, "color": [color(int(m)) for m in here["member"]]},
            selected={"marker": {"size": 12}},
            unselected={"marker": {"opacity": 0.2}},
            showlegend=False,
        )

    moving = [len(traces)]
    frames = [go.Frame(data=[at(t)], traces=moving, name=f"{t:g}") for t in times]
    still = {"mode": "immediate", "frame": {"duration": 0, "redraw": False}}
    slider = {
        "active": 0,
        "currentvalue": {"prefix": "world step ", "xanchor": "right"},
        "pad": {"t": 50},
        "steps": [
            {
                "label": f"{t:g}",
                "method": "animate",
                "args": [[f"{t:g}"], still | {"transition": {"duration": 0}}],
            }
            for t in times
        ],
    }
    fig = go.Figure(data=[*traces, at(times[0])], frames=frames)
    fig.update_layout(
        LAYOUT,
        title={"text": title, "font": {"size": 13}},
        xaxis=AXIS | {"title": xlabel},
        yaxis=AXIS | {"title": ylabel},
        sliders=[slider],
        hovermode="closest",
    )
    return to_fragment(fig, height=520)
