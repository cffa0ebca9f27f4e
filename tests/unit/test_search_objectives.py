"""Disagreement objectives against hand computations and the function-space metrics."""

from __future__ import annotations

import math

import pytest
import torch

from attractor.errors import UserError
from attractor.measure import function
from attractor.search.objectives import (
    ENSEMBLE_OBJECTIVES,
    OBJECTIVES,
    get_ensemble_objective,
    get_objective,
    js,
    kl,
    logit_diff,
    logit_spread,
    margin,
    margin_ab,
    mean_pairwise_js,
    mutual_information,
    symmetric_kl,
)

pytestmark = pytest.mark.usefixtures("one_thread")

D = torch.float64


def _pair(n: int = 7, c: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(n, c, generator=gen, dtype=D), 2 * torch.randn(
        n, c, generator=gen, dtype=D
    )


def test_kl_by_hand() -> None:
    # p = (1/2, 1/2), q = (1/4, 3/4): KL(p||q) = 1/2 ln 2 + 1/2 ln(2/3) = 1/2 ln(4/3).
    a, b = torch.tensor([[0.0, 0.0]], dtype=D), torch.tensor([[0.0, math.log(3)]], dtype=D)
    assert float(kl(a, b)) == pytest.approx(0.5 * math.log(4 / 3), abs=1e-12)
    reverse = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)  # KL(q||p)
    assert float(kl(b, a)) == pytest.approx(reverse, abs=1e-12)
    assert float(symmetric_kl(a, b)) == pytest.approx(0.5 * math.log(4 / 3) + reverse, abs=1e-12)
    m = torch.tensor([3 / 8, 5 / 8], dtype=D)
    p, q = torch.tensor([0.5, 0.5], dtype=D), torch.tensor([0.25, 0.75], dtype=D)
    by_hand = 0.5 * float((p * (p / m).log()).sum() + (q * (q / m).log()).sum())
    assert float(js(a, b)) == pytest.approx(by_hand, abs=1e-12)


def test_identical_models_score_zero_and_shift_does_not_matter() -> None:
    a, _ = _pair()
    for name in ("kl", "symmetric_kl", "js", "logit"):
        assert torch.allclose(OBJECTIVES[name](a, a), torch.zeros(len(a), dtype=D), atol=1e-12), (
            name
        )
    # Divergences and margins see probabilities / within-model gaps: a constant shift is invisible.
    for name in ("kl", "js", "margin", "margin_ab"):
        assert torch.allclose(OBJECTIVES[name](a, a + 3.0), OBJECTIVES[name](a, a), atol=1e-12), (
            name
        )


def test_values_match_the_function_space_metrics() -> None:
    a, b = _pair()
    probs = function.probabilities(torch.stack([a, b]))
    assert torch.allclose(js(a, b), function.pairwise_js(probs, per_example=True)[0, 1], atol=1e-12)
    assert torch.allclose(
        symmetric_kl(a, b),
        function.pairwise_symmetric_kl(probs, per_example=True)[0, 1],
        atol=1e-12,
    )
    logits = torch.randn(4, 6, 3, generator=torch.Generator().manual_seed(1), dtype=D)
    many = function.probabilities(logits)
    assert torch.allclose(
        mutual_information(logits), function.mutual_information(many, per_example=True), atol=1e-12
    )
    assert torch.allclose(
        mutual_information(logits), function.kl_to_mean(many, per_example=True).mean(0), atol=1e-12
    )
    pairs = function.pairwise_js(many, per_example=True)  # [m, m, n]
    assert torch.allclose(
        mean_pairwise_js(logits),
        pairs[torch.triu(torch.ones(4, 4, dtype=torch.bool), 1)].mean(0),
        atol=1e-12,
    )


def test_js_is_at_most_ln2_and_saturated_inputs_keep_finite_gradients() -> None:
    a = torch.tensor([[1000.0, -1000.0], [0.0, 0.0]], dtype=D, requires_grad=True)
    b = torch.tensor([[-1000.0, 1000.0], [0.0, 0.0]], dtype=D, requires_grad=True)
    score = js(a, b)
    assert float(score[0].detach()) == pytest.approx(math.log(2), abs=1e-12)
    a2, b2 = _pair(n=200, c=3, seed=4)
    assert bool((js(10 * a2, 10 * b2) <= math.log(2) + 1e-12).all())
    for name in OBJECTIVES:
        # margin_ab depends on A only through its argmax: no gradient in A, hence allow_unused.
        grads = torch.autograd.grad(OBJECTIVES[name](a, b).sum(), (a, b), allow_unused=True)
        assert all(g is None or bool(torch.isfinite(g).all()) for g in grads), name


def test_logit_differences() -> None:
    a = torch.tensor([[1.0, 5.0, -2.0]], dtype=D)
    b = torch.tensor([[2.0, 1.0, -2.5]], dtype=D)
    assert float(logit_diff(a, b)) == 4.0
    assert float(get_objective("logit:0")(a, b)) == 1.0
    assert float(get_objective("logit:2")(a, b)) == 0.5
    with pytest.raises(UserError, match="class 3"):
        get_objective("logit:3")(a, b)
    with pytest.raises(UserError, match="class id"):
        get_objective("logit:x")


def test_margin_by_hand() -> None:
    a = torch.tensor([[2.0, 0.0, 0.0]], dtype=D)  # top class 0
    b = torch.tensor([[0.0, 1.0, 0.0]], dtype=D)  # top class 1
    assert float(margin_ab(a, b)) == 1.0  # B prefers class 1 to A's class 0 by 1
    assert float(margin_ab(b, a)) == 2.0  # A prefers class 0 to B's class 1 by 2
    assert float(margin(a, b)) == 1.0  # the gap closest to zero: B's
    agree = torch.tensor([[0.0, 3.0, 1.0]], dtype=D)
    assert float(margin(agree, b)) == -1.0  # both pick class 1; B's own margin 1 is the smaller


def test_margin_is_positive_iff_argmaxes_differ() -> None:
    a, b = _pair(n=500, c=4, seed=2)
    differ = a.argmax(-1) != b.argmax(-1)
    assert bool(differ.any() and (~differ).any())
    assert torch.equal(margin(a, b) > 0, differ)
    assert torch.equal(margin_ab(a, b) > 0, differ)
    assert torch.equal(margin(a, b), margin(b, a))


def test_ensemble_objectives() -> None:
    a, b = _pair()
    pair = torch.stack([a, b])
    assert torch.allclose(mutual_information(pair), js(a, b), atol=1e-12)
    assert torch.allclose(mean_pairwise_js(pair), js(a, b), atol=1e-12)
    assert torch.allclose(logit_spread(pair), logit_diff(a, b))
    same = torch.stack([a, a, a])
    assert torch.allclose(mutual_information(same), torch.zeros(len(a), dtype=D), atol=1e-12)
    spread = torch.tensor([[[0.0, 1.0]], [[3.0, 0.0]], [[1.0, -1.0]]], dtype=D)  # [3, 1, 2]
    assert float(logit_spread(spread)) == 3.0
    with pytest.raises(UserError, match="at least two"):
        mean_pairwise_js(a[None])


def test_registries_list_their_names_on_a_typo() -> None:
    assert get_objective("js") is js
    assert get_ensemble_objective("mi") is mutual_information
    with pytest.raises(UserError, match="choose one of: kl, symmetric_kl, js") as exc:
        get_objective("jss")
    assert "\n" not in str(exc.value)
    with pytest.raises(UserError, match=", ".join(ENSEMBLE_OBJECTIVES)):
        get_ensemble_objective("variance")
