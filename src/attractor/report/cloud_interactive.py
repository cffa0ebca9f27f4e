"""The ensemble cloud as a moving area: the interactive figures of the cloud section.

:func:`cloud_moving` shows one snapshot at a time in the cloud's fixed PCA plane
(:func:`attractor.report.cloud.cloud_coordinates`): every member's point, the area each basin
covers (its convex hull, filled), the ensemble mean, and in grey every snapshot's points for
reference; a slider steps through training and a play button runs it. :func:`cloud_paths`
is the interactive twin of the PNG trails: each member's path and the cloud's radius.
Hovering a point names the member, its basin and its plan row's factors; clicking one
selects that member on the whole page (:mod:`attractor.report.interactive`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial import ConvexHull, QhullError

from attractor.report.cloud import Cloud
from attractor.report.interactive import (
    AXIS,
    LAYOUT,
    Interactive,
    jsonable,
    member_hover,
    plotly,
    to_fragment,
)
from attractor.report.style import color

#: Columns of a plan that are bookkeeping, not factors.
_NOT_FACTORS = ("member", "status", "diverged_step")


def plan_factors(plan: pd.DataFrame) -> list[str]:
    """The plan's factors that differ between members (the ones worth naming on hover)."""
    return [c for c in plan.columns if c not in _NOT_FACTORS and plan[c].astype(str).nunique() > 1]


def _member_rows(plan: pd.DataFrame, factors: Sequence[str]) -> dict[int, list[Any]]:
    """Member id -> ``[member, *factor values]``: the ``customdata`` of its points."""
    rows = plan.set_index("member")[list(factors)] if factors else plan.set_index("member")[[]]
    return {
        int(m): [int(m), *(jsonable(v) for v in row)]
        for m, row in zip(rows.index, rows.itertuples(index=False), strict=True)
    }


def hull(xy: np.ndarray) -> np.ndarray:
    """The closed outline ``[k, 2]`` of the area the points ``xy`` cover.

    The convex hull for three or more points that span the plane; for points on one line
    (or two points), the segment between the two farthest apart; for one point or none,
    nothing (``[0, 2]``).
    """
    xy = np.unique(np.asarray(xy, dtype=float).reshape(-1, 2), axis=0)
    if len(xy) >= 3:
        try:
            corners = xy[ConvexHull(xy).vertices]  # counter-clockwise in 2-D
            return np.vstack([corners, corners[:1]])
        except QhullError:  # all on one line: fall through to the segment
            pass
    if len(xy) >= 2:
        centred = xy - xy.mean(0)
        along = centred @ np.linalg.svd(centred, full_matrices=False)[2][0]
        return xy[[int(along.argmin()), int(along.argmax())]]
    return np.zeros((0, 2))


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _range(values: np.ndarray) -> list[float]:
    """A fixed axis range over every snapshot (the plane does not move, so neither do axes)."""
    low, high = float(np.min(values)), float(np.max(values))
    pad = 0.06 * (high - low) if high > low else 1.0
    return [low - pad, high + pad]


def _axis_titles(cloud: Cloud) -> tuple[str, str]:
    r = cloud.explained_variance_ratio
    return f"PC1 ({100 * r[0]:.0f} % of variance)", f"PC2 ({100 * r[1]:.0f} %)"


def _frame_label(cloud: Cloud, snapshot: int) -> str:
    steps = sorted(cloud.points.loc[cloud.points["snapshot"] == snapshot, "step"].unique())
    if len(steps) == 1:
        return f"step {steps[0]:g}"
    return f"snapshot {snapshot} (steps {steps[0]:g}–{steps[-1]:g})"


