"""Adam and AdamW, per member, as ``torch.optim.Adam`` / ``torch.optim.AdamW``.

Formula order (beta1 is ``hyper.momentum``, t is ``step``)::

    p = p * (1 - lr * wd)                              # AdamW only (decoupled decay)
    g = grad + wd * p                                  # Adam only (L2 in the gradient)
    m = lerp(m, g, 1 - beta1)
    v = beta2 * v + (1 - beta2) * g * g
    p = p + (-lr / (1 - beta1**t)) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

References:
    Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
    Loshchilov and Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from attractor.optim.base import (
    Hyper,
    Params,
    State,
    check_members,
    inactive_kept,
    per_member,
    safe_sqrt,
)


def adam_update(
    params: Mapping[str, Tensor],
    grads: Mapping[str, Tensor],
    state: State,
    hyper: Hyper,
    step: int,
    *,
    decoupled: bool,
) -> tuple[Params, State]:
    """One Adam (``decoupled=False``) or AdamW step for every member, out of place.

    Args:
        params, grads: ``[members, *shape]`` per parameter name.
        state: ``{name: {"exp_avg", "exp_avg_sq": [members, *shape]}}``.
        hyper: per-member lr (schedule included), beta1 (``momentum``) and weight decay.
        step: the step being taken, from 1 (bias correction).

    Returns:
        the new parameters and state (the inputs are not modified).
    """
    lr, beta1, wd = hyper.lr.double(), hyper.momentum.double(), hyper.weight_decay.double()
    beta2, eps = hyper.beta2, hyper.eps
    # Per-member scalars in float64, rounded once to the param dtype, as torch does
    # with its Python-float hyperparameters.
    decay = 1 - lr * wd
    one_minus_beta1 = 1 - beta1
    neg_step_size = -lr / (1 - beta1**step)
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5  # torch's spelling, bit for bit
    new_params: Params = {}
    new_state: State = {}
    for name, p in params.items():
        g = grads[name]
        if decoupled:
            p = torch.mul(p, per_member(decay, p))
        else:
            g = torch.addcmul(g, p, per_member(wd, p))
        slots = state[name]
        m = torch.lerp(slots["exp_avg"], g, per_member(one_minus_beta1, p))
        v = torch.addcmul(slots["exp_avg_sq"] * beta2, g, g, value=1 - beta2)
        denom = safe_sqrt(v).div(bias_correction2_sqrt).add(eps)
        # addcdiv takes only a scalar value; (step_size * m) / denom is torch's order.
        new_params[name] = torch.addcdiv(p, m * per_member(neg_step_size, p), denom)
        new_state[name] = {"exp_avg": m, "exp_avg_sq": v}
    return new_params, new_state


def adam_in_place(
    params: Mapping[str, Tensor],
    grads: Mapping[str, Tensor],
    state: State,
    hyper: Hyper,
    step: int,
    *,
    decoupled: bool,
) -> None:
    """:func:`adam_update` written straight into ``params`` and ``state``.

    The same kernels in the same order, each writing into the tensor it replaces, so the
    bits are :func:`adam_update`'s; no write-back copies. ``sqrt`` stands for
    :func:`~attractor.optim.base.safe_sqrt`, whose extra passes only give ``v == 0`` a
    finite derivative (nothing differentiates this step): it is ``sqrt`` bit for bit for
    every ``v >= 0``, and ``v`` never gets below 0.
    """
    lr, beta1, wd = hyper.lr.double(), hyper.momentum.double(), hyper.weight_decay.double()
    beta2, eps = hyper.beta2, hyper.eps
    decay = 1 - lr * wd
    one_minus_beta1 = 1 - beta1
    neg_step_size = -lr / (1 - beta1**step)
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    for name, p in params.items():
        g = grads[name]
        if decoupled:
            p.mul_(per_member(decay, p))
        else:
            g = torch.addcmul(g, p, per_member(wd, p))
        slots = state[name]
        m = slots["exp_avg"].lerp_(g, per_member(one_minus_beta1, p))
        v = slots["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = v.sqrt().div_(bias_correction2_sqrt).add_(eps)
        p.addcdiv_(m * per_member(neg_step_size, p), denom)


class Adam:
    """Functional ``torch.optim.Adam`` (``decoupled=False``) or ``AdamW`` (``decoupled=True``)."""

    def __init__(self, decoupled: bool = False) -> None:
        self.decoupled = decoupled
        self.name = "adamw" if decoupled else "adam"

    def init(self, params: Mapping[str, Tensor]) -> State:
        """Zero first and second moments per parameter."""
        return {
            name: {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
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
        """One Adam(W) step, pure (differentiable in params, state and hyper)."""
        check_members(params, hyper, None)
        return adam_update(params, grads, state, hyper, step, decoupled=self.decoupled)

    def step(
        self,
        params: Mapping[str, Tensor],
        grads: Mapping[str, Tensor],
        state: State,
        hyper: Hyper,
        step: int,
        active: Tensor | None = None,
    ) -> None:
        """One Adam(W) step for every member, in place: :func:`adam_in_place`, the bits of
        :func:`adam_update`.
        """
        check_members(params, hyper, active)
        updated = [*params.values(), *(t for slots in state.values() for t in slots.values())]
        with torch.no_grad(), inactive_kept(updated, active):
            adam_in_place(params, grads, state, hyper, step, decoupled=self.decoupled)
