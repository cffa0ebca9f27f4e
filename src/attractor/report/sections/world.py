"""The world level (``world.json`` of ``attractor world``): does the model bring the world
to one basin from any start, which source drives the spread, does the loop contract, and
what breaks it.

Reads the stored :class:`attractor.world.result.WorldResult`: its ``summary`` (headline
numbers), ``scales`` / ``sources`` / ``structural`` (in the JSON), and the ``map``,
``trajectories``, ``spread`` and ``samples`` tables.
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from attractor.report import world_plots
from attractor.report.page import facts, figure, percent, section, table
from attractor.report.plots import image_grid
from attractor.report.sections import Context, Section
from attractor.runs.results import StoredResult


def _verdict(summary: dict[str, Any], has_goal: bool) -> str:
    """The answer first: basin share with its interval, the dominant source, the exponent."""
    share = summary.get("basin_share")
    target = "reach the goal" if has_goal else f"land in basin {summary.get('basin')!s}"
    parts = [
        f"From initial states in the default range, {percent(share)} of member × state pairs "
        f"{html.escape(target)} (95 % CI {percent(summary.get('low'))} – "
        f"{percent(summary.get('high'))})."
    ]
    widest = summary.get("widest")
    if widest:
        parts.append(
            f" At {widest['scale']:g}× the range: {percent(widest['share'])} "
            f"({percent(widest['low'])} – {percent(widest['high'])})."
        )
    source = summary.get("dominant_source")
    if source:
        parts.append(
            f" The spread of <em>{html.escape(str(source['feature']))}</em> comes mostly from the "
            f"{html.escape(str(source['source']))} ({percent(source['share'])} of its variance)."
        )
    top = summary.get("lyapunov_top")
    if top and top.get("mean") is not None:
        mood = "contracts onto its attractor" if top["mean"] < 0 else "expands (nearby starts part)"
        parts.append(
            f" Top closed-loop Lyapunov exponent {top['mean']:.3g} nats/step "
            f"(95 % CI {top['low']:.3g} – {top['high']:.3g}): the loop {mood}."
        )
    for name, where in (summary.get("breaks") or {}).items():
        at = (
            "does not break in the range tried"
            if where.get("at") is None
            else (f"breaks at {where['at']:g}")
        )
        parts.append(f" Under {html.escape(name)} the basin {at}.")
    return "<p>" + "".join(parts) + "</p>"


def _model_source(model: dict[str, Any]) -> str:
    """Where the members came from: a run, or the model directories named one by one."""
    if "models" in model:
        names = [str(m) for m in model["models"]]
        return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return str(model.get("run", "none"))


def world_section(stored: StoredResult) -> str:
    data = stored.data
    summary = data.get("summary", {})
    has_goal = bool(summary.get("has_goal"))
    body = _verdict(summary, has_goal)
    body += facts(
        {
            "world": data.get("world"),
            "model": _model_source(data.get("model") or {}),
            "members": len((data.get("model") or {}).get("members", [])) or 1,
            "constants": ", ".join(f"{k} = {v:g}" for k, v in data.get("constants", {}).items()),
        }
    )
    scales = pd.DataFrame(data.get("scales") or [])
    if not scales.empty:
        scales["curve"] = "basin share"
        body += figure(
            world_plots.share_curves(
                scales,
                "scale",
                "curve",
                "basin share vs initial-state perturbation",
                "perturbation (× default range)",
            ),
            "basin share vs perturbation size",
        )
    grid = stored.frame("map")
    if not grid.empty:
        body += figure(world_plots.basin_map(grid, "basin map"), "basin map over two factors")
    paths = stored.frame("trajectories")
    if not paths.empty:
        body += figure(
            world_plots.phase_portrait(
                paths, "trajectories from perturbed starts", *summary.get("axes", ("", ""))
            ),
            "phase portrait",
        )
    spread = stored.frame("spread")
    if not spread.empty:
        body += figure(world_plots.spread_over_time(spread, "spread over time"), "spread")
    samples = stored.frame("samples")
    if not samples.empty and "text" in samples:
        shown = samples[["basin", "member", "state", "text"]].head(32).copy()
        # HTML collapses runs of spaces and newlines; a continuation's spacing is its content.
        shown["text"] = shown["text"].str.replace("\n", "↵").str.replace(" ", "\u00a0")
        body += "<p>Final states per basin (prompt's end ⟶ continuation):</p>" + table(shown)
    elif not samples.empty:
        body += figure(image_grid(samples, "basin", "final states per basin"), "samples")
    structural = pd.DataFrame(data.get("structural") or [])
    if not structural.empty:
        of_model = structural["perturbation"].str.startswith("model")
        for part, title, xlabel in (
            (structural[of_model], "basin share when the model is perturbed", "level"),
            (structural[~of_model], "basin share when the world's constants change", "x default"),
        ):
            if not part.empty:
                body += figure(
                    world_plots.share_curves(part, "level", "perturbation", title, xlabel),
                    "structural stability",
                )
    sources = pd.DataFrame(data.get("sources") or [])
    if not sources.empty:
        body += table(sources)
    perturbed = pd.DataFrame(data.get("perturbed_sources") or [])
    if not perturbed.empty:
        body += "<p>With perturbed copies of every member as a third source:</p>"
        body += table(perturbed)
    lead = (
        "Every member is rolled out from the same perturbed initial states of the world. A "
        "stable model brings the world to one basin whatever the start; the spread of the "
        "outcomes is split into what the model's seed and what the start contribute."
    )
    return section("world", f"World: {html.escape(str(data.get('world')))}", lead, body)


def render_world(results: list[StoredResult], context: Context) -> str:
    """The section of every stored world result (normally one)."""
    return "".join(world_section(stored) for stored in results)


SECTION = Section(kind="world", order=110, render=render_world)
