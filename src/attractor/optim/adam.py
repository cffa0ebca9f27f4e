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

from attractor.optim.base import Hyper, State, apply_update, check_members, per_member


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

    def step(
        self,
        params: Mapping[str, Tensor],
        grads: Mapping[str, Tensor],
        state: State,
        hyper: Hyper,
        step: int,
        active: Tensor | None = None,
    ) -> None:
        """One Adam(W) step for every member, in place; see the module docstring."""
        check_members(params, hyper, active)
        lr, beta1, wd = hyper.lr.double(), hyper.momentum.double(), hyper.weight_decay.double()
        beta2, eps = hyper.beta2, hyper.eps
        # Per-member scalars in float64, rounded once to the param dtype, as torch does
        # with its Python-float hyperparameters.
        decay = 1 - lr * wd
        one_minus_beta1 = 1 - beta1
        neg_step_size = -lr / (1 - beta1**step)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5  # torch's spelling, bit for bit

        def update(p: Tensor, grad: Tensor, slots: dict[str, Tensor]) -> None:
            if self.decoupled:
                p.mul_(per_member(decay, p))
                g = grad
            else:
                g = torch.addcmul(grad, p, per_member(wd, p))
            exp_avg, exp_avg_sq = slots["exp_avg"], slots["exp_avg_sq"]
            exp_avg.lerp_(g, per_member(one_minus_beta1, p))
            exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = exp_avg_sq.sqrt().div_(bias_correction2_sqrt).add_(eps)
            # addcdiv_ takes only a scalar value; (step_size * m) / denom is torch's order.
            p.addcdiv_(exp_avg * per_member(neg_step_size, p), denom)

        apply_update(params, grads, state, active, update)
