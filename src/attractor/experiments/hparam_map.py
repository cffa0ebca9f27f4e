"""Trainer-level structural stability: learning rate × momentum maps and the good-lr range.

One factorial plan crosses every learning rate with every momentum, ``seeds`` replicates
per cell (each with its own init and data-order seed), and trains all cells as one
ensemble run in ``OUT/runs/grid`` (an ordinary run directory, resumed when the experiment
is run again). Everything is then read off the test set at each member's last snapshot.
The result (kind ``hparam-map``) is ``OUT/hparam-map.json``, ``OUT/hparam-map.parquet``
(the cells) and ``OUT/hparam-map.ranges.parquet``.

Definitions (exact, because the issue leaves them open):

* **Diverged members.** A member whose loss turned NaN/inf has no final snapshot; its
  final loss *and* accuracy are taken to be its values at initialisation (step 0)
  (:mod:`attractor.measure.outcomes`). A diverged run is then as bad as not training,
  never better, and the cell means stay finite.
* **Good-lr range**, its **width CI**, **LR sensitivity** and the cells' **seed spread**:
  defined in :mod:`attractor.measure.hparams`, which computes them.

References:
    Wortsman et al., "Small-scale proxies for large-scale Transformer training
    instabilities", ICLR 2024 (arXiv 2309.14322), section 3.1 (LR sensitivity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from attractor.config import Config, PlanConfig
from attractor.errors import UserError
from attractor.experiments import Experiment, run_experiment
from attractor.measure.hparams import cell_spreads, range_table, summarize_cells
from attractor.measure.outcomes import member_outcomes
from attractor.runs.progress import Stages
from attractor.runs.results import Result, strict_json
from attractor.runs.store import RunStore

#: Where the grid's ensemble run lives inside the experiment directory.
GRID_RUN = Path("runs") / "grid"


@dataclass(frozen=True, eq=False)
class HparamMap:
    """A learning rate × momentum map of one trainer (a result of kind ``hparam-map``).

    Attributes:
        cells: one row per (lr, momentum): ``seeds``, ``loss_mean``, ``loss_sd``,
            ``accuracy_mean``, ``accuracy_sd`` (final test values, diverged members at their
            init values), ``init_loss``, ``capped_loss``, ``diverged`` (fraction) and
            ``spread_js`` (mean pairwise JS between the finished members, NaN if < 2).
        ranges: one row per momentum: ``width`` (decades), its 95 % interval ``low`` /
            ``high``, ``lr_min`` / ``lr_max`` of the good range, ``best_lr`` and ``sensitivity``.
        tolerance: relative tolerance on the best error that defines a good learning rate.
        out: the experiment directory (the grid's run is ``out/runs/grid``).
    """

    kind: ClassVar[str] = "hparam-map"
    schema: ClassVar[int] = 1

    cells: pd.DataFrame
    ranges: pd.DataFrame
    tolerance: float
    out: Path
    split: str = "test"

    @property
    def name(self) -> str:
        """The file stem: ``hparam-map``."""
        return "hparam-map"

    def to_json(self) -> dict[str, Any]:
        """Settings, cells and ranges (NaN becomes null)."""
        return strict_json(
            {
                "tolerance": self.tolerance,
                "split": self.split,
                "out": str(self.out),
                "run": str(self.out / GRID_RUN),
                "cells": self.cells,
                "ranges": self.ranges,
            }
        )

    def to_tables(self) -> dict[str, pd.DataFrame]:
        """The cells (main table) and the per-momentum ranges."""
        return {"": self.cells, "ranges": self.ranges}


def check_grid(lrs: list[float], momenta: list[float], seeds: int, tolerance: float) -> None:
    """Refuse a grid the map cannot be computed on, with one line."""
    if len(lrs) < 2:
        raise UserError(f"an hparam map needs at least 2 learning rates, got {len(lrs)}")
    if any(not (lr > 0 and math.isfinite(lr)) for lr in lrs):
        raise UserError(f"learning rates must be positive and finite, got {lrs}")
    if len(set(lrs)) != len(lrs) or len(set(momenta)) != len(momenta):
        raise UserError("learning rates and momenta must not repeat")
    if not momenta or any(not (0 <= m < 1) for m in momenta):
        raise UserError(f"momenta must lie in [0, 1), got {momenta}")
    if seeds < 1:
        raise UserError(f"seeds must be at least 1, got {seeds}")
    if not tolerance > 0:
        raise UserError(f"tolerance must be positive, got {tolerance}")


class HparamMapSettings(BaseModel):
    """What ``attractor hparam-map`` runs: the base config and the grid (its identity)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: Config = Field(
        description="Task, trainer (all but lr and momentum) and run; its plan is replaced."
    )
    lrs: list[float] = Field(description="Learning rates of the grid (at least 2, positive).")
    momenta: list[float] = Field(
        [0.0, 0.5, 0.9, 0.99], description="Momenta of the grid, in [0, 1)."
    )
    seeds: int = Field(4, description="Replicates per cell (init and data-order seeds).")
    tolerance: float = Field(
        0.1, description="An lr is good if its error is at most best error x (1 + tolerance)."
    )
    draws: int = Field(500, ge=1, description="Bootstrap resamples for the width's interval.")
    split: Literal["test", "train"] = Field(
        "test", description="Split whose accuracy defines training well."
    )

    @model_validator(mode="after")
    def _grid(self) -> HparamMapSettings:
        # Refused here, before the experiment directory exists (a UserError passes through
        # pydantic).
        check_grid(self.lrs, self.momenta, self.seeds, self.tolerance)
        return self


def run(settings: HparamMapSettings, store: RunStore, progress: bool = False) -> list[Result]:
    """Train the grid as one ensemble in ``store.root/runs/grid`` and map it.

    ``progress``: a line as training and measuring begin, the training's own bar between.

    References:
        Wortsman et al. 2023 (LR sensitivity).
    """
    from attractor.runs.launch import train

    config, seed = settings.config, settings.config.plan.seed
    n_cells = len(settings.lrs) * len(settings.momenta)
    plan = PlanConfig(
        design="factorial",
        members=n_cells * settings.seeds,
        levels={"lr": list(settings.lrs), "momentum": list(settings.momenta)},
        vary=["init_seed", "data_seed"],
        seed=seed,
    )
    with Stages("hparam-map", 2, progress) as stages:
        stages.begin(
            f"training the grid: {n_cells} cells x {settings.seeds} seeds = {plan.members} members"
        )
        ens = train(
            config.model_copy(update={"plan": plan}), store.root / GRID_RUN, progress=progress
        )
        stages.begin(f"measuring {n_cells} cells: accuracy, seed spread, good-lr ranges")
        members = member_outcomes(ens, settings.split)
        cells = summarize_cells(members)
        cells["spread_js"] = cell_spreads(ens, members, cells)
        ranges = range_table(cells, members, settings.tolerance, settings.draws, seed)
    return [HparamMap(cells, ranges, settings.tolerance, store.root, settings.split)]


def hparam_map(
    config: Config,
    lrs: list[float],
    momenta: list[float],
    seeds: int,
    out: str | Path,
    tolerance: float = 0.1,
    draws: int = 500,
    split: str = "test",
    force: bool = False,
    progress: bool = False,
) -> HparamMap:
    """Run the ``hparam-map`` experiment in directory ``out`` (see :func:`run`); its map.

    Args:
        config: task, trainer (everything but lr / momentum) and run settings; its plan is replaced.
        lrs: ``[L]`` learning rates; momenta: ``[M]`` momenta in [0, 1); seeds: replicates per cell.
        out: the experiment directory (reopened with the same settings, refused with others
            unless ``force``).
        tolerance: relative tolerance on the best error (see the module docstring).
        draws: bootstrap resamples for the width's interval.
        split: whose loss and accuracy define "trains well": "test" (generalizes) or
            "train" (fits; e.g. where no cell generalizes yet, as in modular addition
            before grokking). The seed spread is always measured on the test split.
        progress: show training and measuring on stderr (off: the library is quiet).

    Returns:
        :class:`HparamMap` with ``L · M`` cells and ``M`` ranges.
    """
    settings = HparamMapSettings(
        config=config,
        lrs=lrs,
        momenta=momenta,
        seeds=seeds,
        tolerance=tolerance,
        draws=draws,
        split=split,
    )  # type: ignore[arg-type]
    _, results = run_experiment("hparam-map", settings, out, force=force, progress=progress)
    result = results[0]
    assert isinstance(result, HparamMap)
    return result


EXPERIMENT = Experiment(
    name="hparam-map",
    settings=HparamMapSettings,
    run=run,
    summary="learning rate x momentum map of a trainer: accuracy per cell and the width of the "
    "good-lr range",
)
