"""Closed-loop finite-time Lyapunov exponents of a world under its policy.

The closed loop ``x_{t+1} = F_t(x_t) = world.step(x_t, policy, t, constants)`` has the
Jacobian ``J_T = d x_T / d x_0 = DF_{T-1} ... DF_0`` per (member, initial state). Its
finite-time Lyapunov exponents are the growth rates of ``k`` orthonormal tangent columns
pushed through the loop (Benettin et al. 1980):

    Q_0 = I (all d state dims) or k random orthonormal directions (d > MAX_DIMS),
    V = DF_t Q_t                               (k Jacobian-vector products at once),
    every ``reorth_every`` steps (and at the end):  V = Q R,  L_i += log|R_ii|,
    lambda_i = L_i / T                         (nats per step).

Re-orthonormalizing keeps the columns from all collapsing onto the fastest direction and
their norms from overflowing; the log-diagonal of ``R`` accumulates the volume growth of
the leading ``i``-dimensional subspaces (``lambda_1 + ... + lambda_i`` is the growth rate
of the ``i``-volume spanned by the first ``i`` columns), and the ``lambda_i`` converge to
``log |eigenvalue_i|`` of a fixed linear loop as ``T`` grows (moduli sorted). Negative
``lambda_1``: nearby initial states converge (one basin); positive: they separate
(sensitive dependence).

Tangent columns travel as extra initial states: ``x [m, s, *state]`` is repeated to
``[m, s * k, *state]`` and the ``k`` columns are its tangent, so one Jacobian-vector
product per step pushes every column of every (member, state) — which relies on the
contract that a world treats each (member, initial state) row independently. The product
``J v`` is forward mode by definition; it is computed either with dual tensors
(:mod:`torch.autograd.forward_ad`) or as the reverse-over-reverse product
``J v = d/du <J^T u, v>`` (two backward passes; same numbers to round-off). The latter is
the default: it was about 3x faster on the worlds here (timings in :func:`lyapunov`), and
the ensemble's fast batched MLP (a custom ``autograd.Function`` without a forward rule)
cannot be pushed by forward mode at all. Either falls back to the other.

References:
    Benettin, Galgani, Giorgilli, Strelcyn, "Lyapunov characteristic exponents for smooth
    dynamical systems ... Part 1/2", Meccanica 15, 1980.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
import torch.autograd.forward_ad as fwad
from torch import Tensor

from attractor.errors import UserError
from attractor.measure.bootstrap import Estimate, multibootstrap
from attractor.seeds import torch_generator
from attractor.world.base import Constants, Policy, World
from attractor.world.rollout import constants_on

__all__ = ["MAX_DIMS", "Exponents", "lyapunov"]

#: States up to this many dims get every exponent; larger ones ``directions`` random ones.
MAX_DIMS = 64
_DEFAULT_DIRECTIONS = 8


@dataclass(frozen=True)
class Exponents:
    """Finite-time Lyapunov exponents of the closed loop, per (member, initial state).

    Attributes:
        exponents: ``Float[Tensor, "m s k"]`` nats per step, sorted descending per row.
        steps: ``T``, the rollout length.
        reorth_every: steps between QR re-orthonormalizations.
        all_dims: whether the ``k`` columns span the whole state (``k = d``); else they
            started at ``k`` random orthonormal directions and give the ``k`` leading
            exponents.
        final: ``[m, s, *state]`` the final states.
    """

    exponents: Tensor
    steps: int
    reorth_every: int
    all_dims: bool
    final: Tensor

    def top(self, draws: int = 1000, seed: int = 0, level: float = 0.95) -> Estimate:
        """Mean of ``lambda_1`` over (member, state) with a two-way bootstrap interval."""
        return multibootstrap(
            self.exponents[..., 0].double().numpy(), draws=draws, seed=seed, level=level
        )

    def summary(self, draws: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
        """One row per exponent ``i`` (1 = largest): ``exponent, mean, low, high`` (two-way
        bootstrap over members and initial states), ``positive`` (share of pairs with
        ``lambda_i > 0``).
        """
        rows = []
        for i in range(self.exponents.shape[-1]):
            values = self.exponents[..., i].double().numpy()
            est = multibootstrap(values, draws=draws, seed=seed + i, level=level)
            rows.append(
                {
                    "exponent": i + 1,
                    "mean": est.value,
                    "low": est.low,
                    "high": est.high,
                    "positive": float((values > 0).mean()),
                }
            )
        return pd.DataFrame(rows)


#: Ways to push tangents, tried in order until one works for the world and policy.
_MODES = ("auto", "forward", "reverse")


class _Pusher:
    """``(x [m, n, *state], v [m, n, *state], t) -> (F_t(x), DF_t v)``.

    ``auto`` tries the reverse-over-reverse product first (the faster one, see
    :func:`lyapunov`) and forward mode if the step cannot be differentiated twice;
    ``forward`` the other way round; ``reverse`` only the former. The first way that
    works is kept for the rest of the rollout.
    """

    def __init__(self, world: World, policy: Policy | None, constants: Constants, mode: str):
        if mode not in _MODES:
            raise UserError(f"unknown mode {mode!r}; choose one of: {', '.join(_MODES)}")
        self.world, self.policy, self.constants = world, policy, constants
        self.ways = {
            "auto": [_double_vjp, _dual],
            "forward": [_dual, _double_vjp],
            "reverse": [_double_vjp],
        }[mode]

    def __call__(self, x: Tensor, v: Tensor, t: int) -> tuple[Tensor, Tensor]:
        def f(z: Tensor) -> Tensor:
            return self.world.step(z, self.policy, t, self.constants)

        while True:
            try:
                return self.ways[0](f, x, v)
            except (RuntimeError, NotImplementedError) as exc:
                # Forward mode fails on a custom autograd.Function without a forward rule
                # (the ensemble's batched MLP), reverse-over-reverse on a backward that is
                # not differentiable: the other way gives the same J v. A bug in the step
                # fails both ways and is reported.
                if len(self.ways) == 1:
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    raise UserError(
                        f"world '{self.world.name}' step {t} cannot be differentiated in the "
                        f"state ({type(exc).__name__}: {first})"
                    ) from None
                self.ways = self.ways[1:]


def _dual(f: Callable[[Tensor], Tensor], x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """``(f(x), J v)`` in forward mode with dual tensors (several times faster than
    ``torch.func.jvp`` on the small elementwise steps of a world: no decomposition to prims).
    """
    with fwad.dual_level():
        out = fwad.unpack_dual(f(fwad.make_dual(x, v)))
    tangent = torch.zeros_like(out.primal) if out.tangent is None else out.tangent
    return out.primal.detach(), tangent.detach()


def _double_vjp(f: Callable[[Tensor], Tensor], x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """``(f(x), J v)`` by two reverse passes: ``g(u) = J^T u`` is linear in ``u``, so
    ``d/du <g(u), v> = J v``.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        y = f(x)
        u = torch.zeros_like(y, requires_grad=True)
        (g,) = torch.autograd.grad(y, x, u, create_graph=True, allow_unused=True)
        if g is None or not g.requires_grad:  # the step does not depend on x: J = 0
            return y.detach(), torch.zeros_like(y)
        (jv,) = torch.autograd.grad(g, u, v, allow_unused=True)
    return y.detach(), torch.zeros_like(y) if jv is None else jv


