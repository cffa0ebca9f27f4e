"""attractor stabilize: a known most-stable setting found, the choice, the confirmation's fresh
seeds, resuming a killed search, and one-line refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from attractor.errors import UserError
from attractor.stack.fit import validation_split
from attractor.stack.stabilize import StabilizeSettings, stabilize
from attractor.stack.stabilize.choice import choose, pareto
from attractor.stack.stabilize.experiment import StabilizeRun, check
from attractor.stack.stabilize.study import search, trials_table
from attractor.tasks import build_task
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _settings(**values: object) -> StabilizeSettings:
    base = {"trials": 4, "parallel": 2, "members": 3, "confirm_members": 3, "draws": 20}
    return StabilizeSettings.model_validate(base | values)


def _config(**plan: object):  # noqa: ANN202 - a Config
    return tiny_config(
        task={"hidden": [8]},
        trainer={"steps": 15, "batch_size": 16, "lr": 0.1},
        plan={"members": 6, "vary": ["init_seed", "data_seed"], **plan},
    )


def test_a_full_batch_is_the_known_most_stable_trainer_when_only_data_order_varies() -> None:
    # Same initial weights, members differ only in minibatch order: a batch holding the whole
    # fit split takes the same steps in every order (up to float summation order), so its
    # members agree; any smaller batch makes them differ.
    config = _config(vary=["data_seed"])
    task = build_task(config.task)
    fit, _ = validation_split(task.n_train, 0.2, 0)
    settings = _settings(
        trials=6,
        sampler="random",
        tolerance=1.0,
        search={"batch_sizes": [8, len(fit)]},
    )
    result = stabilize(config, settings)
    trials = result.trials
    assert set(trials["batch_size"]) == {8, len(fit)}
    full = trials[trials["batch_size"] == len(fit)]
    small = trials[trials["batch_size"] == 8]
    assert full["spread"].max() < 1e-6 < small["spread"].min()
    assert result.chosen["knobs"]["batch_size"] == len(fit)


def test_the_confirmation_trains_seeds_the_search_never_saw() -> None:
    config = _config()
    settings = _settings(search={"label_smoothing": [0.0, 0.3]})
    result = stabilize(config, settings)
    seeds = result.seeds
    keys = {
        block: set(zip(part["init_seed"], part["data_seed"], strict=True))
        for block, part in seeds.groupby("block")
    }
    assert len(keys["search"]) == settings.members
    assert len(keys["confirm"]) == settings.confirm_members
    assert not keys["search"] & keys["confirm"]
    confirmation = result.confirmation
    assert confirmation["confirmed"] == (confirmation["spread"]["high"] < 0)
    assert ("confirmed" in confirmation["verdict"]) and confirmation["verdict"].startswith(
        "confirmed" if result.confirmed else "not confirmed"
    )


def test_a_confirmation_block_sharing_the_searchs_seeds_is_refused() -> None:
    # Six rows drawn from two levels: the blocks of three must share a seed.
    config = _config(vary=["init_seed"], levels={"init_seed": [0, 1]})
    run = StabilizeRun(config=config, stabilize=_settings(search={"lr": [0.01, 0.2]}))
    with pytest.raises(UserError, match="same seeds"):
        check(run)


@pytest.mark.parametrize(
    ("plan", "search", "schedule", "message"),
    [
        ({}, {}, "constant", "search is empty"),
        ({"members": 5}, {"lr": [0.01, 0.1]}, "constant", "members = 6"),
        (
            {"vary": ["init_seed", "lr"], "ranges": {"lr": [0.01, 0.1]}},
            {"lr": [0.01, 0.1]},
            "constant",
            "varies 'lr'",
        ),
        ({}, {"warmup_fraction": [0.0, 0.2]}, "constant", "warm-up schedule"),
        (
            {"vary": ["label_noise"], "ranges": {"label_noise": [0.0, 0.1]}},
            {"lr": [0.01, 0.1]},
            "constant",
            "varies no seed",
        ),
    ],
)
def test_settings_that_cannot_run_are_refused_in_one_line(
    plan: dict, search: dict, schedule: str, message: str
) -> None:
    config = tiny_config(
        task={"hidden": [8]},
        trainer={"steps": 5, "schedule": schedule},
        plan={"members": 6, "vary": ["init_seed"], **plan},
    )
    with pytest.raises(UserError, match=message):
        check(StabilizeRun(config=config, stabilize=_settings(search=search)))


def test_pareto_front_and_choice_by_hand() -> None:
    trials = pd.DataFrame(
        {
            "trial": [0, 1, 2, 3, 4],
            "error": [0.10, 0.11, 0.12, 0.30, 0.10],
            "spread": [0.05, 0.02, 0.01, 0.00, 0.06],
        }
    )
    front = pareto(trials["error"].to_numpy(), trials["spread"].to_numpy())
    assert front.tolist() == [True, True, True, True, False]
    assert choose(trials, tolerance=0.0) == 0
    assert choose(trials, tolerance=0.015) == 1
    assert choose(trials, tolerance=0.05) == 2
    assert choose(trials, tolerance=1.0) == 3


def test_a_killed_search_resumes_to_the_trials_of_an_uninterrupted_one(tmp_path) -> None:
    import optuna

    from attractor.stack.fit import trial_task
    from attractor.stack.stabilize.experiment import blocks
    from attractor.stack.stabilize.study import open_study, storage_url

    config = _config()
    settings = _settings(search={"lr": [0.01, 0.3], "label_smoothing": [0.0, 0.2]})
    task = build_task(config.task)
    block, _ = blocks(config, settings, task)
    fit, val = validation_split(task.n_train, 0.2, 0)
    trial = trial_task(task, fit, val)

    whole = trials_table(search(trial, config, settings, block, "vectorized", None))

    url = storage_url(tmp_path / "stabilize.db")
    search(trial, config, settings.model_copy(update={"trials": 2}), block, "vectorized", url)
    open_study(settings, url, 1).ask()  # killed while the second round was training
    resumed = search(trial, config, settings, block, "vectorized", url)
    states = [t.state for t in resumed.trials]
    assert states.count(optuna.trial.TrialState.FAIL) == 1
    again = trials_table(resumed).drop(columns="trial")
    pd.testing.assert_frame_equal(again, whole.drop(columns="trial"))


def test_the_same_settings_give_the_same_search() -> None:
    config = _config()
    settings = _settings(sampler="tpe", search={"sam_rho": [0.01, 0.1], "ema_decay": [0.5, 0.9]})
    a, b = stabilize(config, settings), stabilize(config, settings)
    pd.testing.assert_frame_equal(a.trials, b.trials)
    assert np.isfinite(a.trials["spread"]).all()
