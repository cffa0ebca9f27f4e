"""What both trainers of level 3 (images and text) do the same way: the rounds themselves
(measure, sample and learn, measure again), turning a round's rewards into sampling weights,
and one Adam step of every member at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor

from attractor.optim.adam import Adam
from attractor.optim.base import Hyper
from attractor.training.forward import Params

#: What a trainer keeps of its final evaluation samples (images, texts).
S = TypeVar("S")
#: One step's loss: live stacked parameters -> ``[m]``.
Loss = Callable[[Params], Tensor]
#: Adam's beta1, as ``torch.optim.Adam``'s default.
BETA1 = 0.9


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


@dataclass(frozen=True)
class Climbed(Generic[S]):
    """What :func:`climb` produced: the final parameters, ``proxy`` and ``true`` float64
    ``[m, rounds + 1]`` (column 0: the start), and the last measurement's samples.
    """

    params: Params
    proxy: Tensor
    true: Tensor
    samples: S


def climb(
    params: Params,
    rounds: int,
    lr: float,
    measure: Callable[[Params], tuple[Tensor, Tensor, S]],
    round_losses: Callable[[Params, int], Iterable[Loss]],
    progress: Callable[[int, int], None] | None = None,
) -> Climbed[S]:
    """The loop of level 3, the specification both trainers share::

        measure the start (proxy, true, samples)
        for r in 1..rounds:
            for loss in round_losses(theta, r): one stacked Adam step on loss
            measure again

    ``round_losses`` samples with the current parameters, weights the samples by reward and
    yields each step's loss (drawing its batch as it goes, or up front).
    """
    members = next(iter(params.values())).shape[0]
    theta = {k: v.detach().clone() for k, v in params.items()}
    optimizer, hyper = Adam(), Hyper.uniform(members, lr, momentum=BETA1)
    state, step = optimizer.init(theta), 0
    proxy, true, samples = measure(theta)
    proxies, trues = [proxy], [true]
    for r in range(1, rounds + 1):
        for loss in round_losses(theta, r):
            step += 1
            theta, state = adam_step(theta, loss, optimizer, state, hyper, step)
        proxy, true, samples = measure(theta)
        proxies.append(proxy)
        trues.append(true)
        if progress is not None:
            progress(r, rounds)
    return Climbed(theta, torch.stack(proxies, dim=1), torch.stack(trues, dim=1), samples)


__all__ = ["BETA1", "Climbed", "Loss", "adam_step", "climb", "selection_weights"]
