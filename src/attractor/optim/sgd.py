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

from attractor.optim.base import Hyper, Params, State, check_members, per_member, write_back


def sgd_update(
    params: Mapping[str, Tensor],
    grads: Mapping[str, Tensor],
    state: State,
    hyper: Hyper,
    *,
    decay: bool = True,
) -> tuple[Params, State]:
    """One SGD step for every member, out of place; see the module docstring.

    Args:
        params, grads: ``[members, *shape]`` per parameter name.
        state: ``{name: {"momentum_buffer": [members, *shape]}}``.
        hyper: per-member lr (schedule included), momentum and weight decay.
        decay: add ``wd * p`` to the gradient. The engine passes False when no member has
            weight decay: ``grad + 0 * p`` is ``grad`` for finite ``p``, and skipping it
            saves a pass over every gradient. A tangent through ``wd`` needs it True.

    Returns:
        the new parameters and state (the inputs are not modified).
    """
    neg_lr = -hyper.lr.double()
    momentum = hyper.momentum.double()
    weight_decay = hyper.weight_decay.double()
    new_params: Params = {}
    new_state: State = {}
    for name, p in params.items():
        mom = per_member(momentum, p)
        g = torch.addcmul(grads[name], p, per_member(weight_decay, p)) if decay else grads[name]
        buf = torch.mul(state[name]["momentum_buffer"], mom).add(g)
        direction = torch.addcmul(g, buf, mom) if hyper.nesterov else buf
        new_params[name] = torch.addcmul(p, direction, per_member(neg_lr, p))
        new_state[name] = {"momentum_buffer": buf}
    return new_params, new_state


class SGD:
    """Functional ``torch.optim.SGD`` for ``[members, ...]`` parameters."""

    name = "sgd"

    def init(self, params: Mapping[str, Tensor]) -> State:
        """A zero momentum buffer per parameter."""
        return {name: {"momentum_buffer": torch.zeros_like(p)} for name, p in params.items()}

    def update(
        self,
        params: Mapping[str, Tensor],
        grads: Mapping[str, Tensor],
        state: State,
        hyper: Hyper,
        step: int,
    ) -> tuple[Params, State]:
        """One SGD step, pure (differentiable in params, state, hyper): :func:`sgd_update`."""
        check_members(params, hyper, None)
        return sgd_update(params, grads, state, hyper)

    def step(
        self,
        params: Mapping[str, Tensor],
        grads: Mapping[str, Tensor],
        state: State,
        hyper: Hyper,
        step: int,
        active: Tensor | None = None,
    ) -> None:
        """One SGD step for every member, in place: :func:`sgd_update` written back."""
        check_members(params, hyper, active)
        with torch.no_grad():
            decay = bool(hyper.weight_decay.any())
            new_params, new_state = sgd_update(params, grads, state, hyper, decay=decay)
        write_back(params, state, new_params, new_state, active)
