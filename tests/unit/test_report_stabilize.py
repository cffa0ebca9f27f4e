"""The ``stabilize`` report section, rendered from a real (tiny) stabilize result.

One search of four trials (two members each) is run once per module and stored; variants
of its confirmation (confirmed, spreads more, not lower) are the same result with the
confirmation replaced, so each verdict is checked without training again.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from attractor.report import render_directory
from attractor.report.sections import Context, section_for
from attractor.runs.store import RunStore
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def result() -> Any:
    """A finished stabilize search: 4 trials x 2 members, confirmed on 2 fresh seeds."""
    pytest.importorskip("optuna")
    from attractor.stack.stabilize import StabilizeSettings, stabilize

    config = tiny_config(
        task={"hidden": [16]},
        trainer={"steps": 30, "batch_size": 32, "lr": 0.1},
        plan={"members": 4, "vary": ["init_seed", "data_seed"]},
    )
    settings = StabilizeSettings.model_validate(
        {
            "trials": 4,
            "parallel": 4,
            "members": 2,
            "confirm_members": 2,
            "draws": 20,
            "search": {"lr": [0.02, 0.5], "label_smoothing": [0.0, 0.2], "clip_norm": [0.1, 10]},
        }
    )
    return stabilize(config, settings)


def _store(tmp_path: Path, result: Any) -> RunStore:
    store = RunStore.prepare_experiment(tmp_path / "exp", "stabilize", {"kind": "stabilize"})
    store.write(result)
    return store


def _render(tmp_path: Path, result: Any) -> str:
    store = _store(tmp_path, result)
    section = section_for("stabilize")
    assert section is not None and section.order > 100  # an experiment's own section
    return section.render(store.results("stabilize"), Context(store, None))


def _with_spread(result: Any, low: float, high: float, verdict: str) -> Any:
    """``result`` with its confirmation's spread interval (and verdict) replaced."""
    c = result.confirmation
    spread = {**c["spread"], "low": low, "high": high, "difference": (low + high) / 2}
    confirmation = {**c, "spread": spread, "confirmed": high < 0, "verdict": verdict}
    return dataclasses.replace(result, confirmation=confirmation)


def _text(page: str) -> str:
    return re.sub(r'src="data:[^"]*"', "", page)


def test_section_answers_first_and_shows_the_search(result: Any, tmp_path: Path) -> None:
    page = _render(tmp_path, result)
    text = _text(page)
    assert page.count('<section id="stabilize"') == 1
    # The verdict leads, before any table or figure.
    first = text.lower().index("confirmed")
    assert first < text.index("<table") and first < text.index("<figure")
    expected = (
        "<strong>Confirmed</strong>" if result.confirmed else "<strong>NOT confirmed</strong>"
    )
    assert expected in text
    # The confirmation table: chosen vs start with intervals, difference and p.
    assert "Confirmation: chosen vs start" in text
    for header in ("chosen interval", "start interval", "chosen − start", "p (share of draws"):
        assert f">{header}" in text
    # The Pareto figure and, from four trials, the knobs' importance.
    assert 'alt="Pareto front of validation error and spread"' in page
    if len(result.importance):
        assert 'alt="importance of each knob for the spread"' in page
    # What changed: the searched knobs, start against chosen.
    assert "What the chosen trainer changes" in text and ">label_smoothing<" in text
    # The trials table: the chosen trial first, the Pareto trials before the others.
    chosen = int(result.chosen["trial"])
    rows = re.findall(r"<tr><td[^>]*>(\d+)</td>", text.split("Trials on the Pareto front")[1])
    assert rows and int(rows[0]) == chosen
    assert len(rows) == len(result.trials)
    front = set(result.trials.loc[result.trials["pareto"] | result.trials["chosen"], "trial"])
    assert {int(r) for r in rows[: len(front)]} == front
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)


def test_not_confirmed_says_so_plainly(result: Any, tmp_path: Path) -> None:
    unclear = _with_spread(result, -0.01, 0.01, "not confirmed: not lower")
    text = _text(_render(tmp_path / "unclear", unclear))
    assert "<strong>NOT confirmed</strong>" in text and "not lower than the starting" in text
    assert "<strong>Confirmed</strong>" not in text

    worse = _with_spread(result, 0.01, 0.02, "not confirmed: spreads MORE")
    text = _text(_render(tmp_path / "worse", worse))
    assert "<strong>NOT confirmed</strong>" in text and "spreads MORE than the starting" in text

    better = _with_spread(result, -0.02, -0.01, "confirmed on fresh seeds")
    text = _text(_render(tmp_path / "better", better))
    assert "<strong>Confirmed</strong>" in text and "NOT confirmed" not in text


def test_no_importance_and_missing_values_render(result: Any, tmp_path: Path) -> None:
    """Too few trials for importances; a trial without intervals shows dashes, not nan."""
    trials = result.trials.copy()
    trials.loc[trials.index[0], ["error_low", "spread_high"]] = float("nan")
    empty = pd.DataFrame(columns=["knob", "importance", "rho"])
    bare = dataclasses.replace(result, importance=empty, trials=trials)
    page = _render(tmp_path, bare)
    text = _text(page)
    assert "Too few trials" in text and "importance of each knob" not in page
    assert 'alt="Pareto front' in page and not re.search(r"\bnan\b", text, re.IGNORECASE)


def test_page_of_the_experiment_holds_the_section(result: Any, tmp_path: Path) -> None:
    store = _store(tmp_path, result)
    page = render_directory(store.root).read_text(encoding="utf-8")
    assert re.findall(r'<section id="([^"]+)"', page) == ["experiment", "stabilize"]
