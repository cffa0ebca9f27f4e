"""Figures of the comparison page: two runs on shared axes, so their difference shows.

Both draw in the report's style (:mod:`attractor.report.style`), run A in the palette's
first colour and run B in its second everywhere on the page, and return PNG data URIs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from attractor.report.cloud import Cloud
from attractor.report.style import color, figure_uri, step_axis, styled

#: Runs in the order and colours the page uses.
RUNS = ("A", "B")


def final_strips(final: pd.DataFrame, metrics: Sequence[str]) -> str:
    """One panel per metric: each member of A and of B a dot (jittered), with a box per run.

    ``final`` has one row per member: ``run`` ("A" or "B") and the metric columns.
    """
    ncols = min(4, len(metrics))
    nrows = int(np.ceil(len(metrics) / ncols))
    # A fixed jitter (seeded): equal tables draw equal figures.
    rng = np.random.default_rng(0)
    with styled(2.5 * ncols + 0.4, 2.3 * nrows + 0.3) as fig:
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, metric in zip(axes, metrics, strict=False):
            groups = [final.loc[final["run"] == run, metric].dropna().to_numpy() for run in RUNS]
            kept = [(i, g) for i, g in enumerate(groups) if len(g)]
            ax.boxplot(
                [g for _, g in kept],
                positions=[i for i, _ in kept],
                widths=0.5,
                showfliers=False,
                medianprops={"color": "#333333"},
            )
            for i, values in kept:
                jitter = rng.uniform(-0.12, 0.12, len(values))
                ax.plot(i + jitter, values, "o", color=color(i), markersize=4, alpha=0.8)
            ax.set_xticks(range(len(RUNS)), list(RUNS))
            ax.set_xlim(-0.6, len(RUNS) - 0.4)
            ax.set_title(metric.replace("_", " "))
        for ax in axes[len(metrics) :]:
            ax.set_visible(False)
        fig.suptitle("final metrics, one dot per member")
        return figure_uri(fig)


def radius_curves(clouds: Mapping[str, Cloud]) -> str:
    """Each run's cloud radius (members' mean distance from their mean, on the shared probe)
    through training, both on one axis.
    """
    with styled(5.2, 2.8) as fig:
        ax = fig.add_subplot()
        for i, run in enumerate(RUNS):
            if run not in clouds:
                continue
            mean = clouds[run].mean.sort_values("step")
            ax.plot(mean["step"], mean["radius"], "o-", color=color(i), markersize=3, label=run)
        step_axis(ax)
        ax.set_ylabel("cloud radius")
        ax.legend()
        ax.set_title("cloud radius through training")
        return figure_uri(fig)
