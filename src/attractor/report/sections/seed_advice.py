"""Seed advice (``seed-advice.json`` of ``attractor seed-advice``): the majority basin, and
from which step a member's final basin can be read off its predictions.
"""

from __future__ import annotations

import html

import pandas as pd

from attractor.report.page import figure, section, table
from attractor.report.sections import Context, Section
from attractor.report.style import color, figure_uri, styled
from attractor.runs.results import StoredResult


def _curve(frame: pd.DataFrame) -> str:
    with styled(6.4, 3.0) as fig:
        ax = fig.add_subplot()
        ax.fill_between(frame["step"], frame["low"], frame["high"], color=color(0), alpha=0.2, lw=0)
        ax.plot(frame["step"], frame["accuracy"], color=color(0), marker="o", ms=3.5)
        ax.plot(frame["step"], frame["chance"], color=color(3), ls="--", label="chance (majority)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("step")
        ax.set_ylabel("final basin predicted")
        ax.legend(loc="lower right")
        return figure_uri(fig)


def render(results: list[StoredResult], context: Context) -> str:
    parts = []
    for stored in results:
        data = stored.data
        frame = pd.DataFrame(data.get("table") or [])
        readable = data.get("readable")
        when = (
            f"from step {readable} on a member's final basin is predicted right at least "
            f"{100 * data.get('target', 0.9):.0f} % of the time"
            if readable is not None
            else "no snapshot step predicts the final basins that well"
        )
        body = (
            f"<p>{data.get('basins')} basin(s); the majority (basin {data.get('majority')}) holds "
            f"{100 * float(data.get('share', 0)):.0f} % of the members. {html.escape(when)}.</p>"
        )
        if not frame.empty:
            body += figure(_curve(frame), "final basin predicted from each step") + table(frame)
        lead = (
            "Each member's final basin guessed from its predictions at each snapshot (nearest "
            "centroid of the other members): stop seeds heading for a minority basin early."
        )
        parts.append(section("seed-advice", "Seed advice", lead, body))
    return "".join(parts)


SECTION = Section(kind="seed-advice", order=77, render=render)
