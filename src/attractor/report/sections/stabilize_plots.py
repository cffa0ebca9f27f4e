"""Plots of the ``stabilize`` section: the Pareto front of error and spread, and which knob
moved the spread.

Plain functions of the stored tables (``stabilize.parquet``: one row per trial;
``stabilize.importance.parquet``: one row per knob) that return PNG data URIs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from attractor.report.style import color, figure_uri, styled

#: Colours: the front, the chosen trial, the tolerance band, a knob that raises the spread
#: (rho > 0) and one that lowers it (rho < 0).
FRONT, CHOSEN, BAND, RAISES, LOWERS = color(0), color(1), color(2), color(1), color(0)
OTHER = "#9a9a9a"


def _bars(frame: pd.DataFrame, key: str) -> np.ndarray:
    """``[2, rows]`` error-bar lengths below and above ``key`` (0 where an end is missing)."""
    value = frame[key].to_numpy(dtype=float)
    below = value - frame[f"{key}_low"].to_numpy(dtype=float)
    above = frame[f"{key}_high"].to_numpy(dtype=float) - value
    return np.nan_to_num(np.clip(np.stack([below, above]), 0.0, None))


def _wide(values: pd.Series) -> bool:
    """Whether positive ``values`` span enough decades to read better on a log axis."""
    values = values[np.isfinite(values)]
    return bool(len(values) > 1 and (values > 0).all() and values.max() / values.min() > 8)


def _log(ax: Axes, which: str) -> None:
    """Axis ``which`` (x or y) on a log scale, labelled plainly at 1, 2 and 5 of each decade
    (0.02, not 2x10^-2).
    """
    getattr(ax, f"set_{which}scale")("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _points(ax: Axes, rows: pd.DataFrame, **style: object) -> None:
    ax.errorbar(
        rows["error"],
        rows["spread"],
        xerr=_bars(rows, "error"),
        yerr=_bars(rows, "spread"),
        fmt="o",
        capsize=2,
        elinewidth=0.8,
        **style,
    )


def pareto_front(trials: pd.DataFrame, tolerance: float, spread: str, level: float) -> str:
    """Every trial's validation error against its spread, each with both intervals.

    The Pareto trials are coloured and joined (sorted by error), the chosen trial is a star,
    and the band from the best error to best error + ``tolerance`` (where the choice was
    made) is shaded. Trials with a non-finite objective are left out.
    """
    shown = trials[np.isfinite(trials["error"]) & np.isfinite(trials["spread"])]
    front = shown[shown["pareto"]].sort_values("error")
    others = shown[~shown["pareto"]]
    chosen = shown[shown["chosen"]]
    pct = f"{100 * level:.0f} %"
    with styled(7.4, 4.0) as fig:
        ax = fig.add_subplot()
        if len(shown):
            best = float(shown["error"].min())
            if tolerance > 0:
                ax.axvspan(best, best + tolerance, color=BAND, alpha=0.14, lw=0)
            ax.axvline(best, color=BAND, lw=0.8, ls=":")
        if len(others):
            _points(ax, others, color=OTHER, ms=4, alpha=0.8, label="trial")
        if len(front):
            ax.plot(front["error"], front["spread"], color=FRONT, lw=1.2, zorder=2)
            _points(ax, front, color=FRONT, ms=5, zorder=3, label="Pareto front")
            for row in front[~front["chosen"]].itertuples(index=False):
                ax.annotate(
                    str(row.trial),
                    (row.error, row.spread),
                    xytext=(4, 4),
                    textcoords="offset points",
                    fontsize=7,
                    color=FRONT,
                )
        if len(chosen):
            ax.scatter(
                chosen["error"],
                chosen["spread"],
                marker="*",
                s=220,
                color=CHOSEN,
                edgecolor="black",
                linewidth=0.6,
                zorder=4,
                label=f"chosen (trial {int(chosen['trial'].iloc[0])})",
            )
        handles, labels = ax.get_legend_handles_labels()
        band = f"best error + tolerance {tolerance:g}" if tolerance > 0 else "best error"
        handles.append(Patch(color=BAND, alpha=0.3))
        labels.append(band)
        fig.legend(handles, labels, loc="outside right upper")
        for which, key in (("x", "error"), ("y", "spread")):
            if _wide(shown[key]):
                _log(ax, which)
        ax.set_xlabel(f"validation error (bars: {pct} intervals)")
        ax.set_ylabel(f"spread: {spread}")
        ax.set_title("every trial: error against spread (lower left is better)")
        return figure_uri(fig)


def importance_bars(importance: pd.DataFrame, labels: dict[str, str]) -> str:
    """Each knob's importance for the spread (a bar, largest on top), coloured by the sign
    of its rank correlation ``rho`` with the spread and labelled with it.
    """
    rows = importance.sort_values("importance", ascending=True)
    rho = rows["rho"].to_numpy(dtype=float)
    colors = [OTHER if not np.isfinite(r) else RAISES if r > 0 else LOWERS for r in rho]
    with styled(7.4, 0.32 * len(rows) + 1.3) as fig:
        ax = fig.add_subplot()
        positions = np.arange(len(rows))
        values = rows["importance"].to_numpy(dtype=float)
        ax.barh(positions, values, color=colors, height=0.65)
        for pos, value, r in zip(positions, values, rho, strict=True):
            text = f"rho {r:+.2f}" if np.isfinite(r) else "rho –"
            ax.annotate(
                text, (value, pos), xytext=(4, 0), textcoords="offset points", va="center", size=7
            )
        ax.set_yticks(positions, [labels.get(k, k) for k in rows["knob"]])
        ax.set_xlim(0, max(1e-9, float(np.nanmax(values, initial=0.0))) * 1.25)
        ax.set_xlabel("share of the spread's variance over the trials (fANOVA)")
        ax.grid(axis="y", visible=False)
        fig.legend(
            [Patch(color=RAISES), Patch(color=LOWERS), Patch(color=OTHER)],
            ["higher value, more spread", "higher value, less spread", "no direction"],
            loc="outside right upper",
        )
        ax.set_title("which knob moved the spread")
        return figure_uri(fig)


__all__ = ["importance_bars", "pareto_front"]
