"""Plan designs: row counts, defaults, seeds, crossings, Sobol' order, validation, storage."""

from __future__ import annotations

import itertools
import math
import warnings
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from SALib.sample import sobol as sobol_sample

from attractor.config import FACTORS, PlanConfig, TrainerConfig
from attractor.errors import UserError
from attractor.plan import COLUMNS, Plan, PlanRow, build_plan, describe_plan, sobol_problem

TRAINER = TrainerConfig(optimizer="adam", lr=0.123, momentum=0.5, weight_decay=1e-3, batch_size=32)
TRAINER_VALUES = {
    "lr": 0.123,
    "momentum": 0.5,
    "weight_decay": 1e-3,
    "batch_size": 32,
    "optimizer": "adam",
}
ROW_DEFAULTS = {
    "init_seed": 0,
    "data_seed": 0,
    "noise_seed": 0,
    "label_noise": 0.0,
    "init_scale": 1.0,
    "init_noise": 0.0,
}
SEEDS = ["init_seed", "data_seed", "noise_seed", "bootstrap"]

DESIGNS = {
    "random": dict(members=12, design="random", vary=SEEDS, ranges={"lr": (0.01, 0.2)}),
    "factorial": dict(
        members=12,
        design="factorial",
        vary=SEEDS,
        levels={"momentum": [0.0, 0.9], "optimizer": ["sgd", "adam", "adamw"]},
    ),
    "grid": dict(
        members=16,
        design="grid",
        vary=SEEDS,
        ranges={"lr": (0.01, 0.2)},
        levels={"batch_size": [16, 64]},
        grid_points=4,
    ),
    "sobol": dict(
        members=16, design="sobol", vary=SEEDS, ranges={"lr": (0.01, 0.2), "momentum": (0.0, 0.95)}
    ),
}


def make(trainer: TrainerConfig = TRAINER, group_ids: list[int] | None = None, **plan) -> Plan:
    return build_plan(PlanConfig(**plan), trainer, group_ids)


def varied(config: dict) -> set[str]:
    return (
        set(config.get("vary", [])) | set(config.get("levels", {})) | set(config.get("ranges", {}))
    )


@pytest.mark.parametrize("design", DESIGNS)
def test_row_count_members_and_fixed_factors(design: str) -> None:
    config = DESIGNS[design]
    plan = make(**config)
    assert len(plan) == config["members"]
    assert list(plan.table.columns) == list(COLUMNS)
    assert plan.table["member"].tolist() == list(range(config["members"]))
    fixed = set(FACTORS) - varied(config)
    for name in fixed:
        expected = TRAINER_VALUES.get(name, ROW_DEFAULTS.get(name))
        values = plan.table[name]
        if name == "holdout_group":
            assert values.isna().all()
        else:
            assert (values == expected).all(), name
    assert len(plan.rows()) == config["members"]


@pytest.mark.parametrize("design", DESIGNS)
def test_varied_seeds_are_distinct_and_bootstrap_never_none(design: str) -> None:
    plan = make(**DESIGNS[design])
    for name in SEEDS:
        values = plan.table[name]
        assert values.notna().all()
        assert values.nunique() == len(plan), name
        assert ((values >= 0) & (values < 2**31)).all()


@pytest.mark.parametrize("design", DESIGNS)
def test_same_config_same_table_and_seed_changes_it(design: str) -> None:
    config = DESIGNS[design]
    first, again = make(**config), make(**config)
    pd.testing.assert_frame_equal(first.table, again.table)
    assert first.hash() == again.hash()
    other = make(**{**config, "seed": 1})
    assert other.hash() != first.hash()
    assert not first.table["init_seed"].equals(other.table["init_seed"])


def test_adding_a_varied_factor_keeps_the_other_draws() -> None:
    one = make(members=8, vary=["init_seed"])
    two = make(members=8, vary=["init_seed", "data_seed"])
    assert one.table["init_seed"].equals(two.table["init_seed"])


