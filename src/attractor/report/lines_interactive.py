"""Line plots as interactive figures: the twins of :func:`~attractor.report.plots.series_panels`,
:func:`~attractor.report.plots.path_curves` and :func:`~attractor.report.plots.band_plot`.

Same data, titles, axes and colours as the PNGs; intervals are filled areas and hovering
a point names what it is (the pair, the column) with its x and y values. Training steps
sit on the PNGs' symlog axis (linear on [0, 1], logarithmic beyond, :func:`symlog`):
plotly has no such axis, so x is drawn transformed, ticks are labelled with the steps, and
the hover text names the untransformed value.

Member selection (:data:`attractor.report.interactive.SELECT_JS`): an interpolation path
is between two members, so its trace carries both ids in ``customdata`` (``[a, b]`` at
every point) and its drawing mode is ``"lines"``: the page's script does not treat its
points as one member's, and a click on a path selects its first member. Spread and band
plots are about the whole ensemble and carry no member ids (and no ``customdata``, which
the script would read as one).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from attractor.report.interactive import AXIS, LAYOUT, Interactive, html_text, plotly, to_fragment
from attractor.report.style import color

#: The PNGs' symlog axis (:func:`attractor.report.style.step_axis`), as matplotlib's
#: SymmetricalLogTransform computes it: [0, 1] spans 0.5 / (1 - 1/10) of a decade.
_LINTHRESH, _LINSCALE, _BASE = 1.0, 0.5, 10.0
_LINSCALE_ADJ = _LINSCALE / (1.0 - 1.0 / _BASE)
#: A pair's label as the LMC section writes it ("3–7"): its two member ids.
_PAIR = re.compile(r"^\s*(-?\d+)\s*[–-]\s*(-?\d+)\s*$")


def symlog(values: Any) -> np.ndarray:
    """``values`` on matplotlib's symlog scale (linthresh 1, linscale 0.5, base 10)."""
    a = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        logged = (
            np.sign(a)
            * _LINTHRESH
            * (_LINSCALE_ADJ + np.log(np.abs(a) / _LINTHRESH) / np.log(_BASE))
        )
    return np.where(np.abs(a) <= _LINTHRESH, a * _LINSCALE_ADJ, logged)


class _StepAxis:
    """How x values are drawn: on the symlog scale with labelled ticks, or as they are.

    Values that all lie within [-1, 1] are on the scale's linear part, so they are drawn
    as they are with plotly's own ticks (a perturbation level in [0, 1], say).
    """

    def __init__(self, values: Sequence[np.ndarray]) -> None:
        finite = np.concatenate([np.asarray(v, dtype=float).ravel() for v in values])
        finite = finite[np.isfinite(finite)]
        if finite.size == 0:
            finite = np.zeros(1)
        self.logged = bool(np.abs(finite).max() > _LINTHRESH)
        low, high = min(0.0, float(finite.min())), float(finite.max())
        left, right = float(self(low)), float(self(high))
        # The PNG's x limits: from 0 (or below, for negative values), 5 % margin on the right.
        self.range = [left, right + 0.05 * (right - left if right > left else 1.0)]
        self.high = high

    def __call__(self, values: Any) -> np.ndarray:
        a = np.asarray(values, dtype=float)
        return symlog(a) if self.logged else a

    def layout(self, title: str) -> dict[str, Any]:
        """The x axis's settings: its title, range and (on the symlog scale) labelled ticks."""
        axis = AXIS | {"title": title, "range": self.range}
        if not self.logged:
            return axis
        top = int(np.ceil(np.log10(max(self.high, 1.0))))
        decades = [10.0**k for k in range(top + 1)]
        # Few decades read better with 2 and 5 between them (the hover names exact values).
        mantissas = (1, 2, 5) if top <= 2 else (1,)
        ticks = [0.0] + [m * d for d in decades for m in mantissas if m * d <= self.high * 1.05]
        return axis | {
            "tickmode": "array",
            "tickvals": [float(v) for v in self(ticks)],
            "ticktext": [f"{v:g}" for v in ticks],
        }


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _band(go: Any, x: np.ndarray, low: Any, high: Any, shade: str, **kwargs: Any) -> Any:
    """A filled area between ``low`` and ``high`` (rows where either is missing left out)."""
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    keep = np.isfinite(x) & np.isfinite(low) & np.isfinite(high)
    return go.Scatter(
        x=np.concatenate([x[keep], x[keep][::-1]]),
        y=np.concatenate([high[keep], low[keep][::-1]]),
        mode="lines",
        fill="toself",
        fillcolor=_rgba(shade, 0.2),
        line={"width": 0},
        hoverinfo="skip",
        **kwargs,
    )


