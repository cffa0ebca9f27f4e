"""Differential bounds: linear bounds on ``Delta = z_b - z_a`` pushed back through both nets at
once.

For two networks of the same architecture, write each layer of ``b`` relative to ``a``:
``Delta_k = W_b,k DeltaA_{k-1} + (W_b,k - W_a,k) a_{k-1} + (b_b,k - b_a,k)``, where
``a_{k-1}`` are net ``a``'s activations and ``DeltaA = sigma(z_a + Delta) - sigma(z_a)``
the difference of the activations. The weight difference enters only through
``W_b - W_a`` (zero for identical nets, tiny for a rounded or noised copy), so the bound on
the difference stays of the size of the difference instead of the size of the outputs.

``g(z, Delta) = sigma(z + Delta) - sigma(z)`` is bounded per neuron by linear functions of
``(z_a, Delta)``, choosing per neuron the relaxation with the smaller worst-case gap:

* *via both nets*: ``L_b(z_a + Delta) - U_a(z_a) <= g <= U_b(z_a + Delta) - L_a(z_a)`` with
  the CROWN lines of each net. Exact when both neurons are stable, including the mixed
  case (``a`` active, ``b`` inactive: ``g = s Delta + (s - 1) z_a`` exactly).
* *via Delta alone* (ReluDiff): ``sigma`` is monotone with slopes in ``[s, 1]``, so ``g`` lies
  between ``s Delta`` and ``Delta``; chords over ``[Delta_l, Delta_u]``, sharpened by
  stable neurons (``b`` active: ``g <= Delta``; ``b`` inactive: ``g <= s Delta``; ``a``
  active: ``g >= Delta``; ``a`` inactive: ``g >= s Delta``). Tight when ``Delta`` is small
  and the neurons unstable.

The objective is pushed back as in CROWN, carrying one coefficient vector on net ``a``'s
activations (relaxed with CROWN's lines) and one on ``DeltaA``, down to a linear function
of the input (``DeltaA`` of the input is 0), then maximized over the box: a NeuroDiff-style
symbolic bound computed backwards. Pre-activation bounds of each net come from CROWN; those
of ``Delta`` from this same procedure, layer by layer, and all are intersected with each
other (``z_b`` within ``z_a + Delta``, ``Delta`` within ``z_b - z_a``). Identical networks
get exactly 0; at a tiny radius every neuron is stable and the bound is the attained
difference up to the box's linear spread.

References:
    Paulsen, Wang, Wang 2020, "ReluDiff: differential verification of deep neural networks"
    (ICSE); Paulsen, Wang, Wang, Wang 2020, "NeuroDiff: scalable differential verification
    of neural networks using fine-grained approximation" (ASE).
"""

from __future__ import annotations

import torch
from torch import Tensor

from attractor.certify.intervals import Bounds
from attractor.certify.linear import concretize, layer_bounds, relaxation
from attractor.certify.network import Layer, Network, same_architecture
from attractor.certify.operators import backward, difference, zero_or_backward
from attractor.errors import UserError

# One neuron's linear bounds on g: g <= uz z_a + ud Delta + uc, g >= lz z_a + ld Delta + lc; its
# gap.
_Relax = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


@torch.no_grad()
def differential_bounds(net_a: Network, net_b: Network, lower: Tensor, upper: Tensor) -> Bounds:
    """Bounds ``(l, u) [n, out_dim]`` on ``net_b(x) - net_a(x)`` over the boxes
    ``lower, upper [n, in_dim]``.

    Raises:
        UserError: if the nets differ in layer shapes or activations (use ``method="linear"``).
    """
    if not same_architecture(net_a, net_b):
        raise UserError(
            "the differential bound needs two networks with the same layer shapes and activations; "
            "use method='linear'"
        )
    return _differential(net_a, net_b, lower.to(torch.float64), upper.to(torch.float64))[0]


