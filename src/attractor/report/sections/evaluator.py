"""The learned evaluator (``evaluator.json`` of ``attractor evaluator``): do the human's
example resamples, through their evaluators, lead to models in one basin?

Reads the stored :class:`attractor.stack.learned.result.EvaluatorResult`: its ``summary``
and the ``spread``, ``sources``, ``rounds``, ``members``, ``structural`` tables (in the
JSON), and ``trajectories``, ``examples``, ``samples`` and ``suggestions``.
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from attractor.report import evaluator_plots
from attractor.report.page import facts, figure, percent, section, table
from attractor.report.plots import image_grid
from attractor.report.sections import Context, Section
from attractor.runs.results import StoredResult


def _preference(preferred: Any) -> str:
    if isinstance(preferred, list):
        return "digit classes " + ", ".join(str(c) for c in preferred)
    return f"texts by the rule {preferred!r}"


def _verdict(s: dict[str, Any]) -> str:
    """The answer first: did training on the evaluators raise the true preference, how far
    apart the models land, what drives it, and whether proxy and truth part.
    """
    base, final = s.get("true_base", {}), s.get("true_final", {})
    parts = [
        f"Fine-tuning on the evaluators moved the true preference from {percent(base.get('true'))} "
        f"to {percent(final.get('true'))} (95 % CI {percent(final.get('true_low'))} – "
        f"{percent(final.get('true_high'))}) over {s.get('members')} models."
    ]
    sd = (s.get("spread") or {}).get("true preference (sd across members)")
    if sd:
        parts.append(
            f" Across models it varies by {percent(sd['value'])} (sd; {percent(sd['low'])} – "
            f"{percent(sd['high'])})."
        )
    top = s.get("dominant")
    if top:
        parts.append(
            f" The factor that adds most of that variance: <em>{html.escape(top['factor'])}</em> "
            f"({percent(top['share'])})."
        )
    judged = s.get("evaluators") or {}
    if judged:
        parts.append(
            f" The {judged.get('evaluators')} evaluators agree with the rule on "
            f"{percent(judged.get('accuracy'))} of held-out digits and split on "
            f"{percent(judged.get('split'))} of them."
        )
    parting = s.get("parting") or {}
    if parting:
        when = (
            f", at round {parting['median']:g} (median)"
            if parting.get("median") is not None
            else ""
        )
        parts.append(
            f" Proxy and truth part (the reward rises while the preference falls) for "
            f"{percent(parting.get('share'))} of the models{when}."
        )
    basins = s.get("basins") or {}
    if basins.get("basin") is not None:  # images: the class each model generates most
        parts.append(
            f" {basins.get('count')} basin(s) by most-generated class; the majority "
            f"(class {basins.get('majority')}) holds {percent(basins.get('share'))} of the models."
        )
    return "<p>" + "".join(parts) + "</p>"


def _items(frame: pd.DataFrame, by: str, title: str, per_row: int) -> str:
    """Items as the setting shows them: image rows, or a table of texts."""
    if frame.empty:
        return ""
    if "pixels" in frame:
        return figure(image_grid(frame, by, title, per_row=per_row), title)
    shown = frame.groupby(by, sort=True).head(per_row // 2)[[by, "text"]].copy()
    # HTML collapses runs of spaces and newlines; in text they are content (indented code).
    shown["text"] = shown["text"].str.replace("\n", "↵").str.replace(" ", "\u00a0")
    return f"<p>{html.escape(title)}:</p>" + table(shown.reset_index(drop=True))


def evaluator_section(stored: StoredResult) -> str:
    data = stored.data
    summary = data.get("summary", {})
    settings = data.get("settings", {})
    body = _verdict(summary)
    model = data.get("model") or {}
    body += facts(
        {
            "the human prefers": _preference(data.get("preferred")),
            "the human's examples": data.get("examples"),
            "base generator": f"{model.get('run')}:{model.get('member')}",
            "members": f"{settings.get('resamples')} resamples × {settings.get('evaluator_seeds')} "
            f"evaluator seeds × {settings.get('trainer_seeds')} trainer seeds",
            "trainer": (settings.get("trainer") or {}).get("method"),
        }
    )
    body += _items(stored.frame("examples"), "label", "1. the human's examples (1 = preferred)", 10)
    rounds, trajectories = stored.frame("rounds"), stored.frame("trajectories")
    if not rounds.empty and not trajectories.empty:
        body += figure(
            evaluator_plots.proxy_vs_true(rounds, trajectories, "2.–3. proxy vs true preference"),
            "proxy vs true reward along the rounds",
        )
    body += _items(stored.frame("samples"), "member", "3. the final models' samples", 8)
    for key, lead in (
        ("spread", "The final models' spread:"),
        ("sources", "Variance of the true preference by factor of the design:"),
    ):
        frame = pd.DataFrame(data.get(key) or [])
        if not frame.empty:
            body += f"<p>{html.escape(lead)}</p>" + table(frame)
    structural = pd.DataFrame(data.get("structural") or [])
    if not structural.empty:
        body += figure(
            evaluator_plots.design_curves(structural, "the evaluator's design perturbed"),
            "structural stability of the evaluator design",
        )
        body += table(structural)
    suggestions = stored.frame("suggestions")
    if not suggestions.empty:
        body += _items(
            suggestions.assign(row="next"), "row", "label these next (evaluators disagree)", 10
        )
        body += table(suggestions.drop(columns=["pixels", "text", "row"], errors="ignore"))
    lead = (
        "The human's examples are resampled; each resample trains an evaluator, each "
        "evaluator drives a trainer of the generator. A stable trainer2 gives models in one "
        "basin whatever the small print of the examples."
    )
    return section("evaluator", "Learned evaluator (trainer2)", lead, body)


def render_evaluator(results: list[StoredResult], context: Context) -> str:
    """The section of every stored evaluator result (normally one)."""
    return "".join(evaluator_section(stored) for stored in results)


SECTION = Section(kind="evaluator", order=120, render=render_evaluator)
