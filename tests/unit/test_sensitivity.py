"""Sensitivity on synthetic tables with known answers: ANOVA by hand, Ishigami, a planted group
effect.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attractor.config import PlanConfig, TrainerConfig
from attractor.errors import UserError
from attractor.plan import build_plan, sobol_problem
from attractor.sensitivity import (
    decompose,
    example_effects,
    group_effects,
    rank_examples,
    rank_groups,
    rank_training_examples,
    sobol_indices,
)
from attractor.sensitivity.sobol import plan_sample
from attractor.sensitivity.variance import RESIDUAL


def _table(a: int, b: int, r: int) -> pd.DataFrame:
    """Replicate-major rows of an a x b crossing (as plan.py orders a factorial plan)."""
    return pd.DataFrame(
        [(i, j) for _ in range(r) for i in range(a) for j in range(b)],
        columns=["init_seed", "data_seed"],
    )


def _by_effect(table: pd.DataFrame) -> pd.DataFrame:
    return table.set_index("effect")


def test_two_way_anova_matches_the_hand_computation() -> None:
    a, b, r = 4, 3, 2
    design = _table(a, b, r)
    y = np.random.default_rng(0).normal(size=len(design)) + design["init_seed"].to_numpy() * 0.7
    cube = np.zeros((a, b, r))
    for n, (i, j) in enumerate(design.itertuples(index=False)):
        cube[i, j, n // (a * b)] = y[n]
    grand, mi, mj, mij = cube.mean(), cube.mean((1, 2)), cube.mean((0, 2)), cube.mean(2)
    ss_a = b * r * ((mi - grand) ** 2).sum()
    ss_b = a * r * ((mj - grand) ** 2).sum()
    ss_ab = r * ((mij - mi[:, None] - mj[None, :] + grand) ** 2).sum()
    ss_e = ((cube - mij[..., None]) ** 2).sum()
    ms_a, ms_b, ms_ab, ms_e = (
        ss_a / (a - 1),
        ss_b / (b - 1),
        ss_ab / ((a - 1) * (b - 1)),
        ss_e / (a * b * (r - 1)),
    )
    # Balanced two-way random model (Searle et al. 1992, sec. 4.6): the ANOVA estimators.
    sigma = {
        "init_seed": (ms_a - ms_ab) / (b * r),
        "data_seed": (ms_b - ms_ab) / (a * r),
        "init_seed:data_seed": (ms_ab - ms_e) / r,
        RESIDUAL: ms_e,
    }
    out = _by_effect(decompose(design, ["init_seed", "data_seed"], y, draws=0))
    total = ((y - y.mean()) ** 2).sum()
    for name, ss in (
        ("init_seed", ss_a),
        ("data_seed", ss_b),
        ("init_seed:data_seed", ss_ab),
        (RESIDUAL, ss_e),
    ):
        assert out.loc[name, "ss"] == pytest.approx(ss, rel=1e-10)
        assert out.loc[name, "ss_share"] == pytest.approx(ss / total, rel=1e-10)
        assert out.loc[name, "component"] == pytest.approx(
            max(sigma[name], 0.0), rel=1e-9, abs=1e-12
        )
    clipped = {k: max(v, 0.0) for k, v in sigma.items()}
    for name, value in clipped.items():
        assert out.loc[name, "share"] == pytest.approx(
            value / sum(clipped.values()), rel=1e-9, abs=1e-12
        )
    assert list(out["df"]) == [a - 1, b - 1, (a - 1) * (b - 1), a * b * (r - 1)]


def test_additive_structure_recovers_the_known_variances() -> None:
    """y = a_i + b_j + noise with Var a = 4, Var b = 1, Var noise = 0.25: components near those."""
    rng = np.random.default_rng(1)
    a, b, r = 60, 60, 2
    design = _table(a, b, r)
    effect_a, effect_b = rng.normal(0, 2, a), rng.normal(0, 1, b)
    y = (
        effect_a[design["init_seed"]]
        + effect_b[design["data_seed"]]
        + rng.normal(0, 0.5, len(design))
    )
    out = _by_effect(decompose(design, ["init_seed", "data_seed"], y, draws=0))
    assert out.loc["init_seed", "component"] == pytest.approx(np.var(effect_a, ddof=1), rel=0.05)
    assert out.loc["data_seed", "component"] == pytest.approx(np.var(effect_b, ddof=1), rel=0.05)
    assert out.loc["init_seed:data_seed", "component"] < 0.02
    assert out.loc[RESIDUAL, "component"] == pytest.approx(0.25, rel=0.05)
    assert out.loc["init_seed", "share"] == pytest.approx(4 / 5.25, abs=0.1)


def test_per_example_outcomes_find_the_factor_with_a_tight_interval() -> None:
    rng = np.random.default_rng(2)
    design = _table(6, 5, 2)
    base = rng.normal(0, 1, (6, 50))  # per-example effect of init_seed only
    values = base[design["init_seed"]] + rng.normal(0, 0.3, (len(design), 50))
    out = _by_effect(
        decompose(design, ["init_seed", "data_seed"], values, "p_true", draws=200, seed=0)
    )
    assert out.loc["init_seed", "share"] > 0.8
    assert (out["share_low"] <= out["share_high"]).all() and (
        out["ss_share_low"] <= out["ss_share_high"]
    ).all()
    assert out.loc["init_seed", "share_low"] > 0.5
    assert out.loc["data_seed", "share_high"] < 0.2


def test_one_member_per_cell_flags_the_top_interaction() -> None:
    design = _table(3, 4, 1)
    out = _by_effect(decompose(design, ["init_seed", "data_seed"], np.arange(12.0) ** 1.5, draws=0))
    assert bool(out.loc["init_seed:data_seed", "with_residual"])
    assert out.loc[RESIDUAL, "df"] == 0 and out.loc[RESIDUAL, "ss"] == 0


def test_unbalanced_or_missing_crossings_are_refused() -> None:
    design = _table(2, 2, 2).iloc[:-1]
    with pytest.raises(UserError, match="not a balanced crossing"):
        decompose(design, ["init_seed", "data_seed"], np.zeros(len(design)), draws=0)
    with pytest.raises(UserError, match="no crossed factor"):
        decompose(design, [], np.zeros(len(design)), draws=0)


@st.composite
def _tables(draw: st.DrawFn) -> tuple[pd.DataFrame, list[str], np.ndarray]:
    k = draw(st.integers(1, 3))
    levels = [draw(st.integers(2, 4)) for _ in range(k)]
    r = draw(st.integers(1, 3))
    names = ["init_seed", "data_seed", "bootstrap"][:k]
    cells = list(itertools.product(*(range(n) for n in levels)))
    design = pd.DataFrame([c for _ in range(r) for c in cells], columns=names)
    seed = draw(st.integers(0, 2**16))
    scale = draw(st.sampled_from([0.0, 1e-3, 1.0, 1e3]))
    values = np.random.default_rng(seed).normal(0, 1, len(design)) * scale
    return design, names, values


@settings(max_examples=40, deadline=None)
@given(_tables(), st.integers(0, 2**16))
def test_shares_lie_in_the_unit_interval_sum_to_one_and_ignore_row_order(
    case: tuple[pd.DataFrame, list[str], np.ndarray], perm_seed: int
) -> None:
    design, names, values = case
    out = decompose(design, names, values, draws=0)
    assert (out["component"] >= 0).all()
    if values.std() > 0:
        for column in ("ss_share", "share"):
            assert ((out[column] >= -1e-12) & (out[column] <= 1 + 1e-12)).all()
            assert out[column].sum() == pytest.approx(1.0, abs=1e-9)
        assert out["ss"].sum() == pytest.approx(
            ((values - values.mean()) ** 2).sum(), rel=1e-9, abs=1e-12
        )
    else:
        assert out["share"].isna().all() and out["ss_share"].isna().all()
    order = np.random.default_rng(perm_seed).permutation(len(design))
    again = decompose(design.iloc[order].reset_index(drop=True), names, values[order], draws=0)
    pd.testing.assert_series_equal(out["ss"], again["ss"], rtol=1e-9, atol=1e-12)


# ---- Sobol ------------------------------------------------------------------------------

ISHIGAMI_S1 = [0.3139, 0.4424, 0.0]
ISHIGAMI_ST = [0.5576, 0.4424, 0.2437]


def test_ishigami_indices_through_a_sobol_plan() -> None:
    """The Ishigami function (a = 7, b = 0.1) evaluated on a sobol *plan*, fed through the plan
    code path.
    """
    from SALib.test_functions import Ishigami

    two_pi = 2 * np.pi
    plan_config = PlanConfig(
        design="sobol",
        members=2**12 * 5,
        seed=3,
        ranges={
            "weight_decay": [0.0, two_pi],
            "init_noise": [0.0, two_pi],
            "momentum": [0.0, 0.99],
        },
    )
    table = build_plan(plan_config, TrainerConfig()).table
    problem = sobol_problem(plan_config)
    x = plan_sample(table, problem)  # [members, 3] in SALib's row order
    z = np.column_stack(
        [x[:, 0] - np.pi, x[:, 1] - np.pi, x[:, 2] / 0.99 * two_pi - np.pi]
    )  # onto [-pi, pi]^3
    out = sobol_indices(
        problem, {"ishigami": Ishigami.evaluate(z, 7.0, 0.1)}, resamples=200
    ).set_index("factor")
    np.testing.assert_allclose(out["S1"], ISHIGAMI_S1, atol=0.05)
    np.testing.assert_allclose(out["ST"], ISHIGAMI_ST, atol=0.05)
    assert (out["S1_conf"] > 0).all() and (out["S1_low"] < out["S1_high"]).all()
    np.testing.assert_allclose(out["interaction"], out["ST"] - out["S1"])


def test_reordered_sobol_rows_and_bad_outcomes_are_refused() -> None:
    plan_config = PlanConfig(
        design="sobol", members=8 * 4, ranges={"lr": [0.01, 0.3], "momentum": [0.0, 0.9]}
    )
    table = build_plan(plan_config, TrainerConfig()).table
    problem = sobol_problem(plan_config)
    x = plan_sample(table, problem)
    np.testing.assert_allclose(10 ** x[:, 0], table["lr"])  # lr enters in log10
    shuffled = (
        table.sample(frac=1.0, random_state=0)
        .reset_index(drop=True)
        .assign(member=np.arange(len(table)))
    )
    with pytest.raises(UserError, match="Saltelli order"):
        plan_sample(shuffled, problem)
    with pytest.raises(UserError, match="not a multiple"):
        sobol_indices(problem, {"y": np.zeros(31)})
    with pytest.raises(UserError, match="non-finite"):
        sobol_indices(problem, {"y": np.full(32, np.nan)})
    y = np.random.default_rng(0).random(32)
    pd.testing.assert_frame_equal(
        sobol_indices(problem, {"y": y}, seed=0), sobol_indices(problem, {"y": y}, seed=0)
    )
    constant = sobol_indices(problem, {"y": np.ones(32)})
    assert constant["S1"].isna().all()


# ---- influence and suggestions ----------------------------------------------------------


def _planted(
    groups: list[int | None], shift: float, planted: int, n: int = 300
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4)
    p = np.where(np.array([g == planted for g in groups])[:, None], 0.8 + shift, 0.8)
    return {"accuracy": (rng.random((len(groups), n)) < p).astype(float)}


def test_a_planted_group_effect_is_found_with_an_interval() -> None:
    groups: list[int | None] = [None] * 6 + [0, 1, 2] * 3
    table, reference = group_effects(groups, _planted(groups, -0.2, planted=1), draws=300)
    assert reference == "all-data members"
    table = table.set_index("group")
    assert table.loc[1, "accuracy_effect"] == pytest.approx(-0.2, abs=0.05)
    assert table.loc[1, "accuracy_high"] < 0 and table.loc[1, "accuracy_p"] > 0.97
    for g in (0, 2):
        assert table.loc[g, "accuracy_low"] < 0 < table.loc[g, "accuracy_high"]
    assert list(table["members"]) == [3, 3, 3] and list(table["reference_members"]) == [6, 6, 6]


def test_without_all_data_members_the_other_groups_are_the_reference() -> None:
    groups: list[int | None] = [0, 1, 2, 3] * 3
    probs = torch.softmax(
        torch.randn(12, 40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), -1
    )
    probs[[2, 6, 10]] = probs[2].clone()  # members without group 2 agree exactly: no spread
    table, reference = group_effects(groups, _planted(groups, 0.15, planted=2), probs, draws=200)
    assert reference == "other groups"
    table = table.set_index("group")
    assert table.loc[2, "accuracy_low"] > 0 and table.loc[2, "reference_members"] == 9
    assert table.loc[2, "spread_without"] == 0.0 and table.loc[2, "spread_change"] < 0
    ranked = rank_groups(table.reset_index(), k=2)
    assert (
        ranked["id"].tolist()[0] == 2
        and "holding out group 2 moves test accuracy by +" in ranked["reason"][0]
    )
    with pytest.raises(UserError, match="no member held out"):
        group_effects([None, None], {"accuracy": np.ones((2, 3))})


def test_examples_are_ranked_by_mutual_information() -> None:
    agree = torch.tensor(
        [[0.9, 0.1], [0.9, 0.1]], dtype=torch.float64
    )  # both confident, same class
    disagree = torch.tensor(
        [[0.99, 0.01], [0.01, 0.99]], dtype=torch.float64
    )  # confident, opposite
    unsure = torch.tensor([[0.5, 0.5], [0.5, 0.5]], dtype=torch.float64)  # aleatoric only: MI 0
    probs = torch.stack([agree, disagree, unsure], dim=1)  # [2 members, 3 examples, 2 classes]
    ranked = rank_examples(probs, k=2)
    assert ranked["id"].tolist() == [1, 0]
    assert ranked["score"][0] == pytest.approx(
        np.log(2) - (-(0.99 * np.log(0.99) + 0.01 * np.log(0.01))), rel=1e-9
    )
    assert ranked["reason"][0].startswith("members disagree most (MI 0.64 nats)")


def test_a_planted_training_example_effect_is_ranked_first() -> None:
    rng = np.random.default_rng(5)
    members, n_train = 40, 30
    counts = rng.poisson(1.0, (members, n_train))  # bootstrap-like multiplicities
    distance = rng.normal(0.05, 0.002, members) - 0.01 * (
        counts[:, 7] > 0
    )  # example 7 pulls members in
    table = example_effects(counts, distance).set_index("example")
    assert table.loc[7, "effect"] == pytest.approx(0.01, abs=0.002) and table.loc[7, "t"] > 8
    assert table.loc[7, "members_with"] + table.loc[7, "members_without"] == members
    ranked = rank_training_examples(table.reset_index(), k=3)
    assert ranked["id"][0] == 7 and ranked["kind"][0] == "training_example"
    assert "closer to the ensemble mean" in ranked["reason"][0]
    assert (ranked["score"].abs() >= 2).all() and rank_training_examples(
        table.reset_index(), k=3, min_t=1e9
    ).empty
    one_sided = example_effects(np.ones((4, 3)), np.arange(4.0))  # every member saw every example
    assert one_sided.empty
