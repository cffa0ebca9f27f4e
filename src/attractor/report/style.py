"""The report's figure style: one matplotlib style, one palette, and the PNG encoding
(and :func:`colorscale`, the same colour maps for the interactive figures).

:mod:`attractor.report.plots` draws every kind of plot inside :func:`styled` and encodes it
with :func:`figure_uri`; sections that draw their own figure use the same two.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

#: Readable small-multiple defaults shared by every figure of a report.
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#777777",
    "axes.grid": True,
    "grid.color": "#e6e6e6",
    "grid.linewidth": 0.6,
    "savefig.dpi": 110,
}
#: Paul Tol's colour-blind-safe qualitative colours; basin i and pair i use colour i everywhere.
PALETTE = ("#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#EE7733", "#009988")


def color(i: int) -> str:
    """The report's colour for group ``i`` (basin, pair), cycling through :data:`PALETTE`."""
    return PALETTE[int(i) % len(PALETTE)]


@contextmanager
def styled(width: float, height: float) -> Iterator[Figure]:
    """A figure of ``width x height`` inches drawn in :data:`STYLE`."""
    with matplotlib.rc_context(STYLE):
        yield Figure(figsize=(width, height), layout="constrained")


def figure_uri(fig: Figure) -> str:
    """Encode ``fig`` as a PNG data URI (no software metadata, so equal plots give equal bytes)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", facecolor="white", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def colorscale(cmap: str, stops: int = 11) -> list[list[float | str]]:
    """The matplotlib colour map ``cmap`` as a plotly colour scale, so an interactive heat
    map has exactly the colours of its PNG.
    """
    scale = matplotlib.colormaps[cmap]
    positions = np.linspace(0.0, 1.0, stops)
    return [[float(p), matplotlib.colors.to_hex(scale(float(p)))] for p in positions]


def step_axis(ax: Axes) -> None:
    """Log-like x axis for training steps that still shows step 0 at the left edge.

    Snapshots are log-spaced and start at 0, where a log axis is undefined; symlog is
    linear on [0, 1] and logarithmic beyond, so init sits at the edge and later steps
    spread out as on a log axis.
    """
    ax.set_xscale("symlog", linthresh=1.0, linscale=0.5)
    ax.set_xlim(left=0)
    # Plain numbers (0, 1, 10, 100) read faster than 10^k next to a literal 0.
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.set_xlabel("training step")
