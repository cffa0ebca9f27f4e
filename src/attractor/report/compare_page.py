"""The comparison page: two runs of one task side by side (``attractor report RUN_A RUN_B``).

Rendered from a ``compare`` result (:mod:`attractor.experiments.two_runs`) in the
comparison's own directory, in four parts that answer in the order a reader asks:

* **Runs**: both runs' facts side by side, and the resolved-config keys where they differ
  (the trainer differences: ``trainer.lr``, ``trainer.optimizer``, ...);
* **Paired intervals**: A, B and A - B with 95 % intervals per measure, and one plain
  sentence each saying which run is more stable (or better) and whether the interval
  excludes 0;
* **Final metrics**: both runs' members at their last snapshot, as distributions;
* **Ensemble clouds**: each run's cloud (:mod:`attractor.report.cloud`, read from the run
  directories when the page is rendered; a run no longer readable is said so), and both
  clouds' radii on one axis.

Run A is always the palette's first colour, B its second.
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from attractor.errors import UserError
from attractor.report import compare_plots, plots
from attractor.report.cloud import Cloud, cloud_coordinates, cloud_trails
from attractor.report.cloud_interactive import cloud_moving
from attractor.report.interactive import is_static
from attractor.report.page import facts, figure, fmt, section, table
from attractor.report.sections import Context, Section
from attractor.runs.ensemble import Ensemble
from attractor.runs.results import StoredResult

RUNS = compare_plots.RUNS


def _label(data: dict[str, Any], run: str) -> str:
    """``A · lr-small``: the run's letter and its directory's name."""
    return f"{run} · {data['runs'][run]['name']}"


def _run_facts(info: dict[str, Any]) -> dict[str, Any]:
    return {
        "directory": info["path"],
        "task": info["task"],
        "members": f"{info['members']} planned · {info['done']} done · {info['diverged']} diverged",
        "training": f"{info['steps']} steps, {info['snapshots']} snapshots",
        "config hash": info.get("config_hash") or "–",
        "plan hash": info.get("plan_hash") or "–",
        "created": info.get("created") or "–",
    }


def _value(value: Any) -> str:
    """A config value as written in TOML-ish text (lists whole, missing as a dash)."""
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return fmt(value)


def runs_section(results: list[StoredResult], context: Context) -> str:
    """Both runs' facts side by side and the resolved-config keys that differ."""
    del context
    data = results[0].data
    cards = "".join(
        f"<div><h3>{html.escape(_label(data, run))}</h3>"
        f"{facts(_run_facts(data['runs'][run]))}</div>"
        for run in RUNS
    )
    diff = data.get("config_diff") or []
    if diff:
        frame = pd.DataFrame(
            {
                "key": [d["key"] for d in diff],
                _label(data, "A"): [_value(d["a"]) for d in diff],
                _label(data, "B"): [_value(d["b"]) for d in diff],
            }
        )
        keys = f"{len(diff)} key" + ("" if len(diff) == 1 else "s")
        differs = f"<h3>What differs ({keys} of the resolved configs)</h3>" + table(frame)
    else:
        differs = (
            "<p>The resolved configs are identical: the runs differ only in what their "
            "configs do not fix (another attractor version, data, or hardware).</p>"
        )
    lead = (
        "The two runs compared, side by side; below, only the keys of their resolved configs "
        "(every default filled in) whose values differ."
    )
    body = f'<div class="grid">{cards}</div>{differs}'
    return section("compare-runs", "Two runs", lead, body)


def _with_interval(value: float, low: float, high: float, signed: bool = False) -> str:
    form = "{:+.4g}" if signed else "{:.4g}"
    return f"{form.format(value)} [{form.format(low)}, {form.format(high)}]"


def paired_section(results: list[StoredResult], context: Context) -> str:
    """The paired intervals: A, B, A - B per measure, its reading, and both runs' intervals."""
    del context
    stored = results[0]
    data, paired = stored.data, stored.table()
    level = f"{100 * float(data['level']):.0f} %"
    frame = pd.DataFrame(
        {
            "measure": paired["measure"],
            "better": paired["better"],
            f"A ({level})": [
                _with_interval(r.a, r.a_low, r.a_high) for r in paired.itertuples(index=False)
            ],
            f"B ({level})": [
                _with_interval(r.b, r.b_low, r.b_high) for r in paired.itertuples(index=False)
            ],
            f"A − B ({level})": [
                _with_interval(r.difference, r.low, r.high, signed=True)
                for r in paired.itertuples(index=False)
            ],
            "excludes 0": [not r.low <= 0 <= r.high for r in paired.itertuples(index=False)],
            "p(A − B ≤ 0)": paired["p"],
        }
    )
    readings = "".join(f"<li>{html.escape(text)}</li>" for text in paired["reading"])
    # One panel per measure, A and B each a dot with its own interval, on shared axes.
    dots = pd.DataFrame({"run": [_label(data, run) for run in RUNS]})
    # A percentile interval may miss its own estimate (an sd of few members is biased low in
    # resamples); the bars are stretched to reach the dot, the table keeps the true bounds.
    for row in paired.itertuples(index=False):
        dots[row.measure] = [row.a, row.b]
        dots[f"{row.measure}_low"] = [min(row.a_low, row.a), min(row.b_low, row.b)]
        dots[f"{row.measure}_high"] = [max(row.a_high, row.a), max(row.b_high, row.b)]
    plot = plots.interval_dots(dots, list(paired["measure"]), "run", "each run with its interval")
    lead = (
        f"Both runs scored on the same {data['split']} examples; a paired multi-bootstrap "
        f"({data['draws']} draws) resamples the examples once for both runs and "
        "each run's members independently. accuracy and loss say how good a run is; "
        "accuracy_sd, pairwise_js and disagreement say how far its members spread (lower: "
        "more stable). Where the interval of A − B excludes 0 the difference is more than "
        "seeds and examples would give by chance."
    )
    body = table(frame) + f"<ul>{readings}</ul>" + figure(plot, "A and B per measure")
    return section("compare-paired", "Paired intervals", lead, body)


