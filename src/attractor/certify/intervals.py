"""Interval bound propagation (IBP) and the naive interval bound on a difference of two networks.

Each affine layer maps the box ``centre +- radius`` to ``W centre + b +- |W| radius`` (the
exact interval hull of the image); each monotone activation maps interval ends to
interval ends. The naive bound on ``f_b(x) - f_a(x)`` bounds each network on its own,
``[l_b - u_a, u_b - l_a]``: it ignores that both networks see the same ``x``, so it
stays wide even for two identical networks, which is what the linear and differential
bounds fix.

References:
    Gowal et al. 2018, "On the effectiveness of interval bound propagation for training
    verifiably robust models" (IBP).
"""

from __future__ import annotations

import torch
from torch import Tensor

from attractor.certify.network import Network
from attractor.certify.operators import absolute, forward

Bounds = tuple[Tensor, Tensor]


@torch.no_grad()
def interval_layers(net: Network, lower: Tensor, upper: Tensor) -> list[Bounds]:
    """IBP bounds on the pre-activation of every layer: a list of ``(l, u)`` ``[n, width_k]``.

    The last entry bounds the network's outputs ``[n, out_dim]``.
    """
    bounds: list[Bounds] = []
    lo, hi = lower.to(torch.float64), upper.to(torch.float64)
    for layer in net.layers:
        centre, radius = (hi + lo) / 2, (hi - lo) / 2
        mid = forward(layer.weight, centre) + layer.bias
        rad = forward(absolute(layer.weight), radius)
        z_lo, z_hi = mid - rad, mid + rad
        bounds.append((z_lo, z_hi))
        lo, hi = torch.maximum(z_lo, layer.slope * z_lo), torch.maximum(z_hi, layer.slope * z_hi)
    return bounds


def interval_bounds(net: Network, lower: Tensor, upper: Tensor) -> Bounds:
    """IBP bounds ``(l, u)`` ``[n, out_dim]`` on ``net`` over the boxes
    ``lower, upper [n, in_dim]``.
    """
    return interval_layers(net, lower, upper)[-1]


def interval_difference(net_a: Network, net_b: Network, lower: Tensor, upper: Tensor) -> Bounds:
    """Naive bounds ``(l, u)`` ``[n, out_dim]`` on ``net_b(x) - net_a(x)``:
    ``[l_b - u_a, u_b - l_a]``.
    """
    l_a, u_a = interval_bounds(net_a, lower, upper)
    l_b, u_b = interval_bounds(net_b, lower, upper)
    return l_b - u_a, u_b - l_a
