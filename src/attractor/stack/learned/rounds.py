"""What both trainers of level 3 (images and text) do the same way each round: turn a
round's rewards into sampling weights, and take one Adam step of every member at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from attractor.training.forward import Params


def selection_weights(scores: Tensor, method: str, keep: int, temperature: float) -> Tensor:
    """``scores [m, n]`` -> the round's sampling weights ``[m, n]`` (rows sum to 1):
    ``best-of-n`` puts ``1 / keep`` on each member's ``keep`` best samples, ``reward-weighted``
    ``softmax(score / temperature)`` on all of them.
    """
    if method == "best-of-n":
        top = scores.topk(keep, dim=-1).indices
        weights = torch.zeros_like(scores, dtype=torch.float64)
        return weights.scatter(-1, top, 1.0 / keep)
    return (scores.to(torch.float64) / temperature).softmax(-1)


def adam_step(
    theta: Params,
    loss: Callable[[Params], Tensor],
    optimizer: Any,
    state: Any,
    hyper: Any,
    step: int,
) -> tuple[Params, Any]:
    """One step of the stacked Adam on ``loss(live params) -> [m]``: the members' losses are
    summed (they share no parameters, so each gets exactly its own gradient).
    """
    live = {k: v.requires_grad_(True) for k, v in theta.items()}
    grads = torch.autograd.grad(loss(live).sum(), list(live.values()))
    with torch.no_grad():
        return optimizer.update(
            {k: v.detach() for k, v in live.items()},
            dict(zip(live, grads, strict=True)),
            state,
            hyper,
            step,
        )


__all__ = ["adam_step", "selection_weights"]