def final_section(results: list[StoredResult], context: Context) -> str:
    """Both runs' final metrics: mean and sd per run, and every member as a dot."""
    del context
    stored = results[0]
    final = stored.table("final")
    metrics = [
        c
        for c in final.columns
        if c not in ("run", "member", "step") and pd.api.types.is_numeric_dtype(final[c])
    ]
    if final.empty or not metrics:
        return ""
    grouped = final.groupby("run")[metrics]
    summary = pd.DataFrame({"metric": metrics})
    for run in RUNS:
        if run in grouped.groups:
            summary[f"{run} mean"] = grouped.mean().loc[run].to_numpy()
            summary[f"{run} sd"] = grouped.std(ddof=1).loc[run].to_numpy()
    plot = compare_plots.final_strips(final, metrics)
    lead = (
        "Each finished member of both runs at its last snapshot (sd across members, not an "
        "interval: the paired intervals are above)."
    )
    body = table(summary) + figure(plot, "final metrics of A and B")
    return section("compare-final", "Final metrics", lead, body)


def _cloud(path: str) -> tuple[Cloud | None, pd.DataFrame | None, str]:
    """The run's cloud and plan, or None and why it could not be drawn (the run moved or
    changed since the comparison).
    """
    try:
        ens = Ensemble.load(path)
        if not ens.members:
            return None, None, "it has no finished members"
        return cloud_coordinates(ens), ens.plan, ""
    except (UserError, OSError, ValueError) as exc:
        return None, None, str(exc).splitlines()[0]


def _cloud_figure(cloud: Cloud, plan: pd.DataFrame, run: str) -> str:
    """The moving cloud (interactive page) or the member paths and radius (``--static``)."""
    if is_static():
        return figure(cloud_trails(cloud), f"member paths of {run}")
    return figure(cloud_moving(cloud, None, plan, height=440), f"the cloud of {run}")


def clouds_section(results: list[StoredResult], context: Context) -> str:
    """Each run's ensemble cloud side by side, and both clouds' radii on one axis."""
    del context
    data = results[0].data
    clouds: dict[str, Cloud] = {}
    panels = []
    for run in RUNS:
        cloud, plan, why = _cloud(data["runs"][run]["path"])
        title = f"<h3>{html.escape(_label(data, run))}</h3>"
        if cloud is None:
            panels.append(f"<div>{title}<p>Not drawn: {html.escape(why)}.</p></div>")
            continue
        assert plan is not None
        clouds[run] = cloud
        radius = cloud.mean.sort_values("snapshot")["radius"]
        note = (
            f"<p>radius {radius.iloc[0]:.3g} at the first snapshot, "
            f"{radius.iloc[-1]:.3g} at the last.</p>"
        )
        panels.append(f"<div>{title}{note}{_cloud_figure(cloud, plan, run)}</div>")
    shared = (
        figure(compare_plots.radius_curves(clouds), "cloud radius of A and B") if clouds else ""
    )
    lead = (
        "Each run's members through training, as on a run's own page: one PCA plane per run, "
        "so the two planes' axes differ; the radius (members' mean distance from their mean "
        "on the same probe inputs) is comparable and shown for both on one axis first."
    )
    # Interactive clouds scale to half a column, side by side; a static cloud's two panels
    # at half a column would leave its labels unreadable, so they go one above the other.
    clouds_html = "".join(panels) if is_static() else f'<div class="grid">{"".join(panels)}</div>'
    body = shared + clouds_html
    return section("compare-clouds", "Ensemble clouds", lead, body)


SECTIONS = (
    Section(kind="compare", order=140, render=runs_section),
    Section(kind="compare", order=141, render=paired_section),
    Section(kind="compare", order=142, render=final_section),
    Section(kind="compare", order=143, render=clouds_section),
)
