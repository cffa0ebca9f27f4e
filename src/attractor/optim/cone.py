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

The cone and distances are over all parameters of a member jointly (flattened), or, with
``cone_per_tensor``, one cone per parameter tensor (each tensor leans back towards its own
init on its own). The per-member sums use a fixed blocked order so a member's numbers do
not depend on how many members share the tensor.

Stochastic variant (``cone_random``): every step each member draws its angle uniformly
from ``[0, cone_angle]``. The draw is a counter-based hash of (the member's seed, step)
(:func:`random_angle`), not a generator with state: a member's angles depend only on its
plan row, not on its chunk, and a resumed or spawned member draws the same angles again.

References:
    Issue 6 of this project ("Cone descent"); the minimum-norm property it probes is that
    of gradient descent on over-parameterized least squares, see e.g. Gunasekar et al.,
    "Characterizing Implicit Bias in Terms of Optimization Geometry", ICML 2018.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from attractor.optim.base import (
    _BLOCK,
    Hyper,
    Params,
    State,
    check_members,
    member_sum,
    per_member,
    write_back,
)

_PARALLEL_TOL = 1e-6


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


_MASK64 = (1 << 64) - 1


def random_angle(seed: int, step: int, largest: float) -> float:
    """An angle uniform in ``[0, largest]`` for (``seed``, ``step``): splitmix64 of the pair.

    Stateless on purpose, so the draw of step ``t`` is the same however the member got
    there (one chunk or another, resumed, spawned). Steele et al., "Fast splittable
    pseudorandom number generators", OOPSLA 2014 (the splitmix64 finalizer).
    """
    z = (int(seed) * 0x9E3779B97F4A7C15 + int(step) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return largest * ((z >> 11) * 2.0**-53)


def cone_coefficients(
    gs: Sequence[Tensor], ws: Sequence[Tensor], angle: float | Tensor
) -> tuple[Tensor, Tensor]:
    """Per-member ``(a, b)`` with the cone step ``|g| d = a g + b w``, in float64.

    Args:
        gs: effective gradients, one ``[members, *shape]`` tensor per parameter.
        ws: displacements from init ``x - x0``, same shapes as ``gs``.
        angle: the cone's half-angle alpha in radians, ``0 <= alpha < pi/2``: one for
            every member, or a ``[members]`` tensor.

    Returns:
        ``a`` and ``b``, each ``[members]`` float64.
    """
    members = gs[0].shape[0]
    if isinstance(angle, Tensor):
        alpha = angle.to(dtype=torch.float64, device=gs[0].device).expand(members)
        cos_a, sin_a = alpha.cos(), alpha.sin()
    else:
        alpha = torch.full((members,), float(angle), dtype=torch.float64, device=gs[0].device)
        cos_a, sin_a = math.cos(angle), math.sin(angle)
    g64, w64 = _flatten64(gs), _flatten64(ws)
    gg, wg, ww = member_sum(g64 * g64), member_sum(w64 * g64), member_sum(w64 * w64)
    del g64, w64
    g_norm, w_norm = gg.sqrt(), ww.sqrt()
    moved = (ww > 0) & (gg > 0)
    one = torch.ones_like(gg)
    # cos of the angle between -w and u = -g/|g| is (w.g) / (|w| |g|).
    cos_between = wg / torch.where(moved, w_norm * g_norm, one)
    inside = moved & (alpha > 0) & (cos_between >= cos_a)
    beta = wg / torch.where(gg > 0, gg, one)
    perp = (ww - wg * beta).clamp_min(0).sqrt()
    rim = moved & ~inside & (perp > _PARALLEL_TOL * w_norm)
    k = torch.where(rim, sin_a * g_norm / torch.where(rim, perp, one), 0.0)
    # Neither inside nor on a well-defined rim point (w = 0, g = 0, or w parallel to -u):
    # a = -1, b = 0, the plain gradient step.
    a = torch.where(inside, 0.0, torch.where(rim, -cos_a + k * beta, -1.0))
    b = torch.where(inside, -g_norm / torch.where(inside, w_norm, one), -k)
    return a, b


def step_angles(hyper: Hyper, step: int) -> float | Tensor:
    """This step's cone angle: ``hyper.cone_angle``, or a ``[members]`` draw when
    ``cone_random``.
    """
    if not hyper.cone_random:
        return hyper.cone_angle
    if hyper.seed is None:
        raise ValueError("a random cone angle needs per-member seeds (hyper.seed)")
    return torch.tensor(
        [random_angle(s, step, hyper.cone_angle) for s in hyper.seed.tolist()], dtype=torch.float64
    )


def cone_update(
    params: Mapping[str, Tensor],
    grads: Mapping[str, Tensor],
    state: State,
    hyper: Hyper,
    step: int,
    *,
    decay: bool = True,
) -> tuple[Params, State]:
    """One cone-descent step for every member, out of place; see the module docstring.

    ``decay`` as in :func:`~attractor.optim.sgd.sgd_update`. Unlike SGD and Adam this step
    branches on its data (the cone's case, a random angle), so it is pure but not meant to
    be differentiated: the tangent replay refuses cone descent.
    """
    momentum = hyper.momentum.double()
    weight_decay = hyper.weight_decay.double()
    # The cone needs norms over all parameters, so the effective gradients (and the new
    # momentum buffers) are formed first, then every parameter steps.
    bufs, gs, ws = {}, [], []
    for name, p in params.items():
        grad, slots = grads[name], state[name]
        g = torch.addcmul(grad, p, per_member(weight_decay, p)) if decay else grad
        mom = per_member(momentum, p)
        bufs[name] = torch.mul(slots["momentum_buffer"], mom).add(g)
        gs.append(torch.addcmul(g, bufs[name], mom) if hyper.nesterov else bufs[name])
        ws.append(p - slots["x0"])
    angle = step_angles(hyper, step)
    if hyper.cone_per_tensor:
        coefficients = [cone_coefficients([g], [w], angle) for g, w in zip(gs, ws, strict=True)]
    else:
        coefficients = [cone_coefficients(gs, ws, angle)] * len(gs)
    lr = hyper.lr.double().to(coefficients[0][0].device)  # hyper lives on the CPU
    new_params: Params = {}
    new_state: State = {}
    for (name, p), g, w, (a, b) in zip(params.items(), gs, ws, coefficients, strict=True):
        lr_b = lr * b
        new_p = torch.addcmul(p, g, per_member(lr * a, p))
        # alpha = 0: b is all zeros, and skipping the w term keeps the step bitwise
        # SGD's (even a -0.0 parameter stays -0.0).
        if bool(lr_b.any()):
            new_p = torch.addcmul(new_p, w, per_member(lr_b, p))
        new_params[name] = new_p
        new_state[name] = {"momentum_buffer": bufs[name], "x0": state[name]["x0"]}
    return new_params, new_state


class ConeDescent:
    """Functional cone descent for ``[members, ...]`` parameters; ``hyper.cone_angle`` is alpha."""

    name = "cone"

    def init(self, params: Mapping[str, Tensor]) -> State:
        """A zero momentum buffer and a copy of the initial parameters ``x0`` per parameter."""
        return {
            name: {"momentum_buffer": torch.zeros_like(p), "x0": p.detach().clone()}
            for name, p in params.items()
        }

    def update(
        self,
        params: Mapping[str, Tensor],
        grads: Mapping[str, Tensor],
        state: State,
        hyper: Hyper,
        step: int,
    ) -> tuple[Params, State]:
        """One cone-descent step, pure; see :func:`cone_update`."""
        check_members(params, hyper, None)
        return cone_update(params, grads, state, hyper, step)

    def step(
        self,
        params: Mapping[str, Tensor],
        grads: Mapping[str, Tensor],
        state: State,
        hyper: Hyper,
        step: int,
        active: Tensor | None = None,
    ) -> None:
        """One cone-descent step for every member, in place: :func:`cone_update` written back."""
        check_members(params, hyper, active)
        with torch.no_grad():
            decay = bool(hyper.weight_decay.any())
            new = cone_update(params, grads, state, hyper, step, decay=decay)
        write_back(params, state, *new, active)