def cloud_moving(
    cloud: Cloud, basins: dict[int, int] | None, plan: pd.DataFrame, height: int = 560
) -> Interactive:
    """The cloud at one snapshot at a time, with a slider over snapshots and a play button.

    Args:
        cloud: from :func:`~attractor.report.cloud.cloud_coordinates`.
        basins: member id -> basin label (colour and one area per basin); default one area.
        plan: the run's plan (one row per member), for the hover text.
        height: the figure's height in pixels.

    Returns:
        An interactive figure starting at the last snapshot (where training ended).
    """
    go = plotly()
    points = cloud.points
    snapshots = sorted(int(s) for s in points["snapshot"].unique())
    members = sorted(int(m) for m in points["member"].unique())
    label = {m: (basins or {}).get(m, 0) for m in members}
    groups = sorted(set(label.values()))
    factors = plan_factors(plan)
    rows = _member_rows(plan, factors)
    where = points.set_index(["snapshot", "member"])[["pc1", "pc2"]]
    hover = member_hover(["basin", *factors] if basins else factors)

    def at(snapshot: int) -> list[Any]:
        """The traces that move: per basin its area and its points, then the mean."""
        traces: list[Any] = []
        for basin in groups:
            mine = [m for m in members if label[m] == basin]
            # Every member keeps its position in the trace (missing: no point), so plotly's
            # selection, which is by point index, follows a member from frame to frame.
            xy = np.array(
                [
                    where.loc[(snapshot, m)].to_numpy()
                    if (snapshot, m) in where.index
                    else [np.nan, np.nan]
                    for m in mine
                ],
                dtype=float,
            )
            outline = hull(xy[~np.isnan(xy).any(1)])
            shade = color(basin)
            traces.append(
                go.Scatter(
                    x=outline[:, 0],
                    y=outline[:, 1],
                    mode="lines",
                    fill="toself",
                    fillcolor=_rgba(shade, 0.16),
                    line={"color": _rgba(shade, 0.7), "width": 1},
                    hoverinfo="skip",
                    name=f"basin {basin} area" if basins else "cloud area",
                    showlegend=False,
                )
            )
            data = [[rows[m][0], basin, *rows[m][1:]] if basins else rows[m] for m in mine]
            traces.append(
                go.Scatter(
                    x=xy[:, 0],
                    y=xy[:, 1],
                    mode="markers",
                    customdata=data,
                    hovertemplate=hover,
                    marker={
                        "size": 9,
                        "color": shade,
                        "line": {"color": "white", "width": 0.8},
                    },
                    selected={"marker": {"size": 15}},
                    unselected={"marker": {"opacity": 0.25}},
                    name=f"basin {basin}" if basins else "members",
                    showlegend=bool(basins),
                )
            )
        centre = cloud.mean[cloud.mean["snapshot"] == snapshot]
        traces.append(
            go.Scatter(
                x=centre["pc1"],
                y=centre["pc2"],
                mode="markers",
                marker={"symbol": "x", "size": 13, "color": "black"},
                name="ensemble mean",
                hovertemplate="ensemble mean<extra></extra>",
            )
        )
        return traces

    everything = go.Scatter(
        x=points["pc1"],
        y=points["pc2"],
        mode="markers",
        marker={"size": 4, "color": "#d0d0d0"},
        hoverinfo="skip",
        name="every snapshot",
    )
    last = snapshots[-1]
    moving = list(range(1, 1 + 2 * len(groups) + 1))  # every trace but the grey background
    frames = [go.Frame(data=at(s), traces=moving, name=str(s)) for s in snapshots]
    still = {"mode": "immediate", "frame": {"duration": 0, "redraw": False}}
    slider = {
        "active": len(snapshots) - 1,
        "currentvalue": {"prefix": "shown: ", "xanchor": "right", "font": {"size": 13}},
        "x": 0.14,
        "len": 0.86,
        "pad": {"t": 50},
        "steps": [
            {
                "label": _frame_label(cloud, s),
                "method": "animate",
                "args": [[str(s)], still | {"transition": {"duration": 0}}],
            }
            for s in snapshots
        ],
    }
    play = {
        "type": "buttons",
        "direction": "left",
        "showactive": False,
        "x": 0.0,
        "xanchor": "left",
        "y": 0.0,
        "yanchor": "top",
        "pad": {"t": 78},
        "buttons": [
            {
                "label": "▶ play",
                "method": "animate",
                "args": [
                    None,
                    {
                        "mode": "immediate",
                        "fromcurrent": False,
                        "frame": {"duration": 700, "redraw": False},
                        "transition": {"duration": 300, "easing": "cubic-in-out"},
                    },
                ],
            },
            {
                "label": "❚❚",
                "method": "animate",
                "args": [[None], still | {"transition": {"duration": 0}}],
            },
        ],
    }
    xtitle, ytitle = _axis_titles(cloud)
    fig = go.Figure(data=[everything, *at(last)], frames=frames)
    fig.update_layout(
        LAYOUT,
        title={"text": "the cloud through training (slider: snapshot)", "font": {"size": 13}},
        xaxis=AXIS | {"title": xtitle, "range": _range(points["pc1"].to_numpy())},
        yaxis=AXIS | {"title": ytitle, "range": _range(points["pc2"].to_numpy())},
        sliders=[slider],
        updatemenus=[play],
        legend={"orientation": "h", "y": 1.08, "x": 0},
        margin={"l": 60, "r": 20, "t": 70, "b": 40},
        hovermode="closest",
    )
    return to_fragment(fig, height)


