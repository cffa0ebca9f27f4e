"""The ``shortcuts`` section: trainer variants side by side on one task (shortcut reliance,
paths).
"""

from __future__ import annotations

import html
import json
from typing import Any

import pandas as pd

from attractor.report import plots
from attractor.report.page import collapsible, figure, section, table
from attractor.report.sections import Context, Section
from attractor.runs.results import StoredResult

#: Summary columns shown as dots with intervals, in this order.
_DOTS = (
    "shortcut_reliance",
    "test_accuracy",
    "init_distance",
    "path_length",
    "straightness",
    "seed_spread_js",
    "train_loss",
)


def _interval_table(summary: pd.DataFrame) -> pd.DataFrame:
    """``value [low, high]`` cells, one row per variant."""
    shown = {
        "variant": summary["variant"],
        "members": summary["members"],
        "diverged": summary["diverged"],
    }
    for name in _DOTS:
        if name in summary and summary[name].notna().any():
            shown[name] = [
                f"{v:.4g} [{lo:.4g}, {hi:.4g}]" if pd.notna(v) else "–"
                for v, lo, hi in zip(
                    summary[name], summary[f"{name}_low"], summary[f"{name}_high"], strict=True
                )
            ]
    return pd.DataFrame(shown)


def experiment_config(context: Context) -> dict[str, Any]:
    """The base run config in the experiment's manifest (``{}`` where there is none; the page's
    header shows all of it)."""
    if not (context.store.root / "manifest.json").is_file():
        return {}
    settings = context.store.manifest().get("config")
    config = settings.get("config") if isinstance(settings, dict) else None
    return config if isinstance(config, dict) else {}


def shortcuts_section(result: StoredResult, context: Context) -> str:
    """Section ``shortcuts``: per-variant dots with CIs, curves over training, the tables."""
    data = result.data
    summary, curves, members = result.table("summary"), result.table("curves"), result.table("")
    variants: dict[str, dict] = data.get("variants", {})
    config = experiment_config(context)
    task = config.get("task", {}).get("name")
    intro = (
        f"<p>{'task <b>' + html.escape(str(task)) + '</b>, ' if task else ''}{len(variants)} "
        "trainer "
        "variants; one run directory per variant under "
        f"{html.escape(str(context.store.root / 'runs'))}."
        "</p>"
    )
    body = [
        intro,
        figure(
            plots.interval_dots(
                summary, _DOTS, "variant", "mean over members, 95 % multi-bootstrap interval"
            ),
            "trainer variants with intervals",
        ),
        table(_interval_table(summary)),
    ]
    columns = (["shortcut_reliance"] if data.get("has_shortcut") else []) + [
        "test_accuracy",
        "init_distance",
        "path_length",
    ]
    body.append(
        figure(
            plots.group_series(curves, columns, "variant", "over training (mean over members)"),
            "curves over training",
        )
    )
    overrides = pd.DataFrame(
        [{"variant": k, "trainer overrides": json.dumps(v)} for k, v in variants.items()]
    )
    body.append(table(overrides))
    body.append(collapsible(f"{len(members)} members", table(members), open_=False))
    shortcut = (
        "shortcut reliance = accuracy with the shortcut set to the label minus accuracy with it "
        "random "
        "(0: ignored). "
        if data.get("has_shortcut")
        else "This task has no shortcut probes, so reliance is not measured. "
    )
    lead = (
        shortcut
        + "Distance from init and path length are over all parameters, every step counted; "
        "straightness = distance / path. Seed spread = mean pairwise JS between members' test "
        "predictions. "
        "Same seeds in every variant."
    )
    return section("shortcuts", "Shortcuts and path dependence", lead, "".join(body))


def render(results: list[StoredResult], context: Context) -> str:
    """Every ``shortcuts`` result of the directory (there is one per experiment)."""
    return "".join(shortcuts_section(r, context) for r in results)


SECTION = Section(kind="shortcuts", order=110, render=render)
