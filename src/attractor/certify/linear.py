"""CROWN: backward linear bound propagation, on one network or on two stacked side by side.

Each activation ``sigma(z) = max(z, s z)`` with pre-activation bounds ``low < 0 < high`` is
replaced by linear bounds: the chord through ``(low, s low)`` and ``(high, high)`` above, a line
``alpha z`` with ``alpha in [s, 1]`` below (adaptive: ``alpha = 1`` if ``high >= -low`` else
``s``, the CROWN choice; ``"zero"``: ``alpha = s``, whose range over ``[low, high]`` stays
inside the IBP interval, so with IBP intermediate bounds CROWN is never looser than IBP;
``"optimized"``: alpha-CROWN, a few dozen projected Adam steps on ``alpha`` per neuron,
point and output, keeping the best bound seen). A linear objective ``c . z_K`` is then
pushed back layer by layer, picking the upper or lower line by the sign of each
coefficient, to a linear function of the input, maximized in closed form over the box.
Intermediate pre-activation bounds come from CROWN itself, layer by layer (intersected
with IBP), or from IBP alone.

The difference ``f_b(x) - f_a(x)`` is bounded on the *composed* network: both nets side by
side on the shared input (first weights stacked, then block-diagonal, final layer
``[-W_a | W_b]``); the shorter net is padded with identity layers.

References:
    Zhang et al. 2018, "Efficient neural network robustness certification with general
    activation functions" (CROWN); Xu et al. 2021, "Fast and complete: enabling complete
    neural network verification with rapid and massively parallel incomplete verifiers"
    (alpha-CROWN).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from attractor.certify import operators
from attractor.certify.intervals import Bounds, interval_layers
from attractor.certify.network import Layer, Network, pad_depth
from attractor.certify.operators import Block, Weight
from attractor.optim.adam import Adam
from attractor.optim.base import Hyper

Slopes = Literal["adaptive", "zero", "optimized"]
Intermediate = Literal["crown", "interval"]


def relaxation(
    low: Tensor, high: Tensor, slope: Tensor, slopes: Slopes = "adaptive"
) -> tuple[Tensor, Tensor, Tensor]:
    """Linear bounds ``ls z <= sigma(z) <= us z + ui`` on ``[low, high]``: ``(ls, us, ui)``, each
    shaped like ``low``.

    Stable neurons get the exact line (``ls = us``, ``ui = 0``).
    """
    active, inactive = low >= 0, high <= 0
    unstable = ~(active | inactive)
    span = torch.where(unstable, high - low, torch.ones_like(high))
    us = torch.where(
        unstable, (high - slope * low) / span, torch.where(active, 1.0, slope).to(low.dtype)
    )
    ui = torch.where(unstable, slope * low - us * low, torch.zeros_like(low))
    adaptive = (
        torch.where(high >= -low, torch.ones_like(low), slope * torch.ones_like(low))
        if slopes != "zero"
        else slope * torch.ones_like(low)
    )
    ls = torch.where(unstable, adaptive, us)
    return ls, us, ui


def backward(
    layers: tuple[Layer, ...],
    bounds: list[Bounds],
    coeffs: Tensor,
    lower_slopes: list[Tensor] | None = None,
    slopes: Slopes = "adaptive",
) -> tuple[Tensor, Tensor]:
    """Linear upper bound ``lam . x + const >= coeffs . z_K`` (``z_K`` the last layer's
    pre-activation).

    Args:
        layers: the chain ``layers[0..K]``.
        bounds: pre-activation bounds ``(low, high) [n, width_k]`` of ``layers[0..K-1]``.
        coeffs: objective ``[m, width_K]`` or ``[n, m, width_K]``.
        lower_slopes: optional lower slopes per hidden layer, ``[n, m, width_k]`` (alpha-CROWN);
            clamped to ``[s, 1]`` and used on unstable neurons only.

    Returns:
        ``lam [n, m, in_dim]`` and ``const [n, m]``.
    """
    n = bounds[0][0].shape[0] if bounds else 1
    lam = coeffs.expand(n, *coeffs.shape[-2:]) if coeffs.dim() == 2 else coeffs
    const = lam @ layers[-1].bias
    lam = operators.backward(layers[-1].weight, lam)
    for k in range(len(layers) - 2, -1, -1):
        low, high = bounds[k]
        slope = layers[k].slope
        ls, us, ui = (t.unsqueeze(1) for t in relaxation(low, high, slope, slopes))
        if lower_slopes is not None:
            unstable = (low < 0) & (high > 0)
            ls = torch.where(
                unstable.unsqueeze(1),
                torch.minimum(torch.maximum(lower_slopes[k], slope), torch.ones_like(slope)),
                ls,
            )
        pos, neg = lam.clamp(min=0), lam.clamp(max=0)
        const = const + (pos * ui).sum(-1)
        lam = pos * us + neg * ls
        const = const + lam @ layers[k].bias
        lam = operators.backward(layers[k].weight, lam)
    return lam, const


def concretize(lam: Tensor, const: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
    """``max over the box of lam . x + const``: ``[n, m]`` from ``lam [n, m, d]`` and boxes
    ``[n, d]``.
    """
    centre, radius = ((upper + lower) / 2).unsqueeze(-1), ((upper - lower) / 2).unsqueeze(-1)
    return (lam @ centre).squeeze(-1) + (lam.abs() @ radius).squeeze(-1) + const


@torch.no_grad()
def layer_bounds(
    net: Network,
    lower: Tensor,
    upper: Tensor,
    intermediate: Intermediate = "crown",
    slopes: Slopes = "adaptive",
    fix: list[Tensor] | None = None,
) -> list[Bounds]:
    """Pre-activation bounds ``(low, high) [n, width_k]`` of every layer (last: outputs).

    Hidden layers by CROWN or IBP (``intermediate``), the outputs by CROWN; CROWN bounds
    are intersected with IBP, so they are never looser than it. ``fix[k] [n, width_k]``
    (ReLU splits of branch and bound: +1 active, -1 inactive, 0 free) restricts the region
    to inputs where the hidden neurons have those signs; an empty restriction shows as
    ``low > high`` somewhere.

    A hidden neuron gets a CROWN bound only where its interval (IBP from the previous layer's
    bounds) leaves it unstable at some point and its slope is below 1: elsewhere the
    relaxation is its exact line whatever the bounds, so the interval is all the bound
    methods need (auto_LiRPA does the same). On convolutional nets, where few neurons of a
    small ball are unstable, this is most of the work saved.
    """
    ibp = interval_layers(net, lower, upper)
    bounds = [
        fixed(ibp[0], fix[0]) if fix else ibp[0]
    ]  # the first affine layer's interval is exact
    for k in range(1, len(net.layers)):
        last = k == len(net.layers) - 1
        interval = _ordered(
            _intersect(ibp[k], _next_interval(net.layers[k - 1], net.layers[k], bounds[-1]))
        )
        if fix and not last:
            interval = fixed(interval, fix[k])
        if intermediate == "interval" and not last:
            bounds.append(interval)
            continue
        layer = net.layers[k]
        width = layer.weight.shape[0]
        unstable = ((interval[0] < 0) & (interval[1] > 0)).any(0) & (layer.slope < 1)
        rows = torch.arange(width) if last else torch.nonzero(unstable).flatten()
        if rows.numel() == 0:
            bounds.append(interval)
            continue
        eye = torch.eye(width, dtype=torch.float64)[rows]
        lam, const = backward(
            net.layers[: k + 1],
            bounds,
            torch.cat([eye, -eye]),
            slopes="adaptive" if slopes == "optimized" else slopes,
        )
        up = concretize(lam, const, lower, upper)
        m = rows.numel()
        low, high = interval[0].clone(), interval[1].clone()
        low[:, rows], high[:, rows] = _ordered(
            (
                torch.maximum(-up[:, m:], interval[0][:, rows]),
                torch.minimum(up[:, :m], interval[1][:, rows]),
            )
        )
        bounds.append((low, high))
        if fix and not last:
            bounds[k] = fixed(bounds[k], fix[k])
    return bounds


def _next_interval(previous: Layer, layer: Layer, bounds: Bounds) -> Bounds:
    """IBP of ``layer``'s pre-activation from the previous layer's pre-activation bounds."""
    low, high = bounds
    slope = previous.slope
    low, high = torch.maximum(low, slope * low), torch.maximum(high, slope * high)
    centre, radius = (high + low) / 2, (high - low) / 2
    mid = operators.forward(layer.weight, centre) + layer.bias
    rad = operators.forward(operators.absolute(layer.weight), radius)
    return mid - rad, mid + rad


def _intersect(a: Bounds, b: Bounds) -> Bounds:
    return torch.maximum(a[0], b[0]), torch.minimum(a[1], b[1])


def _ordered(bounds: Bounds) -> Bounds:
    """Where a bound is exact (stable neurons, tiny boxes) rounding can cross its ends by
    ~1e-17: put them back in order (ReLU splits are applied after, so their emptiness shows).
    """
    low, high = bounds
    return torch.minimum(low, high), torch.maximum(low, high)


def fixed(bounds: Bounds, fix: Tensor) -> Bounds:
    """``bounds`` restricted by ReLU splits ``fix [n, width]``: +1 means ``z >= 0``, -1 means
    ``z <= 0``.
    """
    low, high = bounds
    return torch.where(fix > 0, low.clamp(min=0), low), torch.where(
        fix < 0, high.clamp(max=0), high
    )


def crown_bounds(
    net: Network,
    lower: Tensor,
    upper: Tensor,
    intermediate: Intermediate = "crown",
    slopes: Slopes = "adaptive",
    steps: int = 40,
) -> Bounds:
    """CROWN bounds ``(low, high) [n, out_dim]`` on ``net`` over the boxes
    ``lower, upper [n, in_dim]``.
    """
    bounds = layer_bounds(net, lower, upper, intermediate, slopes)
    if slopes != "optimized":
        return bounds[-1]
    return _optimize(net, bounds, lower, upper, steps)


def stack(net_a: Network, net_b: Network) -> Network:
    """The composed network ``x -> net_b(x) - net_a(x)``, both nets side by side on the shared
    input.
    """
    depth = max(len(net_a.layers), len(net_b.layers))
    a, b = pad_depth(net_a, depth), pad_depth(net_b, depth)
    layers = []
    for k, (la, lb) in enumerate(zip(a.layers, b.layers, strict=True)):
        wa, wb = la.weight, lb.weight
        rows, cols = (wa.shape[0], wb.shape[0]), (wa.shape[1], wb.shape[1])
        if k == depth - 1:
            blocks: tuple[tuple[Weight | None, ...], ...] = ((operators.negate(wa), wb),)
            weight = _joined(Block(blocks, (rows[0],), cols))
            layers.append(
                Layer(weight, lb.bias - la.bias, torch.ones(weight.shape[0], dtype=torch.float64))
            )
            continue
        if k == 0:  # both read the shared input
            weight = _joined(Block(((wa,), (wb,)), rows, (cols[0],)))
        else:
            weight = _joined(Block(((wa, None), (None, wb)), rows, cols))
        layers.append(Layer(weight, torch.cat([la.bias, lb.bias]), torch.cat([la.slope, lb.slope])))
    return Network(tuple(layers), net_a.in_shape)


def _joined(weight: Block) -> Weight:
    """A block matrix of dense blocks as one dense matrix (as before structured layers), else
    structured.
    """
    if all(isinstance(w, Tensor) or w is None for row in weight.blocks for w in row):
        return operators.dense(weight)
    return weight


def crown_difference(
    net_a: Network,
    net_b: Network,
    lower: Tensor,
    upper: Tensor,
    intermediate: Intermediate = "crown",
    slopes: Slopes = "adaptive",
    steps: int = 40,
) -> Bounds:
    """CROWN (or alpha-CROWN) bounds ``(low, high) [n, out_dim]`` on ``net_b(x) - net_a(x)`` via
    :func:`stack`.
    """
    return crown_bounds(stack(net_a, net_b), lower, upper, intermediate, slopes, steps)


def _optimize(
    net: Network, bounds: list[Bounds], lower: Tensor, upper: Tensor, steps: int, lr: float = 0.1
) -> Bounds:
    """alpha-CROWN on the outputs: Adam on the lower slopes, keeping each entry's best bound."""
    width = net.out_dim
    eye = torch.eye(width, dtype=torch.float64)
    coeffs = torch.cat([eye, -eye])
    hidden = bounds[:-1]
    if not hidden:
        return bounds[-1]
    with torch.no_grad():
        lam, const = backward(net.layers, hidden, coeffs)
        best = concretize(lam, const, lower, upper)
    alphas = [
        relaxation(low, high, layer.slope)[0]
        .unsqueeze(1)
        .expand(-1, 2 * width, -1)
        .clone()
        .requires_grad_(True)
        for (low, high), layer in zip(hidden, net.layers, strict=False)
    ]
    # The functional Adam of optim/ (torch.optim imports torch._dynamo, seconds of start-up
    # for a few steps), each input row a "member" with the same settings.
    adam = Adam()
    rows = torch.ones(alphas[0].shape[0], dtype=torch.float64)
    hyper = Hyper(lr=lr * rows, momentum=0.9 * rows, weight_decay=0 * rows)
    moments = [adam.init({"a": alpha.detach()}) for alpha in alphas]
    for step in range(1, steps + 1):
        lam, const = backward(net.layers, hidden, coeffs, lower_slopes=alphas)
        up = concretize(lam, const, lower, upper)
        best = torch.minimum(best, up.detach())
        grads = torch.autograd.grad(up.sum(), alphas, allow_unused=True)
        with torch.no_grad():  # projected step: any slope in [s, 1] gives a sound lower line
            for alpha, grad, state, layer in zip(alphas, grads, moments, net.layers, strict=False):
                if grad is None:
                    continue
                adam.step({"a": alpha}, {"a": grad}, state, hyper, step)
                alpha.copy_(
                    torch.minimum(torch.maximum(alpha, layer.slope), torch.ones_like(layer.slope))
                )
    with torch.no_grad():
        lam, const = backward(net.layers, hidden, coeffs, lower_slopes=alphas)
        best = torch.minimum(best, concretize(lam, const, lower, upper))
    return (
        torch.maximum(-best[:, width:], bounds[-1][0]),
        torch.minimum(best[:, :width], bounds[-1][1]),
    )
