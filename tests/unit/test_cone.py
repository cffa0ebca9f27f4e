"""Cone descent against its oracles: a numerical constrained minimization, SGD at alpha = 0,
the minimum-distance solution of over-parameterized least squares, and its torch.optim twin.

The conformance suite (chunking, masks, shapes) covers it through ``tests/unit/test_optim.py``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import minimize
from torch import Tensor, nn

from attractor.config import load_config
from attractor.errors import UserError
from attractor.optim import OPTIMIZERS, ConeDescentOptim, Hyper
from attractor.optim.cone import cone_coefficients, member_sum, random_angle
from attractor.runs.launch import train
from tests.conftest import tiny_mapping, write_toml

CONE, SGD = OPTIMIZERS["cone"], OPTIMIZERS["sgd"]


def _direction(g: np.ndarray, w: np.ndarray, angle: float) -> np.ndarray:
    """The closed-form unit direction d for one member, from ``|g| d = a g + b w``."""
    gt, wt = torch.from_numpy(g)[None], torch.from_numpy(w)[None]
    a, b = cone_coefficients([gt], [wt], angle)
    return (float(a[0]) * g + float(b[0]) * w) / np.linalg.norm(g)


vectors = arrays(np.float64, 4, elements=st.floats(-1, 1)).filter(lambda v: np.linalg.norm(v) > 0.1)


@settings(max_examples=25, deadline=None)
@given(g=vectors, w=vectors, angle=st.floats(0.05, 1.4))
def test_closed_form_is_the_constrained_minimum(g: np.ndarray, w: np.ndarray, angle: float) -> None:
    u = -g / np.linalg.norm(g)
    # w parallel to u makes every rim direction optimal (no unique answer): tested below.
    assume(np.linalg.norm(w - (w @ u) * u) > 1e-3 * np.linalg.norm(w))
    d = _direction(g, w, angle)
    assert np.linalg.norm(d) == pytest.approx(1, abs=1e-9)
    assert d @ u >= math.cos(angle) - 1e-9
    constraints = [
        {"type": "eq", "fun": lambda x: x @ x - 1},
        {"type": "ineq", "fun": lambda x: x @ u - math.cos(angle)},
    ]
    best = min(
        (
            minimize(
                lambda x: x @ w,
                start,
                method="SLSQP",
                constraints=constraints,
                options={"ftol": 1e-12},
            )
            for start in (u, (u + d) / 2, -w / np.linalg.norm(w))
        ),
        key=lambda r: r.fun if r.success else math.inf,
    )
    assert best.success
    assert d @ w <= best.fun + 1e-6  # nothing feasible beats the closed form ...
    np.testing.assert_allclose(d, best.x, atol=1e-4)  # ... and it is that minimizer


def test_direction_inside_the_cone_is_straight_back_to_init() -> None:
    g = np.array([-1.0, 0.0, 0.0])  # u = e1
    w = np.array([-1.0, 0.1, 0.0])  # -w is 0.1 rad from u
    np.testing.assert_allclose(_direction(g, w, 0.3), -w / np.linalg.norm(w), atol=1e-12)
    assert not np.allclose(_direction(g, w, 0.05), -w / np.linalg.norm(w))


def test_degenerate_cases_take_the_gradient_step() -> None:
    g = np.array([-2.0, 0.0, 0.0])  # u = e1
    for w in (np.zeros(3), np.array([3.0, 0.0, 0.0])):  # at init; moved straight along u
        np.testing.assert_allclose(_direction(g, w, 0.7), [1.0, 0.0, 0.0], atol=1e-15)


def test_member_sum_is_the_same_alone_and_in_an_ensemble() -> None:
    x = torch.randn(5, 1_000_003, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    whole = member_sum(x)
    torch.testing.assert_close(whole, x.double().sum(1))
    for i in range(5):
        assert torch.equal(member_sum(x[i : i + 1].clone()), whole[i : i + 1])


@pytest.mark.parametrize("nesterov", [False, True])
def test_zero_angle_is_sgd_bitwise(nesterov: bool) -> None:
    gen = torch.Generator().manual_seed(3)
    shapes = {"w": (6, 5, 4), "b": (6, 4)}
    hyper = Hyper(
        lr=torch.rand(6, generator=gen) * 0.1,
        momentum=torch.tensor([0.0, 0.5, 0.9, 0.0, 0.99, 0.3]),
        weight_decay=torch.tensor([0.0, 0.0, 0.01, 0.1, 0.0, 0.05]),
        nesterov=nesterov,
        cone_angle=0.0,
    )
    runs = []
    for opt in (CONE, SGD):
        params = {
            k: torch.randn(s, generator=torch.Generator().manual_seed(1)) for k, s in shapes.items()
        }
        state = opt.init(params)
        for t in range(1, 9):
            opt.step(
                params, {k: torch.sin(3 * p) + 0.1 * t for k, p in params.items()}, state, hyper, t
            )
        runs.append(params)
    for k in shapes:
        assert torch.equal(runs[0][k], runs[1][k]), k


def _least_squares(angle: float, steps: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Cone descent on ``|A x - b|^2 / 2`` (A 5x20) from x0; returns (x, x*, A, b)."""
    gen = torch.Generator().manual_seed(7)
    a_mat = torch.randn(5, 20, generator=gen, dtype=torch.float64)
    b = torch.randn(5, generator=gen, dtype=torch.float64)
    x0 = torch.randn(20, generator=gen, dtype=torch.float64)
    x_star = x0 + torch.linalg.pinv(a_mat) @ (b - a_mat @ x0)
    lr = 0.9 / float(torch.linalg.matrix_norm(a_mat, 2)) ** 2
    params = {"x": x0[None].clone()}
    state = CONE.init(params)
    hyper = Hyper.uniform(1, lr=lr, cone_angle=angle)
    for t in range(1, steps + 1):
        CONE.step(params, {"x": (a_mat.T @ (a_mat @ params["x"][0] - b))[None]}, state, hyper, t)
    return params["x"][0], x_star, a_mat, b


