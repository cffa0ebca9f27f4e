"""Verdict lines of the world and stabilize experiments, from hand-built stored data."""

from __future__ import annotations

from pathlib import Path

import pytest

from attractor.measure.verdict import verdict
from attractor.measure.verdict_experiments import (
    WORLD_SHARE,
    compare_lines,
    stabilize_line,
    world_line,
)
from attractor.runs.results import StoredResult


def _world(share: float, low: float, high: float, goal: bool = True) -> dict:
    return {
        "summary": {"basin_share": share, "low": low, "high": high, "scale": 1.0, "has_goal": goal}
    }


@pytest.mark.parametrize(
    ("low", "high", "status"),
    [(0.96, 1.0, "yes"), (WORLD_SHARE, 0.99, "yes"), (0.90, 0.97, "unclear"), (0.5, 0.94, "no")],
)
def test_world_share_is_judged_over_its_whole_interval(low, high, status) -> None:
    line = world_line(_world((low + high) / 2, low, high))
    assert line is not None and line.status == status and line.section == "world"
    assert f"[{100 * low:.1f}, {100 * high:.1f}]" in line.answer


def test_world_names_its_target_and_needs_a_share() -> None:
    line = world_line(_world(0.8, 0.7, 0.9, goal=False))
    assert line is not None and "majority basin" in line.answer and "1x" in line.answer
    assert world_line({"summary": {"basin_share": None}}) is None


@pytest.mark.parametrize(
    ("low", "high", "status", "words"),
    [
        (-0.005, -0.001, "yes", "is lower"),
        (-0.002, 0.001, "unclear", "not confirmed"),
        (0.001, 0.004, "no", "is not lower"),
    ],
)
def test_stabilize_is_confirmed_only_below_zero(low, high, status, words) -> None:
    data = {
        "settings": {"spread": "js"},
        "confirmation": {"spread": {"difference": (low + high) / 2, "low": low, "high": high}},
    }
    line = stabilize_line(data)
    assert line is not None and line.status == status and words in line.answer
    assert line.answer.startswith(
        ("the chosen trainer's js", "not confirmed: the chosen trainer's js")
    )
    assert stabilize_line({"confirmation": {}}) is None


def test_an_experiment_directory_gets_its_lines() -> None:
    stored = [
        StoredResult("world", 1, "world", Path("world"), _world(1.0, 0.99, 1.0), ()),
        StoredResult(
            "stabilize",
            1,
            "stabilize",
            Path("stabilize"),
            {"confirmation": {"spread": {"difference": -0.1, "low": -0.2, "high": -0.05}}},
            (),
        ),
    ]
    found = verdict(stored)
    assert [x.id for x in found.lines] == ["world", "stabilize"]
    assert all(x.status == "yes" for x in found.lines)


def _paired(measure: str, better: str, low: float, high: float) -> dict:
    return {
        "measure": measure,
        "better": better,
        "difference": (low + high) / 2,
        "low": low,
        "high": high,
    }


@pytest.mark.parametrize(
    ("row", "status", "words"),
    [
        (_paired("pairwise_js", "lower", -0.2, -0.1), "yes", "A is better"),
        (_paired("pairwise_js", "lower", 0.1, 0.2), "no", "B is better"),
        (_paired("pairwise_js", "lower", -0.1, 0.1), "unclear", "no clear difference"),
        (_paired("accuracy", "higher", 0.01, 0.03), "yes", "A is better"),
        (_paired("accuracy", "higher", -0.03, -0.01), "no", "B is better"),
    ],
)
def test_two_runs_are_judged_by_the_side_of_zero(row: dict, status: str, words: str) -> None:
    (line,) = compare_lines({"paired": [row]})
    assert line.status == status and line.answer.startswith(words)
    assert line.id == f"compare-{row['measure']}" and line.section == "compare-paired"
    assert compare_lines({"paired": []}) == []
