"""Report sections: one file per kind of result, each rendering what a directory holds.

Every section module exposes ``SECTION = Section(kind=..., order=..., render=...)`` — or
``SECTIONS``, a tuple of them, when its results appear in more than one place on a page
(the run's spread measures sit before and after the ensemble cloud) or when one section
shows several kinds together (``also``: the three sensitivity analyses share one heading).
``render(results, context)`` gets the stored results of its kinds (every one the directory
holds, ordered by name) and returns the HTML of its ``<section>`` element(s), built with
:mod:`attractor.report.page`. A page (a run's or an experiment's) is the list of sections
whose results exist, in ``order``; nothing outside ``report/`` imports these.

Orders in use, so that a run's page reads as it always has: run facts 0, plan 1, final
metrics 2 (:mod:`attractor.report.run_page`), spread measures 10, ensemble cloud 20, spread
over training and LMC 30, instability 40, structural 50, tangent 60, sensitivity 70,
suggestions 75, seed advice 77, diff 80; experiments' own sections 100 and up (world 110,
evaluator 120, trainer2 120, stabilize 130, two runs compared 140-143).

A new kind of result gets a page section by one file here plus one line in
:data:`SECTIONS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from attractor.runs.results import StoredResult
from attractor.runs.store import RunStore

if TYPE_CHECKING:
    from attractor.runs.ensemble import Ensemble


@dataclass(frozen=True)
class Context:
    """What a section may read besides its results: the directory, and its ensemble if a run."""

    store: RunStore
    ensemble: Ensemble | None


@dataclass(frozen=True)
class Section:
    """How one kind of result appears on a page.

    Attributes:
        kind: the result kind rendered (a key of :data:`SECTIONS`).
        order: place on the page (see the module docstring); ties keep registry order.
        render: ``(results, context) -> HTML``; results of ``kind`` and ``also``, by name.
        also: further kinds this one section shows together with ``kind`` (each of them
            maps to this module in :data:`SECTIONS` too).
    """

    kind: str
    order: int
    render: Callable[[list[StoredResult], Context], str]
    also: tuple[str, ...] = ()

    @property
    def kinds(self) -> tuple[str, ...]:
        """Every kind whose results this section receives."""
        return (self.kind, *self.also)


#: result kind -> module exposing ``SECTION`` (or ``SECTIONS``). A fixed table: which code
#: renders a page is decided here, never by the files of a (possibly shared) run directory.
SECTIONS: dict[str, str] = {
    "measures": "attractor.report.sections.measures",
    "lm-measures": "attractor.report.sections.lm_measures",
    "instability": "attractor.report.sections.instability",
    "structural": "attractor.report.sections.structural",
    "sensitivity-variance": "attractor.report.sections.sensitivity",
    "sensitivity-sobol": "attractor.report.sections.sensitivity",
    "sensitivity-influence": "attractor.report.sections.sensitivity",
    "suggestions": "attractor.report.sections.suggestions",
    "seed-advice": "attractor.report.sections.seed_advice",
    "tangent": "attractor.report.sections.tangent",
    "diff": "attractor.report.sections.disagreement",
    "hparam-map": "attractor.report.sections.hparam_map",
    "shortcuts": "attractor.report.sections.shortcuts",
    "trainer2": "attractor.report.sections.trainer2",
    "world": "attractor.report.sections.world",
    "evaluator": "attractor.report.sections.evaluator",
    "stabilize": "attractor.report.sections.stabilize",
    # Two runs side by side: the page's parts live beside the run page's, in report/.
    "compare": "attractor.report.compare_page",
}


def sections_for(kind: str) -> list[Section]:
    """Every section that shows results of ``kind`` (none when no module is registered)."""
    module_name = SECTIONS.get(kind)
    if module_name is None:
        return []
    module = importlib.import_module(module_name)
    found = getattr(module, "SECTIONS", None) or (module.SECTION,)
    return [s for s in found if kind in s.kinds]


def section_for(kind: str) -> Section | None:
    """The (first) section that renders results of ``kind``, or None when none is registered."""
    found = sections_for(kind)
    return found[0] if found else None
