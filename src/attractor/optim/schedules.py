"""Learning-rate schedules: a factor the caller multiplies into every member's lr.

``step`` counts from 1 to ``total_steps``. Warm-up lasts ``ceil(warmup_fraction * total)``
steps and rises linearly from ``1 / warmup`` to 1; cosine decay follows
``0.5 * (1 + cos(pi * t / T))`` with ``t = step - 1`` over its ``T`` steps, so it starts at 1
and would reach 0 one step after the last. ``step`` decay multiplies the lr by ``gamma`` at
every milestone, a share of training (``[0.5, 0.75]`` with ``gamma = 0.1``: the CIFAR
ResNet schedule of He et al. 2016, open_lth's 80 and 120 of 160 epochs), as
``torch.optim.lr_scheduler.MultiStepLR``: steps after ``ceil(m * total)`` are decayed.

References:
    Loshchilov and Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017.
    Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", 2017 (warm-up).
    He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (step decay).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from attractor.config import TrainerConfig
from attractor.errors import UserError


@dataclass(frozen=True)
class Span:
    """What a schedule needs besides the step: the run's length and its schedule settings."""

    total: int
    warmup: int
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1


def _cosine(t: int, span: int) -> float:
    """``0.5 * (1 + cos(pi * t / span))`` for ``t`` clamped to ``[0, span]``."""
    t = min(max(t, 0), span)
    return 0.5 * (1.0 + math.cos(math.pi * t / span)) if span > 0 else 1.0


def _constant(step: int, span: Span) -> float:
    return 1.0


def _cosine_schedule(step: int, span: Span) -> float:
    return _cosine(step - 1, span.total)


def _warmup_cosine(step: int, span: Span) -> float:
    if step <= span.warmup:
        return step / span.warmup
    return _cosine(step - span.warmup - 1, span.total - span.warmup)


def _linear_warmup(step: int, span: Span) -> float:
    return step / span.warmup if step <= span.warmup else 1.0


def _step_decay(step: int, span: Span) -> float:
    return span.gamma ** sum(step > m for m in span.milestones)


SCHEDULES: dict[str, Callable[[int, Span], float]] = {
    "constant": _constant,
    "cosine": _cosine_schedule,
    "warmup-cosine": _warmup_cosine,
    "linear-warmup": _linear_warmup,
    "step": _step_decay,
}
"""Schedule name -> ``(step, span) -> factor``."""


def warmup_steps(total_steps: int, warmup_fraction: float) -> int:
    """``ceil(warmup_fraction * total_steps)``, immune to float noise (0.1 * 30 is 3, not 4)."""
    return math.ceil(round(warmup_fraction * total_steps, 9))


def lr_factor(
    schedule: str,
    step: int,
    total_steps: int,
    warmup_fraction: float,
    milestones: Sequence[float] = (0.5, 0.75),
    gamma: float = 0.1,
) -> float:
    """The factor in ``[0, 1]`` that ``schedule`` puts on the lr at ``step`` (from 1).

    ``milestones`` (shares of training) and ``gamma`` are the ``step`` schedule's.

    Raises:
        UserError: unknown schedule name, a warm-up fraction or milestone outside ``[0, 1]``.
    """
    fn = SCHEDULES.get(schedule)
    if fn is None:
        raise UserError(f"unknown lr schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    if not 0.0 <= warmup_fraction <= 1.0:
        raise UserError(f"warmup_fraction must be in [0, 1]; got {warmup_fraction}")
    if any(not 0.0 <= m <= 1.0 for m in milestones):
        raise UserError(f"milestones are shares of training in [0, 1]; got {list(milestones)}")
    if step < 1 or total_steps < 1:
        raise ValueError(
            f"step and total_steps count from 1; got step={step}, total_steps={total_steps}"
        )
    span = Span(
        total_steps,
        warmup_steps(total_steps, warmup_fraction),
        tuple(warmup_steps(total_steps, m) for m in milestones),
        gamma,
    )
    return fn(step, span)


def trainer_lr_factor(trainer: TrainerConfig, step: int, total_steps: int) -> float:
    """:func:`lr_factor` with a ``[trainer]`` table's schedule settings."""
    return lr_factor(
        trainer.schedule,
        step,
        total_steps,
        trainer.warmup_fraction,
        trainer.milestones,
        trainer.gamma,
    )
