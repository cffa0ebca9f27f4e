"""Representation space: linear CKA between members' activations at named layers.

    acts = collect_activations(ens, ens.task.x_test, "1")   # {"1": [members, n, d]}
    pairwise_cka(acts["1"])                                  # [members, members]

(:func:`~attractor.measure.activations.collect_activations` takes the activations.)

Conv layers: feature maps ``[n, C, H, W]`` are compared flattened to ``[n, C * H * W]``
(each channel at each position a feature), as Kornblith et al. (2019) compare the layers of
conv nets; linear CKA is invariant to orthogonal transformations of the features, so two
nets whose channels differ only by a permutation score 1. Flattening keeps every feature, so
memory grows with ``n * C * H * W``: pass fewer examples or name fewer layers for big maps.

Two estimators of the same population quantity (HSIC with linear kernels, normalized):

* ``debiased=False``: the biased HSIC estimator ``tr(K H L H) / (n - 1)^2`` of Gretton et
  al. (2005), as in Kornblith et al. (2019). Always in ``[0, 1]``; 1 for identical
  representations; biased upwards for finite ``n`` (two independent random
  representations score well above 0 when ``d`` is not small against ``n``).
* ``debiased=True``: the unbiased HSIC estimator of Song et al. (2012), as in the
  ``debiased`` option of Kornblith et al.'s reference code and in Nguyen et al. (2021).
  Unbiased for HSIC (the ratio is still only consistent); can fall slightly below 0.

The two differ by a few thousandths on digits-mlp members (the issue's planning run saw
~0.005; 6 members with hidden [128, 128] after 5 epochs, on the 360 test examples, gave
0.9683 biased vs 0.9675 debiased at the first hidden layer), so always say which one a
number is.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attractor.measure.activations import collect_activations
from attractor.runs.ensemble import Ensemble

__all__ = ["linear_cka", "member_cka", "pairwise_cka"]


# ---- estimators ----------------------------------------------------------------------
def _hsic(cross: Tensor, rows_x: Tensor, rows_y: Tensor, n: int, debiased: bool) -> Tensor:
    """HSIC up to a factor that cancels in CKA, from centered features.

    Args:
        cross: ``||X^T Y||_F^2 = <K, L>_F`` for centered ``X``, ``Y``: ``[...]``.
        rows_x: diagonal of ``K = X X^T``: ``[..., n]`` (so ``rows_x.sum(-1) = tr K``).
        rows_y: diagonal of ``L``: ``[..., n]``.
    """
    if not debiased:
        return cross
    # Song et al.'s estimator with the diagonals of K, L zeroed; centered features make
    # K 1 = 0, which collapses its three terms into this form (Kornblith et al.'s code).
    dot = (rows_x * rows_y).sum(-1)
    return cross - n / (n - 2) * dot + rows_x.sum(-1) * rows_y.sum(-1) / ((n - 1) * (n - 2))


def _check_n(n: int, debiased: bool) -> None:
    need = 4 if debiased else 2
    if n < need:
        raise ValueError(
            f"{'debiased' if debiased else 'biased'} CKA needs at least {need} examples, got {n}"
        )


def linear_cka(x: Tensor, y: Tensor, debiased: bool = False) -> float:
    """Linear CKA between two representations of the same ``n`` examples.

    Args:
        x: ``[n, d1]`` (trailing dims are flattened).
        y: ``[n, d2]``.
        debiased: use Song et al.'s unbiased HSIC instead of the biased one (module docstring).

    Returns:
        CKA in float64 arithmetic; NaN when either representation is constant over examples.

    References:
        Kornblith et al. (2019), "Similarity of Neural Network Representations Revisited";
        Song et al. (2012), "Feature Selection via Dependence Maximization";
        Nguyen et al. (2021), "Do Wide and Deep Networks Learn the Same Things?".
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must hold the same examples, got {x.shape[0]} and {y.shape[0]} rows"
        )
    n = x.shape[0]
    _check_n(n, debiased)
    x, y = (t.reshape(n, -1).double() for t in (x, y))
    x, y = x - x.mean(0), y - y.mean(0)
    rows_x, rows_y = (x * x).sum(1), (y * y).sum(1)

    def cross(a: Tensor, b: Tensor) -> Tensor:
        # <a a^T, b b^T> = ||a^T b||^2: the cheaper side of the product.
        if n < a.shape[1] * b.shape[1] / (a.shape[1] + b.shape[1]):
            return ((a @ a.T) * (b @ b.T)).sum()
        return (a.T @ b).square().sum()

    xy = _hsic(cross(x, y), rows_x, rows_y, n, debiased)
    xx = _hsic(cross(x, x), rows_x, rows_x, n, debiased)
    yy = _hsic(cross(y, y), rows_y, rows_y, n, debiased)
    return float(xy / (xx * yy).sqrt())


def pairwise_cka(acts: Tensor, debiased: bool = False) -> Tensor:
    """Linear CKA between every pair of members' representations at one layer.

    Args:
        acts: ``[members, n, d]`` (trailing dims are flattened).
        debiased: use Song et al.'s unbiased HSIC (module docstring).

    Returns:
        ``[members, members]`` float64, symmetric; NaN rows for constant representations.
        Memory ``O(members * n * min(n, d))``.

    References:
        Kornblith et al. (2019), "Similarity of Neural Network Representations Revisited".
    """
    m, n = acts.shape[:2]
    _check_n(n, debiased)
    x = acts.reshape(m, n, -1).double()
    x = x - x.mean(1, keepdim=True)
    d = x.shape[2]
    if n <= d:  # through Gram matrices: <K_i, K_j> for all pairs in one matmul
        grams = (x @ x.transpose(1, 2)).reshape(m, n * n)
        cross = grams @ grams.T
    else:  # through feature cross-covariances, one member against all later ones
        cross = torch.empty(m, m, dtype=torch.float64)
        for i in range(m):
            row = (x[i].T.unsqueeze(0) @ x[i:]).square().sum((1, 2))
            cross[i, i:] = row
            cross[i:, i] = row
    rows = (x * x).sum(2)  # [m, n]
    hsic = _hsic(cross, rows.unsqueeze(1), rows.unsqueeze(0), n, debiased)
    self_hsic = hsic.diagonal()
    return hsic / (self_hsic.unsqueeze(0) * self_hsic.unsqueeze(1)).sqrt()


def member_cka(
    ens: Ensemble,
    x: Tensor | None = None,
    layers: list[str] | str | None = None,
    members: list[int] | None = None,
    step: int | None = None,
    debiased: bool = False,
) -> dict[str, Tensor]:
    """Pairwise CKA matrices ``{layer: [members, members]}`` on ``x`` (default the test split).

    ``layers`` default to :func:`~attractor.measure.activations.default_layers` (for a ResNet:
    the stem, each residual block's output, the pooled features).

    References:
        Kornblith et al. (2019), "Similarity of Neural Network Representations Revisited".
    """
    x = ens.task.x_test if x is None else x
    acts = collect_activations(ens, x, layers, members, step)
    return {name: pairwise_cka(a, debiased) for name, a in acts.items()}
