"""The verdict: one computed line per question a run's stored results answer, with its yardstick.

The verdict never measures anything: it reads the results a directory already holds
(:meth:`~attractor.runs.store.RunStore.results`, the run's plan) and turns each into a
sentence with its value, its interval, the threshold it is judged against and the report
section that backs it. Where a run lacks the result a question needs, the line says so and
names the command that measures it. The CLI (``attractor info``, ``measure --json``) and
the report's block at the top of a page both show this one object.

How an interval is judged (:func:`judge`): "yes" only when the whole interval lies on the
good side of the threshold, "no" when the whole of it lies on the other side, "unclear"
when it straddles the threshold or there is no interval; "not measured" when the run
holds no result to judge.

Questions (ids in brackets):

* one basin? [``basins``]: the clustering of :mod:`attractor.measure.basins`; the
  majority basin's share of the measured members with a 95 % Wilson interval (how often a
  fresh seed would land in it).
* do members disagree less often than they err? [``disagreement``]: mean pairwise test
  disagreement with its multi-bootstrap interval against the members' mean error, the
  yardstick of Jiang et al. (2022): independently trained runs disagree about as often as
  they err.
* are linear paths (and weight-matched ones) barrier-free? [``lmc``, ``lmc-aligned``]:
  the error barrier (Frankle form) of every stored path against :data:`BARRIER`, 2 %
  error, the stability threshold of Frankle et al. (2020); the "interval" is the range
  over the measured pairs (a few pairs: no bootstrap), so "yes" means every pair is below.
* what drives the spread? [``driver``] (only where a sensitivity result exists): the
  factor with the largest share of variance (variance components, else total Sobol
  index) against :data:`DRIVER_SHARE`, half the variance.
* do members diverge? [``diverged``]: diverged members of the finished ones, Wilson interval.
* from which step does a member's basin show? [``seed-advice``] and from which spawn step
  do copies stay connected? [``instability``]: where those results exist.
* does the model bring its world to one basin? [``world``] and does the trainer stabilize
  chose spread less on fresh seeds? [``stabilize``], which of two runs spreads less and
  is more accurate? [``compare-*``]: experiments' lines
  (:mod:`attractor.measure.verdict_experiments`).

References:
    Frankle, Dziugaite, Roy & Carbin (2020), "Linear Mode Connectivity and the Lottery
    Ticket Hypothesis", ICML (2 % error barrier); Jiang, Nagarajan, Baek & Kolter (2022),
    "Assessing Generalization of SGD via Disagreement", ICLR (disagreement ~ test error);
    Wilson (1927), "Probable inference, the law of succession, and statistical inference",
    JASA (the interval of a share).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from attractor.measure.verdict_experiments import (
    compare_lines,
    diff_line,
    evaluator_line,
    hparam_map_lines,
    shortcuts_lines,
    stabilize_line,
    tangent_line,
    trainer2_line,
    world_line,
)
from attractor.measure.verdict_lines import (
    BARRIER,
    DRIVER_SHARE,
    Status,
    VerdictLine,
    judge,
    wilson,
)
from attractor.measure.verdict_questions import (
    barrier_line,
    basins_line,
    disagreement_line,
    diverged_line,
    driver_line,
    instability_line,
    seed_advice_line,
)
from attractor.runs.results import StoredResult

if TYPE_CHECKING:
    import pandas as pd

    from attractor.runs.ensemble import Ensemble

__all__ = [
    "BARRIER",
    "DRIVER_SHARE",
    "Status",
    "Verdict",
    "VerdictLine",
    "judge",
    "run_verdict",
    "verdict",
    "wilson",
]


@dataclass(frozen=True)
class Verdict:
    """Every answered question of one directory, and the thresholds they were judged by."""

    lines: list[VerdictLine]
    thresholds: dict[str, str] = field(default_factory=dict)

    def line(self, id_: str) -> VerdictLine:
        """The line of question ``id_`` (KeyError naming the ones there are)."""
        for found in self.lines:
            if found.id == id_:
                return found
        raise KeyError(f"no verdict line {id_!r}; lines: {[x.id for x in self.lines]}")

    def text(self) -> list[str]:
        """The lines for a terminal, then the thresholds used."""
        lines = [line.text() for line in self.lines]
        if self.thresholds:
            lines.append("thresholds: " + "; ".join(self.thresholds.values()))
        return lines

    def to_json(self) -> dict[str, Any]:
        """``{"lines": [...], "thresholds": {...}}``, strict JSON."""
        return {"lines": [x.to_dict() for x in self.lines], "thresholds": dict(self.thresholds)}


def _not_measured(id_: str, question: str, section: str, answer: str) -> VerdictLine:
    return VerdictLine(id_, question, answer, "not measured", section=section)


def verdict(
    results: Sequence[StoredResult], plan: pd.DataFrame | None = None, root: str = "RUN"
) -> Verdict:
    """The verdict of a directory from its stored ``results`` (nothing is recomputed).

    Args:
        results: what the directory holds (:meth:`RunStore.results`).
        plan: the run's plan table (``member``, ``status``); None for an experiment's
            directory, which then gets only the lines its results answer.
        root: the directory as the "not measured yet" hints name it.
    """
    by_kind = {r.kind: r for r in results}
    lines: list[VerdictLine | None] = []
    measures = by_kind.get("measures")
    if measures is not None:
        paths = measures.data.get("lmc") or []
        lines += [
            basins_line(measures.data),
            disagreement_line(measures.data),
            barrier_line(paths, aligned=False),
            barrier_line(paths, aligned=True),
        ]
    elif plan is not None:
        # A language-model run is measured already: its measures have no basins or paths.
        how = (
            "not measured: a language-model run's measures are next-token ones"
            if "lm-measures" in by_kind
            else f"not measured yet: `attractor measure {root}`"
        )
        lines += [
            _not_measured("basins", "Do the members land in one basin?", "basins", how),
            _not_measured(
                "disagreement", "Do members disagree less often than they err?", "summary", how
            ),
            _not_measured("lmc", "Are linear paths between members barrier-free?", "lmc", how),
        ]
    lines.append(driver_line(by_kind))
    for kind, answer in _RESULT_LINES.items():
        if kind in by_kind:
            found = answer(by_kind[kind].data)
            lines += found if isinstance(found, list) else [found]
    if plan is not None and "status" in plan:
        lines.append(diverged_line(plan))
    found = [line for line in lines if line is not None]
    return Verdict(found, _thresholds(found))


#: Result kind -> the verdict line(s) its stored JSON answers, in the block's order.
_RESULT_LINES: dict[str, Callable[[Mapping[str, Any]], VerdictLine | list[VerdictLine] | None]] = {
    "instability": instability_line,
    "seed-advice": seed_advice_line,
    "world": world_line,
    "stabilize": stabilize_line,
    "compare": compare_lines,
    "diff": diff_line,
    "tangent": tangent_line,
    "trainer2": trainer2_line,
    "evaluator": evaluator_line,
    "hparam-map": hparam_map_lines,
    "shortcuts": shortcuts_lines,
}


def _thresholds(lines: Sequence[VerdictLine]) -> dict[str, str]:
    """The yardstick of every judged line, each text once (what the block lists)."""
    found: dict[str, str] = {}
    for x in lines:
        if x.yardstick and x.status != "not measured" and x.yardstick not in found.values():
            found[x.id] = x.yardstick
    return found


def run_verdict(ens: Ensemble) -> Verdict:
    """The verdict of a run: its stored results and its plan."""
    return verdict(ens.store.results(), ens.plan, str(ens.store.root))
