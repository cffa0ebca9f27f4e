"""Verdict lines of the experiments' pages: world, stabilize, two runs compared, diff,
tangent, hparam-map, shortcuts, trainer2 and evaluator.

Each reads an experiment's stored JSON (never recomputes) and judges its interval the way
:mod:`attractor.measure.verdict` does: "yes" only when the whole interval is on the good
side of the threshold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attractor.measure.verdict_lines import (
    Status,
    VerdictLine,
    bracket,
    finite,
    judge,
    judge_above,
    judge_at_least,
    number,
    pct,
)

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
    status = judge_at_least(low, high, WORLD_SHARE)
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
        # A is better when A - B is above 0 for a higher-is-better measure, else below it.
        better = judge_above if row.get("better") == "higher" else judge
        status = better(low, high, 0.0)
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


def diff_line(data: Mapping[str, Any]) -> VerdictLine | None:
    """Do two models agree within ``--delta`` on every ball (``attractor diff``)? Judged by
    the certificate's verdicts per ball; without a delta, the bounds are stated unjudged."""
    summary = data.get("summary") or {}
    counts = summary.get("verdicts") or {}
    upper, lower = (
        number(summary.get("certified_upper_max")),
        number(summary.get("attained_lower_max")),
    )
    delta = number((data.get("settings") or {}).get("delta"))
    if upper is None:
        return None
    found = "?" if lower is None else f"{lower:.3g}"
    bounds = f"the largest logit difference is between {found} (found) and {upper:.3g} (certified)"
    if delta is None:
        status: Status = "unclear"
        answer = f"{bounds}; give --delta to judge it"
    elif counts.get("falsified"):
        status, answer = (
            "no",
            f"{counts['falsified']} ball(s) hold inputs past delta {delta:g}; {bounds}",
        )
    elif counts.get("unknown"):
        status, answer = (
            "unclear",
            f"{counts['unknown']} ball(s) undecided at delta {delta:g}; {bounds}",
        )
    else:
        status, answer = "yes", f"every ball is certified within delta {delta:g}; {bounds}"
    return VerdictLine(
        id="diff",
        question="Do the two models agree within delta everywhere in the balls?",
        answer=answer,
        status=status,
        value=upper,
        low=lower,
        high=upper,
        interval="found (a lower bound) to certified (an upper bound)",
        threshold=delta,
        yardstick="certified logit difference below --delta on every ball",
        section="disagreement",
    )


def tangent_line(data: Mapping[str, Any]) -> VerdictLine | None:
    """Do perturbations of the weights shrink through training (``attractor tangent``)? The
    leading finite-time Lyapunov exponent, its range over members, against 0."""
    exponent = (data.get("summary") or {}).get("leading_exponent") or {}
    mean, low, high = (number(exponent.get(k)) for k in ("mean", "min", "max"))
    if mean is None:
        return None
    status = judge(low, high, 0.0)
    grow = {"yes": "shrink", "no": "grow", "unclear": "shrink for some members and grow for others"}
    answer = (
        f"perturbations {grow.get(status, status)}: leading exponent {mean:+.3g} per step "
        f"(range {low:+.3g} to {high:+.3g} over members)"
    )
    return VerdictLine(
        id="tangent",
        question="Do perturbations of the weights shrink through training?",
        answer=answer,
        status=status,
        value=mean,
        low=low,
        high=high,
        interval="range over members (min, max)",
        threshold=0.0,
        yardstick="leading finite-time Lyapunov exponent below 0 for every member",
        section="tangent",
    )


#: A good learning-rate range at least this many decades wide counts as a robust trainer.
GOOD_LR_DECADES = 1.0