def _qr(v: Tensor) -> tuple[Tensor, Tensor]:
    """``v [..., d, k] = Q R``: ``(Q [..., d, k], |diag R| [..., k])``.

    Householder ``geqrf`` + ``householder_product`` rather than ``torch.linalg.qr``: the same
    factors, but the latter's batched loop was up to 100x slower on many tiny matrices on a
    busy 2-core machine (thread-pool overhead).
    """
    a, tau = torch.geqrf(v)
    return torch.linalg.householder_product(a, tau), a.diagonal(dim1=-2, dim2=-1).abs()


def _start(d: int, directions: int | None, seed: int, dtype: torch.dtype) -> Tensor:
    """``[d, k]`` orthonormal starting columns: the identity, or ``k`` random directions."""
    if directions is None and d <= MAX_DIMS:
        return torch.eye(d, dtype=dtype)
    k = min(d, _DEFAULT_DIRECTIONS if directions is None else int(directions))
    if k < 1:
        raise UserError(f"directions must be at least 1, got {directions}")
    if k == d:
        return torch.eye(d, dtype=dtype)
    g = torch.randn(d, k, generator=torch_generator("world-lyapunov", seed), dtype=torch.float64)
    return torch.linalg.qr(g).Q.to(dtype)


def _check(world: World, x: Tensor, nxt: Tensor, t: int) -> None:
    if nxt.shape != x.shape:
        raise UserError(
            f"world '{world.name}' step {t} returned states of shape {tuple(nxt.shape)} for "
            f"{tuple(x.shape)}; a step keeps the shape of its states"
        )
    if not torch.isfinite(nxt).all():
        raise UserError(
            f"world '{world.name}' step {t} returned states (or tangents) that are not "
            "finite; check the world's step and its constants"
        )


