"""The result of comparing two runs: paired intervals per measure, what differs, final metrics.

:class:`RunComparison` (kind ``compare``) is filled by :mod:`attractor.experiments.two_runs`;
:func:`config_diff` lists the resolved-config keys where the two runs differ and
:func:`reading` puts one paired interval into one plain sentence, so the CLI and the page
say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd

from attractor.runs.results import strict_json

#: measure -> (what it is, which way is better: "higher" or "lower", whether it is a spread).
#: Spreads say how stable a run is (lower: its members land closer together); accuracy and
#: loss say how good it is, which the page keeps apart from "more stable".
MEASURES: dict[str, tuple[str, str, bool]] = {
    "accuracy": ("mean accuracy of the members", "higher", False),
    "loss": ("mean cross-entropy of the members", "lower", False),
    "accuracy_sd": ("sd of the members' accuracies", "lower", True),
    "pairwise_js": ("mean Jensen-Shannon divergence between pairs of members", "lower", True),
    "disagreement": ("mean share of examples a pair of members labels differently", "lower", True),
}


@dataclass(frozen=True, eq=False)
class RunComparison:
    """Two runs of one task side by side, every difference with its paired interval.

    A result of kind ``compare``: ``compare.json`` (:meth:`to_json`), ``compare.parquet``
    (the paired table) and ``compare.final.parquet`` (both runs' final metrics).

    Attributes:
        runs: ``{"A": facts, "B": facts}``: path, name, task, members (planned, done,
            diverged), last step, config and plan hashes of each run.
        config_diff: one entry per resolved-config key whose values differ: ``key``,
            ``a``, ``b`` (a key only one run has shows ``None`` for the other).
        table: one row per measure of :data:`MEASURES`: ``measure``, ``better``,
            ``spread``, ``a``/``a_low``/``a_high``, ``b``/``b_low``/``b_high``,
            ``difference`` (A - B) with ``low``/``high``, ``p`` (share of draws with
            A - B <= 0), ``draws`` and ``reading`` (the plain sentence).
        final: one row per finished member of either run at its last snapshot: ``run``
            ("A" or "B"), ``member``, ``step`` and the run's metrics.
        split: the evaluation split scored; draws, seed, level: the bootstrap's.
    """

    kind: ClassVar[str] = "compare"
    schema: ClassVar[int] = 1

    runs: dict[str, dict[str, Any]]
    config_diff: list[dict[str, Any]]
    table: pd.DataFrame
    final: pd.DataFrame
    split: str
    draws: int
    seed: int
    level: float

    @property
    def name(self) -> str:
        """The file stem: ``compare``."""
        return "compare"

    def to_json(self) -> dict[str, Any]:
        return strict_json(
            {
                "runs": self.runs,
                "config_diff": self.config_diff,
                "paired": self.table,
                "split": self.split,
                "draws": self.draws,
                "seed": self.seed,
                "level": self.level,
            }
        )

    def to_tables(self) -> dict[str, pd.DataFrame]:
        return {"": self.table, "final": self.final}


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"trainer": {"lr": 0.1}}`` -> ``{"trainer.lr": 0.1}``; lists stay whole values."""
    if not isinstance(config, dict):
        return {prefix: config}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def config_diff(config_a: dict[str, Any], config_b: dict[str, Any]) -> list[dict[str, Any]]:
    """The resolved-config keys whose values differ, in sorted order: ``key``, ``a``, ``b``."""
    flat_a, flat_b = _flatten(config_a), _flatten(config_b)
    return [
        {"key": key, "a": flat_a.get(key), "b": flat_b.get(key)}
        for key in sorted(set(flat_a) | set(flat_b))
        if flat_a.get(key) != flat_b.get(key)
    ]


def reading(measure: str, difference: float, low: float, high: float, level: float) -> str:
    """One sentence: which run is more stable (or better) by ``measure``, and whether the
    paired interval of A - B excludes 0.
    """
    what, better, spread = MEASURES[measure]
    interval = f"{100 * level:.0f} % interval of A - B [{low:+.4g}, {high:+.4g}]"
    if low <= 0 <= high:
        return (
            f"{measure}: no clear difference; the {interval} includes 0, so these seeds and "
            "examples cannot tell the runs apart."
        )
    # The interval's side decides (a biased statistic's point value may fall outside it).
    # Lower is better for every spread and for loss: A - B > 0 then favours B.
    a_wins = (low > 0) == (better == "higher")
    winner, loser = ("A", "B") if a_wins else ("B", "A")
    if spread:
        verdict = f"{winner} is more stable: its {what} is lower than {loser}'s"
    elif better == "higher":
        verdict = f"{winner} scores higher: its {what} is above {loser}'s"
    else:
        verdict = f"{winner} fits better: its {what} is lower than {loser}'s"
    return f"{measure}: {verdict} by {abs(difference):.4g}; the {interval} excludes 0."
