"""`attractor measure / compare / report` on real tiny runs: files, intervals, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from attractor.measure.compare import compare_runs
from attractor.measure.spread import MeasureOptions, measure_ensemble
from attractor.runs.ensemble import Ensemble
from attractor.runs.launch import train
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    good = tiny_config(
        trainer={"steps": 40}, plan={"members": 4, "vary": ["init_seed", "data_seed", "bootstrap"]}
    )
    # lr 100x smaller: clearly worse after the same steps, same task and examples.
    slow = tiny_config(trainer={"steps": 40, "lr": 0.0005}, plan={"members": 4})
    train(good, root / "good")
    train(slow, root / "slow")
    train(tiny_config(plan={"members": 1, "vary": []}), root / "single")
    train(tiny_config(task={"hidden": [16]}), root / "other-task")
    return {name: root / name for name in ("good", "slow", "single", "other-task")}


def test_measure_ensemble_numbers_hang_together(runs: dict[str, Path]) -> None:
    ens = Ensemble.load(runs["good"])
    measures = measure_ensemble(ens, MeasureOptions(draws=200))
    for name, estimate in measures.summary.items():
        if "low" in estimate:
            assert estimate["low"] - 1e-12 <= estimate["value"] <= estimate["high"] + 1e-12, name
    final = (
        ens.metrics.sort_values("step").groupby("member").tail(1).set_index("member").sort_index()
    )
    members = measures.members.set_index("member")
    pd.testing.assert_series_equal(
        members["accuracy"], final["test_accuracy"], check_names=False, atol=1e-6
    )
    assert sum(measures.basins.sizes) == 4
    assert measures.pairwise["js"].shape == (4, 4)
    assert measures.lmc and measures.lmc[0].curve.shape[0] == 30
    # Mutual information is the mean KL to the ensemble mean (an identity, not an estimate).
    assert measures.summary["mutual_information"]["value"] == pytest.approx(
        members["kl_to_mean"].mean(), rel=1e-9
    )


def test_measure_command_writes_tables(cli, runs: dict[str, Path]) -> None:
    result = cli("measure", runs["good"], "--draws", "100", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert {"summary", "basins", "trajectory", "lmc", "files"} <= set(data)
    table = pd.read_parquet(runs["good"] / "measures.parquet")
    assert {"measure", "member_a", "member_b", "value"} <= set(table.columns)
    assert set(table.loc[table["member_b"].notna(), "measure"]) >= {
        "js",
        "disagreement",
        "weight_distance",
    }
    assert (
        json.loads((runs["good"] / "measures.json").read_text())["summary"]["test_accuracy"][
            "draws"
        ]
        == 100
    )


def test_compare_finds_the_better_run(runs: dict[str, Path]) -> None:
    good, slow = Ensemble.load(runs["good"]), Ensemble.load(runs["slow"])
    better = compare_runs(good, slow, draws=300)
    assert better["difference"] > 0 and better["low"] > 0 and better["p"] < 0.01
    same = compare_runs(good, good, draws=300)
    assert same["difference"] == 0


def test_compare_and_report_commands(cli, runs: dict[str, Path]) -> None:
    result = cli("compare", runs["good"], runs["slow"], "--draws", "100")
    assert result.code == 0 and "A - B" in result.out
    assert cli("structural", runs["good"], "--kind", "quantize", "--levels", "8,4,2").code == 0
    result = cli("report", runs["good"], "--json")
    assert result.code == 0, result.err
    path = Path(json.loads(result.out)["report"])
    assert path == runs["good"] / "report.html" and "<h2" in path.read_text()
    assert "Structural stability" in path.read_text()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("measure", "{single}"), "at least 2"),
        (("measure", "{good}", "--split", "valid"), "--split"),
        (("compare", "{good}", "{other-task}"), "different [task] sections"),
        (("compare", "{good}", "{slow}", "--metric", "f1"), "--metric"),
        (("report", "{missing}"), "not an attractor run directory"),
    ],
)
def test_bad_input_is_one_line(
    cli, runs: dict[str, Path], tmp_path: Path, args: tuple[str, ...], fragment: str
) -> None:
    paths = {**{k: str(v) for k, v in runs.items()}, "missing": str(tmp_path / "nothing")}
    result = cli(*(a.format(**paths) for a in args))
    assert (
        result.code == 2 and fragment in result.err and len(result.err.strip().splitlines()) == 1
    ), result.err


@pytest.mark.parametrize(
    ("spawn", "fragment"),
    [("0,500", "at or past the end of training"), ("0,five", "--spawn-steps"), ("3,3", "spawn")],
)
def test_instability_refuses_bad_spawn_steps(
    cli, tmp_path: Path, spawn: str, fragment: str
) -> None:
    from tests.conftest import write_toml

    config = write_toml(tmp_path / "c.toml", tiny_config(trainer={"steps": 30}))
    result = cli("instability", config, "--spawn-steps", spawn, "--out", tmp_path / "out")
    assert (
        result.code == 2 and fragment in result.err and len(result.err.strip().splitlines()) == 1
    ), result.err
    assert not (tmp_path / "out").exists()


def test_instability_command_writes_results(cli, tmp_path: Path) -> None:
    from tests.conftest import write_toml

    config = write_toml(tmp_path / "c.toml", tiny_config(trainer={"steps": 30}))
    result = cli(
        "instability",
        config,
        "--spawn-steps",
        "0,10",
        "--pairs",
        "2",
        "--out",
        tmp_path / "out",
        "--json",
    )
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["spawn_steps"] == [0, 10]
    assert (tmp_path / "out" / "instability.parquet").exists()


def test_structural_command(cli, runs: dict[str, Path]) -> None:
    result = cli(
        "structural",
        runs["good"],
        "--kind",
        "weight_noise",
        "--levels",
        "0,0.5",
        "--samples",
        "3",
        "--draws",
        "100",
        "--json",
    )
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["kind"] == "weight_noise"
    assert (runs["good"] / "structural-weight_noise.parquet").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--kind", "melt"), "melt"),
        (("--levels", "0,lots"), "--levels"),
        (("--kind", "dropout", "--levels", "0,1.5"), "dropout"),
    ],
)
def test_structural_refuses_bad_input(
    cli, runs: dict[str, Path], args: tuple[str, ...], fragment: str
) -> None:
    result = cli("structural", runs["good"], *args)
    assert (
        result.code == 2 and fragment in result.err and len(result.err.strip().splitlines()) == 1
    ), result.err


def test_hparam_map_command(cli, tmp_path: Path) -> None:
    from tests.conftest import write_toml

    config = write_toml(tmp_path / "c.toml", tiny_config(trainer={"steps": 20}))
    result = cli(
        "hparam-map",
        config,
        "--lr",
        "0.01:1:3",
        "--momentum",
        "0,0.9",
        "--seeds",
        "2",
        "--draws",
        "50",
        "--out",
        tmp_path / "map",
        "--json",
    )
    assert result.code == 0, result.err
    assert len(json.loads(result.out)["ranges"]) == 2
    assert (tmp_path / "map" / "hparam-map.png").exists()


@pytest.mark.parametrize(
    ("lr", "fragment"),
    [("1:0.1:3", "LOW < HIGH"), ("0.1:1", "LOW:HIGH:N"), ("a:b:c", "LOW:HIGH:N")],
)
def test_hparam_map_refuses_bad_lr(cli, tmp_path: Path, lr: str, fragment: str) -> None:
    from tests.conftest import write_toml

    config = write_toml(tmp_path / "c.toml", tiny_config())
    result = cli("hparam-map", config, "--lr", lr, "--out", tmp_path / "map")
    assert (
        result.code == 2 and fragment in result.err and len(result.err.strip().splitlines()) == 1
    ), result.err
    assert not (tmp_path / "map").exists()
