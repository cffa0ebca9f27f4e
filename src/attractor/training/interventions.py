"""The gradient interventions of a chunk, each member with its own value: SAM and clipping.

A member's gradient is transformed with its own ``rho`` / max norm, elementwise and from
its own gradient norm, so a member does not depend on its chunk; a member with the
intervention off (rho 0, max norm inf) is left exactly as it is. The helpers line an
``[n]`` per-member tensor up with ``[n, ...]`` tensors.

References:
    Foret, Kleiner, Mobahi & Neyshabur, "Sharpness-Aware Minimization for Efficiently
    Improving Generalization", ICLR 2021; Pascanu, Mikolov & Bengio, "On the difficulty of
    training recurrent neural networks", ICML 2013 (clipping by the global norm).
"""

from __future__ import annotations

import torch
from torch import Tensor


def sam_point(
    params: dict[str, Tensor], grads: dict[str, Tensor], rho: Tensor
) -> dict[str, Tensor]:
    """SAM's ascent point ``w + rho g / |g|`` of every member (``rho [n]``), where the second
    gradient is taken (and applied at ``w`` itself; the loss reported is at ``w``). A member
    with rho 0 stays exactly at ``w``: its second gradient is its first.
    """
    # (reciprocal times rho is what ``rho / norms`` computes for a Python float.)
    norms = member_norms(grads)
    scale = (norms + 1e-12).reciprocal() * per_member(rho, norms)
    moved = rho > 0
    return {
        k: torch.where(
            member_mask(moved, v),
            v.detach() + per_member(scale, v) * grads[k],
            v.detach(),
        )
        for k, v in params.items()
    }


def clip_per_member(grads: dict[str, Tensor], max_norm: Tensor) -> dict[str, Tensor]:
    """As ``torch.nn.utils.clip_grad_norm_``, per member (``max_norm [n]``): scale by
    ``max_norm / (norm + 1e-6)`` where that is below 1; exactly 1 for a member without a max
    norm (inf).
    """
    norms = member_norms(grads)
    factor = ((norms + 1e-6).reciprocal() * per_member(max_norm, norms)).clamp(max=1.0)
    factor = torch.where(member_mask(max_norm.isinf(), norms), 1.0, factor)
    return {k: per_member(factor, g) * g for k, g in grads.items()}


def member_norms(grads: dict[str, Tensor]) -> Tensor:
    """``[n]`` each member's global L2 gradient norm (over all its parameters)."""
    return torch.stack([g.flatten(1).pow(2).sum(1) for g in grads.values()]).sum(0).sqrt()


def per_member(values: Tensor, like: Tensor) -> Tensor:
    """``values [n]`` shaped to multiply ``like [n, ...]`` member by member."""
    return values.to(device=like.device, dtype=like.dtype).view(_shape(like))


def member_mask(mask: Tensor, like: Tensor) -> Tensor:
    """``mask [n]`` (bool) shaped to select members of ``like [n, ...]`` in ``torch.where``."""
    return mask.to(like.device).view(_shape(like))


def _shape(like: Tensor) -> tuple[int, ...]:
    """The view that lines an ``[n]`` tensor up with ``like [n, ...]``."""
    return (-1,) + (1,) * (like.dim() - 1)


def column(values: list[float]) -> Tensor:
    """``[n]`` per-member values in float64 (as Python floats; each use rounds them once)."""
    return torch.tensor(values, dtype=torch.float64)
