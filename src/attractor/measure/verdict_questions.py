"""The questions a verdict asks, one function each, answered from stored result data only.

Each takes the JSON a result was stored with (or the run's plan) and returns a
:class:`~attractor.measure.verdict_lines.VerdictLine`, or None where the data holds no
answer; :func:`attractor.measure.verdict.verdict` puts them in order. The yardsticks and
their references are in :mod:`attractor.measure.verdict`'s docstring.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from attractor.measure.basins import MIN_SILHOUETTE
from attractor.measure.verdict_lines import (
    BARRIER,
    DRIVER_SHARE,
    Status,
    VerdictLine,
    bracket,
    finite,
    judge,
    judge_above,
    number,
    pct,
    wilson,
)
from attractor.runs.results import StoredResult

if TYPE_CHECKING:
    import pandas as pd

#: Outcomes of a sensitivity result in the order the verdict prefers them: the spread of the
#: members' predictions first (the function), then the scalar summaries.
OUTCOME_PREFERENCE = ("p_true", "kl_to_mean", "test_accuracy", "test_loss")
_OUTCOME_NAMES = {
    "p_true": "the predictions",
    "kl_to_mean": "the KL to the ensemble mean",
    "test_accuracy": "test accuracy",
    "test_loss": "test loss",
}
#: Plan factors as a sentence names them.
FACTOR_NAMES = {
    "init_seed": "the initialisation",
    "data_seed": "the data order",
    "noise_seed": "the noise seed",
    "bootstrap": "the bootstrap sample",
    "holdout_group": "the held-out group",
    "label_noise": "label noise",
    "init_scale": "the initial scale",
    "init_noise": "the initial noise",
    "lr": "the learning rate",
    "momentum": "the momentum",
    "weight_decay": "the weight decay",
    "batch_size": "the batch size",
    "optimizer": "the optimizer",
    "residual": "the within-cell residual",
}


def basins_line(measures: Mapping[str, Any]) -> VerdictLine | None:
    """One basin? From the stored basins of the spread measures."""
    basins = measures.get("basins")
    if not basins or not basins.get("sizes"):
        return None
    sizes = [int(s) for s in basins["sizes"]]
    n, k, top = sum(sizes), len(sizes), sizes[0]
    low, high = wilson(top, n)
    share = f"{top} of {n} members, {pct(top / n, 0)}{bracket(low, high, 0)}"
    base = {
        "id": "basins",
        "question": "Do the members land in one basin?",
        "value": top / n,
        "low": low,
        "high": high,
        "interval": "95 % Wilson interval of the majority basin's share",
        "section": "basins",
    }
    method, cut = basins.get("method"), basins.get("threshold")
    if method == "threshold" and finite(cut):
        rule = f"basins apart at a mean JS distance >= {cut:g}"
    elif method == "n_basins":
        rule = f"the number of basins was fixed at {k}"
    else:
        rule = f"members split into basins only at a silhouette >= {MIN_SILHOUETTE:g}"
    if method == "n_basins":
        # A count asked for is no finding: report the shares, judge nothing.
        return VerdictLine(
            **base,
            answer=f"{k} basin(s) by request; the largest holds {share}",
            status="unclear",
            yardstick=rule,
        )
    if k == 1 and n < 3 and method == "silhouette":
        return VerdictLine(
            **base,
            answer=f"one basin by default: {n} members are too few to test a split",
            status="unclear",
            yardstick=rule,
        )
    if k == 1:
        return VerdictLine(**base, answer=f"one basin ({share})", status="yes", yardstick=rule)
    return VerdictLine(
        **base, answer=f"{k} basins; the largest holds {share}", status="no", yardstick=rule
    )


def _split(summary: Mapping[str, Any]) -> str | None:
    """Which split the measures were taken on (the key of their mean accuracy)."""
    return next((s for s in ("test", "train") if f"{s}_accuracy" in summary), None)


def disagreement_line(measures: Mapping[str, Any]) -> VerdictLine | None:
    """Do members disagree less often than they err? Pairwise disagreement vs the mean error."""
    summary = measures.get("summary") or {}
    found, split = summary.get("pairwise_disagreement"), _split(summary)
    if not found or split is None or not finite(summary[f"{split}_accuracy"].get("value")):
        return None
    accuracy = summary[f"{split}_accuracy"]
    error = 1.0 - float(accuracy["value"])
    value, low, high = (number(found.get(k)) for k in ("value", "low", "high"))
    if value is None:
        return None
    status = judge(low, high, error)
    where = {"yes": "below", "no": "above", "unclear": "not clearly apart from"}[status]
    error_ci = bracket(
        None if accuracy.get("high") is None else 1 - accuracy["high"],
        None if accuracy.get("low") is None else 1 - accuracy["low"],
    )
    return VerdictLine(
        id="disagreement",
        question="Do members disagree less often than they err?",
        answer=(
            f"members disagree on {pct(value)}{bracket(low, high)} of {split} inputs, "
            f"{where} their mean error {pct(error)}{error_ci}"
        ),
        status=status,
        value=value,
        low=low,
        high=high,
        interval="95 % multi-bootstrap interval (members and examples)",
        threshold=error,
        yardstick=(
            "the members' mean error: independently trained runs disagree about as often as "
            "they err (Jiang et al. 2022)"
        ),
        section="summary",
    )


def barrier_line(paths: Sequence[Mapping[str, Any]], aligned: bool) -> VerdictLine | None:
    """Are the (weight-matched) linear paths barrier-free? Range of error barriers over pairs."""
    key = "aligned_barriers" if aligned else "barriers"
    values = [
        float(p[key]["barrier_error"])
        for p in paths
        if p.get(key) and finite(p[key].get("barrier_error"))
    ]
    which = "weight-matched linear paths" if aligned else "linear paths between members"
    base = {
        "id": "lmc-aligned" if aligned else "lmc",
        "question": f"Are {which} barrier-free?",
        "threshold": BARRIER,
        "yardstick": f"error barrier < {pct(BARRIER, 0)} (Frankle et al. 2020)",
        "section": "lmc",
    }
    if not values:
        if not aligned or not paths:
            return None
        return VerdictLine(
            **base,
            answer="not measured: weight matching does not apply to this model",
            status="not measured",
        )
    low, high, mean = min(values), max(values), sum(values) / len(values)
    status = judge(low, high, BARRIER)
    pairs = f"{len(values)} pair{'s' if len(values) != 1 else ''}"
    verb = {
        "yes": "have no barrier",
        "no": "have a barrier",
        "unclear": "have a barrier on some pairs only",
    }[status]
    sign = {"yes": "<", "no": ">=", "unclear": "vs"}[status]
    return VerdictLine(
        **base,
        answer=(
            f"{which} {verb} (mean {pct(mean)}, range{bracket(low, high)} over {pairs} "
            f"{sign} {pct(BARRIER, 0)})"
        ),
        status=status,
        value=mean,
        low=low,
        high=high,
        interval=f"range over {pairs} (min, max)",
    )


def driver_line(results: Mapping[str, StoredResult]) -> VerdictLine | None:
    """What drives the spread? The largest share of variance (variance components, else Sobol)."""
    variance, sobol = results.get("sensitivity-variance"), results.get("sensitivity-sobol")
    if variance is not None and variance.data.get("table"):
        rows, name, value, method = variance.data["table"], "effect", "share", "variance components"
    elif sobol is not None and sobol.data.get("table"):
        rows, name, value, method = sobol.data["table"], "factor", "ST", "total Sobol index"
    else:
        return None
    outcomes = list(dict.fromkeys(r["outcome"] for r in rows))
    outcome = next((o for o in OUTCOME_PREFERENCE if o in outcomes), outcomes[0])
    mine = [r for r in rows if r["outcome"] == outcome and finite(r.get(value))]
    if not mine:
        return None
    top = max(mine, key=lambda r: float(r[value]))
    share = float(top[value])
    low, high = number(top.get(f"{value}_low")), number(top.get(f"{value}_high"))
    mirrored = judge_above(low, high, DRIVER_SHARE)  # above the threshold is the finding
    factor = " and ".join(FACTOR_NAMES.get(f, f) for f in str(top[name]).split(":"))
    factor = f"the interaction of {factor}" if ":" in str(top[name]) else factor
    of = _OUTCOME_NAMES.get(outcome, outcome)
    numbers = f"{pct(share, 0)}{bracket(low, high, 0)}"
    answer = {
        "yes": f"the spread is driven by {factor} ({numbers} of the variance of {of})",
        "no": f"no factor holds most of the variance of {of}; the largest is {factor} ({numbers})",
        "unclear": f"{factor} leads the spread ({numbers} of the variance of {of}), not clearly "
        "more than half",
    }[mirrored]
    return VerdictLine(
        id="driver",
        question="What drives the spread?",
        answer=answer,
        status=mirrored,
        value=share,
        low=low,
        high=high,
        interval=f"95 % bootstrap interval ({method} of {outcome})",
        threshold=DRIVER_SHARE,
        yardstick=f"a factor drives the spread with > {pct(DRIVER_SHARE, 0)} of its variance",
        section="sensitivity",
    )


def diverged_line(plan: pd.DataFrame) -> VerdictLine:
    """Do members diverge? Diverged members among the finished ones."""
    status = plan["status"].astype(str)
    diverged, finished = (
        int((status == "diverged").sum()),
        int(status.isin(["done", "diverged"]).sum()),
    )
    pending = len(plan) - finished
    base = {
        "id": "diverged",
        "question": "Did every member train without diverging?",
        "threshold": 0.0,
        "yardstick": "training: no member diverged",
        "section": "plan",
    }
    if finished == 0:
        return VerdictLine(
            **base,
            answer=f"no member has finished training yet ({pending} pending)",
            status="not measured",
        )
    low, high = wilson(diverged, finished)
    waiting = f"; {pending} still pending" if pending else ""
    answer = (
        f"no member diverged (0 of {finished}; rate{bracket(low, high, 0)} %){waiting}"
        if diverged == 0
        else f"{diverged} of {finished} members diverged "
        f"({pct(diverged / finished, 0)}{bracket(low, high, 0)}){waiting}"
    )
    return VerdictLine(
        **base,
        answer=answer,
        status="yes" if diverged == 0 else "no",
        value=diverged / finished,
        low=low,
        high=high,
        interval="95 % Wilson interval of the divergence rate",
    )


def seed_advice_line(data: Mapping[str, Any]) -> VerdictLine:
    """From which step does a member's final basin show (``attractor seed-advice``)?"""
    target, step = float(data.get("target", 0.9)), data.get("readable")
    return VerdictLine(
        id="seed-advice",
        question="From which step does a member's final basin show?",
        answer=(
            f"from step {step} a member's final basin is predicted right >= {pct(target, 0)} "
            "of the time"
            if step is not None
            else f"no snapshot step predicts the final basin >= {pct(target, 0)} of the time"
        ),
        status="yes" if step is not None else "no",
        value=None if step is None else float(step),
        threshold=target,
        yardstick=f"predicted right >= {pct(target, 0)} of the time",
        section="seed-advice",
    )