@torch.no_grad()
def split_bounds(
    net_a: Network, net_b: Network, lower: Tensor, upper: Tensor, fix: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Branch and bound's view: bounds under ReLU splits, and which neurons to split next.

    Args:
        fix: ``[n, 2, hidden]`` splits of net a (row 0) and b (row 1), hidden layers
            concatenated: +1 active, -1 inactive, 0 free.

    Returns:
        ``low, high [n, out]`` (``+inf, -inf`` where the splits leave no input) and split
        scores ``[n, 2, hidden]``: each unstable neuron's share of the slack in the largest
        output bound (|backward coefficient| x relaxation gap, as BaBSR), 0 for stable ones;
        input scores ``[n, d]``: each input's share of that bound's spread over the box
        (|coefficient| x width), what halving the box along it would remove.
    """
    widths = [layer.weight.shape[0] for layer in net_a.layers[:-1]]
    fix_a, fix_b = list(fix[:, 0].split(widths, dim=-1)), list(fix[:, 1].split(widths, dim=-1))
    slack: list[Tensor] = []
    (low, high), bounds_a, bounds_b = _differential(net_a, net_b, lower, upper, fix_a, fix_b, slack)
    spread = slack.pop() * (upper - lower)
    empty = torch.zeros(low.shape[0], dtype=torch.bool)
    score_a, score_b = [], []
    for k in range(len(widths)):
        unstable = []
        for bounds in (bounds_a, bounds_b):
            lo_k, hi_k = bounds[k]
            empty |= (lo_k > hi_k + 1e-9 * (1 + lo_k.abs() + hi_k.abs())).any(-1)
            unstable.append((lo_k < 0) & (hi_k > 0))
        # Split net a's neuron where it is unstable (b's bounds follow through z_b = z_a + Delta),
        # else b's.
        score_a.append(torch.where(unstable[0], slack[k], 0.0))
        score_b.append(torch.where(~unstable[0] & unstable[1], slack[k], 0.0))
    scores = [torch.cat(score_a, -1), torch.cat(score_b, -1)]
    inf = torch.full_like(low, float("inf"))
    return (
        torch.where(empty[:, None], inf, low),
        torch.where(empty[:, None], -inf, high),
        torch.stack(scores, 1),
        spread,
    )


def _differential(
    net_a: Network,
    net_b: Network,
    lower: Tensor,
    upper: Tensor,
    fix_a: list[Tensor] | None = None,
    fix_b: list[Tensor] | None = None,
    record: list[Tensor] | None = None,
) -> tuple[Bounds, list[Bounds], list[Bounds]]:
    """Output difference bounds and the (mutually tightened) pre-activation bounds of both nets.

    ``record``, when given, receives per hidden layer the worst output bound's slack per
    neuron ``[n, width]`` (|coefficient| x relaxation gap, on DeltaA plus on net a's activation),
    then that bound's |coefficients| on the inputs ``[n, d]``.
    """
    bounds_a = layer_bounds(net_a, lower, upper, fix=fix_a)
    bounds_b = layer_bounds(net_b, lower, upper, fix=fix_b)
    delta: list[Bounds] = []
    relaxes: list[_Relax] = []
    for k in range(len(net_a.layers)):
        width = net_a.layers[k].weight.shape[0]
        last = k == len(net_a.layers) - 1
        (l_a, u_a), (l_b, u_b) = bounds_a[k], bounds_b[k]
        d_l, d_u = l_b - u_a, u_b - l_a
        # Delta is bounded by the backward pass only where a neuron is unstable in either net
        # (and not an identity unit): elsewhere both nets' lines are exact and picked whatever
        # Delta's bounds (see layer_bounds). The outputs are all bounded.
        unstable = ((l_a < 0) & (u_a > 0)) | ((l_b < 0) & (u_b > 0))
        selected = unstable.any(0) & (net_a.layers[k].slope < 1)
        neurons = torch.arange(width) if last else torch.nonzero(selected).flatten()
        if neurons.numel() == 0:
            _tighten(k, bounds_a, bounds_b, delta, relaxes, net_a, (d_l, d_u))
            continue
        eye = torch.eye(width, dtype=torch.float64)[neurons]
        coefficients: list[tuple[Tensor, Tensor]] = []
        lam, const = _backward(
            net_a,
            net_b,
            k,
            relaxes,
            bounds_a,
            torch.cat([eye, -eye]),
            coefficients if last else None,
        )
        up = concretize(lam, const, lower, upper)
        if last and record is not None:
            worst = up.argmax(-1)  # the spec that sets the max |diff| bound
            for j, (lam_d, lam_a) in zip(range(k - 1, -1, -1), coefficients, strict=True):
                rows = torch.arange(up.shape[0])
                gap_a = _gap(*relaxation(*bounds_a[j], net_a.layers[j].slope), *bounds_a[j])
                record.insert(
                    0, lam_d[rows, worst].abs() * relaxes[j][6] + lam_a[rows, worst].abs() * gap_a
                )
            record.append(lam[torch.arange(up.shape[0]), worst].abs())
        m = neurons.numel()
        d_l, d_u = d_l.clone(), d_u.clone()
        d_l[:, neurons] = torch.maximum(-up[:, m:], d_l[:, neurons])
        d_u[:, neurons] = torch.minimum(up[:, :m], d_u[:, neurons])
        _tighten(k, bounds_a, bounds_b, delta, relaxes, net_a, (d_l, d_u))
    d_l, d_u = delta[-1]  # ordered: rounding can cross the ends of an exact bound by ~1e-17
    return (torch.minimum(d_l, d_u), torch.maximum(d_l, d_u)), bounds_a, bounds_b


def _tighten(
    k: int,
    bounds_a: list[Bounds],
    bounds_b: list[Bounds],
    delta: list[Bounds],
    relaxes: list[_Relax],
    net_a: Network,
    bounds_d: Bounds,
) -> None:
    """Record layer ``k``'s Delta bounds; both nets' bounds tighten each other through
    ``z_b = z_a + Delta``; relax a hidden layer's activation difference.
    """
    (l_a, u_a), (l_b, u_b), (d_l, d_u) = bounds_a[k], bounds_b[k], bounds_d
    bounds_b[k] = (torch.maximum(l_b, l_a + d_l), torch.minimum(u_b, u_a + d_u))
    bounds_a[k] = (torch.maximum(l_a, l_b - d_u), torch.minimum(u_a, u_b - d_l))
    delta.append((d_l, d_u))
    if k < len(net_a.layers) - 1:
        relaxes.append(_relax_difference(bounds_a[k], bounds_b[k], delta[k], net_a.layers[k].slope))


def _backward(
    net_a: Network,
    net_b: Network,
    k: int,
    relaxes: list[_Relax],
    bounds_a: list[Bounds],
    coeffs: Tensor,
    coefficients: list[tuple[Tensor, Tensor]] | None = None,
) -> tuple[Tensor, Tensor]:
    """Linear upper bound ``lam . x + const`` ``([n, m, d], [n, m])`` on
    ``coeffs [m, width_k] . Delta_k``.

    ``coefficients``, when given, receives ``(lam_d, lam_a)`` per hidden layer, last layer first.
    """
    n = bounds_a[0][0].shape[0]
    layer_a, layer_b = net_a.layers[k], net_b.layers[k]
    lam_d = coeffs.expand(n, *coeffs.shape)
    const = lam_d @ (layer_b.bias - layer_a.bias)
    # Coefficients on net a's activations and on the activation difference.
    lam_a = zero_or_backward(difference(layer_b.weight, layer_a.weight), lam_d, _in(layer_a))
    lam_d = backward(layer_b.weight, lam_d)
    for j in range(k - 1, -1, -1):
        if coefficients is not None:
            coefficients.append((lam_d, lam_a))
        uz, ud, uc, lz, ld, lc = (t.unsqueeze(1) for t in relaxes[j][:6])
        ls, us, ui = (t.unsqueeze(1) for t in relaxation(*bounds_a[j], net_a.layers[j].slope))
        pos_d, neg_d, pos_a, neg_a = (
            lam_d.clamp(min=0),
            lam_d.clamp(max=0),
            lam_a.clamp(min=0),
            lam_a.clamp(max=0),
        )
        coef_z = pos_d * uz + neg_d * lz + pos_a * us + neg_a * ls
        coef_d = pos_d * ud + neg_d * ld
        const = const + (pos_d * uc + neg_d * lc + pos_a * ui).sum(-1)
        layer_a, layer_b = net_a.layers[j], net_b.layers[j]
        const = const + coef_z @ layer_a.bias + coef_d @ (layer_b.bias - layer_a.bias)
        lam_a = backward(layer_a.weight, coef_z) + zero_or_backward(
            difference(layer_b.weight, layer_a.weight), coef_d, _in(layer_a)
        )
        lam_d = backward(layer_b.weight, coef_d)
    return lam_a, const  # the input's activation difference is 0, so lam_d drops out


def _in(layer: Layer) -> int:
    return layer.weight.shape[1]


def _relax_difference(bounds_a: Bounds, bounds_b: Bounds, delta: Bounds, slope: Tensor) -> _Relax:
    """Per-neuron linear bounds on ``g = sigma(z_a + Delta) - sigma(z_a)``, ``[n, width]`` each.

    Returns ``(uz, ud, uc, lz, ld, lc, gap)``: ``lz z + ld Delta + lc <= g <= uz z + ud Delta + uc``
    and the largest distance between the two.
    """
    (l_a, u_a), (l_b, u_b), (d_l, d_u) = bounds_a, bounds_b, delta
    zero = torch.zeros_like(l_a)
    # Via both nets: U_b(z_b) - L_a(z_a) above, L_b(z_b) - U_a(z_a) below, z_b = z_a + Delta.
    ls_a, us_a, ui_a = relaxation(l_a, u_a, slope)
    ls_b, us_b, ui_b = relaxation(l_b, u_b, slope)
    both = (us_b - ls_a, us_b, ui_b, ls_b - us_a, ls_b, -ui_a)
    gap_both = _gap(ls_a, us_a, ui_a, l_a, u_a) + _gap(ls_b, us_b, ui_b, l_b, u_b)
    # Via Delta alone: chord of max(D, sD) above, chord of min(D, sD) = -max(-D, -sD) below.
    _, up_d, up_c = relaxation(d_l, d_u, slope)
    _, neg_d, neg_c = relaxation(-d_u, -d_l, slope)
    one = torch.ones_like(l_a)
    up_d = torch.where(l_b >= 0, one, torch.where(u_b <= 0, slope * one, up_d))
    up_c = torch.where((l_b >= 0) | (u_b <= 0), zero, up_c)
    low_d = torch.where(l_a >= 0, one, torch.where(u_a <= 0, slope * one, neg_d))
    low_c = torch.where((l_a >= 0) | (u_a <= 0), zero, -neg_c)
    gap_delta = torch.maximum(
        (up_d - low_d) * d_l + up_c - low_c, (up_d - low_d) * d_u + up_c - low_c
    )
    alone = (zero, up_d, up_c, zero, low_d, low_c)
    use_both = gap_both <= gap_delta
    chosen = tuple(torch.where(use_both, x, y) for x, y in zip(both, alone, strict=True))
    return (*chosen, torch.minimum(gap_both, gap_delta))  # type: ignore[return-value]


def _gap(ls: Tensor, us: Tensor, ui: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """Largest distance between the upper and lower line on ``[low, high]`` (at an end: both are
    linear).
    """
    return torch.maximum((us - ls) * low + ui, (us - ls) * high + ui)
