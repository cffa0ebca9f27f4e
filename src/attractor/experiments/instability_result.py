"""The result of the instability analysis: error barriers per spawn step, their summary.

:class:`InstabilityResult` (kind ``instability``) with the statistics read off its table:
:func:`summarize` (per spawn step, the mean of each barrier and its 95 % Student
t-interval over pairs) and :func:`onset` (the first spawn step from which on a column
stays below the threshold). :mod:`attractor.experiments.instability` trains the parent
and the children and fills it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy import stats

from attractor.runs.results import strict_json

BARRIERS = ("barrier_error", "barrier_error_linear", "barrier_loss", "barrier_loss_linear")


@dataclass(frozen=True, eq=False)
class InstabilityResult:
    """Error barriers between children spawned at each step, with their summary.

    A result of kind ``instability``: ``instability.json`` (:meth:`to_json`),
    ``instability.parquet`` (the table), ``instability.curves.parquet`` and
    ``instability.summary.parquet``.

    Attributes:
        spawn_steps: sorted spawn steps ``k``; total_steps: training length.
        pairs: pairs of children per spawn step; threshold: stability threshold on the
            error barrier (Frankle form).
        table: one row per (spawn_step, pair): ``child_a``, ``child_b``, ``diverged``,
            the four :data:`BARRIERS` (NaN where a child diverged), and each child's
            final error ``error_a`` / ``error_b`` on the evaluation set.
        summary: one row per spawn step: ``pairs`` used, and for each barrier its
            ``_mean``, ``_sd``, ``_ci_low``, ``_ci_high`` (95 % t-interval over pairs).
        curves: every pair's path: ``spawn_step``, ``pair``, ``alpha``, ``loss``, ``error``.
        onset: the first spawn step from which on every mean error barrier is below
            ``threshold`` (``None`` if there is none); onset_upper: the same for the upper
            95 % bounds, the conservative reading.
        parent: the parent's ``init_seed`` and ``data_seed``.
        repair: the statistics of the paths' points: none, reset (BatchNorm's, recomputed;
            recorded as none for a model without BatchNorm) or repair (REPAIR).
    """

    kind: ClassVar[str] = "instability"
    schema: ClassVar[int] = 1

    spawn_steps: list[int]
    total_steps: int
    pairs: int
    threshold: float
    table: pd.DataFrame
    summary: pd.DataFrame
    curves: pd.DataFrame
    onset: int | None
    onset_upper: int | None
    parent: dict[str, int]
    repair: str = "none"

    @property
    def name(self) -> str:
        """The file stem: ``instability``."""
        return "instability"

    def for_report(self) -> dict[str, Any]:
        """The curve, onsets and threshold under the names the report's plot uses.

        The report section reads the stored result and renames the same way; this is the
        in-memory view of it (``curve``: spawn_step, pairs, barrier_mean, low, high).
        """
        curve = self.summary.rename(
            columns={
                "barrier_error_mean": "barrier_mean",
                "barrier_error_ci_low": "low",
                "barrier_error_ci_high": "high",
            }
        )
        return {
            "curve": curve[["spawn_step", "pairs", "barrier_mean", "low", "high"]],
            "onset": self.onset,
            "onset_upper": self.onset_upper,
            "threshold": self.threshold,
        }

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-ready data, NaN as null (the curves are a table of their own)."""
        return strict_json(
            {
                "spawn_steps": self.spawn_steps,
                "total_steps": self.total_steps,
                "pairs": self.pairs,
                "threshold": self.threshold,
                "onset": self.onset,
                "onset_upper": self.onset_upper,
                "ci": "95% Student t-interval over pairs",
                "barrier": "error, Frankle et al. 2020 (max - mean of ends)",
                "parent": self.parent,
                "repair": self.repair,
                "summary": self.summary,
                "table": self.table,
            }
        )

    def to_tables(self) -> dict[str, pd.DataFrame]:
        """The per-pair table (main), every pair's path and the per-step summary."""
        return {"": self.table, "curves": self.curves, "summary": self.summary}


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Per spawn step: pairs used and mean, sd and 95 % t-interval of each barrier over pairs."""
    rows = []
    for k, group in table.groupby("spawn_step", sort=True):
        done = group[~group["diverged"].astype(bool)]
        summary: dict[str, Any] = {"spawn_step": int(k), "pairs": len(done)}
        for column in BARRIERS:
            values = done[column].to_numpy(dtype=np.float64)
            n = len(values)
            mean = float(values.mean()) if n else float("nan")
            sd = float(values.std(ddof=1)) if n > 1 else float("nan")
            half = float(stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)) if n > 1 else float("nan")
            summary |= {
                f"{column}_mean": mean,
                f"{column}_sd": sd,
                f"{column}_ci_low": mean - half,
                f"{column}_ci_high": mean + half,
            }
        rows.append(summary)
    return pd.DataFrame(rows)


def onset(summary: pd.DataFrame, column: str, threshold: float) -> int | None:
    """The first spawn step from which on ``column`` stays below ``threshold``, else ``None``.

    "From which on" rather than "first below": a noisy dip below the threshold followed by
    a rise is not stability. Undefined values (NaN) count as not below.
    """
    below = (summary[column] < threshold).to_numpy()
    steps = summary["spawn_step"].to_numpy()
    for i in range(len(steps)):
        if below[i:].all():
            return int(steps[i])
    return None