def _number(value: float) -> str:
    return "–" if not np.isfinite(value) else f"{value:.4g}"


def series_panels(
    table: pd.DataFrame, columns: Sequence[str], title: str, x: str, xlabel: str
) -> Interactive:
    """:func:`attractor.report.plots.series_panels` (columns already checked, table sorted)."""
    go = plotly()
    from plotly.subplots import make_subplots

    ncols = min(3, len(columns))
    nrows = int(np.ceil(len(columns) / ncols))
    fig = make_subplots(
        rows=nrows,
        cols=ncols,
        subplot_titles=[c.replace("_", " ") for c in columns],
        horizontal_spacing=0.08,
        vertical_spacing=min(0.25, 0.5 / nrows),
    )
    xs = table[x].to_numpy(dtype=float)
    axis = _StepAxis([xs])
    drawn = axis(xs)
    name = html_text(xlabel)
    for i, column in enumerate(columns):
        row, col = i // ncols + 1, i % ncols + 1
        ys = table[column].to_numpy(dtype=float)
        text = [
            f"{name} {v:g}<br>{html_text(column)} = {_number(y)}"
            for v, y in zip(xs, ys, strict=True)
        ]
        if {f"{column}_low", f"{column}_high"} <= set(table.columns):
            low, high = table[f"{column}_low"], table[f"{column}_high"]
            fig.add_trace(_band(go, drawn, low, high, color(0), showlegend=False), row=row, col=col)
            text = [
                f"{t}<br>interval [{_number(lo)}, {_number(hi)}]"
                for t, lo, hi in zip(text, low.to_numpy(float), high.to_numpy(float), strict=True)
            ]
        fig.add_trace(
            go.Scatter(
                x=drawn,
                y=ys,
                mode="lines+markers",
                line={"color": color(0), "width": 1.5},
                marker={"size": 5, "color": color(0)},
                text=text,
                hovertemplate="%{text}<extra></extra>",
                cliponaxis=False,
                showlegend=False,
            ),
            row=row,
            col=col,
        )
        fig.update_xaxes(axis.layout(xlabel), row=row, col=col)
        fig.update_yaxes(AXIS, row=row, col=col)
    fig.update_layout(
        LAYOUT,
        title={"text": html_text(title), "font": {"size": 13}, "x": 0.5},
        hovermode="closest",
        margin={"l": 60, "r": 20, "t": 70, "b": 50},
    )
    return to_fragment(fig, height=60 + 280 * nrows)


