"""One line of a verdict and how it is judged: the type, the interval rule, the number formats.

:func:`judge` is the one rule every question uses: "yes" only when the whole interval is
on the good side of the threshold, "no" when all of it is on the other side, "unclear"
when it straddles the threshold or there is none (:mod:`attractor.measure.verdict`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from attractor.runs.results import strict_json

Status = Literal["yes", "no", "unclear", "not measured"]

#: Error barrier below which two networks count as linearly connected: Frankle et al.
#: (2020) call a network stable to SGD noise when its error barrier is below 2 %.
BARRIER = 0.02
#: Share of the outcome's variance from which one factor "drives" the spread: more than half.
DRIVER_SHARE = 0.5
#: z of the 95 % Wilson interval of a share (basin majority, divergence rate).
_Z = 1.959963984540054


@dataclass(frozen=True)
class VerdictLine:
    """One question and its computed answer.

    Attributes:
        id: stable key of the question (``basins``, ``disagreement``, ``lmc``, ...).
        question: the question, as a reader would ask it.
        answer: one sentence with the value and its interval.
        status: ``yes`` / ``no`` / ``unclear`` / ``not measured`` (see the module docstring).
        value, low, high: the number judged and its interval (None where there is none).
        interval: what ``[low, high]`` is (a 95 % interval, or a range over pairs).
        threshold: the number the interval is judged against (None: a count or a category).
        yardstick: what the threshold is and where it comes from.
        section: the id of the report section that backs the line.
    """

    id: str
    question: str
    answer: str
    status: Status
    value: float | None = None
    low: float | None = None
    high: float | None = None
    interval: str = ""
    threshold: float | None = None
    yardstick: str = ""
    section: str = ""

    def text(self) -> str:
        """The line as a terminal shows it, ``[status] answer``; the answer names what it was
        compared with, the yardsticks follow once below all lines (:meth:`Verdict.text`).
        """
        if self.status == "not measured":  # the answer alone would not say which question
            return f"[{self.status}] {self.question} ({self.answer})"
        return f"[{self.status}] {self.answer}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (NaN as null)."""
        return strict_json(asdict(self))


# ---- judging and formatting -----------------------------------------------------------------
def judge(low: float | None, high: float | None, threshold: float) -> Status:
    """``yes`` when the whole interval is below ``threshold``, ``no`` when all of it is at or
    above, ``unclear`` when it straddles or is missing.
    """
    if not finite(low) or not finite(high):
        return "unclear"
    assert low is not None and high is not None
    if high < threshold:
        return "yes"
    if low >= threshold:
        return "no"
    return "unclear"


def judge_above(low: float | None, high: float | None, threshold: float) -> Status:
    """``yes`` when the whole interval is above ``threshold``, ``no`` when all of it is at or
    below, ``unclear`` when it straddles or is missing: :func:`judge` of the mirrored interval.
    """
    return judge(None if high is None else -high, None if low is None else -low, -threshold)


def judge_at_least(low: float | None, high: float | None, threshold: float) -> Status:
    """``yes`` when the whole interval is at or above ``threshold``, ``no`` when all of it is
    below, ``unclear`` when it straddles or is missing.
    """
    if not finite(low) or not finite(high):
        return "unclear"
    assert low is not None and high is not None
    if low >= threshold:
        return "yes"
    if high < threshold:
        return "no"
    return "unclear"


def wilson(successes: int, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of the share ``successes / n`` (``n >= 1``).

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0 or n of n
    (32 of 32 members in one basin still leaves room for a basin of about 11 %).

    References:
        Wilson (1927), JASA 22(158).
    """
    p, z2 = successes / n, _Z * _Z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = _Z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def finite(value: Any) -> bool:
    """Whether ``value`` is a finite number (None, NaN and strings are not)."""
    return isinstance(value, int | float) and math.isfinite(value)


def pct(value: float, digits: int = 1) -> str:
    """A share as "3.2 %"."""
    return f"{100 * value:.{digits}f} %"


def bracket(low: float | None, high: float | None, digits: int = 1) -> str:
    """An interval of shares in percent, "[2.0, 4.4]" ("" without one)."""
    if not finite(low) or not finite(high):
        return ""
    assert low is not None and high is not None
    return f" [{100 * low:.{digits}f}, {100 * high:.{digits}f}]"


def number(value: Any) -> float | None:
    """``value`` as a float, None where it is no finite number (a null in strict JSON)."""
    return float(value) if finite(value) else None