def test_nothing_varies_gives_identical_rows() -> None:
    plan = make(members=3, vary=[])
    assert (plan.table.drop(columns="member").nunique(dropna=False) == 1).all()


def test_hash_is_stable() -> None:
    plan = Plan.from_rows([PlanRow(member=0), PlanRow(member=1, init_seed=7, bootstrap=3, lr=0.1)])
    assert plan.hash() == "3ad6417f9b0bcf20"


def test_factorial_crossing_is_complete_and_replicate_major() -> None:
    levels = {"momentum": [0.0, 0.9], "optimizer": ["sgd", "adam", "adamw"], "init_seed": [1, 2]}
    plan = make(members=24, design="factorial", levels=levels, vary=["data_seed"])
    cells = list(itertools.product(*levels.values()))
    observed = [tuple(row) for row in plan.table[list(levels)].itertuples(index=False)]
    assert Counter(observed) == {cell: 2 for cell in cells}
    assert observed == cells + cells  # replicate-major, last factor fastest
    assert plan.table["data_seed"].nunique() == 24


def test_factorial_of_only_seeds_is_one_cell() -> None:
    plan = make(members=5, design="factorial", vary=["init_seed"])
    assert plan.table["init_seed"].nunique() == 5


def test_holdout_group_cycles_through_task_groups_or_levels() -> None:
    plan = make(members=5, vary=["holdout_group"], group_ids=[3, 4])
    assert plan.table["holdout_group"].tolist() == [3, 4, 3, 4, 3]
    assert str(plan.table["holdout_group"].dtype) == "Int64"
    plan = make(members=3, levels={"holdout_group": [4]}, group_ids=[3, 4])
    assert plan.table["holdout_group"].tolist() == [4, 4, 4]
    crossed = make(
        members=4,
        design="factorial",
        vary=["holdout_group"],
        levels={"momentum": [0.0, 0.5]},
        group_ids=[0, 1],
    )
    assert list(
        crossed.table[["momentum", "holdout_group"]].itertuples(index=False, name=None)
    ) == [(0.0, 0), (0.0, 1), (0.5, 0), (0.5, 1)]


def test_grid_lr_is_log_spaced_with_exact_endpoints_crossed_with_levels() -> None:
    plan = make(**DESIGNS["grid"])
    lrs = sorted(set(plan.table["lr"]))
    assert len(lrs) == 4
    assert lrs[0] == 0.01 and lrs[-1] == 0.2
    ratios = np.diff(np.log(lrs))
    np.testing.assert_allclose(ratios, ratios[0])
    pairs = Counter(plan.table[["batch_size", "lr"]].itertuples(index=False, name=None))
    assert set(pairs.values()) == {2} and len(pairs) == 8


def test_grid_linear_factor_is_evenly_spaced() -> None:
    plan = make(members=5, design="grid", ranges={"momentum": (0.0, 0.8)}, grid_points=5)
    assert plan.table["momentum"].tolist() == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])


def test_sobol_rows_equal_salib_sample() -> None:
    config = DESIGNS["sobol"]
    plan = make(**config)
    problem = {
        "num_vars": 2,
        "names": ["lr", "momentum"],
        "bounds": [[math.log10(0.01), math.log10(0.2)], [0.0, 0.95]],
    }
    assert sobol_problem(PlanConfig(**config)) == problem
    expected = sobol_sample.sample(problem, 4, calc_second_order=False, seed=0)
    np.testing.assert_allclose(plan.table["lr"], 10 ** expected[:, 0], rtol=1e-12)
    np.testing.assert_allclose(plan.table["momentum"], expected[:, 1], rtol=1e-12)


def test_sobol_one_factor_and_power_of_two_is_warning_free() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SALib / scipy warn when N is not a power of 2
        assert len(make(members=24, design="sobol", ranges={"weight_decay": (0.0, 0.1)})) == 24
        plan = make(members=3, design="sobol", ranges={"init_noise": (0.0, 0.1)})
    assert plan.table["init_noise"].between(0.0, 0.1).all()


