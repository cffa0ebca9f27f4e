"""The ``stabilize`` section (``stabilize.json`` of ``attractor stabilize``): did the trainer
chosen for its small spread keep it on fresh seeds, what changed, and what the search saw.

Reads the stored result only: ``settings``, ``chosen``, ``start`` and ``confirmation`` (paired
estimates, ``a`` the chosen trainer, ``b`` the starting one) from the JSON, the trials from
``stabilize.parquet`` and the knobs' importances from the JSON (``stabilize.importance``).
"""

from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd

from attractor.report.page import collapsible, facts, figure, percent, section, table
from attractor.report.sections import Context, Section, stabilize_plots
from attractor.runs.results import StoredResult

#: What each spread measures (the settings' ``spread``).
SPREADS = {
    "js": "mean Jensen-Shannon divergence between two members' predictions (nats)",
    "disagreement": "share of examples two members label differently",
    "accuracy_sd": "standard deviation of the members' accuracy",
    "minority": "share of members outside the largest basin",
}
#: Knobs whose "off" is a value (the trainer's own): shown as "off".
OFF_AT_ZERO = ("sam_rho", "ema_decay")
#: Knob labels where the name alone does not say it (importance's ``average``: which of
#: none / EMA / SWA was used).
KNOB_LABELS = {"average": "average (none/EMA/SWA)"}
#: Search-space fields that set a knob of another name.
FIELD_KNOB = {"batch_sizes": "batch_size", "optimizers": "optimizer"}


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def _num(value: Any) -> str:
    return "–" if _missing(value) else f"{float(value):.3g}"


def _knob(name: str, value: Any) -> str:
    """A knob's applied value as text: ``off`` for a switched-off intervention."""
    if _missing(value) or (name in OFF_AT_ZERO and value == 0):
        return "off"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _interval(estimate: dict[str, Any], low: str = "low", high: str = "high") -> str:
    return f"[{_num(estimate.get(low))}, {_num(estimate.get(high))}]"


def _headline(data: dict[str, Any]) -> str:
    """The answer first, in one plain sentence, then the stored verdict with its numbers."""
    c = data.get("confirmation") or {}
    spread, error = c.get("spread") or {}, c.get("error") or {}
    s = data.get("settings") or {}
    fresh = f"on {s.get('confirm_members')} fresh seeds and the test split"
    trial = (data.get("chosen") or {}).get("trial")
    if c.get("confirmed"):
        answer = (
            f"<strong>Confirmed</strong>: {fresh}, the chosen trainer (trial {trial}) spreads "
            "less than the starting trainer."
        )
    elif not _missing(spread.get("low")) and spread["low"] > 0:
        answer = (
            f"<strong>NOT confirmed</strong>: {fresh}, the chosen trainer (trial {trial}) "
            "spreads MORE than the starting trainer; the search's choice does not hold."
        )
    else:
        answer = (
            f"<strong>NOT confirmed</strong>: {fresh}, the chosen trainer's (trial {trial}) "
            f"spread is not lower than the starting trainer's with {_level(s)} confidence; "
            "the search's choice is not shown to help."
        )
    if not _missing(error.get("low")) and error["low"] > 0:
        answer += f" Its error is higher: {percent(error.get('a'))} vs {percent(error.get('b'))}."
    verdict = str(c.get("verdict") or "")
    if verdict:
        answer += f"</p><p>{html.escape(verdict[:1].upper() + verdict[1:])}."
    return f"<p>{answer}</p>"


def _level(settings: dict[str, Any]) -> str:
    return f"{100 * float(settings.get('level', 0.95)):.0f} %"


def _changes(data: dict[str, Any]) -> pd.DataFrame:
    """Per knob searched or changed: the starting value and the chosen one."""
    start = data.get("start") or {}
    chosen = (data.get("chosen") or {}).get("knobs") or {}
    space = (data.get("settings") or {}).get("search") or {}
    searched = {FIELD_KNOB.get(k, k) for k, v in space.items() if v is not None}
    rows = []
    for knob in chosen:
        a, b = _knob(knob, start.get(knob)), _knob(knob, chosen.get(knob))
        if knob in searched or a != b:
            rows.append(
                {
                    "knob": knob,
                    "start": a,
                    "chosen": b,
                    "changed": a != b,
                    "searched": knob in searched,
                }
            )
    frame = pd.DataFrame(rows, columns=["knob", "start", "chosen", "changed", "searched"])
    return frame.sort_values("changed", ascending=False, kind="stable").reset_index(drop=True)


def _confirmation(data: dict[str, Any]) -> pd.DataFrame:
    """Chosen vs start on fresh seeds, per quantity, with intervals and the paired difference."""
    c = data.get("confirmation") or {}
    s = data.get("settings") or {}
    rows = []
    for quantity, label in (("error", "error"), ("spread", f"spread ({s.get('spread')})")):
        e = c.get(quantity)
        if not e:
            continue
        rows.append(
            {
                "quantity": label,
                "chosen": e.get("a"),
                "chosen interval": _interval(e, "a_low", "a_high"),
                "start": e.get("b"),
                "start interval": _interval(e, "b_low", "b_high"),
                "chosen − start": e.get("difference"),
                "interval": _interval(e),
                "p (share of draws chosen ≤ start)": e.get("p"),
                "draws": e.get("draws"),
            }
        )
    return pd.DataFrame(rows)


