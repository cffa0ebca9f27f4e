"""Structural stability (``RUN/structural-KIND.json``): accuracy drop and KL vs perturbation level.

One section for every perturbation kind the run holds: per kind, the ensemble's KL and
accuracy-drop curves with their intervals, the area under the KL curve, and the table.
"""

from __future__ import annotations

import html

import pandas as pd

from attractor.report import plots
from attractor.report.page import figure, fmt, section, table
from attractor.report.sections import Context, Section
from attractor.runs.results import StoredResult


def _one(data: dict) -> str:
    """Panels (KL, accuracy drop vs level), a sentence about the AUC, and the curve table."""
    kind, curve = str(data["kind"]), pd.DataFrame(data["ensemble"])
    xlabel = "bits" if kind == "quantize" else f"{kind.replace('_', ' ')} level"
    uri = plots.series_panels(
        curve, ["kl", "acc_drop"], f"{kind}: mean over members, 95 % CI", x="level", xlabel=xlabel
    )
    auc = data.get("auc_ensemble") or {}
    ranked = sorted(data.get("auc", {}).items(), key=lambda item: item[1])
    stablest = html.escape(ranked[0][0]) if ranked else "–"
    least = html.escape(ranked[-1][0]) if ranked else "–"
    text = (
        f"<p>{html.escape(kind)}, {int(data['samples'])} sample(s) per level: area under the KL "
        "curve "
        f"{fmt(auc.get('value'))} [{fmt(auc.get('low'))}, {fmt(auc.get('high'))}] (mean over "
        "members); "
        f"stablest member {stablest}, least stable {least}.</p>"
    )
    return text + figure(uri, f"{kind} perturbation curves") + table(curve)


def render_structural(results: list[StoredResult], context: Context) -> str:
    """One section, a panel pair and table per perturbation kind (results ordered by name)."""
    lead = (
        "Trained members perturbed at inference, level by level: KL(unperturbed ‖ perturbed) in "
        "nats "
        "and the accuracy drop; intervals resample members and sampled masks / noises "
        "(multi-bootstrap). Flat curves mean a structurally stable model."
    )
    body = "".join(_one(stored.data) for stored in results)
    return section("structural", "Structural stability (model perturbations)", lead, body)


SECTION = Section("structural", 50, render_structural)
