"""A member's complete training state at a step: what a spawned child or a resumed member
starts from (:class:`Start`)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from attractor.training.forward import Params


@dataclass(frozen=True, eq=False)
class Start:
    """A member's complete training state after ``step`` optimizer steps: enough to go on.

    Children spawned from a parent (Frankle et al. 2020) start here instead of at their
    row's initial weights; their own row still sets their data order, label noise and
    hyperparameters. Tensors are one member's, without the member dimension.

    Attributes:
        step: optimizer steps already taken; training continues with step ``step + 1``,
            so the lr schedule and Adam's bias correction go on where they were.
        params: parameter name -> tensor.
        buffers: buffer name -> tensor (BatchNorm running statistics, ...).
        optimizer_state: parameter name -> slot name -> tensor (SGD ``momentum_buffer``,
            Adam ``exp_avg`` / ``exp_avg_sq``).
        rng: the forward pass's random-number state there (dropout; the loop strategy),
            which a *resumed* member continues; ``None`` where it was not kept.
        path_length: with ``run.track_path``, the weight-space path walked up to ``step``,
            which a resumed member goes on adding to (a spawned child starts at 0).
        average: with the member's ``ema_decay`` or ``swa_start``, its averaged weights (its
            model) at ``step``; ``None``: they start as the weights themselves.
        averaged: SWA: how many steps' weights ``average`` is the mean of.

    References:
        Frankle et al., "Linear Mode Connectivity and the Lottery Ticket Hypothesis", ICML 2020.
    """

    step: int
    params: Params
    buffers: Params
    optimizer_state: dict[str, dict[str, Tensor]]
    rng: Tensor | None = None
    path_length: float = 0.0
    average: Params | None = None
    averaged: int = 0
