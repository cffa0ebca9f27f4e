"""What one stabilize run found (a result of kind ``stabilize``), and its terminal summary.

Written by the run store into the experiment's directory: ``stabilize.json`` (everything
below) and ``stabilize{,.importance,.confirmation,.seeds}.parquet``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from attractor.runs.results import strict_json


@dataclass(frozen=True, eq=False)
class StabilizeResult:
    """Everything one stabilize run measured.

    Attributes:
        config: the resolved starting config.
        settings: the resolved stabilize settings.
        trials: one row per finished trial: ``trial``, ``round``, the applied knobs,
            ``error`` and ``spread`` with ``_low`` / ``_high`` intervals (validation split,
            search seeds), ``diverged`` members, ``pareto``, ``chosen``.
        importance: per knob, its fANOVA ``importance`` for the spread and ``rho`` (rank
            correlation of its value with the spread).
        chosen: the chosen trial: ``trial``, its knobs, objectives and the full trainer.
        start: the starting trainer's knobs.
        confirmation: chosen minus start on fresh seeds and the test split: ``error`` and
            ``spread`` (paired estimates: ``a`` chosen, ``b`` start), ``confirmed``,
            ``verdict``.
        seeds: the plan rows of each block (``block`` = search or confirm) with their seeds.
        validation: sizes and seed of the validation split, and the strategy.
        timings: seconds spent searching and confirming.
        out: the experiment directory (None outside one).
    """

    kind: ClassVar[str] = "stabilize"
    schema: ClassVar[int] = 1

    config: dict[str, Any]
    settings: dict[str, Any]
    trials: pd.DataFrame
    importance: pd.DataFrame
    chosen: dict[str, Any]
    start: dict[str, Any]
    confirmation: dict[str, Any]
    seeds: pd.DataFrame
    validation: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    out: Path | None = None

    @property
    def name(self) -> str:
        """The file stem: ``stabilize``."""
        return "stabilize"

    @property
    def confirmed(self) -> bool:
        """Whether the chosen trainer spread less than the starting one on fresh seeds."""
        return bool(self.confirmation["confirmed"])

    def confirmation_table(self) -> pd.DataFrame:
        """One row per quantity (error, spread): chosen, start, difference and intervals."""
        rows = []
        for quantity in ("error", "spread"):
            e = self.confirmation[quantity]
            rows.append(
                {
                    "quantity": quantity,
                    "chosen": e["a"],
                    "chosen_low": e["a_low"],
                    "chosen_high": e["a_high"],
                    "start": e["b"],
                    "start_low": e["b_low"],
                    "start_high": e["b_high"],
                    "difference": e["difference"],
                    "low": e["low"],
                    "high": e["high"],
                    "p": e["p"],
                }
            )
        return pd.DataFrame(rows)

    def to_tables(self) -> dict[str, pd.DataFrame]:
        """The trials (main table), the importances, the confirmation and the seeds."""
        return {
            "": self.trials,
            "importance": self.importance,
            "confirmation": self.confirmation_table(),
            "seeds": self.seeds,
        }

    def to_json(self) -> dict[str, Any]:
        """JSON-able summary, NaN as null (the small tables are repeated here)."""
        return strict_json(
            {
                "config": self.config,
                "settings": self.settings,
                "validation": self.validation,
                "n_trials": len(self.trials),
                "n_pareto": int(self.trials["pareto"].sum()) if len(self.trials) else 0,
                "chosen": self.chosen,
                "start": self.start,
                "confirmation": self.confirmation,
                "confirmed": self.confirmed,
                "importance": self.importance,
                "timings": self.timings,
                "out": None if self.out is None else str(self.out),
                "trials": self.trials,
            }
        )


def summary_lines(result: StabilizeResult) -> list[str]:
    """A few lines for the terminal: the search, the choice, the confirmation, the driver."""
    s = result.settings
    chosen = result.chosen
    changed = {k: v for k, v in chosen["knobs"].items() if result.start.get(k) != v}
    shown = ", ".join(f"{k} {_show(v)}" for k, v in changed.items()) or "the starting trainer"
    lines = [
        f"{len(result.trials)} trials x {s['members']} members ({s['sampler']}); "
        f"{int(result.trials['pareto'].sum())} on the Pareto front of error and {s['spread']}",
        f"  chosen (trial {chosen['trial']}): {shown}",
        f"  search: error {chosen['error']:.3g}, {s['spread']} {chosen['spread']:.3g} "
        f"(best error of all trials {result.trials['error'].min():.3g}, tolerance "
        f"{s['tolerance']:g})",
        f"  {result.confirmation['verdict']}",
    ]
    if len(result.importance):
        top = result.importance.iloc[0]
        lines.append(
            f"  moved the spread most: {top['knob']} (importance {top['importance']:.2f}"
            + (f", rank correlation {top['rho']:+.2f})" if top["rho"] == top["rho"] else ")")
        )
    return lines


def _show(value: Any) -> str:
    if value is None:
        return "off"
    return f"{value:.3g}" if isinstance(value, float) else str(value)
