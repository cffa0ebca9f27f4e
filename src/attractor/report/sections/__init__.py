"""Report sections: one file per kind of result, each rendering what a directory holds.

Every section module exposes ``SECTION = Section(kind=..., order=..., render=...)``:
``render(results, context)`` gets the stored results of its ``kind`` (every one the
directory holds, ordered by name) and returns the HTML of its ``<section>`` element(s),
built with :mod:`attractor.report.page`. A page (a run's or an experiment's) is the list
of sections whose results exist, in ``order``; nothing outside ``report/`` imports these.

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
    """How one kind of result appears on a page."""

    kind: str
    order: int
    render: Callable[[list[StoredResult], Context], str]


#: result kind -> module exposing ``SECTION``. A fixed table: which code renders a page is
#: decided here, never by the files of a (possibly shared) run directory.
SECTIONS: dict[str, str] = {}


def section_for(kind: str) -> Section | None:
    """The section that renders results of ``kind``, or None when none is registered."""
    module = SECTIONS.get(kind)
    return None if module is None else importlib.import_module(module).SECTION
