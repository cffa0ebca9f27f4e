"""Verdict lines of experiments above a run: the world level and stabilize.

Each reads an experiment's stored JSON (never recomputes) and judges its interval the way
:mod:`attractor.measure.verdict` does: "yes" only when the whole interval is on the good
side of the threshold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attractor.measure.verdict_lines import Status, VerdictLine, finite, judge
from attractor.measure.verdict_questions import bracket, number, pct

#: A world is brought to one basin when at least this share of member x start pairs
#: reaches it, judged on the whole 95 % interval: a few stray starts are noise, a tenth
#: of them is a second basin.
WORLD_SHARE = 0.95


def world_line(data: Mapping[str, Any]) -> VerdictLine | None:
    """Does the model bring its world to one basin from the default starts (``attractor world``)?

    The basin share at the smallest perturbation scale with its 95 % interval, against
    :data:`WORLD_SHARE`; None where the result holds no share.
    """
    summary = data.get("summary") or {}
    share, low, high = (number(summary.get(k)) for k in ("basin_share", "low", "high"))
    if share is None:
        return None
    status: Status = "unclear"
    if finite(low) and finite(high):
        assert low is not None and high is not None
        status = "yes" if low >= WORLD_SHARE else "no" if high < WORLD_SHARE else "unclear"
    target = "reach the goal" if summary.get("has_goal") else "end in the majority basin"
    scale = number(summary.get("scale"))
    where = "" if scale is None else f" from starts at {scale:g}x the default range"
    answer = f"{pct(share)}{bracket(low, high)} of member x start pairs {target}{where}"
    return VerdictLine(
        id="world",
        question="Does the model bring its world to one basin?",
        answer=answer,
        status=status,
        value=share,
        low=low,
        high=high,
        interval="95 % interval" if low is not None else "",
        threshold=WORLD_SHARE,
        yardstick=f"basin share >= {pct(WORLD_SHARE, 0)} over the whole interval",
        section="world",
    )


def stabilize_line(data: Mapping[str, Any]) -> VerdictLine | None:
    """Does the trainer ``attractor stabilize`` chose spread less than the starting one on
    seeds the search never saw?

    The paired difference (chosen minus start) of the spread with its 95 % interval, against
    0; None where the result holds no confirmation.
    """
    spread = (data.get("confirmation") or {}).get("spread") or {}
    value, low, high = (number(spread.get(k)) for k in ("difference", "low", "high"))
    if value is None:
        return None
    name = (data.get("settings") or {}).get("spread", "spread")
    status = judge(low, high, 0.0)
    interval = "" if low is None or high is None else f" [{low:+.3g}, {high:+.3g}]"
    if status == "yes":
        answer = f"the chosen trainer's {name} is lower on fresh seeds: {value:+.3g}{interval}"
    elif status == "no":
        answer = f"the chosen trainer's {name} is not lower on fresh seeds: {value:+.3g}{interval}"
    else:
        answer = (
            f"not confirmed: the chosen trainer's {name} differs by {value:+.3g}{interval} "
            "on fresh seeds, an interval that reaches 0"
        )
    return VerdictLine(
        id="stabilize",
        question="Does the chosen trainer spread less than the starting one on fresh seeds?",
        answer=answer,
        status=status,
        value=value,
        low=low,
        high=high,
        interval="paired 95 % interval (chosen - start)" if low is not None else "",
        threshold=0.0,
        yardstick="chosen - start spread below 0 over the whole paired interval",
        section="stabilize",
    )


#: The comparison page's questions, by the measure of the paired table that answers each.
_COMPARED = {
    "pairwise_js": "Does run A spread less than run B (pairwise Jensen-Shannon divergence)?",
    "disagreement": "Do run A's members disagree less often than run B's?",
    "accuracy": "Is run A more accurate than run B?",
}


def compare_lines(data: Mapping[str, Any]) -> list[VerdictLine]:
    """Two runs side by side (``attractor report A B``): for the spread (pairwise JS,
    disagreement) and accuracy, whether A is better with its paired 95 % interval of A - B
    wholly on A's side of 0 ("yes"), wholly on B's ("no"), or reaching 0 ("unclear").
    """
    rows = {r.get("measure"): r for r in data.get("paired") or [] if isinstance(r, dict)}
    lines = []
    for measure, question in _COMPARED.items():
        row = rows.get(measure)
        if row is None:
            continue
        value, low, high = (number(row.get(k)) for k in ("difference", "low", "high"))
        if value is None:
            continue
        if row.get("better") == "higher":  # A is better when A - B is above 0: judge B - A
            flipped = [None if x is None else -x for x in (high, low)]
            status = judge(flipped[0], flipped[1], 0.0)
        else:
            status = judge(low, high, 0.0)
        interval = "" if low is None or high is None else f" [{low:+.3g}, {high:+.3g}]"
        verb = {"yes": "A is better", "no": "B is better", "unclear": "no clear difference"}
        answer = f"{verb.get(status, status)}: A - B = {value:+.3g}{interval} ({measure})"
        lines.append(
            VerdictLine(
                id=f"compare-{measure}",
                question=question,
                answer=answer,
                status=status,
                value=value,
                low=low,
                high=high,
                interval="paired 95 % interval of A - B" if low is not None else "",
                threshold=0.0,
                yardstick="the paired interval of A - B wholly on one side of 0",
                section="compare-paired",
            )
        )
    return lines
