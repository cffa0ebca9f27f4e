"""The one definition of the divergences between predicted distributions: KL, JS, TV, entropy.

Every function takes **log-probabilities** ``logp [..., C]`` (classes, or vocabulary, last;
leading dimensions broadcast) and returns ``[...]``, in float64 when given float64.
Logarithms are natural, so divergences are in **nats**: ``0 <= JS <= ln 2``,
``0 <= TV <= 1``, ``KL >= 0`` (unbounded). Working on log-probabilities keeps every value
finite and every gradient defined when a softmax saturates (a probability that rounds to 0
still has a finite log), which is where a search for disagreement drives its inputs.
Results are not clamped: round-off can leave a divergence of identical inputs at ``-1e-17``;
callers that report values clamp them.

    logp, logq = log_probs(logits_a), log_probs(logits_b)   # [n, C] each
    js(logp, logq)                                          # [n], nats
    mutual_information(log_probs(logits_members))           # [m, n, C] -> [n]

The all-pairs matrices of :mod:`attractor.measure.function` compute the same quantities
for every pair of members at once (tests check them against these definitions).

References:
    Kullback & Leibler (1951), "On Information and Sufficiency" (KL; its symmetrized form
    is Jeffreys' divergence); Lin (1991), "Divergence measures based on the Shannon
    entropy", IEEE Trans. Inf. Theory (Jensen-Shannon); Depeweg et al. (2018),
    "Decomposition of Uncertainty in Bayesian Deep Learning" (ensemble mutual information).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LN2 = math.log(2.0)
_TINY = torch.finfo(torch.float64).tiny


def log_probs(logits: Tensor) -> Tensor:
    """``log_softmax`` over the last dimension, in float64: ``[..., C] -> [..., C]``."""
    return torch.log_softmax(logits.to(torch.float64), dim=-1)


def log_of_probs(probs: Tensor) -> Tensor:
    """Log-probabilities of probabilities ``[..., C]``; an exact 0 is read as the tiniest float64.

    Softmax of finite float64 logits gives exact zeros only for logit gaps above ~745, so
    the stand-in changes no divergence above ~1e-305.
    """
    return probs.to(torch.float64).clamp_min(_TINY).log()


def _neg_entropy(logp: Tensor) -> Tensor:
    """``sum_c p log p`` over the last dimension."""
    return (logp.exp() * logp).sum(-1)


def entropy(logp: Tensor) -> Tensor:
    """Shannon entropy ``H(p) = -sum_c p_c log p_c`` in nats: ``[..., C] -> [...]``."""
    return -_neg_entropy(logp)


def kl(logp: Tensor, logq: Tensor) -> Tensor:
    """``KL(p || q) = sum_c p_c (log p_c - log q_c)`` in nats: ``[..., C], [..., C] -> [...]``."""
    return (logp.exp() * (logp - logq)).sum(-1)


def symmetric_kl(logp: Tensor, logq: Tensor) -> Tensor:
    """Jeffreys' divergence ``KL(p||q) + KL(q||p) = sum_c (p_c - q_c)(log p_c - log q_c)``."""
    return ((logp.exp() - logq.exp()) * (logp - logq)).sum(-1)


def js(logp: Tensor, logq: Tensor) -> Tensor:
    """Jensen-Shannon divergence ``(KL(p || m) + KL(q || m)) / 2``, ``m = (p + q) / 2``, in nats.

    Symmetric, 0 for equal distributions and at most ``ln 2`` (disjoint supports):
    ``[..., C], [..., C] -> [...]``. ``log m`` is a ``logaddexp``, finite wherever either is.
    """
    log_mix = torch.logaddexp(logp, logq) - LN2
    return 0.5 * kl(logp, log_mix) + 0.5 * kl(logq, log_mix)


def tv(logp: Tensor, logq: Tensor) -> Tensor:
    """Total variation distance ``sum_c |p_c - q_c| / 2``, in ``[0, 1]``: ``[..., C] -> [...]``."""
    return 0.5 * (logp.exp() - logq.exp()).abs().sum(-1)


def log_mean(logp: Tensor, dim: int = 0) -> Tensor:
    """Log of the mean distribution over ``dim`` (a ``logsumexp``): ``[m, ..., C] -> [..., C]``."""
    return torch.logsumexp(logp, dim=dim) - math.log(logp.shape[dim])


def mutual_information(logp: Tensor, dim: int = 0) -> Tensor:
    """Ensemble mutual information ``H(mean_i p_i) - mean_i H(p_i)``: ``[m, ..., C] -> [...]``.

    The mean ``KL(p_i || mean_j p_j)`` of the members (along ``dim``) to their mean
    distribution, the epistemic part of the predictive entropy; at most ``ln m``. For two
    members it is their Jensen-Shannon divergence.
    """
    return entropy(log_mean(logp, dim)) + _neg_entropy(logp).mean(dim)


__all__ = [
    "LN2",
    "entropy",
    "js",
    "kl",
    "log_mean",
    "log_of_probs",
    "log_probs",
    "mutual_information",
    "symmetric_kl",
    "tv",
]