def _trials(trials: pd.DataFrame, data: dict[str, Any]) -> pd.DataFrame:
    """The trials with their searched knobs and objectives: the chosen one, then the Pareto
    front, then the rest (each by error).
    """
    space = (data.get("settings") or {}).get("search") or {}
    knobs = [FIELD_KNOB.get(k, k) for k, v in space.items() if v is not None]
    knobs = [k for k in knobs if k in trials]
    ordered = trials.assign(
        _chosen=~trials["chosen"], _front=~(trials["pareto"] | trials["chosen"])
    ).sort_values(["_chosen", "_front", "error", "trial"], kind="stable")
    shown = pd.DataFrame({"trial": ordered["trial"], "round": ordered["round"]})
    for knob in knobs:
        shown[knob] = [_knob(knob, v) for v in ordered[knob].astype(object)]
    for key in ("error", "spread"):
        shown[key] = ordered[key]
        shown[f"{key} interval"] = [
            _interval({"low": lo, "high": hi})
            for lo, hi in zip(ordered[f"{key}_low"], ordered[f"{key}_high"], strict=True)
        ]
    for key in ("diverged", "pareto", "chosen"):
        shown[key] = ordered[key]
    return shown.reset_index(drop=True)


def _header(data: dict[str, Any], trials: pd.DataFrame) -> str:
    s, v, t = data.get("settings") or {}, data.get("validation") or {}, data.get("timings") or {}
    config = data.get("config") or {}
    diverged = int(trials["diverged"].sum()) if "diverged" in trials else 0
    rows = {
        "task": (config.get("task") or {}).get("name"),
        "search": f"{len(trials)} trials x {s.get('members')} members ({s.get('sampler')}, "
        f"{s.get('parallel')} per round); {int(trials['pareto'].sum())} on the Pareto front",
        "spread": f"{s.get('spread')}: {SPREADS.get(str(s.get('spread')), '')}",
        "choice": f"least spread among trials within {s.get('tolerance')} of the best "
        "validation error",
        "validation split": f"{v.get('n_validation')} examples ({percent(v.get('fraction'))} of "
        f"the training split, seed {v.get('seed')}); {v.get('n_fit')} left to train trials",
        "confirmation": f"{s.get('confirm_members')} fresh seeds, whole training split, "
        f"test split; {s.get('draws')} paired bootstrap draws, {_level(s)} intervals",
        "diverged members": diverged,
        "time": ", ".join(f"{k.removesuffix('_s')} {_num(val)} s" for k, val in t.items()),
    }
    return facts(rows)


def stabilize_section(stored: StoredResult) -> str:
    """The whole section of one stored stabilize result."""
    data = stored.data
    s = data.get("settings") or {}
    trials = stored.table("")
    body = _headline(data) + _header(data, trials)

    changes = _changes(data)
    body += "<h3>What the chosen trainer changes</h3>"
    body += (
        table(changes)
        if not changes.empty
        else "<p>Nothing was searched: the chosen trainer is the starting one.</p>"
    )

    confirmation = _confirmation(data)
    if not confirmation.empty:
        body += (
            "<h3>Confirmation: chosen vs start on fresh seeds</h3>"
            "<p>Both trainers trained on the same fresh seeds and scored on the test split; "
            "the difference is paired (chosen − start). The choice confirms when the spread's "
            "interval lies below 0.</p>" + table(confirmation)
        )

    body += "<h3>The search</h3>"
    if len(trials):
        body += figure(
            stabilize_plots.pareto_front(
                trials, float(s.get("tolerance", 0.0)), str(s.get("spread")), s.get("level", 0.95)
            ),
            "Pareto front of validation error and spread",
        )
    importance = stored.frame("importance")
    if not importance.empty:
        body += figure(
            stabilize_plots.importance_bars(importance, KNOB_LABELS),
            "importance of each knob for the spread",
        )
    else:
        body += "<p>Too few trials (or no differences in spread) to say which knob moved it.</p>"

    if len(trials):
        shown = _trials(trials, data)
        first = shown["pareto"] | shown["chosen"]
        body += "<p>Trials on the Pareto front (and the chosen one):</p>" + table(shown[first])
        if (~first).any():
            body += collapsible(
                f"the other {int((~first).sum())} trials", table(shown[~first]), False
            )
    lead = (
        "A search over trainers whose every trial is an ensemble: error against spread, the "
        "least-spread trainer within a tolerance of the best error, then checked against the "
        "starting trainer on seeds the search never saw."
    )
    return section("stabilize", "Stabilize · the trainer whose runs spread least", lead, body)


def render(results: list[StoredResult], context: Context) -> str:
    """Every ``stabilize`` result of the directory (one per experiment)."""
    del context  # everything shown is in the result itself
    return "".join(stabilize_section(r) for r in results)


SECTION = Section(kind="stabilize", order=130, render=render)
