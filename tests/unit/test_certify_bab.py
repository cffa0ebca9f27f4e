"""Branch and bound: never looser with more budget, close to a dense grid in 2-D, verdicts."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from attractor.certify import box, certify_difference, to_network

pytestmark = pytest.mark.usefixtures("one_thread")


def pair(seed: int, widths: list[int], scale: float) -> tuple[nn.Sequential, nn.Sequential]:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers += [nn.Linear(fan_in, fan_out)] + ([nn.ReLU()] if i < len(widths) - 2 else [])
    a = nn.Sequential(*layers).double()
    b = nn.Sequential(
        *[
            type(m)(m.in_features, m.out_features) if isinstance(m, nn.Linear) else nn.ReLU()
            for m in a
        ]
    ).double()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        for p in b.parameters():
            p.add_(scale * torch.randn_like(p))
    return a, b


@pytest.mark.parametrize(
    "method, split", [("differential", "input"), ("differential", "relu"), ("linear", "input")]
)
def test_never_looser_as_the_budget_grows(method: str, split: str) -> None:
    a, b = pair(0, [3, 8, 8, 2], 0.05)
    lower, upper = box(-torch.ones(2, 3), torch.ones(2, 3))
    uppers, lowers = [], []
    for boxes in (1, 9, 41, 201):
        result = certify_difference(
            a, b, lower, upper, method=method, max_boxes=boxes, budget_s=60, split=split
        )
        uppers.append(result.upper)
        lowers.append(result.lower)
        assert (result.lower <= result.upper).all()
    for before, after in zip(uppers[:-1], uppers[1:], strict=True):
        assert (after <= before).all()
    if split == "input":  # neuron splits without beta-CROWN may leave the worst domain as it was
        assert (uppers[-1] < uppers[0]).all()


@pytest.mark.parametrize("objective", ["max_abs", 0, 1])
def test_two_inputs_against_a_dense_grid(objective: str | int) -> None:
    a, b = pair(1, [2, 8, 8, 2], 0.1)
    lower, upper = box(torch.tensor([[-1.0, -0.5]]), torch.tensor([[0.5, 1.0]]))
    axis = [
        torch.linspace(float(lower[0, i]), float(upper[0, i]), 401, dtype=torch.float64)
        for i in range(2)
    ]
    grid = torch.cartesian_prod(*axis)
    diff = to_network(b)(grid) - to_network(a)(grid)
    grid_max = float(
        diff.abs().amax(-1).max() if objective == "max_abs" else diff[:, objective].max()
    )
    result = certify_difference(
        a, b, lower, upper, objective=objective, max_boxes=3000, budget_s=20, seed=0
    )
    assert grid_max <= float(result.upper[0]) + 1e-12
    assert float(result.upper[0]) - grid_max <= 0.01 * abs(grid_max) + 1e-9
    assert grid_max - 0.01 * abs(grid_max) <= float(result.lower[0]) <= float(result.upper[0])
    x = result.inputs[0:1]
    attained = to_network(b)(x) - to_network(a)(x)
    value = attained.abs().amax() if objective == "max_abs" else attained[0, objective]
    assert float(value) == pytest.approx(float(result.lower[0]))


def test_verdicts_and_json() -> None:
    a, b = pair(2, [3, 6, 2], 0.05)
    lower, upper = box(-torch.ones(3, 3), torch.ones(3, 3))
    loose = certify_difference(a, b, lower, upper, max_boxes=50)
    high = certify_difference(a, b, lower, upper, delta=float(loose.upper.max()) * 2, max_boxes=50)
    low = certify_difference(a, b, lower, upper, delta=float(loose.lower.min()) / 2, max_boxes=50)
    assert high.verdicts == ("verified",) * 3 and low.verdicts == ("falsified",) * 3
    identical = certify_difference(a, a, lower, upper, delta=0.0)
    assert identical.verdicts == ("verified",) * 3 and (identical.upper == 0).all()
    json.dumps(loose.to_dict())


def test_deterministic_given_a_seed_and_box_count() -> None:
    a, b = pair(3, [4, 8, 3], 0.1)
    lower, upper = box(-torch.ones(2, 4), torch.ones(2, 4))
    first = certify_difference(a, b, lower, upper, max_boxes=100, budget_s=60, seed=7)
    second = certify_difference(a, b, lower, upper, max_boxes=100, budget_s=60, seed=7)
    assert torch.equal(first.upper, second.upper) and torch.equal(first.inputs, second.inputs)


@settings(max_examples=12, deadline=None)
@given(
    st.integers(0, 10_000),
    st.sampled_from(["input", "relu"]),
    st.sampled_from(["max_abs", 0, 1]),
    st.sampled_from([None, 0.01, 0.1]),
    st.sampled_from([0.01, 0.3]),
)
def test_branch_and_bound_upper_is_never_beaten_by_samples(
    seed: int, split: str, objective: str | int, delta: float | None, scale: float
) -> None:
    a, b = pair(seed, [4, 6, 6, 2], scale)
    gen = torch.Generator().manual_seed(seed)
    centre = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    lower, upper = box(centre - 0.5, centre + 0.5)
    result = certify_difference(
        a, b, lower, upper, max_boxes=60, budget_s=60, split=split, objective=objective, delta=delta
    )
    x = lower + torch.rand(4000, 2, 4, generator=gen, dtype=torch.float64) * (upper - lower)
    diff = to_network(b)(x.reshape(-1, 4)) - to_network(a)(x.reshape(-1, 4))
    value = (diff.abs().amax(-1) if objective == "max_abs" else diff[:, objective]).reshape(4000, 2)
    assert (value <= result.upper + 1e-9).all()
    assert (result.lower <= result.upper).all()
