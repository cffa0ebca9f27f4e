"""`attractor diff`: search below, certificate above, on real tiny runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from attractor.config import parse_config
from attractor.runs.launch import train
from tests.conftest import tiny_config


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every diff without --out lands in ./runs/diff-<hash>: here, not in the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("diff") / "run"
    train(tiny_config(task={"hidden": [16]}, trainer={"steps": 30}, plan={"members": 2}), root)
    return root


def test_search_never_exceeds_the_certificate(run: Path, cli: Callable) -> None:
    """The search maximizes the certified quantity itself (objective logit): per ball, found <=
    bound.
    """
    result = cli(
        "diff",
        f"{run}:0",
        f"{run}:1",
        "--objective",
        "logit",
        "--points",
        "3",
        "--eps",
        "0.2",
        "--budget",
        "0.5",
        "--restarts",
        "4",
        "--steps",
        "20",
        "--out",
        run.parent / "pair",
        "--json",
    )
    assert result.code == 0, result.err
    data = json.loads(result.out)
    cert = data["certificate"]
    assert cert is not None and data["certify_note"] is None
    for found, lower, upper in zip(
        data["search"]["best_per_point"], cert["lower"], cert["upper"], strict=True
    ):
        assert found <= upper + 1e-6 and lower <= upper + 1e-9
    for row in data["per_output"]:
        assert (
            row["certified_low"] - 1e-6
            <= row["attained_low"]
            <= row["attained_high"]
            <= row["certified_high"] + 1e-6
        )
    assert data["search"]["evaluations"] == data["baseline"]["evaluations"]
    assert (run.parent / "pair" / "report.html").is_file() and (
        run.parent / "pair" / "diff.json"
    ).is_file()


def test_identical_models_are_verified_at_zero(run: Path, cli: Callable) -> None:
    result = cli(
        "diff", f"{run}:0", f"{run}:0", "--points", "2", "--budget", "0", "--delta", "0", "--json"
    )
    assert result.code == 0, result.err
    cert = json.loads(result.out)["certificate"]
    assert cert["upper"] == [0.0, 0.0] and cert["verdicts"] == ["verified", "verified"]


def test_each_diff_gets_a_directory_of_its_own(run: Path, cli: Callable, tmp_path: Path) -> None:
    """Not run A's directory, not over an earlier diff: runs/diff-<hash>, shown by `attractor
    report`.
    """
    args = (
        "diff",
        f"{run}:0",
        f"{run}:0@noise=0.01",
        "--points",
        "2",
        "--budget",
        "0.2",
        "--steps",
        "5",
    )
    assert cli(*args).code == 0
    assert cli(*args[:-1], "6").code == 0  # other settings: another directory
    assert not (run / "diff.json").exists()
    made = sorted((tmp_path / "runs").glob("diff-*"))
    assert len(made) == 2 and all((d / "diff.json").is_file() for d in made)
    assert cli(*args).code == 0  # the same settings reopen their directory
    assert len(list((tmp_path / "runs").glob("diff-*"))) == 2
    assert cli("report", made[0]).code == 0
    html = (made[0] / "report.html").read_text()
    assert 'id="disagreement"' in html and "dreams" in html


def test_discrete_inputs_are_refused_in_one_line(tmp_path: Path, cli: Callable) -> None:
    config = parse_config(
        {
            "task": {"name": "modular-addition", "p": 11, "embed_dim": 4, "hidden": 8},
            "trainer": {"steps": 3, "batch_size": 8},
            "plan": {"members": 2},
            "run": {"snapshots": 1},
        }
    )
    train(config, tmp_path / "mod")
    result = cli(
        "diff", f"{tmp_path / 'mod'}:0", f"{tmp_path / 'mod'}:1", "--points", "2", "--steps", "3"
    )
    assert (
        result.code == 2
        and len(result.err.strip().splitlines()) == 1
        and "discrete inputs" in result.err
    )


def test_models_the_certificate_cannot_read_still_get_the_search(
    tmp_path: Path, cli: Callable
) -> None:
    """A model with Tanh: search and baseline, and a note saying why no certificate."""
    config = tiny_config(
        task={"hidden": [8], "activation": "tanh"}, trainer={"steps": 3}, plan={"members": 2}
    )
    train(config, tmp_path / "tanh")
    result = cli(
        "diff",
        f"{tmp_path / 'tanh'}:0",
        f"{tmp_path / 'tanh'}:1",
        "--points",
        "2",
        "--steps",
        "3",
        "--json",
    )
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["certificate"] is None and "Tanh" in data["certify_note"]


def test_bad_spec_is_one_line_and_exit_2(run: Path, cli: Callable) -> None:
    result = cli("diff", f"{run}:9", f"{run}:0")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1


def test_ensemble_spread_and_given_centres(run: Path, tmp_path: Path, cli: Callable) -> None:
    import numpy as np

    from attractor.runs.ensemble import Ensemble

    x = Ensemble.load(run).task.x_test[:3].numpy()
    np.save(tmp_path / "centers.npy", x)
    result = cli(
        "diff",
        run,
        "--centers",
        tmp_path / "centers.npy",
        "--no-clip",
        "--steps",
        "5",
        "--restarts",
        "2",
        "--out",
        tmp_path / "spread",
        "--json",
    )
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert (
        data["search"]["objective"] == "mi"
        and data["certificate"] is None
        and data["settings"]["points"] == 3
    )
    assert np.allclose(
        np.asarray([d["center"] for d in data["dreams"]]),
        x[[d["point"] for d in data["dreams"]]],
        atol=1e-6,
    )
    np.save(tmp_path / "bad.npy", x[:, :5])
    bad = cli("diff", f"{run}:0", f"{run}:1", "--centers", tmp_path / "bad.npy")
    assert bad.code == 2 and "--centers" in bad.err and len(bad.err.strip().splitlines()) == 1
