"""Verdict lines of the world and stabilize experiments, from hand-built stored data."""

from __future__ import annotations

from pathlib import Path

import pytest

from attractor.measure.verdict import verdict
from attractor.measure.verdict_experiments import (
    WORLD_SHARE,
    compare_lines,
    diff_line,
    evaluator_line,
    hparam_map_lines,
    shortcuts_lines,
    stabilize_line,
    tangent_line,
    trainer2_line,
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


def test_diff_is_judged_by_the_certificate_at_delta() -> None:
    summary = {"certified_upper_max": 0.4, "attained_lower_max": 0.3}
    at = {"summary": {**summary, "verdicts": {"verified": 3, "falsified": 0, "unknown": 0}}}
    assert diff_line({**at, "settings": {"delta": 0.5}}).status == "yes"
    bad = {"summary": {**summary, "verdicts": {"verified": 1, "falsified": 2, "unknown": 0}}}
    assert diff_line({**bad, "settings": {"delta": 0.35}}).status == "no"
    open_ = diff_line({"summary": summary, "settings": {"delta": None}})
    assert open_.status == "unclear" and "--delta" in open_.answer
    assert diff_line({"summary": {"search_best": 1.0}}) is None  # no certificate


@pytest.mark.parametrize(
    ("low", "high", "status"), [(-0.3, -0.1, "yes"), (-0.1, 0.2, "unclear"), (0.1, 0.2, "no")]
)
def test_tangent_perturbations_shrink_when_every_member_exponent_is_below_zero(
    low: float, high: float, status: str
) -> None:
    data = {"summary": {"leading_exponent": {"mean": (low + high) / 2, "min": low, "max": high}}}
    assert tangent_line(data).status == status
    assert tangent_line({"summary": {}}) is None


def test_hparam_map_shortcuts_trainer2_and_evaluator_lines() -> None:
    ranges = [
        {"momentum": 0.0, "width": 1.5, "low": 1.2, "high": 1.8},
        {"momentum": 0.9, "width": 0.6, "low": 0.3, "high": 0.9},
        {"momentum": 0.5, "width": 1.0, "low": 0.5, "high": 1.5},
    ]
    assert [x.status for x in hparam_map_lines({"ranges": ranges})] == ["yes", "no", "unclear"]
    summary = [
        {
            "variant": "sgd",
            "shortcut_reliance": 0.3,
            "shortcut_reliance_low": 0.2,
            "shortcut_reliance_high": 0.4,
        },
        {
            "variant": "adam",
            "shortcut_reliance": 0.0,
            "shortcut_reliance_low": -0.05,
            "shortcut_reliance_high": 0.05,
        },
    ]
    found = shortcuts_lines({"summary": summary})
    assert [x.status for x in found] == ["no", "yes"] and "relies on" in found[0].answer
    assert trainer2_line({"n_basins": 1, "n_trainers": 6}).status == "yes"
    assert trainer2_line({"n_basins": 3, "n_trainers": 6}).status == "no"
    sources = {
        "resamples": {"share": 0.7, "share_low": 0.55, "share_high": 0.8},
        "evaluator seed": {"share": 0.2, "share_low": 0.1, "share_high": 0.3},
    }
    line = evaluator_line({"summary": {"sources": sources}})
    assert line.status == "yes" and line.answer.startswith("resamples holds 70.0 %")
