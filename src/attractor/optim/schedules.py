"""Learning-rate schedules: a factor the caller multiplies into every member's lr.

``step`` counts from 1 to ``total_steps``. Warm-up lasts ``ceil(warmup_fraction * total)``
steps and rises linearly from ``1 / warmup`` to 1; cosine decay follows
``0.5 * (1 + cos(pi * t / T))`` with ``t = step - 1`` over its ``T`` steps, so it starts at 1
and would reach 0 one step after the last.

References:
    Loshchilov and Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017.
    Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", 2017 (warm-up).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from attractor.errors import UserError


def _cosine(t: int, span: int) -> float:
    """``0.5 * (1 + cos(pi * t / span))`` for ``t`` clamped to ``[0, span]``."""
    t = min(max(t, 0), span)
    return 0.5 * (1.0 + math.cos(math.pi * t / span)) if span > 0 else 1.0


def _constant(step: int, total: int, warmup: int) -> float:
    return 1.0


def _cosine_schedule(step: int, total: int, warmup: int) -> float:
    return _cosine(step - 1, total)


def _warmup_cosine(step: int, total: int, warmup: int) -> float:
    if step <= warmup:
        return step / warmup
    return _cosine(step - warmup - 1, total - warmup)


def _linear_warmup(step: int, total: int, warmup: int) -> float:
    return step / warmup if step <= warmup else 1.0


SCHEDULES: dict[str, Callable[[int, int, int], float]] = {
    "constant": _constant,
    "cosine": _cosine_schedule,
    "warmup-cosine": _warmup_cosine,
    "linear-warmup": _linear_warmup,
}
"""Schedule name -> ``(step, total_steps, warmup_steps) -> factor``."""


def warmup_steps(total_steps: int, warmup_fraction: float) -> int:
    """``ceil(warmup_fraction * total_steps)``, immune to float noise (0.1 * 30 is 3, not 4)."""
    return math.ceil(round(warmup_fraction * total_steps, 9))


def lr_factor(schedule: str, step: int, total_steps: int, warmup_fraction: float) -> float:
    """The factor in ``[0, 1]`` that ``schedule`` puts on the lr at ``step`` (from 1).

    Raises:
        UserError: unknown schedule name or a warm-up fraction outside ``[0, 1]``.
    """
    fn = SCHEDULES.get(schedule)
    if fn is None:
        raise UserError(f"unknown lr schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    if not 0.0 <= warmup_fraction <= 1.0:
        raise UserError(f"warmup_fraction must be in [0, 1]; got {warmup_fraction}")
    if step < 1 or total_steps < 1:
        raise ValueError(
            f"step and total_steps count from 1; got step={step}, total_steps={total_steps}"
        )
    return fn(step, total_steps, warmup_steps(total_steps, warmup_fraction))
