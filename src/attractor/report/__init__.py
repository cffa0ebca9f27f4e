"""The report: one self-contained HTML page per directory (tables, CIs, PNG plots embedded).

    from attractor.report import render_directory
    render_directory("runs/demo")        # -> runs/demo/report.html

A run directory's page shows the run (facts, config, plan, final metrics, the ensemble
cloud) and a section for every result the run holds (:meth:`RunStore.results`): spread
measures, structural curves, sensitivity, suggestions, tangent, ... An experiment
directory's page (its manifest names the experiment) shows the experiment's settings and
the sections of its results. Sections are rendered from what is on disk — JSON and
Parquet read back — so the page never shows a placeholder for something not measured, and
``attractor report DIR`` shows everything a directory holds. Which code renders which
kind is fixed in :data:`attractor.report.sections.SECTIONS`, never read from the files.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from pathlib import Path

from attractor.measure.verdict import Verdict, verdict
from attractor.report.cloud import (
    Cloud,
    cloud_coordinates,
    cloud_panels,
    cloud_trails,
    probe_set,
)
from attractor.report.interactive import figure_mode
from attractor.report.page import collapsible, facts, header, write_page
from attractor.report.run_page import run_part_makers
from attractor.report.sections import Context, Section, sections_for
from attractor.report.sections.measures import basin_colours
from attractor.report.sections.verdict import verdict_block
from attractor.runs.ensemble import Ensemble
from attractor.runs.progress import Progress
from attractor.runs.results import StoredResult
from attractor.runs.store import RunStore

__all__ = [
    "Cloud",
    "cloud_coordinates",
    "cloud_panels",
    "cloud_trails",
    "probe_set",
    "render_directory",
    "result_parts",
]

#: Where the page of a directory is written.
PAGE = "report.html"

#: What renders one part of a page (called when its turn comes, so progress can count it).
Maker = Callable[[], str]


def result_parts(results: list[StoredResult], context: Context) -> list[tuple[int, str]]:
    """Every registered section that has results among ``results``, with its place on the page.

    A section that shows several kinds (``Section.also``) is rendered once, with all of
    them; results of kinds without a section are left off the page (they stay on disk).
    """
    return [(place, render()) for place, render in _result_makers(results, context)]


def _result_makers(results: list[StoredResult], context: Context) -> list[tuple[int, Maker]]:
    """:func:`result_parts`, each part as its place and what renders it."""
    sections: list[Section] = []
    for kind in dict.fromkeys(r.kind for r in results):
        sections += [s for s in sections_for(kind) if s not in sections]
    return [(section.order, _maker(section, results, context)) for section in sections]


def _maker(section: Section, results: list[StoredResult], context: Context) -> Maker:
    mine = [r for r in results if r.kind in section.kinds]
    return lambda: section.render(mine, context)


def _experiment_header(store: RunStore, experiment: str) -> str:
    """Title, directory and the experiment's resolved settings (no run facts: it is no run)."""
    manifest = store.manifest()
    rows = {
        "experiment": experiment,
        "config hash": manifest.get("config_hash", "–"),
        "created": manifest.get("created", "–"),
        "versions": ", ".join(f"{k} {v}" for k, v in sorted(manifest.get("versions", {}).items())),
    }
    settings = json.dumps(manifest.get("config", {}), indent=2, sort_keys=True)
    shown = collapsible("settings", f"<pre>{html.escape(settings)}</pre>", open_=False)
    return (
        header(f"attractor · {experiment}", str(store.root))
        + f'<section id="experiment">{facts(rows)}{shown}</section>'
    )


def render_directory(root: str | Path, progress: bool = False, static: bool = False) -> Path:
    """Write ``ROOT/report.html`` for a run or an experiment directory; its path.

    ``progress``: count the page's sections on stderr as they are rendered
    (:class:`~attractor.runs.progress.Progress`). ``static``: PNG figures only, no scripts
    (:mod:`attractor.report.interactive`); by default the cloud moves and heat maps hover.

    Raises:
        UserError: ``root`` is not an attractor directory, or a result's files are damaged.
    """
    store = RunStore(root)
    experiment = store.experiment()  # reads the manifest: a clear error if there is none
    results = store.results()
    makers: list[tuple[int, Maker]]
    if experiment is not None:
        context = Context(store, None)
        makers = [(0, lambda: _experiment_header(store, experiment))]
        title = f"attractor {experiment} · {store.root.name}"
    else:
        ens = Ensemble.load(store.root)
        context = Context(store, ens)
        measures = next((r for r in results if r.kind == "measures"), None)
        makers = run_part_makers(ens, basin_colours(measures))
        title = f"attractor report · {ens.config.task.name} · {store.root.name}"
    makers += _result_makers(results, context)
    with figure_mode(static):
        parts = _render(makers, store.root / PAGE, progress)
    # A stable sort: parts of one place keep their order (the run's own before results').
    ordered = [text for _, text in sorted(parts, key=lambda part: part[0])]
    found = verdict(results, None if experiment is not None else ens.plan, str(store.root))
    return write_page(store.root / PAGE, title, with_verdict(ordered, found))


def with_verdict(parts: list[str], found: Verdict) -> list[str]:
    """``parts`` with the verdict block right under the page's header, before any section.

    Made after the sections are rendered so that each line links only to a section that
    is on the page; the header is the first part's ``<header>`` (:func:`page.header`).
    """
    block = verdict_block(found, set(re.findall(r'<section id="([^"]+)"', "".join(parts))))
    if not block or not parts:
        return parts
    head, end, rest = parts[0].partition("</header>")
    first = head + end + block + rest if end else block + parts[0]
    return [first, *parts[1:]]


def _render(makers: list[tuple[int, Maker]], page: Path, progress: bool) -> list[tuple[int, str]]:
    """Every part rendered, one by one, counted on stderr with ``progress``."""
    parts = []
    label = f"rendering {page}"
    with Progress(len(makers), progress, label, name="report", unit="sections") as bar:
        for place, render in makers:
            parts.append((place, render()))
            bar.advance(1)
    return parts