@pytest.mark.parametrize("angle", [0.0, 0.3, 0.6])
def test_least_squares_ends_at_the_solution_nearest_init(angle: float) -> None:
    x, x_star, a_mat, b = _least_squares(angle, steps=4000)
    assert float(torch.linalg.vector_norm(a_mat @ x - b)) < 1e-8
    assert float(torch.linalg.vector_norm(x - x_star)) < 1e-7


def _functional_vs_torch(
    angle: float,
    momentum: float,
    weight_decay: float,
    per_tensor: bool = False,
    random: bool = False,
) -> None:
    gen = torch.Generator().manual_seed(11)
    w0, b0 = torch.randn(5, 3, generator=gen), torch.randn(3, generator=gen)
    data = torch.randn(16, 5, generator=gen)

    def loss(w: Tensor, b: Tensor) -> Tensor:
        return torch.tanh(data @ w + b).pow(2).sum()

    w, b = nn.Parameter(w0.clone()), nn.Parameter(b0.clone())
    torch_opt = ConeDescentOptim(
        [w, b],
        lr=0.05,
        angle=angle,
        momentum=momentum,
        weight_decay=weight_decay,
        per_tensor=per_tensor,
        random=random,
        seed=5,
    )
    params = {"w": w0[None].clone(), "b": b0[None].clone()}
    state = CONE.init(params)
    # float64 per-member values, as the engine builds them: the same numbers torch.optim's
    # Python floats are (a float32 lr would differ in the 9th digit, which the chaotic
    # tanh loss amplifies over 30 steps). With them the two agree bitwise.
    hyper = Hyper(
        *(torch.tensor([v], dtype=torch.float64) for v in (0.05, momentum, weight_decay)),
        cone_angle=angle,
        cone_per_tensor=per_tensor,
        cone_random=random,
        seed=torch.tensor([5]),
    )
    for t in range(1, 31):
        torch_opt.zero_grad()
        loss(w, b).backward()
        torch_opt.step()
        pw, pb = params["w"][0].requires_grad_(True), params["b"][0].requires_grad_(True)
        gw, gb = torch.autograd.grad(loss(pw, pb), (pw, pb))
        params = {k: v.detach() for k, v in params.items()}
        CONE.step(params, {"w": gw[None], "b": gb[None]}, state, hyper, t)
    assert torch.equal(params["w"][0], w.detach())
    assert torch.equal(params["b"][0], b.detach())
    assert not torch.equal(w.detach(), w0)


@pytest.mark.parametrize(
    ("angle", "momentum", "weight_decay", "per_tensor", "random"),
    [
        (0.4, 0.0, 0.0, False, False),
        (0.6, 0.9, 0.01, False, False),
        (0.0, 0.5, 0.0, False, False),
        (0.6, 0.0, 0.0, True, False),
        (0.6, 0.5, 0.0, False, True),
        (0.6, 0.0, 0.01, True, True),
    ],
)
def test_torch_optim_subclass_matches_functional(
    angle: float, momentum: float, weight_decay: float, per_tensor: bool, random: bool
) -> None:
    _functional_vs_torch(angle, momentum, weight_decay, per_tensor, random)


