"""Multi-bootstrap intervals and basin clustering against known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attractor.errors import UserError
from attractor.measure.basins import find_basins
from attractor.measure.bootstrap import (
    multibootstrap,
    paired_multibootstrap,
    pairwise_multibootstrap,
)


def scores(
    seed: int, members: int, examples: int, mean: float = 0.8, sd: float = 0.1
) -> np.ndarray:
    """Per-member offsets (seed effects) plus per-example noise: ``[members, examples]``."""
    rng = np.random.default_rng(seed)
    return mean + 0.05 * rng.normal(size=(members, 1)) + sd * rng.normal(size=(members, examples))


# ---- multibootstrap -------------------------------------------------------------------------


def test_constant_scores_give_a_zero_width_interval() -> None:
    est = multibootstrap(np.full((5, 40), 0.75))
    assert (est.value, est.low, est.high) == (0.75, 0.75, 0.75)
    assert multibootstrap(np.full((5, 40), 0.75), statistic=np.std).high == 0.0


def test_two_members_one_example_known_distribution() -> None:
    # Resampling 2 members from {0, 1}: mean 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4.
    est = multibootstrap(np.array([0.0, 1.0]), draws=2000)
    assert (est.value, est.low, est.high) == (0.5, 0.0, 1.0)
    narrow = multibootstrap(np.array([0.0, 1.0]), draws=2000, level=0.4)  # 30 % and 70 % quantiles
    assert (narrow.low, narrow.high) == (0.5, 0.5)


def literal_multibootstrap(data: np.ndarray, draws: int, seed: int, pairwise: bool) -> np.ndarray:
    """The procedure as written in MultiBERTs, one draw at a time (the same random draws:
    example indices first, then member indices, as the implementation takes them)."""
    rng = np.random.default_rng(seed)
    m, n = data.shape[0], data.shape[-1]
    examples = rng.integers(0, n, size=(draws, n))
    members = rng.integers(0, m, size=(draws, m))
    stats = []
    for d in range(draws):
        picked = members[d]
        if not pairwise:
            stats.append(data[picked][:, examples[d]].mean(-1).mean())
            continue
        pair_means = data[picked][:, picked][..., examples[d]].mean(-1)
        distinct = picked[:, None] != picked[None, :]  # drop a member paired with its own copy
        if distinct.any():
            stats.append(pair_means[distinct].mean())
    return np.array(stats)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), m=st.integers(2, 6), n=st.integers(1, 9))
def test_vectorized_draws_equal_the_literal_procedure(seed: int, m: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    data, pairs = rng.random((m, n)), rng.random((m, m, n))
    for values, pairwise in ((data, False), (pairs, True)):
        stats = literal_multibootstrap(values, 60, seed, pairwise)
        low, high = np.quantile(stats, [0.025, 0.975])
        est = (
            pairwise_multibootstrap(values, 60, seed)
            if pairwise
            else multibootstrap(values, draws=60, seed=seed)
        )
        assert est.draws == len(stats)
        assert (est.low, est.high) == (
            pytest.approx(low, abs=1e-12),
            pytest.approx(high, abs=1e-12),
        )


def test_interval_contains_value_and_shrinks_with_data() -> None:
    small = multibootstrap(scores(0, 4, 50))
    more_members = multibootstrap(scores(0, 64, 50))
    more_examples = multibootstrap(scores(0, 4, 5000))
    for est in (small, more_members, more_examples):
        assert est.low <= est.value <= est.high and est.draws == 500 and est.level == 0.95
    width = lambda e: e.high - e.low  # noqa: E731
    assert width(more_members) < width(small)
    assert width(more_examples) < width(small)


def test_seeded_and_accepts_tensors() -> None:
    data = scores(1, 6, 30)
    assert multibootstrap(data, seed=3) == multibootstrap(torch.tensor(data), seed=3)
    assert multibootstrap(data, seed=3) != multibootstrap(data, seed=4)
    assert json.loads(json.dumps(multibootstrap(data).to_dict()))["draws"] == 500


def test_members_count_equally() -> None:
    # Member 0 scores 1 on every example, member 1 scores 0: the value is 1/2 whatever the
    # examples, and resampling examples alone would never move it.
    data = np.stack([np.ones(30), np.zeros(30)])
    assert multibootstrap(data).value == 0.5
    assert multibootstrap(data).high - multibootstrap(data).low == 1.0


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        multibootstrap(np.array([[0.1, np.nan]]))
    with pytest.raises(ValueError, match="draws"):
        multibootstrap(np.ones((2, 2)), level=1.5)


# ---- pairwise ---------------------------------------------------------------------------------


def test_pairwise_ignores_self_pairs_and_copies() -> None:
    values = np.ones((4, 4, 10))
    values[np.arange(4), np.arange(4)] = 100.0  # a member with itself (or its bootstrap copy)
    est = pairwise_multibootstrap(values)
    assert (est.value, est.low, est.high) == (1.0, 1.0, 1.0)


def test_pairwise_known_value_and_few_members() -> None:
    # Members 0 and 1 agree, member 2 is 1 away from both: the mean over pairs is 2/3.
    values = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    est = pairwise_multibootstrap(values)
    assert est.value == pytest.approx(2 / 3)
    assert 0.0 <= est.low <= est.value <= est.high <= 1.0
    # Two members: half of the draws pick one member twice and have no pair left.
    two = pairwise_multibootstrap(values[:2, :2] + 0.5 * (1 - np.eye(2)), draws=1000)
    assert 400 < two.draws < 600 and two.value == 0.5


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), m=st.integers(3, 8))
def test_pairwise_interval_stays_within_the_pair_values(seed: int, m: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.random((m, m))
    values = (values + values.T) / 2
    est = pairwise_multibootstrap(values, draws=200, seed=seed)
    off = values[~np.eye(m, dtype=bool)]
    assert est.value == pytest.approx(off.mean())
    # Every draw is a weighted mean of the pair values of distinct members.
    assert off.min() - 1e-12 <= est.low <= est.high <= off.max() + 1e-12


# ---- paired -------------------------------------------------------------------------------------


def test_paired_clearly_better_and_identical_runs() -> None:
    a = scores(0, 8, 200)
    better = paired_multibootstrap(a + 0.2, a)  # seed effects have sd 0.05: 0.2 is clear
    assert better.p == 0.0 and better.difference == pytest.approx(0.2)
    assert better.low <= better.difference <= better.high and better.low > 0
    assert better.a_low <= better.a <= better.a_high and better.b_low <= better.b <= better.b_high
    same = paired_multibootstrap(a, a)
    assert same.difference == 0.0 and 0.3 < same.p < 0.7 and same.low < 0 < same.high
    assert paired_multibootstrap(a, a + 0.2).p == 1.0
    assert json.loads(json.dumps(same.to_dict()))["p"] == same.p


def test_paired_needs_the_same_examples() -> None:
    with pytest.raises(ValueError, match="same examples"):
        paired_multibootstrap(np.ones((2, 5)), np.ones((2, 6)))


# ---- basins -------------------------------------------------------------------------------------


def block_distance(
    labels: list[int], within: float = 0.1, between: float = 1.0, seed: int = 0
) -> np.ndarray:
    lab = np.array(labels)
    rng = np.random.default_rng(seed)
    noise = 0.05 * rng.random((len(lab), len(lab)))
    d = np.where(lab[:, None] == lab[None], within, between) + (noise + noise.T) / 2
    np.fill_diagonal(d, 0.0)
    return d


def same_partition(a: list[int], b: list[int]) -> bool:
    return all((a[i] == a[j]) == (b[i] == b[j]) for i in range(len(a)) for j in range(len(a)))


@pytest.mark.parametrize("kwargs", [{}, {"threshold": 0.5}, {"n_basins": 2}])
def test_two_blocks_are_recovered(kwargs: dict[str, float]) -> None:
    truth = [0, 1, 0, 1, 1, 0, 1]
    basins = find_basins(block_distance(truth), members=[10, 11, 12, 13, 14, 15, 16], **kwargs)
    assert basins.n_basins == 2 and same_partition(basins.labels, truth)
    assert basins.sizes == [4, 3] and basins.labels[1] == 0  # the larger basin is basin 0
    assert basins.silhouette is not None and basins.silhouette > 0.8
    assert basins.representatives[0] in (11, 13, 14, 16) and basins.representatives[1] in (
        10,
        12,
        15,
    )
    ordered = [basins.labels[i] for i in basins.order]
    assert ordered == sorted(ordered) and sorted(basins.order) == list(range(7))
    assert json.loads(json.dumps(basins.to_dict()))["n_basins"] == 2


def test_one_block_is_one_basin() -> None:
    basins = find_basins(block_distance([0] * 6))
    assert basins.n_basins == 1 and basins.labels == [0] * 6 and basins.silhouette is None
    assert find_basins(block_distance([0, 1, 0, 1]), threshold=2.0).n_basins == 1
    assert find_basins(np.zeros((5, 5))).n_basins == 1  # identical members
    assert find_basins(np.zeros((1, 1))).sizes == [1]


def test_medoid_hand_case() -> None:
    # Points 0, 1, 3 on a line: member 1 has the least total distance (1 + 2).
    d = np.abs(np.subtract.outer([0.0, 1.0, 3.0], [0.0, 1.0, 3.0]))
    basins = find_basins(d, n_basins=1)
    assert basins.representatives == [1] and basins.order == [1, 0, 2]


def test_bad_basin_requests() -> None:
    with pytest.raises(UserError, match="between 1 and"):
        find_basins(block_distance([0, 1, 0]), n_basins=4)
    with pytest.raises(UserError, match="positive"):
        find_basins(block_distance([0, 1, 0]), threshold=0.0)
    with pytest.raises(ValueError, match="symmetric"):
        find_basins(np.array([[0.0, 1.0], [2.0, 0.0]]))
