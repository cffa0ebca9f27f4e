"""SGD with momentum, Nesterov and L2 weight decay, per member, as ``torch.optim.SGD``.

Formula order (dampening 0)::

    g = grad + wd * p
    buf = momentum * buf + g          # buf starts at 0, so the first step's buf is g
    g = g + momentum * buf if nesterov else buf
    p = p - lr * g

A member with momentum 0 gets plain SGD (``0 * buf + g == g``), as torch's no-buffer path.

References:
    Sutskever et al., "On the importance of initialization and momentum in deep
    learning", ICML 2013.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from attractor.optim.base import Hyper, State, apply_update, check_members, per_member


class SGD:
    """Functional ``torch.optim.SGD`` for ``[members, ...]`` parameters."""

    name = "sgd"

    def init(self, params: Mapping[str, Tensor]) -> State:
        """A zero momentum buffer per parameter."""
        return {name: {"momentum_buffer": torch.zeros_like(p)} for name, p in params.items()}

    def step(
        self,
        params: Mapping[str, Tensor],
        grads: Mapping[str, Tensor],
        state: State,
        hyper: Hyper,
        step: int,
        active: Tensor | None = None,
    ) -> None:
        """One SGD step for every member, in place; see the module docstring."""
        check_members(params, hyper, active)
        neg_lr = -hyper.lr.double()
        momentum = hyper.momentum.double()
        weight_decay = hyper.weight_decay.double()
        # With no decay anywhere, grad + 0 * p == grad for every finite p: skipping the
        # term saves a full copy of every gradient per step and changes no value.
        no_decay = not bool(weight_decay.any())

        def update(p: Tensor, grad: Tensor, slots: dict[str, Tensor]) -> None:
            mom = per_member(momentum, p)
            buf = slots["momentum_buffer"]
            if no_decay:
                g = grad.clone() if hyper.nesterov else grad  # step never changes grads
            else:
                g = torch.addcmul(grad, p, per_member(weight_decay, p))
            buf.mul_(mom).add_(g)
            if hyper.nesterov:
                g.addcmul_(buf, mom)
            else:
                g = buf
            p.addcmul_(g, per_member(neg_lr, p))

        apply_update(params, grads, state, active, update)
