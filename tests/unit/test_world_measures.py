"""Measures of the world level against answers known in closed form.

Double-well basins split exactly at 0; Lyapunov exponents of a linear closed loop are the
log-moduli of its eigenvalues and the double well's tend to log|1 - 2h|; variance
components of a synthetic y = a_i + b_j + e_ij; the two-way bootstrap's coverage in a small
simulation (and how badly a one-way bootstrap over pairs misses); break points of a
synthetic curve; bad worlds are one line.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import expit
from torch import nn

from attractor.errors import UserError
from attractor.measure.bootstrap import multibootstrap
from attractor.seeds import torch_generator
from attractor.world import get_world
from attractor.world.base import World
from attractor.world.basins import (
    basin_agreement,
    basin_labels,
    basin_map,
    basin_share,
    basin_vs_scale,
    rollout_labels,
)
from attractor.world.growth import lyapunov
from attractor.world.rollout import EnsemblePolicy, initial_batch
from attractor.world.sources import outcome_sources
from attractor.world.structural import break_point, constants_curve, model_curve


def _one_line(exc: pytest.ExceptionInfo[UserError], *fragments: str) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    return text


def _world(step, name: str = "toy", **changes) -> World:
    """A minimal world around ``step`` (1-D states, goal: |x| < 0.01)."""
    fields = {
        "name": name,
        "description": "a test world",
        "factors": {"x": 1.0},
        "constants": {"gain": 0.5},
        "steps": 60,
        "task": None,
        "initial": lambda n, scale, gen: scale * (torch.rand(n, 1, generator=gen) * 2 - 1),
        "step": step,
        "features": lambda x, c: {"x": x[..., 0], "basin": (x[..., 0] > 0).long()},
        "basin_feature": "basin",
        "project": lambda x: x,
        "goal": lambda x, c: x[..., 0].abs() < 0.01,
    }
    return World(**{**fields, **changes})


@pytest.fixture(scope="module")
def well() -> World:
    return get_world("double-well")


# ---------------------------------------------------------------- basins


def test_double_well_share_is_the_share_of_positive_initial_states(well: World) -> None:
    scales, n = [0.5, 1.0, 2.0], 200
    curve = basin_vs_scale(well, None, 3, scales, n, steps=400, seed=7, draws=200)
    assert list(curve.columns[:5]) == ["scale", "share", "low", "high", "n"]
    for k, scale in enumerate(scales):
        x0 = well.initial(n, scale, torch_generator("world-basin-scale", 7, k))
        assert curve["share"][k] == pytest.approx(float((x0 > 0).double().mean()), abs=1e-12)
        assert curve["low"][k] <= curve["share"][k] <= curve["high"][k]
    assert (curve["basin"] == 1).all() and curve["goal"].all()
    # No model: every member gives the same labels, so each member's share is the share.
    x0 = initial_batch(well.initial(n, 2.0, torch_generator("world-basin-scale", 7, 2)), 3)
    share = basin_share(rollout_labels(well, None, x0, steps=400), goal=True, draws=100)
    assert np.allclose(share.members, share.share)


def test_without_a_goal_the_basin_is_the_feature_and_the_majority_is_named(well: World) -> None:
    free = dataclasses.replace(well, goal=None)
    x0 = initial_batch(torch.tensor([[-0.5], [0.2], [0.7], [1.5]], dtype=torch.float64), 2)
    final = rollout_labels(free, None, x0, steps=300)
    assert final.tolist() == [[0, 1, 1, 1]] * 2
    assert basin_labels(free, torch.full((2, 4, 1), -1.0, dtype=torch.float64)).sum() == 0
    share = basin_share(final, draws=100)
    assert (share.basin, share.share, share.goal) == (1, 0.75, False)


def test_basin_map_over_x_splits_at_zero(well: World) -> None:
    values = np.round(np.linspace(-1, 1, 21), 6)
    grid = basin_map(well, None, "x", values, members=2, steps=400)
    assert list(grid.columns) == ["a", "b", "share", "label"]
    assert (grid["share"] == (grid["a"] > 0)).all() and (grid["label"] == (grid["a"] > 0)).all()
    free = basin_map(
        dataclasses.replace(well, goal=None), None, "x", torch.from_numpy(values), members=2
    )
    assert (free["share"] == 1).all() and (free["label"] == (free["a"] > 0)).all()


def test_basin_map_over_two_factors_labels_each_quadrant() -> None:
    """States stay put; the basin is the quadrant, so the map is the quadrant of (a, b)."""
    plane = _world(
        lambda x, policy, t, c: x,
        "plane",
        factors={"u": 1.0, "v": 1.0},
        goal=None,
        features=lambda x, c: {"basin": (x[..., 0] > 0).long() + 2 * (x[..., 1] > 0).long()},
        at=lambda values: torch.stack([values["u"], values["v"]], -1),
    )
    grid = basin_map(plane, None, "u", [-1.0, 1.0], "v", [-2.0, 0.5, 2.0], members=3, steps=2)
    assert grid[["a", "b"]].values.tolist() == [
        [-1, -2],
        [-1, 0.5],
        [-1, 2],
        [1, -2],
        [1, 0.5],
        [1, 2],
    ]
    assert grid["label"].tolist() == [0, 2, 2, 1, 3, 3] and (grid["share"] == 1).all()


def test_basin_map_refuses_worlds_without_at_and_unknown_factors(well: World) -> None:
    with pytest.raises(UserError) as exc:
        basin_map(dataclasses.replace(well, at=None), None, "x", [0.0, 1.0], members=1)
    _one_line(exc, "double-well", "at")
    with pytest.raises(UserError) as exc:
        basin_map(well, None, "x", [0.0], "v", [1.0], members=1)
    _one_line(exc, "no factor 'v'")


def test_two_way_bootstrap_covers_the_truth_and_one_way_does_not() -> None:
    """Members and initial states both shift the odds (logit effects a_i, b_j ~ N(0, 1))."""
    mu, m, s, repeats = 0.5, 10, 30, 40
    z, w = np.polynomial.hermite_e.hermegauss(80)
    truth = float((w * expit(mu + np.sqrt(2.0) * z)).sum() / w.sum())  # E[sigmoid(mu+a+b)]
    two = one = 0
    for r in range(repeats):
        rng = np.random.default_rng(r)
        p = expit(mu + rng.normal(0, 1, (m, 1)) + rng.normal(0, 1, (1, s)))
        labels = (rng.random((m, s)) < p).astype(np.int64)
        est = basin_share(labels, goal=True, draws=400, seed=r)
        two += est.low <= truth <= est.high
        pairs = multibootstrap(labels.reshape(1, -1).astype(float), draws=400, seed=r)
        one += pairs.low <= truth <= pairs.high
    # Measured: two-way 40/40, one-way over pairs 21/40 (nominal 95 %).
    assert two / repeats >= 0.85
    assert one / repeats < 0.75


def test_agreement_tells_who_decides_the_basin() -> None:
    rng = np.random.default_rng(0)
    by_state = np.tile(rng.integers(0, 2, 40), (12, 1))  # the state decides
    table = basin_agreement(by_state, draws=100).set_index("between")
    assert table.loc["members", "rate"] == 1.0 and table.loc["members", "low"] == 1.0
    assert table.loc["states", "rate"] < 0.7
    by_member = np.tile(rng.integers(0, 3, (12, 1)), (1, 40))
    table = basin_agreement(by_member, draws=100).set_index("between")
    assert table.loc["states", "rate"] == 1.0
    assert table.loc["members", "rate"] < 0.7
    assert table.loc["members", "chance"] == pytest.approx(
        float(((np.bincount(by_member.ravel()) / by_member.size) ** 2).sum())
    )
    with pytest.raises(UserError) as exc:
        basin_agreement(np.zeros((1, 5), dtype=np.int64))
    _one_line(exc, "at least 2 members")


# ---------------------------------------------------------------- sources


def test_variance_sources_recover_known_components() -> None:
    rng = np.random.default_rng(1)
    m, s, var = 150, 150, {"member": 1.0, "state": 0.5, "interaction+residual": 0.25}
    y = (
        rng.normal(0, var["member"] ** 0.5, (m, 1))
        + rng.normal(0, var["state"] ** 0.5, (1, s))
        + rng.normal(0, var["interaction+residual"] ** 0.5, (m, s))
    )
    table = outcome_sources(torch.from_numpy(y), draws=100).set_index("source")
    assert list(table.index) == ["member", "state", "interaction+residual"]
    total = sum(var.values())
    for source, v in var.items():
        assert table.loc[source, "share"] == pytest.approx(v / total, abs=0.08)
        assert table.loc[source, "low"] <= table.loc[source, "share"] <= table.loc[source, "high"]
    assert table["share"].sum() == pytest.approx(1.0)
    # The two-way ANOVA by hand: E[MS_member] = s sigma_a^2 + sigma_e^2, MS_e the residual.
    rows, cols, grand = y.mean(1, keepdims=True), y.mean(0, keepdims=True), y.mean()
    ms_e = ((y - rows - cols + grand) ** 2).sum() / ((m - 1) * (s - 1))
    ms_a = s * ((rows - grand) ** 2).sum() / (m - 1)
    ms_b = m * ((cols - grand) ** 2).sum() / (s - 1)
    assert table.loc["member", "variance"] == pytest.approx((ms_a - ms_e) / s, rel=1e-9)
    assert table.loc["state", "variance"] == pytest.approx((ms_b - ms_e) / m, rel=1e-9)
    assert table.loc["interaction+residual", "variance"] == pytest.approx(ms_e, rel=1e-9)


def test_sources_refuse_class_indices_and_tiny_tables() -> None:
    with pytest.raises(UserError) as exc:
        outcome_sources(np.array([[0, 1, 2], [2, 1, 0]]))
    _one_line(exc, "3 classes", "indicator")
    with pytest.raises(UserError) as exc:
        outcome_sources(np.zeros((1, 4)))
    _one_line(exc, "at least 2")


# ---------------------------------------------------------------- growth


def _linear_world(a: torch.Tensor, b: torch.Tensor, steps: int) -> World:
    return _world(lambda x, policy, t, c: x @ a.T + policy(x) @ b.T, "linear", steps=steps)


def test_lyapunov_of_a_linear_closed_loop_is_log_eigenvalue_moduli() -> None:
    gen = torch.Generator().manual_seed(3)
    eig = torch.tensor([1.05, -0.7, 0.35], dtype=torch.float64)
    p = torch.eye(3, dtype=torch.float64) + 0.4 * torch.randn(3, 3, generator=gen, dtype=eig.dtype)
    a_cl = p @ torch.diag(eig) @ torch.linalg.inv(p)
    a = torch.randn(3, 3, generator=gen, dtype=eig.dtype)
    b = torch.eye(3, dtype=eig.dtype)
    k = torch.linalg.solve(b, a - a_cl)  # u = -K x gives x' = (A - B K) x = A_cl x

    def policy(x: torch.Tensor) -> torch.Tensor:
        return -x @ k.T

    world = _linear_world(a, b, 400)
    x0 = torch.randn(2, 3, 3, generator=gen, dtype=eig.dtype)
    res = lyapunov(world, policy, x0)
    expected = eig.abs().log()
    error = (res.exponents - expected).abs().max()
    assert error < 0.01, error  # measured 8.5e-4 at T = 400 (an O(1/T) transient)
    assert res.all_dims and res.exponents.shape == (2, 3, 3)
    forward = lyapunov(world, policy, x0, mode="forward")  # dual tensors, not two vjps
    assert (forward.exponents - res.exponents).abs().max() < 1e-10
    # Re-orthonormalizing every 7 steps and one random direction: the same leading exponent.
    sparse = lyapunov(world, policy, x0, reorth_every=7)
    assert (sparse.exponents - res.exponents).abs().max() < 1e-8
    one = lyapunov(world, policy, x0, directions=1)
    assert not one.all_dims and (one.exponents[..., 0] - expected[0]).abs().max() < 0.01
    top = res.top(draws=100)
    assert top.value == pytest.approx(float(expected[0]), abs=0.01)
    summary = res.summary(draws=100)
    assert list(summary["exponent"]) == [1, 2, 3] and list(summary["positive"]) == [1.0, 0, 0]


def test_double_well_exponent_tends_to_log_of_one_minus_two_h(well: World) -> None:
    x0 = initial_batch(torch.tensor([[0.8], [1.0], [1.25]], dtype=torch.float64), 2)
    res = lyapunov(well, None, x0, steps=400)
    error = (res.exponents[..., 0] - np.log(1 - 2 * well.constants["h"])).abs()
    assert error[:, 1].max() < 1e-12  # at the fixed point the map's derivative is 1 - 2h
    assert error.max() < 5e-3, error  # measured 2.2e-3 from 0.8 and 1.25 (transient / T)
    assert torch.allclose(res.final, torch.ones_like(res.final))


def test_lyapunov_through_an_ensemble_mlp_matches_the_jacobian() -> None:
    """The batched MLP has no forward-mode rule: the reverse-over-reverse product pushes it.

    Over one step the exponents sum to log|det J| of that step (the volume growth).
    """
    torch.manual_seed(0)
    template = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    params = {
        k: torch.stack([v.detach() * (1 + 0.2 * i) for i in range(2)])
        for k, v in template.named_parameters()
    }
    policy = EnsemblePolicy(template, params, {})
    a = torch.eye(3, dtype=torch.float64) * 0.9
    world = _linear_world(a, torch.eye(3, dtype=torch.float64), 1)
    x0 = torch.randn(2, 4, 3, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda z: world.step(z, policy, 0, {}), x0)
    for mode in ("auto", "forward"):  # forward mode fails on the MLP and falls back
        res = lyapunov(world, policy, x0, steps=1, mode=mode)
        for i in range(2):
            for j in range(4):
                volume = float(torch.linalg.slogdet(jac[i, j, :, i, j, :]).logabsdet)
                assert float(res.exponents[i, j].sum()) == pytest.approx(volume, abs=1e-10)
    with pytest.raises(UserError) as exc:
        lyapunov(world, policy, x0, mode="sideways")
    _one_line(exc, "sideways")


# ---------------------------------------------------------------- structural


def test_break_point_of_a_synthetic_curve() -> None:
    share = np.array([0.9, 0.85, 0.6, 0.3, 0.1])
    curve = pd.DataFrame(
        {"level": [0, 0.1, 0.2, 0.3, 0.4], "share": share, "low": share - 0.2, "high": share + 0.2}
    )
    point = break_point(curve)
    assert (point.at, point.early, point.late, point.threshold) == (0.3, 0.2, 0.4, 0.45)
    assert break_point(curve, threshold=0.05) is None
    wide = curve.assign(high=1.0)
    assert break_point(wide).late is None
    assert break_point(curve, threshold=0.95).at == 0.0  # already below at the reference


def _mlp_policy_params() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """u = -tanh(x): a controller that drives 1-D states to 0 (3 identical members)."""
    template = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))
    params = {
        "0.weight": torch.ones(3, 8, 1),
        "0.bias": torch.zeros(3, 8),
        "2.weight": -torch.ones(3, 1, 8) / 8,
        "2.bias": torch.zeros(3, 1),
    }
    return template, params


def test_model_curve_breaks_as_dropconnect_removes_the_controller() -> None:
    world = _world(lambda x, policy, t, c: x + c["gain"] * policy(x))
    template, params = _mlp_policy_params()
    curve = model_curve(
        world, template, params, {}, "dropconnect", [0.5, 0.9, 0.999], 64, steps=40, draws=200
    )
    assert list(curve["level"]) == [0.0, 0.5, 0.9, 0.999]
    assert curve["share"][0] == 1.0  # the controller itself reaches the goal from everywhere
    assert curve["share"].iloc[-1] < 0.2  # nearly every weight dropped: no control left
    point = break_point(curve)
    assert point is not None and point.at in (0.9, 0.999)
    quant = model_curve(world, template, params, {}, "quantize", [2, 8], 16, steps=40, draws=50)
    assert list(quant["level"]) == [np.inf, 8.0, 2.0]
    with pytest.raises(UserError) as exc:
        model_curve(
            world,
            nn.Sequential(nn.Linear(1, 1)),
            {"0.weight": torch.ones(3, 1, 1), "0.bias": torch.zeros(3, 1)},
            {},
            "dropout",
            [0.1],
            8,
        )
    _one_line(exc, "hidden")
    with pytest.raises(UserError) as exc:
        model_curve(world, template, params, {}, "dropconnect", [1.5], 8)
    _one_line(exc, "dropconnect")


def test_constants_curve_of_the_double_well(well: World) -> None:
    curve = constants_curve(well, None, 2, ["h"], [0.5, 0.1, 0.01], 100, steps=200, draws=200)
    assert list(curve["factor"]) == [1.0, 0.5, 0.1, 0.01]
    assert curve["h"].tolist() == pytest.approx([0.1, 0.05, 0.01, 0.001])
    x0 = well.initial(100, 1.0, torch_generator("world-structural-states", 0))
    assert curve["share"][0] == pytest.approx(float((x0 > 0).double().mean()))
    assert curve["share"][1] == curve["share"][0]  # h = 0.05 still reaches +1 in 200 steps
    # h = 0.01 and 0.001: contraction 0.98 and 0.998 per step, 200 steps end short of +1.
    assert curve["share"][2] == curve["share"][3] == 0.0
    point = break_point(curve)
    assert (point.at, point.early, point.late) == (0.1, 0.1, 0.1)
    with pytest.raises(UserError) as exc:
        constants_curve(well, None, 2, ["length"], [2.0], 10)
    _one_line(exc, "no constant 'length'")
    with pytest.raises(UserError) as exc:  # h = 3: the map overshoots and runs off to inf
        constants_curve(well, None, 1, ["h"], [30.0], 10)
    _one_line(exc, "double-well", "not finite", "h=3")


# ---------------------------------------------------------------- bad worlds


def test_bad_worlds_are_one_line(well: World) -> None:
    x0 = initial_batch(torch.tensor([[0.5], [0.2]]), 2)
    wrong = _world(lambda x, policy, t, c: x[:, :1], "wrong-shape")
    with pytest.raises(UserError) as exc:
        rollout_labels(wrong, None, x0)
    _one_line(exc, "wrong-shape", "step 0")

    def blows_up(x, policy, t, c):
        return x * float("nan") if t == 3 else x

    nan = _world(blows_up, "nan-world")
    with pytest.raises(UserError) as exc:
        rollout_labels(nan, None, x0, steps=10)
    _one_line(exc, "nan-world", "step 3", "not finite")
    with pytest.raises(UserError) as exc:
        lyapunov(nan, None, x0, steps=10)
    _one_line(exc, "nan-world", "step 3")
    with pytest.raises(UserError) as exc:
        lyapunov(dataclasses.replace(well, differentiable=False), None, x0.double())
    _one_line(exc, "not differentiable")
    floaty = dataclasses.replace(well, goal=None, basin_feature="x")
    with pytest.raises(UserError) as exc:
        basin_labels(floaty, x0.double())
    _one_line(exc, "double-well", "not categorical")
    with pytest.raises(UserError) as exc:
        basin_share(np.zeros((2, 3)))
    _one_line(exc, "integers")


def test_perturbed_sources_recover_known_three_way_components() -> None:
    """y = p_k + a_i + b_j + e_kij with variances 1, 0.5, 0.25, 0.09: the method-of-moments
    components average to the truth over repeats (each repeat has only k = 6 draws).
    """
    from attractor.world.sources import PERTURBED_SOURCES, perturbed_sources

    truth = np.array([1.0, 0.5, 0.25, 0.09])
    estimates = []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        k, m, s = 6, 10, 12
        y = (
            rng.normal(0, 1.0, (k, 1, 1))
            + rng.normal(0, np.sqrt(0.5), (1, m, 1))
            + rng.normal(0, np.sqrt(0.25), (1, 1, s))
            + rng.normal(0, 0.3, (k, m, s))
        )
        table = perturbed_sources(y, draws=0)
        assert tuple(table["source"]) == PERTURBED_SOURCES
        estimates.append(table["variance"].to_numpy())
    mean = np.mean(estimates, axis=0)
    assert np.all(np.abs(mean - truth) < 0.3 * truth + 0.02), mean
