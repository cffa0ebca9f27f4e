"""Each sensitivity entry point end to end on a tiny trained run (digits-mlp, a dozen steps)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attractor.errors import UserError
from attractor.runs.ensemble import Ensemble
from attractor.runs.launch import train
from attractor.sensitivity import (
    analyze,
    group_influence,
    sobol_analysis,
    suggest,
    variance_components,
    write_influence,
    write_sensitivity,
    write_sobol,
    write_suggestions,
    write_variance,
)
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def factorial(tmp_path_factory: pytest.TempPathFactory) -> Ensemble:
    plan = {
        "members": 6,
        "design": "factorial",
        "vary": ["init_seed", "bootstrap"],
        "levels": {"init_seed": [0, 1, 2], "bootstrap": [0, 1]},
    }
    return train(tiny_config(plan=plan), tmp_path_factory.mktemp("sens") / "factorial")


@pytest.fixture(scope="module")
def sobol(tmp_path_factory: pytest.TempPathFactory) -> Ensemble:
    # lr up to 1e6: about half the members diverge, which the outcomes must absorb. Ranges not
    # in alphabetical order: the manifest sorts keys, the analysis must follow the plan's order.
    plan = {
        "members": 16,
        "design": "sobol",
        "vary": ["init_seed"],
        "ranges": {"momentum": [0.0, 0.9], "lr": [0.01, 1e6]},
    }
    return train(tiny_config(plan=plan), tmp_path_factory.mktemp("sens") / "sobol")


@pytest.fixture(scope="module")
def holdout(tmp_path_factory: pytest.TempPathFactory) -> Ensemble:
    plan = {
        "members": 6,
        "vary": ["init_seed", "holdout_group"],
        "levels": {"holdout_group": [0, 1, 2]},
    }
    return train(tiny_config(plan=plan), tmp_path_factory.mktemp("sens") / "holdout")


def _json_roundtrip(data: dict) -> dict:
    return json.loads(json.dumps(data, allow_nan=False))


def test_variance_components_of_a_factorial_run(factorial: Ensemble) -> None:
    result = variance_components(factorial, draws=50)
    assert result.factors == ["init_seed", "bootstrap"] and result.levels == {
        "init_seed": 3,
        "bootstrap": 2,
    }
    assert result.replicates == 1 and result.members == 6
    for outcome, part in result.table.groupby("outcome"):
        assert part["ss_share"].sum() == pytest.approx(1.0), outcome
        assert part["share"].sum() == pytest.approx(1.0), outcome
    assert set(result.table["outcome"]) == {"test_loss", "test_accuracy", "kl_to_mean", "p_true"}
    assert _json_roundtrip(result.to_dict())["factors"] == ["init_seed", "bootstrap"]
    paths = write_variance(factorial, result)
    pd.testing.assert_frame_equal(pd.read_parquet(paths["parquet"]), result.table)
    assert json.loads(Path(paths["json"]).read_text())["members"] == 6
    # Two bootstrap resamples: each training example is in one, both or neither of them, so
    # the per-example contrasts tie; only |t| >= 2 would be listed before the examples.
    tips = suggest(factorial, k=3, draws=20)
    kinds = tips.rows["kind"].tolist()
    assert kinds[-3:] == ["example"] * 3 and set(kinds[:-3]) <= {"training_example"}
    assert (tips.rows.loc[tips.rows["kind"] == "training_example", "score"].abs() >= 2).all()


def test_sobol_indices_of_a_sobol_run_with_diverged_members(
    sobol: Ensemble, factorial: Ensemble
) -> None:
    result = sobol_analysis(sobol, resamples=50)
    assert (
        result.diverged > 0
        and result.base_samples == 4
        and result.problem["names"] == ["momentum", "lr"]
    )
    assert np.isfinite(result.table[["S1", "ST"]].to_numpy()).all()
    accuracy = result.table[result.table["outcome"] == "test_accuracy"].set_index("factor")
    assert (
        accuracy.loc["lr", "ST"] > accuracy.loc["momentum", "ST"]
    )  # 8 decades of lr, half of them diverge
    _json_roundtrip(result.to_dict())
    paths = write_sobol(sobol, result)
    assert Path(paths["parquet"]).exists() and Path(paths["json"]).exists()
    with pytest.raises(UserError, match='design = "sobol"'):
        sobol_analysis(factorial)
    with pytest.raises(UserError, match="one value per member"):
        sobol_analysis(sobol, outcomes=["p_true"])


def test_group_influence_and_suggestions_of_a_holdout_run(
    holdout: Ensemble, factorial: Ensemble
) -> None:
    result = group_influence(holdout, draws=100)
    assert result.reference == "other groups" and result.table["group"].tolist() == [0, 1, 2]
    assert (result.table["members"] == 2).all() and (result.table["reference_members"] == 4).all()
    row = result.table.iloc[0]
    assert row["accuracy_low"] <= row["accuracy_high"] and np.isfinite(row["spread_change"])
    _json_roundtrip(result.to_dict())
    write_influence(holdout, result)
    against = group_influence(holdout, reference=factorial, draws=50)
    assert (
        against.reference == "reference ensemble"
        and (against.table["reference_members"] == 6).all()
    )

    tips = suggest(holdout, k=4, draws=50)
    assert tips.rows["kind"].tolist() == ["group"] * 3 + ["example"] * 4
    examples = tips.rows[tips.rows["kind"] == "example"]
    assert (
        examples["score"].is_monotonic_decreasing
        and examples["reason"].str.startswith("members disagree most").all()
    )
    assert _json_roundtrip(tips.to_dict())["k"] == 4
    paths = write_suggestions(holdout, tips)
    assert len(pd.read_parquet(paths["parquet"])) == 7
    with pytest.raises(UserError, match="k must be"):
        suggest(holdout, k=0)


def test_analyze_picks_what_the_plan_allows(
    factorial: Ensemble, sobol: Ensemble, holdout: Ensemble
) -> None:
    report = analyze(factorial, draws=20)
    assert report.variance is not None and report.sobol is None and report.influence is None
    assert analyze(sobol, draws=20).sobol is not None
    report = analyze(holdout, draws=20)
    assert report.influence is not None and report.variance is None
    paths = write_sensitivity(holdout, report)
    assert set(paths) == {"influence_parquet", "influence_json"}
    _json_roundtrip(report.to_dict())
