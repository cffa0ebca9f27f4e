"""Trainer2 pieces: settings, the validation split, distances and basins on a hand case,
summaries.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import torch

from attractor.errors import UserError
from attractor.stack.compare import compare, distinct_trainers
from attractor.stack.fit import trial_task, validation_split
from attractor.stack.outcomes import factor_variance, spread_table
from attractor.stack.search import HPARAMS, initial_conditions, score, validation_weights
from attractor.stack.settings import Trainer2Settings, parse_trainer2
from attractor.tasks import build_task
from tests.conftest import tiny_config, tiny_mapping


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny members: a second thread only waits on a busy CPU (and results do not depend on it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def parse(trainer2: dict) -> Trainer2Settings:
    return parse_trainer2(tiny_mapping() | {"trainer2": trainer2}, source="t.toml")[1]


@pytest.mark.parametrize(
    ("trainer2", "expected"),
    [
        (
            {"search": {"lr": [1.0, 0.001]}},
            "t.toml: invalid value at 'trainer2.search.lr': range of 'lr' must be [low, high] with "
            "low < high",
        ),
        ({"search": {"lr": [0.0, 1.0]}}, "searched log-uniformly, so low must be > 0"),
        ({"search": {"momentum": [0.0, 1.0]}}, "range of 'momentum' must lie in [0, 1)"),
        (
            {"search": {"optimizers": ["sgd", "lion"]}},
            "unknown optimizer 'lion'; optimizers are: sgd, adam, adamw, cone",
        ),
        ({"search": {"batch_sizes": [32, 0]}}, "batch_sizes must be distinct integers >= 1"),
        ({"trails": 3}, "unknown key 'trainer2.trails'; did you mean 'trials'?"),
        ({"search": {"lrr": [0.1, 1.0]}}, "unknown key 'trainer2.search.lrr'; did you mean 'lr'?"),
        ({"holdout_groups": [1, 1]}, "holdout_groups must be distinct"),
    ],
)
def test_bad_settings_are_one_line_user_errors(trainer2: dict, expected: str) -> None:
    with pytest.raises(UserError) as info:
        parse(trainer2)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_overrides_are_validated() -> None:
    settings = Trainer2Settings().updated(trials=5, holdout_groups=[1, 2])
    assert settings.trials == 5 and settings.n_studies == 4 * 2 * 2 and settings.rounds == 5
    assert settings.updated(lockstep=False).rounds == 5 * 16
    with pytest.raises(UserError, match="trainer2.trials"):
        settings.updated(trials=0)


def test_unknown_holdout_group_is_refused() -> None:
    settings = parse({"holdout_groups": [3, 12]})
    with pytest.raises(UserError, match="names group 12, but the task defines groups"):
        settings.check(build_task(tiny_config().task).group_ids)


def test_missing_optuna_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from attractor.stack.search import make_study

    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    with pytest.raises(UserError, match=r"pip install 'attractor\[optuna\]'"):
        make_study(Trainer2Settings(), 0)


def test_studies_cross_the_initial_conditions() -> None:
    settings = parse({"sampler_seeds": 2, "validation_bootstraps": 0, "holdout_groups": [4, 5]})
    cells = [
        (c.sampler_seed, c.validation_bootstrap, c.holdout_group)
        for c in initial_conditions(settings)
    ]
    assert cells == [(0, None, 4), (0, None, 5), (1, None, 4), (1, None, 5)]


def test_validation_split_partitions_and_is_seeded() -> None:
    fit, val = validation_split(100, 0.2, seed=3)
    assert len(val) == 20 and len(fit) == 80
    assert sorted(torch.cat([fit, val]).tolist()) == list(range(100))
    assert torch.equal(validation_split(100, 0.2, seed=3)[1], val)
    assert not torch.equal(validation_split(100, 0.2, seed=4)[1], val)
    task = build_task(tiny_config().task)
    fit, val = validation_split(task.n_train, 0.2, 0)
    sub = trial_task(task, fit, val)
    assert torch.equal(sub.x_test, task.x_train[val]) and torch.equal(
        sub.train_groups, task.y_train[fit]
    )


def test_validation_weights_are_resample_counts() -> None:
    assert torch.equal(validation_weights(7, None), torch.ones(7, dtype=torch.float64))
    w = validation_weights(50, 1)
    assert (
        w.sum() == 50
        and torch.equal(w, validation_weights(50, 1))
        and not torch.equal(w, validation_weights(50, 2))
    )


def test_score_weights_examples_by_their_resample_counts() -> None:
    task = build_task(tiny_config().task)
    targets = torch.tensor([0, 1, 2, 3])
    logits = (
        torch.nn.functional.one_hot(torch.tensor([[0, 1, 0, 0], [0, 1, 2, 0]]), 10).float() * 5
    )  # [2 members, 4, 10]
    weights = torch.tensor([1.0, 0.0, 2.0, 1.0], dtype=torch.float64)
    # member 0 right on example 0 (weight 1 of 4), member 1 on examples 0 and 2 (weights 3 of 4)
    assert score(logits, targets, weights, task, "accuracy") == pytest.approx((0.25 + 0.75) / 2)
    loss = score(logits, targets, torch.ones(4, dtype=torch.float64), task, "loss")
    assert loss == pytest.approx(float(task.loss(logits, targets.expand(2, 4)).mean()))


def _best(trainers: list[tuple[float, float]]) -> pd.DataFrame:
    rows = [
        {
            "study": i,
            "lr": lr,
            "momentum": m,
            "weight_decay": 0.0,
            "batch_size": 32,
            "optimizer": "sgd",
        }
        for i, (lr, m) in enumerate(trainers)
    ]
    return pd.DataFrame(rows)


def test_distinct_trainers_in_first_seen_order() -> None:
    trainers, index = distinct_trainers(_best([(0.1, 0.9), (0.01, 0.0), (0.1, 0.9)]))
    assert index.tolist() == [0, 1, 0]
    assert trainers[list(HPARAMS)].to_dict("records")[1] == {
        "lr": 0.01,
        "momentum": 0.0,
        "weight_decay": 0.0,
        "batch_size": 32,
        "optimizer": "sgd",
    }
    assert trainers["studies"].tolist() == [2, 1]


def test_same_trainer_gives_distance_zero_and_one_basin_each() -> None:
    """Studies 0 and 1 return the same trainer, study 2 one that barely trains: two basins."""
    config = tiny_config(task={"hidden": [16]}, trainer={"steps": 20})
    task = build_task(config.task)
    result = compare(
        task,
        config,
        _best([(0.1, 0.9), (0.1, 0.9), (0.001, 0.0)]),
        members=2,
        strategy="vectorized",
    )
    assert len(result.trainers) == 2
    for name, d in result.distances.items():
        assert d.shape == (3, 3)
        assert d[0, 1] == 0.0 and d[1, 0] == 0.0, name
        assert np.array_equal(d[0], d[1]), name
        assert d[0, 2] > 0, name
    assert (
        result.distances["js_mean"][0, 2] > result.trainers["seed_js"].iloc[0]
    )  # further apart than two seeds
    assert result.basins.n_basins == 2 and result.basins.labels == [0, 0, 1]
    assert result.function_spread["seed_scaled_basins"] == 2 and result.studies[
        "seed_basin"
    ].tolist() == [0, 0, 1]
    assert result.studies["ensemble_accuracy"].iloc[0] > result.studies["ensemble_accuracy"].iloc[2]
    assert result.p_true.shape == (3, len(task.y_test))


def test_spread_table_by_hand() -> None:
    studies = pd.DataFrame({"x": [1.0, 2.0, 3.0, 6.0]})
    row = spread_table(studies, ["x"], draws=50).iloc[0]
    assert row["mean"] == 3.0 and row["range"] == 5.0 and row["min"] == 1.0
    assert row["sd"] == pytest.approx(np.std([1, 2, 3, 6], ddof=1))
    assert row["sd_low"] <= row["sd"] <= row["sd_high"]


def test_factor_variance_finds_the_factor_that_moves_the_outcome() -> None:
    seeds, boots = np.meshgrid([0, 1, 2], [0, 1], indexing="ij")
    studies = pd.DataFrame(
        {
            "sampler_seed": seeds.ravel(),
            "validation_bootstrap": boots.ravel(),
            "holdout_group": [None] * 6,
        }
    )
    # The validation resample moves the lr a lot, the sampler seed a little.
    studies["log10_lr"] = 1.0 * studies["validation_bootstrap"] + 0.01 * studies["sampler_seed"]
    for name in ("best_value", "ensemble_accuracy", "distance_to_center"):
        studies[name] = 0.1 * studies["sampler_seed"]
    table, dominant = factor_variance(studies, np.zeros((6, 4)), draws=0)
    assert dominant["log10_lr"]["factor"] == "validation_bootstrap"
    assert dominant["best_value"]["factor"] == "sampler_seed"
    assert dominant["p_true"]["factor"] is None  # p_true does not vary
    assert set(table["outcome"]) == {
        "log10_lr",
        "best_value",
        "ensemble_accuracy",
        "distance_to_center",
        "p_true",
    }
