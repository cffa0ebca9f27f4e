"""What one trainer2 run measured (a result of kind ``trainer2``), and its terminal summary.

:class:`Trainer2Result` is written by the run store into the experiment's directory
(``trainer2.json`` and ``trainer2{,.studies,.trainers,.spread,.variance}.parquet``, see
:mod:`attractor.stack.trainer2`); :func:`summary_lines` is what ``attractor trainer2``
prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from attractor.measure.basins import Basins
from attractor.runs.results import strict_json


@dataclass(frozen=True, eq=False)
class Trainer2Result:
    """Everything one trainer2 run measured.

    Attributes:
        config: the resolved config (task, trainer defaults, run).
        settings: the resolved trainer2 settings.
        trials: one row per (study, trial) (see the module docstring).
        studies: one row per study: initial condition, returned hyperparameters,
            ``best_value``, ``trainer``, test ``ensemble_accuracy`` / ``member_accuracy``,
            ``distance_to_center``, ``basin``, ``log10_lr``.
        trainers: one row per distinct returned trainer (see
        :class:`~attractor.stack.compare.Comparison`).
        distances: name -> ``[studies, studies]`` function-space distance of their trainers.
        basins: basins of the studies by ``js_mean``.
        function_spread: mean distances between studies with intervals, against the seed
            spread (:func:`~attractor.stack.compare.function_spread`).
        spread: spread of each outcome over studies
        (:func:`~attractor.stack.outcomes.spread_table`).
        variance: variance components by initial-condition factor (may be empty).
        dominant: outcome -> the factor that moves it most.
        validation: sizes and seed of the validation split.
        timings: seconds spent searching, training returned trainers, measuring.
        out: the experiment directory (None for a study run outside one).
    """

    kind: ClassVar[str] = "trainer2"
    schema: ClassVar[int] = 1

    config: dict[str, Any]
    settings: dict[str, Any]
    trials: pd.DataFrame
    studies: pd.DataFrame
    trainers: pd.DataFrame
    distances: dict[str, np.ndarray]
    basins: Basins
    function_spread: dict[str, Any]
    spread: pd.DataFrame
    variance: pd.DataFrame
    dominant: dict[str, dict[str, Any]]
    validation: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    out: Path | None = None

    @property
    def n_basins(self) -> int:
        """How many basins the returned trainers' models fall into."""
        return self.basins.n_basins

    @property
    def name(self) -> str:
        """The file stem: ``trainer2``."""
        return "trainer2"

    def to_tables(self) -> dict[str, pd.DataFrame]:
        """The trials (main table), studies, distinct trainers, spread and variance components."""
        return {
            "": self.trials,
            "studies": self.studies,
            "trainers": self.trainers,
            "spread": self.spread,
            "variance": self.variance,
        }

    def to_json(self) -> dict[str, Any]:
        """JSON-able summary, NaN as null (the tables are repeated here)."""
        return strict_json(
            {
                "config": self.config,
                "settings": self.settings,
                "validation": self.validation,
                "n_studies": len(self.studies),
                "n_trainers": len(self.trainers),
                "n_basins": self.n_basins,
                "dominant": self.dominant,
                "function_spread": self.function_spread,
                "timings": self.timings,
                "out": None if self.out is None else str(self.out),
                "studies": self.studies,
                "trainers": self.trainers,
                "spread": self.spread,
                "basins": self.basins.to_dict(),
                "distances": self.distances,
                "variance": self.variance,
                "trials": self.trials,
            }
        )


def summary_lines(result: Trainer2Result) -> list[str]:
    """A few lines for the terminal: what was run, how far the results spread, what moved them."""
    spread = result.spread.set_index("quantity")
    lines = [
        f"{len(result.studies)} studies x {result.settings['trials']} trials -> "
        f"{len(result.trainers)} distinct trainers, "
        f"{result.n_basins} basin(s) in function space"
    ]
    for name, unit in (("log10_lr", "decades"), ("best_value", ""), ("ensemble_accuracy", "")):
        if name in spread.index:
            row = spread.loc[name]
            lines.append(
                f"  {name}: mean {row['mean']:.4g}, sd {row['sd']:.3g} [{row['sd_low']:.3g}, "
                f"{row['sd_high']:.3g}], "
                f"range {row['range']:.3g} {unit}".rstrip()
            )
    js = result.function_spread
    if js.get("js_matched"):
        lines.append(
            f"  js between studies' models (seed-matched): {js['js_matched']['value']:.3g} nats; "
            f"between seeds of one trainer: {js['seed_js']:.3g} (ratio "
            f"{js['matched_over_seed']:.2f})"
        )
    for outcome, top in result.dominant.items():
        if top["factor"] is not None:
            residual = " incl. residual" if top["top_with_residual"] else ""
            lines.append(
                f"  {outcome}: moved most by {top['factor']} (share {top['share']:.2f}); "
                f"largest effect {top['top_effect']}{residual} ({top['top_share']:.2f})"
            )
    return lines
