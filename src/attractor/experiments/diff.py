"""``attractor diff``: where two models disagree, as an experiment with a directory of its own.

The comparison itself, a search from below and a certificate from above, is
:func:`attractor.experiments.compare.compare_models` (two models) or
:func:`~attractor.experiments.compare.ensemble_spread` (one run's members); its result is
:class:`~attractor.experiments.disagreement.Disagreement`.

Every comparison gets a directory of its own, ``runs/diff-<hash of the settings>`` unless
``--out`` is given, holding ``diff.json`` (everything, with the dreams' inputs) and
``diff.parquet`` (the per-output table); it never writes into the compared runs'
directories, nor over another comparison.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from attractor.errors import UserError
from attractor.experiments import Experiment, default_out, run_experiment
from attractor.experiments.compare import compare_models, ensemble_spread, load_centers
from attractor.experiments.disagreement import CERTIFIED_OBJECTIVE, Disagreement
from attractor.runs.results import Result
from attractor.runs.store import RunStore

__all__ = [
    "CERTIFIED_OBJECTIVE",
    "EXPERIMENT",
    "DiffSettings",
    "Disagreement",
    "compare_models",
    "ensemble_spread",
    "load_centers",
    "run_diff",
]


class DiffSettings(BaseModel):
    """What ``attractor diff`` compares and how (its identity: the default directory's hash)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    a: str = Field(
        description="Model spec A, or a run directory whose members' spread is searched (no b)."
    )
    b: str | None = Field(
        None, description="Model spec B; None: search where A's members spread most."
    )
    task: str | None = Field(
        None, description="Task of safetensors files: a run dir, a config TOML or a name."
    )
    eps: float | None = Field(
        0.05, description="Radius of the L-infinity balls; None: the data's box."
    )
    points: int = Field(20, ge=1, description="Test points (ball centres).")
    objective: str = Field(
        "js", description="Search objective (mi for a run's spread when js is given)."
    )
    delta: float | None = Field(None, description="Threshold on the largest logit difference.")
    budget_s: float = Field(
        10.0, description="Branch-and-bound seconds per point (0: one-shot bound)."
    )
    method: str = Field(
        "auto", description="Certificate bounds: auto, differential, linear, optimized, interval."
    )
    restarts: int = Field(8, ge=1, description="PGD restarts per point.")
    steps: int = Field(50, ge=0, description="PGD steps per restart.")
    seed: int = Field(0, description="Seed of the random starts and samples.")
    centers: str | None = Field(
        None, description="A .npy file of ball centres instead of the test inputs."
    )
    clip: bool = Field(True, description="Intersect the balls with the training data's range.")
    device: str = Field(
        "cpu",
        description="Where the search runs the models: cpu, cuda, cuda:N or auto (placement: "
        "not part of the directory's identity; certificates are float64 on the CPU).",
    )

    @model_validator(mode="after")
    def _cheap_checks(self) -> DiffSettings:
        # Refused before a directory is made; model specs are checked when the models load.
        if self.eps is not None and not self.eps >= 0:
            raise UserError(f"--eps must be >= 0, got {self.eps}")
        if self.budget_s < 0:
            raise UserError(f"--budget must be >= 0 seconds, got {self.budget_s}")
        if self.centers is not None and self.eps is None:
            raise UserError("--centers needs --eps (the radius of the balls around them)")
        if self.b is None and not (Path(self.a) / "manifest.json").is_file():
            raise UserError(
                "with one argument A must be a run directory (to search where its members "
                "spread); "
                f"'{self.a}' is not one"
            )
        return self


def run(settings: DiffSettings, store: RunStore, progress: bool = False) -> list[Result]:
    """Search (and, for two models, certify) their disagreement; nothing is trained.

    ``progress``: a line on stderr as search, baseline (and certificate) begin.
    """
    del store  # the models are read from their own specs; only the result goes into the directory
    s = settings
    if s.b is None:
        objective = "mi" if s.objective == "js" else s.objective
        return [
            ensemble_spread(
                s.a,
                eps=s.eps,
                points=s.points,
                objective=objective,
                centers=s.centers,
                clip=s.clip,
                restarts=s.restarts,
                steps=s.steps,
                seed=s.seed,
                device=s.device,
                progress=progress,
            )
        ]
    return [
        compare_models(
            s.a,
            s.b,
            task=s.task,
            eps=s.eps,
            points=s.points,
            objective=s.objective,
            delta=s.delta,
            budget_s=s.budget_s,
            method=s.method,
            restarts=s.restarts,
            steps=s.steps,
            seed=s.seed,
            centers=s.centers,
            clip=s.clip,
            device=s.device,
            progress=progress,
        )
    ]


def run_diff(
    settings: DiffSettings,
    out: str | Path | None = None,
    force: bool = False,
    progress: bool = False,
) -> tuple[RunStore, Disagreement]:
    """Run the ``diff`` experiment in ``out``; its store and result.

    The default directory is ``runs/diff-<hash of the settings>``, one per comparison.
    ``progress``: its stages on stderr.
    """
    out = default_out("diff", settings) if out is None else out
    store, results = run_experiment("diff", settings, out, force=force, progress=progress)
    result = results[0]
    assert isinstance(result, Disagreement)
    return store, result


EXPERIMENT = Experiment(
    name="diff",
    settings=DiffSettings,
    run=run,
    summary="where two models disagree: a search from below and a certificate from above",
)