def test_random_lr_is_log_uniform() -> None:
    plan = make(members=2000, ranges={"lr": (1e-4, 1.0)})
    lr = plan.table["lr"]
    assert lr.between(1e-4, 1.0).all()
    # log-uniform: a quarter of the mass in each decade; uniform would put ~99.9% in the last one
    decades = np.histogram(np.log10(lr), bins=[-4, -3, -2, -1, 0])[0] / len(lr)
    np.testing.assert_allclose(decades, 0.25, atol=0.05)


def test_random_levels_are_drawn_from_the_levels() -> None:
    plan = make(members=200, levels={"batch_size": [16, 32], "optimizer": ["sgd", "adamw"]})
    assert set(plan.table["batch_size"]) == {16, 32}
    assert set(plan.table["optimizer"]) == {"sgd", "adamw"}


range_pairs = {
    "lr": st.tuples(st.floats(1e-6, 1.0), st.floats(1.0, 100.0)),
    "momentum": st.tuples(st.floats(0.0, 0.5), st.floats(0.5, 0.999)),
    "weight_decay": st.tuples(st.floats(0.0, 1.0), st.floats(1.0, 2.0)),
    "label_noise": st.tuples(st.floats(0.0, 0.3), st.floats(0.3, 0.99)),
    "init_scale": st.tuples(st.floats(1e-3, 1.0), st.floats(1.0, 3.0)),
    "init_noise": st.tuples(st.floats(0.0, 0.1), st.floats(0.1, 1.0)),
}


@settings(max_examples=40, deadline=None)
@given(
    ranges=st.fixed_dictionaries({}, optional=range_pairs),
    seed=st.integers(0, 2**32),
    members=st.integers(1, 40),
)
def test_random_values_stay_within_ranges(ranges: dict, seed: int, members: int) -> None:
    plan = make(members=members, seed=seed, ranges=ranges)
    for name, (low, high) in ranges.items():
        assert plan.table[name].between(low, high).all(), name


@pytest.mark.parametrize("design", DESIGNS)
def test_parquet_round_trip_keeps_dtypes_and_hash(design: str, tmp_path) -> None:
    plan = make(**DESIGNS[design])
    plan.to_parquet(tmp_path / "plan.parquet")
    back = Plan.from_parquet(tmp_path / "plan.parquet")
    pd.testing.assert_frame_equal(back.table, plan.table)
    assert back.hash() == plan.hash()
    assert back.rows() == plan.rows()


def test_parquet_round_trip_keeps_nullable_bootstrap(tmp_path) -> None:
    plan = make(members=3, vary=["init_seed"])
    plan.to_parquet(tmp_path / "plan.parquet")
    back = Plan.from_parquet(tmp_path / "plan.parquet")
    assert str(back.table["bootstrap"].dtype) == "Int64"
    assert back.table["bootstrap"].isna().all()
    assert back.rows()[0].bootstrap is None
    assert back.hash() == plan.hash()


def test_describe_plan_names_varied_factors_and_truncates() -> None:
    text = describe_plan(make(members=64, vary=["init_seed"], ranges={"lr": (0.01, 0.2)}))
    assert "64 members" in text
    assert "init_seed (64 values)" in text and "lr (64 values)" in text
    assert "momentum=0.5" in text and "bootstrap=None" in text
    assert "..." in text and len(text.splitlines()) < 30


