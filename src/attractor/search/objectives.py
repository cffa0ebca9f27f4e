"""Per-input disagreement scores, differentiable in the inputs: what the search maximizes.

A *pair objective* maps the logits of two models on the same inputs, ``a [n, C]`` and
``b [n, C]``, to one score per input ``[n]``; an *ensemble objective* maps
``logits [m, n, C]`` to ``[n]``. Larger means "disagree more". All scores are computed in
float64 and in nats where they are divergences.

The divergences are those of :mod:`attractor.measure.divergence`, on ``log_softmax``
rather than on probabilities: the function-space metrics of
:mod:`attractor.measure.function` clamp probabilities at the tiniest float, which gives
NaN or zero gradients once a softmax saturates -- exactly where a search drives its
inputs. The values agree with those metrics (tests check it).

    OBJECTIVES["js"](logits_a, logits_b)          # [n]
    get_objective("logit:3")                      # |a[:, 3] - b[:, 3]|
    ENSEMBLE_OBJECTIVES["mi"](logits)             # [m, n, C] -> [n]

References:
    Lin (1991), "Divergence measures based on the Shannon entropy" (Jensen-Shannon);
    Kullback & Leibler (1951), "On Information and Sufficiency";
    Depeweg et al. (2018), "Decomposition of Uncertainty in Bayesian Deep Learning"
    (ensemble mutual information); Carlini & Wagner (2017), "Towards Evaluating the
    Robustness of Neural Networks" (logit margins).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from attractor.errors import UserError
from attractor.measure import divergence
from attractor.measure.divergence import log_probs

#: ``(logits_a [n, C], logits_b [n, C]) -> score [n]``.
PairObjective = Callable[[Tensor, Tensor], Tensor]
#: ``logits [m, n, C] -> score [n]``.
EnsembleObjective = Callable[[Tensor], Tensor]


def kl(a: Tensor, b: Tensor) -> Tensor:
    """``KL(softmax(a) || softmax(b))`` per input, in nats: ``[n, C], [n, C] -> [n]``."""
    return divergence.kl(log_probs(a), log_probs(b))


def symmetric_kl(a: Tensor, b: Tensor) -> Tensor:
    """Jeffreys' divergence ``KL(p || q) + KL(q || p)`` per input, in nats: ``[n] ``."""
    return divergence.symmetric_kl(log_probs(a), log_probs(b))


def mutual_information(logits: Tensor) -> Tensor:
    """Ensemble mutual information ``H(mean_i p_i) - mean_i H(p_i)`` per input: ``[m, n, C] ->
    [n]``.

    Equal to the mean ``KL(p_i || mean_j p_j)`` of members to the ensemble's mean
    prediction; the log of the mean is a ``logsumexp`` of log-probabilities, so it stays
    finite (and its gradient defined) for saturated members. At most ``ln m``.
    """
    return divergence.mutual_information(log_probs(logits))


def js(a: Tensor, b: Tensor) -> Tensor:
    """Jensen-Shannon divergence per input, in nats, in ``[0, ln 2]``: ``[n, C], [n, C] -> [n]``.

    The mutual information of the two-member ensemble ``{p, q}``.
    """
    return divergence.js(log_probs(a), log_probs(b))


def logit_diff(a: Tensor, b: Tensor) -> Tensor:
    """``max_c |a_c - b_c|``: the largest absolute logit difference (what ``certify`` bounds):
    ``[n]``.
    """
    return (a.to(torch.float64) - b.to(torch.float64)).abs().amax(-1)


def class_logit_diff(cls: int) -> PairObjective:
    """``|a_cls - b_cls|``: the absolute logit difference of one class, as a pair objective."""

    def objective(a: Tensor, b: Tensor) -> Tensor:
        if not 0 <= cls < a.shape[-1]:
            raise UserError(
                f"objective 'logit:{cls}' names class {cls}, but the models have {a.shape[-1]} "
                f"classes (0..{a.shape[-1] - 1})"
            )
        return (a[..., cls].to(torch.float64) - b[..., cls].to(torch.float64)).abs()

    return objective


