"""Representation and weight space against oracles: CKA's invariances and hand cases, and
weight matching that recovers a known permutation of hidden units exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call

from attractor.errors import UserError
from attractor.measure.activations import collect_activations, default_layers, resolve_layers
from attractor.measure.alignment import align, linear_chain, permute
from attractor.measure.representation import linear_cka, member_cka, pairwise_cka
from attractor.measure.weights import (
    distance_to_init,
    flatten,
    member_vectors,
    pairwise_aligned_distance,
    pairwise_distance,
)
from attractor.runs.ensemble import Ensemble
from attractor.runs.launch import train
from attractor.tasks.digits_mlp import build_mlp
from attractor.tasks.modular_addition import ModularMLP
from tests.conftest import tiny_config

FAST = settings(max_examples=40, deadline=None)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ens(tmp_path_factory: pytest.TempPathFactory) -> Ensemble:
    config = tiny_config(task={"hidden": [24, 16]}, trainer={"steps": 30})
    return train(config, tmp_path_factory.mktemp("geometry") / "run")


def gaussian(seed: int, *shape: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape))


def orthogonal(seed: int, d: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(gaussian(seed, d, d))
    return q


# ---- CKA oracles ---------------------------------------------------------------------
def biased_hsic(k: torch.Tensor, g: torch.Tensor) -> float:
    """Gretton et al.'s estimator, literally: tr(K H G H) / (n - 1)^2."""
    n = k.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    return float(torch.trace(k @ h @ g @ h)) / (n - 1) ** 2


def song_hsic(k: torch.Tensor, g: torch.Tensor) -> float:
    """Song et al.'s (2012) unbiased estimator, literally, on uncentered Gram matrices."""
    n = k.shape[0]
    k, g = k.clone(), g.clone()
    k.fill_diagonal_(0)
    g.fill_diagonal_(0)
    one = torch.ones(n, dtype=torch.float64)
    value = (
        torch.trace(k @ g)
        + (one @ k @ one) * (one @ g @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * (one @ k @ g @ one)
    )
    return float(value) / (n * (n - 3))


def oracle_cka(x: torch.Tensor, y: torch.Tensor, hsic) -> float:
    k, g = x @ x.T, y @ y.T
    return hsic(k, g) / math.sqrt(hsic(k, k) * hsic(g, g))


def test_cka_of_one_feature_is_squared_correlation() -> None:
    # centered x = (-1, 0, 1), y = (0, -1, 1): x.y = 1, |x|^2 = |y|^2 = 2, so r^2 = 1/4.
    x = torch.tensor([[1.0], [2.0], [3.0]])
    y = torch.tensor([[1.0], [0.0], [2.0]])
    assert linear_cka(x, y) == pytest.approx(0.25, abs=1e-12)


@FAST
@given(
    seed=st.integers(0, 10_000), n=st.integers(5, 25), d1=st.integers(1, 30), d2=st.integers(1, 30)
)
def test_cka_equals_the_literal_estimators(seed: int, n: int, d1: int, d2: int) -> None:
    x = gaussian(seed, n, d1) + 3.0  # uncentered: the estimators must not care
    y = x[:, :1] * gaussian(seed + 1, 1, d2) + gaussian(seed + 2, n, d2)
    assert linear_cka(x, y) == pytest.approx(oracle_cka(x, y, biased_hsic), abs=1e-10)
    assert linear_cka(x, y, debiased=True) == pytest.approx(oracle_cka(x, y, song_hsic), abs=1e-9)


@FAST
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(6, 30),
    d=st.integers(1, 12),
    scale=st.floats(1e-3, 1e3),
    debiased=st.booleans(),
)
def test_cka_invariant_to_rotation_and_isotropic_scaling(
    seed: int, n: int, d: int, scale: float, debiased: bool
) -> None:
    x = gaussian(seed, n, d)
    y = torch.tanh(x @ gaussian(seed + 1, d, d)) + 0.5 * gaussian(seed + 2, n, d)
    base = linear_cka(x, y, debiased)
    q = orthogonal(seed + 3, d)
    assert linear_cka(x @ q, y, debiased) == pytest.approx(base, abs=1e-9)
    assert linear_cka(x, y @ q, debiased) == pytest.approx(base, abs=1e-9)
    assert linear_cka(scale * x, y, debiased) == pytest.approx(base, abs=1e-9)
    assert linear_cka(x, scale * y, debiased) == pytest.approx(base, abs=1e-9)
    assert linear_cka(y, x, debiased) == pytest.approx(base, abs=1e-12)  # symmetric
    assert linear_cka(x, x, debiased) == pytest.approx(1.0, abs=1e-12)
    if not debiased:
        assert -1e-12 <= base <= 1 + 1e-12


