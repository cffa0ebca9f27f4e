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

from attractor.optim.base import Hyper, Params, State, check_members, inactive_kept, per_member


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


def sgd_in_place(
    params: Mapping[str, Tensor],
    grads: Mapping[str, Tensor],
    state: State,
    hyper: Hyper,
    *,
    decay: bool = True,
) -> None:
    """:func:`sgd_update` written straight into ``params`` and ``state``.

    The very same kernels in the same order, each writing into the tensor it replaces
    (``mul_`` / ``add_`` / ``addcmul_`` compute what ``mul`` / ``add`` / ``addcmul`` do), so
    the bits are :func:`sgd_update`'s. Three passes over a parameter's memory and no new
    tensor, where the out-of-place update and its write-back take five passes and three new
    tensors: about 4x less time for 64 digits-mlp members (issue 20). Not kept, because they
    change bits or depend on the chunk: ``addcmul`` for the buffer (one pass fewer, but a
    fused multiply-add), ``torch.compile`` of this function (the same), and
    ``torch._fused_sgd_`` (one scalar lr and momentum for all members, its own tail loop).
    """
    neg_lr = -hyper.lr.double()
    momentum = hyper.momentum.double()
    weight_decay = hyper.weight_decay.double()
    for name, p in params.items():
        mom = per_member(momentum, p)
        g = torch.addcmul(grads[name], p, per_member(weight_decay, p)) if decay else grads[name]
        buf = state[name]["momentum_buffer"].mul_(mom).add_(g)
        direction = torch.addcmul(g, buf, mom) if hyper.nesterov else buf
        p.addcmul_(direction, per_member(neg_lr, p))


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
        """One SGD step for every member, in place: :func:`sgd_in_place`, the bits of
        :func:`sgd_update`.
        """
        check_members(params, hyper, active)
        updated = [*params.values(), *(s["momentum_buffer"] for s in state.values())]
        with torch.no_grad(), inactive_kept(updated, active):
            sgd_in_place(params, grads, state, hyper, decay=bool(hyper.weight_decay.any()))
