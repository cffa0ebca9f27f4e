"""Spread in function space: how differently do the members predict on the same inputs?

Pure tensor functions. Inputs are ``logits [members, batch, classes]`` or probabilities
of the same shape (``targets [batch]`` where a score needs them); everything is computed
in float64. Pair metrics are vectorized over all pairs at once (matmuls and
broadcasting, no Python loop over pairs) and return ``[members, members]`` matrices, or
``[members, members, batch]`` per-example matrices with ``per_example=True`` so that the
multi-bootstrap (:mod:`attractor.measure.bootstrap`) can resample examples.

The divergences are those of :mod:`attractor.measure.divergence` (natural logarithms:
nats, Jensen-Shannon at most ``ln 2``); the pair matrices here compute them for all pairs
at once (tests check every entry against the one-pair definitions). A probability that is
exactly zero is read as the smallest positive float64 inside logarithms
(:func:`~attractor.measure.divergence.log_of_probs`), so KL divergences stay finite.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attractor.measure import divergence
from attractor.measure.divergence import log_of_probs

# Bytes of one chunk of the [rows, members, batch, classes] Jensen-Shannon intermediates
# (two buffers; at least one row each): small enough to stay near the caches, far below 1 GB.
CHUNK_BYTES = 4 << 20
_TINY = torch.finfo(torch.float64).tiny


def probabilities(logits: Tensor) -> Tensor:
    """Softmax in float64: ``logits [members, batch, classes]`` -> same shape."""
    return torch.softmax(logits.to(torch.float64), dim=-1)


def per_example_loss_accuracy(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-entropy and 0/1 correctness of every member on every example.

    Args:
        logits: ``[members, batch, classes]``.
        targets: ``[batch]`` class ids.

    Returns:
        ``(loss [members, batch], correct [members, batch])``, float64.
    """
    log_probs = F.log_softmax(logits.to(torch.float64), dim=-1)
    index = targets.long().view(1, -1, 1).expand(log_probs.shape[0], -1, 1)
    loss = -log_probs.gather(-1, index).squeeze(-1)
    correct = (logits.argmax(-1) == targets.view(1, -1)).to(torch.float64)
    return loss, correct