def test_debiased_near_biased_for_large_n_and_near_zero_for_independent() -> None:
    x = gaussian(0, 20_000, 4)
    y = x @ gaussian(1, 4, 6) + gaussian(2, 20_000, 6)
    assert abs(linear_cka(x, y, True) - linear_cka(x, y)) < 2e-3
    # Independent representations, d not small against n: the biased estimate is far
    # from 0 (about d / (n + d) = 0.2 here), the unbiased one is not.
    a, b = gaussian(3, 200, 50), gaussian(4, 200, 50)
    assert linear_cka(a, b) > 0.15
    assert abs(linear_cka(a, b, debiased=True)) < 0.03


@pytest.mark.parametrize("n, d", [(8, 20), (30, 5)])  # the Gram path and the feature path
@pytest.mark.parametrize("debiased", [False, True])
def test_pairwise_cka_equals_each_pair(n: int, d: int, debiased: bool) -> None:
    base = gaussian(0, n, d)
    acts = torch.stack(
        [base, base @ orthogonal(1, d), base + 0.3 * gaussian(2, n, d), gaussian(3, n, d)]
    )
    matrix = pairwise_cka(acts, debiased)
    for i in range(4):
        for j in range(4):
            assert matrix[i, j] == pytest.approx(linear_cka(acts[i], acts[j], debiased), abs=1e-10)
    assert matrix[0, 1] == pytest.approx(1.0, abs=1e-12)


def test_cka_of_constant_representation_is_nan_and_tiny_n_is_refused() -> None:
    x = gaussian(0, 10, 3)
    assert math.isnan(linear_cka(x, torch.ones(10, 3)))
    with pytest.raises(ValueError, match="at least 4"):
        linear_cka(x[:3], x[:3], debiased=True)


# ---- layers and activations ----------------------------------------------------------
def test_default_layers() -> None:
    assert default_layers(build_mlp(64, [8, 8], 10, "relu")) == ["1", "3"]
    assert default_layers(ModularMLP(7, 4, 8)) == ["hidden"]  # feeds torch.relu in forward
    with pytest.raises(UserError, match="available layers: 0"):
        default_layers(nn.Sequential(nn.Linear(3, 2)))


def test_resolve_layers_by_name_and_pattern() -> None:
    model = build_mlp(64, [8, 8], 10, "relu")
    assert resolve_layers(model, "*") == ["0", "1", "2", "3", "4"]
    assert resolve_layers(model, ["3", "[01]"]) == ["0", "1", "3"]
    with pytest.raises(UserError, match="no layer matches 'fc1'; available layers: 0, 1, 2, 3, 4"):
        resolve_layers(model, ["fc1"])


def test_collect_activations_are_the_hidden_units(ens: Ensemble) -> None:
    x = ens.task.x_test[:50]
    acts = collect_activations(ens, x)
    assert list(acts) == ["1", "3"]
    assert acts["1"].shape == (len(ens.members), 50, 24)
    for i, member in enumerate(ens.members):
        p = ens.params(member)
        assert torch.allclose(
            acts["1"][i], torch.relu(x @ p["0.weight"].T + p["0.bias"]), atol=1e-6
        )
    module = ens.module(ens.members[0])
    collect_activations(ens, x, "2", members=ens.members[:1])
    assert not any(m._forward_hooks for m in module.modules())  # hooks removed


def test_member_cka_on_ensemble(ens: Ensemble) -> None:
    cka = member_cka(ens, layers="3")["3"]
    assert cka.shape == (len(ens.members), len(ens.members))
    assert torch.allclose(cka.diagonal(), torch.ones(len(ens.members), dtype=torch.float64))
    assert torch.allclose(cka, cka.T)
    debiased = member_cka(ens, layers="3", debiased=True)["3"]
    assert (cka - debiased).abs().max() < 0.1  # same quantity, two estimators


# ---- distances -----------------------------------------------------------------------
def test_flatten_and_pairwise_distance_by_hand() -> None:
    state = {"b": torch.tensor([1.0, 2.0]), "a": torch.tensor([[3.0]]), "n": torch.tensor(7)}
    assert flatten(state).tolist() == [3.0, 1.0, 2.0]  # sorted keys, integer counter skipped
    flat = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 0.0]])
    expected = torch.tensor(
        [[0.0, 5.0, 3.0], [5.0, 0.0, 4.0], [3.0, 4.0, 0.0]], dtype=torch.float64
    )
    assert torch.equal(pairwise_distance(flat), expected)