def path_curves(
    paths: Sequence[tuple[str, pd.DataFrame, pd.DataFrame | None]], columns: Sequence[str]
) -> Interactive:
    """:func:`attractor.report.plots.path_curves`: one panel per column, a colour per path.

    A label of the form ``"a–b"`` names the pair's members: every point of its traces
    carries ``[a, b]`` as ``customdata``.
    """
    go = plotly()
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1, cols=len(columns), subplot_titles=list(columns), horizontal_spacing=0.1
    )
    for i, (label, curve, aligned) in enumerate(paths):
        pair = _PAIR.match(str(label))
        members = [int(pair.group(1)), int(pair.group(2))] if pair else None
        for aligned_too, frame in ((False, curve), (True, aligned)):
            if frame is None:
                continue
            name = f"{label} aligned" if aligned_too else f"{label}"
            shown = False  # one legend entry per path, linked to its line in every panel
            for col, column in enumerate(columns, start=1):
                if column not in frame:
                    continue
                alpha = frame["alpha"].to_numpy(dtype=float)
                fig.add_trace(
                    go.Scatter(
                        x=alpha,
                        y=frame[column].to_numpy(dtype=float),
                        mode="lines",
                        line={
                            "color": color(i),
                            "width": 1.5,
                            "dash": "dash" if aligned_too else "solid",
                        },
                        name=name,
                        legendgroup=name,
                        showlegend=not shown,
                        customdata=[members] * len(alpha) if members else None,
                        hovertemplate=(
                            f"pair {html_text(name)}<br>α = %{{x:.3f}}<br>"
                            f"{html_text(column)} = %{{y:.4g}}<extra></extra>"
                        ),
                    ),
                    row=1,
                    col=col,
                )
                shown = True
    for col in range(1, len(columns) + 1):
        fig.update_xaxes(AXIS | {"title": "α (0 = first member, 1 = second)"}, row=1, col=col)
        fig.update_yaxes(AXIS, row=1, col=col)
    fig.update_layout(
        LAYOUT,
        hovermode="closest",
        legend={"x": 1.02, "y": 1, "xanchor": "left"},
        margin={"l": 60, "r": 20, "t": 40, "b": 50},
    )
    return to_fragment(fig, height=360)


def band_plot(
    x: Sequence[float],
    mean: Sequence[float],
    low: Sequence[float],
    high: Sequence[float],
    *,
    title: str,
    ylabel: str,
    xlabel: str,
    threshold: float | None,
    onset: float | None,
) -> Interactive:
    """:func:`attractor.report.plots.band_plot`: the band filled, the threshold and the onset
    as lines across the whole plot.
    """
    go = plotly()
    xs, ms = np.asarray(x, dtype=float), np.asarray(mean, dtype=float)
    lows, highs = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    axis = _StepAxis([xs] if onset is None else [xs, np.array([onset], dtype=float)])
    drawn = axis(xs)
    ys = np.concatenate([ms, lows, highs, [] if threshold is None else [threshold]])
    ys = ys[np.isfinite(ys)]
    bottom, top = (float(ys.min()), float(ys.max())) if ys.size else (0.0, 1.0)
    pad = 0.05 * (top - bottom) if top > bottom else 0.5
    yrange = [bottom - pad, top + pad]
    name = html_text(xlabel)
    text = [
        f"{name} {v:g}<br>{html_text(ylabel)} = {_number(m)}<br>"
        f"95 % CI [{_number(lo)}, {_number(hi)}]"
        for v, m, lo, hi in zip(xs, ms, lows, highs, strict=True)
    ]
    traces = [
        _band(go, drawn, lows, highs, color(0), name="95 % CI"),
        go.Scatter(
            x=drawn,
            y=ms,
            mode="lines+markers",
            line={"color": color(0), "width": 1.5},
            marker={"size": 7, "color": color(0)},
            name="mean over pairs",
            text=text,
            hovertemplate="%{text}<extra></extra>",
            cliponaxis=False,
        ),
    ]
    if threshold is not None:
        traces.append(
            go.Scatter(
                x=axis.range,
                y=[threshold, threshold],
                mode="lines",
                line={"color": "#555555", "width": 1.2, "dash": "dot"},
                name=f"threshold {threshold:g}",
                hoverinfo="skip",
            )
        )
    if onset is not None:
        at = float(axis([onset])[0])
        traces.append(
            go.Scatter(
                x=[at, at],
                y=yrange,
                mode="lines",
                line={"color": color(1), "width": 1.2, "dash": "dash"},
                name=f"stable from step {onset:g}",
                hoverinfo="skip",
            )
        )
    fig = go.Figure(traces)
    fig.update_layout(
        LAYOUT,
        title={"text": html_text(title), "font": {"size": 13}},
        xaxis=axis.layout(xlabel),
        yaxis=AXIS | {"title": ylabel, "range": yrange},
        hovermode="closest",
        legend={"x": 1.02, "y": 1, "xanchor": "left"},
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    return to_fragment(fig, height=360)