def per_member_loss_accuracy(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy and argmax accuracy of each member: ``([members], [members])``."""
    loss, correct = per_example_loss_accuracy(logits, targets)
    return loss.mean(-1), correct.mean(-1)


def pairwise_disagreement(predictions: Tensor, per_example: bool = False) -> Tensor:
    """Share of inputs on which members i and j predict different classes (churn).

    Args:
        predictions: ``[members, batch]`` predicted class ids.
        per_example: return the 0/1 indicator per example instead of its mean.

    Returns:
        ``[members, members]`` (or ``[members, members, batch]``), float64, zero diagonal.

    References:
        Fort, Hu & Lakshminarayanan (2019), "Deep Ensembles: A Loss Landscape Perspective".
    """
    if per_example:
        return (predictions.unsqueeze(0) != predictions.unsqueeze(1)).to(torch.float64)
    # Agreement counts as one matmul of one-hot predictions: [m, b*C] @ [b*C, m].
    onehot = F.one_hot(predictions.long(), int(predictions.max()) + 1).to(torch.float64)
    flat = onehot.reshape(onehot.shape[0], -1)
    return 1.0 - flat @ flat.T / predictions.shape[1]


def pairwise_js(probs: Tensor, per_example: bool = False) -> Tensor:
    """Jensen-Shannon divergence between the predictions of members i and j.

    ``JS(p, q) = H((p + q) / 2) - (H(p) + H(q)) / 2`` per example, in nats; symmetric,
    zero for equal predictions and at most ``ln 2`` (disjoint supports).

    Args:
        probs: ``[members, batch, classes]`` probabilities.
        per_example: return ``[members, members, batch]`` instead of the mean over examples.

    Returns:
        ``[members, members]`` (or ``[members, members, batch]``), float64, zero diagonal.

    References:
        Lin (1991), "Divergence measures based on the Shannon entropy", IEEE Trans. Inf. Theory.
    """
    p = probs.to(torch.float64)
    m, b, c = p.shape
    # With N(x) = sum_c x log x and S = p + q = 2M: JS = (N(2p) + N(2q)) / 4 - N(S) / 2 (the
    # ln 2 terms cancel). N(2p) goes through the same ops as N(S) with S = p + p, so
    # identical members give exactly 0; zeros are clamped to the tiniest float (no log 0).
    p = p.clamp_min(_TINY)
    two_p = p + p
    neg_h_two = two_p.log().mul_(two_p).sum(-1)  # N(2p), [m, b]
    out = p.new_zeros((m, m, b) if per_example else (m, m))
    rows = max(1, CHUNK_BYTES // max(1, m * b * c * 8))
    mix, log_mix = p.new_empty(rows * m * b * c), p.new_empty(rows * m * b * c)
    # Only the upper triangle j >= i is computed and mirrored. The cost is one float64 log
    # per pair, example and class (the same count as a loop over pairs); the other passes
    # write into preallocated buffers so that chunks stay in cache.
    for start in range(0, m, rows):
        stop = min(m, start + rows)
        shape = (stop - start, m - start, b, c)
        total = shape[0] * shape[1] * b * c
        s, log_s = mix[:total].view(shape), log_mix[:total].view(shape)
        torch.add(p[start:stop, None], p[None, start:], out=s)
        torch.log(s, out=log_s)
        neg_h_mix = log_s.mul_(s).sum(-1)  # N(S), [rows, m - start, b]
        block = (neg_h_two[start:stop, None] + neg_h_two[None, start:]).mul_(0.25)
        block = block.sub_(neg_h_mix.mul_(0.5)).clamp_min_(0.0)
        block = block if per_example else block.mean(-1)
        out[start:stop, start:] = block
        out[start:, start:stop] = block.transpose(0, 1)
    out.diagonal(dim1=0, dim2=1).zero_()
    return out


def pairwise_symmetric_kl(probs: Tensor, per_example: bool = False) -> Tensor:
    """Symmetric KL divergence ``KL(p_i || p_j) + KL(p_j || p_i)`` between members, in nats.

    Expanded as ``sum p_i log p_i + sum p_j log p_j - sum p_i log p_j - sum p_j log p_i``,
    whose cross terms are one matmul over classes (and examples, for the mean).

    Args:
        probs: ``[members, batch, classes]`` probabilities.
        per_example: return ``[members, members, batch]`` instead of the mean over examples.

    Returns:
        ``[members, members]`` (or ``[members, members, batch]``), float64, zero diagonal.

    References:
        Kullback & Leibler (1951), "On Information and Sufficiency" (the symmetrized form is
        Jeffreys' divergence).
    """
    p = probs.to(torch.float64)
    log_p = log_of_probs(p)
    # sum_c p_i log p_i is read off the diagonal of the same product as the cross terms, so
    # identical members cancel to rounding (~1e-16; exactly 0 for small ensembles).
    if per_example:
        cross = torch.einsum("ibc,jbc->ijb", p, log_p)  # sum_c p_i log p_j, [m, m, b]
        neg_h = cross.diagonal(dim1=0, dim2=1).T  # [m, b]
        out = neg_h[:, None] + neg_h[None, :] - cross - cross.transpose(0, 1)
    else:
        m = p.shape[0]
        cross = p.reshape(m, -1) @ log_p.reshape(m, -1).T / p.shape[1]
        neg_h = cross.diagonal()
        out = neg_h[:, None] + neg_h[None, :] - cross - cross.T
    out = out.clamp_min(0.0)
    out.diagonal(dim1=0, dim2=1).zero_()
    return out


def pairwise_metrics(logits: Tensor, per_example: bool = False) -> dict[str, Tensor]:
    """Disagreement, Jensen-Shannon and symmetric KL between all pairs of members.

    Args:
        logits: ``[members, batch, classes]``.
        per_example: per-example ``[members, members, batch]`` matrices instead of means.

    Returns:
        ``{"disagreement", "js", "symmetric_kl"}`` -> ``[members, members]`` (or with batch).

    References:
        Fort et al. (2019) (disagreement); Lin (1991) (Jensen-Shannon).
    """
    probs = probabilities(logits)
    return {
        "disagreement": pairwise_disagreement(logits.argmax(-1), per_example),
        "js": pairwise_js(probs, per_example),
        "symmetric_kl": pairwise_symmetric_kl(probs, per_example),
    }


def kl_to_mean(probs: Tensor, per_example: bool = False) -> Tensor:
    """``KL(p_i || p_mean)`` of each member to the ensemble's mean prediction.

    Its mean over members is the ensemble's mutual information (:func:`mutual_information`).

    Args:
        probs: ``[members, batch, classes]`` probabilities.
        per_example: return ``[members, batch]`` instead of the mean over examples.

    Returns:
        ``[members]`` (or ``[members, batch]``), float64.

    References:
        Lakshminarayanan, Pritzel & Blundell (2017), "Simple and Scalable Predictive
        Uncertainty Estimation using Deep Ensembles".
    """
    p = probs.to(torch.float64)
    kl = divergence.kl(log_of_probs(p), log_of_probs(p.mean(0, keepdim=True))).clamp_min(0.0)
    return kl if per_example else kl.mean(-1)


def mutual_information(probs: Tensor, per_example: bool = False) -> Tensor:
    """Epistemic uncertainty of the ensemble: entropy of the mean minus the mean entropy.

    ``I = H(mean_i p_i) - mean_i H(p_i)`` per example, the part of the predictive entropy
    that comes from members disagreeing (the rest, ``mean_i H(p_i)``, is aleatoric).

    Args:
        probs: ``[members, batch, classes]`` probabilities.
        per_example: return ``[batch]`` instead of the mean over examples.

    Returns:
        A float64 scalar tensor (or ``[batch]``).

    References:
        Depeweg et al. (2018), "Decomposition of Uncertainty in Bayesian Deep Learning for
        Efficient and Risk-sensitive Learning".
    """
    info = divergence.mutual_information(log_of_probs(probs)).clamp_min(0.0)
    return info if per_example else info.mean()


def ensemble_correct(logits: Tensor, targets: Tensor) -> Tensor:
    """0/1 correctness per example of the ensemble's mean probabilities: ``[batch]``.

    References:
        Lakshminarayanan, Pritzel & Blundell (2017), "Simple and Scalable Predictive
        Uncertainty Estimation using Deep Ensembles" (averaging probabilities).
    """
    return (probabilities(logits).mean(0).argmax(-1) == targets).to(torch.float64)


def ensemble_accuracy(logits: Tensor, targets: Tensor) -> dict[str, float]:
    """Accuracy and loss of the ensemble (mean probabilities) against the average member.

    Args:
        logits: ``[members, batch, classes]``.
        targets: ``[batch]`` class ids.

    Returns:
        ``ensemble_accuracy``, ``mean_member_accuracy``, ``ensemble_loss`` (cross-entropy of
        the mean probabilities) and ``mean_member_loss``.

    References:
        Lakshminarayanan, Pritzel & Blundell (2017), "Simple and Scalable Predictive
        Uncertainty Estimation using Deep Ensembles".
    """
    loss, accuracy = per_member_loss_accuracy(logits, targets)
    mean_probs = probabilities(logits).mean(0)
    ensemble_loss = -log_of_probs(mean_probs.gather(-1, targets.long().view(-1, 1))).mean()
    return {
        "ensemble_accuracy": float(ensemble_correct(logits, targets).mean()),
        "mean_member_accuracy": float(accuracy.mean()),
        "ensemble_loss": float(ensemble_loss),
        "mean_member_loss": float(loss.mean()),
    }