def _rejection(top: Tensor, other: Tensor) -> Tensor:
    """``max_{c != t} other_c - other_t`` with ``t = argmax top``: > 0 iff ``other`` prefers some
    class to ``t``.
    """
    t = top.argmax(-1, keepdim=True)
    other = other.to(torch.float64)
    at_t = other.gather(-1, t).squeeze(-1)
    rest = other.scatter(-1, t, float("-inf")).amax(-1)
    return rest - at_t


def margin_ab(a: Tensor, b: Tensor) -> Tensor:
    """One-sided argmax margin: how strongly B rejects A's top class, in B's logit units: ``[n]``.

    With ``t = argmax_c a_c``: ``max_{c != t} b_c - b_t``. Positive iff B's argmax is not
    ``t``, i.e. iff the two argmaxes differ (for untied argmaxes); negative when they agree,
    by B's margin for the shared class.
    """
    return _rejection(a, b)


def margin(a: Tensor, b: Tensor) -> Tensor:
    """Symmetric argmax-disagreement margin, signed: > 0 iff the argmaxes differ: ``[n]``.

    With the one-sided margins ``m_ab = margin_ab(a, b)`` and ``m_ba = margin_ab(b, a)``
    (``s = argmax a``, ``t = argmax b``): if ``s != t`` both are positive (``b_t - b_s`` and
    ``a_s - a_t``); if ``s == t`` both are negative (minus each model's own margin for
    the shared class). The score is the one closer to zero: the least logit gap that one
    model would have to close to switch the pair between agreeing and disagreeing. It is
    continuous (0 on the boundary), so ascent from agreement moves the model that is
    easiest to flip. Invariant to adding a constant to either model's logits.
    """
    ab, ba = _rejection(a, b), _rejection(b, a)
    return torch.where(ab.abs() <= ba.abs(), ab, ba)


def mean_pairwise_js(logits: Tensor) -> Tensor:
    """Mean Jensen-Shannon divergence over pairs ``i < j``, from logits: ``[m, n, C] -> [n]``.

    (:func:`attractor.measure.function.pairwise_js` is the ``[m, m]`` matrix from
    probabilities, for reporting; this is the per-input score a search ascends.)
    """
    m = logits.shape[0]
    if m < 2:
        raise UserError("the ensemble spread needs at least two models")
    log_p = log_probs(logits)
    js_pairs = divergence.js(log_p[:, None], log_p[None, :])  # [m, m, n]
    upper = torch.triu(torch.ones(m, m, dtype=torch.bool), diagonal=1)
    return js_pairs[upper].mean(0)


def logit_spread(logits: Tensor) -> Tensor:
    """``max_c (max_i z_ic - min_i z_ic)``: the widest range of one logit over members: ``[m, n,
    C] -> [n]``.
    """
    z = logits.to(torch.float64)
    return (z.amax(0) - z.amin(0)).amax(-1)


#: Pair objectives by name (``logit:K`` selects one class, see :func:`get_objective`).
OBJECTIVES: dict[str, PairObjective] = {
    "kl": kl,
    "symmetric_kl": symmetric_kl,
    "js": js,
    "logit": logit_diff,
    "margin": margin,
    "margin_ab": margin_ab,
}

#: Ensemble (spread) objectives by name.
ENSEMBLE_OBJECTIVES: dict[str, EnsembleObjective] = {
    "mi": mutual_information,
    "pairwise_js": mean_pairwise_js,
    "logit": logit_spread,
}


def get_objective(name: str) -> PairObjective:
    """The pair objective ``name`` (``logit:K`` for class ``K``); a :class:`UserError` lists the
    known ones.
    """
    if name.startswith("logit:"):
        cls = name.removeprefix("logit:")
        if not cls.isdigit():
            raise UserError(f"objective {name!r}: give a class id after 'logit:', e.g. 'logit:3'")
        return class_logit_diff(int(cls))
    if name not in OBJECTIVES:
        raise UserError(
            f"unknown objective {name!r}; choose one of: {', '.join(OBJECTIVES)}, logit:CLASS"
        )
    return OBJECTIVES[name]


def get_ensemble_objective(name: str) -> EnsembleObjective:
    """The ensemble objective ``name``; a :class:`UserError` lists the known ones."""
    if name not in ENSEMBLE_OBJECTIVES:
        raise UserError(
            f"unknown ensemble objective {name!r}; choose one of: {', '.join(ENSEMBLE_OBJECTIVES)}"
        )
    return ENSEMBLE_OBJECTIVES[name]
