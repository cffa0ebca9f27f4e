"""Cone descent: gradient descent that leans back towards the initial parameters.

At parameters x with initial parameters x0 and (effective) gradient g, among the unit
directions d within angle alpha of u = -g/|g|, take the one with the smallest scalar
product with w = x - x0, and step lr * |g| along it. Closed form::

    if w == 0 or angle(-w, u) <= alpha:   d = -w / |w|        (-w itself lies in the cone)
    else:                                 d = cos(alpha) u - sin(alpha) w_perp / |w_perp|
                                          w_perp = w - (w . u) u
    x = x + lr * |g| * d

alpha = 0 is plain gradient descent, bitwise: the step is written as
``x + (lr a) g + (lr b) w`` with per-member scalars ``a = -cos(alpha) + k beta`` and
``b = -k`` (``k = sin(alpha) |g| / |w_perp|``, ``beta = w.g / |g|^2``), so alpha = 0 gives
``a = -1, b = -0``, the very numbers of :class:`~attractor.optim.sgd.SGD`.

Weight decay and momentum act on g first, exactly as in SGD (``g = grad + wd x``;
``buf = momentum buf + g``; g is then ``buf``, or ``g + momentum buf`` with Nesterov), and
the cone is taken around that effective gradient. When w is parallel to g but points
uphill (|w_perp| below 1e-6 |w|), every direction on the cone's rim is optimal; the step
falls back to d = u there (a measure-zero case, kept deterministic rather than random).

The cone and distances are over all parameters of a member jointly (flattened); the
per-member sums use a fixed blocked order so a member's numbers do not depend on how many
members share the tensor. There is no stochastic variant (random alpha per step): the
optimizer has no per-member seed to draw it from without breaking "a member depends only
on its plan row".

References:
    Issue 6 of this project ("Cone descent"); the minimum-norm property it probes is that
    of gradient descent on over-parameterized least squares, see e.g. Gunasekar et al.,
    "Characterizing Implicit Bias in Terms of Optimization Geometry", ICML 2018.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from attractor.optim.base import Hyper, State, check_members, per_member

_BLOCK = 4096
_PARALLEL_TOL = 1e-6


def member_sum(x: Tensor) -> Tensor:
    """``[members, *shape]`` -> ``[members]`` float64 sums in an order fixed per member.

    A plain ``sum(dim=1)`` of one long row is split across threads while many rows are
    not, so one member alone would get different bits than inside an ensemble. Summing
    blocks of ``_BLOCK`` elements, level by level, keeps every reduction short and serial.
    """
    x = x.double().reshape(x.shape[0], -1)
    while x.shape[1] > _BLOCK:
        if x.shape[1] % _BLOCK:
            x = F.pad(x, (0, (-x.shape[1]) % _BLOCK))
        x = x.reshape(x.shape[0], -1, _BLOCK).sum(2)
    return x.sum(1)


def _flatten64(xs: Sequence[Tensor]) -> Tensor:
    """All parameters of each member in one zero-padded float64 row, ``[members, k * _BLOCK]``.

    One copy converts and pads at once; float64 products of float32 values are then exact.
    """
    sizes = [x[0].numel() for x in xs]
    total = -(-sum(sizes) // _BLOCK) * _BLOCK
    out = torch.zeros(xs[0].shape[0], total, dtype=torch.float64, device=xs[0].device)
    start = 0
    for x, size in zip(xs, sizes, strict=True):
        out[:, start : start + size] = x.reshape(x.shape[0], -1)
        start += size
    return out


def cone_coefficients(
    gs: Sequence[Tensor], ws: Sequence[Tensor], angle: float
) -> tuple[Tensor, Tensor]:
    """Per-member ``(a, b)`` with the cone step ``|g| d = a g + b w``, in float64.

    Args:
        gs: effective gradients, one ``[members, *shape]`` tensor per parameter.
        ws: displacements from init ``x - x0``, same shapes as ``gs``.
        angle: the cone's half-angle alpha in radians, ``0 <= alpha < pi/2``.

    Returns:
        ``a`` and ``b``, each ``[members]`` float64.
    """
    g64, w64 = _flatten64(gs), _flatten64(ws)
    gg, wg, ww = member_sum(g64 * g64), member_sum(w64 * g64), member_sum(w64 * w64)
    del g64, w64
    g_norm, w_norm = gg.sqrt(), ww.sqrt()
    moved = (ww > 0) & (gg > 0)
    one = torch.ones_like(gg)
    # cos of the angle between -w and u = -g/|g| is (w.g) / (|w| |g|).
    cos_between = wg / torch.where(moved, w_norm * g_norm, one)
    inside = moved & (angle > 0) & (cos_between >= math.cos(angle))
    beta = wg / torch.where(gg > 0, gg, one)
    perp = (ww - wg * beta).clamp_min(0).sqrt()
    rim = moved & ~inside & (perp > _PARALLEL_TOL * w_norm)
    k = torch.where(rim, math.sin(angle) * g_norm / torch.where(rim, perp, one), 0.0)
    # Neither inside nor on a well-defined rim point (w = 0, g = 0, or w parallel to -u):
    # a = -1, b = 0, the plain gradient step.
    a = torch.where(inside, 0.0, torch.where(rim, -math.cos(angle) + k * beta, -1.0))
    b = torch.where(inside, -g_norm / torch.where(inside, w_norm, one), -k)
    return a, b


class ConeDescent:
    """Functional cone descent for ``[members, ...]`` parameters; ``hyper.cone_angle`` is alpha."""

    name = "cone"

    def init(self, params: Mapping[str, Tensor]) -> State:
        """A zero momentum buffer and a copy of the initial parameters ``x0`` per parameter."""
        return {
            name: {"momentum_buffer": torch.zeros_like(p), "x0": p.detach().clone()}
            for name, p in params.items()
        }

    def step(
        self,
        params: Mapping[str, Tensor],
        grads: Mapping[str, Tensor],
        state: State,
        hyper: Hyper,
        step: int,
        active: Tensor | None = None,
    ) -> None:
        """One cone-descent step for every member, in place; see the module docstring."""
        check_members(params, hyper, active)
        momentum = hyper.momentum.double()
        weight_decay = hyper.weight_decay.double()
        no_decay = not bool(weight_decay.any())
        with torch.no_grad():
            # The cone needs norms over all parameters, so the effective gradients (and
            # the new momentum buffers) are formed first, out of place; the masked update
            # below then writes them like any per-parameter slot.
            bufs, gs, ws = {}, [], []
            for name, p in params.items():
                grad, slots = grads[name], state[name]
                g = grad if no_decay else torch.addcmul(grad, p, per_member(weight_decay, p))
                mom = per_member(momentum, p)
                bufs[name] = torch.mul(slots["momentum_buffer"], mom).add_(g)
                gs.append(torch.addcmul(g, bufs[name], mom) if hyper.nesterov else bufs[name])
                ws.append(p - slots["x0"])
            a, b = cone_coefficients(gs, ws, hyper.cone_angle)
            lr = hyper.lr.double()
            lr_a, lr_b = lr * a, lr * b
            # alpha = 0 everywhere: b is all zeros, and skipping the w term keeps the step
            # bitwise SGD's (even a -0.0 parameter stays -0.0).
            plain = not bool(lr_b.any())
            for (name, p), g, w in zip(params.items(), gs, ws, strict=True):
                buf = state[name]["momentum_buffer"]
                new_p = torch.addcmul(p, g, per_member(lr_a, p))
                if not plain:
                    new_p.addcmul_(w, per_member(lr_b, p))
                new_buf = bufs[name]
                if active is not None:
                    mask = active.to(p.device).view(-1, *([1] * (p.dim() - 1)))
                    new_p = torch.where(mask, new_p, p)
                    new_buf = torch.where(mask, new_buf, buf)
                p.copy_(new_p)
                buf.copy_(new_buf)


class ConeDescentOptim(torch.optim.Optimizer):
    """Cone descent as a ``torch.optim.Optimizer``, one cone over all its parameters jointly.

    Every group's parameters share one cone (norms and the angle are over all of them
    flattened together); ``lr``, ``momentum`` and ``weight_decay`` may differ per group,
    ``angle`` is one value for the whole optimizer.

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        angle: cone half-angle alpha in radians, ``0 <= alpha < pi/2``.
        momentum: heavy-ball momentum on the gradient (as ``torch.optim.SGD``).
        weight_decay: L2 coefficient added to the gradient.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float,
        angle: float = 0.3,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        if not 0 <= angle < math.pi / 2:
            raise ValueError(f"angle must be in [0, pi/2); got {angle}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})
        self.angle = angle

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One step over all parameters with a gradient; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        entries = []  # (param, effective g [1, ...], w [1, ...], lr)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["momentum_buffer"] = torch.zeros_like(p)
                    st["x0"] = p.detach().clone()
                # The same ops and roundings as ConeDescent.step, so the two agree bitwise.
                decay, mom = (
                    torch.tensor(group[k], dtype=p.dtype) for k in ("weight_decay", "momentum")
                )
                g = torch.addcmul(p.grad, p, decay) if group["weight_decay"] else p.grad
                st["momentum_buffer"].mul_(mom).add_(g)
                entries.append((p, st["momentum_buffer"][None], (p - st["x0"])[None], group["lr"]))
        if entries:
            a, b = cone_coefficients([e[1] for e in entries], [e[2] for e in entries], self.angle)
            for p, g, w, lr in entries:
                p.addcmul_(g[0], (lr * a[0]).to(p.dtype)).addcmul_(w[0], (lr * b[0]).to(p.dtype))
        return loss
