"""`attractor sensitivity` and `attractor suggest` on tiny runs: files, JSON, refusals."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from attractor.runs.launch import train
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def factorial(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sens") / "run"
    config = tiny_config(
        trainer={"steps": 20},
        plan={
            "design": "factorial",
            "members": 8,
            "vary": [],
            "levels": {"init_seed": [0, 1], "data_seed": [0, 1]},
        },
    )
    train(config, root)
    return root


def test_sensitivity_command_writes_variance_components(factorial: Path, cli: Callable) -> None:
    result = cli("sensitivity", factorial, "--draws", "50", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["sobol"] is None and data["influence"] is None
    variance = data["variance"]
    assert set(variance["factors"]) == {"init_seed", "data_seed"}
    shares = {}
    for row in variance["table"]:
        shares.setdefault(row["outcome"], 0.0)
        shares[row["outcome"]] += row["share"]
    assert all(abs(total - 1) < 1e-9 for total in shares.values())
    assert (factorial / "sensitivity-variance.parquet").is_file()
    table = cli("sensitivity", factorial, "--draws", "50")
    assert table.code == 0 and "variance components" in table.out


def test_suggest_command_ranks_examples_with_reasons(factorial: Path, cli: Callable) -> None:
    result = cli("suggest", factorial, "--k", "5", "--draws", "50", "--json")
    assert result.code == 0, result.err
    rows = json.loads(result.out)["rows"]
    examples = [r for r in rows if r["kind"] == "example"]
    assert 0 < len(examples) <= 5 and all(r["reason"] for r in rows)
    scores = [r["score"] for r in examples]
    assert scores == sorted(scores, reverse=True)
    assert (factorial / "suggestions.json").is_file()


def test_plan_without_structure_is_refused_in_one_line(tmp_path: Path, cli: Callable) -> None:
    train(tiny_config(trainer={"steps": 5}), tmp_path / "random")
    result = cli("sensitivity", tmp_path / "random")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1
    bad = cli("suggest", tmp_path / "random", "--pool", "validation")
    assert bad.code == 2 and "--pool must be 'test' or 'train'" in bad.err


def test_report_shows_the_sensitivity_section(factorial: Path, cli: Callable) -> None:
    assert cli("sensitivity", factorial, "--draws", "50").code == 0
    assert cli("report", factorial).code == 0
    html = (factorial / "report.html").read_text()
    assert 'id="sensitivity"' in html and "Variance components" in html