def instability_line(data: Mapping[str, Any]) -> VerdictLine:
    """From which spawn step do copies stay linearly connected (``attractor instability``)?

    Judged by the stored onsets (the mean barrier, and its upper 95 % bound, below the
    threshold from that spawn step on); the value is the mean barrier at the deciding step
    (the upper bound's onset, else the mean's, else the last spawn step) with its t-interval.
    """
    threshold = float(data.get("threshold") or BARRIER)
    onset, upper = data.get("onset"), data.get("onset_upper")
    rows = {r.get("spawn_step"): r for r in data.get("summary") or []}
    deciding = (
        upper if upper is not None else onset if onset is not None else max(rows, default=None)
    )
    row = rows.get(deciding, {})
    value, low, high = (
        number(row.get(k))
        for k in ("barrier_error_mean", "barrier_error_ci_low", "barrier_error_ci_high")
    )
    at = f"; at step {deciding}: {pct(value)}{bracket(low, high)}" if value is not None else ""
    status: Status
    if upper is not None:
        status = "yes"
        answer = (
            f"copies spawned from step {onset} on have no barrier (mean < {pct(threshold, 0)}; "
            f"upper 95 % bound below it from step {upper}{at})"
        )
    elif onset is not None:
        status = "unclear"
        answer = (
            f"copies spawned from step {onset} on have a mean barrier < {pct(threshold, 0)}, "
            f"but its upper 95 % bound never falls below it{at}"
        )
    else:
        status = "no"
        answer = f"no spawn step gives copies a mean barrier < {pct(threshold, 0)}{at}"
    return VerdictLine(
        id="instability",
        question="From which training step are copies linearly connected?",
        answer=answer,
        status=status,
        value=value,
        low=low,
        high=high,
        interval="95 % t-interval over pairs" if low is not None else "",
        threshold=threshold,
        yardstick=f"mean error barrier < {pct(threshold, 0)} (Frankle et al. 2020)",
        section="instability",
    )
