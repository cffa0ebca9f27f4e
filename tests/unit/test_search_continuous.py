"""PGD and its random baseline: a planted disagreement, projection, determinism, batching."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from attractor.errors import UserError
from attractor.search import (
    Region,
    pair_score,
    pgd_evaluations,
    sample_disagreement,
    sample_ensemble_spread,
    search_disagreement,
    search_ensemble_spread,
)
from attractor.search.continuous import pgd, random_search

pytestmark = pytest.mark.usefixtures("one_thread")


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer.requires_grad_(False)


def _mlp(seed: int, d: int = 6, c: int = 4) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, c)).requires_grad_(False)


def _planted(
    d: int = 12, c: int = 3
) -> tuple[nn.Module, nn.Module, torch.Tensor, float, Region, torch.Tensor]:
    """Two linear models differing only in class 1's logit, by ``w . x + delta``."""
    gen = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(c, d, generator=gen), torch.randn(c, generator=gen)
    w, delta = torch.randn(d, generator=gen), 0.3
    lower, upper = -torch.rand(d, generator=gen) - 0.5, torch.rand(d, generator=gen) + 0.5
    other_w, other_b = weight.clone(), bias.clone()
    other_w[1] += w
    other_b[1] += delta
    # max |w . x + delta| over the box: the corner that maximizes w . x, or the one that minimizes
    # it.
    high = torch.where(w > 0, upper, lower)
    low = torch.where(w > 0, lower, upper)
    top, bottom = float(w @ high) + delta, float(w @ low) + delta
    corner, best = (high, top) if abs(top) >= abs(bottom) else (low, abs(bottom))
    return (
        _linear(weight, bias),
        _linear(other_w, other_b),
        w,
        best,
        Region.box(lower, upper),
        corner,
    )


def test_pgd_finds_the_planted_corner_and_beats_sampling() -> None:
    a, b, _, best, region, corner = _planted()
    found = search_disagreement(a, b, region, objective="logit", restarts=4, steps=30)
    assert found.best == pytest.approx(best, rel=1e-5)
    assert torch.allclose(found.inputs[0], corner)
    assert found.evaluations == pgd_evaluations(1, 4, 30) == 4 * 61
    base = sample_disagreement(a, b, region, found.evaluations, objective="logit")
    assert base.evaluations == found.evaluations
    assert base.best < found.best  # 12 dimensions: 244 uniform draws miss the corner
    assert found.best_per_point.shape == (1,) and float(found.best_per_point[0]) == found.best


