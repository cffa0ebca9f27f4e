"""Report sections: each registered section renders a stored result of its kind; pages compose them.

Conformance: each kind with a section in SECTIONS renders a non-empty ``<section>`` from a
small stored result (tests/report_samples.py). The sections of experiments that train
their own runs are rendered from real results by their experiments' conformance suite.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from attractor.report import render_directory, result_parts
from attractor.report.sections import SECTIONS, Context, Section, section_for, sections_for
from attractor.runs.results import RESULT_KINDS
from attractor.runs.store import RunStore
from tests.report_samples import SAMPLES

MEMBERS, STEPS = [0, 1, 2, 3], [0, 5, 10]
#: Kinds whose samples need a trained experiment: tests/conformance/test_experiments.py runs
#: each experiment and renders its directory.
RENDERED_BY_EXPERIMENTS = {
    "tangent",
    "diff",
    "hparam-map",
    "shortcuts",
    "trainer2",
    "world",
    "evaluator",
    "stabilize",
    "compare",
}


def stored(tmp_path: Path, kind: str) -> RunStore:
    """A directory (an experiment's, so no ensemble is needed) holding the sample of ``kind``."""
    store = RunStore.prepare_experiment(tmp_path / kind, "samples", {"kind": kind})
    for result in SAMPLES[kind](MEMBERS, STEPS):
        store.write(result)
    return store


def test_every_section_kind_is_a_result_kind_and_is_covered() -> None:
    assert set(SECTIONS) <= set(RESULT_KINDS)
    assert set(SECTIONS) <= set(SAMPLES) | RENDERED_BY_EXPERIMENTS, (
        "add a sample to tests/report_samples.py"
    )
    assert sections_for("no-such-kind") == [] and section_for("no-such-kind") is None


@pytest.mark.parametrize("kind", sorted(set(SECTIONS) - RENDERED_BY_EXPERIMENTS))
def test_section_renders_a_stored_sample(kind: str, tmp_path: Path) -> None:
    store = stored(tmp_path, kind)
    found = sections_for(kind)
    assert found and all(
        isinstance(s, Section) and kind in s.kinds and isinstance(s.order, int) for s in found
    )
    results = store.results(kind)
    assert results, f"the sample of {kind} was not listed by RunStore.results()"
    pages = [s.render(results, Context(store, None)) for s in found]
    assert all("<section" in page for page in pages)
    text = re.sub(r'src="data:[^"]*"', "", "".join(pages))
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)  # missing values are shown as a dash


def test_a_section_of_several_kinds_is_rendered_once(tmp_path: Path) -> None:
    store = RunStore.prepare_experiment(tmp_path / "exp", "samples", {})
    for kind in ("sensitivity-variance", "sensitivity-sobol", "sensitivity-influence"):
        for result in SAMPLES[kind](MEMBERS, STEPS):
            store.write(result)
    parts = result_parts(store.results(), Context(store, None))
    assert len(parts) == 1
    assert [h for h in re.findall(r"<h3>([^<(]*)", parts[0][1])] == [
        "Variance components",
        "Sobol indices",
        "Leave-group-out influence ",
    ]


def test_an_experiment_page_has_its_settings_and_sections_in_order(tmp_path: Path) -> None:
    store = RunStore.prepare_experiment(tmp_path / "exp", "instability", {"pairs": 4})
    for kind in ("suggestions", "structural", "instability"):
        for result in SAMPLES[kind](MEMBERS, STEPS):
            store.write(result)
    page = render_directory(store.root).read_text(encoding="utf-8")
    assert (
        "<h1>attractor · instability</h1>" in page
        and "<title>attractor instability · exp</title>" in page
    )
    assert re.findall(r'<section id="([^"]+)"', page) == [
        "experiment",
        "instability",
        "structural",
        "suggestions",
    ]
    # no run: no run parts (the inlined plotly.js may hold the word "Plan" itself)
    assert '<section id="plan"' not in page and "Ensemble cloud" not in page
    assert page.count("perturbation curves") == 2  # both structural results, one section


def test_report_command_on_an_experiment_only_renders(cli, tmp_path: Path) -> None:
    store = RunStore.prepare_experiment(tmp_path / "exp", "instability", {"pairs": 4})
    for result in SAMPLES["instability"](MEMBERS, STEPS):
        store.write(result)
    result = cli("report", store.root, "--json")
    assert result.code == 0, result.err
    assert not (store.root / "measures.json").exists()
    assert 'id="instability"' in (store.root / "report.html").read_text(encoding="utf-8")
