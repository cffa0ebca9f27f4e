"""The sensitivity section: which plan factor drives the spread (``attractor sensitivity``).

One section shows the three kinds together (``sensitivity-variance``, ``-sobol``,
``-influence``): whichever of them the run holds, each under its own heading.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from attractor.report import plots
from attractor.report.page import figure, section, table
from attractor.report.sections import Context, Section
from attractor.runs.results import StoredResult

#: Columns shown per part, in order (the files hold more).
_VARIANCE = ["outcome", "effect", "share", "share_low", "share_high", "ss_share", "with_residual"]
_SOBOL = ["outcome", "factor", "S1", "S1_low", "S1_high", "ST", "ST_low", "ST_high"]
_INFLUENCE = [
    "group",
    "members",
    "accuracy_effect",
    "accuracy_low",
    "accuracy_high",
    "spread_without",
    "spread_with",
    "spread_change",
]


def _shares_figure(rows: pd.DataFrame, label: str, value: str, title: str) -> str:
    """One horizontal bar per (outcome, label) with its interval, outcomes stacked as panels."""
    outcomes = list(dict.fromkeys(rows["outcome"]))
    with plots.styled(7.2, 0.9 + 0.32 * len(rows)) as fig:
        axes = fig.subplots(1, len(outcomes), squeeze=False, sharey=True).ravel()
        for ax, outcome in zip(axes, outcomes, strict=True):
            part = rows[rows["outcome"] == outcome]
            y = np.arange(len(part))[::-1]
            errors = [part[value] - part[f"{value}_low"], part[f"{value}_high"] - part[value]]
            ax.barh(y, part[value], xerr=np.clip(errors, 0, None), color=plots.color(0), capsize=2)
            ax.set_yticks(y, [str(v) for v in part[label]])
            ax.set_xlim(0, 1.05)
            ax.set_title(str(outcome).replace("_", " "), fontsize=9)
        fig.suptitle(title)
        return plots.figure_uri(fig)


def render_sensitivity(results: list[StoredResult], context: Context) -> str:
    """Section ``sensitivity`` from the stored ``sensitivity-*`` results of a run."""
    return sensitivity_section({r.kind.removeprefix("sensitivity-"): r.data for r in results})


def sensitivity_section(parts: Mapping[str, Any]) -> str:
    """Section ``sensitivity`` from the ``variance`` / ``sobol`` / ``influence`` JSON of a run."""
    body = []
    if parts.get("variance"):
        rows = pd.DataFrame(parts["variance"]["table"])
        body.append("<h3>Variance components</h3>")
        body.append(
            figure(
                _shares_figure(
                    rows, "effect", "share", "share of variance per factor (95 % interval)"
                ),
                "variance shares",
            )
        )
        body.append(table(rows[[c for c in _VARIANCE if c in rows]]))
    if parts.get("sobol"):
        rows = pd.DataFrame(parts["sobol"]["table"])
        body.append("<h3>Sobol indices</h3>")
        body.append(
            figure(
                _shares_figure(
                    rows, "factor", "ST", "total Sobol index per factor (95 % interval)"
                ),
                "Sobol indices",
            )
        )
        body.append(table(rows[[c for c in _SOBOL if c in rows]]))
    if parts.get("influence"):
        rows = pd.DataFrame(parts["influence"]["table"])
        body.append(
            "<h3>Leave-group-out influence (reference: "
            f"{parts['influence'].get('reference', '–')})</h3>"
        )
        body.append(table(rows[[c for c in _INFLUENCE if c in rows]]))
    lead = (
        "Which factor of the plan the outcomes' variance comes from: variance components for "
        "crossed discrete factors, "
        "Sobol indices (first order S1, total ST) for continuous ones, and how far holding out "
        "each data group moves the result."
    )
    return section("sensitivity", "Which factor drives the spread", lead, "".join(body))


SECTION = Section(
    "sensitivity-variance",
    70,
    render_sensitivity,
    also=("sensitivity-sobol", "sensitivity-influence"),
)