def test_class_objective_finds_the_same_corner() -> None:
    a, b, _, best, region, _ = _planted()
    assert search_disagreement(
        a, b, region, objective="logit:1", restarts=2, steps=30
    ).best == pytest.approx(best, rel=1e-5)
    assert search_disagreement(
        a, b, region, objective="logit:0", restarts=2, steps=5
    ).best == pytest.approx(0.0, abs=1e-5)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    eps=st.floats(0.0, 3.0),
    clip=st.booleans(),
    points=st.integers(1, 4),
)
def test_every_returned_input_lies_in_the_region(
    seed: int, eps: float, clip: bool, points: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(points, 6, generator=gen)
    bounds = (-torch.rand(6, generator=gen), torch.rand(6, generator=gen)) if clip else None
    region = Region.ball(x, eps, clip=bounds)
    a, b = _mlp(seed), _mlp(seed + 1)
    for result in (
        search_disagreement(a, b, region, "js", restarts=3, steps=4, top_k=5, seed=seed),
        sample_disagreement(a, b, region, 40, "margin", top_k=5, seed=seed),
    ):
        assert region.contains(result.inputs, result.points)
        assert region.contains(result.best_inputs, torch.arange(points))
        assert torch.all(result.scores[:-1] >= result.scores[1:])
        if clip:  # inside the clip box as well as the ball
            assert bool(((result.inputs >= bounds[0]) & (result.inputs <= bounds[1])).all())
        assert bool(((result.inputs - region.center[result.points]).abs() <= eps + 1e-6).all())


def test_same_seed_same_result_and_other_seed_other_starts() -> None:
    a, b = _mlp(0), _mlp(1)
    region = Region.ball(torch.randn(3, 6, generator=torch.Generator().manual_seed(0)), 1.0)
    one, two = (
        search_disagreement(a, b, region, "js", restarts=4, steps=10, seed=5) for _ in range(2)
    )
    assert torch.equal(one.inputs, two.inputs) and torch.equal(one.scores, two.scores)
    assert torch.equal(one.best_per_point, two.best_per_point)
    r1, r2 = (sample_disagreement(a, b, region, 300, "js", seed=5) for _ in range(2))
    assert torch.equal(r1.inputs, r2.inputs) and torch.equal(r1.best_per_point, r2.best_per_point)
    other = sample_disagreement(a, b, region, 300, "js", seed=6)
    assert not torch.equal(other.inputs, r1.inputs)
    # The global RNG is never used: drawing from it in between changes nothing.
    torch.manual_seed(123)
    assert torch.equal(
        search_disagreement(a, b, region, "js", restarts=4, steps=10, seed=5).inputs, one.inputs
    )


def test_batched_over_points_equals_one_point_at_a_time() -> None:
    a, b = _mlp(2), _mlp(3)
    region = Region.ball(torch.randn(5, 6, generator=torch.Generator().manual_seed(1)), 0.7)
    batched = search_disagreement(a, b, region, "symmetric_kl", restarts=3, steps=15, seed=1)
    sampled = sample_disagreement(a, b, region, 500, "symmetric_kl", seed=1)
    for i in range(region.points):
        alone = search_disagreement(
            a, b, region.select([i]), "symmetric_kl", restarts=3, steps=15, seed=1
        )
        assert float(alone.best_per_point[0]) == pytest.approx(
            float(batched.best_per_point[i]), rel=1e-4, abs=1e-7
        )
        assert torch.allclose(alone.best_inputs[0], batched.best_inputs[i], atol=1e-4)
        one = sample_disagreement(a, b, region.select([i]), 100, "symmetric_kl", seed=1)
        assert float(one.best_per_point[0]) == pytest.approx(
            float(sampled.best_per_point[i]), rel=1e-5
        )


def test_ball_search_starts_at_the_centre_so_never_scores_below_it() -> None:
    a, b = _mlp(4), _mlp(5)
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(2))
    at_centre = pair_score(a, b, "js")(x).double()
    found = search_disagreement(a, b, Region.ball(x, 0.5), "js", restarts=2, steps=10)
    assert bool((found.best_per_point >= at_centre - 1e-12).all())
    assert torch.equal(
        search_disagreement(a, b, Region.ball(x, 0.0), "js", restarts=2, steps=3).best_per_point,
        at_centre,
    )


def test_budget_accounting_of_the_baseline() -> None:
    a, b = _mlp(0), _mlp(1)
    region = Region.ball(torch.zeros(3, 6), 1.0)
    result = random_search(pair_score(a, b, "js"), region, 301, "js")
    assert result.evaluations == 300 and result.settings["samples_per_point"] == 100
    with pytest.raises(UserError, match="less than one per point"):
        random_search(pair_score(a, b, "js"), region, 2, "js")


def test_nan_scores_never_win() -> None:
    region = Region.box(-torch.ones(2), torch.ones(2))

    def score(x: torch.Tensor) -> torch.Tensor:  # NaN on the left half, x0 on the right
        return torch.where(x[:, 0] < 0, torch.full_like(x[:, 0], math.nan), x[:, 0])

    for result in (pgd(score, region, restarts=4, steps=5), random_search(score, region, 50)):
        assert not bool(torch.isnan(result.best_per_point).any())
        assert bool((result.inputs[torch.isfinite(result.scores), 0] >= 0).all())


def test_ensemble_spread_search() -> None:
    models = [_mlp(s) for s in range(3)]
    region = Region.box(-2 * torch.ones(6), 2 * torch.ones(6))
    found = search_ensemble_spread(models, region, "mi", restarts=8, steps=20)
    base = sample_ensemble_spread(models, region, found.evaluations, "mi")
    assert found.best >= base.best
    assert found.best <= math.log(3) + 1e-9
    with pytest.raises(UserError, match="at least two"):
        search_ensemble_spread(models[:1], region)


def test_region_checks_and_json() -> None:
    with pytest.raises(UserError, match="eps"):
        Region.ball(torch.zeros(1, 2), -1.0)
    with pytest.raises(UserError, match="empty"):
        Region.box(torch.ones(2), torch.zeros(2))
    with pytest.raises(UserError, match="finite"):
        Region.box(torch.zeros(2), torch.full((2,), math.inf))
    a, b = _mlp(0), _mlp(1)
    result = search_disagreement(
        a, b, Region.ball(torch.zeros(2, 6), 0.5), "js", restarts=2, steps=2, top_k=3
    )
    data = json.loads(json.dumps(result.to_dict()))
    assert data["method"] == "pgd" and len(data["top"]) == 3 and len(data["top"][0]["input"]) == 6
    assert data["evaluations"] == pgd_evaluations(2, 2, 2) and len(data["best_per_point"]) == 2