def cloud_paths(
    cloud: Cloud, basins: dict[int, int] | None, plan: pd.DataFrame, height: int = 440
) -> Interactive:
    """Each member's path through training in the plane, and the cloud's radius per snapshot.

    Paths are faint lines from a hollow start to a filled end; the black path is the
    ensemble mean. The radius is plotted against the snapshot, labelled with its step
    (snapshots are log-spaced, so this reads like a log axis that still shows step 0).
    """
    go = plotly()
    from plotly.subplots import make_subplots

    factors = plan_factors(plan)
    rows = _member_rows(plan, factors)
    hover = member_hover(factors).replace("</b>", " · %{text}</b>", 1)
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.62, 0.38],
        horizontal_spacing=0.1,
        subplot_titles=("paths (hollow: init, filled: final)", "cloud radius (full probe space)"),
    )
    ordered = cloud.points.sort_values(["member", "snapshot"])
    for member, path in ordered.groupby("member", sort=True):
        m = int(member)
        basin = (basins or {}).get(m, 0)
        fig.add_trace(
            go.Scatter(
                x=path["pc1"],
                y=path["pc2"],
                mode="lines",
                line={"color": color(basin), "width": 1.2},
                opacity=0.45,
                meta={"member": m, "opacity": 0.45},
                customdata=[rows[m]] * len(path),
                text=[f"step {s:g}" for s in path["step"]],
                hovertemplate=hover,
                showlegend=False,
            ),
            row=1,
            col=1,
        )
    for end, filled in ((ordered.groupby("member").head(1), False),
                        (ordered.groupby("member").tail(1), True)):  # fmt: skip
        shades = [color((basins or {}).get(int(m), 0)) for m in end["member"]]
        fig.add_trace(
            go.Scatter(
                x=end["pc1"],
                y=end["pc2"],
                mode="markers",
                customdata=[rows[int(m)] for m in end["member"]],
                text=[f"step {s:g}" for s in end["step"]],
                hovertemplate=hover,
                marker={
                    "size": 8 if filled else 7,
                    "symbol": "circle" if filled else "circle-open",
                    "color": shades,
                    "line": {"color": "white" if filled else shades, "width": 0.8},
                },
                selected={"marker": {"size": 14}},
                unselected={"marker": {"opacity": 0.2}},
                showlegend=False,
            ),
            row=1,
            col=1,
        )
    mean = cloud.mean.sort_values("snapshot")
    fig.add_trace(
        go.Scatter(
            x=mean["pc1"],
            y=mean["pc2"],
            mode="lines+markers",
            line={"color": "black", "width": 2},
            marker={"size": 4},
            name="ensemble mean",
            hovertemplate="ensemble mean<extra></extra>",
            showlegend=False,
        ),
        row=1,
        col=1,
    )
    ticks = [
        f"{s:g}" if cloud.steps_agree else str(int(i))
        for s, i in zip(mean["step"], mean["snapshot"], strict=True)
    ]
    fig.add_trace(
        go.Scatter(
            x=mean["snapshot"],
            y=mean["radius"],
            mode="lines+markers",
            line={"color": "black", "width": 1.6},
            marker={"size": 5},
            text=ticks,
            hovertemplate="%{text}: radius %{y:.4g}<extra></extra>",
            showlegend=False,
        ),
        row=1,
        col=2,
    )
    xtitle, ytitle = _axis_titles(cloud)
    fig.update_layout(LAYOUT, hovermode="closest", margin={"l": 60, "r": 20, "t": 40, "b": 50})
    fig.update_xaxes(AXIS)
    fig.update_yaxes(AXIS)
    fig.update_xaxes(title=xtitle, row=1, col=1)
    fig.update_yaxes(title=ytitle, row=1, col=1)
    fig.update_xaxes(
        title="training step" if cloud.steps_agree else "snapshot",
        tickvals=list(mean["snapshot"]),
        ticktext=ticks,
        row=1,
        col=2,
    )
    fig.update_yaxes(title="mean distance to ensemble mean", rangemode="tozero", row=1, col=2)
    return to_fragment(fig, height)
