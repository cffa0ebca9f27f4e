"""Instability analysis (``instability.json`` of ``attractor instability``): barrier vs spawn step.

Reads the stored result's ``summary`` (one row per spawn step: ``barrier_error_mean`` and
its 95 % t-interval ``barrier_error_ci_low`` / ``_high``), ``onset``, ``onset_upper`` and
``threshold`` (:class:`attractor.experiments.instability.InstabilityResult`).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import pandas as pd

from attractor.report import plots
from attractor.report.page import figure, section, table
from attractor.report.sections import Context, Section
from attractor.runs.results import StoredResult

#: The stored summary's columns under the names the plot and table use.
_RENAME = {
    "barrier_error_mean": "barrier_mean",
    "barrier_error_ci_low": "low",
    "barrier_error_ci_high": "high",
}


def _verdict(spec: Mapping[str, Any]) -> str:
    """One sentence: from which spawn step on the copies stay together (and the cautious bound)."""
    onset, threshold = spec.get("onset"), spec.get("threshold")
    verdict = (
        f"stable from spawn step {onset}" if onset is not None else "never fell below the threshold"
    )
    text = f"<p>Copies spawned from the parent are {html.escape(verdict)}"
    text += f" (threshold {threshold:g})." if threshold is not None else "."
    if "onset_upper" in spec:  # the conservative reading: the whole CI below the threshold
        upper = spec["onset_upper"]
        text += " Upper 95 % bound below it " + (
            f"from spawn step {upper}." if upper is not None else "at no spawn step."
        )
    return text + "</p>"


def instability_section(curve: pd.DataFrame, spec: Mapping[str, Any]) -> str:
    """Section ``instability``: ``curve`` (spawn_step, barrier_mean, low, high), the verdict."""
    curve = curve.sort_values("spawn_step")
    shown = [c for c in ("spawn_step", "pairs", "barrier_mean", "low", "high") if c in curve]
    uri = plots.band_plot(
        curve["spawn_step"],
        curve["barrier_mean"],
        curve["low"],
        curve["high"],
        title="error barrier between copies spawned at step k",
        ylabel="error barrier",
        xlabel="spawn step k",
        threshold=spec.get("threshold"),
        onset=spec.get("onset"),
    )
    text = _verdict(spec) if "onset" in spec else ""
    lead = (
        "A parent is copied at step k and the copies continue with different data orders; "
        "where the barrier between them drops to near zero, training has become stable."
    )
    return section(
        "instability",
        "Instability analysis",
        lead,
        text + figure(uri, "barrier vs spawn step") + table(curve[shown]),
    )


def render_instability(results: list[StoredResult], context: Context) -> str:
    """The section of every stored instability result (normally one)."""
    parts = []
    for stored in results:
        summary = stored.data.get("summary")
        frame = pd.DataFrame(summary) if summary else stored.table("summary")
        parts.append(instability_section(frame.rename(columns=_RENAME), stored.data))
    return "".join(parts)


SECTION = Section("instability", 40, render_instability)