def test_random_angles_are_uniform_and_a_function_of_seed_and_step() -> None:
    draws = np.array(
        [random_angle(seed, step, 0.6) for seed in range(20) for step in range(1, 101)]
    )
    assert draws.min() >= 0 and draws.max() <= 0.6
    # 2000 uniform draws on [0, 0.6]: mean 0.3 with sd 0.6 / sqrt(12 * 2000) ~ 0.004.
    assert abs(draws.mean() - 0.3) < 0.02 and len(np.unique(draws)) == len(draws)
    assert random_angle(3, 7, 0.6) == random_angle(3, 7, 0.6) != random_angle(3, 8, 0.6)


def test_random_cone_steps_with_the_drawn_angle() -> None:
    """One random step equals a fixed-angle step at the angle drawn for that seed and step."""
    gen = torch.Generator().manual_seed(3)
    x0, g, x = (torch.randn(2, 10, generator=gen, dtype=torch.float64) for _ in range(3))
    seeds = torch.tensor([11, 12])
    zeros = torch.zeros(2, dtype=torch.float64)
    drawn = Hyper(zeros + 0.1, zeros, zeros, cone_angle=0.8, cone_random=True, seed=seeds)
    params = {"x": x.clone()}
    state = {"x": {"momentum_buffer": torch.zeros_like(x), "x0": x0}}
    CONE.step(params, {"x": g}, state, drawn, 4)
    for i, seed in enumerate(seeds.tolist()):
        angle = random_angle(seed, 4, 0.8)
        fixed = {"x": x[i : i + 1].clone()}
        one = {"x": {"momentum_buffer": torch.zeros_like(x[:1]), "x0": x0[i : i + 1]}}
        member = drawn.take(slice(i, i + 1))
        CONE.step(
            fixed, {"x": g[i : i + 1]}, one, replace(member, cone_angle=angle, cone_random=False), 4
        )
        torch.testing.assert_close(params["x"][i], fixed["x"][0], rtol=0, atol=1e-15)


def test_per_tensor_cone_leans_each_tensor_back_on_its_own() -> None:
    """Per tensor, each tensor's step is the single-tensor cone step of that tensor alone."""
    gen = torch.Generator().manual_seed(4)
    shapes = {"a": (1, 6), "b": (1, 3, 2)}
    x0, g, x = (
        {k: torch.randn(*s, generator=gen, dtype=torch.float64) for k, s in shapes.items()}
        for _ in range(3)
    )
    hyper = Hyper(
        *(torch.tensor([v], dtype=torch.float64) for v in (0.1, 0.0, 0.0)),
        cone_angle=0.5,
        cone_per_tensor=True,
    )
    params = {k: v.clone() for k, v in x.items()}
    CONE.step(
        params,
        g,
        {k: {"momentum_buffer": torch.zeros_like(v), "x0": x0[k]} for k, v in x.items()},
        hyper,
        1,
    )
    joint = {k: v.clone() for k, v in x.items()}
    CONE.step(
        joint,
        g,
        {k: {"momentum_buffer": torch.zeros_like(v), "x0": x0[k]} for k, v in x.items()},
        replace(hyper, cone_per_tensor=False),
        1,
    )
    for k in shapes:
        alone = {k: x[k].clone()}
        CONE.step(
            alone,
            {k: g[k]},
            {k: {"momentum_buffer": torch.zeros_like(x[k]), "x0": x0[k]}},
            replace(hyper, cone_per_tensor=False),
            1,
        )
        torch.testing.assert_close(params[k], alone[k], rtol=0, atol=1e-15)
    assert any(not torch.allclose(params[k], joint[k]) for k in shapes)


def test_torch_optim_subclass_refuses_a_flat_cone() -> None:
    with pytest.raises(ValueError, match="angle"):
        ConeDescentOptim([nn.Parameter(torch.zeros(2))], lr=0.1, angle=math.pi / 2)


def _trained(tmp_path: Path, name: str, **trainer: object) -> dict[str, Tensor]:
    mapping = tiny_mapping(trainer=trainer, plan={"members": 2})
    config = load_config(write_toml(tmp_path / f"{name}.toml", mapping))
    ens = train(config, tmp_path / name)
    return ens.params(ens.members[-1])


def test_toml_config_trains_end_to_end(tmp_path: Path) -> None:
    cone = _trained(tmp_path, "cone", optimizer="cone", cone_angle=0.5)
    sgd = _trained(tmp_path, "sgd", optimizer="sgd")
    flat = _trained(tmp_path, "flat", optimizer="cone", cone_angle=0.0)
    assert all(torch.isfinite(v).all() for v in cone.values())
    assert all(torch.equal(flat[k], sgd[k]) for k in sgd)  # alpha = 0 through the whole stack
    assert any(not torch.equal(cone[k], sgd[k]) for k in sgd)


def test_config_refuses_a_flat_cone(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path / "bad.toml", tiny_mapping(trainer={"optimizer": "cone", "cone_angle": 2.0})
    )
    with pytest.raises(UserError, match="cone_angle"):
        load_config(path)