def test_distance_to_init_by_hand(ens: Ensemble) -> None:
    members = ens.members[:2]
    got = distance_to_init(ens, members)
    for i, member in enumerate(members):
        final, init = ens.params(member), ens.params(member, 0)
        by_hand = math.sqrt(
            sum(float(((final[k].double() - init[k].double()) ** 2).sum()) for k in final)
        )
        assert got[i] == pytest.approx(by_hand, rel=1e-12)


# ---- permutations --------------------------------------------------------------------
def random_perms(model: nn.Sequential, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    layers = linear_chain(model)
    return {
        name: torch.randperm(getattr(model, name).out_features, generator=gen)
        for name in layers[:-1]
    }


def mlp(seed: int, hidden: list[int]) -> nn.Sequential:
    torch.manual_seed(seed)
    return build_mlp(10, hidden, 5, "tanh").double()


@FAST
@given(seed=st.integers(0, 10_000), hidden=st.lists(st.integers(2, 12), min_size=1, max_size=3))
def test_permuted_network_computes_the_same_function(seed: int, hidden: list[int]) -> None:
    model = mlp(seed, hidden)
    x = gaussian(seed, 7, 10)
    permuted = permute(model.state_dict(), random_perms(model, seed))
    assert torch.allclose(functional_call(model, permuted, (x,)), model(x), atol=1e-12)


def test_permute_orders_layers_numerically() -> None:
    model = mlp(0, [4] * 11)  # names 0 .. 22: '10' must come after '8', not after '0'
    x = gaussian(0, 3, 10)
    permuted = permute(model.state_dict(), random_perms(model, 1))
    assert torch.allclose(functional_call(model, permuted, (x,)), model(x), atol=1e-12)
    with pytest.raises(ValueError, match="no hidden layer '22'"):
        permute(model.state_dict(), {"22": torch.arange(5)})


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), hidden=st.lists(st.integers(3, 24), min_size=1, max_size=3))
def test_align_recovers_a_known_permutation_exactly(seed: int, hidden: list[int]) -> None:
    model = mlp(seed, hidden)
    state_a = model.state_dict()
    known = random_perms(model, seed + 1)
    state_b = permute(state_a, known)
    aligned, perms = align(state_a, state_b, model)
    for name in state_a:
        assert torch.equal(aligned[name], state_a[name]), name
    for name, index in perms.items():
        assert torch.equal(known[name][index], torch.arange(len(index)))  # the inverse of `known`


def test_align_real_members(ens: Ensemble) -> None:
    template = ens.task.make_model()
    a, b = ens.members[:2]
    state_a, state_b = ens.params(a), ens.params(b)
    aligned, perms = align(state_a, state_b, template)
    assert list(perms) == ["0", "2"]
    x = ens.task.x_test[:40]
    assert torch.allclose(
        functional_call(template, aligned, (x,)),
        functional_call(template, state_b, (x,)),
        atol=1e-5,
    )
    _, same = align(state_a, state_a, template)
    assert all(torch.equal(p, torch.arange(len(p))) for p in same.values())
    states = [ens.params(m) for m in ens.members]
    raw = pairwise_distance(member_vectors(ens))
    matched = pairwise_aligned_distance(states, template)
    assert torch.equal(matched, matched.T) and torch.all(matched.diagonal() == 0)
    off = ~torch.eye(len(states), dtype=torch.bool)
    assert torch.all(matched[off] <= raw[off] + 1e-9)
    assert torch.all(matched[off] < raw[off])  # independent inits: matching always finds something


def test_alignment_refuses_models_that_are_not_mlps(ens: Ensemble) -> None:
    with pytest.raises(UserError, match="the task's model is a ModularMLP"):
        linear_chain(ModularMLP(7, 4, 8))
    with pytest.raises(UserError, match="layer '1' is a LayerNorm"):
        linear_chain(nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)))
    with pytest.raises(UserError, match="needs a hidden layer"):
        linear_chain(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)))
    template = ens.task.make_model()
    state = ens.params(ens.members[0])
    wrong = mlp(0, [24, 16]).float().state_dict()  # 10 inputs instead of 64
    with pytest.raises(UserError, match="weights of model B do not match the model"):
        align(state, wrong, template)


def test_weights_keeps_the_alignment_importable() -> None:
    """``measure.weights`` re-exports the alignment that moved to ``measure.alignment``."""
    from attractor.measure import alignment, weights

    for name in ("align", "linear_chain", "permute", "State", "Perms"):
        assert getattr(weights, name) is getattr(alignment, name)
        assert name in weights.__all__