def hparam_map_lines(data: Mapping[str, Any]) -> list[VerdictLine]:
    """Is the good learning-rate range wide (``attractor hparam-map``)? Per momentum, its
    width in decades with the seed-bootstrap interval, against :data:`GOOD_LR_DECADES`."""
    lines = []
    for row in data.get("ranges") or []:
        width, low, high = (number(row.get(k)) for k in ("width", "low", "high"))
        if width is None:
            continue
        status = judge_at_least(low, high, GOOD_LR_DECADES)
        momentum = row.get("momentum")
        interval = "" if low is None or high is None else f" [{low:.2g}, {high:.2g}]"
        lines.append(
            VerdictLine(
                id=f"hparam-map-{momentum}",
                question=f"Is the good learning-rate range wide at momentum {momentum}?",
                answer=f"{width:.2g} decades wide{interval}",
                status=status,
                value=width,
                low=low,
                high=high,
                interval="95 % seed-bootstrap interval" if low is not None else "",
                threshold=GOOD_LR_DECADES,
                yardstick=f"good-lr range >= {GOOD_LR_DECADES:g} decade over the whole interval",
                section="hparam-map",
            )
        )
    return lines


def shortcuts_lines(data: Mapping[str, Any]) -> list[VerdictLine]:
    """Is each trainer free of the shortcut (``attractor shortcuts``)? Reliance (accuracy with
    the shortcut agreeing minus random) with its interval: "no" when the interval lies above
    0 (reliance), "yes" when it holds 0, "unclear" when it lies below 0."""
    lines = []
    for row in data.get("summary") or []:
        value, low, high = (
            number(row.get(k))
            for k in ("shortcut_reliance", "shortcut_reliance_low", "shortcut_reliance_high")
        )
        if value is None:
            continue
        relies = low is not None and low > 0
        free = high is not None and low is not None and low <= 0 <= high
        status: Status = "no" if relies else "yes" if free else "unclear"
        word = {"no": "relies on", "yes": "shows no reliance on", "unclear": "is unclear about"}
        variant = row.get("variant")
        lines.append(
            VerdictLine(
                id=f"shortcuts-{variant}",
                question=f"Is trainer {variant} free of the shortcut?",
                answer=f"{variant} {word[status]} the shortcut: {pct(value)}{bracket(low, high)}",
                status=status,
                value=value,
                low=low,
                high=high,
                interval="95 % interval" if low is not None else "",
                threshold=0.0,
                yardstick="shortcut reliance: an interval above 0 is reliance",
                section="shortcuts",
            )
        )
    return lines


def trainer2_line(data: Mapping[str, Any]) -> VerdictLine | None:
    """Do the searches return trainers in one basin (``attractor trainer2``)?"""
    basins, trainers = data.get("n_basins"), data.get("n_trainers")
    if not isinstance(basins, int) or not isinstance(trainers, int):
        return None
    status: Status = "yes" if basins == 1 else "no"
    return VerdictLine(
        id="trainer2",
        question="Do searches started from different initial conditions return one basin?",
        answer=f"the {trainers} returned trainers' models land in {basins} basin(s)",
        status=status,
        value=float(basins),
        threshold=1.0,
        yardstick="one basin of the returned trainers' models",
        section="trainer2",
    )


def evaluator_line(data: Mapping[str, Any]) -> VerdictLine | None:
    """Which factor drives the spread of the fine-tuned models (``attractor evaluator``)?
    The largest share of variance with its interval against half the variance."""
    sources = (data.get("summary") or {}).get("sources") or {}
    best = max(
        ((k, v) for k, v in sources.items() if finite(v.get("share"))),
        key=lambda kv: kv[1]["share"],
        default=None,
    )
    if best is None:
        return None
    factor, row = best
    share, low, high = (number(row.get(k)) for k in ("share", "share_low", "share_high"))
    assert share is not None
    status = judge_at_least(low, high, 0.5)
    return VerdictLine(
        id="evaluator",
        question="Does one factor drive the spread of the final models?",
        answer=f"{factor} holds {pct(share)}{bracket(low, high)} of the variance",
        status=status,
        value=share,
        low=low,
        high=high,
        interval="95 % interval" if low is not None else "",
        threshold=0.5,
        yardstick="one factor's share of variance >= 50 % over the whole interval",
        section="evaluator",
    )