BAD = [
    (dict(vary=["lr"]), "'lr'"),
    (dict(vary=["momentum"], design="sobol", ranges={"lr": (0.1, 0.2)}), "'momentum'"),
    (dict(vary=["batch_size"]), "'batch_size'"),
    (dict(vary=["optimizer"]), "'optimizer'"),
    (dict(vary=["holdout_group"]), "'holdout_group'"),
    (dict(levels={"holdout_group": [5]}), "'holdout_group'"),
    (dict(levels={"momentum": [0.0, 1.0]}), "'momentum'"),
    (dict(ranges={"momentum": (0.5, 1.0)}), "'momentum'"),
    (dict(levels={"lr": [0.1, 0.0]}), "'lr'"),
    (dict(levels={"lr": [float("nan")]}), "'lr'"),
    (dict(levels={"weight_decay": [-0.1]}), "'weight_decay'"),
    (dict(ranges={"weight_decay": (-0.1, 0.1)}), "'weight_decay'"),
    (dict(levels={"label_noise": [1.0]}), "'label_noise'"),
    (dict(ranges={"label_noise": (0.0, 1.0)}), "'label_noise'"),
    (dict(levels={"batch_size": [0]}), "'batch_size'"),
    (dict(levels={"batch_size": [32.5]}), "'batch_size'"),
    (dict(levels={"optimizer": ["lion"]}), "'optimizer'"),
    (dict(levels={"init_scale": [0.0]}), "'init_scale'"),
    (dict(ranges={"init_scale": (0.0, 1.0)}), "'init_scale'"),
    (dict(levels={"init_noise": [-1.0]}), "'init_noise'"),
    (dict(levels={"init_seed": [-1]}), "'init_seed'"),
    (dict(levels={"noise_seed": [True]}), "'noise_seed'"),
    (dict(levels={"bootstrap": [-2]}), "'bootstrap'"),
    (dict(levels={"data_seed": []}), "'data_seed'"),
    (dict(levels={"data_seed": [1, 1]}), "'data_seed'"),
    (dict(levels={"lr": [0.1]}, ranges={"lr": (0.1, 0.2)}), "'lr'"),
    (dict(design="factorial", ranges={"lr": (0.1, 0.2)}), "'lr'"),
    (
        dict(design="sobol", ranges={"lr": (0.1, 0.2)}, levels={"momentum": [0.0]}, members=3),
        "'momentum'",
    ),
    (dict(design="sobol", ranges={"lr": (0.1, 0.1)}, members=3), "'lr'"),
]


@pytest.mark.parametrize(("plan", "named"), BAD)
def test_bad_input_is_one_line_naming_the_factor(plan: dict, named: str) -> None:
    with pytest.raises(UserError) as info:
        make(
            group_ids=[0, 1] if "levels" in plan and "holdout_group" in plan["levels"] else None,
            **plan,
        )
    message = str(info.value)
    assert named in message
    assert "\n" not in message


def test_unknown_holdout_level_with_no_groups_says_so() -> None:
    with pytest.raises(UserError, match="defines no groups"):
        make(levels={"holdout_group": [0]}, group_ids=[])
    with pytest.raises(UserError, match="defines no groups"):
        make(vary=["holdout_group"], group_ids=[])


def test_factorial_member_mismatch_names_both_counts_and_suggests() -> None:
    with pytest.raises(UserError, match=r"6 cells.*members = 10.*use members = 6 or 12"):
        make(
            members=10,
            design="factorial",
            levels={"momentum": [0.0, 0.9], "optimizer": ["sgd", "adam", "adamw"]},
        )


@pytest.mark.parametrize(
    ("members", "message"),
    [
        (30, r"not a multiple of 4; use members = 16 or 32"),
        (24, r"N = 6; use members = 16 or 32"),
        (2, r"not a multiple of 4; use members = 4\b"),
    ],
)
def test_sobol_member_mismatch_suggests_power_of_two_counts(members: int, message: str) -> None:
    with pytest.raises(UserError, match=message):
        make(members=members, design="sobol", ranges={"lr": (0.01, 0.2), "momentum": (0.0, 0.95)})


def test_sobol_needs_a_range() -> None:
    with pytest.raises(UserError, match="sobol design needs at least one"):
        make(members=4, design="sobol", vary=["init_seed"])
