"""Conformance suite for certify methods: every entry of ``certify.METHODS`` gets every check.

A new method is covered by its registry line. Checked on small random ReLU / leaky-ReLU
networks (hypothesis): the bound is sound (no sampled input and no corner of the box
exceeds it), has the documented shape and dtype, contains 0 for identical networks and is
exactly 0 there where the method declares ``exact_when_identical``; a method for one
architecture refuses two; branch and bound with the method stays sound.
"""

from __future__ import annotations

from copy import deepcopy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from attractor.certify import METHODS, CertifyMethod, bound_difference, certify_difference
from attractor.certify.network import Network, ball, to_network
from attractor.errors import UserError
from tests.unit.test_certify import random_mlp as unit_random_mlp

pytestmark = pytest.mark.usefixtures("one_thread")


def random_mlp(seed: int, widths: list[int], slope: float = 0.0) -> nn.Sequential:
    """``Linear, act, ..., Linear`` in float64 with seeded weights (the unit suite's builder)."""
    slopes = [slope] * (len(widths) - 2)
    return unit_random_mlp(torch.Generator().manual_seed(seed), widths, slopes)


def noised(model: nn.Sequential, seed: int, scale: float) -> nn.Sequential:
    """A copy of ``model`` with relative weight noise ``scale`` (same architecture)."""
    copy = deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in copy.parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            p.add_(scale * p.abs().mean() * noise)
    return copy


def attained(a: Network, b: Network, lower: Tensor, upper: Tensor, seed: int) -> Tensor:
    """``b(x) - a(x)`` ``[samples, n, out]`` at uniform samples and every corner of each box."""
    n, d = lower.shape
    gen = torch.Generator().manual_seed(seed)
    corners = torch.cartesian_prod(*[torch.tensor([0.0, 1.0], dtype=torch.float64)] * d)
    fractions = torch.cat(
        [torch.rand(400, d, generator=gen, dtype=torch.float64), corners.reshape(-1, d)]
    )
    x = lower + fractions[:, None, :] * (upper - lower)
    with torch.no_grad():
        return (b(x.reshape(-1, d)) - a(x.reshape(-1, d))).reshape(x.shape[0], n, -1)


@st.composite
def pairs(draw: st.DrawFn) -> dict[str, object]:
    """Two networks of one architecture (a noised copy, or the same) and input boxes."""
    hidden = [draw(st.integers(2, 6)) for _ in range(draw(st.integers(1, 2)))]
    widths = [draw(st.integers(1, 3)), *hidden, draw(st.integers(1, 3))]
    return {
        "seed": draw(st.integers(0, 2**31 - 1)),
        "widths": widths,
        "slope": draw(st.sampled_from([0.0, 0.0, 0.1])),
        "scale": draw(st.sampled_from([0.0, 1e-3, 0.1, 0.5])),
        "eps": draw(st.sampled_from([1e-3, 0.1, 1.0])),
    }


def _networks(case: dict) -> tuple[Network, Network, Tensor, Tensor]:
    model_a = random_mlp(case["seed"], case["widths"], case["slope"])
    model_b = noised(model_a, case["seed"] + 1, case["scale"])
    gen = torch.Generator().manual_seed(case["seed"] + 2)
    centre = 2 * torch.rand(2, case["widths"][0], generator=gen, dtype=torch.float64) - 1
    lower, upper = ball(centre, case["eps"])
    return to_network(model_a), to_network(model_b), lower, upper


@pytest.fixture(params=sorted(METHODS), scope="module")
def method(request: pytest.FixtureRequest) -> str:
    """One registered method name per test instance."""
    return request.param


@pytest.fixture(scope="module")
def spec(method: str) -> CertifyMethod:
    return METHODS[method]


def test_unknown_method_lists_the_known_ones() -> None:
    a = to_network(random_mlp(0, [2, 3, 1]))
    lower, upper = ball(torch.zeros(1, 2, dtype=torch.float64), 0.1)
    with pytest.raises(UserError, match="auto, differential"):
        bound_difference(a, a, lower, upper, "no-such-method")  # type: ignore[arg-type]


class TestCertifyMethod:
    """Every registered method against the contract of a sound bound."""

    @settings(max_examples=12, deadline=None)
    @given(case=pairs())
    def test_sound_on_random_networks(self, method: str, case: dict) -> None:
        a, b, lower, upper = _networks(case)
        low, high = bound_difference(a, b, lower, upper, method)  # type: ignore[arg-type]
        assert low.shape == high.shape == (lower.shape[0], a.out_dim)
        diffs = attained(a, b, lower, upper, case["seed"])
        # Sound in exact arithmetic; float64 rounding may cross by ~1e-17 (certify.network).
        tol = 1e-9 * (1 + diffs.abs().max())
        assert low.dtype == high.dtype == torch.float64 and (low <= high + tol).all()
        assert (diffs <= high + tol).all() and (diffs >= low - tol).all()

    def test_sound_across_architectures_or_refused(self, method: str, spec: CertifyMethod) -> None:
        a, b = to_network(random_mlp(1, [3, 5, 2])), to_network(random_mlp(2, [3, 4, 4, 2], 0.1))
        lower, upper = ball(torch.zeros(2, 3, dtype=torch.float64), 0.5)
        if spec.same_architecture:
            with pytest.raises(UserError):
                bound_difference(a, b, lower, upper, method)  # type: ignore[arg-type]
            return
        low, high = bound_difference(a, b, lower, upper, method)  # type: ignore[arg-type]
        diffs = attained(a, b, lower, upper, 0)
        assert (diffs <= high + 1e-9).all() and (diffs >= low - 1e-9).all()

    @pytest.mark.parametrize("eps", [1e-3, 0.3])
    def test_identical_networks(self, method: str, spec: CertifyMethod, eps: float) -> None:
        a = to_network(random_mlp(3, [3, 6, 6, 2]))
        lower, upper = ball(torch.rand(3, 3, dtype=torch.float64), eps)
        low, high = bound_difference(a, a, lower, upper, method)  # type: ignore[arg-type]
        # Sound in exact arithmetic; float64 rounding may cross 0 by ~1e-17 (certify.network).
        assert (low <= 1e-12).all() and (high >= -1e-12).all()
        if spec.exact_when_identical:
            assert (low == 0).all() and (high == 0).all()

    def test_branch_and_bound_stays_sound(self, method: str) -> None:
        model = random_mlp(4, [2, 5, 2])
        a, b = to_network(model), to_network(noised(model, 5, 0.2))
        lower, upper = ball(torch.zeros(2, 2, dtype=torch.float64), 0.5)
        result = certify_difference(
            a,
            b,
            lower,
            upper,
            method=method,  # type: ignore[arg-type]
            budget_s=2.0,
            max_boxes=40,
        )
        assert result.method == method
        assert (result.lower <= result.upper + 1e-12).all()
        worst = attained(a, b, lower, upper, 0).abs().amax(dim=(0, 2))
        assert (worst <= result.upper + 1e-9).all()
