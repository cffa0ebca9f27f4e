"""The page of a shortcut / path-dependence probe: trainers side by side on one task."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from attractor.config import Config
from attractor.report import plots
from attractor.report.html import collapsible, figure, section, table, write_page

if TYPE_CHECKING:
    from attractor.experiments.shortcuts import ShortcutProbe

#: Summary columns shown as dots with intervals, in this order.
_DOTS = ("shortcut_reliance", "test_accuracy", "init_distance", "path_length", "straightness", "seed_spread_js", "train_loss")


def _interval_table(summary: pd.DataFrame) -> pd.DataFrame:
    """``value [low, high]`` cells, one row per variant."""
    shown = {"variant": summary["variant"], "members": summary["members"], "diverged": summary["diverged"]}
    for name in _DOTS:
        if name in summary and summary[name].notna().any():
            shown[name] = [f"{v:.4g} [{lo:.4g}, {hi:.4g}]" if pd.notna(v) else "–"
                           for v, lo, hi in zip(summary[name], summary[f"{name}_low"], summary[f"{name}_high"], strict=True)]
    return pd.DataFrame(shown)


def shortcuts_section(result: ShortcutProbe) -> str:
    """Section ``shortcuts``: per-variant dots with CIs, curves over training, the tables."""
    summary = result.summary
    body = [figure(plots.interval_dots(summary, _DOTS, "variant", "mean over members, 95 % multi-bootstrap interval"),
                   "trainer variants with intervals"),
            table(_interval_table(summary))]
    columns = (["shortcut_reliance"] if result.has_shortcut else []) + ["test_accuracy", "init_distance", "path_length"]
    body.append(figure(plots.group_series(result.curves, columns, "variant", "over training (mean over members)"), "curves over training"))
    overrides = pd.DataFrame([{"variant": k, "trainer overrides": json.dumps(v)} for k, v in result.variants.items()])
    body.append(table(overrides))
    body.append(collapsible(f"{len(result.members)} members", table(result.members), open_=False))
    shortcut = ("shortcut reliance = accuracy with the shortcut set to the label minus accuracy with it random (0: ignored). "
                if result.has_shortcut else "This task has no shortcut probes, so reliance is not measured. ")
    lead = (shortcut + "Distance from init and path length are over all parameters, every step counted; straightness = distance / path. "
            "Seed spread = mean pairwise JS between members' test predictions. Same seeds in every variant.")
    return section("shortcuts", "Shortcuts and path dependence", lead, "".join(body))


def render_shortcuts_report(result: ShortcutProbe, config: Config, path: str | Path) -> Path:
    """Write the probe's page: what was compared, then :func:`shortcuts_section`."""
    resolved = json.dumps(config.resolved(), indent=2, sort_keys=True)
    header = (f'<header><h1>attractor · shortcuts and path dependence</h1><p class="run">{html.escape(str(result.out))}</p></header>'
              f'<section id="run"><p>task <b>{html.escape(config.task.name)}</b>, {len(result.variants)} trainer variants; '
              f'one run directory per variant under {html.escape(str(result.out))}.</p>'
              f'{collapsible("base config", f"<pre>{html.escape(resolved)}</pre>", open_=False)}</section>')
    return write_page(path, f"attractor shortcuts · {config.task.name}", [header, shortcuts_section(result)])
