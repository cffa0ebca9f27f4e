"""``attractor tangent``: train a config's members, then replay them with tangents attached.

The replay and what it records are :func:`attractor.experiments.tangent_replay.tangent_analysis`.
As an experiment, directory ``OUT`` holds the trained run in ``OUT/run`` (an ordinary run
directory, resumed; ``attractor sensitivity OUT/run`` works on it) and the result (kind
``tangent``) in ``OUT/tangent.parquet`` (curves) and ``OUT/tangent.json`` (everything; its
``out`` names the run it analysed).

Both the training and the replay run on the config's ``[run] device`` (``auto``: CUDA when
torch sees one); the random directions and perturbations are drawn on the CPU either way,
and the result is the same files wherever it ran, to float tolerance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from attractor.config import Config
from attractor.experiments import Experiment, run_experiment
from attractor.experiments.tangent_replay import tangent_analysis
from attractor.runs.progress import Stages
from attractor.runs.results import Result
from attractor.runs.store import RunStore
from attractor.tangent.basin import DEFAULT_EPS
from attractor.tangent.hypergrad import check_hypers
from attractor.tangent.store import TangentResult

#: The trained run's place inside the experiment directory.
RUN = "run"

__all__ = ["EXPERIMENT", "RUN", "TangentSettings", "run_tangent", "tangent_analysis"]


class TangentSettings(BaseModel):
    """What ``attractor tangent`` runs: the config and the analysis' settings (its identity)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: Config = Field(description="The run to train (in OUT/run) and replay with tangents.")
    directions: int = Field(
        8, ge=0, description="Random tangent directions k of the initial weights."
    )
    hypers: list[str] = Field(
        ["lr", "momentum"], description="Hypergradients: lr, momentum, weight_decay, init_scale."
    )
    members: list[int] | None = Field(None, description="Plan members to analyse (None: all).")
    reorth_every: int = Field(10, ge=1, description="Steps between QR re-orthonormalizations.")
    power_iterations: int = Field(
        4, ge=0, description="Power-iteration rounds for the top growth (0: skip)."
    )
    finite_scale: float | None = Field(
        0.1, description="Relative step of the finite differences (None: skip)."
    )
    dtype: Literal["float32", "float64"] = Field(
        "float32", description="Replay precision (the engine: float32)."
    )
    seed: int = Field(0, description="Seed of the random directions.")
    method: Literal["linearized", "jvp"] = Field(
        "linearized", description="How tangents are pushed."
    )
    basin_eps: list[float] | None = Field(
        list(DEFAULT_EPS), description="Perturbations of the basin check."
    )
    basin_tolerance: float = Field(
        0.1, description="Relative gap at which the linear picture breaks."
    )

    @model_validator(mode="after")
    def _hypers(self) -> TangentSettings:
        check_hypers(tuple(self.hypers))  # one line, before the directory exists
        return self


def run(settings: TangentSettings, store: RunStore, progress: bool = False) -> list[Result]:
    """Train the config's run in ``store.root/run`` (resumed) and replay it with tangents.

    ``progress``: a line as training and the replay begin, the training's own bar between.
    """
    from attractor.runs.launch import train

    s = settings
    run_dir = store.root / RUN
    with Stages("tangent", 2, progress) as stages:
        stages.begin(f"training the run: {s.config.plan.members} members")
        train(s.config, run_dir, progress=progress)
        stages.begin(f"replaying it with {s.directions} tangent directions")
        return [_analysis(s, run_dir)]


def _analysis(s: TangentSettings, run_dir: Path) -> TangentResult:
    """:func:`tangent_analysis` of the trained run with the settings' options."""
    return tangent_analysis(
        s.config,
        run_dir,
        s.directions,
        s.hypers,
        members=s.members,
        reorth_every=s.reorth_every,
        power_iterations=s.power_iterations,
        finite_scale=s.finite_scale,
        dtype=getattr(torch, s.dtype),
        seed=s.seed,
        method=s.method,
        basin_eps=s.basin_eps,
        basin_tolerance=s.basin_tolerance,
    )


def run_tangent(
    settings: TangentSettings, out: str | Path, force: bool = False, progress: bool = False
) -> TangentResult:
    """Run the ``tangent`` experiment in directory ``out``; its result (``progress``: its
    stages on stderr).
    """
    _, results = run_experiment("tangent", settings, out, force=force, progress=progress)
    result = results[0]
    assert isinstance(result, TangentResult)
    return result


EXPERIMENT = Experiment(
    name="tangent",
    settings=TangentSettings,
    run=run,
    summary="differentiate through training: growth of perturbations and hypergradients",
)