def lyapunov(
    world: World,
    policy: Policy | None,
    x0: Tensor,
    steps: int | None = None,
    constants: Constants | None = None,
    reorth_every: int = 1,
    directions: int | None = None,
    seed: int = 0,
    mode: str = "auto",
) -> Exponents:
    """Finite-time Lyapunov exponents of the closed loop from ``x0 [m, s, *state]``.

    Args:
        world: a differentiable world (``world.differentiable``).
        policy: the policy of the loop (``None`` for a world without a model).
        x0: ``Float[Tensor, "m s *state"]`` initial states
            (:func:`~attractor.world.rollout.initial_batch`).
        steps: ``T`` (default ``world.steps``).
        constants: the world's constants (default its own).
        reorth_every: steps between QR re-orthonormalizations (1 is the most stable; a
            larger value saves QRs but lets a fast direction dominate in between).
        directions: number of exponents for a state of more than :data:`MAX_DIMS` dims
            (default 8), started at random orthonormal directions seeded by ``seed``; a
            smaller state gets all of its exponents unless this is given.
        seed: seed of those directions.
        mode: how ``DF_t v`` is computed: ``forward`` (dual tensors), ``reverse`` (the
            reverse-over-reverse product ``d/du <J^T u, v>``) or ``auto`` (reverse, then
            forward where reverse fails). Both give the same numbers to round-off (1e-15);
            reverse is the default because forward-mode AD in this torch (2.13, CPU) runs
            every op with a constant through Python meta functions: per step on 8 members
            x 256 states, 1 thread, the double well took 0.34 ms reverse vs 1.0 ms forward
            (``torch.func.jvp`` 1.1 ms) and cart-pole 2.6 ms vs 7.1 ms (10.8 ms).

    Returns:
        :class:`Exponents` on the CPU (the loop runs on ``x0``'s device), ``exponents [m, s,
        k]`` sorted descending. A column that collapses exactly (``R_ii = 0``: the map is
        singular there) counts as ``log(tiny)`` for that step instead of ``-inf``.

    Raises:
        UserError: the world is not differentiable, bad settings, or its step returned
            another shape or states/tangents that are not finite (one line with the step).
    """
    if not world.differentiable:
        raise UserError(
            f"world '{world.name}' is not differentiable (discrete states); finite-time "
            "Lyapunov exponents need a differentiable step"
        )
    steps = world.steps if steps is None else int(steps)
    if steps < 1 or reorth_every < 1:
        raise UserError(f"need steps >= 1 and reorth_every >= 1, got {steps}, {reorth_every}")
    if not x0.is_floating_point() or x0.dim() < 3:
        raise UserError(
            f"initial states must be floating [members, initial states, *state], got "
            f"{x0.dtype} of shape {tuple(x0.shape)}"
        )
    constants = constants_on(world.constants if constants is None else constants, x0.device)
    m, s, *state = x0.shape
    d = math.prod(state)
    # Random directions are drawn on the CPU (the same on every device), then moved.
    start = _start(d, directions, seed, x0.dtype).to(x0.device)  # [d, k]
    k = start.shape[1]
    push = _Pusher(world, policy, constants, mode)
    x = x0.detach()
    q = start.expand(m, s, d, k).clone()  # [m, s, d, k]: the tangent columns
    logs = torch.zeros(m, s, k, dtype=torch.float64, device=x0.device)
    tiny = torch.finfo(x0.dtype).tiny
    for t in range(steps):
        xs = x.unsqueeze(2).expand(m, s, k, *state).reshape(m, s * k, *state)
        vs = q.transpose(2, 3).reshape(m, s * k, *state)
        nxt, jv = push(xs, vs, t)
        _check(world, xs, nxt, t)
        _check(world, xs, jv, t)
        x = nxt.reshape(m, s, k, *state)[:, :, 0].detach()
        q = jv.detach().reshape(m, s, k, d).transpose(2, 3)  # [m, s, d, k]
        if (t + 1) % reorth_every == 0 or t + 1 == steps:
            q, diag = _qr(q)
            logs += diag.clamp_min(tiny).log().to(torch.float64)
    exponents = (logs / steps).sort(dim=-1, descending=True).values
    return Exponents(exponents.cpu(), steps, reorth_every, k == d, x.cpu())
