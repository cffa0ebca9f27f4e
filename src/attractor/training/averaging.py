"""A member's model as an average of its weights: EMA or SWA, each member with its own."""

from __future__ import annotations

import math

import torch

from attractor.config import TrainerConfig
from attractor.training.forward import Params
from attractor.training.interventions import column, member_mask, per_member
from attractor.training.start import Start


class WeightAverage:
    """Each member's averaged weights, its model under its ``ema_decay`` or ``swa_start``.

    EMA (Polyak averaging): ``a <- d a + (1 - d) w`` after every step, from ``a = w`` at the
    start. SWA (Izmailov et al. 2018): ``a = w`` until step ``ceil(swa_start steps)``, from
    then on the running mean of the weights after every step (the ``c``-th:
    ``a <- (1 - 1/c) a + w / c``). A member with neither keeps ``a = w`` exactly. One
    update, ``a <- keep a + take w`` with per-member ``keep`` and ``take``, elementwise, so a
    member's average does not depend on its chunk; training itself never sees it.

    References:
        Polyak and Juditsky, "Acceleration of Stochastic Approximation by Averaging", 1992;
        Izmailov et al., "Averaging Weights Leads to Wider Optima", UAI 2018.
    """

    def __init__(self, trainers: list[TrainerConfig], params: Params, count: list[int]) -> None:
        self.decay = column([t.ema_decay for t in trainers])
        self.swa_start = [t.swa_start for t in trainers]
        #: ``[n]`` bool: the members that average (the others' model is their weights).
        self.kept = (self.decay > 0) | torch.tensor([s is not None for s in self.swa_start])
        self.params = params
        #: ``[n]`` SWA: how many steps' weights each member's average is the mean of.
        self.count = torch.tensor(count, dtype=torch.int64)

    @classmethod
    def of(
        cls, trainers: list[TrainerConfig], params: Params, start: list[Start] | None
    ) -> WeightAverage | None:
        if not any(t.ema_decay or t.swa_start is not None for t in trainers):
            return None
        # A member that averages goes on from its start state's average where it kept one;
        # any other starts from its weights (count 0).
        goes_on: list[tuple[Params, int] | None] = [
            (s.average, s.averaged)
            if s is not None and s.average is not None and (t.ema_decay or t.swa_start is not None)
            else None
            for t, s in zip(trainers, start or [None] * len(trainers), strict=True)
        ]
        average = {
            k: torch.stack([v[i].detach() if g is None else g[0][k] for i, g in enumerate(goes_on)])
            for k, v in params.items()
        }
        count = [0 if g is None else g[1] for g in goes_on]
        return cls(trainers, average, count)

    @torch.no_grad()
    def update(self, params: Params, step: int, steps: int) -> None:
        begin = [math.inf if s is None else math.ceil(s * steps) for s in self.swa_start]
        counting = torch.tensor(begin, dtype=torch.float64) <= step
        self.count += counting
        c = self.count.double()
        # float64, then rounded to the weights' dtype (as a Python float is).
        keep = torch.where(counting, (c - 1) / c, self.decay)
        take = torch.where(counting, 1 / c, 1 - self.decay)
        copy = ~counting & (self.decay == 0)  # no average yet (SWA before its start) or none
        for k, a in self.params.items():
            w = params[k].detach()
            mixed = a * per_member(keep, a) + w * per_member(take, a)
            self.params[k] = torch.where(member_mask(copy, a), w, mixed)
