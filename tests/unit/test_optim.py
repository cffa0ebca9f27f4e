"""Learning-rate schedules: closed-form values, monotone decay and warm-up, the unit interval.

The optimizers' conformance suite is ``tests/conformance/test_optimizers.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attractor.errors import UserError
from attractor.optim import SCHEDULES, lr_factor

# --------------------------------------------------------------------------- schedules


def _cos(t: float, span: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * t / span))


@pytest.mark.parametrize(
    ("schedule", "step", "total", "warmup", "expected"),
    [
        ("constant", 1, 10, 0.0, 1.0),
        ("constant", 10, 10, 0.5, 1.0),
        ("cosine", 1, 4, 0.0, 1.0),
        ("cosine", 2, 4, 0.0, 0.5 + 0.25 * math.sqrt(2)),
        ("cosine", 3, 4, 0.0, 0.5),
        ("cosine", 4, 4, 0.0, 0.5 - 0.25 * math.sqrt(2)),
        ("cosine", 9, 4, 0.0, 0.0),  # past the end: clamped
        ("warmup-cosine", 1, 10, 0.2, 0.5),  # warm-up of ceil(0.2 * 10) = 2 steps
        ("warmup-cosine", 2, 10, 0.2, 1.0),
        ("warmup-cosine", 3, 10, 0.2, 1.0),  # cosine over the other 8 steps starts at 1
        ("warmup-cosine", 7, 10, 0.2, 0.5),
        ("warmup-cosine", 10, 10, 0.2, _cos(7, 8)),
        ("warmup-cosine", 3, 10, 0.0, _cos(2, 10)),  # no warm-up: plain cosine
        ("linear-warmup", 1, 10, 0.25, 1 / 3),  # ceil(2.5) = 3 warm-up steps
        ("linear-warmup", 2, 10, 0.25, 2 / 3),
        ("linear-warmup", 3, 10, 0.25, 1.0),
        ("linear-warmup", 10, 10, 0.25, 1.0),
        ("linear-warmup", 1, 30, 0.1, 1 / 3),  # 0.1 * 30 is 3 steps, not ceil(3.0000000000000004)
    ],
)
def test_schedule_values(
    schedule: str, step: int, total: int, warmup: float, expected: float
) -> None:
    assert lr_factor(schedule, step, total, warmup) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("schedule", ["cosine", "warmup-cosine"])
def test_cosine_decays_monotonically(schedule: str) -> None:
    values = [lr_factor(schedule, s, 50, 0.1) for s in range(6, 51)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert values[-1] < 0.01


@pytest.mark.parametrize("schedule", ["warmup-cosine", "linear-warmup"])
def test_warmup_starts_small_and_reaches_one(schedule: str) -> None:
    values = [lr_factor(schedule, s, 100, 0.1) for s in range(1, 11)]
    assert values[0] == pytest.approx(0.1)
    assert all(a < b for a, b in zip(values, values[1:], strict=False))
    assert values[-1] == 1.0


@settings(max_examples=50, deadline=None)
@given(
    schedule=st.sampled_from(sorted(SCHEDULES)),
    total=st.integers(1, 500),
    data=st.data(),
    warmup=st.floats(0.0, 1.0),
)
def test_schedule_factor_in_unit_interval(
    schedule: str, total: int, data: st.DataObject, warmup: float
) -> None:
    step = data.draw(st.integers(1, total))
    assert 0.0 <= lr_factor(schedule, step, total, warmup) <= 1.0


def test_unknown_schedule_lists_known_ones() -> None:
    with pytest.raises(UserError, match="warmup-cosine"):
        lr_factor("triangle", 1, 10, 0.0)
    with pytest.raises(UserError, match="warmup_fraction"):
        lr_factor("cosine", 1, 10, 1.5)


def test_step_schedule_is_torchs_multistep_lr() -> None:
    """The ``step`` schedule against torch.optim.lr_scheduler.MultiStepLR (the oracle): a
    200-step run decays at steps after 100 and 150 (milestones 0.5 and 0.75)."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[100, 150], gamma=0.1)
    for step in range(1, 201):
        expected = optimizer.param_groups[0]["lr"]  # the lr this step is taken with
        assert lr_factor("step", step, 200, 0.0, (0.5, 0.75), 0.1) == pytest.approx(expected)
        optimizer.step()
        scheduler.step()
    with pytest.raises(UserError, match="milestones"):
        lr_factor("step", 1, 10, 0.0, (1.5,))
