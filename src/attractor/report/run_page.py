"""The parts of a run's page that come from the run itself, not from an analysis.

Always shown on a run's page: the run's facts and resolved config, the plan (the factors
that vary), every member's final metrics, and the ensemble cloud (computed here from the
snapshots; coloured by basin when the run's ``measures`` hold basins). Each part comes
with its place on the page, between the sections of the run's results
(:mod:`attractor.report.sections`).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable

import pandas as pd

from attractor.report.cloud import cloud_coordinates, cloud_panels, cloud_trails
from attractor.report.cloud_interactive import cloud_moving, cloud_paths
from attractor.report.interactive import is_static
from attractor.report.page import collapsible, facts, figure, header, section, table
from attractor.runs.ensemble import Ensemble

#: Places on the page (sections of results fill the gaps; see report/sections).
RUN, PLAN, FINAL_METRICS, CLOUD = 0, 1, 2, 20


def run_header(ens: Ensemble) -> str:
    """Title, directory, the run's facts and its resolved config (collapsed)."""
    counts = ens.plan["status"].value_counts().to_dict()
    steps = ens.steps()
    members = (
        f"{len(ens)} planned · {counts.get('done', 0)} done · {counts.get('diverged', 0)} "
        "diverged · "
        f"{counts.get('pending', 0)} pending"
    )
    rows = {
        "task": ens.config.task.name,
        "members": members,
        "strategy": f"{ens.strategy or '–'} (backend {ens.config.run.backend})",
        "training": f"{steps[-1]} steps, {len(steps)} snapshots",
        "config hash": ens.manifest.get("config_hash", "–"),
        "plan hash": ens.manifest.get("plan_hash", "–"),
        "created": ens.manifest.get("created", "–"),
        "versions": ", ".join(
            f"{k} {v}" for k, v in sorted(ens.manifest.get("versions", {}).items())
        ),
    }
    config = json.dumps(ens.manifest.get("config", {}), indent=2, sort_keys=True)
    resolved = collapsible("resolved config", f"<pre>{html.escape(config)}</pre>", open_=False)
    return (
        header("attractor report", str(ens.store.root))
        + f'<section id="run">{facts(rows)}{resolved}</section>'
    )


def plan_section(ens: Ensemble) -> str:
    """One row per member: the factors that differ between members, and its status."""
    plan = ens.plan
    fixed = {"member", "status", "diverged_step"}
    varying = [c for c in plan.columns if c not in fixed and plan[c].astype(str).nunique() > 1]
    diverged = ["diverged_step"] if plan["diverged_step"].notna().any() else []
    columns = ["member", *varying, "status", *diverged]
    lead = (
        "One row per member: the factors that differ between members "
        f"({', '.join(varying) or 'none'}); "
        "every other factor is the same for all."
    )
    return section(
        "plan",
        "Plan",
        lead,
        collapsible(f"{len(plan)} members", table(plan[columns]), open_=len(plan) <= 16),
    )


def final_metrics_section(ens: Ensemble) -> str:
    """Each member's metrics at its last snapshot, and their spread over finished members."""
    final = ens.final_metrics()
    if final.empty:
        return ""
    final = final.merge(ens.plan[["member", "status"]], on="member", how="left")
    values = [c for c in final.columns if c not in ("member", "step", "status")]
    done = final[final["status"] == "done"][values]
    spread = pd.DataFrame(
        {
            "metric": values,
            "mean": done.mean().to_numpy(),
            "sd": done.std(ddof=1).to_numpy(),
            "min": done.min().to_numpy(),
            "max": done.max().to_numpy(),
        }
    )
    every = collapsible(
        "every member", table(final[["member", "status", "step", *values]]), open_=len(final) <= 16
    )
    lead = (
        "Each member's metrics at its last snapshot; the first table summarizes them over "
        "finished members "
        "(sd across members, not a CI)."
    )
    return section("final-metrics", "Final metrics", lead, table(spread) + every)


def cloud_section(ens: Ensemble, basins: dict[int, int] | None) -> str:
    """Every member's function at every snapshot in one PCA plane, coloured by basin if known."""
    if not ens.members:
        return ""
    cloud = cloud_coordinates(ens)
    ends = cloud.mean.sort_values("snapshot").iloc[[0, -1]]
    at = [
        f"step {s:g}" if cloud.steps_agree else f"snapshot {i}"
        for s, i in zip(ends["step"], ends["snapshot"], strict=True)
    ]
    r = cloud.explained_variance_ratio
    note = (
        f"<p>The plane holds {100 * r.sum():.0f} % of the variance of all members' probe outputs "
        "over all snapshots. "
        "Cloud radius (members' mean distance from the ensemble mean, full probe space): "
        f"{ends['radius'].iloc[0]:.3g} at "
        f"{at[0]}, {ends['radius'].iloc[1]:.3g} at {at[1]}.</p>"
    )
    if is_static():
        body = (
            note
            + figure(cloud_trails(cloud, basins), "member paths")
            + figure(cloud_panels(cloud, basins), "cloud per snapshot")
        )
    else:  # the moving cloud leads: it is the section's answer; paths below it
        body = (
            note
            + figure(cloud_moving(cloud, basins, ens.plan), "the cloud through training")
            + figure(cloud_paths(cloud, basins, ens.plan), "member paths")
        )
    lead = (
        "Each dot is one member's predicted probabilities on a fixed probe of test inputs, "
        "placed by one PCA fit over all snapshots; "
        "the black cross is the ensemble mean. A cloud that shrinks is converging in function "
        "space; separate clumps are separate basins."
        + (
            ""
            if is_static()
            else " The shaded area is the ground each basin covers; hover a dot for its "
            "member and plan row, click it to follow that member in every figure and table."
        )
    )
    return section("cloud", "Ensemble cloud", lead, body)


def run_parts(ens: Ensemble, basins: dict[int, int] | None) -> list[tuple[int, str]]:
    """The run's own parts with their places on the page."""
    return [(place, render()) for place, render in run_part_makers(ens, basins)]


def run_part_makers(
    ens: Ensemble, basins: dict[int, int] | None
) -> list[tuple[int, Callable[[], str]]]:
    """The run's own parts, each as its place and what renders it (called one by one, so
    progress can be counted between them: the cloud predicts at every snapshot).
    """
    return [
        (RUN, lambda: run_header(ens)),
        (PLAN, lambda: plan_section(ens)),
        (FINAL_METRICS, lambda: final_metrics_section(ens)),
        (CLOUD, lambda: cloud_section(ens, basins)),
    ]
