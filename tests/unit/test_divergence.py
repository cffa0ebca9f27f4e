"""The one definition of KL / JS / TV / entropy: hand computations, scipy, and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy as scipy_entropy

from attractor.measure import divergence as dv
from attractor.measure import function
from attractor.measure.lm_compare import position_stats
from attractor.search import objectives

D = torch.float64


def _logp(*probs: float) -> torch.Tensor:
    return torch.tensor(probs, dtype=D).log()


def test_by_hand() -> None:
    # p = (1/2, 1/2), q = (1/4, 3/4).
    p, q = _logp(0.5, 0.5), _logp(0.25, 0.75)
    assert float(dv.kl(p, q)) == pytest.approx(0.5 * math.log(4 / 3), abs=1e-15)
    assert float(dv.kl(q, p)) == pytest.approx(
        0.25 * math.log(0.5) + 0.75 * math.log(1.5), abs=1e-15
    )
    assert float(dv.symmetric_kl(p, q)) == pytest.approx(
        float(dv.kl(p, q) + dv.kl(q, p)), abs=1e-15
    )
    assert float(dv.tv(p, q)) == pytest.approx(0.25, abs=1e-15)
    assert float(dv.entropy(p)) == pytest.approx(math.log(2), abs=1e-15)
    # m = (3/8, 5/8): JS = (KL(p||m) + KL(q||m)) / 2.
    m = (3 / 8, 5 / 8)
    by_hand = 0.5 * sum(
        a * math.log(a / b) for a, b in zip((0.5, 0.5), m, strict=True)
    ) + 0.5 * sum(a * math.log(a / b) for a, b in zip((0.25, 0.75), m, strict=True))
    assert float(dv.js(p, q)) == pytest.approx(by_hand, abs=1e-15)
    # Disjoint supports: JS = ln 2, TV = 1 (a zero probability as a very negative log).
    a, b = torch.tensor([0.0, -800.0], dtype=D), torch.tensor([-800.0, 0.0], dtype=D)
    assert float(dv.js(a, b)) == pytest.approx(math.log(2), abs=1e-12)
    assert float(dv.tv(a, b)) == pytest.approx(1.0, abs=1e-12)


def test_against_scipy() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(2, 20, 7, generator=gen, dtype=D)
    logp = dv.log_probs(logits)
    p = logp.exp().numpy()
    js_scipy = jensenshannon(p[0], p[1], axis=-1) ** 2  # natural log by default
    np.testing.assert_allclose(dv.js(logp[0], logp[1]).numpy(), js_scipy, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(
        dv.kl(logp[0], logp[1]).numpy(), scipy_entropy(p[0], p[1], axis=-1), rtol=1e-10
    )
    np.testing.assert_allclose(
        dv.entropy(logp[0]).numpy(), scipy_entropy(p[0], axis=-1), rtol=1e-10
    )


def test_mutual_information_of_two_is_js_and_shape() -> None:
    gen = torch.Generator().manual_seed(1)
    logp = dv.log_probs(torch.randn(2, 5, 4, generator=gen, dtype=D))
    torch.testing.assert_close(
        dv.mutual_information(logp), dv.js(logp[0], logp[1]), rtol=0, atol=1e-14
    )
    many = dv.log_probs(torch.randn(6, 5, 4, generator=gen, dtype=D))
    mean_kl = dv.kl(many, dv.log_mean(many)).mean(0)
    torch.testing.assert_close(dv.mutual_information(many), mean_kl, rtol=0, atol=1e-14)
    assert bool((dv.mutual_information(many) <= math.log(6)).all())


def test_every_caller_computes_the_same_quantities() -> None:
    """The all-pairs matrices, the search objectives and the LM position stats agree with the
    definitions.
    """
    gen = torch.Generator().manual_seed(2)
    logits = 2 * torch.randn(4, 9, 6, generator=gen, dtype=D)
    logp, probs = dv.log_probs(logits), function.probabilities(logits)
    js_matrix = function.pairwise_js(probs, per_example=True)
    skl_matrix = function.pairwise_symmetric_kl(probs, per_example=True)
    for i in range(4):
        for j in range(4):
            torch.testing.assert_close(
                js_matrix[i, j], dv.js(logp[i], logp[j]).clamp_min(0), rtol=0, atol=1e-13
            )
            torch.testing.assert_close(
                skl_matrix[i, j], dv.symmetric_kl(logp[i], logp[j]).clamp_min(0), rtol=0, atol=1e-12
            )
    torch.testing.assert_close(
        objectives.js(logits[0], logits[1]), dv.js(logp[0], logp[1]), rtol=0, atol=0
    )
    stats = position_stats(logits[0], logits[1])
    torch.testing.assert_close(stats["tv"], dv.tv(logp[0], logp[1]), rtol=0, atol=0)
    torch.testing.assert_close(stats["kl_ab"], dv.kl(logp[0], logp[1]).clamp_min(0), rtol=0, atol=0)


_distributions = st.integers(min_value=2, max_value=8).flatmap(
    lambda c: st.tuples(
        st.lists(st.floats(-30, 30, allow_nan=False), min_size=c, max_size=c),
        st.lists(st.floats(-30, 30, allow_nan=False), min_size=c, max_size=c),
    )
)


@settings(max_examples=200, deadline=None)
@given(_distributions)
def test_properties(pair: tuple[list[float], list[float]]) -> None:
    p = dv.log_probs(torch.tensor(pair[0], dtype=D))
    q = dv.log_probs(torch.tensor(pair[1], dtype=D))
    assert float(dv.kl(p, p)) == pytest.approx(0.0, abs=1e-12)
    assert float(dv.kl(p, q)) >= -1e-12
    assert float(dv.js(p, q)) == pytest.approx(float(dv.js(q, p)), abs=1e-12)
    assert -1e-12 <= float(dv.js(p, q)) <= math.log(2) + 1e-12
    assert float(dv.js(p, p)) == pytest.approx(0.0, abs=1e-12)
    assert -1e-12 <= float(dv.tv(p, q)) <= 1 + 1e-12
    assert float(dv.tv(p, q)) == pytest.approx(float(dv.tv(q, p)), abs=1e-15)
    assert float(dv.symmetric_kl(p, q)) == pytest.approx(
        float(dv.symmetric_kl(q, p)), abs=1e-9, rel=1e-12
    )
    # Pinsker: TV <= sqrt(KL / 2); JS <= TV ln 2 (Lin 1991).
    # (sqrt turns the ~1e-16 round-off of a near-zero KL into ~1e-8.)
    assert float(dv.tv(p, q)) <= math.sqrt(max(float(dv.kl(p, q)), 0.0) / 2) + 1e-7
    assert float(dv.js(p, q)) <= float(dv.tv(p, q)) * math.log(2) + 1e-12


def test_gradients_stay_finite_when_saturated() -> None:
    a = torch.tensor([[1000.0, 0.0, -1000.0]], dtype=D, requires_grad=True)
    b = torch.tensor([[-1000.0, 0.0, 1000.0]], dtype=D)
    for fn in (dv.kl, dv.js, dv.symmetric_kl, dv.tv):
        (grad,) = torch.autograd.grad(fn(dv.log_probs(a), dv.log_probs(b)).sum(), a)
        assert bool(torch.isfinite(grad).all()), fn.__name__
