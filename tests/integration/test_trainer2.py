"""Trainer2 end to end: studies are reproducible, lockstep equals one study at a time, files and
report.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from attractor.stack import (
    Trainer2Result,
    Trainer2Settings,
    load_trainer2,
    run_trainer2,
    summary_lines,
)
from attractor.stack.fit import trial_task, validation_split
from attractor.stack.search import run_studies
from attractor.tasks import build_task
from tests.conftest import tiny_config, write_toml

THREADS = torch.get_num_threads()
SETTINGS = {
    "trials": 3,
    "startup_trials": 2,
    "sampler_seeds": 2,
    "validation_bootstraps": 2,
    "holdout_groups": [1, 7],
    "final_members": 2,
    "draws": 50,
    "threads": 1,
}


@pytest.fixture(scope="module")
def config():
    return tiny_config(task={"hidden": [16]}, trainer={"steps": 20})


@pytest.fixture(scope="module")
def settings() -> Trainer2Settings:
    return Trainer2Settings.model_validate(SETTINGS)


@pytest.fixture(scope="module")
def result(config, settings, tmp_path_factory: pytest.TempPathFactory) -> Trainer2Result:
    out = tmp_path_factory.mktemp("trainer2")
    result = run_trainer2(config, settings, out)
    from attractor.report import render_directory  # as `attractor trainer2` does after the run

    render_directory(out)
    return result


def _trials(config, settings: Trainer2Settings, lockstep: bool) -> pd.DataFrame:
    task = build_task(config.task)
    fit, val = validation_split(task.n_train, settings.validation_fraction, settings.split_seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as trainer2_study does with threads = 1
    try:
        return run_studies(
            trial_task(task, fit, val), config, settings, "vectorized", lockstep=lockstep
        )[0]
    finally:
        torch.set_num_threads(threads)


def test_result_shapes_and_files(result: Trainer2Result, settings: Trainer2Settings) -> None:
    studies = 2 * 2 * 2
    assert (
        len(result.trials) == studies * settings.trials and result.trials["best"].sum() == studies
    )
    assert len(result.studies) == studies and set(result.studies["holdout_group"]) == {1, 7}
    assert 1 <= len(result.trainers) <= studies and 1 <= result.n_basins <= len(result.trainers)
    assert torch.get_num_threads() == THREADS  # restored after the study
    assert result.distances["js_mean"].shape == (studies, studies)
    assert {"log10_lr", "momentum", "best_value", "ensemble_accuracy", "distance_to_center"} <= set(
        result.spread["quantity"]
    )
    assert set(result.dominant) == {
        "log10_lr",
        "best_value",
        "ensemble_accuracy",
        "distance_to_center",
        "p_true",
    }
    assert set(result.variance["effect"]) >= {
        "sampler_seed",
        "validation_bootstrap",
        "holdout_group",
    }
    out = result.out
    assert out is not None
    pd.testing.assert_frame_equal(pd.read_parquet(out / "trainer2.parquet"), result.trials)
    saved = json.loads((out / "trainer2.json").read_text())
    assert (
        saved["n_studies"] == studies
        and saved["n_basins"] == result.n_basins
        and saved["settings"]["trials"] == 3
    )
    assert summary_lines(result)[0].startswith("8 studies x 3 trials")
    page = (out / "report.html").read_text()
    assert "Which initial condition moves the result" in page and "data:image/png;base64," in page


def test_same_config_gives_the_same_studies(
    result: Trainer2Result, config, settings: Trainer2Settings
) -> None:
    again = _trials(config, settings, lockstep=True)
    pd.testing.assert_frame_equal(again, result.trials)


def test_lockstep_equals_each_study_alone(
    result: Trainer2Result, config, settings: Trainer2Settings
) -> None:
    alone = _trials(config, settings, lockstep=False)
    pd.testing.assert_frame_equal(alone, result.trials)


def test_load_trainer2_reads_the_table(tmp_path: Path, config) -> None:
    data = config.resolved() | {
        "trainer2": {"trials": 5, "search": {"lr": [0.01, 0.5], "optimizers": ["sgd", "adam"]}}
    }
    path = write_toml(tmp_path / "t2.toml", data)
    loaded, settings = load_trainer2(path)
    assert (
        loaded == config and settings.trials == 5 and settings.search.optimizers == ["sgd", "adam"]
    )
    example = Path(__file__).parents[2] / "examples" / "trainer2.toml"
    if example.exists():
        load_trainer2(example)


def test_cli_overrides_and_json(tmp_path: Path, cli) -> None:
    mapping = tiny_config(task={"hidden": [16]}, trainer={"steps": 10}).resolved()
    mapping["trainer2"] = {
        "trials": 5,
        "sampler_seeds": 3,
        "final_members": 3,
        "draws": 20,
        "threads": 1,
    }
    path = write_toml(tmp_path / "t2.toml", mapping)
    result = cli(
        "trainer2",
        path,
        "--trials",
        "2",
        "--sampler-seeds",
        "2",
        "--validation-bootstraps",
        "0",
        "--final-members",
        "2",
        "--out",
        tmp_path / "out",
        "--no-report",
        "--json",
    )
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert len(data["studies"]) == 2 and data["settings"]["trials"] == 2
    assert (tmp_path / "out" / "trainer2.json").is_file() and not (
        tmp_path / "out" / "report.html"
    ).exists()
    bad = cli("trainer2", path, "--sampler", "grid", "--out", tmp_path / "bad")
    assert bad.code == 2 and len(bad.err.strip().splitlines()) == 1
