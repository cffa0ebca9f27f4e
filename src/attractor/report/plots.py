"""Plots for the report: plain functions of arrays and tables that return PNG data URIs.

Every function draws on its own ``matplotlib.figure.Figure`` (no pyplot global state, so
the Agg canvas renders it and nothing needs a display) inside one shared style
(:mod:`attractor.report.style`), and
returns ``data:image/png;base64,...`` ready for an ``<img src>``: the report stays one
self-contained file. :func:`heatmap` is interactive on an interactive page (a plotly heat
map naming the two members and the value under the pointer,
:mod:`attractor.report.interactive`) and a PNG on a ``--static`` one; so are the line plots
:func:`series_panels`, :func:`path_curves` and :func:`band_plot`
(:mod:`attractor.report.lines_interactive`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

# Sections use the style through this module too (``plots.styled``, ``plots.color``).
from attractor.report import lines_interactive
from attractor.report.interactive import AXIS, LAYOUT, is_static, plotly, to_fragment
from attractor.report.style import color, colorscale, figure_uri, step_axis, styled


def heatmap(
    matrix: np.ndarray,
    labels: Sequence[object],
    title: str,
    *,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    boundaries: Sequence[int] = (),
) -> str:
    """A member × member matrix with a colourbar.

    Args:
        matrix: ``[members, members]`` values, already in display order.
        labels: member ids in the same order (tick labels).
        title: shown above the map.
        cmap: matplotlib colour map name.
        vmin: lower end of the colour scale (default: the data's minimum).
        vmax: upper end of the colour scale (default: the data's maximum).
        boundaries: positions where a new block (basin) starts; drawn as white lines.

    Returns:
        A PNG data URI on a static page, else an interactive figure (hover: both members
        and the value; a click selects the row's member on the whole page).
    """
    matrix = np.asarray(matrix, dtype=float)
    n = len(labels)
    if matrix.shape != (n, n):
        raise ValueError(
            f"heatmap '{title}': matrix has shape {matrix.shape} but there are {n} labels"
        )
    if not is_static():
        return _heatmap_interactive(matrix, labels, title, cmap, vmin, vmax, boundaries)
    side = min(6.0, 2.6 + 0.12 * n)
    with styled(side + 0.9, side) as fig:
        ax = fig.add_subplot()
        image = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.grid(False)
        # Every id is readable up to ~32 members; beyond that label a regular subset.
        stride = max(1, int(np.ceil(n / 32)))
        ticks = np.arange(0, n, stride)
        ax.set_xticks(ticks, [str(labels[i]) for i in ticks], rotation=90 if n > 12 else 0)
        ax.set_yticks(ticks, [str(labels[i]) for i in ticks])
        ax.set_xlabel("member")
        ax.set_ylabel("member")
        for start in boundaries:
            if 0 < start < n:
                ax.axhline(start - 0.5, color="white", linewidth=1.5)
                ax.axvline(start - 0.5, color="white", linewidth=1.5)
        ax.set_title(title)
        fig.colorbar(image, ax=ax, shrink=0.85)
        return figure_uri(fig)


def _heatmap_interactive(
    matrix: np.ndarray,
    labels: Sequence[object],
    title: str,
    cmap: str,
    vmin: float | None,
    vmax: float | None,
    boundaries: Sequence[int],
) -> str:
    """:func:`heatmap` as a plotly heat map: rows top-down as in the PNG, member ids as
    categories (the page's selection script finds a member's row and column by its id).
    """
    go = plotly()
    names = [str(label) for label in labels]
    n = len(names)
    fig = go.Figure(
        go.Heatmap(
            z=matrix,
            x=names,
            y=names,
            colorscale=colorscale(cmap),
            zmin=vmin,
            zmax=vmax,
            hovertemplate="member %{y} × member %{x}<br>%{z:.4g}<extra></extra>",
            colorbar={"thickness": 12, "len": 0.9},
            xgap=0,
            ygap=0,
        )
    )
    lines = {"color": "white", "width": 1.5}
    shapes = [
        shape
        for start in boundaries
        if 0 < start < n
        for shape in (
            {"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": start - 0.5,
             "y1": start - 0.5, "line": lines},
            {"type": "line", "yref": "paper", "y0": 0, "y1": 1, "x0": start - 0.5,
             "x1": start - 0.5, "line": lines},
        )
    ]  # fmt: skip
    axis = AXIS | {"type": "category", "showgrid": False, "ticks": "", "title": "member"}
    fig.update_layout(
        LAYOUT,
        title={"text": title, "font": {"size": 13}},
        xaxis=axis | {"tickangle": -90 if n > 12 else 0},
        yaxis=axis | {"autorange": "reversed"},
        shapes=shapes,
        margin={"l": 50, "r": 10, "t": 40, "b": 50},
    )
    return to_fragment(fig, height=440)


def series_panels(
    table: pd.DataFrame,
    columns: Sequence[str],
    title: str,
    *,
    x: str = "step",
    xlabel: str = "training step",
) -> str:
    """One small panel per column of ``table`` against ``x`` (training step, symlog axis).

    ``xlabel`` names the x axis when ``x`` is not a step (e.g. a perturbation level: the
    symlog axis is linear on [0, 1], so levels in that range read as on a linear axis).

    A column ``c`` with companions ``c_low`` and ``c_high`` is drawn with that band
    (e.g. a bootstrap CI around the mean pairwise JS).

    A PNG data URI on a static page, else an interactive figure (the same panels, bands
    filled, hover naming x and the value).
    """
    columns = [c for c in columns if c in table.columns]
    if not columns:
        raise ValueError(f"series_panels '{title}': none of the columns is in the table")
    table = table.sort_values(x)
    if not is_static():
        return lines_interactive.series_panels(table, columns, title, x, xlabel)
    ncols = min(3, len(columns))
    nrows = int(np.ceil(len(columns) / ncols))
    with styled(3.2 * ncols, 2.5 * nrows + 0.3) as fig:
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, column in zip(axes, columns, strict=False):
            ax.plot(
                table[x], table[column], color=color(0), marker="o", markersize=3, linewidth=1.5
            )
            if {f"{column}_low", f"{column}_high"} <= set(table.columns):
                ax.fill_between(
                    table[x],
                    table[f"{column}_low"],
                    table[f"{column}_high"],
                    color=color(0),
                    alpha=0.2,
                    linewidth=0,
                )
            step_axis(ax)
            ax.set_xlabel(xlabel)
            ax.set_title(column.replace("_", " "))
        for ax in axes[len(columns) :]:
            ax.set_visible(False)
        fig.suptitle(title)
        return figure_uri(fig)


def path_curves(
    paths: Sequence[tuple[str, pd.DataFrame, pd.DataFrame | None]],
    columns: Sequence[str] = ("loss", "error"),
) -> str:
    """Quantities along interpolation paths, one panel per column, one colour per path.

    Args:
        paths: ``(label, curve, aligned_curve)`` per path; curves have ``alpha`` and
            ``columns``; the aligned curve (or ``None``) is drawn dashed in the same colour.
        columns: which columns to draw, one panel each.

    Returns:
        A PNG data URI on a static page, else an interactive figure (hover: the pair, α and
        the value; a pair ``"a–b"`` carries its two member ids).
    """
    if not is_static():
        return lines_interactive.path_curves(paths, columns)
    with styled(3.6 * len(columns), 2.9) as fig:
        axes = fig.subplots(1, len(columns), squeeze=False).ravel()
        for i, (label, curve, aligned) in enumerate(paths):
            for ax, column in zip(axes, columns, strict=True):
                if column in curve:
                    ax.plot(
                        curve["alpha"],
                        curve[column],
                        color=color(i),
                        linewidth=1.5,
                        label=f"{label}",
                    )
                if aligned is not None and column in aligned:
                    ax.plot(
                        aligned["alpha"],
                        aligned[column],
                        color=color(i),
                        linewidth=1.5,
                        linestyle="--",
                        label=f"{label} aligned",
                    )
        for ax, column in zip(axes, columns, strict=True):
            ax.set_xlabel("α (0 = first member, 1 = second)")
            ax.set_title(column)
        handles, names = axes[0].get_legend_handles_labels()
        if handles:
            # Past a dozen paths the legend would hide the plot; the table names them all.
            fig.legend(handles[:12], names[:12], loc="outside right upper")
        return figure_uri(fig)


def band_plot(
    x: Sequence[float],
    mean: Sequence[float],
    low: Sequence[float],
    high: Sequence[float],
    *,
    title: str,
    ylabel: str,
    xlabel: str = "training step",
    threshold: float | None = None,
    onset: float | None = None,
) -> str:
    """A mean with its confidence band against step, with an optional threshold and onset marker.

    A PNG data URI on a static page, else an interactive figure (the band filled; hover: x,
    the mean and its interval).
    """
    if not is_static():
        return lines_interactive.band_plot(
            x,
            mean,
            low,
            high,
            title=title,
            ylabel=ylabel,
            xlabel=xlabel,
            threshold=threshold,
            onset=onset,
        )
    with styled(7.4, 3.2) as fig:
        ax = fig.add_subplot()
        ax.fill_between(x, low, high, color=color(0), alpha=0.2, linewidth=0, label="95 % CI")
        ax.plot(
            x,
            mean,
            color=color(0),
            marker="o",
            markersize=4,
            linewidth=1.5,
            label="mean over pairs",
        )
        if threshold is not None:
            ax.axhline(
                threshold,
                color="#555555",
                linestyle=":",
                linewidth=1.2,
                label=f"threshold {threshold:g}",
            )
        if onset is not None:
            ax.axvline(
                onset,
                color=color(1),
                linestyle="--",
                linewidth=1.2,
                label=f"stable from step {onset:g}",
            )
        step_axis(ax)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        fig.legend(loc="outside right upper")
        return figure_uri(fig)


def group_series(
    table: pd.DataFrame, columns: Sequence[str], group: str, title: str, *, x: str = "step"
) -> str:
    """One panel per column against ``x`` (symlog steps), a coloured line per value of ``group``."""
    columns = [c for c in columns if c in table.columns]
    if not columns:
        raise ValueError(f"group_series '{title}': none of the columns is in the table")
    ncols = min(3, len(columns))
    nrows = int(np.ceil(len(columns) / ncols))
    with styled(3.3 * ncols + 1.2, 2.5 * nrows + 0.3) as fig:
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, column in zip(axes, columns, strict=False):
            for i, (name, rows) in enumerate(table.groupby(group, sort=False)):
                rows = rows.sort_values(x)
                ax.plot(
                    rows[x],
                    rows[column],
                    color=color(i),
                    marker="o",
                    markersize=3,
                    linewidth=1.5,
                    label=str(name),
                )
            step_axis(ax)
            ax.set_title(column.replace("_", " "))
        for ax in axes[len(columns) :]:
            ax.set_visible(False)
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside right upper")
        fig.suptitle(title)
        return figure_uri(fig)


def interval_dots(table: pd.DataFrame, columns: Sequence[str], label: str, title: str) -> str:
    """One panel per column: each row of ``table`` a dot with its ``_low`` / ``_high`` interval."""
    columns = [c for c in columns if c in table.columns and table[c].notna().any()]
    if not columns:
        raise ValueError(f"interval_dots '{title}': none of the columns has values")
    ncols = min(4, len(columns))
    nrows = int(np.ceil(len(columns) / ncols))
    with styled(2.6 * ncols, 0.4 * len(table) * nrows + 1.2 * nrows + 0.3) as fig:
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        positions = np.arange(len(table))[::-1]
        for ax, column in zip(axes, columns, strict=False):
            for pos, (i, row) in zip(
                positions, enumerate(table.itertuples(index=False)), strict=True
            ):
                value, low, high = (
                    getattr(row, c) for c in (column, f"{column}_low", f"{column}_high")
                )
                ax.errorbar(
                    [value],
                    [pos],
                    xerr=[[value - low], [high - value]],
                    fmt="o",
                    color=color(i),
                    capsize=3,
                )
            ax.set_yticks(positions, [str(v) for v in table[label]])
            ax.set_ylim(-0.6, len(table) - 0.4)
            ax.set_title(column.replace("_", " "))
        for ax in axes[len(columns) :]:
            ax.set_visible(False)
        fig.suptitle(title)
        return figure_uri(fig)


def image_grid(frame: pd.DataFrame, by: str, title: str, per_row: int = 8) -> str:
    """Images (``pixels`` in [0, 1], ``shape`` per row or 8x8), one row of the grid per value
    of ``by``, labelled with it.
    """
    groups = list(frame.groupby(by, sort=True))
    with styled(0.9 * per_row + 1.1, 1.0 * len(groups) + 0.5) as fig:
        axes = fig.subplots(len(groups), per_row, squeeze=False)
        for row, (key, rows) in enumerate(groups):
            picks = rows.head(per_row)
            for col in range(per_row):
                ax = axes[row, col]
                ax.axis("off")
                if col < len(picks):
                    item = picks.iloc[col]
                    shape = list(item["shape"]) if "shape" in item else [8, 8]
                    image = np.asarray(item["pixels"], dtype=float).reshape(shape)
                    ax.imshow(image, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
            axes[row, 0].set_title(f"{by} {key}", fontsize=8, loc="left")
        fig.suptitle(title)
        return figure_uri(fig)
